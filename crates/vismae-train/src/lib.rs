//! vismae-train: the runs, one module per run kind, each resolved once from a typed request into
//! the config its run folder keeps (`vismae_run`'s schema), then run by an engine that writes that
//! folder: [`pretrain`] (MAE pre-training), [`finetune`] (segmentation and classification, one
//! shared epoch loop), [`predict`] and [`reconstruct`]. Beside them what runs need: the network
//! input ([`input`]), the inference validation and prediction share ([`infer`]), losses, the
//! learning-rate schedule, augmentation, checkpoints, data-parallel replicas, phantoms and
//! benchmarks. The CLI only parses arguments and calls these.

pub mod augment;
pub mod bench;
pub mod checkpoint;
pub mod cluster;
pub mod error;
pub mod finetune;
pub mod infer;
pub mod input;
pub mod losses;
pub mod parallel;
pub mod phantom;
pub mod predict;
pub mod pretrain;
pub mod reconstruct;
pub mod schedule;
pub mod seeds;
pub mod views;

pub use error::{Result, TrainError};
