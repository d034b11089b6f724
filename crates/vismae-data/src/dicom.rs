//! DICOM reading with dicom-rs: single and multi-frame files, the modality rescale (to HU for CT),
//! the header's VOI window (first of multi-valued, or a chosen one), MONOCHROME1, YBR and RGB
//! colour, and the transfer syntaxes dicom-rs decodes in pure Rust. Decoding is per frame, so a
//! large multi-frame file is never held decoded whole. Bytes are checked by [`prescan`] against
//! the [`Limits`] before dicom-rs sees them.

mod prescan;

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

use crate::error::{DataError, Reason};
use crate::intensity::{VoiFunction, Window};
use crate::limits::{Limits, fmt_bytes as show_bytes};
use crate::raster::Raster;

/// Header facts vismae records for an image.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DicomMeta {
    /// Modality tag (0008,0060), e.g. `CT`, `MR`, `CR`.
    pub modality: Option<String>,
    /// SOP Class UID (0008,0016): what kind of object this is.
    pub sop_class_uid: Option<String>,
    /// Patient ID (0010,0020).
    pub patient_id: Option<String>,
    /// Study Instance UID.
    pub study_uid: Option<String>,
    /// Series Instance UID.
    pub series_uid: Option<String>,
    /// SOP Instance UID.
    pub sop_uid: Option<String>,
    /// Frame of Reference UID: the patient coordinate system positions are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_of_reference_uid: Option<String>,
    /// Instance Number.
    pub instance_number: Option<i64>,
    /// Image Position (Patient), mm.
    pub position: Option<[f64; 3]>,
    /// Image Orientation (Patient): row and column direction cosines.
    pub orientation: Option<[f64; 6]>,
    /// Pixel Spacing: row spacing, column spacing (mm).
    pub spacing: Option<(f64, f64)>,
    /// Photometric Interpretation.
    pub photometric: String,
    /// Window centre/width pairs of the header, in order.
    pub windows: Vec<Window>,
    /// VOI LUT Function.
    pub voi_function: VoiFunction,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub columns: usize,
    /// Number of frames.
    pub frames: usize,
    /// Transfer syntax UID.
    pub transfer_syntax: String,
}

impl DicomMeta {
    /// The header window at `index` (0 = first), if present.
    pub fn window(&self, index: usize) -> Option<(Window, VoiFunction)> {
        self.windows.get(index).map(|w| (*w, self.voi_function))
    }

    /// Whether low values are displayed bright (MONOCHROME1), so windowed output is inverted.
    pub fn inverted(&self) -> bool {
        self.photometric.trim().eq_ignore_ascii_case("MONOCHROME1")
    }

