//! Errors of report building, each naming the file or folder at fault.

use std::path::PathBuf;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A run folder could not be read.
    #[error(transparent)]
    Run(#[from] vismae_run::RunError),
    /// The report folder already holds files.
    #[error("{0} already exists and is not empty (vismae never overwrites an earlier report)")]
    Occupied(PathBuf),
    /// Nothing to report.
    #[error("no runs given")]
    NoRuns,
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl ReportError {
    /// A failure at `path`.
    pub fn at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ReportError {
        let path = path.into();
        move |e| ReportError::Io { path, reason: e.to_string() }
    }
}
