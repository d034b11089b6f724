//! Errors of the workflows: those of the engines, readers, run folders and report they call, and
//! their own (inputs that do not fit together), each naming the file or case at fault.

use std::path::PathBuf;

/// Why a workflow could not finish.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// A run engine failed.
    #[error(transparent)]
    Train(#[from] vismae_train::TrainError),
    /// Reading an image, volume or labelled set failed.
    #[error(transparent)]
    Data(#[from] vismae_data::DataError),
    /// A run folder or settings could not be used.
    #[error(transparent)]
    Run(#[from] vismae_run::RunError),
    /// Folds could not be made.
    #[error(transparent)]
    Split(#[from] vismae_data::splits::SplitError),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] vismae_report::ReportError),
    /// Inputs that do not fit together.
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl WorkflowError {
    /// Inputs that do not fit together.
    pub fn invalid(msg: impl Into<String>) -> Self {
        WorkflowError::Invalid(msg.into())
    }

    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| WorkflowError::Io { path, source }
    }
}

/// Results of this crate.
pub type Result<T, E = WorkflowError> = std::result::Result<T, E>;
