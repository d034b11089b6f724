//! MetaImage (`.mha` with local data, `.mhd` with a raw file beside it; zlib-compressed data).

use std::path::Path;

use super::{RawType, Volume, assemble, checked_count, decode_raw, parse_floats, parse_usizes};
use crate::error::{DataError, Reason};
use crate::limits::{Limits, inflate_bounded};

/// Whether `bytes` start a MetaImage header.
pub fn sniff_metaimage(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
    ["ObjectType", "NDims", "Comment"].iter().any(|k| head.trim_start().starts_with(k))
}

/// Reads a MetaImage (`.mha` with local data or `.mhd` with a raw file beside it) with the
/// default [`Limits`].
pub fn read_metaimage(path: &Path) -> Result<Volume, DataError> {
    read_metaimage_with(path, &Limits::default())
}

/// Reads a MetaImage within `limits`: `DimSize` is checked before any data is read or inflated.
pub fn read_metaimage_with(path: &Path, limits: &Limits) -> Result<Volume, DataError> {
    let bytes = limits.read_file(path)?;
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
    let count = checked_count(path, "DimSize x ElementNumberOfChannels", &sizes, channels, limits)?;
    let detached;
    let raw: &[u8] = if data_file.eq_ignore_ascii_case("LOCAL") {
        &bytes[pos..]
    } else {
        let other = path.parent().unwrap_or(Path::new(".")).join(&data_file);
        detached = limits
            .read_file(&other)
            .map_err(|e| DataError::new(&other, e.reason, format!("data file of {}: {}", path.display(), e.message)))?;
        &detached
    };
    let inflated;
    let raw: &[u8] = if is_true("CompressedData") {
        let need = (count * ty.size()) as u64;
        inflated = inflate_bounded(path, flate2::read::ZlibDecoder::new(raw), need, "compressed data")?;
        &inflated
    } else {
        raw
    };
    let data = decode_raw(raw, ty, be, count).ok_or_else(|| {
        bad(format!("truncated: DimSize {sizes:?} needs {} bytes, the data holds {}", count * ty.size(), raw.len()))
    })?;
    let spacing =
        fields.get("ElementSpacing").or(fields.get("ElementSize")).map(|s| parse_floats(s)).unwrap_or_default();
    assemble(path, &sizes, &spacing, data, channels)
}
