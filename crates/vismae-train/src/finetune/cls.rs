//! `vismae finetune cls`: Swin classifier fine-tuning (SPEC §4, §6.4) from the MAE encoder or from
//! scratch. Cross-entropy (multi-class) or binary cross-entropy (multi-label), optional balanced
//! class weights, the reference's augmentation, the run's preprocessing (the middle image of each
//! file, `[0, 1]` by the format's rules, no normalisation by default), and the shared epoch loop;
//! the best epoch by validation loss is kept, and validation macro ROC AUC, computed from the
//! probabilities `predict` writes, is logged every epoch.

use std::time::Instant;

use burn::tensor::activation::log_sigmoid;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use vismae_data::labelled::{LabelledSet, Sample, Target};
use vismae_data::prep::{Planes, middle_images, planes};
use vismae_metrics::{Metric, one_vs_rest};
use vismae_model::weights::StateDict;
use vismae_model::{SwinClassifier, VariantExt};
use vismae_run::schema::finite;
use vismae_run::{ClsSettings, ClsSummary, FinetuneConfig, ModelKind, Preprocess, RunDir};

use super::{FinetuneTask, LoopSettings, LrGroups, Parallel, Validation, apply_init, check_sizes, train};
use crate::augment;
use crate::error::{Result, TrainError};
use crate::infer::{cls_logits, cls_probabilities};

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

struct Example {
    /// The input planes at the network's side.
    planes: Planes,
    /// One-hot or multi-hot target.
    target: Vec<f32>,
}

/// A case's classification input: the middle image of each of its files, as planes.
pub fn case_input(sample_images: &[std::path::PathBuf], spec: &Preprocess) -> Result<Planes> {
    let files = middle_images(sample_images, spec)?;
    planes(spec, &files).map_err(|e| TrainError::invalid(format!("{}: {e}", sample_images[0].display())))
}

fn prepare(samples: &[&Sample], spec: &Preprocess, classes: usize, multi: bool) -> Result<Vec<Example>> {
    let mut out = Vec::with_capacity(samples.len());
    for sample in samples {
        let planes = case_input(&sample.images, spec)?;
        let mut target = vec![0f32; classes];
        match &sample.target {
            Target::Class(c) if *c < classes && !multi => target[*c] = 1.0,
            Target::Labels(on) if multi => on.iter().filter(|&&c| c < classes).for_each(|&c| target[c] = 1.0),
            other => {
                return Err(TrainError::invalid(format!(
                    "case {}: label {other:?} does not fit {classes} classes",
                    sample.id
                )));
            }
        }
        out.push(Example { planes, target });
    }
    Ok(out)
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

/// Validation loss and macro ROC AUC (the probabilities as `predict` computes them).
fn validate<B: Backend>(
    model: &SwinClassifier<B>,
    ex: &[Example],
    spec: &Preprocess,
    batch: usize,
    weights: &Tensor<B, 2>,
    multi: bool,
    device: &B::Device,
) -> (f64, f64) {
    let classes = weights.dims()[1];
    let (mut total, mut scores, mut targets) = (0.0, Vec::new(), Vec::new());
    for chunk in ex.chunks(batch.max(1)) {
        let inputs: Vec<&Planes> = chunk.iter().map(|e| &e.planes).collect();
        let logits = cls_logits(model, spec, &inputs, device);
        let t = Tensor::<B, 2>::from_data(
            TensorData::new(chunk.iter().flat_map(|e| e.target.clone()).collect::<Vec<_>>(), [chunk.len(), classes]),
            device,
        );
        let l = crate::losses::scalar(loss(logits.clone(), t, weights.clone(), multi));
        total += l * chunk.len() as f64;
        scores.extend(cls_probabilities(logits, multi));
        targets.extend(chunk.iter().map(|e| e.target.iter().map(|&v| v > 0.5).collect::<Vec<bool>>()));
    }
    let auc = one_vs_rest(Metric::RocAuc, &targets, &scores, !multi && classes == 2);
    (total / ex.len().max(1) as f64, auc.macro_avg)
}

struct ClsTask<'a> {
    train: Vec<Example>,
    val: Vec<Example>,
    spec: &'a Preprocess,
    s: &'a ClsSettings,
    weights: Vec<f32>,
    multi: bool,
}

/// A prepared training batch: inputs and targets, image after image.
struct ClsBatch {
    imgs: Vec<f32>,
    targets: Vec<f32>,
    images: usize,
    planes: usize,
}

impl ClsTask<'_> {
    /// Input, targets and class weights of images `first..end` of a prepared batch.
    fn tensors<B: AutodiffBackend>(
        &self,
        batch: &ClsBatch,
        (a, b): (usize, usize),
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 2>, Tensor<B, 2>) {
        let (n, classes) = (self.spec.size, self.weights.len());
        let (k, per) = (b - a, batch.planes * n * n);
        let x = crate::input::batch::<B>(self.spec, &batch.imgs[a * per..b * per], k, batch.planes, device);
        let t = batch.targets[a * classes..b * classes].to_vec();
        let t = Tensor::<B, 2>::from_data(TensorData::new(t, [k, classes]), device);
        let w = Tensor::<B, 2>::from_data(TensorData::new(self.weights.clone(), [1, classes]), device);
        (x, t, w)
    }
}

