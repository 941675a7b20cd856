//! TLS against real server processes: who is refused, and a certificate renewed on disk
//! taking effect on SIGHUP. (The cluster, failover and durability tests run over TLS too,
//! with `UNDERSTUDY_TEST_TLS=1`; `.ci/run` does both.)

mod support;

use std::fs;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use understudy::Error;
use understudy::client::HttpClient;
use understudy::server::{AUTH_HEADER, ClusterSecret};
use understudy::tls::dev::Authority;
use understudy::tls::{self, TlsClientConfig};

use support::procs::{Cluster, deadline, wait_for};

/// The certificate `addr` presents in a TLS handshake, as DER.
async fn presented_certificate(
    addr: &str,
    client: Arc<TlsClientConfig>,
) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|err| err.to_string())?;
    let name = tls::server_name(addr).map_err(|err| err.to_string())?;
    let stream = TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .map_err(|err| err.to_string())?;
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.as_ref().to_vec())
        .ok_or_else(|| "no certificate presented".to_string())
}

/// The first certificate in a PEM file, as DER.
fn certificate_on_disk(path: &std::path::Path) -> Vec<u8> {
    tls::read_certificates(path).expect("a certificate")[0]
        .as_ref()
        .to_vec()
}

/// A peer call (`POST /replication/set-backups` with an empty object, which a peer that got
/// past authentication answers 400) signed under the cluster's secret.
async fn signed_peer_call(
    http: &HttpClient,
    cluster: &Cluster,
    addr: &str,
) -> understudy::Result<u16> {
    let secret_text = fs::read_to_string(cluster.secret_file()).expect("the secret");
    let secret = ClusterSecret::new(&secret_text).expect("a secret");
    let path = "/replication/set-backups";
    let body = b"{}";
    let headers = [
        (AUTH_HEADER, secret.sign("POST", path, body)),
        ("content-type", "application/json".to_string()),
    ];
    http.request(
        understudy::client::http::Method::POST,
        addr,
        path,
        &headers,
        Some(bytes::Bytes::from_static(body)),
    )
    .await
    .map(|answer| answer.status)
}

/// Security (TLS): a TLS server speaks nothing but TLS. A plaintext client gets no answer,
/// not even an error page.
#[tokio::test]
async fn a_plaintext_client_is_refused() {
    let cluster = Cluster::start_tls(1).await;
    let plain = HttpClient::with_timeout(Duration::from_secs(2));
    let answer = plain.get(cluster.addr(0), "/status", &[]).await;
    assert!(
        matches!(answer, Err(Error::Unavailable(_))),
        "a plaintext request got {answer:?}"
    );
    // The same request over TLS is answered.
    let status = cluster.http().get(cluster.addr(0), "/status", &[]).await;
    assert_eq!(status.map(|a| a.status).ok(), Some(200));
}

/// Security (mutual TLS between peers): a peer request needs a certificate from the
/// cluster's CA on top of the secret's signature. Without a certificate it is refused with
/// 401; with one from another CA the handshake itself fails; with the cluster's it passes
/// authentication (and its empty body is then refused as a bad request).
#[tokio::test]
async fn a_peer_without_a_valid_certificate_is_refused() {
    let cluster = Cluster::start_tls(1).await;
    let files = &cluster.tls().expect("a TLS cluster").files;
    let addr = cluster.addr(0);

    let no_certificate = HttpClient::with_tls(
        Duration::from_secs(2),
        Some(tls::client_config(&files.client_ca).expect("a config")),
    );
    assert_eq!(
        signed_peer_call(&no_certificate, &cluster, addr).await.ok(),
        Some(401)
    );

    let stranger_dir = cluster.root().join("stranger");
    let stranger = Authority::new("another CA")
        .expect("a CA")
        .write_server_files(&stranger_dir, "stranger", &["127.0.0.1"])
        .expect("certificates");
    let foreign_certificate = HttpClient::with_tls(
        Duration::from_secs(2),
        Some(
            tls::client_config_with_identity(&files.client_ca, &stranger.cert, &stranger.key)
                .expect("a config"),
        ),
    );
    let answer = signed_peer_call(&foreign_certificate, &cluster, addr).await;
    assert!(
        matches!(answer, Err(Error::Unavailable(_))),
        "a certificate from another CA got {answer:?}"
    );

    let cluster_certificate = HttpClient::with_tls(
        Duration::from_secs(2),
        Some(
            tls::client_config_with_identity(&files.client_ca, &files.cert, &files.key)
                .expect("a config"),
        ),
    );
    assert_eq!(
        signed_peer_call(&cluster_certificate, &cluster, addr)
            .await
            .ok(),
        Some(400)
    );
}

