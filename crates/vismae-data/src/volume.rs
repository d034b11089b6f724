//! 3-D and 4-D volumes: a NIfTI-1 reader (`.nii`, `.nii.gz`, `.hdr`/`.img`; `scl_slope`/`scl_inter`
//! applied), and small readers for MetaImage (`.mha`, `.mhd` + raw) and NRRD (ASCII header, raw or
//! gzip data). Volumes are cut into 2-D slices along a chosen plane.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Reason};
use crate::raster::Raster;

/// A volume `x`-fastest: `data[((t * nz + z) * ny + y) * nx + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    /// `[nx, ny, nz, nt]` (missing dimensions are 1).
    pub dims: [usize; 4],
    /// Voxel size along x, y, z (mm), 1 where unknown.
    pub spacing: [f64; 3],
    /// Values after any intensity scaling the header asks for.
    pub data: Vec<f32>,
}

/// A slicing plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// Slices of constant z; rows run along y (flipped), columns along x.
    Axial,
    /// Slices of constant y; rows run along z (flipped), columns along x.
    Coronal,
    /// Slices of constant x; rows run along z (flipped), columns along y.
    Sagittal,
}

impl std::str::FromStr for Plane {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "axial" => Ok(Plane::Axial),
            "coronal" => Ok(Plane::Coronal),
            "sagittal" => Ok(Plane::Sagittal),
            _ => Err(format!("plane {s:?}: use axial, coronal or sagittal")),
        }
    }
}

impl Volume {
    /// Slices along `plane` in one time point.
    pub fn num_slices(&self, plane: Plane) -> usize {
        match plane {
            Plane::Axial => self.dims[2],
            Plane::Coronal => self.dims[1],
            Plane::Sagittal => self.dims[0],
        }
    }

    /// Slice `index` along `plane` at time point `t`, displayed with superior/anterior at the top.
    pub fn slice(&self, plane: Plane, index: usize, t: usize) -> Raster {
        let [nx, ny, nz, _] = self.dims;
        let at = |x: usize, y: usize, z: usize| self.data[((t * nz + z) * ny + y) * nx + x];
        let (w, h) = match plane {
            Plane::Axial => (nx, ny),
            Plane::Coronal => (nx, nz),
            Plane::Sagittal => (ny, nz),
        };
        let mut data = Vec::with_capacity(w * h);
        for r in 0..h {
            let flipped = h - 1 - r;
            for c in 0..w {
                data.push(match plane {
                    Plane::Axial => at(c, flipped, index),
                    Plane::Coronal => at(c, index, flipped),
                    Plane::Sagittal => at(index, c, flipped),
                });
            }
        }
        Raster::new(w, h, 1, data)
    }

    /// In-plane pixel spacing (row spacing, column spacing) of slices along `plane`.
    pub fn slice_spacing(&self, plane: Plane) -> (f64, f64) {
        let [sx, sy, sz] = self.spacing;
        match plane {
            Plane::Axial => (sy, sx),
            Plane::Coronal => (sz, sx),
            Plane::Sagittal => (sz, sy),
        }
    }
}

/// Element types of raw volume data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawType {
    /// unsigned 8-bit
    U8,
    /// signed 8-bit
    I8,
    /// unsigned 16-bit
    U16,
    /// signed 16-bit
    I16,
    /// unsigned 32-bit
    U32,
    /// signed 32-bit
    I32,
    /// unsigned 64-bit
    U64,
    /// signed 64-bit
    I64,
    /// 32-bit float
    F32,
    /// 64-bit float
    F64,
}

impl RawType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            RawType::U8 | RawType::I8 => 1,
            RawType::U16 | RawType::I16 => 2,
            RawType::U32 | RawType::I32 | RawType::F32 => 4,
            RawType::U64 | RawType::I64 | RawType::F64 => 8,
        }
    }
}

/// Decodes `count` elements of `ty` from `bytes`.
pub fn decode_raw(bytes: &[u8], ty: RawType, big_endian: bool, count: usize) -> Option<Vec<f32>> {
    let size = ty.size();
    if bytes.len() < count * size {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for chunk in bytes[..count * size].chunks_exact(size) {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(chunk);
        if big_endian {
            b[..size].reverse();
        }
        out.push(match ty {
            RawType::U8 => b[0] as f32,
            RawType::I8 => b[0] as i8 as f32,
            RawType::U16 => u16::from_le_bytes([b[0], b[1]]) as f32,
            RawType::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            RawType::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            RawType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            RawType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            RawType::U64 => u64::from_le_bytes(b) as f32,
            RawType::I64 => i64::from_le_bytes(b) as f32,
            RawType::F64 => f64::from_le_bytes(b) as f32,
        });
    }
    Some(out)
}

fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?;
    if bytes.is_empty() {
        return Err(DataError::new(path, Reason::Empty, "the file is empty"));
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::new(path, Reason::Corrupt, format!("gzip stream is damaged: {e}")))?;
        return Ok(out);
    }
    Ok(bytes)
}

