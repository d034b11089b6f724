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
use vismae_data::prep::{NativePlanes, Planes, native_planes, planes, seg_slices};
use vismae_data::raster::Raster;
use vismae_metrics::SegAccumulator;
use vismae_model::weights::{StateDict, mirror_encoder_into_decoder};
use vismae_model::{SwinUnet, VariantExt};
use vismae_run::schema::finite;
use vismae_run::{
    FinetuneConfig, ModelCard, ModelKind, Origin, Preprocess, RunDir, SegInput, SegSettings, SegSummary, Tta,
};

use super::{FinetuneTask, LoopSettings, LrGroups, Parallel, Validation, apply_init, check_sizes, train};
use crate::augment;
use crate::error::{Result, TrainError};
use crate::infer::{
    SlidingWindow, argmax_labels, finished_padded, labels_to_size, seg_probabilities, sliding_probabilities,
};
use crate::losses::{one_hot, seg_combine, seg_loss, seg_statistics};

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

/// A slice's input: resized to the network's side, or at its own resolution (patch mode).
enum SliceInput {
    Resized(Planes),
    Native(NativePlanes),
}

/// One validation slice: the input planes, and the mask at the slice's own size.
struct ValSlice {
    input: SliceInput,
    mask: Vec<u8>,
    width: usize,
    height: usize,
}

/// One patch-mode training slice: its finished input (channels and normalisation over the whole
/// slice), padded to at least the network's side with each channel's minimum, its mask (padding
/// 0), and where its foreground is.
struct PatchSource {
    data: Vec<f32>,
    mask: Vec<u8>,
    width: usize,
    height: usize,
    foreground: Vec<u32>,
}

fn to_patch_sources(cases: Vec<Vec<ValSlice>>, spec: &Preprocess) -> Vec<PatchSource> {
    cases
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let SliceInput::Native(p) = v.input else { return None };
            let (w, h) = (p.width, p.height);
            let (data, pw, ph) = finished_padded(spec, p.data, p.planes, w, h);
            let mut mask = vec![0u8; pw * ph];
            for r in 0..h {
                mask[r * pw..r * pw + w].copy_from_slice(&v.mask[r * w..(r + 1) * w]);
            }
            let foreground = (0..mask.len() as u32).filter(|&i| mask[i as usize] > 0).collect();
            Some(PatchSource { data, mask, width: pw, height: ph, foreground })
        })
        .collect()
}

/// A training patch of side `n` from `p`: with probability `fg_share` (and foreground present)
/// centred on a random foreground pixel, otherwise placed uniformly (nnU-Net's oversampling);
/// returns its planes and mask.
fn draw_patch(p: &PatchSource, n: usize, c_in: usize, fg_share: f64, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<u8>) {
    use rand::Rng;
    let (mx, my) = (p.width - n, p.height - n);
    let (x0, y0) = if !p.foreground.is_empty() && rng.random::<f64>() < fg_share {
        let at = p.foreground[rng.random_range(0..p.foreground.len())] as usize;
        let (cx, cy) = (at % p.width, at / p.width);
        (cx.saturating_sub(n / 2).min(mx), cy.saturating_sub(n / 2).min(my))
    } else {
        (rng.random_range(0..=mx), rng.random_range(0..=my))
    };
    let mut img = Vec::with_capacity(c_in * n * n);
    for ch in 0..c_in {
        let plane = &p.data[ch * p.width * p.height..(ch + 1) * p.width * p.height];
        for r in 0..n {
            img.extend_from_slice(&plane[(y0 + r) * p.width + x0..(y0 + r) * p.width + x0 + n]);
        }
    }
    let mut mask = Vec::with_capacity(n * n);
    for r in 0..n {
        mask.extend_from_slice(&p.mask[(y0 + r) * p.width + x0..(y0 + r) * p.width + x0 + n]);
    }
    (img, mask)
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
            let why = |e: String| TrainError::invalid(format!("case {}: {e}", sample.id));
            let input = match s.input {
                SegInput::Resize => SliceInput::Resized(planes(spec, &sl.files).map_err(why)?),
                SegInput::Patch => SliceInput::Native(native_planes(spec, &sl.files).map_err(why)?),
            };
            slices.push(ValSlice { input, mask: sl.mask, width: sl.width, height: sl.height });
        }
        cases.push(slices);
    }
    Ok(cases)
}