/// TLS: a certificate replaced on disk is presented to new connections after SIGHUP, and
/// not before; the server keeps serving throughout.
#[tokio::test]
async fn a_certificate_replaced_on_disk_is_used_after_sighup() {
    let cluster = Cluster::start_tls(1).await;
    let tls = cluster.tls().expect("a TLS cluster");
    let addr = cluster.addr(0).to_string();
    let original = certificate_on_disk(&tls.files.cert);
    assert_eq!(
        presented_certificate(&addr, tls.client.clone()).await,
        Ok(original.clone())
    );

    tls.authority
        .write_issued(&tls.files, &["127.0.0.1", "localhost"])
        .expect("a new certificate");
    let renewed = certificate_on_disk(&tls.files.cert);
    assert_ne!(renewed, original);
    // Not read until told.
    assert_eq!(
        presented_certificate(&addr, tls.client.clone()).await,
        Ok(original)
    );

    let pid = cluster.pid(0).expect("running");
    let sent = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    wait_for(
        deadline(Duration::from_secs(10)),
        "the renewed certificate to be presented",
        async || {
            let presented = presented_certificate(&addr, tls.client.clone()).await?;
            if presented == renewed {
                Ok(())
            } else {
                Err("still the old certificate".to_string())
            }
        },
    )
    .await;
    assert!(cluster.stderr(0).contains("reloaded the TLS certificate"));
    assert_eq!(
        cluster.status(0).await.role,
        "primary",
        "the server went on serving"
    );
}

/// Operations (`understudy certs`): the first call makes a CA, later calls reuse it; a
/// server started with the certificate it made is reached over TLS by a client that trusts
/// that CA.
#[tokio::test]
async fn certs_makes_a_ca_once_and_certificates_a_server_accepts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tls_dir = dir.path().join("tls");
    let certs = |names: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
            .arg("certs")
            .arg("--dir")
            .arg(&tls_dir)
            .args(names)
            .output()
            .expect("understudy certs runs");
        assert!(output.status.success(), "{output:?}");
    };
    certs(&["127.0.0.1"]);
    let ca = fs::read(tls_dir.join("ca.pem")).expect("ca.pem");
    certs(&["localhost"]);
    assert_eq!(
        fs::read(tls_dir.join("ca.pem")).expect("ca.pem"),
        ca,
        "the CA is reused"
    );
    assert!(tls_dir.join("localhost.pem").exists());

    let port = support::procs::free_port();
    let addr = format!("127.0.0.1:{port}");
    let secret = dir.path().join("secret");
    fs::write(&secret, "a cluster secret of some length").expect("the secret");
    let mut server = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["server", "--listen", &addr])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--cluster-secret-file")
        .arg(&secret)
        .arg("--tls-cert")
        .arg(tls_dir.join("127.0.0.1.pem"))
        .arg("--tls-key")
        .arg(tls_dir.join("127.0.0.1.key"))
        .arg("--tls-client-ca")
        .arg(tls_dir.join("ca.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the server starts");
    let https = HttpClient::with_tls(
        Duration::from_secs(2),
        Some(tls::client_config(&tls_dir.join("ca.pem")).expect("a config")),
    );
    let answered = wait_for(
        deadline(Duration::from_secs(20)),
        "the server to answer over TLS",
        async || match https.get(&addr, "/status", &[]).await {
            Ok(answer) if answer.status == 200 => Ok(()),
            Ok(answer) => Err(format!("HTTP {}", answer.status)),
            Err(err) => Err(err.to_string()),
        },
    )
    .await;
    let _ = server.kill();
    let _ = server.wait();
    answered
}