    /// Distance of the slice along the normal of its orientation (for ordering a series).
    pub fn slice_location(&self) -> Option<f64> {
        let (p, o) = (self.position?, self.orientation?);
        let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
        Some(p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
    }
}

/// An opened DICOM file whose frames are decoded on demand.
pub struct DicomFile {
    path: PathBuf,
    obj: DefaultDicomObject,
    /// Header facts.
    pub meta: DicomMeta,
}

/// A text element's value; a value stored as bytes (an undefined VR read as UN) is read as text.
fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = match e.value() {
        dicom_core::DicomValue::Primitive(dicom_core::PrimitiveValue::U8(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => e.to_str().ok()?.into_owned(),
    };
    let s = s.trim().trim_end_matches('\0').trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The SOP Class UID of the data set, else of the file meta (Media Storage SOP Class UID).
fn sop_class(obj: &DefaultDicomObject) -> Option<String> {
    text(obj, tags::SOP_CLASS_UID).or_else(|| {
        let m = obj.meta().media_storage_sop_class_uid().trim_end_matches('\0').trim().to_string();
        (!m.is_empty()).then_some(m)
    })
}

fn floats(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Vec<f64> {
    obj.get(tag).and_then(|e| e.to_multi_float64().ok()).unwrap_or_default()
}

fn uint(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<usize> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok()).filter(|v| *v >= 0).map(|v| v as usize)
}

/// Parses DICOM bytes (a Part 10 file, preamble optional) within `limits` into a data set of any
/// kind (images, structure sets, segmentations); `path` names them in errors.
pub(crate) fn parse_object(path: &Path, bytes: &[u8], limits: &Limits) -> Result<DefaultDicomObject, DataError> {
    if bytes.is_empty() {
        return Err(DataError::new(path, Reason::Empty, "the file is empty"));
    }
    let start = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" { 128 } else { 0 };
    let parse = |b: &[u8]| -> Result<DefaultDicomObject, (Reason, String)> {
        prescan::prescan(b, limits).map_err(|e| match e.over_limit {
            true => (Reason::TooLarge, format!("DICOM header: {}", e.what)),
            false => (Reason::Corrupt, format!("cannot parse DICOM: {}", e.what)),
        })?;
        crate::guard::guarded(|| {
            OpenFileOptions::new().read_preamble(dicom_object::file::ReadPreamble::Never).from_reader(b)
        })
        .map_err(|p| (Reason::Corrupt, format!("cannot parse DICOM: the parser crashed ({p})")))?
        .map_err(|e| (Reason::Corrupt, format!("cannot parse DICOM: {e}")))
    };
    let obj = match parse(&bytes[start..]) {
        Ok(obj) => obj,
        // bytes after the pixel data (trailing padding some writers leave) are ignored, as
        // pydicom ignores them: parse again from the bytes up to the end of the pixel data
        Err(e) => match pixel_data_end(bytes).filter(|&end| end > start && end < bytes.len()) {
            Some(end) => {
                parse(&bytes[start..end]).map_err(|fallback| if e.0 == Reason::TooLarge { e } else { fallback })
            }
            None => Err(e),
        }
        .map_err(|(reason, message)| DataError::new(path, reason, message))?,
    };
    Ok(obj)
}

/// Whether `bytes` (the start of a file) look like DICOM: `DICM` after a 128-byte preamble, or a
/// preamble-less data set starting with a group 0002 or 0008 element.
pub fn sniff(bytes: &[u8]) -> bool {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        return true;
    }
    bytes.len() >= 8
        && (bytes[0..4] == [0x02, 0x00, 0x00, 0x00]
            || bytes[0..4] == [0x08, 0x00, 0x05, 0x00]
            || bytes[0..4] == [0x08, 0x00, 0x08, 0x00]
            || bytes[0..4] == [0x08, 0x00, 0x16, 0x00])
}

impl DicomFile {
    /// Opens and parses a DICOM file (pixel data is decoded later, per frame), with the default
    /// [`Limits`].
    pub fn open(path: &Path) -> Result<Self, DataError> {
        Self::open_with(path, &Limits::default())
    }

    /// Opens and parses a DICOM file within `limits` (its size is checked before it is read).
    pub fn open_with(path: &Path, limits: &Limits) -> Result<Self, DataError> {
        let bytes = limits.read_file(path)?;
        Self::from_bytes_with(path, &bytes, limits)
    }

    /// Parses DICOM bytes (a Part 10 file, preamble optional); `path` names them in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, DataError> {
        Self::from_bytes_with(path, bytes, &Limits::default())
    }

    /// [`DicomFile::from_bytes`] within `limits`: every declared length, the nesting depth and
    /// the declared pixel data are checked before dicom-rs allocates anything for them.
    pub fn from_bytes_with(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Self, DataError> {
        let obj = parse_object(path, bytes, limits)?;
        if obj.get(tags::PIXEL_DATA).is_none() && obj.get(tags::FLOAT_PIXEL_DATA).is_none() {
            let class = sop_class(&obj);
            if let Some(why) =
                crate::modality::non_image_reason(class.as_deref(), text(&obj, tags::MODALITY).as_deref())
            {
                return Err(DataError::new(path, Reason::NotAnImage, why));
            }
            return Err(DataError::new(
                path,
                Reason::NoPixelData,
                "DICOM object has no pixel data (a report, plan or structure set?)",
            ));
        }
        let windows = {
            let (c, w) = (floats(&obj, tags::WINDOW_CENTER), floats(&obj, tags::WINDOW_WIDTH));
            c.iter().zip(&w).map(|(&center, &width)| Window { center, width }).collect()
        };
        let pos = floats(&obj, tags::IMAGE_POSITION_PATIENT);
        let ori = floats(&obj, tags::IMAGE_ORIENTATION_PATIENT);
        let spacing = floats(&obj, tags::PIXEL_SPACING);
        let meta = DicomMeta {
            modality: text(&obj, tags::MODALITY),
            sop_class_uid: sop_class(&obj),
            patient_id: text(&obj, tags::PATIENT_ID),
            study_uid: text(&obj, tags::STUDY_INSTANCE_UID),
            series_uid: text(&obj, tags::SERIES_INSTANCE_UID),
            sop_uid: text(&obj, tags::SOP_INSTANCE_UID),
            frame_of_reference_uid: text(&obj, tags::FRAME_OF_REFERENCE_UID),
            instance_number: obj.get(tags::INSTANCE_NUMBER).and_then(|e| e.to_int::<i64>().ok()),
            position: (pos.len() == 3).then(|| [pos[0], pos[1], pos[2]]),
            orientation: (ori.len() == 6).then(|| [ori[0], ori[1], ori[2], ori[3], ori[4], ori[5]]),
            spacing: (spacing.len() == 2).then(|| (spacing[0], spacing[1])),
            photometric: text(&obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| "MONOCHROME2".into()),
            windows,
            voi_function: text(&obj, tags::VOILUT_FUNCTION).map(|s| VoiFunction::from_header(&s)).unwrap_or_default(),
            rows: uint(&obj, tags::ROWS).unwrap_or(0),
            columns: uint(&obj, tags::COLUMNS).unwrap_or(0),
            frames: text(&obj, tags::NUMBER_OF_FRAMES).and_then(|s| s.parse().ok()).unwrap_or(1).max(1),
            transfer_syntax: obj.meta().transfer_syntax().trim_end_matches('\0').to_string(),
        };
        if meta.rows == 0 || meta.columns == 0 {
            return Err(DataError::new(path, Reason::Corrupt, "DICOM image has zero rows or columns"));
        }
        check_sizes(path, &obj, &meta, limits)?;
        Ok(Self { path: path.into(), obj, meta })
    }

    /// Maps palette indices through the header's red/green/blue lookup tables (PS3.3 C.7.6.3.1.5),
    /// giving RGB samples in the tables' range.
    fn apply_palette(&self, indices: &[f32], w: usize, h: usize) -> Result<Raster, DataError> {
        let bad = |m: String| DataError::new(&self.path, Reason::Unsupported, m);
        let mut luts = Vec::new();
        for (desc, data) in [
            (tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA),
            (tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA),
            (tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA),
        ] {
            let d: Vec<i64> = self.obj.get(desc).and_then(|e| e.to_multi_int::<i64>().ok()).unwrap_or_default();
            if d.len() != 3 {
                return Err(bad(
                    "palette colour without a usable lookup table descriptor (segmented palettes are not supported)"
                        .into(),
                ));
            }
            let entries = if d[0] == 0 { 65536 } else { d[0] as usize };
            let raw = self
                .obj
                .get(data)
                .and_then(|e| e.to_bytes().ok().map(|b| b.into_owned()))
                .ok_or_else(|| bad("palette colour without lookup table data".into()))?;
            let table: Vec<f32> = if d[2] == 8 && raw.len() == entries {
                raw.iter().map(|&b| b as f32).collect()
            } else {
                raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as f32).collect()
            };
            if table.len() < entries {
                return Err(bad(format!("palette table holds {} entries, its descriptor says {entries}", table.len())));
            }
            luts.push((d[1], table));
        }
        let mut data = Vec::with_capacity(w * h * 3);
        for &ix in indices {
            for (first, table) in &luts {
                let k = (ix as i64 - first).clamp(0, table.len() as i64 - 1) as usize;
                data.push(table[k]);
            }
        }
        Ok(Raster::new(w, h, 3, data))
    }

    /// The parsed data set.
    pub fn object(&self) -> &DefaultDicomObject {
        &self.obj
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decodes frame `index`: modality rescale applied (HU for CT), colour as RGB, no VOI.
    pub fn frame(&self, index: usize) -> Result<Raster, DataError> {
        if index >= self.meta.frames {
            return Err(DataError::new(
                &self.path,
                Reason::BadArgument,
                format!("frame {index} requested, the file has {} frame(s)", self.meta.frames),
            ));
        }
        let decoded = crate::guard::guarded(|| self.obj.decode_pixel_data_frame(index as u32))
            .map_err(|p| {
                DataError::new(
                    &self.path,
                    Reason::Corrupt,
                    format!("the pixel data decoder crashed on malformed data ({p})"),
                )
            })?
            .map_err(|e| {
                let msg = e.to_string();
                let ts = self.meta.transfer_syntax.as_str();
                // JPEG-LS, 12-bit extended JPEG, JPEG-XL and MPEG/HEVC video have no pure-Rust decoder here
                let undecodable = [
                    "1.2.840.10008.1.2.4.80",
                    "1.2.840.10008.1.2.4.81",
                    "1.2.840.10008.1.2.4.51",
                    "1.2.840.10008.1.2.4.100",
                    "1.2.840.10008.1.2.4.101",
                    "1.2.840.10008.1.2.4.102",
                    "1.2.840.10008.1.2.4.103",
                    "1.2.840.10008.1.2.4.104",
                    "1.2.840.10008.1.2.4.105",
                    "1.2.840.10008.1.2.4.106",
                    "1.2.840.10008.1.2.4.107",
                    "1.2.840.10008.1.2.4.108",
                    "1.2.840.10008.1.2.4.110",
                    "1.2.840.10008.1.2.4.111",
                    "1.2.840.10008.1.2.4.112",
                ];
                let reason = if undecodable.contains(&ts)
                    || msg.contains("nsupported")
                    || msg.contains("not supported")
                    || msg.contains("No decoder")
                {
                    Reason::Unsupported
                } else {
                    Reason::Corrupt
                };
                DataError::new(
                    &self.path,
                    reason,
                    format!("cannot decode pixel data (transfer syntax {}): {msg}", self.meta.transfer_syntax),
                )
            })?;
        let opts = ConvertOptions::new().with_modality_lut(ModalityLutOption::Default);
        let (w, h) = (decoded.columns() as usize, decoded.rows() as usize);
        let spp = decoded.samples_per_pixel() as usize;
        // dicom-rs refuses planar colour and 32-bit samples; those are converted here
        let converted = crate::guard::guarded(|| decoded.to_vec_frame_with_options(0, &opts)).map_err(|p| {
            DataError::new(&self.path, Reason::Corrupt, format!("pixel conversion crashed on malformed data ({p})"))
        })?;
        let values: Vec<f32> = match converted {
            Ok(v) => v,
            Err(_) => raw_frame(&decoded, w * h * spp)
                .map_err(|m| DataError::new(&self.path, Reason::Corrupt, format!("cannot convert pixel data: {m}")))?,
        };
        if values.len() != w * h * spp {
            return Err(DataError::new(
                &self.path,
                Reason::Corrupt,
                format!("pixel data holds {} samples, expected {h} x {w} x {spp}", values.len()),
            ));
        }
        if self.meta.photometric.eq_ignore_ascii_case("PALETTE COLOR") {
            return self.apply_palette(&values, w, h);
        }
        let pi = decoded.photometric_interpretation().as_str().to_ascii_uppercase();
        let mut raster = Raster::new(w, h, spp, values);
        if spp == 3 && pi.starts_with("YBR_FULL") {
            ybr_full_to_rgb(&mut raster.data);
        }
        Ok(raster)
    }
}

/// Checks the header's geometry against the pixel data before anything is decoded (the
/// pre-scan checked the same from the raw bytes; this reads what dicom-rs parsed).
fn check_sizes(path: &Path, obj: &DefaultDicomObject, meta: &DicomMeta, limits: &Limits) -> Result<(), DataError> {
    let spp = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1).max(1) as u64;
    let bits = uint(obj, tags::BITS_ALLOCATED).unwrap_or(16).max(1) as u64;
    let frame_bytes = (meta.rows as u64 * meta.columns as u64 * spp * bits).div_ceil(8);
    if frame_bytes > limits.max_frame_bytes {
        return Err(DataError::new(
            path,
            Reason::TooLarge,
            format!(
                "one frame of Rows {} x Columns {} x Samples per Pixel {spp} x Bits Allocated {bits} is {}, over the limit of {} (max_frame_bytes)",
                meta.rows,
                meta.columns,
                show_bytes(frame_bytes),
                show_bytes(limits.max_frame_bytes)
            ),
        ));
    }
    if let Some(dicom_core::DicomValue::Primitive(p)) = obj.get(tags::PIXEL_DATA).map(|e| e.value()) {
        // native (uncompressed) data must hold every frame the header promises; 1-bit frames are
        // packed end to end, and 4:2:2 colour stores 2 samples per pixel
        let have = p.calculate_byte_len() as u64;
        let stored = prescan::native_samples(spp, Some(&meta.photometric));
        let need = (meta.rows as u64 * meta.columns as u64 * stored * bits * meta.frames as u64).div_ceil(8);
        if have < need {
            return Err(DataError::new(
                path,
                Reason::Corrupt,
                format!(
                    "truncated pixel data: {have} bytes, the header needs {need} ({} frame(s) of {}x{})",
                    meta.frames, meta.rows, meta.columns
                ),
            ));
        }
    }
    Ok(())
}

/// End of the top-level Pixel Data element in a file's bytes, found by its header: tag
/// (7FE0,0010) in little-endian order followed by an explicit OB/OW VR and a length, or an
/// implicit length, that fits in the file (or the undefined length of encapsulated data, whose
/// end is the sequence delimiter).
pub(crate) fn pixel_data_end(bytes: &[u8]) -> Option<usize> {
    let tag = [0xE0u8, 0x7F, 0x10, 0x00];
    let mut from = 0;
    while let Some(at) = bytes[from..].windows(4).position(|w| w == tag).map(|p| p + from) {
        from = at + 1;
        let rest = &bytes[at + 4..];
        let explicit = rest.len() >= 8 && (&rest[..2] == b"OW" || &rest[..2] == b"OB") && rest[2..4] == [0, 0];
        let (len, header) = if explicit {
            (u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]), 12)
        } else if rest.len() >= 4 {
            (u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]), 8)
        } else {
            continue;
        };
        if len == u32::MAX {
            let delim = [0xFEu8, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
            if let Some(d) = bytes[at..].windows(8).position(|w| w == delim) {
                return Some(at + d + 8);
            }
            continue;
        }
        let end = at + header + len as usize;
        if end <= bytes.len() {
            return Some(end);
        }
    }
    None
}

