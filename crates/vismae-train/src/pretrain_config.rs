//! Settings of `vismae pretrain`: defaults from SPEC §6 and the paper, a TOML file and
//! `--set key=value` overrides on top, resolved once into the numbers the run uses (effective
//! batch, steps per epoch, warm-up steps) and saved in `RUN/config.json` before the first step.

use serde::{Deserialize, Serialize};

/// How images are normalised before the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputNorm {
    /// `(x - mean) / std` with scalar statistics (the reference: 0.223 / 0.202, RadImageNet's).
    MeanStd {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Per-image min-max to [0, 1].
    MinMax,
}

/// User-facing settings; every field has a default, so a TOML file may set any subset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainSettings {
    /// Model size: tiny, small or vis-mae.
    pub variant: String,
    /// Input channels of the network: 3 replicates grey (the official layout), 1 keeps it.
    pub in_chans: usize,
    /// Keep only these modalities of the dataset (empty: all) — VIS-MAE-Modality vs -Generic.
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
    /// Linear warm-up, in epochs (fractional allowed).
    pub warmup_epochs: f64,
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
    /// Input normalisation.
    pub norm: InputNorm,
    /// Random horizontal flips.
    pub hflip: bool,
    /// Seed of initialisation, data order, flips, masks and stochastic depth.
    pub seed: u64,
    /// Data-loading threads.
    pub workers: usize,
    /// Data-parallel replicas: each micro-batch is split across them and their gradients are
    /// summed into one step of one model (several GPUs, or several CPU workers sharing the cores).
    /// 0 = automatic: one per CPU core on the CPU build, one GPU on the CUDA build.
    pub devices: usize,
    /// Write a checkpoint every N optimizer steps (and at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Write a reconstruction grid every N epochs (and at the end); 0 = only at the end.
    pub reconstruct_every: usize,
    /// Images in the reconstruction grid.
    pub reconstruct_images: usize,
}

impl Default for PretrainSettings {
    fn default() -> Self {
        Self {
            variant: "vis-mae".into(),
            in_chans: 3,
            modalities: Vec::new(),
            epochs: 800,
            steps: None,
            batch_size: 64,
            accum_steps: 1,
            lr: 1e-4,
            min_lr: 0.0,
            warmup_epochs: 10.0,
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.05,
            mask_ratio: 0.75,
            norm_pix_loss: false,
            drop_path: 0.1,
            norm: InputNorm::MeanStd { mean: 0.223, std: 0.202 },
            hflip: true,
            seed: 0,
            workers: 2,
            devices: 0,
            checkpoint_every: 500,
            keep_checkpoints: 3,
            reconstruct_every: 50,
            reconstruct_images: 8,
        }
    }
}

impl PretrainSettings {
    /// Settings from an optional TOML file, then `key=value` overrides (values in TOML syntax;
    /// bare words are strings).
    pub fn load(file: Option<&std::path::Path>, sets: &[String]) -> Result<Self, String> {
        let mut table = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                text.parse::<toml::Table>().map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => toml::Table::new(),
        };
        apply_sets(&mut table, sets)?;
        let settings: PretrainSettings =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| format!("invalid settings: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        if vismae_model::Variant::from_name(&self.variant).is_none() {
            return Err(format!("unknown variant {:?}: use tiny, small or vis-mae", self.variant));
        }
        if self.batch_size == 0 || self.accum_steps == 0 {
            return Err("batch_size and accum_steps must be at least 1".into());
        }
        if !(self.in_chans == 1 || self.in_chans == 3) {
            return Err(format!("in_chans {} must be 1 or 3", self.in_chans));
        }
        if !(0.0..1.0).contains(&self.mask_ratio) {
            return Err(format!("mask_ratio {} must be in [0, 1)", self.mask_ratio));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr {} must be positive", self.lr));
        }
        Ok(())
    }
}

/// Applies `key=value` overrides (values in TOML syntax; bare words are strings) to `table`.
pub fn apply_sets(table: &mut toml::Table, sets: &[String]) -> Result<(), String> {
    for s in sets {
        let (k, v) = s.split_once('=').ok_or_else(|| format!("--set {s:?}: expected key=value"))?;
        let value = format!("v = {}", v.trim())
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("v").cloned())
            .unwrap_or_else(|| toml::Value::String(v.trim().to_string()));
        table.insert(k.trim().to_string(), value);
    }
    Ok(())
}

/// Everything the run uses, derived once from the settings and the dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedPretrain {
    /// The settings as given.
    pub settings: PretrainSettings,
    /// The dataset folder.
    pub data: std::path::PathBuf,
    /// Images selected from it.
    pub images: usize,
    /// Image side.
    pub size: usize,
    /// `batch_size * accum_steps`.
    pub effective_batch: usize,
    /// Optimizer steps per epoch (incomplete micro-batches dropped).
    pub steps_per_epoch: usize,
    /// Optimizer steps in the run.
    pub total_steps: usize,
    /// Warm-up in optimizer steps.
    pub warmup_steps: usize,
}
