//! DICOM Segmentation objects both ways.
//!
//! Reading: binary (1-bit frames packed across frames), fractional (8-bit, above half the maximum
//! counts) and label-map segmentations, each frame placed on the slice of the series its source
//! SOP instance or its plane position names; segment k (or the k-th picked by label) becomes
//! label k. Writing: a label volume on a [`SeriesGrid`] as a binary SEG, one segment per class and
//! one frame per (segment, slice) that holds any of it, referencing the source series and its SOP
//! instances, with new UIDs and the algorithm that made it.

use std::path::{Path, PathBuf};

use dicom_core::dictionary::DataDictionary;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, DicomValue, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject};

use super::{LABELMAP_SEG_SOP_CLASS, LabelMap, SEG_SOP_CLASS, SeriesGrid, check_frame, items, pick_names, text};
use crate::error::{DataError, Reason};
use crate::volume::Volume;

/// How a SEG stores its frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SegKind {
    /// 1 bit per pixel.
    Binary,
    /// 8-bit fractions of `max`.
    Fractional {
        /// Maximum Fractional Value.
        max: u32,
    },
    /// Each pixel holds its segment number (Label Map Segmentation Storage).
    LabelMap {
        /// Bits allocated (8 or 16).
        bits: u16,
    },
}

/// One frame: which segment, where.
#[derive(Clone, Debug, PartialEq)]
pub struct SegFrame {
    /// Referenced Segment Number (none for label maps).
    pub segment: Option<u16>,
    /// Image Position (Patient) of the frame.
    pub position: Option<[f64; 3]>,
    /// The SOP instance it was derived from.
    pub source: Option<String>,
}

/// What a SEG holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Segmentation {
    /// The file.
    pub path: PathBuf,
    /// How frames store pixels.
    pub kind: SegKind,
    /// Segments as (number, label), in the Segment Sequence's order.
    pub segments: Vec<(u16, String)>,
    /// Frames in order.
    pub frames: Vec<SegFrame>,
    /// Rows and columns of a frame.
    pub rows: usize,
    /// Columns of a frame.
    pub columns: usize,
    /// The orientation of the frames, when it says.
    pub orientation: Option<[f64; 6]>,
    /// The source series (Referenced Series Sequence), when it says.
    pub series_uid: Option<String>,
    /// Frame of Reference UID.
    pub frame_of_reference_uid: Option<String>,
    pixels: Vec<u8>,
}

fn uint(obj: &InMemDicomObject, tag: Tag) -> Option<u64> {
    obj.get(tag)?.to_int::<i64>().ok().filter(|v| *v >= 0).map(|v| v as u64)
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    (v.len() == N && v.iter().all(|x| x.is_finite())).then(|| std::array::from_fn(|i| v[i]))
}

/// The first item of sequence `seq` in a functional group item, then `tag` inside it.
fn in_group<T>(group: Option<&InMemDicomObject>, seq: Tag, f: impl Fn(&InMemDicomObject) -> Option<T>) -> Option<T> {
    items(group?, seq).first().and_then(f)
}

