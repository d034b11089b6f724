//! Annotations kept as DICOM next to an image series, both ways: RTSTRUCT contours ([`rtstruct`])
//! and DICOM SEG segments ([`seg`]) read into a label map on the grid of the series they
//! reference, and label maps written back as DICOM SEG. The grid ([`SeriesGrid`]) and the label
//! map's voxel layout are those `predict` writes for a DICOM series: x = column, y = rows - 1 - row
//! (stored bottom-up), z = the series' slices along the slice normal, with the RAS affine of
//! [`crate::series::series_affine`].

mod fill;
pub mod rtstruct;
pub mod seg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;

use crate::dicom::DicomFile;
use crate::error::{DataError, Reason};
use crate::series::{Series, affine_from, group_series};
use crate::volume::Volume;

pub use fill::fill_polygon;

/// SOP Class UID of RT Structure Set Storage.
pub const RTSTRUCT_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.481.3";
/// SOP Class UID of Segmentation Storage.
pub const SEG_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// SOP Class UID of Label Map Segmentation Storage.
pub const LABELMAP_SEG_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.7";

/// Which kind of annotation object a DICOM file is, from its SOP Class UID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnotationKind {
    /// An RT Structure Set (contours).
    RtStruct,
    /// A Segmentation (binary, fractional or label-map frames).
    Seg,
}

impl AnnotationKind {
    /// The kind of the object with SOP Class UID `class`, if it is one.
    pub fn of_class(class: &str) -> Option<Self> {
        match class.trim_end_matches('\0').trim() {
            RTSTRUCT_SOP_CLASS => Some(Self::RtStruct),
            SEG_SOP_CLASS | LABELMAP_SEG_SOP_CLASS => Some(Self::Seg),
            _ => None,
        }
    }

    /// The kind a DICOM file's first 4 KiB name (the file meta's Media Storage SOP Class UID,
    /// or the data set's SOP Class UID near its start): a cheap test for scanning folders of
    /// image slices without parsing each.
    pub fn sniff_file(path: &Path) -> Option<Self> {
        use std::io::Read;
        let mut head = Vec::with_capacity(4096);
        std::fs::File::open(path).ok()?.take(4096).read_to_end(&mut head).ok()?;
        if !crate::dicom::sniff(&head) {
            return None;
        }
        [RTSTRUCT_SOP_CLASS, SEG_SOP_CLASS, LABELMAP_SEG_SOP_CLASS].into_iter().find_map(|uid| {
            let u = uid.as_bytes();
            let hit = head
                .windows(u.len())
                .enumerate()
                .any(|(i, w)| w == u && !head.get(i + u.len()).is_some_and(|b| b.is_ascii_digit() || *b == b'.'));
            hit.then(|| Self::of_class(uid)).flatten()
        })
    }
}

