//! The settings of each run kind, with the defaults of SPEC §6 and the paper, and how they are
//! given: a TOML file (`--config`), `--set key=value` overrides (TOML values; bare words are
//! strings) and typed command-line flags, merged in that order over the defaults. Unknown keys
//! and misspelt choices are errors naming them. What is derived from the settings (warm-up
//! steps, effective batch, devices, preprocessing) is computed once by each run kind's
//! resolution in vismae-train and stored in the run's `config.json`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::RunError;
use crate::preprocess::{Channels, InputNorm, Intensity};
use crate::vocab::{Augment, DecoderInit, Method, Plane, Variant};

/// Flags every run command takes (`pretrain`, `finetune seg|cls`, the study's cells).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommonFlags {
    /// `--variant`.
    pub variant: Option<Variant>,
    /// `--epochs`.
    pub epochs: Option<usize>,
    /// `--batch-size`.
    pub batch_size: Option<usize>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--devices`.
    pub devices: Option<usize>,
}

/// Settings of one run kind: defaults for every key, and the common flags applied on top.
pub trait RunSettings: DeserializeOwned + Serialize + Default {
    /// Applies the flags that were given.
    fn apply(&mut self, flags: &CommonFlags);
}

/// What the user gave for one run: a settings file, `--set` overrides and flags.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--config FILE.toml`.
    pub config: Option<PathBuf>,
    /// `--set key=value`, in order.
    pub sets: Vec<String>,
    /// Typed flags.
    pub flags: CommonFlags,
}

impl Overrides {
    /// The settings: defaults, then the file, then `--set`, then the flags.
    pub fn settings<S: RunSettings>(&self) -> Result<S, RunError> {
        let mut table = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(RunError::io(p))?;
                text.parse::<toml::Table>()
                    .map_err(|e| RunError::Corrupt { path: p.clone(), reason: format!("not TOML: {e}") })?
            }
            None => toml::Table::new(),
        };
        apply_sets(&mut table, &self.sets)?;
        let mut s = settings_from_table::<S>(table, self.config.as_deref())?;
        s.apply(&self.flags);
        Ok(s)
    }
}

/// Deserialises settings from a TOML table, naming the file (or `--set`) when a key is unknown or
/// a value does not fit.
pub fn settings_from_table<S: DeserializeOwned>(table: toml::Table, file: Option<&Path>) -> Result<S, RunError> {
    let from = file.map(|p| p.display().to_string()).unwrap_or_else(|| "--set".into());
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| RunError::settings(format!("invalid settings ({from}): {}", e.message().trim())))
}

/// Applies `key=value` overrides (values in TOML syntax; bare words are strings) to `table`.
pub fn apply_sets(table: &mut toml::Table, sets: &[String]) -> Result<(), RunError> {
    for s in sets {
        let (k, v) = s.split_once('=').ok_or_else(|| RunError::settings(format!("--set {s:?}: expected key=value")))?;
        let value = format!("v = {}", v.trim())
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("v").cloned())
            .unwrap_or_else(|| toml::Value::String(v.trim().to_string()));
        table.insert(k.trim().to_string(), value);
    }
    Ok(())
}

/// The warm-up of a run of `length` epochs: the given value, which must be shorter than the run,
/// or the reference recipe's share of the run (`reference = (warm-up, length)`, e.g. 40 of 150
/// epochs), so that a shortened run keeps the recipe's shape. Returns the epochs and whether they
/// were derived.
pub fn resolve_warmup(given: Option<f64>, length: f64, reference: (f64, f64)) -> Result<(f64, bool), RunError> {
    match given {
        Some(w) if !(w >= 0.0 && w.is_finite()) => {
            Err(RunError::settings(format!("warmup_epochs {w} must be a non-negative number")))
        }
        Some(w) if w > 0.0 && w >= length => Err(RunError::settings(format!(
            "warmup_epochs {w} is not shorter than the run ({length} epochs): the learning rate would never reach its peak; set warmup_epochs below {length}"
        ))),
        Some(w) => Ok((w, false)),
        None => Ok((length * reference.0 / reference.1, true)),
    }
}

