//! `vismae pretrain`: window-masked MAE pre-training (SPEC §2, §6.1-6.2), or SimCLR (the paper's
//! baseline), on a dataset written by `vismae ingest`. [`resolve`] turns the request into the complete [`PretrainConfig`]; [`start`]
//! creates the run folder, writes its `config.json` and runs the [`engine`]; [`resume`] reads the
//! config back and continues from the last checkpoint. The data-parallel replicas are in
//! [`replicas`].

mod engine;
pub(crate) mod mae;
mod replicas;
mod resolve;
mod simclr;

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use vismae_run::{PretrainConfig, RunDir};

pub use engine::{CheckpointState, PretrainOutcome, card, latest_checkpoint};
pub use mae::mae_config;
pub(crate) use replicas::data_parallel;
pub use resolve::{PretrainFlags, PretrainRequest, describe, resolve};
pub use simclr::simclr_config;

use crate::error::Result;

/// Creates the run folder `out` (which must be new or empty), writes `config.json` and runs.
pub fn start<B: AutodiffBackend>(
    cfg: &PretrainConfig,
    out: &Path,
    devices: &[B::Device],
    quiet: bool,
) -> Result<(RunDir, PretrainOutcome)> {
    let run = RunDir::create(out)?;
    cfg.write(&run)?;
    let outcome = engine::run::<B>(cfg, &run, devices, false, quiet)?;
    Ok((run, outcome))
}

/// Continues the run in `dir` from its latest checkpoint, with the config it was started with.
/// `devices(n)` gives the `n` replicas the run was configured with.
pub fn resume<B: AutodiffBackend>(
    dir: &Path,
    devices: impl FnOnce(usize) -> Vec<B::Device>,
    quiet: bool,
) -> Result<(PretrainConfig, RunDir, PretrainOutcome)> {
    let run = RunDir::open_existing(dir)?;
    let cfg = PretrainConfig::read(dir)?;
    let outcome = engine::run::<B>(&cfg, &run, &devices(cfg.devices), true, quiet)?;
    Ok((cfg, run, outcome))
}