/// Whether `bytes` (decompressed) start with a NIfTI-1 header (either byte order).
pub fn sniff_nifti(bytes: &[u8]) -> bool {
    bytes.len() >= 348
        && (i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == 348
            || i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == 348)
        && (&bytes[344..347] == b"n+1" || &bytes[344..347] == b"ni1")
}

/// Reads a NIfTI-1 volume.
pub fn read_nifti(path: &Path) -> Result<Volume, DataError> {
    let bytes = read_all(path)?;
    nifti_from_bytes(path, &bytes, || read_all(&img_path(path)))
}

/// Parses NIfTI-1 bytes (already decompressed); `img` supplies the data of a `.hdr`/`.img` pair.
/// `path` names the file in errors.
pub fn nifti_from_bytes(
    path: &Path,
    bytes: &[u8],
    img: impl FnOnce() -> Result<Vec<u8>, DataError>,
) -> Result<Volume, DataError> {
    let bad = |m: String| DataError::new(path, Reason::Corrupt, m);
    if bytes.len() >= 4 && (i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == 540) {
        return Err(DataError::new(path, Reason::Unsupported, "NIfTI-2 files are not supported"));
    }
    if !sniff_nifti(bytes) {
        return Err(bad("not a NIfTI-1 file: sizeof_hdr is not 348 or the magic is missing".into()));
    }
    let be = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != 348;
    let i16_at = |o: usize| {
        let a = [bytes[o], bytes[o + 1]];
        if be { i16::from_be_bytes(a) } else { i16::from_le_bytes(a) }
    };
    let f32_at = |o: usize| {
        let a = [bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]];
        if be { f32::from_be_bytes(a) } else { f32::from_le_bytes(a) }
    };
    let ndim = i16_at(40);
    if !(1..=7).contains(&ndim) {
        return Err(bad(format!("broken header: dim[0] = {ndim}, expected 1 to 7")));
    }
    let mut dims = [1usize; 4];
    #[allow(clippy::needless_range_loop)] // i also addresses the header and names the field
    for i in 0..ndim as usize {
        let d = i16_at(42 + 2 * i);
        if d < 1 {
            return Err(bad(format!("broken header: dim[{}] = {d}", i + 1)));
        }
        if i < 4 {
            dims[i] = d as usize;
        } else if d > 1 {
            return Err(DataError::new(
                path,
                Reason::Unsupported,
                format!("{ndim}-D NIfTI with dim[{}] = {d}: only up to 4-D is read", i + 1),
            ));
        }
    }
    let datatype = i16_at(70);
    let ty = match datatype {
        2 => RawType::U8,
        4 => RawType::I16,
        8 => RawType::I32,
        16 => RawType::F32,
        64 => RawType::F64,
        256 => RawType::I8,
        512 => RawType::U16,
        768 => RawType::U32,
        1024 => RawType::I64,
        1280 => RawType::U64,
        other => {
            return Err(DataError::new(
                path,
                Reason::Unsupported,
                format!("NIfTI datatype {other} (complex or RGB) is not supported"),
            ));
        }
    };
    let spacing = [1, 2, 3].map(|i| {
        let v = f32_at(76 + 4 * i).abs() as f64;
        if v > 0.0 && v.is_finite() { v } else { 1.0 }
    });
    let count: usize = dims.iter().product();
    let single = &bytes[344..347] == b"n+1";
    let data_bytes: Vec<u8>;
    let payload: &[u8] = if single {
        let offset = f32_at(108).max(352.0) as usize;
        if offset > bytes.len() {
            return Err(bad(format!("vox_offset {offset} is past the end of the file ({} bytes)", bytes.len())));
        }
        &bytes[offset..]
    } else {
        data_bytes = img()?;
        &data_bytes
    };
    let mut data = decode_raw(payload, ty, be, count).ok_or_else(|| {
        bad(format!(
            "truncated: the header promises {count} voxels of {} bytes, the data holds {} bytes",
            ty.size(),
            payload.len()
        ))
    })?;
    let (slope, inter) = (f32_at(112), f32_at(116));
    if slope != 0.0 && slope.is_finite() && (slope != 1.0 || inter != 0.0) {
        let inter = if inter.is_finite() { inter } else { 0.0 };
        data.iter_mut().for_each(|v| *v = *v * slope + inter);
    }
    Ok(Volume { dims, spacing, data })
}

