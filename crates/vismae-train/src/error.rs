//! The errors of training, prediction and reconstruction runs: the data, weight, model and
//! run-folder errors they meet, plus their own (settings that cannot work, a stopped run, a torn
//! checkpoint, a failed replica). Each names the file, setting or step at fault.

use std::path::PathBuf;

use vismae_data::DataError;
use vismae_model::ModelError;
use vismae_model::weights::WeightError;
use vismae_run::RunError;

/// Why a run could not start, continue or finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading an image, a volume or a labelled set failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A weights file could not be read, written or applied.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The network could not be built or run on this input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Settings or a run folder could not be used.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Folds or label fractions could not be made.
    #[error(transparent)]
    Split(#[from] vismae_data::splits::SplitError),
    /// Settings or inputs that cannot work together, found before the work starts.
    #[error("{0}")]
    Invalid(String),
    /// The run stopped itself (a non-finite loss); the message says where and what is kept.
    #[error("{0}")]
    Stopped(String),
    /// A checkpoint could not be written or read.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A data-parallel replica failed.
    #[error("data-parallel replica {replica}: {reason}")]
    Replica {
        /// Its index.
        replica: usize,
        /// What failed.
        reason: String,
    },
    /// An output file could not be written.
    #[error("{path}: {reason}")]
    Output {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl TrainError {
    /// Settings or inputs that cannot work.
    pub fn invalid(msg: impl Into<String>) -> Self {
        TrainError::Invalid(msg.into())
    }

    /// An output file that could not be written.
    pub fn output(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        TrainError::Output { path: path.into(), reason: e.to_string() }
    }
}

/// Results of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
