//! `vismae finetune seg`: Swin-UNet fine-tuning (SPEC §3, §6.3, §7) from pre-trained MAE weights
//! (by name and shape, as VIS-MAE loads them) or from scratch. Dice + CE loss (paper 0.4 / 0.6),
//! per-image min-max input, rot90 + flip augmentation, AdamW with warm-up + cosine per iteration,
//! foreground Dice on the validation cases every epoch, best weights kept.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vismae_data::labelled::{LabelledSet, Sample, seg_pairs};
use vismae_data::volume::Plane;
use vismae_metrics::SegAccumulator;
use vismae_model::weights::{
    DecoderInit, LoadOptions, StateDict, Visit, apply_state_dict, export_state_dict, mirror_encoder_into_decoder,
    safetensors_io,
};
use vismae_model::{SwinUnet, Variant};

use crate::losses::{one_hot, seg_loss};
use crate::run_dir::RunDir;
use crate::schedule::WarmupCosine;

/// Settings of a segmentation fine-tuning run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegSettings {
    /// Model size.
    pub variant: String,
    /// Network input side (a multiple of 4; the paper's recipe uses 320).
    pub size: usize,
    /// Input channels (3 replicates grey, the official layout).
    pub in_chans: usize,
    /// Epochs (paper: 150).
    pub epochs: usize,
    /// Warm-up epochs (paper: 40).
    pub warmup_epochs: f64,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (official code: 1e-3).
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// AdamW betas.
    pub betas: (f64, f64),
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Weight of the Dice loss (paper 0.4; the official code 0.6).
    pub dice_weight: f64,
    /// Weight of the cross-entropy (paper 0.6; the official code 0.4).
    pub ce_weight: f64,
    /// rot90 + flip augmentation.
    pub augment: bool,
    /// Slicing plane of volumes.
    pub plane: Plane,
    /// Seed.
    pub seed: u64,
    /// How the decoder starts from MAE weights: `mae` (its decoder by name, as VIS-MAE does),
    /// `mirrored` (encoder stages copied into the mirrored decoder stages, as Swin-MAE and
    /// Swin-Unet do) or `scratch` (decoder left at initialisation).
    pub decoder_init: String,
}

