//! `vismae finetune seg`: Swin-UNet fine-tuning (SPEC §3, §6.3, §7) from pre-trained MAE weights
//! (by name and shape, as VIS-MAE loads them) or from scratch. Dice + CE loss (paper 0.4 / 0.6),
//! the reference's augmentation, the run's preprocessing (per-image min-max of stored values by
//! default, after augmentation), and the shared epoch loop. Validation scores every validation
//! case as `predict` + `evaluate seg` score it: predicted at the network's side, brought back to
//! the case's own size, Dice per case (a volume is one case) and class, NaN classes left out.

use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use vismae_data::labelled::{LabelledSet, Sample};
use vismae_data::prep::{Planes, planes, seg_slices};
use vismae_data::raster::Raster;
use vismae_metrics::SegAccumulator;
use vismae_model::weights::{StateDict, mirror_encoder_into_decoder};
use vismae_model::{SwinUnet, VariantExt};
use vismae_run::schema::finite;
use vismae_run::{FinetuneConfig, ModelCard, ModelKind, Origin, Preprocess, RunDir, SegSettings, SegSummary};

use super::{FinetuneTask, LoopSettings, LrGroups, Validation, apply_init, check_sizes, train};
use crate::augment;
use crate::error::{Result, TrainError};
use crate::infer::{argmax_labels, labels_to_size, seg_probabilities};
use crate::losses::{one_hot, seg_loss};

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

/// One 2-D training example: the input planes at the network's side and the mask resized to it
/// (nearest neighbour, as the reference's `TF.resize(mask, NEAREST)`).
struct Example {
    planes: Planes,
    mask: Vec<u8>,
}

/// One validation slice: the input planes, and the mask at the slice's own size.
struct ValSlice {
    planes: Planes,
    mask: Vec<u8>,
    width: usize,
    height: usize,
}

fn prepare(samples: &[&Sample], spec: &Preprocess, s: &SegSettings, bound: usize) -> Result<Vec<Vec<ValSlice>>> {
    let mut cases = Vec::with_capacity(samples.len());
    for sample in samples {
        let mut slices = Vec::new();
        for sl in seg_slices(sample, spec, s.plane)? {
            if let Some(&bad) = sl.mask.iter().find(|&&m| m as usize >= bound) {
                return Err(TrainError::invalid(format!(
                    "case {}: mask holds class {bad}, the set names {bound} classes",
                    sample.id
                )));
            }
            let p = planes(spec, &sl.files).map_err(|e| TrainError::invalid(format!("case {}: {e}", sample.id)))?;
            slices.push(ValSlice { planes: p, mask: sl.mask, width: sl.width, height: sl.height });
        }
        cases.push(slices);
    }
    Ok(cases)
}

fn to_examples(cases: Vec<Vec<ValSlice>>, n: usize) -> Vec<Example> {
    cases
        .into_iter()
        .flatten()
        .map(|v| {
            let mask = Raster::new(v.width, v.height, 1, v.mask.iter().map(|&m| f32::from(m)).collect());
            let mask = mask.resize_nearest(n, n).data.iter().map(|&m| m as u8).collect();
            Example { planes: v.planes, mask }
        })
        .collect()
}

/// Foreground mean Dice of `model` on the validation cases: each case scored whole (its slices'
/// predictions at their own size), per class, NaN classes left out, as `evaluate seg` scores it.
fn validate_cases<B: burn::tensor::backend::Backend>(
    model: &SwinUnet<B>,
    spec: &Preprocess,
    cases: &[Vec<ValSlice>],
    batch: usize,
    classes: usize,
    device: &B::Device,
) -> f64 {
    let mut acc = SegAccumulator::default();
    let n = spec.size;
    let px = n * n;
    // slices of all cases, in order, predicted in chunks of `batch`
    let flat: Vec<(usize, &ValSlice)> =
        cases.iter().enumerate().flat_map(|(c, s)| s.iter().map(move |v| (c, v))).collect();
    let mut pred: Vec<Vec<u8>> = cases.iter().map(|_| Vec::new()).collect();
    let mut truth: Vec<Vec<u8>> = cases.iter().map(|_| Vec::new()).collect();
    for chunk in flat.chunks(batch.max(1)) {
        let inputs: Vec<&Planes> = chunk.iter().map(|(_, v)| &v.planes).collect();
        let probs = seg_probabilities(model, spec, &inputs, device);
        for (i, (case, v)) in chunk.iter().enumerate() {
            let labels = argmax_labels(&probs[i * classes * px..(i + 1) * classes * px], classes, px);
            pred[*case].extend(labels_to_size(labels, n, v.width, v.height));
            truth[*case].extend_from_slice(&v.mask);
        }
    }
    for (p, t) in pred.iter().zip(&truth) {
        acc.update(p, t, classes);
    }
    acc.foreground_dice()
}

struct SegTask<'a> {
    train: Vec<Example>,
    val: Vec<Vec<ValSlice>>,
    spec: &'a Preprocess,
    s: &'a SegSettings,
    classes: usize,
}

