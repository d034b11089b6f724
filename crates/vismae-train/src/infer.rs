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
use vismae_run::{FinetuneConfig, Preprocess, Task, Tta};

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

/// Softmax probabilities `[b, classes, S, S]` (flat) of a chunk of prepared inputs, averaged
/// over `models` (a fold ensemble: runs that agree on classes and preprocessing, see
/// [`SegNet::check_ensemble`]) and over the input's mirrorings that `tta` names (none; and
/// left-right; or all four: none, left-right, up-down, both; each prediction mirrored back), as
/// nnU-Net's test-time augmentation does for 2-D. One model without mirroring gives
/// [`seg_probabilities`] exactly.
pub fn seg_probabilities_mean<B: Backend>(
    models: &[&SwinUnet<B>],
    spec: &Preprocess,
    chunk: &[&Planes],
    tta: Tta,
    device: &B::Device,
) -> Vec<f32> {
    if let ([model], Tta::Off) = (models, tta) {
        return seg_probabilities(model, spec, chunk, device);
    }
    let planes = chunk.first().map_or(1, |p| p.planes);
    let data: Vec<f32> = chunk.iter().flat_map(|p| p.data.iter().copied()).collect();
    let x = crate::input::batch::<B>(spec, &data, chunk.len(), planes, device);
    mean_probabilities(models, x, tta)
}

/// Softmax probabilities of the network input `x`, averaged over `models` and the mirrorings
/// `tta` names (the body of [`seg_probabilities_mean`]).
fn mean_probabilities<B: Backend>(models: &[&SwinUnet<B>], x: Tensor<B, 4>, tta: Tta) -> Vec<f32> {
    let mirrors: &[&[isize]] = match tta {
        Tta::Off => &[&[]],
        Tta::Lr => &[&[], &[3]],
        Tta::All => &[&[], &[3], &[2], &[2, 3]],
    };
    let mut sum: Option<Tensor<B, 4>> = None;
    for model in models {
        for axes in mirrors {
            let flip = |t: Tensor<B, 4>| match axes.len() {
                0 => t,
                1 => t.flip([axes[0]]),
                _ => t.flip([axes[0], axes[1]]),
            };
            let p = flip(softmax(forward_split(flip(x.clone()), |x| model.forward(x)), 1));
            sum = Some(match sum {
                None => p,
                Some(s) => s + p,
            });
        }
    }
    let n = (models.len() * mirrors.len()) as f32;
    sum.map(|s| (s / n).into_data().convert::<f32>().to_vec().unwrap_or_default()).unwrap_or_default()
}

/// How a sliding window moves over an image larger than the network's side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlidingWindow {
    /// Overlap of neighbouring windows, as a share of the side (nnU-Net: 0.5).
    pub overlap: f64,
    /// Gaussian importance weighting (nnU-Net: sigma 1/8 of the side) rather than even.
    pub gaussian: bool,
}

impl SlidingWindow {
    /// The window of a segmentation run's settings.
    pub fn of(s: &vismae_run::SegSettings) -> Self {
        Self { overlap: s.overlap, gaussian: s.gaussian }
    }
}

/// Start offsets of windows of side `n` over `len` pixels: as few as keep neighbours overlapping
/// by at least `overlap` of the side, evenly spread from 0 to `len - n` (nnU-Net's
/// `compute_steps_for_sliding_window`); one window at 0 when `len <= n`.
pub fn window_starts(len: usize, n: usize, overlap: f64) -> Vec<usize> {
    if len <= n {
        return vec![0];
    }
    let target = (n as f64 * (1.0 - overlap)).max(1.0);
    let count = ((len - n) as f64 / target).ceil() as usize + 1;
    let step = (len - n) as f64 / (count - 1) as f64;
    // numpy rounds half to even, as nnU-Net's steps do
    (0..count).map(|i| (step * i as f64).round_ties_even() as usize).collect()
}

/// The importance of each pixel of an `n x n` window: a Gaussian with sigma `n / 8` centred on
/// pixel `n / 2` and 1 at its peak (nnU-Net's `compute_gaussian`, without its 4-sigma truncation),
/// or 1 everywhere.
pub fn importance(n: usize, gaussian: bool) -> Vec<f32> {
    if !gaussian {
        return vec![1.0; n * n];
    }
    let (c, sigma) = ((n / 2) as f64, n as f64 / 8.0);
    let g: Vec<f64> = (0..n).map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    (0..n * n).map(|i| (g[i / n] * g[i % n]).max(1e-12) as f32).collect()
}

