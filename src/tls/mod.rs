//! TLS for the client API and for peer traffic (rustls with the ring provider; no OpenSSL).
//!
//! A server is given three PEM files: its certificate chain, its private key, and the
//! cluster's CA. The CA plays two parts: peers must present a certificate it signed (mutual
//! TLS on every connection between servers), and a server trusts a peer's server
//! certificate only if it signed it. Clients may present one too, but need not: they
//! authenticate with passwords and bearer tokens inside the encrypted connection.
//!
//! The certificate and key are read again on SIGHUP ([`CertStore::reload`]): new
//! handshakes use the new pair, open connections keep theirs. Both sides of this server (the
//! listener and its calls to peers) resolve the pair through the same [`CertStore`], so one
//! reload renews both. A new CA needs a restart.
//!
//! [`dev`] makes a throw-away CA and certificates for `understudy demo --tls` and tests.

pub mod dev;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::{Error, Result};

pub use rustls::ClientConfig as TlsClientConfig;

/// The PEM files a server's TLS is made of.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate chain (its own first).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster's CA: signs every server's certificate, and clients' if they have one.
    pub client_ca: PathBuf,
}

/// The cryptography every config here uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| Error::BadRequest(format!("cannot read {}: {err}", path.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| Error::BadRequest(format!("{}: {err}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::BadRequest(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A root store of every certificate in the PEM file `ca`.
fn read_roots(ca: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(ca)? {
        roots
            .add(cert)
            .map_err(|err| Error::BadRequest(format!("{}: {err}", ca.display())))?;
    }
    Ok(roots)
}

/// A certificate chain and its key, ready to sign handshakes.
fn read_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>> {
    let chain = read_certificates(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|err| {
        Error::BadRequest(format!("cannot read a key from {}: {err}", key.display()))
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|err| Error::BadRequest(format!("{}: {err}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|err| {
        Error::BadRequest(format!(
            "{} does not belong to {}: {err}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

/// The server's current certificate and key, shared by its listener and its calls to peers.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    fn open(cert: &Path, key: &Path) -> Result<CertStore> {
        Ok(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(read_certified_key(cert, key)?),
        })
    }

    /// Reads the certificate and key again. On an error the old pair stays in use.
    pub fn reload(&self) -> Result<()> {
        let fresh = read_certified_key(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server's TLS: what its listener accepts with and what it dials peers with.
#[derive(Clone, Debug)]
pub struct ServerTls {
    certs: Arc<CertStore>,
    /// The listener's config: our certificate; a client certificate from the cluster's CA is
    /// verified if offered, and required for peer routes (checked per request).
    pub server: Arc<ServerConfig>,
    /// For calls to peers: trusts the cluster's CA, presents our certificate.
    pub peer_client: Arc<ClientConfig>,
}

impl ServerTls {
    /// Reads the files; fails with what is wrong with which file.
    pub fn load(files: &TlsFiles) -> Result<ServerTls> {
        let certs = Arc::new(CertStore::open(&files.cert, &files.key)?);
        let roots = Arc::new(read_roots(&files.client_ca)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|err| Error::BadRequest(format!("{}: {err}", files.client_ca.display())))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::Internal(format!("TLS: {err}")))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(certs.clone());
        // The peer stream is an HTTP/1.1 upgrade; clients speak HTTP/1.1 too.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let peer_client = client_builder()
            .with_root_certificates(roots)
            .with_client_cert_resolver(certs.clone());
        Ok(ServerTls {
            certs,
            server: Arc::new(server),
            peer_client: Arc::new(peer_client),
        })
    }

    /// Reads the certificate and key again (SIGHUP); the CA stays.
    pub fn reload(&self) -> Result<()> {
        self.certs.reload()
    }
}

/// A client's TLS: trusts the certificates in the PEM file `ca`, presents none.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>> {
    let roots = read_roots(ca)?;
    let config = client_builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client config with no trusted roots: what a plain-HTTP client holds where a TLS one
/// holds its config (it never makes a TLS connection).
pub(crate) fn client_config_trusting_nobody() -> ClientConfig {
    client_builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// Every client config here: the ring provider, its default protocol versions.
fn client_builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
}

/// A client's TLS that also presents a certificate (`understudy admin` under mutual TLS).
pub fn client_config_with_identity(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>> {
    let roots = read_roots(ca)?;
    let identity = Arc::new(CertStore::open(cert, key)?);
    let config = client_builder()
        .with_root_certificates(roots)
        .with_client_cert_resolver(identity);
    Ok(Arc::new(config))
}

/// The name a certificate must carry for `addr` (`HOST:PORT`): its IP address or DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_string())
        .map_err(|err| Error::BadRequest(format!("{addr} is not a TLS server name: {err}")))
}