/// Settings of `vismae pretrain`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainSettings {
    /// How the encoder learns.
    pub method: Method,
    /// Model size.
    pub variant: Variant,
    /// Encoder depths (unset: the variant's pre-training depths, 2,2,2,2; tiny 1,1,1,1).
    pub depths: Option<Vec<usize>>,
    /// Input channels of the network: 3 replicates grey (the official layout), 1 keeps it.
    pub in_chans: usize,
    /// Keep only these modalities of the dataset (empty: all): VIS-MAE-Modality vs -Generic.
    pub modalities: Vec<String>,
    /// Training length in epochs (ignored when `steps` is set).
    pub epochs: usize,
    /// Training length in optimizer steps.
    pub steps: Option<usize>,
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub accum_steps: usize,
    /// Peak learning rate. The paper states 1e-4; the official code uses 1e-3.
    pub lr: f64,
    /// Final learning rate of the cosine.
    pub min_lr: f64,
    /// Linear warm-up in epochs (fractions allowed); unset: the reference's 10 of 800 epochs, as a
    /// share of this run.
    pub warmup_epochs: Option<f64>,
    /// AdamW betas.
    pub betas: (f64, f64),
    /// AdamW epsilon.
    pub eps: f64,
    /// Decoupled weight decay, on every parameter as the reference does.
    pub weight_decay: f64,
    /// Fraction of 16x16-px units masked.
    pub mask_ratio: f64,
    /// Normalised-pixel loss target.
    pub norm_pix_loss: bool,
    /// Highest stochastic-depth rate.
    pub drop_path: f64,
    /// SimCLR: the NT-Xent temperature (0.1, the best of SimCLR v1's Table 5 for l2-normalised
    /// projections and the value SimCLR v2 trains with).
    pub temperature: f64,
    /// SimCLR: Linear layers of the projection head (2 as SimCLR v1, 3 as v2).
    pub projection_layers: usize,
    /// SimCLR: width of the projections (128 in SimCLR).
    pub projection_dim: usize,
    /// SimCLR: the smallest random crop, as a share of the image's area (SimCLR: 0.08).
    pub crop_min: f64,
    /// Input normalisation.
    pub norm: InputNorm,
    /// Random horizontal flips.
    pub hflip: bool,
    /// Seed of initialisation, data order, flips, masks and stochastic depth.
    pub seed: u64,
    /// Data-loading threads.
    pub workers: usize,
    /// Data-parallel replicas: each micro-batch is split across them and their gradients are
    /// summed into one step of one model. 0 = automatic: one per CPU core on the CPU build, one
    /// GPU on the CUDA build.
    pub devices: usize,
    /// Write a checkpoint every N optimizer steps (and at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Write a reconstruction grid every N epochs (and at the end); 0 = only at the end.
    pub reconstruct_every: usize,
    /// Images in the reconstruction grid.
    pub reconstruct_images: usize,
    /// The terms the weights come with, for their model card (unset: those of the images).
    pub licence: Option<String>,
}

impl Default for PretrainSettings {
    fn default() -> Self {
        Self {
            method: Method::Mae,
            variant: Variant::VisMae,
            depths: None,
            in_chans: 3,
            modalities: Vec::new(),
            epochs: 800,
            steps: None,
            batch_size: 64,
            accum_steps: 1,
            lr: 1e-4,
            min_lr: 0.0,
            warmup_epochs: None,
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.05,
            mask_ratio: 0.75,
            norm_pix_loss: false,
            drop_path: 0.1,
            temperature: 0.1,
            projection_layers: 2,
            projection_dim: 128,
            crop_min: 0.2,
            norm: InputNorm::REFERENCE_MEAN_STD,
            hflip: true,
            seed: 0,
            workers: 2,
            devices: 0,
            checkpoint_every: 500,
            keep_checkpoints: 3,
            reconstruct_every: 50,
            reconstruct_images: 8,
            licence: None,
        }
    }
}

impl RunSettings for PretrainSettings {
    fn apply(&mut self, f: &CommonFlags) {
        if let Some(v) = f.variant {
            self.variant = v;
        }
        if let Some(v) = f.epochs {
            self.epochs = v;
        }
        if let Some(v) = f.batch_size {
            self.batch_size = v;
        }
        if let Some(v) = f.seed {
            self.seed = v;
        }
        if let Some(v) = f.devices {
            self.devices = v;
        }
    }
}