fn img_path(hdr: &Path) -> PathBuf {
    let s = hdr.to_string_lossy();
    if let Some(stem) = s.strip_suffix(".hdr.gz") {
        return PathBuf::from(format!("{stem}.img.gz"));
    }
    hdr.with_extension("img")
}

/// Whether `bytes` start a MetaImage header.
pub fn sniff_metaimage(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
    ["ObjectType", "NDims", "Comment"].iter().any(|k| head.trim_start().starts_with(k))
}

/// Whether `bytes` start an NRRD header.
pub fn sniff_nrrd(bytes: &[u8]) -> bool {
    bytes.starts_with(b"NRRD000")
}

fn parse_usizes(s: &str) -> Option<Vec<usize>> {
    s.split_whitespace().map(|v| v.parse().ok()).collect()
}

fn parse_floats(s: &str) -> Vec<f64> {
    s.split_whitespace().filter_map(|v| v.trim_matches(|c| c == '(' || c == ')' || c == ',').parse().ok()).collect()
}

fn assemble(
    path: &Path,
    sizes: &[usize],
    spacing: &[f64],
    mut data: Vec<f32>,
    channels: usize,
) -> Result<Volume, DataError> {
    if sizes.is_empty() || sizes.len() > 4 || sizes.contains(&0) {
        return Err(DataError::new(path, Reason::Corrupt, format!("invalid sizes {sizes:?}")));
    }
    if channels > 1 {
        data = data.chunks_exact(channels).map(|c| c.iter().sum::<f32>() / channels as f32).collect();
    }
    let mut dims = [1usize; 4];
    dims[..sizes.len()].copy_from_slice(sizes);
    let mut sp = [1f64; 3];
    for (i, s) in spacing.iter().take(3).enumerate() {
        if *s > 0.0 {
            sp[i] = *s;
        }
    }
    Ok(Volume { dims, spacing: sp, data })
}

/// Reads a MetaImage (`.mha` with local data or `.mhd` with a raw file beside it).
pub fn read_metaimage(path: &Path) -> Result<Volume, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?;
    let bad = |m: String| DataError::new(path, Reason::Corrupt, m);
    let mut pos = 0;
    let mut fields = std::collections::HashMap::new();
    let mut data_file = None;
    while pos < bytes.len() {
        let end = bytes[pos..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |e| pos + e + 1);
        let line = String::from_utf8_lossy(&bytes[pos..end]).trim().to_string();
        pos = end;
        if let Some((k, v)) = line.split_once('=') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k == "ElementDataFile" {
                data_file = Some(v);
                break;
            }
            fields.insert(k, v);
        }
    }
    let data_file = data_file.ok_or_else(|| bad("MetaImage header has no ElementDataFile line".into()))?;
    let sizes =
        fields.get("DimSize").and_then(|s| parse_usizes(s)).ok_or_else(|| bad("missing or invalid DimSize".into()))?;
    let ty = match fields.get("ElementType").map(String::as_str) {
        Some("MET_UCHAR") => RawType::U8,
        Some("MET_CHAR") => RawType::I8,
        Some("MET_USHORT") => RawType::U16,
        Some("MET_SHORT") => RawType::I16,
        Some("MET_UINT") | Some("MET_ULONG") => RawType::U32,
        Some("MET_INT") | Some("MET_LONG") => RawType::I32,
        Some("MET_ULONG_LONG") => RawType::U64,
        Some("MET_LONG_LONG") => RawType::I64,
        Some("MET_FLOAT") => RawType::F32,
        Some("MET_DOUBLE") => RawType::F64,
        other => {
            return Err(DataError::new(
                path,
                Reason::Unsupported,
                format!("MetaImage ElementType {other:?} is not supported"),
            ));
        }
    };
    let is_true = |k: &str| fields.get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let be = is_true("BinaryDataByteOrderMSB") || is_true("ElementByteOrderMSB");
    let channels: usize = fields.get("ElementNumberOfChannels").and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let raw = if data_file.eq_ignore_ascii_case("LOCAL") {
        bytes[pos..].to_vec()
    } else {
        let other = path.parent().unwrap_or(Path::new(".")).join(&data_file);
        std::fs::read(&other)
            .map_err(|e| DataError::new(&other, Reason::Io, format!("data file of {}: {e}", path.display())))?
    };
    let raw = if is_true("CompressedData") {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("compressed data is damaged: {e}")))?;
        out
    } else {
        raw
    };
    let count = sizes.iter().product::<usize>() * channels;
    let data = decode_raw(&raw, ty, be, count).ok_or_else(|| {
        bad(format!("truncated: DimSize {sizes:?} needs {} bytes, the data holds {}", count * ty.size(), raw.len()))
    })?;
    let spacing =
        fields.get("ElementSpacing").or(fields.get("ElementSize")).map(|s| parse_floats(s)).unwrap_or_default();
    assemble(path, &sizes, &spacing, data, channels)
}

