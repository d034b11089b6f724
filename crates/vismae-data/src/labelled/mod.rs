//! Labelled data for fine-tuning, from the layouts people already have: nnU-Net raw folders
//! (`dataset.json`, `imagesTr/CASE_0000.nii.gz`, `labelsTr/CASE.nii.gz`), MONAI / Decathlon datalist
//! JSON, the reference code's CSV (`image,mask` or `image,label`), class-per-folder trees, and
//! multi-label CSV (NIH ChestX-ray14: `Image Index`, `Finding Labels` split on `|`, `Patient ID`),
//! and DICOM case folders whose labels are RTSTRUCTs or SEGs ([`dicom_cases`]).
//! Every sample keeps a case id and a group id (the patient when known) for grouped splits.
//! The layouts are read in [`layouts`]; [`pairs`] reads a segmentation case's images and masks as
//! 2-D pairs.

mod dicom_cases;
mod layouts;
mod pairs;
mod similar;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use dicom_cases::{DICOM_LABELS, annotation_slices, class_voxels};
pub use layouts::reference_label;
pub use pairs::{CasePair, SegPair, read_pairs, seg_pairs};
pub use similar::{SimilarGroups, dhash, similar_groups};

use crate::error::{DataError, Reason};

/// What a sample's label is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A label map (pixel or voxel value = class index).
    Mask(PathBuf),
    /// One class index.
    Class(usize),
    /// Several class indices (multi-label).
    Labels(Vec<usize>),
    /// A DICOM RTSTRUCT or SEG on the case's series, and which ROI or segment names make which
    /// class (the DICOM cases layout).
    Annotation {
        /// The RTSTRUCT or SEG file.
        file: PathBuf,
        /// (ROI name, class index) pairs.
        rois: Vec<(String, usize)>,
    },
}

/// One labelled case.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Case id (unique in the set).
    pub id: String,
    /// Grouping id for splits: the patient when known, else the case.
    pub group: String,
    /// Image file(s); nnU-Net cases with several channels list them in channel order.
    pub images: Vec<PathBuf>,
    /// The label.
    pub target: Target,
}

/// The layout a set was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// nnU-Net raw folder.
    NnUnet,
    /// MONAI / Decathlon datalist JSON.
    Datalist,
    /// The reference code's CSV.
    Csv,
    /// Multi-label CSV (ChestX-ray14 style).
    MultiLabelCsv,
    /// One folder per class.
    ClassFolders,
    /// One folder per DICOM case (a series and its RTSTRUCT or SEG), with `dicom-labels.json`.
    DicomCases,
}

/// A labelled set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelledSet {
    /// Where it came from.
    pub layout: Layout,
    /// Class names by index (index 0 = background for segmentation).
    pub classes: Vec<String>,
    /// Whether samples carry label maps (segmentation) rather than classes.
    pub segmentation: bool,
    /// Whether classification is multi-label.
    pub multi_label: bool,
    /// Names of the image channels of each case, in order (nnU-Net's `channel_names`, e.g.
    /// `["T1", "T2"]`); one empty name for layouts with one image per case.
    pub channel_names: Vec<String>,
    /// The samples, in a stable order.
    pub samples: Vec<Sample>,
}

pub(crate) fn bad(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::new(path, Reason::BadArgument, msg)
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| DataError::new(path, Reason::Corrupt, format!("invalid JSON: {e}")))
}

pub(crate) fn is_image_file(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd"]
        .iter()
        .any(|e| name.ends_with(e))
        || !name.contains('.')
}

impl LabelledSet {
    /// Image files per case (channels).
    pub fn channels(&self) -> usize {
        self.channel_names.len().max(1)
    }

    /// The samples whose ids are in `ids`, in the set's order.
    pub fn pick(&self, ids: &[String]) -> Vec<&Sample> {
        let want: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        self.samples.iter().filter(|s| want.contains(s.id.as_str())).collect()
    }
}

/// Opens a labelled set, recognising its layout: a folder with `dataset.json` and `imagesTr/`
/// (nnU-Net), a folder of DICOM case folders with `dicom-labels.json`, a folder of class
/// sub-folders, a `.json` datalist, or a `.csv` file.
pub fn open(path: &Path) -> Result<LabelledSet, DataError> {
    if path.is_dir() {
        if path.join(DICOM_LABELS).is_file() {
            return dicom_cases::dicom_cases(path);
        }
        if path.join("imagesTr").is_dir() && path.join("dataset.json").is_file() {
            return layouts::nnunet(path);
        }
        return layouts::class_folders(path);
    }
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("json") => layouts::datalist(path),
        Some("csv") => layouts::csv(path),
        _ => Err(bad(
            path,
            "not a labelled set: expected an nnU-Net folder, a folder of class folders, a datalist .json or a .csv",
        )),
    }
}
