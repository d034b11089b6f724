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

use crate::cluster::Topology;

pub use engine::{CheckpointState, PretrainOutcome, card, latest_checkpoint};
pub use mae::mae_config;
pub(crate) use replicas::{Share, data_parallel, local_chunks};
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
    let outcome = engine::run::<B>(cfg, Some(&run), devices, None, false, quiet)?;
    Ok((run, outcome))
}

/// [`start`] as one node of a multi-node run (`nodes`; `None`: alone). Rank 0 creates `out` and
/// alone writes to it; the other nodes do not touch it (returned as `None`).
pub fn start_on<B: AutodiffBackend>(
    cfg: &PretrainConfig,
    out: &Path,
    devices: &[B::Device],
    nodes: Option<Topology>,
    quiet: bool,
) -> Result<(Option<RunDir>, PretrainOutcome)> {
    let run = match &nodes {
        Some(t) if !t.writes() => None,
        _ => {
            let run = RunDir::create(out)?;
            cfg.write(&run)?;
            Some(run)
        }
    };
    let outcome = engine::run::<B>(cfg, run.as_ref(), devices, nodes, false, quiet)?;
    Ok((run, outcome))
}

/// Continues the run in `dir` from its latest checkpoint, with the config it was started with.
/// `devices(n)` gives the `n` replicas the run was configured with.
pub fn resume<B: AutodiffBackend>(
    dir: &Path,
    devices: impl FnOnce(usize) -> Vec<B::Device>,
    quiet: bool,
) -> Result<(PretrainConfig, RunDir, PretrainOutcome)> {
    resume_on::<B>(dir, devices, None, quiet)
}

/// [`resume`] as one node of a multi-node run (`nodes`; `None`: alone), with any number of
/// nodes: every node reads the run folder (a filesystem they share), rank 0 alone writes to it.
pub fn resume_on<B: AutodiffBackend>(
    dir: &Path,
    devices: impl FnOnce(usize) -> Vec<B::Device>,
    nodes: Option<Topology>,
    quiet: bool,
) -> Result<(PretrainConfig, RunDir, PretrainOutcome)> {
    let run = match &nodes {
        Some(t) if !t.writes() => RunDir::open_reader(dir)?,
        _ => RunDir::open_existing(dir)?,
    };
    let cfg = PretrainConfig::read(dir)?;
    let outcome = engine::run::<B>(&cfg, Some(&run), &devices(cfg.devices), nodes, true, quiet)?;
    Ok((cfg, run, outcome))
}
