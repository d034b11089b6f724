//! DICOM series: files grouped by Series Instance UID and ordered by their position along the
//! slice normal (Image Position · (row × column direction)), then Instance Number, then name; and
//! a series stacked into a volume.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::dicom::{DicomFile, DicomMeta};
use crate::error::{DataError, Reason};
use crate::volume::Volume;

/// The files of one series, in slice order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Series Instance UID (or the file name for files without one).
    pub uid: String,
    /// Files, ordered along the slice normal.
    pub files: Vec<PathBuf>,
    /// Position of each file along the normal, when known.
    pub locations: Vec<Option<f64>>,
}

/// Groups DICOM files into series and orders each; files that do not open are returned apart.
pub fn group_series(files: &[PathBuf]) -> (Vec<Series>, Vec<DataError>) {
    // series uid -> (location along the normal, instance number, file)
    type Slice = (Option<f64>, Option<i64>, PathBuf);
    let mut groups: BTreeMap<String, Vec<Slice>> = BTreeMap::new();
    let mut errors = Vec::new();
    for f in files {
        match DicomFile::open(f) {
            // segmentations and structure sets sit beside the series they annotate: not slices
            Ok(d)
                if d.meta.sop_class_uid.as_deref().and_then(crate::annotations::AnnotationKind::of_class).is_some() => {
            }
            Ok(d) => {
                let uid = d.meta.series_uid.clone().unwrap_or_else(|| f.display().to_string());
                groups.entry(uid).or_default().push((d.meta.slice_location(), d.meta.instance_number, f.clone()));
            }
            Err(e) => errors.push(e),
        }
    }
    let series = groups
        .into_iter()
        .map(|(uid, mut items)| {
            items.sort_by(|a, b| {
                let by_loc = match (a.0, b.0) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    _ => std::cmp::Ordering::Equal,
                };
                by_loc.then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
            });
            Series {
                uid,
                locations: items.iter().map(|i| i.0).collect(),
                files: items.into_iter().map(|i| i.2).collect(),
            }
        })
        .collect();
    (series, errors)
}

/// Stacks a series into a volume: columns along x, rows along y (stored bottom-up, so an axial
/// slice of the volume shows the image as the scanner did), files along z. Every file must have
/// the same rows and columns.
pub fn series_volume(series: &Series) -> Result<Volume, DataError> {
    let mut data = Vec::new();
    let mut dims = None;
    let mut spacing = (1.0, 1.0);
    for f in &series.files {
        let d = DicomFile::open(f)?;
        let r = d.frame(0)?.to_grey();
        match dims {
            None => {
                dims = Some((r.width, r.height));
                spacing = d.meta.spacing.unwrap_or((1.0, 1.0));
            }
            Some((w, h)) if (w, h) != (r.width, r.height) => {
                return Err(DataError::new(
                    f,
                    Reason::BadArgument,
                    format!("series {}: this slice is {}x{}, the first is {w}x{h}", series.uid, r.width, r.height),
                ));
            }
            _ => {}
        }
        for row in (0..r.height).rev() {
            data.extend_from_slice(&r.data[row * r.width..(row + 1) * r.width]);
        }
    }
    let (w, h) =
        dims.ok_or_else(|| DataError::new(&PathBuf::from(&series.uid), Reason::BadArgument, "empty series"))?;
    let locs: Vec<f64> = series.locations.iter().flatten().copied().collect();
    let dz = if locs.len() >= 2 { ((locs[locs.len() - 1] - locs[0]) / (locs.len() - 1) as f64).abs() } else { 1.0 };
    Ok(Volume {
        dims: [w, h, series.files.len(), 1],
        spacing: [spacing.1, spacing.0, if dz > 0.0 { dz } else { 1.0 }],
        data,
    })
}

/// The RAS+ voxel-to-world affine (NIfTI sform rows) of `series_volume(series)`: from the first
/// and last files' Image Position, the Image Orientation and the Pixel Spacing (DICOM's LPS
/// turned to RAS). `None` when the files lack position or orientation.
pub fn series_affine(series: &Series) -> Result<Option<[[f64; 4]; 3]>, DataError> {
    let (Some(first), Some(last)) = (series.files.first(), series.files.last()) else { return Ok(None) };
    let (a, b) = (DicomFile::open(first)?, DicomFile::open(last)?);
    let n = series.files.len();
    Ok(affine_from(&a.meta, &b.meta, n))
}

/// The affine of a stack of `n` slices from its first and last slice's header facts.
pub fn affine_from(first: &DicomMeta, last: &DicomMeta, n: usize) -> Option<[[f64; 4]; 3]> {
    let (p0, o) = (first.position?, first.orientation?);
    let (dr, dc) = first.spacing.unwrap_or((1.0, 1.0));
    let (row_dir, col_dir) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let rows = first.rows.max(1) as f64;
    // volume x = column index, y = rows - 1 - row index (stored bottom-up), z = slice order
    let step = match (last.position, n > 1) {
        (Some(pn), true) => [0, 1, 2].map(|i| (pn[i] - p0[i]) / (n - 1) as f64),
        // one slice: the unit normal (its thickness is unknown here)
        _ => [
            row_dir[1] * col_dir[2] - row_dir[2] * col_dir[1],
            row_dir[2] * col_dir[0] - row_dir[0] * col_dir[2],
            row_dir[0] * col_dir[1] - row_dir[1] * col_dir[0],
        ],
    };
    let mut m = [[0.0; 4]; 3];
    for i in 0..3 {
        let lps_to_ras = if i < 2 { -1.0 } else { 1.0 };
        m[i][0] = lps_to_ras * row_dir[i] * dc;
        m[i][1] = lps_to_ras * -col_dir[i] * dr;
        m[i][2] = lps_to_ras * step[i];
        m[i][3] = lps_to_ras * (p0[i] + (rows - 1.0) * dr * col_dir[i]);
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axial_stack_affine_in_ras() {
        let first = DicomMeta {
            position: Some([-100.0, -120.0, 50.0]),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            spacing: Some((0.5, 0.7)),
            rows: 4,
            ..Default::default()
        };
        let last = DicomMeta { position: Some([-100.0, -120.0, 56.0]), ..first.clone() };
        let m = affine_from(&first, &last, 4).unwrap_or_else(|| panic!("no affine"));
        // voxel (0, 0, 0) is the last row of the first slice: LPS (-100, -118.5, 50) = RAS (100, 118.5, 50)
        assert_eq!(m, [[-0.7, 0.0, 0.0, 100.0], [0.0, 0.5, 0.0, 118.5], [0.0, 0.0, 2.0, 50.0]]);
        assert_eq!(affine_from(&DicomMeta::default(), &last, 4), None);
    }
}
