//! The pre-training step loop, shared by the methods ([`Method`]: MAE, SimCLR): data order,
//! gradient accumulation, AdamW with warm-up and cosine, `metrics.jsonl`, the non-finite stop,
//! checkpoints and resume. Every random draw (stochastic depth, masks, views, data order, flips)
//! is a function of the seed and the step, so a run resumed from a checkpoint logs exactly the
//! losses of an uninterrupted one. Checkpoints (model, optimizer, position) are written to a
//! temporary folder and renamed into place; the weights end in the official key layout with a
//! model card.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vismae_data::dataset::reader::{LoaderOptions, ShardedDataset, epoch_batches_from};
use vismae_run::{Method as MethodName, ModelCard, ModelKind, Origin, PretrainConfig, RunDir};

use super::mae::{Mae, mae_config};
use super::replicas::Share;
use super::resolve::filter;
use super::simclr::{SimClrMethod, simclr_config};
use crate::checkpoint;
use crate::cluster::{self, Fingerprints, Group, Topology};
use crate::error::{Result, TrainError};
use crate::schedule::WarmupCosine;
use crate::seeds::mix;

/// Where a micro-batch is in the run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Micro {
    /// Optimizer step (0-based).
    pub step: usize,
    /// Micro-batch within the step.
    pub micro: usize,
    /// Images in the micro-batch.
    pub images: usize,
    /// `1 / (images * accum_steps)`: a replica's summed loss times this is its share of the step's mean.
    pub scale: f64,
    /// This node's replicas among the run's.
    pub share: Share,
}

/// A pre-training method: its network, the gradient of one micro-batch over the replicas, what it
/// shows after a step, and its weights at the end.
pub(crate) trait Method<B: AutodiffBackend> {
    /// The network.
    type Model: AutodiffModule<B> + vismae_model::weights::Visit<B> + Sync;
    /// A freshly initialised network.
    fn init(&self, device: &B::Device) -> Self::Model;
    /// The summed gradient of a micro-batch (`[images, planes, S, S]` values in `[0, 1]`) and
    /// every replica's share of its loss.
    fn micro(
        &self,
        model: &Self::Model,
        devices: &[B::Device],
        data: &[f32],
        m: Micro,
    ) -> Result<(GradientsParams, Vec<f64>)>;
    /// After optimizer step `done` (1-based): pictures for people.
    fn after_step(&self, model: &Self::Model, run: &RunDir, done: usize) -> Result<()>;
    /// Writes the weights (official layout, with the model card); returns the safetensors path.
    fn export(&self, model: Self::Model, run: &RunDir) -> Result<PathBuf>;
}

/// Position saved with a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Loss of the last step.
    pub loss: f64,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct PretrainOutcome {
    /// Optimizer steps completed in total.
    pub steps: usize,
    /// Step the run resumed from, if it did.
    pub resumed_from: Option<usize>,
    /// Mean loss over the first and the last (up to) 10 steps of this invocation.
    pub loss_first_last: (f64, f64),
    /// The official-layout weights.
    pub weights: PathBuf,
    /// Seconds spent.
    pub seconds: f64,
}

/// The model card of the run's weights.
pub fn card(cfg: &PretrainConfig, kind: ModelKind) -> ModelCard {
    ModelCard {
        vismae: vismae_run::VISMAE_VERSION.into(),
        kind,
        variant: Some(cfg.settings.variant),
        name: cfg.name(),
        preprocess: cfg.preprocess.clone(),
        origin: Origin::Pretrained {
            method: cfg.method(),
            modalities: cfg.settings.modalities.clone(),
            images: cfg.images,
            steps: cfg.total_steps,
            data: cfg.data.display().to_string(),
        },
        classes: Vec::new(),
        layer_norm_eps: None,
        finetune_norm: None,
        metrics: Default::default(),
        data: cfg.data_summary.clone(),
        licence: cfg.settings.licence.clone(),
    }
}

/// The latest complete checkpoint of a run: `(step, folder)`.
pub fn latest_checkpoint(run: &RunDir) -> Option<(usize, PathBuf)> {
    checkpoint::latest(run, "step")
}

