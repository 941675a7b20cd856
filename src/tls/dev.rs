//! Throw-away certificates: a CA made on the spot and certificates it signs, for
//! `understudy demo --tls` and the tests. Real deployments bring their own (see the README,
//! "Running on a real network").

use std::fs;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::TlsFiles;
use crate::error::{Error, Result};

fn failed(err: rcgen::Error) -> Error {
    Error::Internal(format!("making a certificate: {err}"))
}

/// A certificate authority whose key lives only in memory.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<Authority> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(failed)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(failed)?;
        Ok(Authority { issuer })
    }

    /// The CA's certificate, PEM: what clients and servers are told to trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `hosts` (IP addresses or DNS names), good for both ends of a
    /// connection: servers use one certificate to accept and to dial their peers.
    pub fn issue(&self, hosts: &[&str]) -> Result<Issued> {
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(failed)?;
        params.distinguished_name.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("understudy"),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(failed)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem` and, for `name`, `name.pem` and `name.key` (mode 0600) into `dir`,
    /// with a certificate for `hosts`; returns the files as a server takes them.
    pub fn write_server_files(&self, dir: &Path, name: &str, hosts: &[&str]) -> Result<TlsFiles> {
        fs::create_dir_all(dir)?;
        let files = TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            client_ca: dir.join("ca.pem"),
        };
        fs::write(&files.client_ca, self.cert_pem())?;
        self.write_issued(&files, hosts)?;
        Ok(files)
    }

    /// Issues a new certificate for `hosts` over `files`' certificate and key.
    pub fn write_issued(&self, files: &TlsFiles, hosts: &[&str]) -> Result<()> {
        let issued = self.issue(hosts)?;
        write_private(&files.key, issued.key_pem.as_bytes())?;
        fs::write(&files.cert, issued.cert_pem)?;
        Ok(())
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    Ok(())
}
