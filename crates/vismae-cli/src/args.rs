//! Argument groups several commands share: the run flags every training command takes
//! (`--config`, `--set`, `--epochs`, `--batch-size`, `--variant`, `--seed`, `--devices`) and the
//! intensity options and size limits of `convert` and `ingest`.

use std::path::PathBuf;

use vismae_data::intensity::{Fallback, WindowArg};
use vismae_data::source::NormaliseOptions;
use vismae_run::Variant;
use vismae_run::settings::{CommonFlags, Overrides};

/// The flags of every run command; they override `--set`, which overrides `--config`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunFlags {
    /// Settings file (TOML; any subset of the keys of config.json's "settings").
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. --set lr=1e-3 --set augment=flip (repeatable; values in TOML syntax).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Model size.
    #[arg(long, value_enum)]
    pub variant: Option<Variant>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per (micro-)batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of initialisation, data order, augmentation and masks.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Training replicas (GPUs 0..N-1 with --features cuda; CPU workers sharing the cores otherwise).
    #[arg(long)]
    pub devices: Option<usize>,
}

impl RunFlags {
    /// The settings sources these flags name.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            sets: self.sets.clone(),
            flags: CommonFlags {
                variant: self.variant,
                epochs: self.epochs,
                batch_size: self.batch_size,
                seed: self.seed,
                devices: self.devices,
            },
        }
    }

    /// Whether any setting was given (to refuse them with --resume).
    pub fn any(&self) -> bool {
        self.config.is_some()
            || !self.sets.is_empty()
            || self.variant.is_some()
            || self.epochs.is_some()
            || self.batch_size.is_some()
            || self.seed.is_some()
            || self.devices.is_some()
    }
}

/// How intensities are brought to [0, 1] (`convert`, `ingest`).
#[derive(clap::Args, Debug)]
pub struct IntensityArgs {
    /// Window CENTER,WIDTH or a preset (brain, subdural, lung, mediastinum, abdomen, liver, bone); overrides the header.
    #[arg(long)]
    window: Option<WindowArg>,
    /// Which of the header's windows to use when it lists several (0 = first).
    #[arg(long, default_value_t = 0)]
    window_index: usize,
    /// Normalisation without a usable window.
    #[arg(long, value_enum, default_value = "minmax")]
    fallback: Fallback,
}

impl IntensityArgs {
    /// The resolved options.
    pub fn options(&self) -> NormaliseOptions {
        NormaliseOptions {
            window: self.window.map(|w| w.0),
            window_index: self.window_index,
            fallback: self.fallback,
            keep_rgb: false,
        }
    }
}

/// The size limits of `convert` and `ingest` on untrusted files (`vismae_data::Limits`).
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Largest image held decoded, in MiB: a volume's voxels or a raster's samples as 32-bit
    /// floats, a DICOM file's uncompressed pixel data. A file declaring more is refused unread.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub max_image_mib: u64,
    /// Largest file read whole, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    pub max_file_mib: u64,
}

impl LimitArgs {
    /// The limits, the rest at their defaults.
    pub fn limits(&self) -> vismae_data::Limits {
        vismae_data::Limits {
            max_image_bytes: self.max_image_mib.saturating_mul(1 << 20),
            max_file_bytes: self.max_file_mib.saturating_mul(1 << 20),
            ..vismae_data::Limits::default()
        }
    }
}