impl PretrainSettings {
    /// The reference recipe's warm-up share: 10 of 800 epochs.
    pub const REFERENCE_WARMUP: (f64, f64) = (10.0, 800.0);

    /// Checks values that have no meaning (before any work starts).
    pub fn validate(&self) -> Result<(), RunError> {
        let bad = |m: String| Err(RunError::settings(m));
        if self.batch_size == 0 || self.accum_steps == 0 {
            return bad("batch_size and accum_steps must be at least 1".into());
        }
        if !(self.in_chans == 1 || self.in_chans == 3) {
            return bad(format!("in_chans {} must be 1 or 3", self.in_chans));
        }
        if !(0.0..1.0).contains(&self.mask_ratio) {
            return bad(format!("mask_ratio {} must be in [0, 1)", self.mask_ratio));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr {} must be positive", self.lr));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature {} must be positive", self.temperature));
        }
        if !(self.crop_min > 0.0 && self.crop_min <= 1.0) {
            return bad(format!("crop_min {} must be in (0, 1]", self.crop_min));
        }
        if !(2..=3).contains(&self.projection_layers) || self.projection_dim == 0 {
            return bad(format!(
                "projection_layers {} must be 2 or 3 and projection_dim positive",
                self.projection_layers
            ));
        }
        if let Some(d) = &self.depths
            && (d.len() != 4 || d.contains(&0))
        {
            return bad(format!("depths {d:?}: four stages of at least one block each"));
        }
        if self.steps == Some(0) || (self.steps.is_none() && self.epochs == 0) {
            return bad("the run has no steps: give epochs or steps of at least 1".into());
        }
        Ok(())
    }
}

/// Settings shared by both fine-tuning tasks (flattened into theirs).
macro_rules! finetune_common_apply {
    ($t:ty) => {
        impl RunSettings for $t {
            fn apply(&mut self, f: &CommonFlags) {
                if let Some(v) = f.variant {
                    self.variant = v;
                }
                if let Some(v) = f.epochs {
                    self.epochs = v;
                }
                if let Some(v) = f.batch_size {
                    self.batch_size = v;
                }
                if let Some(v) = f.seed {
                    self.seed = v;
                }
                if let Some(v) = f.devices {
                    self.devices = v;
                }
            }
        }
    };
}

/// Settings of `vismae finetune seg`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegSettings {
    /// Model size.
    pub variant: Variant,
    /// Network input side (a multiple of 4; the paper's recipe uses 320).
    pub size: usize,
    /// Input channels; unset: 3 for grey images (the official layout), the number of image files
    /// per case for stacked channels.
    pub in_chans: Option<usize>,
    /// How a case's images become planes; unset: `stack` when cases have several image files
    /// (nnU-Net channels), else `grey`.
    pub channels: Option<Channels>,
    /// How stored values become intensities; unset: stored values (the reference).
    pub intensity: Option<Intensity>,
    /// Input normalisation after augmentation; unset: what the initial weights' card asks for
    /// (ImageNet statistics for supervised Swin weights), else per-image min-max (the reference).
    pub norm: Option<InputNorm>,
    /// LayerNorm epsilon; unset: the initial weights' (1e-5 for Swin-T imports), else 1e-6.
    pub layer_norm_eps: Option<f64>,
    /// Epochs (paper: 150).
    pub epochs: usize,
    /// Warm-up epochs; unset: the paper's 40 of 150 epochs, as a share of this run.
    pub warmup_epochs: Option<f64>,
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
    /// Learning-rate multiplier of the encoder, the pre-trained part (MAE/SimMIM fine-tuning
    /// often trains it slower than the new head or decoder).
    pub encoder_lr_scale: f64,
    /// Layer-wise learning-rate decay of the encoder: block `l` of `L` learns at
    /// `layer_decay^(L + 1 - l)` (1: none; BEiT/MAE/SimMIM use 0.65-0.9).
    pub layer_decay: f64,
    /// Leave the encoder as initialised and train only the decoder or head (for classification,
    /// a linear probe).
    pub freeze_encoder: bool,
    /// Weight of the Dice loss (paper 0.4; the official code 0.6).
    pub dice_weight: f64,
    /// Weight of the cross-entropy (paper 0.6; the official code 0.4).
    pub ce_weight: f64,
    /// Augmentation: `reference` (the official pipeline), `flip` (rot90 + flip) or `none`.
    pub augment: Augment,
    /// Slicing plane of volumes.
    pub plane: Plane,
    /// `resize` (each image to the input side and back) or `patch` (native resolution: random
    /// patches in training, a sliding window in validation and prediction).
    pub input: crate::vocab::SegInput,
    /// Patch mode: the share of training patches centred on a random foreground pixel (nnU-Net
    /// 0.33); the others are placed uniformly.
    pub foreground_oversample: f64,
    /// Patch mode: how much neighbouring windows overlap, as a share of the side (nnU-Net 0.5).
    pub overlap: f64,
    /// Patch mode: weigh each window's probabilities by a Gaussian centred on it (sigma 1/8 of
    /// the side, as nnU-Net) rather than evenly.
    pub gaussian: bool,
    /// Seed.
    pub seed: u64,
    /// How the decoder starts from MAE weights.
    pub decoder_init: DecoderInit,
    /// Which epoch's weights the run keeps: the best by validation, or the last.
    pub keep: crate::vocab::Keep,
    /// Validate every this many epochs (and after the last); with `keep = "last"` a larger
    /// value saves the validation passes in between.
    pub validate_every: usize,
    /// Training replicas (fine-tuning trains on one for now).
    pub devices: usize,
    /// Write a checkpoint every this many epochs.
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
}

