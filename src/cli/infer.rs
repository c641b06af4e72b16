//! `qcanet-gpu infer` (being built; see the issue tracker).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_g: &super::Global, _a: Args) -> anyhow::Result<()> {
    anyhow::bail!("'infer' is not built yet")
}