/// Reads an NRRD file (attached or detached raw/gzip data).
pub fn read_nrrd(path: &Path) -> Result<Volume, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?;
    let bad = |m: String| DataError::new(path, Reason::Corrupt, m);
    let mut pos = 0;
    let mut fields = std::collections::HashMap::new();
    let mut first = true;
    while pos < bytes.len() {
        let end = bytes[pos..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |e| pos + e + 1);
        let line = String::from_utf8_lossy(&bytes[pos..end]).trim_end_matches(['\r', '\n']).to_string();
        pos = end;
        if first {
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_ascii_lowercase(), v.trim_start_matches('=').trim().to_string());
        }
    }
    let sizes =
        fields.get("sizes").and_then(|s| parse_usizes(s)).ok_or_else(|| bad("missing or invalid sizes".into()))?;
    let ty = match fields.get("type").map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("uchar" | "unsigned char" | "uint8" | "uint8_t") => RawType::U8,
        Some("signed char" | "int8" | "int8_t") => RawType::I8,
        Some("ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t") => RawType::U16,
        Some("short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t") => RawType::I16,
        Some("uint" | "unsigned int" | "uint32" | "uint32_t") => RawType::U32,
        Some("int" | "signed int" | "int32" | "int32_t") => RawType::I32,
        Some("float") => RawType::F32,
        Some("double") => RawType::F64,
        other => {
            return Err(DataError::new(path, Reason::Unsupported, format!("NRRD type {other:?} is not supported")));
        }
    };
    let be = fields.get("endian").is_some_and(|e| e == "big");
    let raw = match fields.get("data file").or(fields.get("datafile")) {
        Some(f) => {
            let other = path.parent().unwrap_or(Path::new(".")).join(f);
            std::fs::read(&other)
                .map_err(|e| DataError::new(&other, Reason::Io, format!("data file of {}: {e}", path.display())))?
        }
        None => bytes[pos..].to_vec(),
    };
    let raw = match fields.get("encoding").map(String::as_str) {
        Some("raw") | None => raw,
        Some("gzip" | "gz") => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("gzip data is damaged: {e}")))?;
            out
        }
        Some(other) => {
            return Err(DataError::new(path, Reason::Unsupported, format!("NRRD encoding {other:?} is not supported")));
        }
    };
    let count = sizes.iter().product::<usize>();
    let data = decode_raw(&raw, ty, be, count).ok_or_else(|| {
        bad(format!("truncated: sizes {sizes:?} need {} bytes, the data holds {}", count * ty.size(), raw.len()))
    })?;
    // a leading non-spatial axis (kind "vector"/"RGB-color", or "none" for space directions) is channels
    let spatial_first = fields
        .get("kinds")
        .map(|k| {
            k.split_whitespace()
                .next()
                .map(|f| f.eq_ignore_ascii_case("domain") || f.eq_ignore_ascii_case("space"))
                .unwrap_or(true)
        })
        .unwrap_or(true);
    let (sizes, channels) =
        if !spatial_first && sizes.len() > 1 { (sizes[1..].to_vec(), sizes[0]) } else { (sizes, 1) };
    let spacing = if let Some(s) = fields.get("spacings") {
        parse_floats(s)
    } else if let Some(d) = fields.get("space directions") {
        d.split(')')
            .filter(|v| v.contains('('))
            .map(|v| parse_floats(&v.replace(['(', ','], " ")).iter().map(|x| x * x).sum::<f64>().sqrt())
            .collect()
    } else {
        Vec::new()
    };
    assemble(path, &sizes, &spacing, data, channels)
}

