//! Resolution of a pre-training request: the settings (defaults, `--config`, `--set`, flags) and
//! the dataset are turned once into the complete [`PretrainConfig`]: images selected, steps per
//! epoch, total and warm-up steps, replicas, and what the network sees. Every setting that cannot
//! work is an error here, before the run folder exists.

use std::path::{Path, PathBuf};

use vismae_data::dataset::reader::{Filter, ShardedDataset};
use vismae_run::settings::{Overrides, resolve_warmup};
use vismae_run::{Channels, Intensity, Preprocess, PretrainConfig, PretrainSettings, SCHEMA, VISMAE_VERSION};

use crate::error::{Result, TrainError};

/// Flags only `pretrain` has, applied over the settings.
#[derive(Clone, Debug, Default)]
pub struct PretrainFlags {
    /// `--method`.
    pub method: Option<vismae_run::Method>,
    /// `--modality` (repeatable).
    pub modalities: Vec<String>,
    /// `--steps`.
    pub steps: Option<usize>,
    /// `--accum-steps`.
    pub accum_steps: Option<usize>,
    /// `--checkpoint-every`.
    pub checkpoint_every: Option<usize>,
}

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct PretrainRequest {
    /// The dataset written by `vismae ingest`.
    pub data: PathBuf,
    /// Settings file, `--set` and the common flags.
    pub overrides: Overrides,
    /// `pretrain`'s own flags.
    pub flags: PretrainFlags,
}

impl PretrainRequest {
    /// The settings the request gives.
    pub fn settings(&self) -> Result<PretrainSettings> {
        let mut s: PretrainSettings = self.overrides.settings()?;
        let f = &self.flags;
        if let Some(m) = f.method {
            s.method = m;
        }
        if !f.modalities.is_empty() {
            s.modalities = f.modalities.clone();
        }
        if f.steps.is_some() {
            s.steps = f.steps;
        }
        if let Some(k) = f.accum_steps {
            s.accum_steps = k;
        }
        if let Some(k) = f.checkpoint_every {
            s.checkpoint_every = k;
        }
        s.validate()?;
        Ok(s)
    }
}

/// The dataset filter of the settings.
pub(crate) fn filter(s: &PretrainSettings) -> Filter {
    Filter { modalities: s.modalities.clone(), ..Default::default() }
}

/// Resolves `settings` against the dataset at `data`; `default_devices` is what `devices = 0`
/// (automatic) means on this build (one per CPU core, or one GPU).
pub fn resolve(settings: &PretrainSettings, data: &Path, default_devices: usize) -> Result<PretrainConfig> {
    settings.validate()?;
    let ds = ShardedDataset::open(data, &filter(settings))?;
    let info = ds.info();
    let size = info.size;
    if settings.method == vismae_run::Method::Mae && !size.is_multiple_of(16) {
        return Err(TrainError::invalid(format!(
            "dataset images are {size}px: pre-training needs a multiple of 16 (the mask unit); ingest again with --size {}",
            (size / 16).max(1) * 16
        )));
    }
    let effective_batch = settings.batch_size * settings.accum_steps;
    let steps_per_epoch = ds.len() / effective_batch;
    if steps_per_epoch == 0 {
        return Err(TrainError::invalid(format!(
            "{} image(s) selected (modalities {:?}), fewer than one effective batch of {effective_batch}",
            ds.len(),
            settings.modalities
        )));
    }
    let total_steps = settings.steps.unwrap_or(settings.epochs * steps_per_epoch);
    let length = total_steps as f64 / steps_per_epoch as f64;
    let (warmup, _) = resolve_warmup(settings.warmup_epochs, length, PretrainSettings::REFERENCE_WARMUP)?;
    let warmup_steps = ((warmup * steps_per_epoch as f64).round() as usize).min(total_steps);
    let devices = if settings.devices == 0 { default_devices.max(1) } else { settings.devices };
    let preprocess = Preprocess {
        size,
        in_chans: settings.in_chans,
        channels: if info.channels == 3 { Channels::Colour } else { Channels::Grey },
        intensity: Intensity::default(),
        norm: settings.norm.clone(),
    };
    preprocess.check(1).map_err(TrainError::invalid)?;
    Ok(PretrainConfig {
        schema: SCHEMA,
        vismae: VISMAE_VERSION.into(),
        settings: settings.clone(),
        data: std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf()),
        images: ds.len(),
        size,
        effective_batch,
        steps_per_epoch,
        total_steps,
        warmup_steps,
        devices,
        preprocess,
        data_summary: Some(vismae_run::DataSummary {
            images: ds.len(),
            modalities: ds.modality_counts(),
            sources: info.sources.clone(),
        }),
    })
}

/// The resolved run in a few lines, printed before the first step.
pub fn describe(cfg: &PretrainConfig) -> String {
    let s = &cfg.settings;
    format!(
        "pre-training {} ({}, {}) on {} images ({}px) from {}\n  effective batch {} ({} x {}) on {} replica(s); lr {:.2e} peak, warm-up {} steps, cosine to {:.1e}; {} steps ({} per epoch)\n  input: {}",
        cfg.name(),
        s.method,
        s.variant,
        cfg.images,
        cfg.size,
        cfg.data.display(),
        cfg.effective_batch,
        s.batch_size,
        s.accum_steps,
        cfg.devices,
        s.lr,
        cfg.warmup_steps,
        s.min_lr,
        cfg.total_steps,
        cfg.steps_per_epoch,
        cfg.preprocess.describe()
    )
}