impl Default for SegSettings {
    fn default() -> Self {
        Self {
            variant: "vis-mae".into(),
            size: 224,
            in_chans: 3,
            epochs: 150,
            warmup_epochs: 40.0,
            batch_size: 8,
            lr: 1e-3,
            min_lr: 0.0,
            betas: (0.9, 0.95),
            weight_decay: 0.05,
            dice_weight: 0.4,
            ce_weight: 0.6,
            augment: true,
            plane: Plane::Axial,
            seed: 0,
            decoder_init: "mae".into(),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct SegOutcome {
    /// Best validation foreground Dice and its epoch (1-based).
    pub best: (f64, usize),
    /// Training images (2-D slices) and validation images.
    pub images: (usize, usize),
    /// Tensors applied from the initial weights.
    pub transferred: usize,
    /// Classes, background included.
    pub classes: usize,
    /// Seconds spent.
    pub seconds: f64,
}

/// Loads pre-trained weights into a fine-tuning model by name and shape and writes the key-by-key
/// report to `RUN/transfer_report.txt`; returns the model and the number of tensors applied.
pub(crate) fn apply_init<B: burn::tensor::backend::Backend, M: Visit<B>>(
    model: M,
    sd: &StateDict,
    run: &RunDir,
) -> Result<(M, usize), String> {
    let (model, report) = apply_state_dict(model, sd, LoadOptions::default()).map_err(|e| e.to_string())?;
    run.write_atomic("transfer_report.txt", report.to_string().as_bytes()).map_err(|e| e.to_string())?;
    Ok((model, report.applied.len()))
}

/// One prepared 2-D example: `size * size` image values in [0, 1] and class indices.
struct Example {
    image: Vec<f32>,
    mask: Vec<u8>,
}

fn prepare(samples: &[&Sample], s: &SegSettings, classes: usize) -> Result<Vec<Example>, String> {
    let mut out = Vec::new();
    for sample in samples {
        for pair in seg_pairs(sample, s.plane).map_err(|e| e.to_string())? {
            let r = pair.resized(s.size);
            let img = r.image.to_grey();
            let (lo, hi) = img.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            // the reference's per-image min-max: (x - min + 1e-6) / (max - min + 1e-6)
            let image = img.data.iter().map(|&v| (v - lo + 1e-6) / (hi - lo + 1e-6)).collect();
            let mask: Vec<u8> = r.mask.data.iter().map(|&v| v as u8).collect();
            if let Some(&bad) = mask.iter().find(|&&m| m as usize >= classes) {
                return Err(format!("case {}: mask holds class {bad}, the set names {classes} classes", sample.id));
            }
            out.push(Example { image, mask });
        }
    }
    Ok(out)
}

/// rot90 by `k` then an optional horizontal flip, applied alike to image and mask (`n x n`).
fn augment<T: Copy>(v: &[T], n: usize, k: usize, flip: bool) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for y in 0..n {
        for x in 0..n {
            let x = if flip { n - 1 - x } else { x };
            let (sy, sx) = match k % 4 {
                0 => (y, x),
                1 => (x, n - 1 - y),
                2 => (n - 1 - y, n - 1 - x),
                _ => (n - 1 - x, y),
            };
            out.push(v[sy * n + sx]);
        }
    }
    out
}

fn batch_input<B: burn::tensor::backend::Backend>(
    images: Vec<f32>,
    b: usize,
    s: &SegSettings,
    device: &B::Device,
) -> Tensor<B, 4> {
    let x = Tensor::<B, 4>::from_data(TensorData::new(images, [b, 1, s.size, s.size]), device);
    if s.in_chans == 3 { x.repeat_dim(1, 3) } else { x }
}

/// Foreground mean Dice of `model` on `examples` (per image, NaN classes left out).
fn validate<B: burn::tensor::backend::Backend>(
    model: &SwinUnet<B>,
    examples: &[Example],
    s: &SegSettings,
    classes: usize,
    device: &B::Device,
) -> f64 {
    let mut acc = SegAccumulator::default();
    for chunk in examples.chunks(s.batch_size.max(1)) {
        let x = batch_input::<B>(chunk.iter().flat_map(|e| e.image.iter().copied()).collect(), chunk.len(), s, device);
        let pred: Vec<i64> = model.forward(x).argmax(1).into_data().convert::<i64>().to_vec().unwrap_or_default();
        let px = s.size * s.size;
        for (i, e) in chunk.iter().enumerate() {
            let p: Vec<u8> = pred[i * px..(i + 1) * px].iter().map(|&v| v as u8).collect();
            acc.update(&p, &e.mask, classes);
        }
    }
    acc.foreground_dice()
}

/// Fine-tunes a Swin-UNet on `train` and validates on `val` (cases of `set`), from `init` MAE
/// weights or from scratch, writing metrics, best and final weights into `run`.
pub fn run<B: AutodiffBackend>(
    set: &LabelledSet,
    train: &[&Sample],
    val: &[&Sample],
    init: Option<&StateDict>,
    s: &SegSettings,
    run: &RunDir,
    device: &B::Device,
) -> Result<SegOutcome, String> {
    let started = Instant::now();
    if !set.segmentation {
        return Err("the labelled set holds class labels, not masks: use `finetune cls`".into());
    }
    if !s.size.is_multiple_of(4) || s.size < 32 {
        return Err(format!("size {} must be a multiple of 4 and at least 32", s.size));
    }
    // layouts that name their classes (nnU-Net, datalists) bound the labels; CSV masks define them
    let bound = if set.classes.is_empty() { 256 } else { set.classes.len() };
    let train_ex = prepare(train, s, bound)?;
    let val_ex = prepare(val, s, bound)?;
    let seen = train_ex.iter().chain(&val_ex).flat_map(|e| e.mask.iter().copied()).max().unwrap_or(0) as usize + 1;
    let classes = set.classes.len().max(seen).max(2);
    if train_ex.is_empty() || val_ex.is_empty() {
        return Err(format!(
            "{} training and {} validation images: both must be non-empty",
            train_ex.len(),
            val_ex.len()
        ));
    }
    B::seed(device, s.seed);
    let variant = Variant::from_name(&s.variant).ok_or_else(|| format!("unknown variant {:?}", s.variant))?;
    let mut model: SwinUnet<B> = variant.unet(s.in_chans, classes).init(device);
    let mut transferred = 0;
    if let Some(sd) = init {
        let how = match s.decoder_init.as_str() {
            "mae" => DecoderInit::MaeDecoder,
            "mirrored" => DecoderInit::MirroredEncoder,
            "scratch" => DecoderInit::Scratch,
            other => return Err(format!("decoder_init {other:?}: use mae, mirrored or scratch")),
        };
        let sd = mirror_encoder_into_decoder(sd, variant.seg_depths().len(), how);
        (model, transferred) = apply_init(model, &sd, run)?;
    }
    let mut optim = AdamWConfig::new()
        .with_beta_1(s.betas.0 as f32)
        .with_beta_2(s.betas.1 as f32)
        .with_epsilon(1e-8)
        .with_weight_decay(s.weight_decay as f32)
        .init::<B, SwinUnet<B>>();
    let per_epoch = train_ex.len().div_ceil(s.batch_size.max(1));
    let sched = WarmupCosine { lr: s.lr, min_lr: s.min_lr, warmup: s.warmup_epochs, total: s.epochs as f64 };
    let pb = ProgressBar::new(s.epochs as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} epochs {msg} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix("finetune");
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut best = (f64::NEG_INFINITY, 0usize);
    let n = s.size;
    for epoch in 0..s.epochs {
        let mut order: Vec<usize> = (0..train_ex.len()).collect();
        order.shuffle(&mut rng);
        let mut losses = Vec::new();
        for (it, chunk) in order.chunks(s.batch_size.max(1)).enumerate() {
            let (mut imgs, mut masks) = (Vec::new(), Vec::new());
            for &i in chunk {
                let (k, flip) = if s.augment && rng.random::<bool>() {
                    (rng.random_range(0..4usize), rng.random::<bool>())
                } else {
                    (0, false)
                };
                imgs.extend(augment(&train_ex[i].image, n, k, flip));
                masks.extend(augment(&train_ex[i].mask, n, k, flip));
            }
            let b = chunk.len();
            let x = batch_input::<B>(imgs, b, s, device);
            let target = one_hot::<B>(&masks, b, classes, n, n, device);
            let loss = seg_loss(model.forward(x), target, s.dice_weight, s.ce_weight);
            let value = crate::losses::scalar(loss.clone());
            if !value.is_finite() {
                return Err(format!(
                    "the loss became {value} at epoch {} step {it}; stopped (best weights so far are kept)",
                    epoch + 1
                ));
            }
            losses.push(value);
            let lr = sched.at(epoch as f64 + it as f64 / per_epoch as f64);
            let grads = GradientsParams::from_grads::<B, _>(loss.backward(), &model);
            model = optim.step(lr, model, grads);
        }
        let dice = validate::<B::InnerBackend>(&model.valid(), &val_ex, s, classes, device);
        let train_loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        run.append_json(
            "metrics.jsonl",
            &json!({"epoch": epoch + 1, "loss": train_loss, "val_dice": dice, "lr": sched.at(epoch as f64 + 1.0)}),
        )
        .map_err(|e| e.to_string())?;
        if dice > best.0 || best.1 == 0 {
            best = (dice, epoch + 1);
            let (m, sd) = export_state_dict::<B, _>(model);
            model = m;
            safetensors_io::write(&sd, &run.join("best.safetensors")).map_err(|e| e.to_string())?;
        }
        pb.set_message(format!("loss {train_loss:.4}, val Dice {dice:.4} (best {:.4} @ {})", best.0, best.1));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let (_, sd) = export_state_dict::<B, _>(model);
    safetensors_io::write(&sd, &run.join("final.safetensors")).map_err(|e| e.to_string())?;
    let out = SegOutcome {
        best,
        images: (train_ex.len(), val_ex.len()),
        transferred,
        classes,
        seconds: started.elapsed().as_secs_f64(),
    };
    run.write_atomic(
        "summary.json",
        serde_json::to_string_pretty(&json!({
            "best_val_dice": out.best.0, "best_epoch": out.best.1, "train_images": out.images.0, "val_images": out.images.1,
            "tensors_transferred": out.transferred, "seconds": out.seconds,
        }))
        .unwrap_or_default()
        .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augment_rotates_and_flips_consistently() {
        let v: Vec<u8> = (0..9).collect(); // 3x3: 0 1 2 / 3 4 5 / 6 7 8
        assert_eq!(augment(&v, 3, 0, false), v);
        assert_eq!(augment(&v, 3, 0, true), vec![2, 1, 0, 5, 4, 3, 8, 7, 6]);
        // four quarter turns are the identity
        let mut r = v.clone();
        for _ in 0..4 {
            r = augment(&r, 3, 1, false);
        }
        assert_eq!(r, v);
        assert_ne!(augment(&v, 3, 1, false), v);
    }
}
