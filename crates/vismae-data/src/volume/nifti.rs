//! NIfTI-1: reading (`.nii`, `.nii.gz`, `.hdr`/`.img` pairs; either byte order; `scl_slope` and
//! `scl_inter` applied), the voxel-to-world affine, and writing (float32 or uint8 labels, with a
//! given affine or another file's header).

use std::path::{Path, PathBuf};

use super::{RawType, Volume, checked_count, decode_raw, read_all, read_head};
use crate::error::{DataError, Reason};
use crate::limits::{Limits, fmt_bytes as show_bytes, too_large};

/// Whether `bytes` (decompressed) start with a NIfTI-1 header (either byte order).
pub fn sniff_nifti(bytes: &[u8]) -> bool {
    bytes.len() >= 348
        && (i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == 348
            || i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == 348)
        && (&bytes[344..347] == b"n+1" || &bytes[344..347] == b"ni1")
}

/// Reads a NIfTI-1 volume with the default [`Limits`].
pub fn read_nifti(path: &Path) -> Result<Volume, DataError> {
    read_nifti_with(path, &Limits::default())
}

/// Reads a NIfTI-1 volume within `limits`: the dimensions are checked before the data is read,
/// and a `.nii.gz` is inflated only as far as its header says the data reaches.
pub fn read_nifti_with(path: &Path, limits: &Limits) -> Result<Volume, DataError> {
    let bytes = read_all(path, limits, 352, |head| layout(path, head, limits).map(|l| l.need()))?;
    decode(path, &bytes, limits, |need| read_all(&img_path(path), limits, 0, |_| Ok(need)))
}

/// Parses NIfTI-1 bytes (already decompressed) with the default [`Limits`]; `img` supplies the
/// data of a `.hdr`/`.img` pair. `path` names the file in errors.
pub fn nifti_from_bytes(
    path: &Path,
    bytes: &[u8],
    img: impl FnOnce() -> Result<Vec<u8>, DataError>,
) -> Result<Volume, DataError> {
    nifti_from_bytes_with(path, bytes, img, &Limits::default())
}

/// [`nifti_from_bytes`] within `limits`.
pub fn nifti_from_bytes_with(
    path: &Path,
    bytes: &[u8],
    img: impl FnOnce() -> Result<Vec<u8>, DataError>,
    limits: &Limits,
) -> Result<Volume, DataError> {
    decode(path, bytes, limits, |_| img())
}

/// What a NIfTI-1 header says about its data.
struct Layout {
    be: bool,
    dims: [usize; 4],
    ty: RawType,
    spacing: [f64; 3],
    /// `n+1`: the data follows the header in the same file, at `offset`.
    single: bool,
    offset: usize,
    count: usize,
    slope: f32,
    inter: f32,
}

impl Layout {
    /// Bytes of the file (header and data) or of a `.img` (data only) the header declares.
    fn need(&self) -> u64 {
        let data = (self.count * self.ty.size()) as u64;
        if self.single { self.offset as u64 + data } else { data }
    }
}

/// Reads and checks the header (the first 348 bytes of `bytes`).
fn layout(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Layout, DataError> {
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
    let count = checked_count(path, "dim[1..4]", &dims, 1, limits)?;
    let spacing = [1, 2, 3].map(|i| {
        let v = f32_at(76 + 4 * i).abs() as f64;
        if v > 0.0 && v.is_finite() { v } else { 1.0 }
    });
    let single = &bytes[344..347] == b"n+1";
    let vox_offset = f32_at(108).max(352.0);
    if single && vox_offset as f64 > limits.max_header_bytes as f64 {
        return Err(too_large(path, "vox_offset", vox_offset, &show_bytes(limits.max_header_bytes)));
    }
    let (slope, inter) = (f32_at(112), f32_at(116));
    Ok(Layout { be, dims, ty, spacing, single, offset: vox_offset as usize, count, slope, inter })
}

/// Decodes the volume of `bytes` (header, and data when single-file); `img(need)` reads the
/// `need` data bytes of a `.hdr`/`.img` pair.
fn decode(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
    img: impl FnOnce(u64) -> Result<Vec<u8>, DataError>,
) -> Result<Volume, DataError> {
    let bad = |m: String| DataError::new(path, Reason::Corrupt, m);
    let l = layout(path, bytes, limits)?;
    let data_bytes: Vec<u8>;
    let payload: &[u8] = if l.single {
        if l.offset > bytes.len() {
            return Err(bad(format!("vox_offset {} is past the end of the file ({} bytes)", l.offset, bytes.len())));
        }
        &bytes[l.offset..]
    } else {
        data_bytes = img(l.need())?;
        &data_bytes
    };
    let mut data = decode_raw(payload, l.ty, l.be, l.count).ok_or_else(|| {
        bad(format!(
            "truncated: the header promises {} voxels of {} bytes, the data holds {} bytes",
            l.count,
            l.ty.size(),
            payload.len()
        ))
    })?;
    let (slope, inter) = (l.slope, l.inter);
    if slope != 0.0 && slope.is_finite() && (slope != 1.0 || inter != 0.0) {
        let inter = if inter.is_finite() { inter } else { 0.0 };
        data.iter_mut().for_each(|v| *v = *v * slope + inter);
    }
    Ok(Volume { dims: l.dims, spacing: l.spacing, data })
}

fn img_path(hdr: &Path) -> PathBuf {
    let s = hdr.to_string_lossy();
    if let Some(stem) = s.strip_suffix(".hdr.gz") {
        return PathBuf::from(format!("{stem}.img.gz"));
    }
    hdr.with_extension("img")
}

/// The voxel-to-world affine (RAS+, NIfTI sform rows) of a NIfTI-1 file: its sform when set,
/// else a diagonal from the voxel sizes.
pub fn nifti_affine(path: &Path) -> Result<[[f64; 4]; 3], DataError> {
    let h = read_head(path, 352)?;
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
    vismae_run::run_dir::write_atomic(path, &bytes).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))
}

/// Writes a volume (uint8 `labels`, else float32; a 4th dimension allowed, e.g. one frame per
/// class) as NIfTI-1 with the header of `template` (a single-file `.nii`/`.nii.gz`): its affine
/// (qform, sform), spacing, units and byte order are kept; the data type, dimensions, scaling and
/// offset are set for the data, which must have the template's x, y, z sizes.
pub fn write_nifti_like(path: &Path, template: &Path, labels: &Volume, as_labels: bool) -> Result<(), DataError> {
    let src = read_head(template, 352)?;
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
    vismae_run::run_dir::write_atomic(path, &bytes).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))
}
