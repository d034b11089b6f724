//! The pre-training step loop. Every random draw (stochastic depth, masks, data order, flips) is a
//! function of the seed and the step, so a run resumed from a checkpoint logs exactly the losses
//! of an uninterrupted one. Checkpoints (model, optimizer, position) are written to a temporary
//! folder and renamed into place; the weights end in the official key layout with a model card.

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
use vismae_model::layers::with_stochastic_seed;
use vismae_model::masking::plan_from_seed;
use vismae_model::store::{self, AnyModel, ModelSpec};
use vismae_model::weights::{export_state_dict, safetensors_io};
use vismae_model::{MaeConfig, SwinMae, VariantExt};
use vismae_run::{ModelCard, ModelKind, Origin, PretrainConfig, RunDir};

use super::replicas::data_parallel;
use super::resolve::filter;
use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::reconstruct::reconstruction_grid;
use crate::schedule::WarmupCosine;
use crate::seeds::mix;

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

/// The MAE configuration of a run.
pub fn mae_config(cfg: &PretrainConfig) -> MaeConfig {
    let s = &cfg.settings;
    let mut c = s.variant.mae(cfg.preprocess.in_chans);
    c.mask_ratio = s.mask_ratio;
    c.norm_pix_loss = s.norm_pix_loss;
    c.swin.drop_path_rate = s.drop_path;
    c
}

/// The model card of the run's weights.
pub fn card(cfg: &PretrainConfig) -> ModelCard {
    ModelCard {
        vismae: vismae_run::VISMAE_VERSION.into(),
        kind: ModelKind::Mae,
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
        metrics: Default::default(),
    }
}

/// The latest complete checkpoint of a run: `(step, folder)`.
pub fn latest_checkpoint(run: &RunDir) -> Option<(usize, PathBuf)> {
    checkpoint::latest(run, "step")
}

type Optim<B> = burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, SwinMae<B>, B>;