fn to_examples(cases: Vec<Vec<ValSlice>>, n: usize) -> Vec<Example> {
    cases
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let SliceInput::Resized(planes) = v.input else { return None };
            let mask = Raster::new(v.width, v.height, 1, v.mask.iter().map(|&m| f32::from(m)).collect());
            let mask = mask.resize_nearest(n, n).data.iter().map(|&m| m as u8).collect();
            Some(Example { planes, mask })
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
    window: Option<SlidingWindow>,
    device: &B::Device,
) -> f64 {
    let mut acc = SegAccumulator::default();
    if let Some(window) = window {
        // patch mode: each slice by the sliding window at its own resolution, as `predict` does
        for case in cases {
            let (mut pred, mut truth) = (Vec::new(), Vec::new());
            for v in case {
                let SliceInput::Native(p) = &v.input else { continue };
                let probs = sliding_probabilities(&[model], spec, p, Tta::Off, window, batch, device);
                pred.extend(argmax_labels(&probs, classes, v.width * v.height));
                truth.extend_from_slice(&v.mask);
            }
            acc.update(&pred, &truth, classes);
        }
        return acc.foreground_dice();
    }
    let n = spec.size;
    let px = n * n;
    // slices of all cases, in order, predicted in chunks of `batch`
    let flat: Vec<(usize, &ValSlice)> =
        cases.iter().enumerate().flat_map(|(c, s)| s.iter().map(move |v| (c, v))).collect();
    let mut pred: Vec<Vec<u8>> = cases.iter().map(|_| Vec::new()).collect();
    let mut truth: Vec<Vec<u8>> = cases.iter().map(|_| Vec::new()).collect();
    for chunk in flat.chunks(batch.max(1)) {
        let inputs: Vec<&Planes> = chunk
            .iter()
            .filter_map(|(_, v)| match &v.input {
                SliceInput::Resized(p) => Some(p),
                SliceInput::Native(_) => None,
            })
            .collect();
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

/// A prepared training batch: inputs (finished in patch mode) and masks, image after image.
struct SegBatch {
    imgs: Vec<f32>,
    masks: Vec<u8>,
    images: usize,
    planes: usize,
    finished: bool,
}

struct SegTask<'a> {
    train: Vec<Example>,
    patches: Vec<PatchSource>,
    val: Vec<Vec<ValSlice>>,
    spec: &'a Preprocess,
    s: &'a SegSettings,
    classes: usize,
}

impl SegTask<'_> {
    /// The input and one-hot target of images `first..end` of a prepared batch.
    fn tensors<B: AutodiffBackend>(
        &self,
        batch: &SegBatch,
        (a, b): (usize, usize),
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let n = self.spec.size;
        let (k, per) = (b - a, batch.planes * n * n);
        let imgs = &batch.imgs[a * per..b * per];
        let x = if batch.finished {
            crate::input::finished::<B>(imgs, k, batch.planes, n, device)
        } else {
            crate::input::batch::<B>(self.spec, imgs, k, batch.planes, device)
        };
        (x, one_hot::<B>(&batch.masks[a * n * n..b * n * n], k, self.classes, n, n, device))
    }
}