/// The items of sequence `tag` of a data set (none when it is absent).
pub(crate) fn items(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> &[dicom_object::InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

/// A text element's value, trimmed of spaces and NUL padding; `None` when absent or empty.
pub(crate) fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?.trim().trim_end_matches('\0').trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The pixel grid of a DICOM image series in patient space: what annotations are drawn on.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesGrid {
    /// Series Instance UID.
    pub series_uid: String,
    /// Study Instance UID.
    pub study_uid: Option<String>,
    /// Frame of Reference UID.
    pub frame_of_reference_uid: Option<String>,
    /// Rows and columns of every slice.
    pub rows: usize,
    /// Columns of every slice.
    pub columns: usize,
    /// Image Orientation (Patient): row direction, then column direction (LPS).
    pub orientation: [f64; 6],
    /// Pixel Spacing: between rows, between columns (mm).
    pub spacing: (f64, f64),
    /// Image Position (Patient) of each slice, in slice order (ascending along the normal).
    pub positions: Vec<[f64; 3]>,
    /// SOP Instance UID of each slice.
    pub sop_uids: Vec<String>,
    /// SOP Class UID of each slice.
    pub sop_classes: Vec<String>,
    /// The slice files.
    pub files: Vec<PathBuf>,
    /// Patient and study attributes of the first slice, as text (tag, value), for objects derived
    /// from the series.
    pub header: Vec<(dicom_core::Tag, String)>,
}

/// Patient and study attributes a derived object (a SEG) copies from its source series.
pub(crate) const COPIED: [dicom_core::Tag; 10] = [
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_DESCRIPTION,
];

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

impl SeriesGrid {
    /// The grid of `series`: every slice needs a position, orientation, spacing and SOP Instance
    /// UID, the same orientation, spacing, rows and columns, and a distinct position.
    pub fn from_series(series: &Series) -> Result<Self, DataError> {
        let mut grid: Option<SeriesGrid> = None;
        for f in &series.files {
            let d = DicomFile::open(f)?;
            let m = &d.meta;
            let need = |what: &str| {
                DataError::new(f, Reason::BadArgument, format!("this slice has no {what}: it cannot hold annotations"))
            };
            let (pos, ori, sp) = (
                m.position.ok_or_else(|| need("Image Position (Patient)"))?,
                m.orientation.ok_or_else(|| need("Image Orientation (Patient)"))?,
                m.spacing.ok_or_else(|| need("Pixel Spacing"))?,
            );
            let uid = m.sop_uid.clone().ok_or_else(|| need("SOP Instance UID"))?;
            let class = m.sop_class_uid.clone().unwrap_or_default();
            match grid.as_mut() {
                None => {
                    let header = COPIED
                        .iter()
                        .filter_map(|&t| {
                            let v = d.object().get(t)?.to_str().ok()?.trim().to_string();
                            Some((t, v))
                        })
                        .collect();
                    grid = Some(SeriesGrid {
                        series_uid: series.uid.clone(),
                        study_uid: m.study_uid.clone(),
                        frame_of_reference_uid: m.frame_of_reference_uid.clone(),
                        rows: m.rows,
                        columns: m.columns,
                        orientation: ori,
                        spacing: sp,
                        positions: vec![pos],
                        sop_uids: vec![uid],
                        sop_classes: vec![class],
                        files: vec![f.clone()],
                        header,
                    })
                }
                Some(g) => {
                    let same_ori = g.orientation.iter().zip(&ori).all(|(a, b)| (a - b).abs() < 1e-4);
                    let same_sp = (g.spacing.0 - sp.0).abs() < 1e-4 && (g.spacing.1 - sp.1).abs() < 1e-4;
                    if !same_ori || !same_sp || g.rows != m.rows || g.columns != m.columns {
                        return Err(DataError::new(
                            f,
                            Reason::BadArgument,
                            format!(
                                "series {}: this slice's grid ({}x{}, spacing {:?}, orientation {:?}) differs from the first slice's ({}x{}, {:?}, {:?})",
                                series.uid, m.columns, m.rows, sp, ori, g.columns, g.rows, g.spacing, g.orientation
                            ),
                        ));
                    }
                    g.positions.push(pos);
                    g.sop_uids.push(uid);
                    g.sop_classes.push(class);
                    g.files.push(f.clone());
                }
            }
        }
        let g = grid.ok_or_else(|| DataError::new(Path::new(&series.uid), Reason::BadArgument, "empty series"))?;
        let d: Vec<f64> = g.positions.iter().map(|&p| dot(p, g.normal())).collect();
        if let Some(i) = (1..d.len()).find(|&i| (d[i] - d[i - 1]).abs() < 1e-6) {
            return Err(DataError::new(
                &g.files[i],
                Reason::BadArgument,
                format!("this slice is at the same position as {} (several series in one?)", g.files[i - 1].display()),
            ));
        }
        Ok(g)
    }

    /// The grid of the series with UID `uid` among the DICOM files under `dir` (searched
    /// recursively); with `uid` unset, the only image series there.
    pub fn find(dir: &Path, uid: Option<&str>) -> Result<Self, DataError> {
        // files that are not DICOM images (structure sets, reports, other formats) do not open
        let files = crate::dataset::ingest::walk(&[dir.to_path_buf()])?;
        let (series, _) = group_series(&files);
        let series: Vec<Series> = series.into_iter().filter(|s| !s.locations.iter().any(Option::is_none)).collect();
        let chosen = match uid {
            Some(u) => series.iter().find(|s| s.uid == u).ok_or_else(|| {
                DataError::new(
                    dir,
                    Reason::BadArgument,
                    format!(
                        "the referenced series {u} is not here ({} image series found{}); give its folder with --series",
                        series.len(),
                        if series.is_empty() { String::new() } else { format!(": {}", list(&series)) }
                    ),
                )
            })?,
            None => match series.as_slice() {
                [one] => one,
                _ => {
                    return Err(DataError::new(
                        dir,
                        Reason::BadArgument,
                        format!(
                            "the annotation names no series, and {} image series are here{}: give the folder of one with --series",
                            series.len(),
                            if series.is_empty() { String::new() } else { format!(" ({})", list(&series)) }
                        ),
                    ));
                }
            },
        };
        Self::from_series(chosen)
    }

    /// The unit normal of the slices (row direction x column direction).
    pub fn normal(&self) -> [f64; 3] {
        let o = self.orientation;
        let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
        let len = dot(n, n).sqrt().max(f64::MIN_POSITIVE);
        n.map(|v| v / len)
    }

    /// Slices.
    pub fn slices(&self) -> usize {
        self.positions.len()
    }

    /// The distance between neighbouring slices along the normal (median; 0 for one slice).
    pub fn slice_spacing(&self) -> f64 {
        let n = self.normal();
        let mut gaps: Vec<f64> = self.positions.windows(2).map(|w| (dot(w[1], n) - dot(w[0], n)).abs()).collect();
        gaps.sort_by(f64::total_cmp);
        gaps.get(gaps.len() / 2).copied().unwrap_or(0.0)
    }

    /// The slice at distance `d` along the normal, within a quarter of the slice spacing (0.5 mm
    /// for a single slice); otherwise the nearest slice's index and distance as the error.
    pub fn slice_at(&self, d: f64) -> Result<usize, (usize, f64)> {
        let n = self.normal();
        let tol = match self.slice_spacing() {
            s if s > 0.0 => 0.25 * s,
            _ => 0.5,
        };
        let (i, gap) = self
            .positions
            .iter()
            .map(|&p| (d - dot(p, n)).abs())
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, f64::INFINITY));
        if gap <= tol { Ok(i) } else { Err((i, gap)) }
    }

    /// The continuous (row, column) pixel coordinates of patient point `p` on slice `z`.
    pub fn to_pixel(&self, z: usize, p: [f64; 3]) -> (f64, f64) {
        let o = self.orientation;
        let v = [0, 1, 2].map(|i| p[i] - self.positions[z][i]);
        let (row_dir, col_dir) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
        (dot(v, col_dir) / self.spacing.0, dot(v, row_dir) / self.spacing.1)
    }

    /// The patient position of pixel (row, column) of slice `z`.
    pub fn to_patient(&self, z: usize, row: f64, col: f64) -> [f64; 3] {
        let o = self.orientation;
        [0, 1, 2].map(|i| self.positions[z][i] + col * self.spacing.1 * o[i] + row * self.spacing.0 * o[3 + i])
    }

    /// The RAS voxel-to-world affine of the label volume (that of `series_affine`).
    pub fn affine(&self) -> [[f64; 4]; 3] {
        let meta = |z: usize| crate::dicom::DicomMeta {
            position: Some(self.positions[z]),
            orientation: Some(self.orientation),
            spacing: Some(self.spacing),
            rows: self.rows,
            ..Default::default()
        };
        let last = self.slices().saturating_sub(1);
        affine_from(&meta(0), &meta(last), self.slices()).unwrap_or([[0.0; 4]; 3])
    }

    /// An empty label volume on the grid.
    pub fn empty_volume(&self) -> Volume {
        let dz = match self.slice_spacing() {
            s if s > 0.0 => s,
            _ => 1.0,
        };
        Volume {
            dims: [self.columns, self.rows, self.slices(), 1],
            spacing: [self.spacing.1, self.spacing.0, dz],
            data: vec![0.0; self.columns * self.rows * self.slices()],
        }
    }

    /// Index in a label volume of pixel (row, column) of slice `z`.
    pub fn voxel(&self, z: usize, row: usize, col: usize) -> usize {
        (z * self.rows + (self.rows - 1 - row)) * self.columns + col
    }
}

