//! `vismae pretrain` and `vismae reconstruct`: arguments, settings resolution, run folders.

use std::path::PathBuf;

use clap::Args;
use vismae_data::source::{NormaliseOptions, SliceOptions, Source};
use vismae_model::store::{self, AnyModel};
use vismae_train::pretrain::{self, resolve};
use vismae_train::pretrain_config::{PretrainSettings, ResolvedPretrain};
use vismae_train::reconstruct::reconstruction_grid;
use vismae_train::run_dir::RunDir;

use crate::{Backend, TrainBackend, device};

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Dataset folder written by `vismae ingest`.
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// Run folder (must not hold a run yet).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, conflicts_with_all = ["data", "out"])]
    resume: Option<PathBuf>,
    /// Train on these modalities only (repeatable or comma-separated), e.g. MR for VIS-MAE-MR.
    #[arg(long, value_delimiter = ',')]
    modality: Vec<String>,
    /// Model size: tiny, small or vis-mae.
    #[arg(long)]
    variant: Option<String>,
    /// Settings file (TOML; any subset of the keys in config.json's "settings").
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one setting, e.g. --set lr=1e-3 --set warmup_epochs=5 (repeatable).
    #[arg(long = "set")]
    sets: Vec<String>,
    /// Epochs (default 800).
    #[arg(long)]
    epochs: Option<usize>,
    /// Optimizer steps instead of epochs.
    #[arg(long)]
    steps: Option<usize>,
    /// Images per micro-batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    accum_steps: Option<usize>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Checkpoint every N steps.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Data-parallel replicas (GPUs 0..N-1 with --features cuda; CPU workers sharing the cores otherwise).
    #[arg(long)]
    devices: Option<usize>,
}

fn settings(a: &PretrainArgs) -> anyhow::Result<PretrainSettings> {
    let mut sets = Vec::new();
    let mut put = |k: &str, v: String| sets.push(format!("{k}={v}"));
    if let Some(v) = &a.variant {
        put("variant", format!("{v:?}"));
    }
    if !a.modality.is_empty() {
        put("modalities", format!("{:?}", a.modality));
    }
    for (k, v) in [
        ("epochs", a.epochs),
        ("steps", a.steps),
        ("batch_size", a.batch_size),
        ("accum_steps", a.accum_steps),
        ("checkpoint_every", a.checkpoint_every),
        ("devices", a.devices),
    ] {
        if let Some(v) = v {
            put(k, v.to_string());
        }
    }
    if let Some(s) = a.seed {
        put("seed", s.to_string());
    }
    sets.extend(a.sets.iter().cloned());
    let mut s = PretrainSettings::load(a.config.as_deref(), &sets).map_err(anyhow::Error::msg)?;
    if s.devices == 0 {
        // flex runs most kernels on one core: one replica per core is ~1.7x faster on 2 cores
        s.devices =
            if cfg!(feature = "cuda") { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
    }
    Ok(s)
}

pub fn run(a: PretrainArgs) -> anyhow::Result<()> {
    let (cfg, run_dir, resume) = match &a.resume {
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join("config.json")).map_err(|e| {
                anyhow::anyhow!("{}: {e} (is this a vismae pretrain run folder?)", dir.join("config.json").display())
            })?;
            let cfg: ResolvedPretrain = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("config.json").display()))?;
            (cfg, RunDir::open_existing(dir)?, true)
        }
        None => {
            let (data, out) = (a.data.clone().unwrap_or_default(), a.out.clone().unwrap_or_default());
            let cfg = resolve(&settings(&a)?, &data).map_err(anyhow::Error::msg)?;
            let run_dir = RunDir::create(&out)?;
            run_dir.write_json("config.json", &cfg)?;
            (cfg, run_dir, false)
        }
    };
    let s = &cfg.settings;
    println!(
        "pre-training {} on {} images ({}px) from {}: effective batch {} ({} x {}), lr {:.2e} (peak; warm-up {} steps, cosine to {:.1e}), {} steps ({} per epoch)",
        s.variant,
        cfg.images,
        cfg.size,
        cfg.data.display(),
        cfg.effective_batch,
        s.batch_size,
        s.accum_steps,
        s.lr,
        cfg.warmup_steps,
        s.min_lr,
        cfg.total_steps,
        cfg.steps_per_epoch
    );
    let devices = crate::devices(s.devices);
    let out = pretrain::run::<TrainBackend>(&cfg, &run_dir, &devices, resume, false).map_err(anyhow::Error::msg)?;
    if let Some(k) = out.resumed_from {
        println!("resumed from step {k}");
    }
    println!(
        "loss {:.4} (first 10 steps of this run) -> {:.4} (last 10)",
        out.loss_first_last.0, out.loss_first_last.1
    );
    println!(
        "weights: {} (official layout) and weights.mpk; metrics.jsonl, checkpoints/, reconstructions/ in {}",
        out.weights.display(),
        run_dir.path().display()
    );
    println!("finished {} steps in {:.0} s", out.steps, out.seconds);
    Ok(())
}

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    /// MAE weights (.safetensors, .pth or .mpk).
    #[arg(long)]
    weights: PathBuf,
    /// Images (any supported format).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output folder (created; files in it are never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Image side fed to the network (multiple of 16).
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Seed of the mask.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Input normalisation the weights were trained with: meanstd (0.223/0.202) or minmax.
    #[arg(long, default_value = "meanstd")]
    norm: String,
}

pub fn reconstruct(a: ReconstructArgs) -> anyhow::Result<()> {
    let (model, spec, _) = store::load::<Backend>(&a.weights, &device())?;
    let AnyModel::Mae(model) = model else {
        anyhow::bail!("{} holds a {} model, not an MAE", a.weights.display(), spec.kind)
    };
    let mut s = PretrainSettings { in_chans: spec.swin.in_chans, ..Default::default() };
    if a.norm == "minmax" {
        s.norm = vismae_train::pretrain_config::InputNorm::MinMax;
    }
    std::fs::create_dir_all(&a.out)?;
    for path in &a.images {
        let slices = SliceOptions { skip_empty: false, ..Default::default() };
        let src = Source::open(path, &slices)?;
        let k = src.len() / 2;
        let raw = src.image(k, &slices)?.ok_or_else(|| anyhow::anyhow!("{}: empty image", path.display()))?;
        let (r, _) = raw.normalise(&NormaliseOptions::default());
        let r = r.resize_bilinear(a.size, a.size);
        let stem = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let out = a.out.join(format!("{stem}.reconstruction.png"));
        if out.exists() {
            anyhow::bail!("{} already exists (vismae never overwrites)", out.display());
        }
        reconstruction_grid::<Backend>(&model, &[r.data], a.size, &s, a.seed, &out).map_err(anyhow::Error::msg)?;
        println!("{} -> {}", path.display(), out.display());
    }
    Ok(())
}
