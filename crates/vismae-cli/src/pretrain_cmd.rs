//! `vismae pretrain` and `vismae reconstruct`: arguments in, a resolved run printed, the engine
//! called, its outcome printed.

use std::path::PathBuf;

use clap::Args;
use vismae_data::prep::{file_images, planes};
use vismae_model::store::{self, AnyModel};
use vismae_run::{InputNorm, Plane, Preprocess};
use vismae_train::cluster;
use vismae_train::pretrain::{self, PretrainFlags, PretrainRequest};
use vismae_train::reconstruct::{Grid, reconstruction_grid};

use crate::args::RunFlags;
use crate::{Backend, TrainBackend, default_devices, device, devices};

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Dataset folder written by `vismae ingest`.
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// Run folder (must not hold a run yet).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (its settings come from RUN/config.json).
    #[arg(long, value_name = "RUN", conflicts_with_all = ["data", "out"])]
    resume: Option<PathBuf>,
    /// How the encoder learns: `mae` (VIS-MAE, the default) or `simclr` (the paper's contrastive baseline).
    #[arg(long, value_enum)]
    method: Option<vismae_run::Method>,
    /// Train on these modalities only (repeatable or comma-separated), e.g. MR for VIS-MAE-MR.
    #[arg(long, value_delimiter = ',')]
    modality: Vec<String>,
    #[command(flatten)]
    run: RunFlags,
    /// Optimizer steps instead of epochs.
    #[arg(long)]
    steps: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    accum_steps: Option<usize>,
    /// Checkpoint every N steps.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    #[command(flatten)]
    nodes: NodeArgs,
}

/// Several machines training one model (also read from Slurm's or torchrun's variables).
#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// Processes (one per machine, each with its --devices) that train one model.
    #[arg(long)]
    nodes: Option<usize>,
    /// This node's rank, 0..N-1; rank 0 hosts the coordinator and alone writes the run folder.
    #[arg(long)]
    node_rank: Option<usize>,
    /// Rank 0's coordinator, HOST:PORT (it listens there).
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// This node's address: its data service listens there only [default: its address on the route to the coordinator].
    #[arg(long, value_name = "HOST")]
    node_address: Option<String>,
    /// This node's data-service port [default: the coordinator's port + 1 + rank].
    #[arg(long)]
    data_port: Option<u16>,
    /// Seconds a node waits for the others before it stops with an error [default: 120].
    #[arg(long, value_name = "S")]
    node_timeout: Option<f64>,
    /// The coordinator runs elsewhere (`vismae coordinator`), not in rank 0.
    #[arg(long)]
    external_coordinator: bool,
}

impl NodeArgs {
    /// The topology these flags and the launcher's variables give (`None`: one node).
    pub fn topology(&self) -> anyhow::Result<Option<cluster::Topology>> {
        let flags = cluster::NodeFlags {
            nodes: self.nodes,
            rank: self.node_rank,
            coordinator: self.coordinator.clone(),
            address: self.node_address.clone(),
            data_port: self.data_port,
            timeout_s: self.node_timeout,
            external_coordinator: self.external_coordinator,
        };
        Ok(cluster::resolve(&flags, |k| std::env::var(k).ok())?)
    }
}