/// Runs (or, with `resume`, continues) pre-training as `cfg` says, data-parallel over `devices`
/// (one model; on the CPU the same device may be listed several times) and, with `nodes`, over
/// the nodes of a multi-node run. `run` is the run folder (`None` on a node other than rank 0 that
/// starts afresh); only rank 0 writes to it.
pub(crate) fn run<B: AutodiffBackend>(
    cfg: &PretrainConfig,
    run: Option<&RunDir>,
    devices: &[B::Device],
    nodes: Option<Topology>,
    resume: bool,
    quiet: bool,
) -> Result<PretrainOutcome> {
    let s = &cfg.settings;
    let ds = Arc::new(ShardedDataset::open(&cfg.data, &filter(s))?);
    if ds.len() != cfg.images || ds.info().size != cfg.size {
        return Err(TrainError::invalid(format!(
            "the dataset at {} changed since the run began ({} images of {}px, expected {} of {}px)",
            cfg.data.display(),
            ds.len(),
            ds.info().size,
            cfg.images,
            cfg.size
        )));
    }
    match s.method {
        MethodName::Mae => {
            let method = Mae { cfg, ds: ds.clone(), mcfg: mae_config(cfg) };
            steps::<B, _>(&method, cfg, ds, run, devices, nodes, resume, quiet)
        }
        MethodName::Simclr if nodes.is_some() => Err(TrainError::invalid(
            "SimCLR pre-training runs on one node only (its contrastive loss gathers every replica's projections, which vismae does not yet do across nodes); use --devices, or --method mae",
        )),
        MethodName::Simclr => {
            let method = SimClrMethod { cfg, ccfg: simclr_config(cfg) };
            steps::<B, _>(&method, cfg, ds, run, devices, nodes, resume, quiet)
        }
    }
}

/// The fingerprints a node's start is checked by: settings (without the data path), dataset and weights.
fn fingerprints<B: AutodiffBackend, M: AutodiffModule<B>>(cfg: &PretrainConfig, model: &M) -> Result<Fingerprints> {
    let mut shared = cfg.clone();
    // checked apart: the data by its manifests, the replicas by their count
    shared.data = PathBuf::new();
    (shared.devices, shared.settings.devices) = (0, 0);
    Ok(Fingerprints::new(
        &cluster::settings_hash(&shared)?,
        &cluster::dataset_hash(&cfg.data)?,
        &cluster::bucket::weights_hash::<B, M>(model),
    ))
}

/// A loss value as two float32s whose sum is it to about 1e-14 (a bucket is float32).
fn split(v: f64) -> [f32; 2] {
    let hi = v as f32;
    [hi, (v - f64::from(hi)) as f32]
}

