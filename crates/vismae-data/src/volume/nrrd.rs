//! NRRD (attached or detached data; raw or gzip encoding; a leading vector axis as channels).

use std::path::Path;

use super::{RawType, Volume, assemble, checked_count, decode_raw, parse_floats, parse_usizes};
use crate::error::{DataError, Reason};
use crate::limits::{Limits, inflate_bounded};

/// Whether `bytes` start an NRRD header.
pub fn sniff_nrrd(bytes: &[u8]) -> bool {
    bytes.starts_with(b"NRRD000")
}

/// Reads an NRRD file (attached or detached raw/gzip data) with the default [`Limits`].
pub fn read_nrrd(path: &Path) -> Result<Volume, DataError> {
    read_nrrd_with(path, &Limits::default())
}

/// Reads an NRRD file within `limits`: `sizes` is checked before any data is read or inflated.
pub fn read_nrrd_with(path: &Path, limits: &Limits) -> Result<Volume, DataError> {
    let bytes = limits.read_file(path)?;
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
    let count = checked_count(path, "sizes", &sizes, 1, limits)?;
    let detached;
    let raw: &[u8] = match fields.get("data file").or(fields.get("datafile")) {
        Some(f) => {
            let other = path.parent().unwrap_or(Path::new(".")).join(f);
            detached = limits.read_file(&other).map_err(|e| {
                DataError::new(&other, e.reason, format!("data file of {}: {}", path.display(), e.message))
            })?;
            &detached
        }
        None => &bytes[pos..],
    };
    let inflated;
    let raw: &[u8] = match fields.get("encoding").map(String::as_str) {
        Some("raw") | None => raw,
        Some("gzip" | "gz") => {
            let need = (count * ty.size()) as u64;
            inflated = inflate_bounded(path, flate2::read::MultiGzDecoder::new(raw), need, "gzip data")?;
            &inflated
        }
        Some(other) => {
            return Err(DataError::new(path, Reason::Unsupported, format!("NRRD encoding {other:?} is not supported")));
        }
    };
    let data = decode_raw(raw, ty, be, count).ok_or_else(|| {
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
