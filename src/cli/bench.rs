//! `qcanet-gpu bench` (being built; see the issue tracker).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_g: &super::Global, _a: Args) -> anyhow::Result<()> {
    anyhow::bail!("'bench' is not built yet")
}
