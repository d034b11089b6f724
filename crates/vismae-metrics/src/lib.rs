//! vismae-metrics: evaluation metrics as pure functions over label maps, with the semantics of
//! MONAI and nnU-Net stated per function. No burn dependency.

pub mod seg;

pub use seg::{ClassScores, SegAccumulator, confusion, seg_scores};