pub fn run(a: PretrainArgs) -> anyhow::Result<()> {
    let nodes = a.nodes.topology()?;
    let rank = nodes.as_ref().map_or(0, |t| t.rank);
    let (cfg, run_dir, out) = match &a.resume {
        Some(dir) => {
            if a.run.any() || !a.modality.is_empty() || a.steps.is_some() || a.method.is_some() {
                anyhow::bail!("--resume continues a run with the settings it was started with; give no settings");
            }
            let (cfg, run_dir, out) = pretrain::resume_on::<TrainBackend>(dir, devices, nodes, false)?;
            (cfg, Some(run_dir), out)
        }
        None => {
            let (data, out) = (a.data.clone().unwrap_or_default(), a.out.clone().unwrap_or_default());
            let req = PretrainRequest {
                data: data.clone(),
                overrides: a.run.overrides(),
                flags: PretrainFlags {
                    method: a.method,
                    modalities: a.modality.clone(),
                    steps: a.steps,
                    accum_steps: a.accum_steps,
                    checkpoint_every: a.checkpoint_every,
                },
            };
            let cfg = pretrain::resolve(&req.settings()?, &data, default_devices())?;
            if rank == 0 {
                println!("{}", pretrain::describe(&cfg));
            }
            let (run_dir, outcome) =
                pretrain::start_on::<TrainBackend>(&cfg, &out, &devices(cfg.devices), nodes, false)?;
            (cfg, run_dir, outcome)
        }
    };
    if rank > 0 {
        println!("node {rank}: finished {} steps in {:.0} s; rank 0 wrote the run folder", out.steps, out.seconds);
        return Ok(());
    }
    let run_dir = run_dir.ok_or_else(|| anyhow::anyhow!("rank 0 has no run folder"))?;
    if let Some(k) = out.resumed_from {
        println!("resumed from step {k} of {}", cfg.total_steps);
    }
    println!(
        "loss {:.4} (first 10 steps of this run) -> {:.4} (last 10)",
        out.loss_first_last.0, out.loss_first_last.1
    );
    println!(
        "weights: {} (official layout, with its model card) and weights.mpk; metrics.jsonl, checkpoints/, reconstructions/ in {}",
        out.weights.display(),
        run_dir.path().display()
    );
    println!("finished {} steps in {:.0} s", out.steps, out.seconds);
    Ok(())
}

/// Input normalisations `reconstruct` can be told.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum NormArg {
    /// `(x - 0.223) / 0.202` (the pre-training reference).
    Meanstd,
    /// Per-image min-max.
    Minmax,
    /// None.
    None,
    /// ImageNet per-channel statistics.
    Imagenet,
}

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    /// MAE weights (.safetensors, .pth or .mpk).
    #[arg(long)]
    weights: PathBuf,
    /// Images (any supported format; volumes: the middle axial slice).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output folder (created; files in it are never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Image side fed to the network (multiple of 16); default: what the weights were trained at, else 224.
    #[arg(long)]
    size: Option<usize>,
    /// Seed of the mask.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Input normalisation; default: what the weights' card says, else the reference's meanstd.
    #[arg(long, value_enum)]
    norm: Option<NormArg>,
}

pub fn reconstruct(a: ReconstructArgs) -> anyhow::Result<()> {
    let (model, spec, _) = store::load::<Backend>(&a.weights, &device())?;
    let AnyModel::Mae(model) = model else {
        anyhow::bail!("{} holds a {} model, not an MAE", a.weights.display(), spec.kind)
    };
    let from_card = spec.card.as_ref().map(|c| c.preprocess.clone());
    if from_card.is_none() && a.norm.is_none() {
        println!(
            "{} carries no model card: assuming the reference's input, (x - 0.223) / 0.202 (--norm to change)",
            a.weights.display()
        );
    }
    let mut prep = from_card.unwrap_or(Preprocess { in_chans: spec.swin.in_chans, ..Preprocess::default() });
    if let Some(n) = a.norm {
        prep.norm = match n {
            NormArg::Meanstd => InputNorm::REFERENCE_MEAN_STD,
            NormArg::Minmax => InputNorm::MinMax,
            NormArg::None => InputNorm::None,
            NormArg::Imagenet => InputNorm::imagenet(),
        };
    }
    if let Some(s) = a.size {
        prep.size = s;
    }
    if !prep.size.is_multiple_of(16) {
        anyhow::bail!("--size {} must be a multiple of 16 (the mask unit)", prep.size);
    }
    let norm_pix = spec.norm_pix_loss;
    std::fs::create_dir_all(&a.out)?;
    for path in &a.images {
        let images = file_images(path, &prep, Plane::Axial)?;
        let middle = images.len() / 2;
        let input = planes(&prep, &images[middle..=middle]).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let stem = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let out = a.out.join(format!("{stem}.reconstruction.png"));
        if out.exists() {
            anyhow::bail!("{} already exists (vismae never overwrites)", out.display());
        }
        let grid = Grid { images: &[input.data], planes: input.planes, seed: a.seed };
        reconstruction_grid::<Backend>(&model, &prep, norm_pix, &grid, &out)?;
        println!("{} -> {}", path.display(), out.display());
    }
    Ok(())
}
