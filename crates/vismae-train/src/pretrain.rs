//! `vismae pretrain`: window-masked MAE pre-training (SPEC §2, §6.1-6.2) on a dataset written by
//! `vismae ingest`. Every random draw (stochastic depth, masks, data order, flips) is a function
//! of the seed and the step, so a run resumed from a checkpoint logs exactly the losses of an
//! uninterrupted one. Checkpoints (model, optimizer, position) are written to a temporary folder
//! and renamed into place; the weights end in the official key layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::collective::{self, AllReduceStrategy, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vismae_data::dataset::reader::{Filter, LoaderOptions, ShardedDataset, epoch_batches_from};
use vismae_model::layers::with_stochastic_seed;
use vismae_model::masking::{MaskPlan, plan_from_seed};
use vismae_model::store::{self, AnyModel, ModelSpec};
use vismae_model::weights::{export_state_dict, safetensors_io};
use vismae_model::{MaeConfig, SwinMae, Variant};

use crate::checkpoint;
use crate::pretrain_config::{InputNorm, PretrainSettings, ResolvedPretrain};
use crate::reconstruct::reconstruction_grid;
use crate::run_dir::RunDir;
use crate::schedule::WarmupCosine;

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

/// Resolves settings against the dataset: images selected, steps per epoch, total and warm-up steps.
pub fn resolve(settings: &PretrainSettings, data: &Path) -> Result<ResolvedPretrain, String> {
    let ds = ShardedDataset::open(data, &filter(settings)).map_err(|e| e.to_string())?;
    let size = ds.info().size;
    if !size.is_multiple_of(16) {
        return Err(format!("dataset images are {size}px: pre-training needs a multiple of 16 (the mask unit)"));
    }
    let effective_batch = settings.batch_size * settings.accum_steps;
    let steps_per_epoch = ds.len() / effective_batch;
    if steps_per_epoch == 0 {
        return Err(format!(
            "{} image(s) selected (modalities {:?}), fewer than one effective batch of {effective_batch}",
            ds.len(),
            settings.modalities
        ));
    }
    let total_steps = settings.steps.unwrap_or(settings.epochs * steps_per_epoch);
    let warmup_steps = (settings.warmup_epochs * steps_per_epoch as f64).round() as usize;
    Ok(ResolvedPretrain {
        settings: settings.clone(),
        data: std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf()),
        images: ds.len(),
        size,
        effective_batch,
        steps_per_epoch,
        total_steps,
        warmup_steps: warmup_steps.min(total_steps),
    })
}

fn filter(s: &PretrainSettings) -> Filter {
    Filter { modalities: s.modalities.clone(), ..Default::default() }
}

/// The MAE configuration of a run.
pub fn mae_config(s: &PretrainSettings) -> MaeConfig {
    let mut c = Variant::from_name(&s.variant).unwrap_or(Variant::VisMae).mae(s.in_chans);
    c.mask_ratio = s.mask_ratio;
    c.norm_pix_loss = s.norm_pix_loss;
    c.swin.drop_path_rate = s.drop_path;
    c
}

/// A 64-bit mix of the seed and positions (SplitMix64), for per-step seeds.
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Turns `[B, C, S, S]` values in [0, 1] (C = 1 or 3) into network input: grey replicated to 3
/// channels or colour averaged to grey as `in_chans` asks, then normalised.
pub fn to_input<B: burn::tensor::backend::Backend>(
    data: Vec<f32>,
    b: usize,
    size: usize,
    s: &PretrainSettings,
    device: &B::Device,
) -> Tensor<B, 4> {
    let c = data.len() / (b * size * size).max(1);
    let x = Tensor::<B, 4>::from_data(TensorData::new(data, [b, c, size, size]), device);
    let x = if c == 3 && s.in_chans == 1 { x.mean_dim(1) } else { x };
    let x = match &s.norm {
        InputNorm::MeanStd { mean, std } => (x - *mean) / *std,
        InputNorm::MinMax => {
            let ch = x.dims()[1];
            let flat = x.clone().reshape([b, ch * size * size]);
            let lo = flat.clone().min_dim(1).reshape([b, 1, 1, 1]);
            let hi = flat.max_dim(1).reshape([b, 1, 1, 1]);
            (x - lo.clone() + 1e-6) / (hi - lo + 1e-6)
        }
    };
    if s.in_chans == 3 && x.dims()[1] == 1 { x.repeat_dim(1, 3) } else { x }
}

/// The latest complete checkpoint of a run: `(step, folder)`.
pub fn latest_checkpoint(run: &RunDir) -> Option<(usize, PathBuf)> {
    checkpoint::latest(run, "step")
}

