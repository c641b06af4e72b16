//! `qcanet-gpu devices`: every adapter wgpu sees, with the limits that matter.

use qcanet_gpu::gpu::{list_adapters, no_adapter_help};
use qcanet_gpu::ops::variants;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(_g: &super::Global, a: Args) -> anyhow::Result<()> {
    let adapters = list_adapters();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&adapters)?);
    }
    if adapters.is_empty() {
        anyhow::bail!("no GPU adapter found.\n{}", no_adapter_help());
    }
    if a.json {
        return Ok(());
    }
    for d in &adapters {
        println!("[{}] {} ({}, {})", d.index, d.name, d.backend, d.device_type);
        println!("    driver:                {} {}", d.driver, d.driver_info);
        println!("    max storage binding:   {} MiB", d.max_storage_buffer_binding_size >> 20);
        println!("    max buffer:            {} MiB", d.max_buffer_size >> 20);
        println!("    workgroup storage:     {} KiB", d.max_compute_workgroup_storage_size >> 10);
        println!("    invocations/workgroup: {}", d.max_compute_invocations_per_workgroup);
        println!("    subgroup size:         {}..{}", d.subgroup_min_size, d.subgroup_max_size);
        println!("    shader-f16: {}, subgroups: {}, timestamps: {}", d.shader_f16, d.subgroups, d.timestamp_query);
        let coop = if d.cooperative_matrix.is_empty() { "none".to_string() } else { d.cooperative_matrix.join(", ") };
        println!("    cooperative matrices:  {coop} (used only with QCANET_COOPERATIVE_MATRIX=1)");
    }
    println!("kernel variants (each op runs the first its adapter supports; --gpu-kernel OP=VARIANT forces one):");
    let reg = variants::registry();
    let width =
        reg.iter().flat_map(|o| o.variants.iter().map(move |v| o.op.len() + 1 + v.name.len())).max().unwrap_or(0);
    for ops in &reg {
        for v in &ops.variants {
            let needs: Vec<&str> = v.needs.iter().map(|n| n.name()).collect();
            let needs =
                if needs.is_empty() { "any adapter".to_string() } else { format!("needs {}", needs.join(", ")) };
            let name = format!("{} {}", ops.op, v.name);
            println!("    {name:<width$} {} ({needs})", v.about);
        }
    }
    Ok(())
}
