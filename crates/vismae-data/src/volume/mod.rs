//! 3-D and 4-D volumes and the readers of the formats that hold them, one module per format:
//! [`nifti`] (NIfTI-1 `.nii`, `.nii.gz`, `.hdr`/`.img`, read and written), [`metaimage`]
//! (`.mha`, `.mhd` + raw) and [`nrrd`]. Volumes are cut into 2-D slices along a chosen plane.

mod metaimage;
mod nifti;
mod nrrd;

use std::io::Read;
use std::path::Path;

pub use metaimage::{read_metaimage, read_metaimage_with, sniff_metaimage};
pub use nifti::{
    nifti_affine, nifti_from_bytes, nifti_from_bytes_with, read_nifti, read_nifti_with, sniff_nifti, write_nifti,
    write_nifti_affine, write_nifti_like,
};
pub use nrrd::{read_nrrd, read_nrrd_with, sniff_nrrd};
pub use vismae_run::Plane;

use crate::error::{DataError, Reason};
use crate::limits::{INFLATE_MARGIN, Limits};
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

    /// Writes `r` (a slice as [`Self::slice`] shows it) back as slice `index` along `plane` at
    /// time point `t`: the inverse of `slice`.
    pub fn put_slice(&mut self, plane: Plane, index: usize, t: usize, r: &Raster) {
        let [nx, ny, nz, _] = self.dims;
        let (w, h) = match plane {
            Plane::Axial => (nx, ny),
            Plane::Coronal => (nx, nz),
            Plane::Sagittal => (ny, nz),
        };
        debug_assert_eq!((r.width, r.height), (w, h));
        for row in 0..h {
            let flipped = h - 1 - row;
            for c in 0..w {
                let (x, y, z) = match plane {
                    Plane::Axial => (c, flipped, index),
                    Plane::Coronal => (c, index, flipped),
                    Plane::Sagittal => (index, c, flipped),
                };
                self.data[((t * nz + z) * ny + y) * nx + x] = r.data[(row * w + c) * r.channels];
            }
        }
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

/// The bytes of a file within `limits`, gunzipped when they are a gzip stream. Of a gzip stream
/// the first `head` bytes are inflated, `need` reads them and says how many bytes the whole
/// stream holds (checking the header against the limits), and the stream is inflated no further
/// than that plus [`INFLATE_MARGIN`]: a small file cannot inflate to gigabytes.
pub(crate) fn read_all(
    path: &Path,
    limits: &Limits,
    head: usize,
    need: impl FnOnce(&[u8]) -> Result<u64, DataError>,
) -> Result<Vec<u8>, DataError> {
    let bytes = limits.read_file(path)?;
    if bytes.is_empty() {
        return Err(DataError::new(path, Reason::Empty, "the file is empty"));
    }
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let damaged = |e: std::io::Error| DataError::new(path, Reason::Corrupt, format!("gzip stream is damaged: {e}"));
    let mut gz = flate2::read::MultiGzDecoder::new(&bytes[..]);
    let mut out = Vec::with_capacity(head);
    (&mut gz).take(head as u64).read_to_end(&mut out).map_err(damaged)?;
    let total = need(&out)?;
    let more = total.saturating_sub(out.len() as u64).saturating_add(INFLATE_MARGIN);
    out.reserve(more.min(64 << 20) as usize);
    gz.take(more).read_to_end(&mut out).map_err(damaged)?;
    Ok(out)
}

/// The first `n` bytes of a file, gunzipped when it is a gzip stream (for reading a header only).
pub(crate) fn read_head(path: &Path, n: usize) -> Result<Vec<u8>, DataError> {
    let io = |e: std::io::Error| DataError::new(path, Reason::Io, e.to_string());
    let mut magic = Vec::with_capacity(2);
    std::fs::File::open(path).and_then(|f| f.take(2).read_to_end(&mut magic)).map_err(io)?;
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::with_capacity(n);
    if magic == [0x1f, 0x8b] {
        flate2::read::MultiGzDecoder::new(file)
            .take(n as u64)
            .read_to_end(&mut out)
            .map_err(|e| DataError::new(path, Reason::Corrupt, format!("gzip stream is damaged: {e}")))?;
    } else {
        file.take(n as u64).read_to_end(&mut out).map_err(io)?;
    }
    Ok(out)
}

/// The number of samples `sizes` x `channels` declares (the header's `field`), checked against
/// `limits` without overflow before anything is allocated for them.
pub(crate) fn checked_count(
    path: &Path,
    field: &str,
    sizes: &[usize],
    channels: usize,
    limits: &Limits,
) -> Result<usize, DataError> {
    let n = sizes.iter().fold(channels.max(1) as u128, |acc, &d| acc.saturating_mul(d as u128));
    limits.check_samples(path, &format!("{field} {sizes:?}"), n)?;
    Ok(n as usize)
}

pub(crate) fn parse_usizes(s: &str) -> Option<Vec<usize>> {
    s.split_whitespace().map(|v| v.parse().ok()).collect()
}

pub(crate) fn parse_floats(s: &str) -> Vec<f64> {
    s.split_whitespace().filter_map(|v| v.trim_matches(|c| c == '(' || c == ')' || c == ',').parse().ok()).collect()
}

pub(crate) fn assemble(
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
        // put_slice is the inverse of slice, along every plane
        for plane in [Plane::Axial, Plane::Coronal, Plane::Sagittal] {
            let mut w = Volume { data: vec![0.0; v.data.len()], ..v.clone() };
            for k in 0..v.num_slices(plane) {
                w.put_slice(plane, k, 0, &v.slice(plane, k, 0));
            }
            assert_eq!(w, v, "{plane:?}");
        }
    }

    #[test]
    fn raw_decoding_handles_byte_order() {
        assert_eq!(decode_raw(&[0x01, 0x00, 0xff, 0xff], RawType::I16, false, 2), Some(vec![1.0, -1.0]));
        assert_eq!(decode_raw(&[0x00, 0x01], RawType::U16, true, 1), Some(vec![1.0]));
        assert_eq!(decode_raw(&[0x00], RawType::U16, true, 1), None);
    }
}