fn list(series: &[Series]) -> String {
    series.iter().map(|s| format!("{} ({} slices)", s.uid, s.files.len())).collect::<Vec<_>>().join(", ")
}

/// A label map on a series grid, read from an annotation object.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelMap {
    /// Labels (0 background, k for the k-th name), x = column, y = rows - 1 - row, z = slice.
    pub volume: Volume,
    /// Name of label k at index k - 1.
    pub names: Vec<String>,
    /// The grid it lies on.
    pub grid: SeriesGrid,
    /// Things worth telling the user (skipped contours, empty ROIs).
    pub notes: Vec<String>,
}

impl LabelMap {
    /// Voxels of each label (index k - 1).
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.names.len()];
        for &v in &self.volume.data {
            let k = v as usize;
            if k >= 1 && k <= c.len() {
                c[k - 1] += 1;
            }
        }
        c
    }

    /// Writes the map as a uint8 NIfTI with the series' affine, and a JSON sidecar beside it
    /// (`OUT` with `.nii`/`.nii.gz` replaced by `.json`) naming each label; returns the sidecar.
    pub fn write(&self, out: &Path, source: &Path) -> Result<PathBuf, DataError> {
        if self.names.len() > 255 {
            return Err(DataError::new(
                source,
                Reason::Unsupported,
                format!("{} labels do not fit a uint8 label map; pick at most 255 with --roi", self.names.len()),
            ));
        }
        crate::volume::write_nifti_affine(out, &self.volume, true, Some(self.grid.affine()))?;
        let sidecar = sidecar_path(out);
        let labels: BTreeMap<String, &str> =
            self.names.iter().enumerate().map(|(i, n)| ((i + 1).to_string(), n.as_str())).collect();
        let json = serde_json::json!({
            "labels": labels,
            "source": source.display().to_string(),
            "series_uid": self.grid.series_uid,
            "voxels": self.names.iter().zip(self.counts()).map(|(n, c)| (n.clone(), c)).collect::<BTreeMap<_, _>>(),
        });
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        vismae_run::run_dir::write_atomic(&sidecar, text.as_bytes())
            .map_err(|e| DataError::new(&sidecar, Reason::Io, e.to_string()))?;
        Ok(sidecar)
    }
}

