//! vismae-train: what a training run needs beyond the networks (losses, the learning-rate
//! schedule, generated phantom data, run folders) and the runs themselves, one function per run
//! kind. The CLI only parses arguments and calls these.

pub mod augment;
pub mod bench;
pub mod checkpoint;
pub mod finetune;
pub mod finetune_cls;
pub mod finetune_seg;
pub mod losses;
pub mod parallel;
pub mod phantom;
pub mod predict_cls;
pub mod predict_seg;
pub mod pretrain;
pub mod pretrain_config;
pub mod reconstruct;
pub mod run_dir;
pub mod schedule;