impl Default for SegSettings {
    fn default() -> Self {
        Self {
            variant: Variant::VisMae,
            size: 224,
            in_chans: None,
            channels: None,
            intensity: None,
            norm: None,
            layer_norm_eps: None,
            epochs: 150,
            warmup_epochs: None,
            batch_size: 8,
            lr: 1e-3,
            min_lr: 0.0,
            betas: (0.9, 0.95),
            weight_decay: 0.05,
            encoder_lr_scale: 1.0,
            layer_decay: 1.0,
            freeze_encoder: false,
            dice_weight: 0.4,
            ce_weight: 0.6,
            augment: Augment::Reference,
            plane: Plane::Axial,
            input: crate::vocab::SegInput::Resize,
            foreground_oversample: 1.0 / 3.0,
            overlap: 0.5,
            gaussian: true,
            seed: 0,
            decoder_init: DecoderInit::Mae,
            keep: crate::vocab::Keep::Best,
            validate_every: 1,
            devices: 1,
            checkpoint_every: 1,
            keep_checkpoints: 2,
        }
    }
}
finetune_common_apply!(SegSettings);

impl SegSettings {
    /// The paper's segmentation warm-up share: 40 of 150 epochs.
    pub const REFERENCE_WARMUP: (f64, f64) = (40.0, 150.0);
}

/// Settings of `vismae finetune cls`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClsSettings {
    /// Model size.
    pub variant: Variant,
    /// Input side (224 in the reference, which has no padding; vismae pads other sizes).
    pub size: usize,
    /// Input channels; unset: 3 for grey images, the files per case for stacked channels.
    pub in_chans: Option<usize>,
    /// How a case's images become planes; unset: `stack` for several files per case, else `grey`.
    pub channels: Option<Channels>,
    /// How stored values become intensities; unset: `[0, 1]` by the format's rules (the
    /// reference's `ToTensor()`).
    pub intensity: Option<Intensity>,
    /// Input normalisation after augmentation; unset: what the initial weights' card asks for
    /// (ImageNet statistics for supervised Swin weights), else none (the reference).
    pub norm: Option<InputNorm>,
    /// LayerNorm epsilon; unset: the initial weights' (1e-5 for Swin-T imports), else 1e-6.
    pub layer_norm_eps: Option<f64>,
    /// Epochs (paper: 50).
    pub epochs: usize,
    /// Warm-up epochs; unset: the paper's 10 of 50 epochs, as a share of this run.
    pub warmup_epochs: Option<f64>,
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
    /// Learning-rate multiplier of the encoder, the pre-trained part (MAE/SimMIM fine-tuning
    /// often trains it slower than the new head or decoder).
    pub encoder_lr_scale: f64,
    /// Layer-wise learning-rate decay of the encoder: block `l` of `L` learns at
    /// `layer_decay^(L + 1 - l)` (1: none; BEiT/MAE/SimMIM use 0.65-0.9).
    pub layer_decay: f64,
    /// Leave the encoder as initialised and train only the decoder or head (for classification,
    /// a linear probe).
    pub freeze_encoder: bool,
    /// Weigh classes by `n / (classes * n_c)` (sklearn's "balanced").
    pub balanced: bool,
    /// Augmentation: `reference` (the official `--transform` pipeline), `flip` or `none`.
    pub augment: Augment,
    /// Seed.
    pub seed: u64,
    /// Which epoch's weights the run keeps: the best by validation, or the last.
    pub keep: crate::vocab::Keep,
    /// Validate every this many epochs (and after the last); with `keep = "last"` a larger
    /// value saves the validation passes in between.
    pub validate_every: usize,
    /// Training replicas (fine-tuning trains on one for now).
    pub devices: usize,
    /// Write a checkpoint every this many epochs.
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
}

