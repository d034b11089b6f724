//! vismae-run: what every vismae crate agrees on, with no burn and no file readers in it.
//! - [`vocab`]: the closed sets of words (variant, task, initialisation, decoder init,
//!   augmentation, grouping, plane, fallback), as enums that serde and clap both parse, so a typo
//!   is an error that lists the choices;
//! - [`preprocess`]: what a network sees ([`Preprocess`]), stored with the weights and in every
//!   run's `config.json`;
//! - [`settings`]: the settings of each run kind, and how a TOML file, `--set key=value` and typed
//!   command-line flags merge into them;
//! - [`schema`]: the files of a run folder (`config.json` of pre-training and fine-tuning runs,
//!   `summary.json`, evaluation summaries, the weights' model card), read and written as types;
//! - [`run_dir`]: run folders that never overwrite an earlier run, and the writes every output
//!   goes through (whole or not at all);
//! - [`lock`]: one writer per dataset and run folder.

pub mod card;
pub mod error;
pub mod lock;
pub mod preprocess;
pub mod run_dir;
pub mod schema;
pub mod settings;
pub mod study;
pub mod vocab;

pub use card::{DataSummary, LICENCE_UNSTATED, ModelCard, Origin};
pub use error::RunError;
pub use lock::DirLock;
pub use preprocess::{Channels, InputNorm, Intensity, Preprocess};
pub use run_dir::RunDir;
pub use schema::{
    ClsEvaluation, ClsSummary, FinetuneConfig, PretrainConfig, RunRecord, SegEvaluation, SegSummary, TaskSettings,
};
pub use settings::{ClsSettings, PretrainSettings, SegSettings};
pub use vocab::{
    Augment, DecoderInit, Fallback, GroupBy, Init, Keep, Method, ModelKind, Plane, SegInput, Task, Tta, Variant,
};

/// The version of vismae that writes run folders and weights (recorded in each).
pub const VISMAE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The run-folder schema this version writes; folders without a number are schema 1 (vismae 0.1).
pub const SCHEMA: u32 = 2;