/// The JSON sidecar of a label map file: `labels.nii.gz` -> `labels.json`.
pub fn sidecar_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".nii.gz").or_else(|| name.strip_suffix(".nii")).unwrap_or(&name);
    out.with_file_name(format!("{stem}.json"))
}

/// Orders and picks names: every name of `available` in its order, or those of `pick` in that
/// order (matched case-insensitively); returns each picked name's index in `available`.
pub(crate) fn pick_names(
    path: &Path,
    available: &[String],
    pick: &[String],
    what: &str,
) -> Result<Vec<usize>, DataError> {
    if pick.is_empty() {
        return Ok((0..available.len()).collect());
    }
    pick.iter()
        .map(|p| {
            available.iter().position(|a| a.trim().eq_ignore_ascii_case(p.trim())).ok_or_else(|| {
                DataError::new(
                    path,
                    Reason::BadArgument,
                    format!("no {what} is named {p:?}; the file has: {}", available.join(", ")),
                )
            })
        })
        .collect()
}

/// Reads the annotation object at `path` (RTSTRUCT or SEG) into a label map on the grid of the
/// series it references, found under `series_dir` (default: the object's folder). `pick` chooses
/// and orders ROIs or segments by name (default: all, in the file's order).
pub fn read_labels(path: &Path, series_dir: Option<&Path>, pick: &[String]) -> Result<LabelMap, DataError> {
    let limits = crate::limits::Limits::default();
    let bytes = limits.read_file(path)?;
    let obj = crate::dicom::parse_object(path, &bytes, &limits)?;
    let class = obj
        .get(tags::SOP_CLASS_UID)
        .and_then(|e| e.to_str().ok().map(|s| s.into_owned()))
        .unwrap_or_else(|| obj.meta().media_storage_sop_class_uid().to_string());
    let dir = series_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf());
    match AnnotationKind::of_class(&class) {
        Some(AnnotationKind::RtStruct) => {
            let ss = rtstruct::StructureSet::from_object(path, &obj)?;
            let grid = SeriesGrid::find(&dir, ss.series_uid.as_deref())?;
            ss.rasterise(&grid, pick)
        }
        Some(AnnotationKind::Seg) => {
            let s = seg::Segmentation::from_object(path, &obj)?;
            let grid = SeriesGrid::find(&dir, s.series_uid.as_deref())?;
            s.to_labels(&grid, pick)
        }
        None => Err(DataError::new(
            path,
            Reason::Unsupported,
            format!("SOP class {} is neither an RT Structure Set nor a Segmentation", class.trim_end_matches('\0')),
        )),
    }
}

