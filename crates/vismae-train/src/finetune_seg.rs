//! `vismae finetune seg`: Swin-UNet fine-tuning (SPEC §3, §6.3, §7) from pre-trained MAE weights
//! (by name and shape, as VIS-MAE loads them) or from scratch. Dice + CE loss (paper 0.4 / 0.6),
//! the reference's augmentation, per-image min-max input after it, and the shared epoch loop
//! (warm-up + cosine, validation Dice every epoch, best weights, checkpoints, resume).

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vismae_data::labelled::{LabelledSet, Sample, seg_pairs};
use vismae_data::volume::Plane;
use vismae_metrics::SegAccumulator;
use vismae_model::weights::{DecoderInit, StateDict, mirror_encoder_into_decoder};
use vismae_model::{SwinUnet, Variant};

use crate::augment::{self, Augment};
use crate::finetune::{LoopSettings, Task, Validation, apply_init, check_sizes, train};
use crate::losses::{one_hot, seg_loss};
use crate::parallel::forward_split;
use crate::run_dir::RunDir;

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
    /// Augmentation: `reference` (the official pipeline), `flip` (rot90 + flip) or `none`.
    pub augment: Augment,
    /// Slicing plane of volumes.
    pub plane: Plane,
    /// Seed.
    pub seed: u64,
    /// How the decoder starts from MAE weights: `mae` (its decoder by name, as VIS-MAE does),
    /// `mirrored` (encoder stages copied into the mirrored decoder stages, as Swin-MAE and
    /// Swin-Unet do) or `scratch` (decoder left at initialisation).
    pub decoder_init: String,
    /// Write a checkpoint every this many epochs.
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
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
            augment: Augment::Reference,
            plane: Plane::Axial,
            seed: 0,
            decoder_init: "mae".into(),
            checkpoint_every: 1,
            keep_checkpoints: 2,
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
    /// Epoch the run resumed after, if it did.
    pub resumed_from: Option<usize>,
}

/// One prepared 2-D example: `size * size` grey values (before min-max) and class indices.
struct Example {
    image: Vec<f32>,
    mask: Vec<u8>,
}

fn prepare(samples: &[&Sample], s: &SegSettings, classes: usize) -> Result<Vec<Example>, String> {
    let mut out = Vec::new();
    for sample in samples {
        for pair in seg_pairs(sample, s.plane).map_err(|e| e.to_string())? {
            let r = pair.resized(s.size);
            let image = r.image.to_grey().data;
            let mask: Vec<u8> = r.mask.data.iter().map(|&v| v as u8).collect();
            if let Some(&bad) = mask.iter().find(|&&m| m as usize >= classes) {
                return Err(format!("case {}: mask holds class {bad}, the set names {classes} classes", sample.id));
            }
            out.push(Example { image, mask });
        }
    }
    Ok(out)
}

/// The reference's per-image min-max, `(x - min + 1e-6) / (max - min + 1e-6)`, after augmentation.
fn min_max(v: &mut [f32]) {
    let (lo, hi) = v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    v.iter_mut().for_each(|x| *x = (*x - lo + 1e-6) / (hi - lo + 1e-6));
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
        let mut images = Vec::with_capacity(chunk.len() * s.size * s.size);
        for e in chunk {
            let mut v = e.image.clone();
            min_max(&mut v);
            images.extend(v);
        }
        let x = batch_input::<B>(images, chunk.len(), s, device);
        let pred: Vec<i64> =
            forward_split(x, |x| model.forward(x)).argmax(1).into_data().convert::<i64>().to_vec().unwrap_or_default();
        let px = s.size * s.size;
        for (i, e) in chunk.iter().enumerate() {
            let p: Vec<u8> = pred[i * px..(i + 1) * px].iter().map(|&v| v as u8).collect();
            acc.update(&p, &e.mask, classes);
        }
    }
    acc.foreground_dice()
}

struct SegTask<'a> {
    train: Vec<Example>,
    val: Vec<Example>,
    s: &'a SegSettings,
    classes: usize,
}

impl<B: AutodiffBackend> Task<B> for SegTask<'_> {
    type Model = SwinUnet<B>;

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn loss(&self, model: &SwinUnet<B>, batch: &[usize], rng: &mut ChaCha8Rng, device: &B::Device) -> Tensor<B, 1> {
        let n = self.s.size;
        let (mut imgs, mut masks) = (Vec::with_capacity(batch.len() * n * n), Vec::with_capacity(batch.len() * n * n));
        for &i in batch {
            let e = &self.train[i];
            let (mut img, mask) = augment::segmentation(&e.image, &e.mask, n, self.s.augment, rng);
            min_max(&mut img);
            imgs.extend(img);
            masks.extend(mask);
        }
        let x = batch_input::<B>(imgs, batch.len(), self.s, device);
        let target = one_hot::<B>(&masks, batch.len(), self.classes, n, n, device);
        seg_loss(model.forward(x), target, self.s.dice_weight, self.s.ce_weight)
    }

    fn validate(&self, model: &SwinUnet<B::InnerBackend>, device: &B::Device) -> Validation {
        let dice = validate::<B::InnerBackend>(model, &self.val, self.s, self.classes, device);
        let mut fields = serde_json::Map::new();
        fields.insert("val_dice".into(), if dice.is_finite() { json!(dice) } else { json!(null) });
        Validation {
            score: if dice.is_finite() { dice } else { f64::NEG_INFINITY },
            fields,
            brief: format!("val Dice {dice:.4}"),
        }
    }
}

/// Fine-tunes a Swin-UNet on `train` and validates on `val` (cases of `set`), from `init` MAE
/// weights or from scratch, writing metrics, checkpoints, best and final weights into `run`;
/// with `resume`, continues from the run's latest checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn run<B: AutodiffBackend>(
    set: &LabelledSet,
    train_cases: &[&Sample],
    val_cases: &[&Sample],
    init: Option<&StateDict>,
    s: &SegSettings,
    run: &RunDir,
    resume: bool,
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
    let train_ex = prepare(train_cases, s, bound)?;
    let val_ex = prepare(val_cases, s, bound)?;
    let seen = train_ex.iter().chain(&val_ex).flat_map(|e| e.mask.iter().copied()).max().unwrap_or(0) as usize + 1;
    let classes = set.classes.len().max(seen).max(2);
    check_sizes(train_ex.len(), val_ex.len())?;
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
    let images = (train_ex.len(), val_ex.len());
    let task = SegTask { train: train_ex, val: val_ex, s, classes };
    let ls = LoopSettings {
        epochs: s.epochs,
        warmup_epochs: s.warmup_epochs,
        batch_size: s.batch_size,
        lr: (s.lr, s.min_lr),
        betas: s.betas,
        weight_decay: s.weight_decay,
        seed: s.seed,
        checkpoint_every: s.checkpoint_every,
        keep_checkpoints: s.keep_checkpoints,
    };
    let done = train::<B, _>(&task, model, &ls, run, resume, device)?;
    let out = SegOutcome {
        best: (done.best.0, done.best.1),
        images,
        transferred,
        classes,
        seconds: started.elapsed().as_secs_f64(),
        resumed_from: done.resumed_from,
    };
    let summary = json!({
        "best_val_dice": out.best.0, "best_epoch": out.best.1, "train_images": out.images.0, "val_images": out.images.1,
        "classes": classes, "tensors_transferred": out.transferred, "seconds": out.seconds,
    });
    run.write_json("summary.json", &summary).map_err(|e| e.to_string())?;
    Ok(out)
}
