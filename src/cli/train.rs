//! `qcanet-gpu train` (being built; see the issue tracker).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_g: &super::Global, _a: Args) -> anyhow::Result<()> {
    anyhow::bail!("'train' is not built yet")
}
