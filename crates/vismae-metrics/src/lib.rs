//! vismae-metrics: evaluation metrics as pure functions over label maps, with the semantics of
//! MONAI and nnU-Net stated per function. No burn dependency.

pub mod cls;
pub mod seg;
pub mod stats;

pub use cls::{Averaged, Metric, average_precision, one_vs_rest, pr_auc_trapezoid, roc_auc};
pub use seg::{ClassScores, SegAccumulator, confusion, seg_scores};
