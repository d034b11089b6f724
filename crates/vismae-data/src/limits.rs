//! How much an untrusted file may make vismae allocate: one [`Limits`] value, checked by every
//! reader before it allocates (file sizes before a whole-file read, declared lengths and sizes
//! against the bytes actually present and against these caps, compressed streams inflated only as
//! far as the header needs). A file over a limit is an error naming the file, the field and the
//! value ([`Reason::TooLarge`]), never an allocation. The defaults are far beyond any real scan.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Reason};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Caps on what one file may make a reader allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read whole into memory (DICOM, NIfTI, MetaImage, NRRD and their detached
    /// data files): checked against the file's size before it is read. Default 4 GiB.
    pub max_file_bytes: u64,
    /// Largest image held decoded: a volume's voxels as 32-bit floats, a PNG/JPEG/TIFF raster's
    /// samples as 32-bit floats, a DICOM file's native (uncompressed) pixel data over all its
    /// frames (Rows x Columns x Samples x Bits Allocated x Frames), and the bytes a compressed
    /// volume's data may inflate to (as its header declares them). Default 1 GiB.
    pub max_image_bytes: u64,
    /// Largest DICOM frame, as decoded (Rows x Columns x Samples per Pixel x Bits Allocated / 8);
    /// a compressed multi-frame file is decoded one frame at a time. Default 256 MiB (a 6000 x 5000
    /// mammogram at 16 bits is 57 MiB).
    pub max_frame_bytes: u64,
    /// Most frames a DICOM file may declare (Number of Frames). Default 100,000.
    pub max_frames: u64,
    /// Largest DICOM element other than pixel data. Default 256 MiB.
    pub max_element_bytes: u64,
    /// Largest header: the estimated in-memory size of a DICOM header (every element but the
    /// pixel data, as dicom-rs holds it: a node per element, text values twice, one string per
    /// `\`-separated value), and a NIfTI header with its extensions (`vox_offset`). Default 256 MiB.
    pub max_header_bytes: u64,
    /// Most DICOM sequences open at once (dicom-rs recurses per level; 20,000 levels overflow
    /// the stack). Default 64; the deepest nesting in real files seen is 5.
    pub max_depth: usize,
    /// Largest data set a deflated DICOM file (transfer syntax 1.2.840.10008.1.2.1.99) may
    /// inflate to: it is inflated whole once to be checked. Default 256 MiB.
    pub max_inflated_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 * GIB,
            max_image_bytes: GIB,
            max_frame_bytes: 256 * MIB,
            max_frames: 100_000,
            max_element_bytes: 256 * MIB,
            max_header_bytes: 256 * MIB,
            max_depth: 64,
            max_inflated_bytes: 256 * MIB,
        }
    }
}

/// Slack allowed past what a compressed volume's header says its data needs (trailing bytes some
/// writers leave); a stream is never inflated further than that.
pub const INFLATE_MARGIN: u64 = MIB;

/// A `TooLarge` error at `path`: `field` holds `value`, over `limit` (both in their own units).
pub(crate) fn too_large(path: &Path, field: &str, value: impl std::fmt::Display, limit: &str) -> DataError {
    DataError::new(path, Reason::TooLarge, format!("{field} is {value}, over the limit of {limit}"))
}

/// `n` bytes for messages: exact, with MiB or GiB beside large values.
pub fn fmt_bytes(n: u64) -> String {
    if n >= GIB {
        format!("{n} bytes ({:.1} GiB)", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{n} bytes ({:.1} MiB)", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

impl Limits {
    /// Checks `path`'s size against [`Limits::max_file_bytes`], then reads it whole.
    pub fn read_file(&self, path: &Path) -> Result<Vec<u8>, DataError> {
        let io = |e: std::io::Error| DataError::new(path, Reason::Io, e.to_string());
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > self.max_file_bytes {
            return Err(too_large(path, "the file size", fmt_bytes(len), &fmt_bytes(self.max_file_bytes)));
        }
        let mut out = Vec::with_capacity(len as usize);
        // never past the size checked, should the file grow meanwhile
        std::fs::File::open(path).and_then(|f| f.take(self.max_file_bytes).read_to_end(&mut out)).map_err(io)?;
        Ok(out)
    }

    /// Checks that a decoded image of `samples` values (held as 32-bit floats) fits
    /// [`Limits::max_image_bytes`]; `what` names the header fields that declare it.
    pub fn check_samples(&self, path: &Path, what: &str, samples: u128) -> Result<(), DataError> {
        let b = samples.saturating_mul(4);
        if b > self.max_image_bytes as u128 {
            return Err(too_large(
                path,
                what,
                format!("{samples} samples ({} as 32-bit floats)", fmt_bytes(b.min(u64::MAX as u128) as u64)),
                &fmt_bytes(self.max_image_bytes),
            ));
        }
        Ok(())
    }
}

/// Inflates `reader` to at most `need + INFLATE_MARGIN` bytes: a stream that inflates further is
/// cut there, so a small file cannot inflate to gigabytes. `need` is what the header says the
/// data holds, already checked against the limits by the caller.
pub(crate) fn inflate_bounded(path: &Path, reader: impl Read, need: u64, what: &str) -> Result<Vec<u8>, DataError> {
    let cap = need.saturating_add(INFLATE_MARGIN);
    let mut out = Vec::with_capacity(need.min(64 * MIB) as usize);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DataError::new(path, Reason::Corrupt, format!("{what} is damaged: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sizes_are_checked_before_reading() {
        let p = std::env::temp_dir().join(format!("vismae-limits-{}.bin", std::process::id()));
        std::fs::write(&p, vec![7u8; 100]).unwrap_or_else(|e| panic!("{e}"));
        let small = Limits { max_file_bytes: 99, ..Limits::default() };
        let e = small.read_file(&p).unwrap_err();
        assert_eq!(e.reason, Reason::TooLarge);
        assert!(e.to_string().contains("file size is 100 bytes, over the limit of 99 bytes"), "{e}");
        assert_eq!(Limits::default().read_file(&p).map(|b| b.len()), Ok(100));
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn inflation_stops_past_what_the_header_needs() {
        // 64 MiB of zeros compress to about 64 KiB; a header needing 1000 bytes reads 1000 + margin
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &vec![0u8; 64 << 20]).unwrap_or_else(|e| panic!("{e}"));
        let packed = gz.finish().unwrap_or_default();
        let out =
            inflate_bounded(Path::new("x.nii.gz"), flate2::read::MultiGzDecoder::new(&packed[..]), 1000, "gzip stream")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.len() as u64, 1000 + INFLATE_MARGIN);
        let e = Limits::default().check_samples(Path::new("v.nii"), "dim", 1 << 30).unwrap_err();
        assert!(e.to_string().contains("dim is 1073741824 samples"), "{e}");
    }
}
