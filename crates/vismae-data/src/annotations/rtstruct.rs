//! DICOM RT Structure Sets: ROIs as planar contours in patient coordinates, read from the file
//! and filled onto the pixel grid of the image series they reference. Label k is the k-th ROI of
//! the Structure Set ROI Sequence, or of the names picked; where ROIs overlap the later label
//! wins. Each closed planar contour goes to the slice it lies on (within a quarter of the slice
//! spacing, or it is an error naming it); the contours of one ROI on one slice combine by the
//! even-odd rule (a contour inside another is a hole), filled by pixel centres as scikit-image's
//! `draw.polygon` fills them. Point and open contours are skipped and counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_object::InMemDicomObject;

use super::{LabelMap, SeriesGrid, check_frame, fill_polygon, items, pick_names, text};
use crate::error::{DataError, Reason};

/// One contour of an ROI.
#[derive(Clone, Debug, PartialEq)]
pub struct Contour {
    /// Contour Geometric Type (`CLOSED_PLANAR`, `POINT`, `OPEN_PLANAR`, ...).
    pub geometry: String,
    /// Points in patient coordinates (mm, LPS).
    pub points: Vec<[f64; 3]>,
}

/// A region of interest and its contours.
#[derive(Clone, Debug, PartialEq)]
pub struct Roi {
    /// ROI Number.
    pub number: i64,
    /// ROI Name.
    pub name: String,
    /// Its contours (none when the file draws nothing for it).
    pub contours: Vec<Contour>,
}

/// What an RT Structure Set holds.
#[derive(Clone, Debug, PartialEq)]
pub struct StructureSet {
    /// The file.
    pub path: PathBuf,
    /// ROIs in the order of the Structure Set ROI Sequence.
    pub rois: Vec<Roi>,
    /// The image series it references (RT Referenced Series Sequence), when it says.
    pub series_uid: Option<String>,
    /// Its frame of reference, when it says.
    pub frame_of_reference_uid: Option<String>,
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

impl StructureSet {
    /// Reads the structure set of the parsed file `obj` (at `path`, for errors).
    pub fn from_object(path: &Path, obj: &DefaultDicomObject) -> Result<Self, DataError> {
        let bad = |m: String| DataError::new(path, Reason::Corrupt, m);
        let mut rois: Vec<Roi> = Vec::new();
        for (i, it) in items(obj, tags::STRUCTURE_SET_ROI_SEQUENCE).iter().enumerate() {
            let number = int(it, tags::ROI_NUMBER)
                .ok_or_else(|| bad(format!("item {} of the Structure Set ROI Sequence has no ROI Number", i + 1)))?;
            let name = text(it, tags::ROI_NAME).unwrap_or_else(|| format!("ROI {number}"));
            if rois.iter().any(|r| r.number == number) {
                return Err(bad(format!("ROI Number {number} appears twice in the Structure Set ROI Sequence")));
            }
            rois.push(Roi { number, name, contours: Vec::new() });
        }
        if rois.is_empty() {
            return Err(DataError::new(path, Reason::BadArgument, "the structure set defines no ROI"));
        }
        for it in items(obj, tags::ROI_CONTOUR_SEQUENCE) {
            let Some(number) = int(it, tags::REFERENCED_ROI_NUMBER) else { continue };
            let Some(roi) = rois.iter_mut().find(|r| r.number == number) else {
                return Err(bad(format!(
                    "the ROI Contour Sequence draws ROI {number}, which the file does not define"
                )));
            };
            for (k, c) in items(it, tags::CONTOUR_SEQUENCE).iter().enumerate() {
                let geometry = text(c, tags::CONTOUR_GEOMETRIC_TYPE).unwrap_or_else(|| "CLOSED_PLANAR".into());
                let data = c.get(tags::CONTOUR_DATA).and_then(|e| e.to_multi_float64().ok()).unwrap_or_default();
                if data.len() % 3 != 0 || data.iter().any(|v| !v.is_finite()) {
                    return Err(bad(format!(
                        "contour {} of ROI {:?}: Contour Data holds {} numbers, not finite (x, y, z) triples",
                        k + 1,
                        roi.name,
                        data.len()
                    )));
                }
                let points = data.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
                roi.contours.push(Contour { geometry, points });
            }
        }
        let frames = items(obj, tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE);
        let series_uid = frames
            .iter()
            .flat_map(|f| items(f, tags::RT_REFERENCED_STUDY_SEQUENCE))
            .flat_map(|s| items(s, tags::RT_REFERENCED_SERIES_SEQUENCE))
            .find_map(|s| text(s, tags::SERIES_INSTANCE_UID));
        let frame_of_reference_uid = frames.iter().find_map(|f| text(f, tags::FRAME_OF_REFERENCE_UID));
        Ok(Self { path: path.into(), rois, series_uid, frame_of_reference_uid })
    }

