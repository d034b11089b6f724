//! Errors of data reading: every one names the file and the problem, with a reason category used
//! to count skipped files in ingest reports.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a file could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Reading the file failed (permissions, I/O).
    Io,
    /// The file is empty.
    Empty,
    /// No reader recognises the content.
    UnknownFormat,
    /// Recognised, but damaged or truncated.
    Corrupt,
    /// Recognised, but uses an encoding vismae cannot decode (e.g. JPEG-LS).
    Unsupported,
    /// A DICOM object without pixel data.
    NoPixelData,
    /// A DICOM object that is not an image of a patient (dose grid, structure set, plan,
    /// segmentation, report, presentation state, encapsulated document, ...): its SOP class says so.
    NotAnImage,
    /// An image whose modality nothing states (skipped only when a modality is required).
    UnknownModality,
    /// A request the file cannot satisfy (frame out of range, wrong geometry).
    BadArgument,
    /// An identical image was already ingested.
    Duplicate,
    /// A declared length or size over a [`crate::limits::Limits`] cap: refused before anything is
    /// allocated for it.
    TooLarge,
    /// A dataset another process is writing (its lock is held).
    InUse,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Io => "unreadable",
            Reason::Empty => "empty file",
            Reason::UnknownFormat => "unknown format",
            Reason::Corrupt => "corrupt or truncated",
            Reason::Unsupported => "unsupported encoding",
            Reason::NoPixelData => "no pixel data",
            Reason::NotAnImage => "not an image object",
            Reason::UnknownModality => "modality not stated",
            Reason::BadArgument => "bad request",
            Reason::Duplicate => "duplicate image",
            Reason::TooLarge => "over a size limit",
            Reason::InUse => "in use by another process",
        })
    }
}

/// A data error naming the file.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct DataError {
    /// The file.
    pub path: PathBuf,
    /// Category.
    pub reason: Reason,
    /// What went wrong.
    pub message: String,
}

impl DataError {
    /// A new error.
    pub fn new(path: &Path, reason: Reason, message: impl Into<String>) -> Self {
        Self { path: path.into(), reason, message: message.into() }
    }
}
