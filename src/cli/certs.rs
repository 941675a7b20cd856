//! `understudy certs`: a cluster's CA and a certificate for each server, for TLS without an
//! outside tool. The CA is made on the first call and read back on later ones, so a server
//! added later gets a certificate from the same CA.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use understudy::tls::dev::Authority;
use understudy::tls::{TlsFiles, server_name};

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Where the CA (`ca.pem`, `ca.key`) and the certificates (`NAME.pem`, `NAME.key`) go.
    #[arg(long)]
    dir: PathBuf,
    /// The name of each server as others reach it: an IP address or a DNS name (the host
    /// part of its --advertise address). A certificate is made for each.
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn run(args: CertsArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let (ca_cert, ca_key) = (args.dir.join("ca.pem"), args.dir.join("ca.key"));
    let authority = if ca_cert.exists() && ca_key.exists() {
        println!("using the CA in {}", ca_cert.display());
        Authority::load(&ca_cert, &ca_key)?
    } else if ca_cert.exists() || ca_key.exists() {
        bail!(
            "{} holds only half a CA (ca.pem and ca.key go together)",
            args.dir.display()
        );
    } else {
        let authority = Authority::new("understudy cluster CA")?;
        authority.save(&ca_cert, &ca_key)?;
        println!(
            "made a CA: {} (keep {} secret: it signs certificates for this cluster)",
            ca_cert.display(),
            ca_key.display()
        );
        authority
    };
    for name in &args.names {
        // The same check a client makes of the name: an address or a DNS name.
        server_name(name).with_context(|| format!("{name} cannot name a server"))?;
        let files = TlsFiles {
            cert: args.dir.join(format!("{name}.pem")),
            key: args.dir.join(format!("{name}.key")),
            client_ca: ca_cert.clone(),
        };
        authority.write_issued(&files, &[name.as_str()])?;
        println!(
            "{name}: --tls-cert {} --tls-key {} --tls-client-ca {}",
            files.cert.display(),
            files.key.display(),
            files.client_ca.display()
        );
    }
    println!(
        "clients: --ca {} (or UNDERSTUDY_CA); curl: --cacert {}",
        ca_cert.display(),
        ca_cert.display()
    );
    Ok(())
}
