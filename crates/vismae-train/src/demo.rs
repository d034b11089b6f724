//! `vismae demo`: the method end to end on generated phantoms, on the CPU in a few minutes.
//! Pre-trains a window-masked MAE on unlabelled images, writes its weights in the official
//! layout, transfers them into a Swin-UNet (reporting every key), fine-tunes it and the same
//! network from scratch on a few labelled images, and compares Dice on held-out images.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use vismae_metrics::SegAccumulator;
use vismae_model::weights::{LoadOptions, apply_state_dict, export_state_dict, safetensors_io};
use vismae_model::{SwinUnet, Variant};

use crate::losses::{one_hot, seg_loss};
use crate::phantom::{PHANTOM_CLASSES, Phantom, phantom};
use crate::run_dir::RunDir;
use crate::schedule::WarmupCosine;

/// Settings of the demo.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Model size.
    pub variant: Variant,
    /// Image side in pixels (a multiple of 16).
    pub size: usize,
    /// Pre-training steps.
    pub pretrain_steps: usize,
    /// Fine-tuning steps per initialisation.
    pub finetune_steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Unlabelled images generated for pre-training.
    pub pretrain_images: usize,
    /// Labelled training images.
    pub train_images: usize,
    /// Held-out labelled images.
    pub test_images: usize,
    /// Seed of data, masks and initialisation.
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            variant: Variant::Tiny,
            size: 64,
            pretrain_steps: 300,
            finetune_steps: 150,
            batch: 8,
            pretrain_images: 512,
            train_images: 8,
            test_images: 32,
            seed: 0,
        }
    }
}

/// Outcome of one fine-tuning.
#[derive(Clone, Debug)]
pub struct FinetuneResult {
    /// `vis-mae` (from the pre-trained MAE) or `scratch`.
    pub init: String,
    /// Mean foreground Dice on the held-out images.
    pub dice: f64,
    /// Dice per foreground class.
    pub class_dice: Vec<f64>,
    /// Last training loss.
    pub final_loss: f64,
}

/// What the demo measured.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// MAE loss over the first and last 10 steps.
    pub pretrain_loss: (f64, f64),
    /// Tensors the transfer applied.
    pub transferred: usize,
    /// One result per initialisation.
    pub results: Vec<FinetuneResult>,
    /// Wall time in seconds.
    pub seconds: f64,
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