    /// The ROI names, in the file's order.
    pub fn names(&self) -> Vec<String> {
        self.rois.iter().map(|r| r.name.clone()).collect()
    }

    /// Fills the ROIs (all, or those named in `pick`, in that order) onto `grid`.
    pub fn rasterise(&self, grid: &SeriesGrid, pick: &[String]) -> Result<LabelMap, DataError> {
        check_frame(&self.path, self.frame_of_reference_uid.as_deref(), grid)?;
        let chosen = pick_names(&self.path, &self.names(), pick, "ROI")?;
        let mut volume = grid.empty_volume();
        let n = grid.normal();
        let (rows, cols) = (grid.rows, grid.columns);
        let mut notes = Vec::new();
        for (label, &ri) in chosen.iter().enumerate() {
            let roi = &self.rois[ri];
            let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
            // slice -> the ROI's even-odd mask on it
            let mut masks: BTreeMap<usize, Vec<bool>> = BTreeMap::new();
            for (k, c) in roi.contours.iter().enumerate() {
                if c.geometry != "CLOSED_PLANAR" || c.points.len() < 3 {
                    *skipped.entry(c.geometry.as_str()).or_insert(0) += 1;
                    continue;
                }
                let d: Vec<f64> = c.points.iter().map(|&p| p[0] * n[0] + p[1] * n[1] + p[2] * n[2]).collect();
                let mean = d.iter().sum::<f64>() / d.len() as f64;
                let z = grid.slice_at(mean).map_err(|(near, gap)| {
                    DataError::new(
                        &self.path,
                        Reason::BadArgument,
                        format!(
                            "contour {} of ROI {:?} lies {gap:.3} mm from the nearest slice ({} of series {}): it matches no slice of the series",
                            k + 1,
                            roi.name,
                            near + 1,
                            grid.series_uid
                        ),
                    )
                })?;
                let spread = d.iter().map(|v| (v - mean).abs()).fold(0.0, f64::max);
                if spread > 0.25 * grid.slice_spacing().max(2.0) {
                    return Err(DataError::new(
                        &self.path,
                        Reason::BadArgument,
                        format!(
                            "contour {} of ROI {:?} is not planar in the slices' plane (its points spread {spread:.3} mm along the normal)",
                            k + 1,
                            roi.name
                        ),
                    ));
                }
                let pts: Vec<(f64, f64)> = c.points.iter().map(|&p| grid.to_pixel(z, p)).collect();
                let mask = masks.entry(z).or_insert_with(|| vec![false; rows * cols]);
                fill_polygon(mask, rows, cols, &pts);
            }
            let mut voxels = 0;
            for (z, mask) in masks {
                for i in (0..mask.len()).filter(|&i| mask[i]) {
                    volume.data[grid.voxel(z, i / cols, i % cols)] = (label + 1) as f32;
                    voxels += 1;
                }
            }
            for (kind, count) in skipped {
                notes.push(format!(
                    "ROI {:?}: {count} {kind} contour(s) skipped (only closed planar contours fill)",
                    roi.name
                ));
            }
            if voxels == 0 {
                notes.push(format!("ROI {:?} (label {}) covers no voxel of the series", roi.name, label + 1));
            }
        }
        let names = chosen.iter().map(|&i| self.rois[i].name.clone()).collect();
        Ok(LabelMap { volume, names, grid: grid.clone(), notes })
    }
}
