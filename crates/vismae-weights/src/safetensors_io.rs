//! safetensors reading (f32, f16, bf16, f64, integer dtypes) and writing (f32 and int64), with the
//! official key names.

use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{StateDict, TensorEntry, Values, WeightError};

/// Decodes little-endian elements of `dtype` into f32 or i64 values.
pub(crate) fn decode(dtype: &str, bytes: &[u8]) -> Option<Values> {
    fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        b.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }
    Some(match dtype {
        "F32" => Values::F32(chunks::<4>(bytes).map(f32::from_le_bytes).collect()),
        "F64" => Values::F32(chunks::<8>(bytes).map(|a| f64::from_le_bytes(a) as f32).collect()),
        "F16" => Values::F32(chunks::<2>(bytes).map(|a| half::f16::from_le_bytes(a).to_f32()).collect()),
        "BF16" => Values::F32(chunks::<2>(bytes).map(|a| half::bf16::from_le_bytes(a).to_f32()).collect()),
        "I64" => Values::I64(chunks::<8>(bytes).map(i64::from_le_bytes).collect()),
        "I32" => Values::I64(chunks::<4>(bytes).map(|a| i32::from_le_bytes(a) as i64).collect()),
        "I16" => Values::I64(chunks::<2>(bytes).map(|a| i16::from_le_bytes(a) as i64).collect()),
        "I8" => Values::I64(bytes.iter().map(|&b| b as i8 as i64).collect()),
        "U8" | "BOOL" => Values::I64(bytes.iter().map(|&b| b as i64).collect()),
        _ => return None,
    })
}

/// Reads every tensor of a safetensors file.
pub fn read(path: &Path) -> Result<StateDict, WeightError> {
    let bytes = std::fs::read(path).map_err(|source| WeightError::Io { path: path.into(), source })?;
    from_bytes(&bytes).map_err(|reason| WeightError::Format { path: path.into(), reason })
}

/// Parses safetensors bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<StateDict, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let mut out = StateDict::default();
    if let Ok((_, meta)) = SafeTensors::read_metadata(bytes)
        && let Some(m) = meta.metadata()
    {
        out.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    for (name, view) in st.tensors() {
        let dtype = format!("{:?}", view.dtype());
        let values = decode(&dtype, view.data()).ok_or_else(|| format!("tensor {name}: unsupported dtype {dtype}"))?;
        out.tensors.insert(name, TensorEntry { shape: view.shape().to_vec(), values });
    }
    Ok(out)
}

/// Serialises a state dict (f32 and int64 tensors) to safetensors bytes.
pub fn to_bytes(sd: &StateDict) -> Result<Vec<u8>, String> {
    let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = sd
        .tensors
        .iter()
        .map(|(k, t)| {
            let (dtype, bytes) = match &t.values {
                Values::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Values::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            (k.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(k, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("tensor {k}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta: Option<std::collections::HashMap<String, String>> =
        (!sd.metadata.is_empty()).then(|| sd.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    safetensors::serialize(views, meta).map_err(|e| e.to_string())
}

/// Writes a state dict to `path` atomically (temporary file in the same folder, then rename), and
/// the model card it carries beside it.
pub fn write(sd: &StateDict, path: &Path) -> Result<(), WeightError> {
    let bytes = to_bytes(sd).map_err(|reason| WeightError::Format { path: path.into(), reason })?;
    crate::write_atomic(path, &bytes)?;
    crate::write_card_beside(sd, path)
}
