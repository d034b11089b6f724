//! Errors of settings and run folders, each naming the file or the setting at fault.

use std::path::PathBuf;

/// Why settings could not be resolved or a run folder could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The folder already holds files.
    #[error("{0} already exists and is not empty: choose another --out (vismae never overwrites an earlier run)")]
    Occupied(PathBuf),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not what its place in a run folder says it is.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A run folder written by a newer vismae than this one.
    #[error(
        "{path} was written by vismae {writer} (run-folder schema {found}); this vismae ({ours}) reads schemas up to {supported}: upgrade vismae"
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// The version that wrote it.
        writer: String,
        /// Its schema.
        found: u32,
        /// The newest schema this version reads.
        supported: u32,
        /// This version.
        ours: &'static str,
    },
    /// Settings that cannot be used, found before any work starts.
    #[error("{0}")]
    Settings(String),
    /// Another process is writing the folder (it holds the folder's `.lock`).
    #[error("{} is in use by another vismae process ({}): wait for it to finish or stop it; a killed process leaves no lock behind", path.display(), pid.map_or("pid unknown".to_string(), |p| format!("pid {p}")))]
    Locked {
        /// The folder.
        path: PathBuf,
        /// The process holding it, as its lock file says.
        pid: Option<u32>,
    },
}

impl RunError {
    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RunError {
        let path = path.into();
        move |source| RunError::Io { path, source }
    }

    /// A settings error.
    pub fn settings(msg: impl Into<String>) -> RunError {
        RunError::Settings(msg.into())
    }
}