impl Default for ClsSettings {
    fn default() -> Self {
        Self {
            variant: Variant::VisMae,
            size: 224,
            in_chans: None,
            channels: None,
            intensity: None,
            norm: None,
            layer_norm_eps: None,
            epochs: 50,
            warmup_epochs: None,
            batch_size: 16,
            lr: 1e-3,
            min_lr: 0.0,
            betas: (0.9, 0.95),
            weight_decay: 0.05,
            encoder_lr_scale: 1.0,
            layer_decay: 1.0,
            freeze_encoder: false,
            balanced: false,
            augment: Augment::Reference,
            seed: 0,
            keep: crate::vocab::Keep::Best,
            validate_every: 1,
            devices: 1,
            checkpoint_every: 1,
            keep_checkpoints: 2,
        }
    }
}
finetune_common_apply!(ClsSettings);

impl ClsSettings {
    /// The paper's classification warm-up share: 10 of 50 epochs.
    pub const REFERENCE_WARMUP: (f64, f64) = (10.0, 50.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_sets_then_flags() {
        let dir = std::env::temp_dir().join(format!("vismae-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s.toml");
        std::fs::write(&file, "epochs = 20\nlr = 5e-4\nvariant = \"small\"\n").unwrap();
        let o = Overrides {
            config: Some(file.clone()),
            sets: vec!["lr=2e-4".into(), "augment=flip".into()],
            flags: CommonFlags { epochs: Some(7), ..Default::default() },
        };
        let s: SegSettings = o.settings().unwrap();
        assert_eq!((s.epochs, s.lr, s.variant, s.augment), (7, 2e-4, Variant::Small, Augment::Flip));
        // unknown keys and misspelt choices name themselves
        let typo = Overrides { sets: vec!["variant=\"tniy\"".into()], ..Default::default() };
        let e = typo.settings::<SegSettings>().unwrap_err().to_string();
        assert!(e.contains("tniy") || e.contains("unknown variant"), "{e}");
        let unknown = Overrides { sets: vec!["epoch=3".into()], ..Default::default() };
        let e = unknown.settings::<ClsSettings>().unwrap_err().to_string();
        assert!(e.contains("epoch"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn warmup_scales_with_the_run_and_must_be_shorter() {
        assert_eq!(resolve_warmup(None, 150.0, SegSettings::REFERENCE_WARMUP).unwrap(), (40.0, true));
        let (w, derived) = resolve_warmup(None, 10.0, SegSettings::REFERENCE_WARMUP).unwrap();
        assert!(derived && (w - 10.0 * 40.0 / 150.0).abs() < 1e-12);
        assert_eq!(resolve_warmup(Some(1.0), 10.0, SegSettings::REFERENCE_WARMUP).unwrap(), (1.0, false));
        let e = resolve_warmup(Some(40.0), 10.0, SegSettings::REFERENCE_WARMUP).unwrap_err().to_string();
        assert!(e.contains("not shorter than the run"), "{e}");
        assert!(resolve_warmup(Some(0.0), 0.5, SegSettings::REFERENCE_WARMUP).is_ok());
    }
}