/// The Patient ID an annotation file names, if it parses and names one.
pub fn patient_id(path: &Path) -> Option<String> {
    let limits = crate::limits::Limits::default();
    let bytes = limits.read_file(path).ok()?;
    let obj = crate::dicom::parse_object(path, &bytes, &limits).ok()?;
    let id = obj.get(tags::PATIENT_ID)?.to_str().ok()?.trim().trim_end_matches('\0').trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// Checks that an annotation's frame of reference is the series'.
pub(crate) fn check_frame(path: &Path, theirs: Option<&str>, grid: &SeriesGrid) -> Result<(), DataError> {
    match (theirs, grid.frame_of_reference_uid.as_deref()) {
        (Some(a), Some(b)) if a != b => Err(DataError::new(
            path,
            Reason::BadArgument,
            format!(
                "its frame of reference {a} is not the series' ({b}): the coordinates do not apply to series {}",
                grid.series_uid
            ),
        )),
        _ => Ok(()),
    }
}

/// Writes the label map `labels` (a NIfTI on the grid of a series under `series_dir`, as
/// `convert` and `predict` write them) as a DICOM SEG at `out`. Segment names come from `names`,
/// else from the label map's JSON sidecar, else `label K`; the series is the one the sidecar
/// names, else the only one under `series_dir`. The NIfTI must have the series' size and affine.
pub fn labels_to_seg(
    labels: &Path,
    series_dir: &Path,
    names: &[String],
    out: &Path,
    algorithm: &seg::SegAlgorithm,
) -> Result<(seg::SegWritten, SeriesGrid, Vec<String>), DataError> {
    let vol = crate::volume::read_nifti(labels)?;
    let sidecar: Option<serde_json::Value> =
        std::fs::read_to_string(sidecar_path(labels)).ok().and_then(|t| serde_json::from_str(&t).ok());
    let uid = sidecar.as_ref().and_then(|v| v["series_uid"].as_str().map(str::to_string));
    let grid = SeriesGrid::find(series_dir, uid.as_deref())?;
    let bad = |m: String| DataError::new(labels, Reason::BadArgument, m);
    if vol.dims != [grid.columns, grid.rows, grid.slices(), 1] {
        return Err(bad(format!(
            "the label map is {:?}; series {} is {}x{}x{}: it is not on the series' grid",
            &vol.dims[..3],
            grid.series_uid,
            grid.columns,
            grid.rows,
            grid.slices()
        )));
    }
    let (theirs, ours) = (crate::volume::nifti_affine(labels)?, grid.affine());
    let scale = ours.iter().flatten().fold(1.0f64, |m, v| m.max(v.abs()));
    let worst = theirs.iter().flatten().zip(ours.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    if worst > 1e-3 * scale {
        return Err(bad(format!(
            "its affine {theirs:?} is not series {}'s {ours:?} (off by up to {worst:.4})",
            grid.series_uid
        )));
    }
    if let Some(v) = vol.data.iter().find(|v| v.fract() != 0.0 || **v < 0.0) {
        return Err(bad(format!("it holds {v}, not a label (labels are whole numbers from 0)")));
    }
    let max = vol.data.iter().copied().fold(0.0f32, f32::max) as usize;
    let from_sidecar =
        |k: usize| sidecar.as_ref().and_then(|v| v["labels"][k.to_string()].as_str().map(str::to_string));
    let named = sidecar.as_ref().and_then(|v| v["labels"].as_object().map(|m| m.len())).unwrap_or(0);
    let count = max.max(names.len()).max(named).max(1);
    let classes: Vec<String> = (1..=count)
        .map(|k| names.get(k - 1).cloned().or_else(|| from_sidecar(k)).unwrap_or_else(|| format!("label {k}")))
        .collect();
    let written = seg::write_seg(out, &vol, &grid, &classes, algorithm)?;
    Ok((written, grid, classes))
}