impl Segmentation {
    /// Reads the segmentation of the parsed file `obj` (at `path`, for errors).
    pub fn from_object(path: &Path, obj: &DefaultDicomObject) -> Result<Self, DataError> {
        let bad = |m: String| DataError::new(path, Reason::Corrupt, m);
        let class = text(obj, tags::SOP_CLASS_UID).unwrap_or_default();
        let (rows, columns) =
            (uint(obj, tags::ROWS).unwrap_or(0) as usize, uint(obj, tags::COLUMNS).unwrap_or(0) as usize);
        let frames_n = uint(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1) as usize;
        if rows == 0 || columns == 0 {
            return Err(bad("the segmentation has no Rows or Columns".into()));
        }
        let bits = uint(obj, tags::BITS_ALLOCATED).unwrap_or(0) as u16;
        let kind = match (class.as_str(), text(obj, tags::SEGMENTATION_TYPE).as_deref()) {
            (LABELMAP_SEG_SOP_CLASS, _) | (_, Some("LABELMAP")) => SegKind::LabelMap { bits },
            (_, Some("FRACTIONAL")) => {
                SegKind::Fractional { max: uint(obj, tags::MAXIMUM_FRACTIONAL_VALUE).unwrap_or(255).max(1) as u32 }
            }
            (_, Some("BINARY")) => SegKind::Binary,
            (_, t) => return Err(bad(format!("unknown Segmentation Type {t:?}"))),
        };
        let want_bits = match kind {
            SegKind::Binary => 1,
            SegKind::Fractional { .. } => 8,
            SegKind::LabelMap { bits } if bits == 8 || bits == 16 => bits,
            SegKind::LabelMap { bits } => return Err(bad(format!("a label-map SEG with {bits} bits allocated"))),
        };
        if bits != want_bits {
            return Err(bad(format!("{kind:?} frames with {bits} bits allocated (expected {want_bits})")));
        }
        let segments: Vec<(u16, String)> = items(obj, tags::SEGMENT_SEQUENCE)
            .iter()
            .filter_map(|s| {
                let n = uint(s, tags::SEGMENT_NUMBER)? as u16;
                Some((n, text(s, tags::SEGMENT_LABEL).unwrap_or_else(|| format!("segment {n}"))))
            })
            .filter(|(n, _)| *n != 0)
            .collect();
        if segments.is_empty() {
            return Err(DataError::new(path, Reason::BadArgument, "the segmentation defines no segment"));
        }
        let shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
        let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
        if per_frame.len() != frames_n {
            return Err(bad(format!("{} per-frame functional groups for {frames_n} frames", per_frame.len())));
        }
        let segment_of = |g: Option<&InMemDicomObject>| {
            in_group(g, tags::SEGMENT_IDENTIFICATION_SEQUENCE, |i| uint(i, tags::REFERENCED_SEGMENT_NUMBER))
                .map(|v| v as u16)
        };
        let frames = per_frame
            .iter()
            .map(|g| SegFrame {
                segment: segment_of(Some(g)).or_else(|| segment_of(shared)),
                position: in_group(Some(g), tags::PLANE_POSITION_SEQUENCE, |i| {
                    floats::<3>(i, tags::IMAGE_POSITION_PATIENT)
                })
                .or_else(|| {
                    in_group(shared, tags::PLANE_POSITION_SEQUENCE, |i| floats::<3>(i, tags::IMAGE_POSITION_PATIENT))
                }),
                source: items(g, tags::DERIVATION_IMAGE_SEQUENCE)
                    .iter()
                    .flat_map(|d| items(d, tags::SOURCE_IMAGE_SEQUENCE))
                    .find_map(|s| text(s, tags::REFERENCED_SOP_INSTANCE_UID)),
            })
            .collect::<Vec<_>>();
        let orientation = [Some(per_frame.first()), Some(shared)].into_iter().flatten().find_map(|g| {
            in_group(g, tags::PLANE_ORIENTATION_SEQUENCE, |i| floats::<6>(i, tags::IMAGE_ORIENTATION_PATIENT))
        });
        let pixel = obj.get(tags::PIXEL_DATA).ok_or_else(|| bad("the segmentation has no Pixel Data".into()))?;
        if matches!(pixel.value(), DicomValue::PixelSequence(_)) {
            return Err(DataError::new(
                path,
                Reason::Unsupported,
                "the segmentation's frames are compressed (encapsulated); vismae reads uncompressed SEG frames",
            ));
        }
        let pixels = pixel.to_bytes().map_err(|e| bad(format!("Pixel Data: {e}")))?.into_owned();
        let per = rows * columns;
        let need = match kind {
            SegKind::Binary => (frames_n * per).div_ceil(8),
            SegKind::Fractional { .. } => frames_n * per,
            SegKind::LabelMap { bits } => frames_n * per * usize::from(bits / 8),
        };
        if pixels.len() < need {
            return Err(bad(format!(
                "Pixel Data holds {} bytes; {frames_n} frames of {columns}x{rows} need {need}",
                pixels.len()
            )));
        }
        let series_uid =
            items(obj, tags::REFERENCED_SERIES_SEQUENCE).iter().find_map(|s| text(s, tags::SERIES_INSTANCE_UID));
        Ok(Self {
            path: path.into(),
            kind,
            segments,
            frames,
            rows,
            columns,
            orientation,
            series_uid,
            frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID),
            pixels,
        })
    }

    /// The value of pixel `i` (row-major) of frame `f`: on or off for binary and fractional
    /// frames (as segment number 1), the segment number for label maps.
    fn value(&self, f: usize, i: usize) -> u16 {
        let per = self.rows * self.columns;
        match self.kind {
            SegKind::Binary => {
                let bit = f * per + i;
                u16::from(self.pixels[bit / 8] >> (bit % 8) & 1)
            }
            SegKind::Fractional { max } => u16::from(u32::from(self.pixels[f * per + i]) * 2 > max),
            SegKind::LabelMap { bits: 8 } => u16::from(self.pixels[f * per + i]),
            SegKind::LabelMap { .. } => {
                let at = 2 * (f * per + i);
                u16::from_le_bytes([self.pixels[at], self.pixels[at + 1]])
            }
        }
    }

    /// The segments (all, or those labelled as in `pick`, in that order) as a label map on `grid`.
    pub fn to_labels(&self, grid: &SeriesGrid, pick: &[String]) -> Result<LabelMap, DataError> {
        check_frame(&self.path, self.frame_of_reference_uid.as_deref(), grid)?;
        let here = |m: String| DataError::new(&self.path, Reason::BadArgument, m);
        if (self.rows, self.columns) != (grid.rows, grid.columns) {
            return Err(here(format!(
                "its frames are {}x{}, the series' slices {}x{}",
                self.columns, self.rows, grid.columns, grid.rows
            )));
        }
        if let Some(o) = self.orientation
            && o.iter().zip(&grid.orientation).any(|(a, b)| (a - b).abs() > 1e-4)
        {
            return Err(here(format!("its frames are oriented {o:?}, the series {:?}", grid.orientation)));
        }
        let names: Vec<String> = self.segments.iter().map(|s| s.1.clone()).collect();
        let chosen = pick_names(&self.path, &names, pick, "segment")?;
        let n = grid.normal();
        // each frame's slice
        let mut slice = Vec::with_capacity(self.frames.len());
        for (f, fr) in self.frames.iter().enumerate() {
            let by_uid = fr.source.as_ref().and_then(|u| grid.sop_uids.iter().position(|s| s == u));
            let z = match (by_uid, fr.position) {
                (Some(z), _) => z,
                (None, Some(p)) => grid.slice_at(p[0] * n[0] + p[1] * n[1] + p[2] * n[2]).map_err(|(near, gap)| {
                    here(format!(
                        "frame {} lies {gap:.3} mm from the nearest slice ({}) of series {}",
                        f + 1,
                        near + 1,
                        grid.series_uid
                    ))
                })?,
                (None, None) => {
                    return Err(here(format!("frame {} names neither its source image nor its position", f + 1)));
                }
            };
            if let Some(p) = fr.position {
                let q = grid.positions[z];
                let off = ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt();
                if off > 0.25 * grid.spacing.0.min(grid.spacing.1) {
                    return Err(here(format!(
                        "frame {} starts {off:.3} mm away from slice {} of the series: its pixels are not the slice's",
                        f + 1,
                        z + 1
                    )));
                }
            }
            slice.push(z);
        }
        let mut volume = grid.empty_volume();
        let per = self.rows * self.columns;
        // label order decides overlaps: later picked segments win
        for (k, &si) in chosen.iter().enumerate() {
            let number = self.segments[si].0;
            for (f, fr) in self.frames.iter().enumerate() {
                let is_labelmap = matches!(self.kind, SegKind::LabelMap { .. });
                if !is_labelmap && fr.segment != Some(number) {
                    continue;
                }
                for i in 0..per {
                    let v = self.value(f, i);
                    let on = if is_labelmap { v == number } else { v == 1 };
                    if on {
                        volume.data[grid.voxel(slice[f], i / self.columns, i % self.columns)] = (k + 1) as f32;
                    }
                }
            }
        }
        let names = chosen.iter().map(|&i| self.segments[i].1.clone()).collect();
        let mut map = LabelMap { volume, names, grid: grid.clone(), notes: Vec::new() };
        for (k, c) in map.counts().into_iter().enumerate() {
            if c == 0 {
                map.notes.push(format!("segment {:?} (label {}) covers no voxel", map.names[k], k + 1));
            }
        }
        Ok(map)
    }
}

