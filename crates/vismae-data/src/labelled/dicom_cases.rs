//! The DICOM labelled layout: one folder per case under a root that holds `dicom-labels.json`;
//! each case folder holds an image series and one RTSTRUCT or SEG drawn on it. The JSON names
//! the classes (nnU-Net's `labels`) and which ROI or segment names make each class:
//!
//! ```json
//! { "labels": { "background": 0, "tumour": 1, "lung": 2 },
//!   "rois": { "GTV-1": "tumour", "Lung_L": "lung", "Lung_R": "lung" } }
//! ```
//!
//! Names match case-insensitively; without `rois`, an ROI counts for the class of its own name.
//! ROIs named nowhere are left out (background). Where two ROIs of a case overlap, the one later
//! in the file wins. A case's group (for grouped splits) is the annotation's Patient ID.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{LabelledSet, Layout, Sample, Target, bad, read_json};
use crate::annotations::{AnnotationKind, read_labels};
use crate::error::{DataError, Reason};
use crate::raster::Raster;

/// The file that marks a folder as a set of DICOM cases.
pub const DICOM_LABELS: &str = "dicom-labels.json";

/// The annotation files among `files` (by the SOP class their file meta names).
fn annotations_among(files: &[PathBuf]) -> Vec<PathBuf> {
    files.iter().filter(|f| AnnotationKind::sniff_file(f).is_some()).cloned().collect()
}

pub(crate) fn dicom_cases(root: &Path) -> Result<LabelledSet, DataError> {
    let meta_path = root.join(DICOM_LABELS);
    let meta = read_json(&meta_path)?;
    let mut classes: Vec<(i64, String)> = match meta["labels"].as_object() {
        Some(m) => m.iter().filter_map(|(name, v)| v.as_i64().map(|i| (i, name.clone()))).collect(),
        None => return Err(bad(&meta_path, "no \"labels\" mapping (class name -> index, 0 = background)")),
    };
    classes.sort();
    if classes.len() < 2 || classes.iter().enumerate().any(|(i, (v, _))| *v != i as i64) {
        return Err(bad(
            &meta_path,
            format!("labels must be 0..{} without gaps, background 0", classes.len().max(2) - 1),
        ));
    }
    let class_of = |name: &str| classes.iter().position(|(_, c)| c.eq_ignore_ascii_case(name));
    let mut rois: Vec<(String, usize)> = Vec::new();
    match meta.get("rois") {
        Some(serde_json::Value::Object(m)) => {
            for (roi, class) in m {
                let c = class.as_str().and_then(class_of).filter(|&c| c > 0).ok_or_else(|| {
                    bad(
                        &meta_path,
                        format!("rois: {roi:?} maps to {class}, which is not a foreground class of \"labels\""),
                    )
                })?;
                rois.push((roi.clone(), c));
            }
        }
        Some(other) => return Err(bad(&meta_path, format!("\"rois\" must map ROI names to class names, not {other}"))),
        None => rois.extend(classes.iter().enumerate().skip(1).map(|(k, (_, name))| (name.clone(), k))),
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| DataError::new(root, Reason::Io, e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    dirs.sort();
    let mut samples = Vec::new();
    for dir in dirs {
        let files = crate::dataset::ingest::walk(std::slice::from_ref(&dir))?;
        let found = annotations_among(&files);
        let file = match found.as_slice() {
            [one] => one.clone(),
            [] => return Err(bad(&dir, "this case folder holds no RTSTRUCT or SEG file")),
            many => {
                return Err(bad(
                    &dir,
                    format!(
                        "this case folder holds {} annotation files ({}); keep one per case",
                        many.len(),
                        many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        };
        let id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let group = crate::annotations::patient_id(&file).unwrap_or_else(|| id.clone());
        samples.push(Sample {
            id,
            group,
            images: vec![dir.clone()],
            target: Target::Annotation { file, rois: rois.clone() },
        });
    }
    if samples.is_empty() {
        return Err(bad(root, "no case folders beside dicom-labels.json"));
    }
    Ok(LabelledSet {
        layout: Layout::DicomCases,
        classes: classes.into_iter().map(|c| c.1).collect(),
        segmentation: true,
        multi_label: false,
        channel_names: vec![String::new()],
        samples,
    })
}

/// A DICOM case's annotation as class-index slices (displayed, top row first) in the series'
/// slice order, with the series' slice files.
pub fn annotation_slices(
    case_dir: &Path,
    file: &Path,
    rois: &[(String, usize)],
) -> Result<(Vec<Raster>, Vec<PathBuf>), DataError> {
    let map = read_labels(file, Some(case_dir), &[])?;
    let class: Vec<u8> = map
        .names
        .iter()
        .map(|n| rois.iter().find(|(r, _)| r.trim().eq_ignore_ascii_case(n.trim())).map_or(0, |r| r.1 as u8))
        .collect();
    let mut vol = map.volume;
    for v in &mut vol.data {
        let k = *v as usize;
        *v = if k >= 1 { f32::from(class[k - 1]) } else { 0.0 };
    }
    let slices = (0..vol.dims[2]).map(|z| vol.slice(crate::volume::Plane::Axial, z, 0)).collect();
    Ok((slices, map.grid.files))
}

/// Voxels per class of a case (for a summary), by class index.
pub fn class_voxels(slices: &[Raster]) -> BTreeMap<usize, usize> {
    let mut c = BTreeMap::new();
    for s in slices {
        for &v in &s.data {
            *c.entry(v as usize).or_insert(0) += 1;
        }
    }
    c
}
