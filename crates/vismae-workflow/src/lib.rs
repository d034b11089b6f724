//! vismae-workflow: what vismae does in several steps on top of the run engines of vismae-train:
//! [`evaluate`] (metrics of prediction files), [`split`] (grouped folds with nested fractions),
//! [`predict`] (a fine-tuned run over files or a labelled set's cases), the [`study`] (the paper's
//! evaluation protocol as one resumable command), and the [`demo`] with its [`sample`] sets. The
//! CLI parses arguments, calls these, and prints what they return.

pub mod demo;
pub mod error;
pub mod evaluate;
pub mod predict;
pub mod sample;
pub mod split;
pub mod study;

pub use error::{Result, WorkflowError};