/// What a written SEG says about the algorithm that made it.
#[derive(Clone, Debug, PartialEq)]
pub struct SegAlgorithm {
    /// Algorithm Name (e.g. `vismae`).
    pub name: String,
    /// Algorithm Version (e.g. the vismae version and the weights' name).
    pub version: String,
    /// Content Description (free text, at most 64 characters).
    pub description: String,
}

/// What [`write_seg`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SegWritten {
    /// Frames written.
    pub frames: usize,
    /// The new SOP Instance UID.
    pub sop_uid: String,
    /// The new Series Instance UID.
    pub series_uid: String,
}

/// A new UID under the `2.25` root (a random 128-bit number, ITU-T X.667).
pub fn new_uid() -> String {
    format!("2.25.{}", rand::random::<u128>())
}

/// vismae's Implementation Class UID (fixed, under `2.25`).
const IMPLEMENTATION_UID: &str = "2.25.186525208392640711853916451370183452615";

/// A DS value of at most 16 characters.
fn ds(v: f64) -> String {
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    for p in (0..=12).rev() {
        let t = format!("{v:.p$}");
        if t.len() <= 16 {
            return t;
        }
    }
    format!("{v:.6e}")
}

fn el(tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v.into())
}

fn strs(tag: Tag, vr: VR, v: &[String]) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::Strs(v.iter().cloned().collect()))
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
}

fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    item(vec![
        el(tags::CODE_VALUE, VR::SH, value),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// Today's date (`YYYYMMDD`) and time (`HHMMSS`) in UTC.
fn now() -> (String, String) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil date from days since 1970-01-01 (H. Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (format!("{y:04}{m:02}{d:02}"), format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60))
}

/// Writes `labels` (a label volume on `grid`: 0 background, k for `classes[k - 1]`) to `path` as
/// a binary DICOM SEG referencing the series of `grid`, atomically.
pub fn write_seg(
    path: &Path,
    labels: &Volume,
    grid: &SeriesGrid,
    classes: &[String],
    algorithm: &SegAlgorithm,
) -> Result<SegWritten, DataError> {
    let fail = |m: String| DataError::new(path, Reason::BadArgument, m);
    let (rows, cols, nz) = (grid.rows, grid.columns, grid.slices());
    if labels.dims[..3] != [cols, rows, nz] {
        return Err(fail(format!("the label volume is {:?}, the series grid {cols}x{rows}x{nz}", &labels.dims[..3])));
    }
    if classes.is_empty() || classes.len() > u16::MAX as usize {
        return Err(fail(format!("{} classes: a SEG needs 1 to 65535 segments", classes.len())));
    }
    let study = grid.study_uid.clone().ok_or_else(|| fail("the series has no Study Instance UID".into()))?;
    let frame_of_ref = grid.frame_of_reference_uid.clone().unwrap_or_else(new_uid);
    let (sop_uid, series_uid, dim_uid) = (new_uid(), new_uid(), new_uid());
    let (date, time) = now();
    // frames: (segment, slice), segment-major, slices ascending; only those holding the segment
    let mut frames: Vec<(usize, usize)> = Vec::new();
    for k in 1..=classes.len() {
        for z in 0..nz {
            let plane = &labels.data[z * rows * cols..(z + 1) * rows * cols];
            if plane.iter().any(|&v| v as usize == k) {
                frames.push((k, z));
            }
        }
    }
    if frames.is_empty() {
        // nothing segmented: one empty frame keeps the object valid and says so
        frames.push((1, 0));
    }
    let per = rows * cols;
    let mut bits = vec![0u8; (frames.len() * per).div_ceil(8).next_multiple_of(2)];
    for (f, &(k, z)) in frames.iter().enumerate() {
        for r in 0..rows {
            for c in 0..cols {
                if labels.data[grid.voxel(z, r, c)] as usize == k {
                    let bit = f * per + r * cols + c;
                    bits[bit / 8] |= 1 << (bit % 8);
                }
            }
        }
    }
    let source = |z: usize| {
        vec![
            el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, grid.sop_classes[z].as_str()),
            el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, grid.sop_uids[z].as_str()),
        ]
    };
    let per_frame: Vec<InMemDicomObject> = frames
        .iter()
        .map(|&(k, z)| {
            let mut src = source(z);
            src.push(el(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"));
            src.push(seq(
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code("121322", "DCM", "Source image for image processing operation")],
            ));
            let p = grid.positions[z];
            item(vec![
                seq(
                    tags::DERIVATION_IMAGE_SEQUENCE,
                    vec![item(vec![
                        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![item(src)]),
                        seq(tags::DERIVATION_CODE_SEQUENCE, vec![code("113076", "DCM", "Segmentation")]),
                    ])],
                ),
                seq(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item(vec![el(
                        tags::DIMENSION_INDEX_VALUES,
                        VR::UL,
                        PrimitiveValue::U32([k as u32, z as u32 + 1].into_iter().collect()),
                    )])],
                ),
                seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(vec![strs(tags::IMAGE_POSITION_PATIENT, VR::DS, &p.map(ds))])],
                ),
                seq(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item(vec![el(tags::REFERENCED_SEGMENT_NUMBER, VR::US, k as u16)])],
                ),
            ])
        })
        .collect();
    let thickness = match grid.slice_spacing() {
        s if s > 0.0 => s,
        _ => 1.0,
    };
    let shared = item(vec![
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(vec![strs(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &grid.orientation.map(ds))])],
        ),
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(vec![
                el(tags::SLICE_THICKNESS, VR::DS, ds(thickness)),
                el(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(thickness)),
                strs(tags::PIXEL_SPACING, VR::DS, &[ds(grid.spacing.0), ds(grid.spacing.1)]),
            ])],
        ),
    ]);
    let segments: Vec<InMemDicomObject> = classes
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let label: String = name.chars().take(64).collect();
            item(vec![
                seq(
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    vec![code("91723000", "SCT", "Anatomical Structure")],
                ),
                el(tags::SEGMENT_NUMBER, VR::US, (i + 1) as u16),
                el(tags::SEGMENT_LABEL, VR::LO, label.as_str()),
                seq(
                    tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
                    vec![item(vec![
                        seq(
                            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
                            vec![code("123110", "DCM", "Artificial Intelligence")],
                        ),
                        el(tags::ALGORITHM_VERSION, VR::LO, algorithm.version.as_str()),
                        el(tags::ALGORITHM_NAME, VR::LO, algorithm.name.as_str()),
                    ])],
                ),
                el(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
                el(tags::SEGMENT_ALGORITHM_NAME, VR::LO, algorithm.name.as_str()),
                seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![code("85756007", "SCT", "Tissue")]),
            ])
        })
        .collect();
    let dim = |pointer: Tag, group: Tag, label: &str| {
        item(vec![
            el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_uid.as_str()),
            el(tags::DIMENSION_INDEX_POINTER, VR::AT, PrimitiveValue::Tags([pointer].into_iter().collect())),
            el(tags::FUNCTIONAL_GROUP_POINTER, VR::AT, PrimitiveValue::Tags([group].into_iter().collect())),
            el(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    let instances: Vec<InMemDicomObject> = (0..nz).map(|z| item(source(z))).collect();
    let mut obj = InMemDicomObject::new_empty();
    for (tag, value) in &grid.header {
        let vr = dicom_dictionary_std::StandardDataDictionary.by_tag(*tag).map(|e| e.vr.relaxed()).unwrap_or(VR::LO);
        obj.put(el(*tag, vr, value.as_str()));
    }
    let description: String = algorithm.description.chars().take(64).collect();
    for e in [
        strs(tags::IMAGE_TYPE, VR::CS, &["DERIVED".into(), "PRIMARY".into()]),
        el(tags::INSTANCE_CREATION_DATE, VR::DA, date.as_str()),
        el(tags::INSTANCE_CREATION_TIME, VR::TM, time.as_str()),
        el(tags::SOP_CLASS_UID, VR::UI, SEG_SOP_CLASS),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.as_str()),
        el(tags::CONTENT_DATE, VR::DA, date.as_str()),
        el(tags::CONTENT_TIME, VR::TM, time.as_str()),
        el(tags::MODALITY, VR::CS, "SEG"),
        el(tags::MANUFACTURER, VR::LO, "vismae"),
        el(tags::MANUFACTURER_MODEL_NAME, VR::LO, algorithm.name.as_str()),
        el(tags::SERIES_DESCRIPTION, VR::LO, description.as_str()),
        el(tags::SOFTWARE_VERSIONS, VR::LO, algorithm.version.as_str()),
        el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        el(tags::STUDY_INSTANCE_UID, VR::UI, study.as_str()),
        el(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.as_str()),
        el(tags::SERIES_NUMBER, VR::IS, "901"),
        el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        el(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_ref.as_str()),
        el(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        seq(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![item(vec![
                seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances.clone()),
                el(tags::SERIES_INSTANCE_UID, VR::UI, grid.series_uid.as_str()),
            ])],
        ),
        seq(tags::SOURCE_IMAGE_SEQUENCE, instances),
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item(vec![el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_uid.as_str())])],
        ),
        seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                dim(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "Referenced Segment Number",
                ),
                dim(tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE, "Image Position Patient"),
            ],
        ),
        el(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D"),
        el(tags::SAMPLES_PER_PIXEL, VR::US, 1u16),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        el(tags::NUMBER_OF_FRAMES, VR::IS, frames.len().to_string()),
        el(tags::ROWS, VR::US, rows as u16),
        el(tags::COLUMNS, VR::US, cols as u16),
        el(tags::BITS_ALLOCATED, VR::US, 1u16),
        el(tags::BITS_STORED, VR::US, 1u16),
        el(tags::HIGH_BIT, VR::US, 0u16),
        el(tags::PIXEL_REPRESENTATION, VR::US, 0u16),
        el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        el(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        seq(tags::SEGMENT_SEQUENCE, segments),
        el(tags::SEGMENTS_OVERLAP, VR::CS, "NO"),
        el(tags::CONTENT_LABEL, VR::CS, "VISMAE_SEG"),
        el(tags::CONTENT_DESCRIPTION, VR::LO, description.as_str()),
        el(tags::CONTENT_CREATOR_NAME, VR::PN, "vismae"),
        el(tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY"),
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]),
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
        el(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(bits.into())),
    ] {
        obj.put(e);
    }
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(SEG_SOP_CLASS)
        .media_storage_sop_instance_uid(sop_uid.as_str())
        .transfer_syntax("1.2.840.10008.1.2.1")
        .implementation_class_uid(IMPLEMENTATION_UID)
        .implementation_version_name(format!("VISMAE_{}", env!("CARGO_PKG_VERSION")));
    let file = obj.with_meta(meta).map_err(|e| fail(format!("cannot build the SEG's file meta: {e}")))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|e| fail(format!("cannot encode the SEG: {e}")))?;
    vismae_run::run_dir::write_atomic(path, &bytes).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?;
    Ok(SegWritten { frames: frames.len(), sop_uid, series_uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_values_fit_sixteen_characters_and_dates_are_civil() {
        assert_eq!(ds(0.5), "0.5");
        assert_eq!(ds(-174.39450073242), "-174.39450073242");
        assert!(ds(-174.394_500_732_421_88).len() <= 16 && ds(123_456_789.123_456_78).len() <= 16);
        assert!(ds(1.0 / 3.0).len() <= 16 && ds(1e-30).len() <= 16);
        let (d, t) = now();
        assert!(d.len() == 8 && d.starts_with("20") && t.len() == 6, "{d} {t}");
        assert!(new_uid().starts_with("2.25.") && new_uid().len() <= 64 && new_uid() != new_uid());
    }
}