/// The voxel-to-world affine (RAS+, NIfTI sform rows) of a NIfTI-1 file: its sform when set,
/// else a diagonal from the voxel sizes.
pub fn nifti_affine(path: &Path) -> Result<[[f64; 4]; 3], DataError> {
    let h = read_all(path)?;
    if !sniff_nifti(&h) {
        return Err(DataError::new(path, Reason::Unsupported, "not a NIfTI-1 file"));
    }
    let be = i32::from_le_bytes([h[0], h[1], h[2], h[3]]) != 348;
    let f = |o: usize| {
        let b = [h[o], h[o + 1], h[o + 2], h[o + 3]];
        f64::from(if be { f32::from_be_bytes(b) } else { f32::from_le_bytes(b) })
    };
    let sform = if be { i16::from_be_bytes([h[254], h[255]]) } else { i16::from_le_bytes([h[254], h[255]]) };
    if sform > 0 {
        return Ok([0, 1, 2].map(|r| [0, 1, 2, 3].map(|k| f(280 + 16 * r + 4 * k))));
    }
    let mut a = [[0.0; 4]; 3];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = f(80 + 4 * i).abs().max(f64::MIN_POSITIVE);
    }
    Ok(a)
}

/// Writes a volume as NIfTI-1 (`.nii`, or gzipped when the path ends in `.gz`), float32 or uint8
/// (`labels`), with a diagonal affine from the spacing. The file is written atomically.
pub fn write_nifti(path: &Path, vol: &Volume, labels: bool) -> Result<(), DataError> {
    write_nifti_affine(path, vol, labels, None)
}

