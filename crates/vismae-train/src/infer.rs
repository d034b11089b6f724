//! Inference shared by validation and prediction, so that the score a run logs for its best
//! epoch is the score `predict` + `evaluate` give its weights: inputs prepared by the run's
//! [`Preprocess`], batched, forward (split over the CPU workers), softmax (or sigmoid), then for
//! segmentation the first of equal maxima per pixel and nearest-neighbour back to each image's
//! own size. [`SegNet`] and [`ClsNet`] load a fine-tuning run's best weights for prediction.
//!
//! An image's output depends, in its last bits, on the images batched with it (the CPU kernels
//! block the work by batch size), and a last bit can flip a near-tie in the argmax. So validation
//! and prediction batch alike: the images of the cases in order, in chunks of the run's batch size,
//! chunks running on across case boundaries.

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use vismae_data::prep::Planes;
use vismae_data::raster::Raster;
use vismae_model::weights::{LoadOptions, Visit, apply_state_dict, read_state_dict};
use vismae_model::{SwinClassifier, SwinUnet, VariantExt};
use vismae_run::{FinetuneConfig, Preprocess, Task};

use crate::error::{Result, TrainError};
use crate::parallel::forward_split;

/// Softmax class probabilities `[b, classes, S, S]` (flat) of a chunk of prepared inputs.
pub fn seg_probabilities<B: Backend>(
    model: &SwinUnet<B>,
    spec: &Preprocess,
    chunk: &[&Planes],
    device: &B::Device,
) -> Vec<f32> {
    let planes = chunk.first().map_or(1, |p| p.planes);
    let data: Vec<f32> = chunk.iter().flat_map(|p| p.data.iter().copied()).collect();
    let x = crate::input::batch::<B>(spec, &data, chunk.len(), planes, device);
    let probs = softmax(forward_split(x, |x| model.forward(x)), 1);
    probs.into_data().convert::<f32>().to_vec().unwrap_or_default()
}

/// Class index per pixel of one image's `classes` probability planes of `px` pixels: the first
/// of equal maxima, as `torch.argmax`.
pub fn argmax_labels(probs: &[f32], classes: usize, px: usize) -> Vec<u8> {
    (0..px)
        .map(|i| {
            (1..classes).fold(0usize, |best, k| if probs[k * px + i] > probs[best * px + i] { k } else { best }) as u8
        })
        .collect()
}

/// A label map of the network's side `n` brought to `w x h` by nearest neighbour.
pub fn labels_to_size(labels: Vec<u8>, n: usize, w: usize, h: usize) -> Vec<u8> {
    if (w, h) == (n, n) {
        return labels;
    }
    let r = Raster::new(n, n, 1, labels.into_iter().map(f32::from).collect());
    r.resize_nearest(w, h).data.into_iter().map(|v| v as u8).collect()
}

/// Logits `[b, classes]` of a chunk of prepared inputs.
pub fn cls_logits<B: Backend>(
    model: &SwinClassifier<B>,
    spec: &Preprocess,
    chunk: &[&Planes],
    device: &B::Device,
) -> Tensor<B, 2> {
    let planes = chunk.first().map_or(1, |p| p.planes);
    let data: Vec<f32> = chunk.iter().flat_map(|p| p.data.iter().copied()).collect();
    let x = crate::input::batch::<B>(spec, &data, chunk.len(), planes, device);
    forward_split(x, |x| model.forward(x))
}

/// Class probabilities of logits: softmax, or sigmoid per label for multi-label runs.
pub fn cls_probabilities<B: Backend>(logits: Tensor<B, 2>, multi_label: bool) -> Vec<Vec<f64>> {
    let c = logits.dims()[1];
    let p = if multi_label { sigmoid(logits) } else { softmax(logits, 1) };
    let p: Vec<f64> = p.into_data().convert::<f64>().to_vec().unwrap_or_default();
    p.chunks(c.max(1)).map(<[f64]>::to_vec).collect()
}

