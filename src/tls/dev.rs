//! A small certificate authority: a CA made on the spot (or read back from its files) and the
//! certificates it signs, for `understudy certs`, `understudy demo --tls` and the tests.
//! Deployments with a CA of their own use that instead (see the README, "Running on a real
//! network").

use std::fs;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::TlsFiles;
use crate::error::{Error, Result};

fn failed(err: rcgen::Error) -> Error {
    Error::Internal(format!("making a certificate: {err}"))
}

/// A certificate authority: its certificate and the key that signs with it.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
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
        let cert_pem = params.self_signed(&key).map_err(failed)?.pem();
        let key_pem = key.serialize_pem();
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert_pem,
            key_pem,
        })
    }

    /// The CA whose certificate and key are in `cert` and `key` (PEM), as [`save`] wrote
    /// them.
    ///
    /// [`save`]: Authority::save
    pub fn load(cert: &Path, key: &Path) -> Result<Authority> {
        let cert_pem = fs::read_to_string(cert)?;
        let key_pem = fs::read_to_string(key)?;
        let signing = KeyPair::from_pem(&key_pem).map_err(|err| {
            Error::BadRequest(format!("{}: not a usable key: {err}", key.display()))
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, signing).map_err(|err| {
            Error::BadRequest(format!(
                "{}: not a usable CA certificate: {err}",
                cert.display()
            ))
        })?;
        Ok(Authority {
            issuer,
            cert_pem,
            key_pem,
        })
    }

    /// Writes the CA's certificate to `cert` and its key to `key` (readable by the owner
    /// only).
    pub fn save(&self, cert: &Path, key: &Path) -> Result<()> {
        fs::write(cert, &self.cert_pem)?;
        write_private(key, self.key_pem.as_bytes())
    }

    /// The CA's certificate, PEM: what clients and servers are told to trust.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
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
