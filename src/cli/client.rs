//! `understudy client`: placeholder.

#[derive(clap::Args, Debug)]
pub struct ClientArgs {}

pub async fn run(_args: ClientArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet built")
}