/// Converts a decoded frame by hand: 8/16/32-bit samples, either sign, planar or interleaved,
/// with the frame's rescale applied.
fn raw_frame(decoded: &dicom_pixeldata::DecodedPixelData<'_>, count: usize) -> Result<Vec<f32>, String> {
    let bytes = decoded.frame_data(0).map_err(|e| e.to_string())?;
    let bits = decoded.bits_allocated() as usize;
    let signed = decoded.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed;
    if bits == 1 {
        // binary segmentations: one byte per sample once decoded, or packed LSB first
        return Ok(if bytes.len() >= count {
            bytes[..count].iter().map(|&b| (b & 1) as f32).collect()
        } else if bytes.len() * 8 >= count {
            (0..count).map(|i| ((bytes[i / 8] >> (i % 8)) & 1) as f32).collect()
        } else {
            return Err(format!("1-bit samples, {} bytes for {count} samples", bytes.len()));
        });
    }
    let size = bits / 8;
    if !(size == 1 || size == 2 || size == 4) || bytes.len() < count * size {
        return Err(format!("{bits}-bit samples, {} bytes for {count} samples", bytes.len()));
    }
    let mut v: Vec<f32> = bytes[..count * size]
        .chunks_exact(size)
        .map(|c| match (size, signed) {
            (1, false) => c[0] as f32,
            (1, true) => c[0] as i8 as f32,
            (2, false) => u16::from_le_bytes([c[0], c[1]]) as f32,
            (2, true) => i16::from_le_bytes([c[0], c[1]]) as f32,
            (_, false) => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
            (_, true) => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
        })
        .collect();
    let spp = decoded.samples_per_pixel() as usize;
    if spp > 1 && decoded.planar_configuration() == dicom_pixeldata::PlanarConfiguration::PixelFirst {
        let n = count / spp;
        let planar = v.clone();
        for i in 0..n {
            for c in 0..spp {
                v[i * spp + c] = planar[c * n + i];
            }
        }
    }
    if spp == 1
        && let Some(r) = decoded.rescale().ok().and_then(|r| r.first().copied())
    {
        v.iter_mut().for_each(|x| *x = (*x as f64 * r.slope + r.intercept) as f32);
    }
    Ok(v)
}

/// YCbCr (full range, ITU-R BT.601) to RGB in place, as PS3.3 C.7.6.3.1.2 defines YBR_FULL.
fn ybr_full_to_rgb(data: &mut [f32]) {
    for p in data.chunks_exact_mut(3) {
        let (y, cb, cr) = (p[0], p[1] - 128.0, p[2] - 128.0);
        p[0] = (y + 1.402 * cr).clamp(0.0, 255.0);
        p[1] = (y - 0.344_136 * cb - 0.714_136 * cr).clamp(0.0, 255.0);
        p[2] = (y + 1.772 * cb).clamp(0.0, 255.0);
    }
}