/// A `w x h` image of `planes` planes finished as a whole ([`Preprocess::finish_px`]: channels
/// replicated, the run's normalisation over the image), then padded to at least the network's
/// side with each channel's minimum: `(in_chans planes, padded width, padded height)`. What patch
/// training cuts patches from and the sliding window slides over.
pub fn finished_padded(
    spec: &Preprocess,
    data: Vec<f32>,
    planes: usize,
    w: usize,
    h: usize,
) -> (Vec<f32>, usize, usize) {
    let (n, c_in) = (spec.size, spec.in_chans);
    let finished = spec.finish_px(data, planes, w * h);
    let (pw, ph) = (w.max(n), h.max(n));
    let mut padded = vec![0f32; c_in * pw * ph];
    for (ch, plane) in finished.chunks(w * h).enumerate().take(c_in) {
        let lo = plane.iter().copied().fold(f32::INFINITY, f32::min);
        let dst = &mut padded[ch * pw * ph..(ch + 1) * pw * ph];
        dst.fill(if lo.is_finite() { lo } else { 0.0 });
        for r in 0..h {
            dst[r * pw..r * pw + w].copy_from_slice(&plane[r * w..(r + 1) * w]);
        }
    }
    (padded, pw, ph)
}

/// Softmax probabilities `[classes, height, width]` (flat) of one image at its own resolution, by
/// a sliding window of the network's side: the image is finished as a whole (channels replicated,
/// then the run's normalisation over the image), padded to at least the side with each channel's
/// minimum, cut into windows (`window`), each predicted as [`seg_probabilities_mean`] predicts
/// (`models`, `tta`) in chunks of `batch` windows, weighted by [`importance`] and averaged where
/// windows overlap. Validation and prediction both call this, so they agree exactly.
pub fn sliding_probabilities<B: Backend>(
    models: &[&SwinUnet<B>],
    spec: &Preprocess,
    image: &vismae_data::prep::NativePlanes,
    tta: Tta,
    window: SlidingWindow,
    batch: usize,
    device: &B::Device,
) -> Vec<f32> {
    let (n, c_in) = (spec.size, spec.in_chans);
    let (w, h) = (image.width, image.height);
    let (padded, pw, ph) = finished_padded(spec, image.data.clone(), image.planes, w, h);
    let windows: Vec<(usize, usize)> = window_starts(ph, n, window.overlap)
        .into_iter()
        .flat_map(|y| window_starts(pw, n, window.overlap).into_iter().map(move |x| (x, y)))
        .collect();
    let weight = importance(n, window.gaussian);
    let mut acc: Vec<f32> = Vec::new();
    let mut wsum = vec![0f32; pw * ph];
    let mut classes = 0;
    for chunk in windows.chunks(batch.max(1)) {
        let mut data = Vec::with_capacity(chunk.len() * c_in * n * n);
        for &(x0, y0) in chunk {
            for ch in 0..c_in {
                let src = &padded[ch * pw * ph..(ch + 1) * pw * ph];
                for r in 0..n {
                    data.extend_from_slice(&src[(y0 + r) * pw + x0..(y0 + r) * pw + x0 + n]);
                }
            }
        }
        let x = crate::input::finished::<B>(&data, chunk.len(), c_in, n, device);
        let probs = mean_probabilities(models, x, tta);
        if classes == 0 {
            classes = probs.len() / (chunk.len() * n * n);
            acc = vec![0f32; classes * pw * ph];
        }
        for (i, &(x0, y0)) in chunk.iter().enumerate() {
            for r in 0..n {
                for c in 0..n {
                    let (at, wt) = ((y0 + r) * pw + x0 + c, weight[r * n + c]);
                    wsum[at] += wt;
                    for k in 0..classes {
                        acc[k * pw * ph + at] += wt * probs[((i * classes + k) * n + r) * n + c];
                    }
                }
            }
        }
    }
    let mut out = Vec::with_capacity(classes * w * h);
    for k in 0..classes {
        for r in 0..h {
            for c in 0..w {
                let at = r * pw + c;
                out.push(acc[k * pw * ph + at] / wsum[at]);
            }
        }
    }
    out
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

    /// The test-time augmentation `predict` uses for this run unless told: as it was trained.
    pub fn default_tta(&self) -> Tta {
        Tta::for_training(self.config.seg().map_or(vismae_run::Augment::None, |s| s.augment))
    }

    /// Checks that `nets` (loaded from `runs`) can be averaged: the same classes (count and
    /// names), the same preprocessing and the same plane as the first; else an error saying how
    /// each differs.
    pub fn check_ensemble(nets: &[SegNet<B>], runs: &[std::path::PathBuf]) -> Result<()> {
        let describe = |n: &SegNet<B>| {
            let mut v = serde_json::to_value(&n.config.preprocess).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("classes".into(), serde_json::json!(n.classes));
                o.insert("class names".into(), serde_json::json!(n.config.classes));
                o.insert("plane".into(), serde_json::json!(format!("{:?}", n.config.seg().map(|s| s.plane))));
                o.insert("input".into(), serde_json::json!(n.config.seg().map(|s| s.input.to_string())));
            }
            v
        };
        check_agreement(nets.iter().map(describe).collect(), runs)
    }
}