type Optim<B> = burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, SwinMae<B>, B>;

type ReplicaOut = (GradientsParams, f64);

/// The collective configuration of `n` data-parallel replicas on one machine: gradients are
/// all-reduced (summed) with burn-collective's tree strategy, which orders devices by id.
fn collective_config(n: usize) -> CollectiveConfig {
    CollectiveConfig::default().with_num_devices(n).with_local_all_reduce_strategy(AllReduceStrategy::Tree(2))
}

/// Splits a micro-batch (`[n, c, S, S]` values and its mask plan) into contiguous chunks, one per
/// device, and runs `work` on each in its own thread with a replica of the model on that device.
/// The replicas' gradients are summed by burn-collective's all-reduce (every replica registers as
/// a peer for the step); the sum, on the first device, is returned with every replica's loss.
/// One device runs inline, without the collective.
pub(crate) fn data_parallel<B: AutodiffBackend>(
    model: &SwinMae<B>,
    devices: &[B::Device],
    data: &[f32],
    plan: &MaskPlan,
    work: impl Fn(&SwinMae<B>, &B::Device, Vec<f32>, &MaskPlan, usize) -> Result<ReplicaOut, String> + Sync,
) -> Result<(GradientsParams, Vec<f64>), String> {
    let n = plan.batch;
    let per_image = data.len() / n.max(1);
    let tokens = plan.grid_h * plan.grid_w;
    let replicas = devices.len().clamp(1, n.max(1));
    let chunks: Vec<(usize, usize)> =
        (0..replicas).map(|w| (w * n / replicas, (w + 1) * n / replicas)).filter(|(a, b)| b > a).collect();
    let sub = |a: usize, b: usize| MaskPlan {
        batch: b - a,
        mask: plan.mask[a * tokens..b * tokens].to_vec(),
        ..plan.clone()
    };
    if chunks.len() == 1 {
        let (g, v) = work(model, &devices[0], data.to_vec(), plan, 0)?;
        return Ok((g, vec![v]));
    }
    let peers = chunks.len();
    let outs: Vec<Result<(Option<GradientsParams>, f64), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .enumerate()
            .map(|(w, &(a, b))| {
                let dev = devices[w].clone();
                let replica = model.clone().fork(&dev);
                let chunk = data[a * per_image..b * per_image].to_vec();
                let sub_plan = sub(a, b);
                let work = &work;
                scope.spawn(move || {
                    let peer = PeerId::from(w as u32);
                    let fail = |what: &str, e: CollectiveError| format!("replica {w}: collective {what} failed: {e:?}");
                    collective::register::<B::InnerBackend>(peer, dev.clone(), collective_config(peers))
                        .map_err(|e| fail("register", e))?;
                    // each replica in a one-thread rayon pool: the CPU kernels (gemm, reductions)
                    // then never split work with the other replica, so results are bit-reproducible
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().map_err(|e| e.to_string());
                    let out = pool.and_then(|p| p.install(|| work(&replica, &dev, chunk, &sub_plan, a)));
                    // every peer must take part in the all-reduce, even one whose work failed
                    let (grads, value) = match out {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = collective::finish_collective::<B::InnerBackend>(peer);
                            return Err(e);
                        }
                    };
                    let summed = grads
                        .all_reduce::<B::InnerBackend>(peer, ReduceOperation::Sum)
                        .map_err(|e| fail("all-reduce", e));
                    collective::finish_collective::<B::InnerBackend>(peer).map_err(|e| fail("finish", e))?;
                    Ok(((w == 0).then_some(summed?), value))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a data-parallel worker panicked".into())))
            .collect()
    });
    let mut grads = None;
    let mut values = Vec::with_capacity(peers);
    for o in outs {
        let (g, v) = o?;
        grads = grads.or(g);
        values.push(v);
    }
    Ok((grads.ok_or("no gradients from the first replica")?, values))
}

/// Runs (or, with `resume`, continues) pre-training in `run` as `cfg` says, data-parallel over
/// `devices` (one model; on the CPU the same device may be listed several times).
pub fn run<B: AutodiffBackend>(
    cfg: &ResolvedPretrain,
    run: &RunDir,
    devices: &[B::Device],
    resume: bool,
    quiet: bool,
) -> Result<PretrainOutcome, String> {
    let device = devices.first().ok_or("no device to train on")?;
    let started = Instant::now();
    let s = &cfg.settings;
    let ds = Arc::new(ShardedDataset::open(&cfg.data, &filter(s)).map_err(|e| e.to_string())?);
    if ds.len() != cfg.images || ds.info().size != cfg.size {
        return Err(format!(
            "the dataset at {} changed since the run began ({} images, expected {})",
            cfg.data.display(),
            ds.len(),
            cfg.images
        ));
    }
    let mcfg = mae_config(s);
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
                .ok_or_else(|| format!("the data loader ended early at step {step}"))?;
            B::seed(device, mix(s.seed, step as u64, micro as u64));
            let n = batch.indices.len();
            let geom = model.mask_geometry(cfg.size, cfg.size);
            let plan = plan_from_seed(geom, n, mix(s.seed ^ 0x6d61736b, step as u64, micro as u64))?;
            let stochastic = mix(s.seed ^ 0x64726f70, step as u64, micro as u64);
            let scale = 1.0 / (n * s.accum_steps) as f64;
            let results = data_parallel(&model, devices, &batch.data, &plan, |replica, dev, data, sub_plan, offset| {
                let k = sub_plan.batch;
                with_stochastic_seed(stochastic, offset as u64, || {
                    let x = to_input::<B>(data, k, cfg.size, s, dev);
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
                    return Err(format!(
                        "the loss became {value} at step {step} (epoch {epoch}); stopped. Last good checkpoint: {last} in {}. Lower the learning rate (now {:.2e}) or check the data.",
                        checkpoint::dir(run).display(),
                        sched.at(step as f64)
                    ));
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
        )
        .map_err(|e| e.to_string())?;
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
            std::fs::create_dir_all(run.join("reconstructions")).map_err(|e| e.to_string())?;
            let images: Vec<Vec<f32>> = (0..s.reconstruct_images.min(ds.len()))
                .map(|i| ds.pixels(i).iter().step_by(ds.info().channels).map(|&v| v as f32 / 255.0).collect())
                .collect();
            reconstruction_grid::<B::InnerBackend>(&model.valid(), &images, cfg.size, s, s.seed, &run.join(&name))?;
        }
    }
    pb.finish_and_clear();
    let (model, sd) = export_state_dict::<B, _>(model);
    let weights = run.join("weights.safetensors");
    safetensors_io::write(&sd, &weights).map_err(|e| e.to_string())?;
    let spec = ModelSpec::mae(&mcfg);
    store::save(AnyModel::Mae(model), &spec, &run.join("weights.mpk")).map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::backend::Backend;
    use vismae_model::weights::{Values, export_state_dict};

    type B = Autodiff<Flex>;

    /// The summed gradient of a batch computed by `replicas` data-parallel replicas, read back as
    /// the change one plain SGD step (lr 1) makes to every weight.
    fn gradient(replicas: usize) -> Vec<f32> {
        let device = Default::default();
        B::seed(&device, 7);
        let model: SwinMae<B> = Variant::Tiny.mae(3).init(&device);
        let (n, size) = (6, 32);
        let data: Vec<f32> = (0..n * 3 * size * size).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let plan = plan_from_seed(model.mask_geometry(size, size), n, 3).unwrap_or_else(|e| panic!("{e}"));
        let devices = vec![device; replicas];
        let (grads, losses) = data_parallel(&model, &devices, &data, &plan, |replica, dev, chunk, sub, offset| {
            with_stochastic_seed(11, offset as u64, || {
                let k = sub.batch;
                let x = Tensor::<B, 4>::from_data(TensorData::new(chunk, [k, 3, size, size]), dev);
                let loss = replica.forward(x, sub)?.loss * (k as f64 / n as f64);
                let value = crate::losses::scalar(loss.clone());
                Ok((GradientsParams::from_grads::<B, _>(loss.backward(), replica), value))
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(losses.len(), replicas);
        let (model, before) = export_state_dict::<B, _>(model);
        let mut optim = burn::optim::SgdConfig::new().init::<B, SwinMae<B>>();
        let (_, after) = export_state_dict::<B, _>(optim.step(1.0, model, grads));
        let mut delta = Vec::new();
        for (k, t) in &before.tensors {
            if let (Values::F32(a), Values::F32(b)) = (&t.values, &after.tensors[k].values) {
                delta.extend(a.iter().zip(b).map(|(x, y)| x - y));
            }
        }
        delta
    }

    #[test]
    fn collective_all_reduce_over_two_and_three_cpu_replicas_equals_one() {
        let one = gradient(1);
        assert!(one.iter().any(|v| *v != 0.0));
        for replicas in [2, 3] {
            let many = gradient(replicas);
            let num: f64 = one.iter().zip(&many).map(|(a, b)| f64::from(a - b).powi(2)).sum();
            let den: f64 = one.iter().map(|a| f64::from(*a).powi(2)).sum();
            let rel = (num / den).sqrt();
            assert!(rel < 1e-5, "{replicas} replicas: summed gradient differs from one replica's by {rel:e}");
        }
    }
}
