//! The sharded training set written by `vismae ingest` and read by training:
//!
//! ```text
//! DATASET/dataset.json               size, channels, shard capacity, format version
//! DATASET/shards/NNNNNN.u8           fixed-size records: size*size bytes each, row-major grey
//! DATASET/shards/NNNNNN.jsonl        one ImageRecord per record, in slot order (written last)
//! DATASET/skipped.jsonl              every file or image that was not ingested, with the reason
//! DATASET/ingest_report.json         counts of the last ingest run
//! DATASET/.lock                      held by the ingest writing the dataset (its pid)
//! ```
//! A shard counts once both files exist under their final names; its manifest is renamed into
//! place after its data, so a killed ingest leaves only temporary files, which the next run
//! removes before it resumes.

pub mod ingest;
pub mod reader;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Reason};
use crate::intensity::Normalisation;
use crate::source::Format;
use crate::volume::Plane;

/// Version of the on-disk layout.
pub const FORMAT_VERSION: u32 = 1;

/// `dataset.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Layout version.
    pub version: u32,
    /// Image side in pixels.
    pub size: usize,
    /// Channels per image (1).
    pub channels: usize,
    /// Records per full shard.
    pub shard_capacity: usize,
    /// What was ingested, over all ingest runs: each input folder, or the folder of each input
    /// file (absolute paths; absent in datasets written before vismae 0.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl DatasetInfo {
    /// Bytes per record.
    pub fn record_bytes(&self) -> usize {
        self.size * self.size * self.channels
    }
}

/// One image of the dataset and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Shard number.
    pub shard: usize,
    /// Record within the shard.
    pub slot: usize,
    /// Source file.
    pub source: PathBuf,
    /// Its format.
    pub format: Format,
    /// Frame (DICOM) or slice (volume) index.
    pub frame: usize,
    /// Slicing plane of volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plane: Option<Plane>,
    /// Time point of 4-D volumes.
    #[serde(default)]
    pub t: usize,
    /// Modality: CT, MR, PET, NM, XR, US, OT, another valid DICOM value, or `unknown`.
    pub modality: String,
    /// How the modality was decided (absent in datasets written before vismae 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality_source: Option<crate::modality::ModalitySource>,
    /// Patient ID when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// Study Instance UID when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_uid: Option<String>,
    /// Series Instance UID when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_uid: Option<String>,
    /// How intensities were brought to [0, 1].
    pub normalisation: Normalisation,
    /// Width and height before resizing.
    pub original_size: (usize, usize),
    /// Pixel spacing (rows, columns) in mm, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing: Option<(f64, f64)>,
    /// BLAKE3 of the stored pixels (hex, first 16 bytes), for de-duplication.
    pub hash: String,
}

impl ImageRecord {
    /// The key that identifies the image's origin (file, frame, plane, time point).
    pub fn origin_key(&self) -> String {
        origin_key(&self.source, self.frame, self.plane, self.t)
    }
}

/// Key of an image's origin.
pub fn origin_key(source: &Path, frame: usize, plane: Option<Plane>, t: usize) -> String {
    format!("{}#{frame}#{plane:?}#{t}", source.display())
}

/// A file or image that was not ingested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Category.
    pub reason: Reason,
    /// What went wrong.
    pub message: String,
}

/// Paths of shard `n`'s data and manifest.
pub fn shard_paths(root: &Path, n: usize) -> (PathBuf, PathBuf) {
    let dir = root.join("shards");
    (dir.join(format!("{n:06}.u8")), dir.join(format!("{n:06}.jsonl")))
}

/// Reads `dataset.json`.
pub fn read_info(root: &Path) -> Result<DatasetInfo, DataError> {
    let path = root.join("dataset.json");
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::new(&path, Reason::Io, e.to_string()))?;
    let info: DatasetInfo = serde_json::from_str(&text)
        .map_err(|e| DataError::new(&path, Reason::Corrupt, format!("invalid dataset.json: {e}")))?;
    if info.version != FORMAT_VERSION {
        return Err(DataError::new(
            &path,
            Reason::Unsupported,
            format!("dataset layout version {} (this vismae reads {FORMAT_VERSION})", info.version),
        ));
    }
    Ok(info)
}

/// The committed shards of a dataset, in order, with their records. A shard whose data size
/// disagrees with its manifest is an error naming it.
pub fn read_manifests(root: &Path, info: &DatasetInfo) -> Result<Vec<Vec<ImageRecord>>, DataError> {
    let mut shards = Vec::new();
    loop {
        let (data, manifest) = shard_paths(root, shards.len());
        if !manifest.exists() {
            break;
        }
        let text =
            std::fs::read_to_string(&manifest).map_err(|e| DataError::new(&manifest, Reason::Io, e.to_string()))?;
        let records = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str::<ImageRecord>(l)
                    .map_err(|e| DataError::new(&manifest, Reason::Corrupt, format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let len =
            std::fs::metadata(&data).map_err(|e| DataError::new(&data, Reason::Io, e.to_string()))?.len() as usize;
        if len != records.len() * info.record_bytes() {
            return Err(DataError::new(
                &data,
                Reason::Corrupt,
                format!(
                    "holds {len} bytes but its manifest lists {} records of {} bytes",
                    records.len(),
                    info.record_bytes()
                ),
            ));
        }
        shards.push(records);
    }
    Ok(shards)
}