/// The step loop of `method`.
#[allow(clippy::too_many_arguments)]
fn steps<B: AutodiffBackend, M: Method<B>>(
    method: &M,
    cfg: &PretrainConfig,
    ds: Arc<ShardedDataset>,
    run: Option<&RunDir>,
    devices: &[B::Device],
    nodes: Option<Topology>,
    resume: bool,
    quiet: bool,
) -> Result<PretrainOutcome> {
    let device = devices.first().ok_or_else(|| TrainError::invalid("no device to train on"))?;
    let started = Instant::now();
    let s = &cfg.settings;
    let mut model: M::Model = crate::seeds::locked(|| {
        B::seed(device, s.seed);
        method.init(device)
    });
    let mut optim = AdamWConfig::new()
        .with_beta_1(s.betas.0 as f32)
        .with_beta_2(s.betas.1 as f32)
        .with_epsilon(s.eps as f32)
        .with_weight_decay(s.weight_decay as f32)
        .init::<B, M::Model>();
    let mut start = 0;
    let mut resumed_from = None;
    if resume && let Some((step, dir)) = run.and_then(latest_checkpoint) {
        let state: CheckpointState;
        (model, optim, state) = checkpoint::load(&dir, model, optim, device)?;
        debug_assert_eq!(state.step, step);
        start = step;
        resumed_from = Some(step);
        if nodes.as_ref().is_none_or(Topology::writes)
            && let Some(run) = run
        {
            checkpoint::truncate_jsonl(run, "metrics.jsonl", "step", step)?;
        }
    }
    let share = Share::of(nodes.as_ref(), devices.len());
    let group = match nodes {
        Some(t) => Some(Group::<B>::start(t, devices.len(), quiet, device, &fingerprints::<B, _>(cfg, &model)?)?),
        None => None,
    };
    // the node that writes the run folder (the only node, or rank 0)
    let writer = run.filter(|_| group.as_ref().is_none_or(|g| g.topology().writes()));
    let last_checkpoint = || match run {
        Some(r) => {
            let last = latest_checkpoint(r).map(|(k, _)| format!("step {k}")).unwrap_or_else(|| "none".into());
            format!("{last} in {}", checkpoint::dir(r).display())
        }
        // a node other than rank 0 that started the run holds no run folder
        None => "the latest in rank 0's run folder".into(),
    };
    let sched =
        WarmupCosine { lr: s.lr, min_lr: s.min_lr, warmup: cfg.warmup_steps as f64, total: cfg.total_steps as f64 };
    // SimCLR's views draw their own flips
    let hflip = s.hflip && s.method == MethodName::Mae;
    let lo = LoaderOptions { batch_size: s.batch_size, seed: s.seed, workers: s.workers, hflip, drop_last: true };
    let pb = if quiet || writer.is_none() {
        ProgressBar::hidden()
    } else {
        RunDir::bar(cfg.total_steps, start, "pretrain", "steps")
    };
    let micro_per_epoch = cfg.steps_per_epoch * s.accum_steps;
    let mut batches: Option<Box<dyn Iterator<Item = vismae_data::dataset::reader::Batch>>> = None;
    let mut current_epoch = usize::MAX;
    let mut losses = Vec::new();
    for step in start..cfg.total_steps {
        let t0 = Instant::now();
        let epoch = step / cfg.steps_per_epoch;
        if epoch != current_epoch {
            let first_micro = (step % cfg.steps_per_epoch) * s.accum_steps;
            batches = Some(Box::new(
                epoch_batches_from(ds.clone(), &lo, epoch as u64, first_micro).take(micro_per_epoch - first_micro),
            ));
            current_epoch = epoch;
        }
        // gradients of every (micro-batch, replica), summed in that fixed order on the first device:
        // the order of a floating-point sum decides its last bits, and resumed runs must match
        let mut summed = GradientsAccumulator::<M::Model>::new();
        // every replica's loss share, micro-batch by micro-batch, in the global replica order
        let mut values = vec![0f64; s.accum_steps * share.total];
        for micro in 0..s.accum_steps {
            let batch = batches
                .as_mut()
                .and_then(|b| b.next())
                .ok_or_else(|| TrainError::invalid(format!("the data loader ended early at step {step}")))?;
            // under the lock: a reseed must not land inside another thread's initialisation
            crate::seeds::locked(|| B::seed(device, mix(s.seed, step as u64, micro as u64)));
            let n = batch.indices.len();
            let m = Micro { step, micro, images: n, scale: 1.0 / (n * s.accum_steps) as f64, share };
            let (grads, local) = method.micro(&model, devices, &batch.data, m)?;
            for (w, v) in local.into_iter().enumerate() {
                values[micro * share.total + share.first + w] = v;
            }
            summed.accumulate(&model, grads.to_device(device, &model));
        }
        let mut grads = summed.grads();
        if let Some(g) = &group {
            // one bucket per step: the node's summed gradients and its losses, summed over the nodes
            let extra: Vec<f32> = values.iter().flat_map(|v| split(*v)).collect();
            let (reduced, extra) =
                g.sum_gradients(&model, &grads, &extra, device, &format!("step {}", step + 1)).map_err(|why| {
                    pb.abandon();
                    TrainError::Stopped(format!(
                        "{why}. Last checkpoint: {}; start every node again with --resume",
                        last_checkpoint()
                    ))
                })?;
            grads = reduced;
            values = extra.chunks(2).map(|p| f64::from(p[0]) + f64::from(p[1])).collect();
        }
        let mut step_loss = 0.0;
        for value in values {
            if !value.is_finite() {
                pb.abandon();
                return Err(TrainError::Stopped(format!(
                    "the loss became {value} at step {step} (epoch {epoch}); stopped. Last good checkpoint: {}. Lower the learning rate (now {:.2e}) or check the data.",
                    last_checkpoint(),
                    sched.at(step as f64)
                )));
            }
            step_loss += value;
        }
        let lr = sched.at(step as f64);
        model = optim.step(lr, model, grads);
        losses.push(step_loss);
        let secs = t0.elapsed().as_secs_f64();
        let done = step + 1;
        pb.set_message(format!("loss {step_loss:.4}, {:.1} img/s", cfg.effective_batch as f64 / secs));
        pb.set_position(done as u64);
        let Some(run) = writer else { continue };
        run.append_json(
            "metrics.jsonl",
            &json!({"step": done, "epoch": step as f64 / cfg.steps_per_epoch as f64, "loss": step_loss, "lr": lr, "images_per_s": cfg.effective_batch as f64 / secs}),
        )?;
        if done.is_multiple_of(s.checkpoint_every.max(1)) || done == cfg.total_steps {
            checkpoint::save(
                run,
                "step",
                done,
                &model,
                &optim,
                &CheckpointState { step: done, loss: step_loss },
                s.keep_checkpoints,
            )?;
        }
        method.after_step(&model, run, done)?;
    }
    pb.finish_and_clear();
    if let Some(g) = group {
        g.finish();
    }
    let weights = match writer {
        Some(run) => method.export(model, run)?,
        // rank 0 writes them
        None => run.map(|r| r.join("weights.safetensors")).unwrap_or_default(),
    };
    let k = 10.min(losses.len());
    let mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
    Ok(PretrainOutcome {
        steps: cfg.total_steps,
        resumed_from,
        loss_first_last: (mean(&losses[..k]), mean(&losses[losses.len() - k..])),
        weights,
        seconds: started.elapsed().as_secs_f64(),
    })
}