/// Loads `RUN/best.safetensors` into the network `build` makes for the class count its head
/// has; returns the network and that count. Every tensor of the network must be in the file.
pub fn load_best<B: Backend, M: Visit<B>>(run: &Path, build: impl FnOnce(usize) -> M) -> Result<(M, usize)> {
    let weights = run.join("best.safetensors");
    let sd = read_state_dict(&weights)?;
    let classes = sd.tensors.get("head.weight").map(|t| t.shape[0]).ok_or_else(|| TrainError::Output {
        path: weights.clone(),
        reason: "no head.weight: not the weights of a fine-tuned network".into(),
    })?;
    let (model, report) = apply_state_dict(build(classes), &sd, LoadOptions::default())?;
    if let Some(first) = report.missing.first() {
        return Err(TrainError::Output {
            path: weights,
            reason: format!("{} tensors missing ({first}...)", report.missing.len()),
        });
    }
    Ok((model, classes))
}

/// A fine-tuned Swin-UNet with the config it was trained with.
pub struct SegNet<B: Backend> {
    /// The network (best epoch).
    pub model: SwinUnet<B>,
    /// The run's config.
    pub config: FinetuneConfig,
    /// Classes, background included.
    pub classes: usize,
}

impl<B: Backend> SegNet<B> {
    /// Loads a `vismae finetune seg` run.
    pub fn load(run: &Path, device: &B::Device) -> Result<Self> {
        let config = FinetuneConfig::read(run, Some(Task::Segmentation))?;
        let (v, c, eps) = (config.variant(), config.preprocess.in_chans, config.layer_norm_eps);
        let (model, classes) = load_best(run, |k| {
            let mut net = v.unet(c, k);
            net.swin.layer_norm_eps = eps;
            // the weights replace every value, but its fresh random values are drawn too
            crate::seeds::locked(|| net.init::<B>(device))
        })?;
        Ok(Self { model, config, classes })
    }

    /// Batch size for inference (the run's).
    pub fn batch_size(&self) -> usize {
        self.config.seg().map_or(8, |s| s.batch_size).max(1)
    }
}

/// A fine-tuned classifier with the config it was trained with.
pub struct ClsNet<B: Backend> {
    /// The network (best epoch).
    pub model: SwinClassifier<B>,
    /// The run's config.
    pub config: FinetuneConfig,
    /// Class names (from the labelled set), or indices.
    pub classes: Vec<String>,
    /// Multi-label (sigmoid) rather than multi-class (softmax).
    pub multi_label: bool,
}

impl<B: Backend> ClsNet<B> {
    /// Loads a `vismae finetune cls` run; a run that does not say whether it is multi-label is an
    /// error, not a guess.
    pub fn load(run: &Path, device: &B::Device) -> Result<Self> {
        let config = FinetuneConfig::read(run, Some(Task::Classification))?;
        let multi_label = config.is_multi_label(run)?;
        let (v, c, eps) = (config.variant(), config.preprocess.in_chans, config.layer_norm_eps);
        let (model, n) = load_best(run, |k| {
            let mut net = v.classifier(c, k);
            net.swin.layer_norm_eps = eps;
            // the weights replace every value, but its fresh random values are drawn too
            crate::seeds::locked(|| net.init::<B>(device))
        })?;
        let classes =
            if config.classes.len() == n { config.classes.clone() } else { (0..n).map(|k| k.to_string()).collect() };
        Ok(Self { model, config, classes, multi_label })
    }

    /// Batch size for inference (the run's).
    pub fn batch_size(&self) -> usize {
        self.config.cls().map_or(16, |s| s.batch_size).max(1)
    }

    /// Class probabilities of prepared inputs, in chunks of the run's batch size.
    pub fn probabilities(&self, inputs: &[Planes], device: &B::Device) -> Vec<Vec<f64>> {
        let refs: Vec<&Planes> = inputs.iter().collect();
        refs.chunks(self.batch_size())
            .flat_map(|chunk| {
                cls_probabilities(cls_logits(&self.model, &self.config.preprocess, chunk, device), self.multi_label)
            })
            .collect()
    }
}
