//! `trainer check`: the reference fixtures of the original code run on a device (the GPU
//! as well as the CPU) by [`crate::check`], printed as a table of errors against their
//! tolerances; `--smoke` runs only the smoke test.

use std::path::PathBuf;

use anyhow::bail;
use candle_core::Device;

use super::args::DeviceArgs;
use crate::check::{self, smoke::smoke_checks, CheckLine};

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Folder with the reference fixtures (default: the copies in the repository,
    /// crates/models/tests/fixtures and crates/loss/tests/fixtures).
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// Seeds for the ReCo distribution check.
    #[arg(long, default_value_t = 300)]
    pub seeds: u64,
    /// Skip the two large network fixtures (ResNet-50 and -101 forward passes).
    #[arg(long)]
    pub skip_models: bool,
    /// Only the smoke test (seconds): device, copies, matmul, softmax, conv and its
    /// gradients, the composed max-pool and batch norm, randn, against the CPU kernels.
    #[arg(long)]
    pub smoke: bool,
}

/// The table's header (Markdown).
const TABLE_HEAD: &str = "| check | value | limit | |\n| --- | --- | --- | --- |";

/// One row of the table.
fn row(line: &CheckLine, verdict: &str) -> String {
    format!(
        "| {} | {:.3e} | {:.1e} | {verdict} |",
        line.what, line.value, line.limit
    )
}

/// `--smoke`: the smoke lines as a table; fails when one fails.
fn smoke_report(args: &CheckArgs, device: &Device) -> anyhow::Result<Vec<CheckLine>> {
    println!(
        "smoke test on {} (kernels: {})",
        args.device.name(),
        check::kernels(device)
    );
    println!("{TABLE_HEAD}");
    let mut lines = Vec::new();
    for (line, error) in smoke_checks(device) {
        let verdict = match (&error, line.ok()) {
            (Some(e), _) => format!("FAIL: {e}"),
            (None, true) => "ok".to_string(),
            (None, false) => "FAIL".to_string(),
        };
        println!("{}", row(&line, &verdict));
        lines.push(line);
    }
    let failed = lines.iter().filter(|l| !l.ok()).count();
    if failed > 0 {
        bail!("{failed} of {} smoke checks failed", lines.len());
    }
    println!("all {} smoke checks passed", lines.len());
    Ok(lines)
}

pub fn run(args: &CheckArgs) -> anyhow::Result<Vec<CheckLine>> {
    let device = args.device.open()?;
    if args.seeds < 2 {
        bail!("--seeds must be at least 2");
    }
    // The fixtures' tolerances are for full f32: no TF32 in f32 matrix products.
    candle_core::cuda::set_gemm_reduced_precision_f32(false);
    if args.smoke {
        return smoke_report(args, &device);
    }
    let lines = check::reference_checks(
        args.fixtures.as_deref(),
        &device,
        args.seeds,
        args.skip_models,
    )?;
    println!(
        "reference checks on {} (kernels: {}, f32 matmul reduced precision: off)",
        args.device.name(),
        check::kernels(&device)
    );
    println!("{TABLE_HEAD}");
    for l in &lines {
        println!("{}", row(l, if l.ok() { "ok" } else { "FAIL" }));
    }
    if device.is_cpu() {
        println!("(the CPU-vs-device train step comparison runs when --device is a GPU)");
    }
    let failed = lines.iter().filter(|l| !l.ok()).count();
    if failed > 0 {
        bail!("{failed} of {} checks failed", lines.len());
    }
    println!("all {} checks passed", lines.len());
    Ok(lines)
}
