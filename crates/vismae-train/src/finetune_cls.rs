//! `vismae finetune cls`: Swin classifier fine-tuning (SPEC §4, §6.4) from the MAE encoder or from
//! scratch. Cross-entropy (multi-class) or binary cross-entropy (multi-label), optional balanced
//! class weights, the reference's augmentation, and the shared epoch loop (warm-up + cosine,
//! checkpoints, resume); the best epoch by validation loss is kept, and validation macro ROC AUC
//! is logged every epoch.

use std::time::Instant;

use burn::tensor::activation::{log_sigmoid, log_softmax, sigmoid, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vismae_data::labelled::{LabelledSet, Sample, Target};
use vismae_data::source::{NormaliseOptions, SliceOptions, Source};
use vismae_metrics::{Metric, one_vs_rest};
use vismae_model::weights::StateDict;
use vismae_model::{SwinClassifier, Variant};

use crate::augment::{self, Augment};
use crate::finetune::{LoopSettings, Task, Validation, apply_init, check_sizes, train};
use crate::parallel::forward_split;
use crate::run_dir::RunDir;

/// Settings of a classification fine-tuning run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClsSettings {
    /// Model size.
    pub variant: String,
    /// Input side (224 in the reference, which has no padding; vismae pads other sizes).
    pub size: usize,
    /// Input channels (3 replicates grey).
    pub in_chans: usize,
    /// Epochs (paper: 50).
    pub epochs: usize,
    /// Warm-up epochs (paper: 10).
    pub warmup_epochs: f64,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (official code: 1e-3).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Weigh classes by `n / (classes * n_c)` (sklearn's "balanced").
    pub balanced: bool,
    /// Augmentation: `reference` (the official `--transform` pipeline), `flip` (horizontal
    /// flips) or `none`.
    pub augment: Augment,
    /// Seed.
    pub seed: u64,
    /// Write a checkpoint every this many epochs.
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
}

impl Default for ClsSettings {
    fn default() -> Self {
        Self {
            variant: "vis-mae".into(),
            size: 224,
            in_chans: 3,
            epochs: 50,
            warmup_epochs: 10.0,
            batch_size: 16,
            lr: 1e-3,
            weight_decay: 0.05,
            balanced: false,
            augment: Augment::Reference,
            seed: 0,
            checkpoint_every: 1,
            keep_checkpoints: 2,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct ClsOutcome {
    /// Lowest validation loss and its epoch (1-based).
    pub best: (f64, usize),
    /// Validation macro ROC AUC at the best epoch.
    pub best_auc: f64,
    /// Tensors applied from the initial weights.
    pub transferred: usize,
    /// Seconds spent.
    pub seconds: f64,
    /// Epoch the run resumed after, if it did.
    pub resumed_from: Option<usize>,
}

pub(crate) struct Example {
    /// `size * size` grey values in [0, 1].
    pub image: Vec<f32>,
    /// One-hot or multi-hot target.
    pub target: Vec<f32>,
}

/// The classifier's input from an image file: its middle image (frame or axial slice), brought to
/// [0, 1] by the format's rules, grey, resized to `size` (bilinear).
pub fn load_image(path: &std::path::Path, size: usize) -> Result<Vec<f32>, String> {
    let opts = SliceOptions { skip_empty: false, ..Default::default() };
    let src = Source::open(path, &opts).map_err(|e| e.to_string())?;
    let raw = src
        .image(src.len() / 2, &opts)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: empty image", path.display()))?;
    let (img, _) = raw.normalise(&NormaliseOptions::default());
    Ok(img.to_grey().resize_bilinear(size, size).data)
}

pub(crate) fn prepare(samples: &[&Sample], size: usize, classes: usize, multi: bool) -> Result<Vec<Example>, String> {
    let mut out = Vec::new();
    for sample in samples {
        let image = load_image(&sample.images[0], size)?;
        let mut target = vec![0f32; classes];
        match &sample.target {
            Target::Class(c) if *c < classes && !multi => target[*c] = 1.0,
            Target::Labels(on) if multi => on.iter().filter(|&&c| c < classes).for_each(|&c| target[c] = 1.0),
            other => return Err(format!("case {}: label {other:?} does not fit {classes} classes", sample.id)),
        }
        out.push(Example { image, target });
    }
    Ok(out)
}

pub(crate) fn input<B: Backend>(images: Vec<f32>, b: usize, s: &ClsSettings, device: &B::Device) -> Tensor<B, 4> {
    let x = Tensor::<B, 4>::from_data(TensorData::new(images, [b, 1, s.size, s.size]), device);
    if s.in_chans == 3 { x.repeat_dim(1, 3) } else { x }
}

/// Mean loss per sample: weighted cross-entropy, or binary cross-entropy over labels.
fn loss<B: Backend>(logits: Tensor<B, 2>, target: Tensor<B, 2>, weights: Tensor<B, 2>, multi: bool) -> Tensor<B, 1> {
    let [b, c] = logits.dims();
    if multi {
        let pos = log_sigmoid(logits.clone()) * target.clone();
        let neg = log_sigmoid(logits.neg()) * (target.neg() + 1.0);
        ((pos + neg) * weights).sum().neg() / (b * c) as f64
    } else {
        (log_softmax(logits, 1) * target * weights).sum().neg() / b as f64
    }
}

/// Validation loss and macro ROC AUC.
fn validate<B: Backend>(
    model: &SwinClassifier<B>,
    ex: &[Example],
    s: &ClsSettings,
    weights: &Tensor<B, 2>,
    multi: bool,
    device: &B::Device,
) -> (f64, f64) {
    let classes = weights.dims()[1];
    let (mut total, mut scores, mut targets) = (0.0, Vec::new(), Vec::new());
    for chunk in ex.chunks(s.batch_size.max(1)) {
        let x = input::<B>(chunk.iter().flat_map(|e| e.image.iter().copied()).collect(), chunk.len(), s, device);
        let t = Tensor::<B, 2>::from_data(
            TensorData::new(chunk.iter().flat_map(|e| e.target.clone()).collect::<Vec<_>>(), [chunk.len(), classes]),
            device,
        );
        let logits = forward_split(x, |x| model.forward(x));
        let l = crate::losses::scalar(loss(logits.clone(), t, weights.clone(), multi));
        total += l * chunk.len() as f64;
        let p = if multi { sigmoid(logits) } else { softmax(logits, 1) };
        let p: Vec<f64> = p.into_data().convert::<f64>().to_vec().unwrap_or_default();
        for (i, e) in chunk.iter().enumerate() {
            scores.push(p[i * classes..(i + 1) * classes].to_vec());
            targets.push(e.target.iter().map(|&v| v > 0.5).collect::<Vec<bool>>());
        }
    }
    let auc = one_vs_rest(Metric::RocAuc, &targets, &scores, !multi && classes == 2);
    (total / ex.len().max(1) as f64, auc.macro_avg)
}

struct ClsTask<'a> {
    train: Vec<Example>,
    val: Vec<Example>,
    s: &'a ClsSettings,
    weights: Vec<f32>,
    multi: bool,
}

impl<B: AutodiffBackend> Task<B> for ClsTask<'_> {
    type Model = SwinClassifier<B>;

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn loss(
        &self,
        model: &SwinClassifier<B>,
        batch: &[usize],
        rng: &mut ChaCha8Rng,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let (n, classes) = (self.s.size, self.weights.len());
        let mut imgs = Vec::with_capacity(batch.len() * n * n);
        for &i in batch {
            imgs.extend(augment::classification(&self.train[i].image, n, self.s.augment, rng));
        }
        let t: Vec<f32> = batch.iter().flat_map(|&i| self.train[i].target.clone()).collect();
        let x = input::<B>(imgs, batch.len(), self.s, device);
        let t = Tensor::<B, 2>::from_data(TensorData::new(t, [batch.len(), classes]), device);
        let w = Tensor::<B, 2>::from_data(TensorData::new(self.weights.clone(), [1, classes]), device);
        loss(model.forward(x), t, w, self.multi)
    }

    fn validate(&self, model: &SwinClassifier<B::InnerBackend>, device: &B::Device) -> Validation {
        let classes = self.weights.len();
        let w = Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(self.weights.clone(), [1, classes]), device);
        let (val_loss, auc) = validate::<B::InnerBackend>(model, &self.val, self.s, &w, self.multi, device);
        let mut fields = serde_json::Map::new();
        fields.insert("val_loss".into(), json!(val_loss));
        fields.insert("val_auc_macro".into(), if auc.is_finite() { json!(auc) } else { json!(null) });
        Validation {
            score: if val_loss.is_finite() { -val_loss } else { f64::NEG_INFINITY },
            fields,
            brief: format!("val loss {val_loss:.4}, AUC {auc:.3}"),
        }
    }
}

/// Fine-tunes a classifier on `train`, selects by loss on `val`, writes metrics, checkpoints and
/// weights in `run`; with `resume`, continues from the run's latest checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn run<B: AutodiffBackend>(
    set: &LabelledSet,
    train_cases: &[&Sample],
    val_cases: &[&Sample],
    init: Option<&StateDict>,
    s: &ClsSettings,
    run: &RunDir,
    resume: bool,
    device: &B::Device,
) -> Result<ClsOutcome, String> {
    let started = Instant::now();
    if set.segmentation {
        return Err("the labelled set holds masks, not class labels: use `finetune seg`".into());
    }
    let classes = set.classes.len().max(2);
    let multi = set.multi_label;
    let train_ex = prepare(train_cases, s.size, classes, multi)?;
    let val_ex = prepare(val_cases, s.size, classes, multi)?;
    check_sizes(train_ex.len(), val_ex.len())?;
    let counts: Vec<f64> = (0..classes).map(|c| train_ex.iter().filter(|e| e.target[c] > 0.5).count() as f64).collect();
    let weights: Vec<f32> = counts
        .iter()
        .map(|&n| if s.balanced && n > 0.0 { (train_ex.len() as f64 / (classes as f64 * n)) as f32 } else { 1.0 })
        .collect();
    B::seed(device, s.seed);
    let variant = Variant::from_name(&s.variant).ok_or_else(|| format!("unknown variant {:?}", s.variant))?;
    let mut model: SwinClassifier<B> = variant.classifier(s.in_chans, classes).init(device);
    let mut transferred = 0;
    if let Some(sd) = init {
        (model, transferred) = apply_init(model, sd, run)?;
    }
    let task = ClsTask { train: train_ex, val: val_ex, s, weights, multi };
    let ls = LoopSettings {
        epochs: s.epochs,
        warmup_epochs: s.warmup_epochs,
        batch_size: s.batch_size,
        lr: (s.lr, 0.0),
        betas: (0.9, 0.95),
        weight_decay: s.weight_decay,
        seed: s.seed,
        checkpoint_every: s.checkpoint_every,
        keep_checkpoints: s.keep_checkpoints,
    };
    let done = train::<B, _>(&task, model, &ls, run, resume, device)?;
    let best_auc = done.best.2.get("val_auc_macro").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    let out = ClsOutcome {
        best: (-done.best.0, done.best.1),
        best_auc,
        transferred,
        seconds: started.elapsed().as_secs_f64(),
        resumed_from: done.resumed_from,
    };
    let summary = json!({
        "best_val_loss": out.best.0, "best_epoch": out.best.1,
        "val_auc_macro_at_best": if out.best_auc.is_finite() { json!(out.best_auc) } else { json!(null) },
        "classes": set.classes, "multi_label": multi, "tensors_transferred": out.transferred, "seconds": out.seconds,
    });
    run.write_json("summary.json", &summary).map_err(|e| e.to_string())?;
    Ok(out)
}
