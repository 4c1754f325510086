//! Checks of this build on a device: the reference fixtures of the original code against
//! the tolerances of docs/design.md#reference-fixtures ([`fixtures`]), on a GPU the same
//! train step on the CPU and on the device ([`step`]), and the seconds-long [`smoke`]
//! test of each kind of kernel the train step needs. Each check ends as a [`CheckLine`]:
//! what was compared, the error, the limit.

pub mod fixtures;
pub mod smoke;
pub mod step;

use std::path::Path;

use candle_core::Device;

/// One line of the report.
pub struct CheckLine {
    pub what: String,
    pub value: f64,
    pub limit: f64,
}

impl CheckLine {
    pub fn ok(&self) -> bool {
        self.value <= self.limit
    }
}

/// Which kernels the tensor code takes on `device` (see `reco_util::ops_path`).
pub fn kernels(device: &Device) -> &'static str {
    if !device.is_cpu() {
        "device (generic)"
    } else if reco_models::ops::use_generic_path(device) {
        "generic on the CPU (RECO_OPS=generic)"
    } else {
        "CPU kernels"
    }
}

/// The reference checks on `device`: both network fixtures (unless `skip_models`), the
/// loss fixtures with the ReCo distribution over `seeds` seeds, and on a GPU the
/// CPU-vs-device train step. `fixtures`: the folder of the fixture files (default: the
/// copies in the repository).
pub fn reference_checks(
    fixtures: Option<&Path>,
    device: &Device,
    seeds: u64,
    skip_models: bool,
) -> anyhow::Result<Vec<CheckLine>> {
    let mut lines = Vec::new();
    if !skip_models {
        for name in fixtures::MODEL_FIXTURES {
            fixtures::model_checks(&fixtures::find(fixtures, name)?, device, &mut lines)?;
        }
    }
    fixtures::loss_checks(
        &fixtures::find(fixtures, fixtures::LOSS_FIXTURE)?,
        device,
        seeds,
        &mut lines,
    )?;
    if !device.is_cpu() {
        step::step_comparison(device, &mut lines)?;
    }
    Ok(lines)
}
