//! `--ca` (and, for mutual TLS, `--cert` and `--key`) for the commands that call servers:
//! with `--ca` they speak `https://` and trust only that CA.

use std::path::PathBuf;
use std::sync::Arc;

use understudy::tls::{self, TlsClientConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct ClientTlsArgs {
    /// Speak HTTPS and trust the servers' certificates only if this CA (PEM) signed them.
    #[arg(long, env = "UNDERSTUDY_CA", global = true)]
    ca: Option<PathBuf>,
    /// A client certificate (PEM) to present, for servers that require one (`admin remove`
    /// and `admin transfer` under mutual TLS: a certificate the cluster's CA signed).
    #[arg(long, global = true, requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    /// The key (PEM) of --cert.
    #[arg(long, global = true, requires_all = ["ca", "cert"])]
    key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS config these flags describe, or none for plain HTTP.
    pub fn config(&self) -> anyhow::Result<Option<Arc<TlsClientConfig>>> {
        Ok(match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => {
                Some(tls::client_config_with_identity(ca, cert, key)?)
            }
            (Some(ca), _, _) => Some(tls::client_config(ca)?),
            _ => None,
        })
    }
}