fn batch_tensor<B: AutodiffBackend>(items: &[&Phantom], side: usize, device: &B::Device) -> Tensor<B, 4> {
    let data: Vec<f32> = items.iter().flat_map(|p| p.image.iter().copied()).collect();
    Tensor::from_data(TensorData::new(data, [items.len(), 1, side, side]), device)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Runs the demo into a fresh folder `run`.
pub fn run<B: AutodiffBackend>(cfg: &DemoConfig, run: &RunDir, device: &B::Device) -> Result<DemoReport, String> {
    let start = Instant::now();
    B::seed(device, cfg.seed);
    let side = cfg.size;
    let config_json = json!({
        "variant": cfg.variant.name(), "size": side, "pretrain_steps": cfg.pretrain_steps,
        "finetune_steps": cfg.finetune_steps, "batch": cfg.batch, "seed": cfg.seed,
        "pretrain_images": cfg.pretrain_images, "train_images": cfg.train_images, "test_images": cfg.test_images,
        "data": "generated phantoms (vismae_train::phantom)", "input": "per-image [0,1], 1 channel",
        "optimizer": {"name": "AdamW", "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.05},
        "seg_loss": {"dice": 0.4, "ce": 0.6},
    });
    run.write_atomic("config.json", serde_json::to_string_pretty(&config_json).unwrap_or_default().as_bytes())
        .map_err(|e| e.to_string())?;

    // 1. pre-training
    let unlabelled: Vec<Phantom> = (0..cfg.pretrain_images as u64).map(|i| phantom(cfg.seed, i, side)).collect();
    let mae_cfg = cfg.variant.mae(1);
    let mut mae = mae_cfg.init::<B>(device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_weight_decay(0.05)
        .with_epsilon(1e-8)
        .init::<B, vismae_model::SwinMae<B>>();
    let sched = WarmupCosine {
        lr: 1e-3,
        min_lr: 1e-5,
        warmup: (cfg.pretrain_steps / 10) as f64,
        total: cfg.pretrain_steps as f64,
    };
    let pb = bar(cfg.pretrain_steps, "pre-train");
    let mut losses = Vec::with_capacity(cfg.pretrain_steps);
    for step in 0..cfg.pretrain_steps {
        let items: Vec<&Phantom> =
            (0..cfg.batch).map(|i| &unlabelled[(step * cfg.batch + i) % unlabelled.len()]).collect();
        let x = batch_tensor::<B>(&items, side, device);
        let out = mae.forward_seeded(x, cfg.seed.wrapping_add(step as u64))?;
        let loss = crate::losses::scalar(out.loss.clone());
        if !loss.is_finite() {
            return Err(format!("pre-training loss became {loss} at step {step}"));
        }
        losses.push(loss);
        let lr = sched.at(step as f64 + 1.0);
        let grads = GradientsParams::from_grads::<B, _>(out.loss.backward(), &mae);
        mae = optim.step(lr, mae, grads);
        run.append_json("pretrain_metrics.jsonl", &json!({"step": step, "loss": loss, "lr": lr}))
            .map_err(|e| e.to_string())?;
        pb.set_message(format!("loss {loss:.4}"));
        pb.inc(1);
    }
    pb.finish();
    let k = 10.min(losses.len());
    let pretrain_loss = (mean(&losses[..k]), mean(&losses[losses.len() - k..]));
    let (mae, sd) = export_state_dict::<B, _>(mae);
    drop(mae);
    let weights = run.join("mae.safetensors");
    safetensors_io::write(&sd, &weights).map_err(|e| e.to_string())?;

    // 2. fine-tuning from the MAE and from scratch
    let train: Vec<Phantom> = (0..cfg.train_images as u64).map(|i| phantom(cfg.seed + 1, i, side)).collect();
    let test: Vec<Phantom> = (0..cfg.test_images as u64).map(|i| phantom(cfg.seed + 2, i, side)).collect();
    let unet_cfg = cfg.variant.unet(1, PHANTOM_CLASSES);
    let mut results = Vec::new();
    let mut transferred = 0;
    for init in ["vis-mae", "scratch"] {
        B::seed(device, cfg.seed + 7);
        let mut unet: SwinUnet<B> = unet_cfg.init(device);
        if init == "vis-mae" {
            let (m, report) = apply_state_dict(unet, &sd, LoadOptions::default()).map_err(|e| e.to_string())?;
            transferred = report.applied.len();
            run.write_atomic("transfer_report.txt", report.to_string().as_bytes()).map_err(|e| e.to_string())?;
            unet = m;
        }
        let result = finetune::<B>(cfg, init, unet, &train, &test, run, device)?;
        results.push(result);
    }
    let report = DemoReport { pretrain_loss, transferred, results, seconds: start.elapsed().as_secs_f64() };
    let summary = json!({
        "pretrain_loss_first10": report.pretrain_loss.0,
        "pretrain_loss_last10": report.pretrain_loss.1,
        "tensors_transferred": report.transferred,
        "results": report.results.iter().map(|r| json!({
            "init": r.init, "test_dice_foreground": r.dice, "test_dice_per_class": r.class_dice, "final_loss": r.final_loss
        })).collect::<Vec<_>>(),
        "seconds": report.seconds,
    });
    run.write_atomic("summary.json", serde_json::to_string_pretty(&summary).unwrap_or_default().as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(report)
}

fn finetune<B: AutodiffBackend>(
    cfg: &DemoConfig,
    init: &str,
    mut unet: SwinUnet<B>,
    train: &[Phantom],
    test: &[Phantom],
    run: &RunDir,
    device: &B::Device,
) -> Result<FinetuneResult, String> {
    let side = cfg.size;
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_weight_decay(0.05)
        .with_epsilon(1e-8)
        .init::<B, SwinUnet<B>>();
    let sched = WarmupCosine {
        lr: 1e-3,
        min_lr: 1e-5,
        warmup: (cfg.finetune_steps / 10) as f64,
        total: cfg.finetune_steps as f64,
    };
    let pb = bar(cfg.finetune_steps, init);
    let batch = cfg.batch.min(train.len()).max(1);
    let mut last = f64::NAN;
    for step in 0..cfg.finetune_steps {
        let items: Vec<&Phantom> = (0..batch).map(|i| &train[(step * batch + i) % train.len()]).collect();
        let x = batch_tensor::<B>(&items, side, device);
        let labels: Vec<u8> = items.iter().flat_map(|p| p.labels.iter().copied()).collect();
        let target = one_hot::<B>(&labels, batch, PHANTOM_CLASSES, side, side, device);
        let loss = seg_loss(unet.forward(x), target, 0.4, 0.6);
        last = crate::losses::scalar(loss.clone());
        if !last.is_finite() {
            return Err(format!("fine-tuning ({init}) loss became {last} at step {step}"));
        }
        let lr = sched.at(step as f64 + 1.0);
        let grads = GradientsParams::from_grads::<B, _>(loss.backward(), &unet);
        unet = optim.step(lr, unet, grads);
        run.append_json("finetune_metrics.jsonl", &json!({"init": init, "step": step, "loss": last, "lr": lr}))
            .map_err(|e| e.to_string())?;
        pb.set_message(format!("loss {last:.4}"));
        pb.inc(1);
    }
    pb.finish();
    let model = unet.valid();
    let mut acc = SegAccumulator::default();
    for chunk in test.chunks(8) {
        let items: Vec<&Phantom> = chunk.iter().collect();
        let data: Vec<f32> = items.iter().flat_map(|p| p.image.iter().copied()).collect();
        let x = Tensor::from_data(TensorData::new(data, [items.len(), 1, side, side]), device);
        let pred = model.forward(x).argmax(1); // [B, 1, H, W]
        let pred: Vec<i64> = pred.into_data().convert::<i64>().to_vec().unwrap_or_default();
        for (i, p) in items.iter().enumerate() {
            let pm: Vec<u8> = pred[i * side * side..(i + 1) * side * side].iter().map(|&v| v as u8).collect();
            acc.update(&pm, &p.labels, PHANTOM_CLASSES);
        }
    }
    let agg = acc.aggregate();
    Ok(FinetuneResult {
        init: init.to_string(),
        dice: acc.foreground_dice(),
        class_dice: agg.iter().skip(1).map(|s| s.dice).collect(),
        final_loss: last,
    })
}