impl<B: AutodiffBackend> FinetuneTask<B> for SegTask<'_> {
    type Model = SwinUnet<B>;
    type Prepared = SegBatch;

    fn train_len(&self) -> usize {
        self.train.len().max(self.patches.len())
    }

    fn prepare(&self, batch: &[usize], rng: &mut ChaCha8Rng) -> SegBatch {
        let n = self.spec.size;
        if !self.patches.is_empty() {
            // patch mode: a patch drawn from each slice, augmented; the input is already finished
            let c_in = self.spec.in_chans;
            let (mut imgs, mut masks) = (Vec::with_capacity(batch.len() * c_in * n * n), Vec::new());
            for &i in batch {
                let (img, mask) = draw_patch(&self.patches[i], n, c_in, self.s.foreground_oversample, rng);
                let (img, mask) = augment::segmentation_planes(&img, &mask, n, self.s.augment, rng);
                imgs.extend(img);
                masks.extend(mask);
            }
            return SegBatch { imgs, masks, images: batch.len(), planes: c_in, finished: true };
        }
        let planes = self.train.first().map_or(1, |e| e.planes.planes);
        let (mut imgs, mut masks) =
            (Vec::with_capacity(batch.len() * planes * n * n), Vec::with_capacity(batch.len() * n * n));
        for &i in batch {
            let e = &self.train[i];
            let (img, mask) = augment::segmentation_planes(&e.planes.data, &e.mask, n, self.s.augment, rng);
            imgs.extend(img);
            masks.extend(mask);
        }
        SegBatch { imgs, masks, images: batch.len(), planes, finished: false }
    }

    fn loss(&self, model: &SwinUnet<B>, batch: &SegBatch, device: &B::Device) -> Tensor<B, 1> {
        let (x, target) = self.tensors::<B>(batch, (0, batch.images), device);
        seg_loss(model.forward(x), target, self.s.dice_weight, self.s.ce_weight)
    }

    fn statistics_len(&self) -> usize {
        3 * (self.classes - 1) + 1
    }

    fn statistics(
        &self,
        model: &SwinUnet<B>,
        batch: &SegBatch,
        range: (usize, usize),
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let (x, target) = self.tensors::<B>(batch, range, device);
        seg_statistics(model.forward(x), target)
    }

    fn combine(&self, statistics: Tensor<B, 1>, images: usize) -> Tensor<B, 1> {
        let pixels = images * self.spec.size * self.spec.size;
        seg_combine(statistics, self.classes, pixels, self.s.dice_weight, self.s.ce_weight)
    }

    fn data_hash(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        for e in &self.train {
            crate::cluster::hash_floats(&mut h, &e.planes.data);
            h.update(&e.mask);
        }
        for p in &self.patches {
            crate::cluster::hash_floats(&mut h, &p.data);
            h.update(&p.mask);
        }
        h.finalize()
    }

    fn validate(&self, model: &SwinUnet<B::InnerBackend>, device: &B::Device) -> Validation {
        let window = (self.s.input == SegInput::Patch).then(|| SlidingWindow::of(self.s));
        let dice = validate_cases::<B::InnerBackend>(
            model,
            self.spec,
            &self.val,
            self.s.batch_size,
            self.classes,
            window,
            device,
        );
        let mut fields = serde_json::Map::new();
        fields.insert("val_dice".into(), if dice.is_finite() { json!(dice) } else { json!(null) });
        Validation {
            score: if dice.is_finite() { dice } else { f64::NEG_INFINITY },
            fields,
            brief: format!("val Dice {dice:.4}"),
        }
    }
}

/// The card of a fine-tuned network's weights (the licence is that of the initial weights' card).
pub(crate) fn card(cfg: &FinetuneConfig, kind: ModelKind, classes: Vec<String>, init: Option<&StateDict>) -> ModelCard {
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
        data: Some(vismae_run::DataSummary {
            images: cfg.train_cases.len(),
            modalities: Default::default(),
            sources: vec![cfg.data.display().to_string()],
        }),
        licence: init.and_then(|sd| sd.card()).and_then(|c| c.licence),
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
    par: &Parallel<B>,
) -> Result<SegOutcome> {
    let started = Instant::now();
    let s = cfg.seg().ok_or_else(|| TrainError::invalid("not a segmentation run"))?;
    let device = par.devices.first().ok_or_else(|| TrainError::invalid("no device to train on"))?;
    let spec = &cfg.preprocess;
    // layouts that name their classes (nnU-Net, datalists) bound the labels; CSV masks define them
    let bound = if set.classes.is_empty() { 256 } else { set.classes.len() };
    let train_cases = prepare(&set.pick(&cfg.train_cases), spec, s, bound)?;
    let val = prepare(&set.pick(&cfg.val_cases), spec, s, bound)?;
    let seen =
        train_cases.iter().chain(&val).flatten().flat_map(|v| v.mask.iter().copied()).max().unwrap_or(0) as usize + 1;
    let classes = set.classes.len().max(seen).max(2);
    let (train_ex, patches) = match s.input {
        SegInput::Resize => (to_examples(train_cases, spec.size), Vec::new()),
        SegInput::Patch => (Vec::new(), to_patch_sources(train_cases, spec)),
    };
    let val_images = val.iter().map(Vec::len).sum();
    check_sizes(train_ex.len().max(patches.len()), val_images)?;
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
    let images = (train_ex.len().max(patches.len()), val_images);
    let names =
        if set.classes.len() == classes { set.classes.clone() } else { (0..classes).map(|c| c.to_string()).collect() };
    let card = card(cfg, ModelKind::Unet, names, init);
    let task = SegTask { train: train_ex, patches, val, spec, s, classes };
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
    let done = train::<B, _>(&task, model, &ls, run, resume, &card, par)?;
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