/// Checks that every run's description (a JSON object of what must agree) equals the first's;
/// the error lists, for each run that differs, the fields and both values.
pub fn check_agreement(described: Vec<serde_json::Value>, runs: &[std::path::PathBuf]) -> Result<()> {
    let Some(first) = described.first() else { return Ok(()) };
    let mut problems = Vec::new();
    for (d, run) in described.iter().zip(runs).skip(1) {
        let (Some(a), Some(b)) = (first.as_object(), d.as_object()) else { continue };
        let diffs: Vec<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} {} (first run: {v})", b.get(k).cloned().unwrap_or_default()))
            .collect();
        if !diffs.is_empty() {
            problems.push(format!("{}: {}", run.display(), diffs.join(", ")));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(TrainError::invalid(format!(
        "the runs of an ensemble must agree on classes and preprocessing; {} against {}",
        problems.join("; "),
        runs[0].display()
    )))
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

    /// Checks that `nets` (loaded from `runs`) can be averaged: the same classes, label mode and
    /// preprocessing as the first; else an error saying how each differs.
    pub fn check_ensemble(nets: &[ClsNet<B>], runs: &[std::path::PathBuf]) -> Result<()> {
        let describe = |n: &ClsNet<B>| {
            let mut v = serde_json::to_value(&n.config.preprocess).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("classes".into(), serde_json::json!(n.classes));
                o.insert("multi-label".into(), serde_json::json!(n.multi_label));
            }
            v
        };
        check_agreement(nets.iter().map(describe).collect(), runs)
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

#[cfg(test)]
mod tests {
    use super::*;
    use vismae_model::Variant;
    use vismae_run::{Channels, InputNorm, Intensity};

    type B = burn::backend::Flex;

    fn mirrored(img: &[f32], n: usize, lr: bool, ud: bool) -> Vec<f32> {
        (0..n * n)
            .map(|i| {
                let (y, x) = (i / n, i % n);
                img[(if ud { n - 1 - y } else { y }) * n + if lr { n - 1 - x } else { x }]
            })
            .collect()
    }

    #[test]
    fn test_time_augmentation_averages_the_four_mirrored_passes_and_ensembles_average_the_runs() {
        let device = Default::default();
        let n = 32;
        let spec = Preprocess {
            size: n,
            in_chans: 1,
            channels: Channels::Grey,
            intensity: Intensity::Stored,
            norm: InputNorm::None,
        };
        let nets: Vec<SwinUnet<B>> =
            (0..2).map(|_| crate::seeds::locked(|| Variant::Tiny.unet(1, 3).init::<B>(&device))).collect();
        let img: Vec<f32> = (0..n * n).map(|i| ((i * 37 % 101) as f32 / 101.0) + (i / n) as f32 / n as f32).collect();
        let input = Planes { planes: 1, size: n, data: img.clone() };
        let one = seg_probabilities(&nets[0], &spec, &[&input], &device);
        // one run, no mirroring: the plain pass, bit for bit
        assert_eq!(seg_probabilities_mean(&[&nets[0]], &spec, &[&input], Tta::Off, &device), one);
        // mirroring: the mean of the four passes on mirrored inputs, each mirrored back
        let mean_of = |mirrors: &[(bool, bool)]| {
            let mut want = vec![0f32; 3 * n * n];
            for &(lr, ud) in mirrors {
                let m = Planes { planes: 1, size: n, data: mirrored(&img, n, lr, ud) };
                let p = seg_probabilities(&nets[0], &spec, &[&m], &device);
                for c in 0..3 {
                    let back = mirrored(&p[c * n * n..(c + 1) * n * n], n, lr, ud);
                    let k = mirrors.len() as f32;
                    want[c * n * n..(c + 1) * n * n].iter_mut().zip(back).for_each(|(w, b)| *w += b / k);
                }
            }
            want
        };
        let want = mean_of(&[(false, false), (true, false), (false, true), (true, true)]);
        let tta = seg_probabilities_mean(&[&nets[0]], &spec, &[&input], Tta::All, &device);
        assert!(tta.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "TTA is not the mean of the mirrored passes");
        let lr = seg_probabilities_mean(&[&nets[0]], &spec, &[&input], Tta::Lr, &device);
        let want_lr = mean_of(&[(false, false), (true, false)]);
        assert!(lr.iter().zip(&want_lr).all(|(a, b)| (a - b).abs() < 1e-5), "left-right TTA");
        assert_ne!(tta, one, "the mirrored passes of an asymmetric network differ");
        // which makes the prediction of a mirrored image the mirror of the prediction
        let flipped = Planes { planes: 1, size: n, data: mirrored(&img, n, true, false) };
        let tta_flipped = seg_probabilities_mean(&[&nets[0]], &spec, &[&flipped], Tta::All, &device);
        for c in 0..3 {
            let back = mirrored(&tta_flipped[c * n * n..(c + 1) * n * n], n, true, false);
            assert!(back.iter().zip(&tta[c * n * n..(c + 1) * n * n]).all(|(a, b)| (a - b).abs() < 1e-5));
        }
        // an ensemble: the mean of its runs' probabilities
        let other = seg_probabilities(&nets[1], &spec, &[&input], &device);
        let both = seg_probabilities_mean(&[&nets[0], &nets[1]], &spec, &[&input], Tta::Off, &device);
        assert!(both.iter().zip(one.iter().zip(&other)).all(|(m, (a, b))| (m - (a + b) / 2.0).abs() < 1e-6));
    }

    #[test]
    fn windows_step_as_nnunets_and_weigh_by_a_centred_gaussian() {
        // nnU-Net's compute_steps_for_sliding_window(image, patch, 0.5)
        assert_eq!(window_starts(64, 64, 0.5), [0]);
        assert_eq!(window_starts(40, 64, 0.5), [0]);
        assert_eq!(window_starts(181, 64, 0.5), [0, 29, 58, 88, 117]);
        assert_eq!(window_starts(217, 64, 0.5), [0, 31, 61, 92, 122, 153]);
        assert_eq!(window_starts(100, 64, 0.0), [0, 36]);
        let g = importance(64, true);
        let peak = g.iter().copied().fold(0.0f32, f32::max);
        assert_eq!((peak, g[32 * 64 + 32]), (1.0, 1.0));
        assert!(g.iter().all(|&v| v > 0.0) && g[0] < 1e-6 && (g[32 * 64 + 40] - g[40 * 64 + 32]).abs() < 1e-7);
        assert!(importance(8, false).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn a_sliding_window_over_one_window_is_the_plain_pass_and_larger_images_are_covered() {
        let device = Default::default();
        let n = 32;
        let spec = Preprocess {
            size: n,
            in_chans: 1,
            channels: Channels::Grey,
            intensity: Intensity::Stored,
            norm: InputNorm::MinMax,
        };
        let net: SwinUnet<B> = crate::seeds::locked(|| Variant::Tiny.unet(1, 3).init::<B>(&device));
        let img: Vec<f32> = (0..n * n).map(|i| ((i * 37 % 101) as f32 / 101.0) + (i / n) as f32 / n as f32).collect();
        let window = SlidingWindow { overlap: 0.5, gaussian: true };
        let native = vismae_data::prep::NativePlanes { planes: 1, width: n, height: n, data: img.clone() };
        let slid = sliding_probabilities(&[&net], &spec, &native, Tta::Off, window, 4, &device);
        let plain = seg_probabilities(&net, &spec, &[&Planes { planes: 1, size: n, data: img }], &device);
        assert!(slid.iter().zip(&plain).all(|(a, b)| (a - b).abs() < 1e-6), "one window is the plain pass");
        // a 50 x 41 image: every pixel covered, probabilities still summing to one per pixel
        let (w, h) = (50, 41);
        let big = vismae_data::prep::NativePlanes {
            planes: 1,
            width: w,
            height: h,
            data: (0..w * h).map(|i| ((i * 13 % 29) as f32).sin()).collect(),
        };
        for gaussian in [true, false] {
            let p = sliding_probabilities(
                &[&net],
                &spec,
                &big,
                Tta::Lr,
                SlidingWindow { overlap: 0.5, gaussian },
                3,
                &device,
            );
            assert_eq!(p.len(), 3 * w * h);
            for i in 0..w * h {
                let sum: f32 = (0..3).map(|k| p[k * w * h + i]).sum();
                assert!((sum - 1.0).abs() < 1e-4, "pixel {i}: {sum}");
            }
        }
        // an image smaller than the side is padded, and its own pixels come back
        let small = vismae_data::prep::NativePlanes { planes: 1, width: 20, height: 9, data: vec![0.5; 180] };
        assert_eq!(sliding_probabilities(&[&net], &spec, &small, Tta::Off, window, 2, &device).len(), 3 * 180);
    }

    #[test]
    fn runs_that_disagree_are_named_with_what_differs() {
        let a = serde_json::json!({"size": 64, "classes": 3, "norm": "MinMax"});
        let b = serde_json::json!({"size": 96, "classes": 3, "norm": "MinMax"});
        let runs = [std::path::PathBuf::from("fold0"), std::path::PathBuf::from("fold1")];
        assert!(check_agreement(vec![a.clone(), a.clone()], &runs).is_ok());
        let e = check_agreement(vec![a, b], &runs).unwrap_err().to_string();
        assert!(e.contains("fold1: size 96 (first run: 64)") && e.contains("against fold0"), "{e}");
    }
}