/// Runs (or, with `resume`, continues) pre-training in `run` as `cfg` says, data-parallel over
/// `devices` (one model; on the CPU the same device may be listed several times).
pub(crate) fn run<B: AutodiffBackend>(
    cfg: &PretrainConfig,
    run: &RunDir,
    devices: &[B::Device],
    resume: bool,
    quiet: bool,
) -> Result<PretrainOutcome> {
    let device = devices.first().ok_or_else(|| TrainError::invalid("no device to train on"))?;
    let started = Instant::now();
    let s = &cfg.settings;
    let spec = &cfg.preprocess;
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
    let channels = ds.info().channels;
    let mcfg = mae_config(cfg);
    B::seed(device, s.seed);
    let mut model: SwinMae<B> = mcfg.init(device);
    let mut optim: Optim<B> = AdamWConfig::new()
        .with_beta_1(s.betas.0 as f32)
        .with_beta_2(s.betas.1 as f32)
        .with_epsilon(s.eps as f32)
        .with_weight_decay(s.weight_decay as f32)
        .init();
    let mut start = 0;
    let mut resumed_from = None;
    if resume && let Some((step, dir)) = latest_checkpoint(run) {
        let state: CheckpointState;
        (model, optim, state) = checkpoint::load(&dir, model, optim, device)?;
        debug_assert_eq!(state.step, step);
        start = step;
        resumed_from = Some(step);
        checkpoint::truncate_jsonl(run, "metrics.jsonl", "step", step)?;
    }
    let sched =
        WarmupCosine { lr: s.lr, min_lr: s.min_lr, warmup: cfg.warmup_steps as f64, total: cfg.total_steps as f64 };
    let lo =
        LoaderOptions { batch_size: s.batch_size, seed: s.seed, workers: s.workers, hflip: s.hflip, drop_last: true };
    let pb = if quiet { ProgressBar::hidden() } else { RunDir::bar(cfg.total_steps, start, "pretrain", "steps") };
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
        let mut summed = GradientsAccumulator::<SwinMae<B>>::new();
        let mut step_loss = 0.0;
        for micro in 0..s.accum_steps {
            let batch = batches
                .as_mut()
                .and_then(|b| b.next())
                .ok_or_else(|| TrainError::invalid(format!("the data loader ended early at step {step}")))?;
            B::seed(device, mix(s.seed, step as u64, micro as u64));
            let n = batch.indices.len();
            let geom = model.mask_geometry(cfg.size, cfg.size);
            let plan = plan_from_seed(geom, n, mix(s.seed ^ 0x6d61736b, step as u64, micro as u64))?;
            let stochastic = mix(s.seed ^ 0x64726f70, step as u64, micro as u64);
            let scale = 1.0 / (n * s.accum_steps) as f64;
            let results = data_parallel(&model, devices, &batch.data, &plan, |replica, dev, data, sub_plan, offset| {
                let k = sub_plan.batch;
                with_stochastic_seed(stochastic, offset as u64, || {
                    let x = crate::input::batch::<B>(spec, &data, k, channels, dev);
                    let out = replica.forward(x, sub_plan)?;
                    // each replica's mean, weighted by its share: the sum is the whole batch's mean
                    let loss = out.loss * (k as f64 * scale);
                    let value = crate::losses::scalar(loss.clone());
                    Ok((GradientsParams::from_grads::<B, _>(loss.backward(), replica), value))
                })
            });
            let (grads, values) = results?;
            for value in values {
                if !value.is_finite() {
                    pb.abandon();
                    let last =
                        latest_checkpoint(run).map(|(k, _)| format!("step {k}")).unwrap_or_else(|| "none".into());
                    return Err(TrainError::Stopped(format!(
                        "the loss became {value} at step {step} (epoch {epoch}); stopped. Last good checkpoint: {last} in {}. Lower the learning rate (now {:.2e}) or check the data.",
                        checkpoint::dir(run).display(),
                        sched.at(step as f64)
                    )));
                }
                step_loss += value;
            }
            summed.accumulate(&model, grads.to_device(device, &model));
        }
        let lr = sched.at(step as f64);
        model = optim.step(lr, model, summed.grads());
        losses.push(step_loss);
        let secs = t0.elapsed().as_secs_f64();
        run.append_json(
            "metrics.jsonl",
            &json!({"step": step + 1, "epoch": step as f64 / cfg.steps_per_epoch as f64, "loss": step_loss, "lr": lr, "images_per_s": cfg.effective_batch as f64 / secs}),
        )?;
        pb.set_message(format!("loss {step_loss:.4}, {:.1} img/s", cfg.effective_batch as f64 / secs));
        pb.set_position(step as u64 + 1);
        let done = step + 1;
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
        let epoch_end = done.is_multiple_of(cfg.steps_per_epoch);
        let finished_epoch = done / cfg.steps_per_epoch;
        if (epoch_end && s.reconstruct_every > 0 && finished_epoch.is_multiple_of(s.reconstruct_every))
            || done == cfg.total_steps
        {
            let name = format!("reconstructions/step-{done:08}.png");
            let dir = run.join("reconstructions");
            std::fs::create_dir_all(&dir).map_err(|e| TrainError::output(&dir, e))?;
            let images: Vec<Vec<f32>> = (0..s.reconstruct_images.min(ds.len()))
                .map(|i| ds.pixels(i).iter().step_by(channels).map(|&v| v as f32 / 255.0).collect())
                .collect();
            let grid = crate::reconstruct::Grid { images: &images, planes: 1, seed: s.seed };
            reconstruction_grid::<B::InnerBackend>(&model.valid(), spec, s.norm_pix_loss, &grid, &run.join(&name))?;
        }
    }
    pb.finish_and_clear();
    let (model, mut sd) = export_state_dict::<B, _>(model);
    let card = card(cfg);
    sd.set_card(&card);
    let weights = run.join("weights.safetensors");
    safetensors_io::write(&sd, &weights)?;
    let spec = ModelSpec::mae(&mcfg).with_card(card);
    store::save(AnyModel::Mae(model), &spec, &run.join("weights.mpk"))?;
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
