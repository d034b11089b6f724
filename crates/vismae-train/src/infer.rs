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
    fn runs_that_disagree_are_named_with_what_differs() {
        let a = serde_json::json!({"size": 64, "classes": 3, "norm": "MinMax"});
        let b = serde_json::json!({"size": 96, "classes": 3, "norm": "MinMax"});
        let runs = [std::path::PathBuf::from("fold0"), std::path::PathBuf::from("fold1")];
        assert!(check_agreement(vec![a.clone(), a.clone()], &runs).is_ok());
        let e = check_agreement(vec![a, b], &runs).unwrap_err().to_string();
        assert!(e.contains("fold1: size 96 (first run: 64)") && e.contains("against fold0"), "{e}");
    }
}
