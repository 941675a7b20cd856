//! Where the binary gets the cluster secret: a file, or the environment.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use understudy::server::ClusterSecret;

/// The cluster secret's flags, shared by the subcommands that need it.
#[derive(clap::Args, Debug)]
pub struct SecretArgs {
    /// File holding the cluster secret (at least 16 bytes; surrounding white space ignored).
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// The cluster secret itself, instead of a file.
    #[arg(
        long = "cluster-secret",
        env = "UNDERSTUDY_CLUSTER_SECRET",
        hide_env_values = true,
        hide = true
    )]
    cluster_secret: Option<String>,
}

impl SecretArgs {
    /// The secret from the file, else from `UNDERSTUDY_CLUSTER_SECRET`.
    pub fn load(&self) -> Result<ClusterSecret> {
        let text = match (&self.cluster_secret_file, &self.cluster_secret) {
            (Some(path), _) => std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the cluster secret file {}", path.display())
            })?,
            (None, Some(secret)) => secret.clone(),
            (None, None) => bail!("give --cluster-secret-file or UNDERSTUDY_CLUSTER_SECRET"),
        };
        Ok(ClusterSecret::new(&text)?)
    }
}