impl<B: AutodiffBackend> FinetuneTask<B> for ClsTask<'_> {
    type Model = SwinClassifier<B>;
    type Prepared = ClsBatch;

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn prepare(&self, batch: &[usize], rng: &mut ChaCha8Rng) -> ClsBatch {
        let n = self.spec.size;
        let planes = self.train.first().map_or(1, |e| e.planes.planes);
        let mut imgs = Vec::with_capacity(batch.len() * planes * n * n);
        for &i in batch {
            imgs.extend(augment::classification_planes(&self.train[i].planes.data, n, self.s.augment, rng));
        }
        let targets: Vec<f32> = batch.iter().flat_map(|&i| self.train[i].target.clone()).collect();
        ClsBatch { imgs, targets, images: batch.len(), planes }
    }

    fn loss(&self, model: &SwinClassifier<B>, batch: &ClsBatch, device: &B::Device) -> Tensor<B, 1> {
        let (x, t, w) = self.tensors::<B>(batch, (0, batch.images), device);
        loss(model.forward(x), t, w, self.multi)
    }

    fn statistics_len(&self) -> usize {
        1
    }

    fn statistics(
        &self,
        model: &SwinClassifier<B>,
        batch: &ClsBatch,
        range: (usize, usize),
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let (x, t, w) = self.tensors::<B>(batch, range, device);
        let k = range.1 - range.0;
        // the part's mean times its size: the summed loss
        loss(model.forward(x), t, w, self.multi) * k as f64
    }

    fn combine(&self, statistics: Tensor<B, 1>, images: usize) -> Tensor<B, 1> {
        statistics.div_scalar(images as f64)
    }

    fn data_hash(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        for e in &self.train {
            crate::cluster::hash_floats(&mut h, &e.planes.data);
            crate::cluster::hash_floats(&mut h, &e.target);
        }
        h.finalize()
    }

    fn validate(&self, model: &SwinClassifier<B::InnerBackend>, device: &B::Device) -> Validation {
        let classes = self.weights.len();
        let w = Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(self.weights.clone(), [1, classes]), device);
        let (val_loss, auc) =
            validate::<B::InnerBackend>(model, &self.val, self.spec, self.s.batch_size, &w, self.multi, device);
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

/// Fine-tunes a classifier as `cfg` says on the cases of `set`, selects by loss on the
/// validation cases, writes metrics, checkpoints, weights and `summary.json` in `run`; with
/// `resume`, continues from the run's latest checkpoint.
pub fn run<B: AutodiffBackend>(
    cfg: &FinetuneConfig,
    set: &LabelledSet,
    init: Option<&StateDict>,
    run: &RunDir,
    resume: bool,
    quiet: bool,
    par: &Parallel<B>,
) -> Result<ClsOutcome> {
    let started = Instant::now();
    let s = cfg.cls().ok_or_else(|| TrainError::invalid("not a classification run"))?;
    let device = par.devices.first().ok_or_else(|| TrainError::invalid("no device to train on"))?;
    let spec = &cfg.preprocess;
    let classes = set.classes.len().max(2);
    let multi = set.multi_label;
    let train_ex = prepare(&set.pick(&cfg.train_cases), spec, classes, multi)?;
    let val_ex = prepare(&set.pick(&cfg.val_cases), spec, classes, multi)?;
    check_sizes(train_ex.len(), val_ex.len())?;
    let counts: Vec<f64> = (0..classes).map(|c| train_ex.iter().filter(|e| e.target[c] > 0.5).count() as f64).collect();
    let weights: Vec<f32> = counts
        .iter()
        .map(|&n| if s.balanced && n > 0.0 { (train_ex.len() as f64 / (classes as f64 * n)) as f32 } else { 1.0 })
        .collect();
    let mut net = s.variant.classifier(spec.in_chans, classes);
    net.swin.layer_norm_eps = cfg.layer_norm_eps;
    let mut model: SwinClassifier<B> = crate::seeds::locked(|| {
        B::seed(device, s.seed);
        net.init(device)
    });
    let mut transferred = 0;
    if let Some(sd) = init {
        let file_classes = sd.tensors.get("head.weight").map(|t| t.shape[0]);
        let why = format!("the file's head has {} classes, this run {classes}", file_classes.unwrap_or(0));
        let mut drop = vec![("projection.", "SimCLR's projection head")];
        if file_classes.is_some_and(|c| c != classes) {
            drop.push(("head.", why.as_str()));
        }
        (model, transferred) = apply_init(model, sd, spec.in_chans, &drop, run)?;
    }
    let names =
        if set.classes.len() == classes { set.classes.clone() } else { (0..classes).map(|c| c.to_string()).collect() };
    let card = super::seg::card(cfg, ModelKind::Classifier, names, init);
    let task = ClsTask { train: train_ex, val: val_ex, spec, s, weights, multi };
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
    let best_auc = done.best.2.get("val_auc_macro").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    let out = ClsOutcome {
        best: (-done.best.0, done.best.1),
        best_auc,
        transferred,
        seconds: started.elapsed().as_secs_f64(),
        resumed_from: done.resumed_from,
    };
    let summary = ClsSummary {
        best_val_loss: out.best.0,
        best_epoch: out.best.1,
        val_auc_macro_at_best: finite(out.best_auc),
        classes: set.classes.clone(),
        multi_label: multi,
        tensors_transferred: out.transferred,
        seconds: out.seconds,
    };
    run.write_json("summary.json", &summary)?;
    Ok(out)
}