/// Writes a volume as NIfTI-1 like [`write_nifti`], with `affine` (RAS+ voxel-to-world rows, as
/// NIfTI's sform) when given instead of the diagonal one from the spacing.
pub fn write_nifti_affine(
    path: &Path,
    vol: &Volume,
    labels: bool,
    affine: Option<[[f64; 4]; 3]>,
) -> Result<(), DataError> {
    let io = |e: std::io::Error| DataError::new(path, Reason::Io, e.to_string());
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    let ndim: i16 = if vol.dims[3] > 1 { 4 } else { 3 };
    let mut dim = [1i16; 8];
    dim[0] = ndim;
    for i in 0..4 {
        dim[i + 1] = vol.dims[i] as i16;
    }
    for (i, d) in dim.iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    let (datatype, bitpix): (i16, i16) = if labels { (2, 8) } else { (16, 32) };
    h[70..72].copy_from_slice(&datatype.to_le_bytes());
    h[72..74].copy_from_slice(&bitpix.to_le_bytes());
    let pixdim = [1.0f32, vol.spacing[0] as f32, vol.spacing[1] as f32, vol.spacing[2] as f32, 1.0, 1.0, 1.0, 1.0];
    for (i, p) in pixdim.iter().enumerate() {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&p.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352f32.to_le_bytes()); // vox_offset
    h[112..116].copy_from_slice(&1f32.to_le_bytes()); // scl_slope
    h[123] = 10; // xyzt_units: mm, s
    h[254..256].copy_from_slice(&1i16.to_le_bytes()); // sform_code: scanner
    for (row, at) in [(0usize, 280usize), (1, 296), (2, 312)] {
        let mut srow = [0f32; 4];
        srow[row] = vol.spacing[row] as f32;
        if let Some(a) = affine {
            srow = a[row].map(|v| v as f32);
        }
        for (k, v) in srow.iter().enumerate() {
            h[at + 4 * k..at + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    let mut bytes = h;
    if labels {
        bytes.extend(vol.data.iter().map(|&v| v.clamp(0.0, 255.0).round() as u8));
    } else {
        bytes.extend(vol.data.iter().flat_map(|v| v.to_le_bytes()));
    }
    if path.to_string_lossy().ends_with(".gz") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).map_err(io)?;
        bytes = gz.finish().map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Writes a uint8 label volume as NIfTI-1 with the header of `template` (a `.nii`/`.nii.gz` file):
/// its affine (qform, sform), spacing, units and byte order are kept; the data type, dimensions,
/// scaling and offset are set for the labels. `labels` must have the template's x, y, z sizes.
pub fn write_nifti_labels_like(path: &Path, template: &Path, labels: &Volume) -> Result<(), DataError> {
    write_nifti_like(path, template, labels, true)
}

/// Writes a volume (uint8 `labels`, else float32; a 4th dimension allowed, e.g. one frame per
/// class) as NIfTI-1 with the header of `template`, as [`write_nifti_labels_like`] does.
pub fn write_nifti_like(path: &Path, template: &Path, labels: &Volume, as_labels: bool) -> Result<(), DataError> {
    let src = read_all(template)?;
    if !sniff_nifti(&src) || &src[344..347] != b"n+1" {
        return Err(DataError::new(
            template,
            Reason::Unsupported,
            "the template must be a single-file NIfTI-1 (.nii or .nii.gz)",
        ));
    }
    let be = i32::from_le_bytes([src[0], src[1], src[2], src[3]]) != 348;
    let put16 = |h: &mut Vec<u8>, o: usize, v: i16| {
        h[o..o + 2].copy_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() })
    };
    let put32 = |h: &mut Vec<u8>, o: usize, v: f32| {
        h[o..o + 4].copy_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() })
    };
    let mut h = src[..348].to_vec();
    let [nx, ny, nz, nt] = labels.dims;
    let get16 =
        |o: usize| if be { i16::from_be_bytes([src[o], src[o + 1]]) } else { i16::from_le_bytes([src[o], src[o + 1]]) };
    let tdims = [get16(42) as usize, get16(44) as usize, get16(46).max(1) as usize];
    if tdims != [nx, ny, nz] {
        return Err(DataError::new(
            template,
            Reason::BadArgument,
            format!("labels are {nx}x{ny}x{nz}, the template {}x{}x{}", tdims[0], tdims[1], tdims[2]),
        ));
    }
    put16(&mut h, 40, if nt > 1 { 4 } else { 3 });
    for (i, d) in [nx, ny, nz, nt.max(1), 1, 1, 1].iter().enumerate() {
        put16(&mut h, 42 + 2 * i, *d as i16);
    }
    let (datatype, bitpix) = if as_labels { (2, 8) } else { (16, 32) };
    put16(&mut h, 70, datatype);
    put16(&mut h, 72, bitpix);
    put32(&mut h, 108, 352.0); // vox_offset
    put32(&mut h, 112, 1.0); // scl_slope
    put32(&mut h, 116, 0.0); // scl_inter
    put32(&mut h, 124, if as_labels { labels.data.iter().copied().fold(0.0, f32::max) } else { 0.0 }); // cal_max
    put32(&mut h, 128, 0.0); // cal_min
    h.extend_from_slice(&[0, 0, 0, 0]); // no extensions
    if as_labels {
        h.extend(labels.data.iter().map(|&v| v.clamp(0.0, 255.0).round() as u8));
    } else {
        h.extend(labels.data.iter().flat_map(|v| if be { v.to_be_bytes() } else { v.to_le_bytes() }));
    }
    let io = |e: std::io::Error| DataError::new(path, Reason::Io, e.to_string());
    let bytes = if path.to_string_lossy().ends_with(".gz") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&h).map_err(io)?;
        gz.finish().map_err(io)?
    } else {
        h
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_flipped_so_superior_is_up() {
        // 2 x 3 x 2 volume, value = x + 10 y + 100 z
        let mut data = Vec::new();
        for z in 0..2 {
            for y in 0..3 {
                for x in 0..2 {
                    data.push((x + 10 * y + 100 * z) as f32);
                }
            }
        }
        let v = Volume { dims: [2, 3, 2, 1], spacing: [1.0, 2.0, 3.0], data };
        let ax = v.slice(Plane::Axial, 1, 0);
        assert_eq!((ax.width, ax.height), (2, 3));
        assert_eq!(ax.data[0], 120.0); // top row is the last y
        let sag = v.slice(Plane::Sagittal, 1, 0);
        assert_eq!((sag.width, sag.height), (3, 2));
        assert_eq!(sag.data[0], 101.0);
        assert_eq!(v.slice_spacing(Plane::Coronal), (3.0, 1.0));
    }

    #[test]
    fn raw_decoding_handles_byte_order() {
        assert_eq!(decode_raw(&[0x01, 0x00, 0xff, 0xff], RawType::I16, false, 2), Some(vec![1.0, -1.0]));
        assert_eq!(decode_raw(&[0x00, 0x01], RawType::U16, true, 1), Some(vec![1.0]));
        assert_eq!(decode_raw(&[0x00], RawType::U16, true, 1), None);
    }
}