impl<B: AutodiffBackend> FinetuneTask<B> for SegTask<'_> {
    type Model = SwinUnet<B>;

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn loss(&self, model: &SwinUnet<B>, batch: &[usize], rng: &mut ChaCha8Rng, device: &B::Device) -> Tensor<B, 1> {
        let n = self.spec.size;
        let planes = self.train.first().map_or(1, |e| e.planes.planes);
        let (mut imgs, mut masks) =
            (Vec::with_capacity(batch.len() * planes * n * n), Vec::with_capacity(batch.len() * n * n));
        for &i in batch {
            let e = &self.train[i];
            let (img, mask) = augment::segmentation_planes(&e.planes.data, &e.mask, n, self.s.augment, rng);
            imgs.extend(img);
            masks.extend(mask);
        }
        let x = crate::input::batch::<B>(self.spec, &imgs, batch.len(), planes, device);
        let target = one_hot::<B>(&masks, batch.len(), self.classes, n, n, device);
        seg_loss(model.forward(x), target, self.s.dice_weight, self.s.ce_weight)
    }

    fn validate(&self, model: &SwinUnet<B::InnerBackend>, device: &B::Device) -> Validation {
        let dice =
            validate_cases::<B::InnerBackend>(model, self.spec, &self.val, self.s.batch_size, self.classes, device);
        let mut fields = serde_json::Map::new();
        fields.insert("val_dice".into(), if dice.is_finite() { json!(dice) } else { json!(null) });
        Validation {
            score: if dice.is_finite() { dice } else { f64::NEG_INFINITY },
            fields,
            brief: format!("val Dice {dice:.4}"),
        }
    }
}

/// The card of a fine-tuned network's weights.
pub(crate) fn card(cfg: &FinetuneConfig, kind: ModelKind, classes: Vec<String>) -> ModelCard {
    ModelCard {
        vismae: vismae_run::VISMAE_VERSION.into(),
        kind,
        variant: Some(cfg.variant()),
        name: cfg.init_name.clone(),
        preprocess: cfg.preprocess.clone(),
        origin: Origin::Finetuned {
            task: cfg.task,
            from: cfg.init_name.clone(),
            encoder_preprocess: cfg.encoder_preprocess.clone(),
        },
        classes,
        layer_norm_eps: None,
        finetune_norm: None,
        metrics: Default::default(),
    }
}

/// Fine-tunes a Swin-UNet as `cfg` says on the cases of `set`, from `init` MAE weights or from
/// scratch, writing metrics, checkpoints, best and final weights and `summary.json` into `run`;
/// with `resume`, continues from the run's latest checkpoint.
pub fn run<B: AutodiffBackend>(
    cfg: &FinetuneConfig,
    set: &LabelledSet,
    init: Option<&StateDict>,
    run: &RunDir,
    resume: bool,
    quiet: bool,
    device: &B::Device,
) -> Result<SegOutcome> {
    let started = Instant::now();
    let s = cfg.seg().ok_or_else(|| TrainError::invalid("not a segmentation run"))?;
    let spec = &cfg.preprocess;
    // layouts that name their classes (nnU-Net, datalists) bound the labels; CSV masks define them
    let bound = if set.classes.is_empty() { 256 } else { set.classes.len() };
    let train_cases = prepare(&set.pick(&cfg.train_cases), spec, s, bound)?;
    let val = prepare(&set.pick(&cfg.val_cases), spec, s, bound)?;
    let seen =
        train_cases.iter().chain(&val).flatten().flat_map(|v| v.mask.iter().copied()).max().unwrap_or(0) as usize + 1;
    let classes = set.classes.len().max(seen).max(2);
    let train_ex = to_examples(train_cases, spec.size);
    let val_images = val.iter().map(Vec::len).sum();
    check_sizes(train_ex.len(), val_images)?;
    let variant = s.variant;
    let mut net = variant.unet(spec.in_chans, classes);
    net.swin.layer_norm_eps = cfg.layer_norm_eps;
    let mut model: SwinUnet<B> = crate::seeds::locked(|| {
        B::seed(device, s.seed);
        net.init(device)
    });
    let mut transferred = 0;
    if let Some(sd) = init {
        let sd = mirror_encoder_into_decoder(sd, variant.seg_depths().len(), s.decoder_init);
        let drop = [
            ("head.", "a classifier's head; the Swin-UNet's is new"),
            ("norm.", "the encoder's final norm; the Swin-UNet has none"),
            ("projection.", "SimCLR's projection head"),
        ];
        (model, transferred) = apply_init(model, &sd, spec.in_chans, &drop, run)?;
    }
    let images = (train_ex.len(), val_images);
    let names =
        if set.classes.len() == classes { set.classes.clone() } else { (0..classes).map(|c| c.to_string()).collect() };
    let card = card(cfg, ModelKind::Unet, names);
    let task = SegTask { train: train_ex, val, spec, s, classes };
    let ls = LoopSettings {
        epochs: s.epochs,
        warmup_epochs: cfg.warmup_epochs,
        batch_size: s.batch_size,
        lr: (s.lr, s.min_lr),
        betas: s.betas,
        weight_decay: s.weight_decay,
        seed: s.seed,
        checkpoint_every: s.checkpoint_every,
        keep_checkpoints: s.keep_checkpoints,
        keep: s.keep,
        groups: LrGroups {
            encoder_lr_scale: s.encoder_lr_scale,
            layer_decay: s.layer_decay,
            freeze_encoder: s.freeze_encoder,
        },
        quiet,
        validate_every: s.validate_every,
    };
    let done = train::<B, _>(&task, model, &ls, run, resume, &card, device)?;
    let out = SegOutcome {
        best: (done.best.0, done.best.1),
        images,
        transferred,
        classes,
        seconds: started.elapsed().as_secs_f64(),
        resumed_from: done.resumed_from,
    };
    let summary = SegSummary {
        best_val_dice: finite(out.best.0),
        best_epoch: out.best.1,
        train_images: out.images.0,
        val_images: out.images.1,
        classes,
        tensors_transferred: out.transferred,
        seconds: out.seconds,
    };
    run.write_json("summary.json", &summary)?;
    Ok(out)
}
