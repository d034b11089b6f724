//! Writer of zip-format PyTorch checkpoints holding `{'model': OrderedDict(key -> tensor)}`, the
//! layout the official loaders read (`torch.load(path)['model']`). It uses only the globals that
//! `torch.load(weights_only=True)` allows, so current PyTorch opens it without flags.

use std::io::Write;
use std::path::Path;

use zip::write::SimpleFileOptions;

use crate::{StateDict, Values, WeightError};

struct Pickler {
    out: Vec<u8>,
}

impl Pickler {
    fn op(&mut self, b: u8) {
        self.out.push(b);
    }
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }
    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        if v < 1 << 31 {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            self.out.extend_from_slice(&[0x8a, 8]);
            self.out.extend_from_slice(&(v as u64).to_le_bytes());
        }
    }
    fn tuple(&mut self, items: &[usize]) {
        self.op(b'(');
        for &i in items {
            self.int(i);
        }
        self.op(b't');
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The pickle stream of `{'model': OrderedDict}` whose tensor `i` lives in storage `data/i`.
fn pickle_state_dict(sd: &StateDict) -> Vec<u8> {
    let mut p = Pickler { out: vec![0x80, 2] };
    p.op(b'}');
    p.op(b'(');
    p.str("model");
    p.global("collections", "OrderedDict");
    p.op(b')');
    p.op(b'R');
    p.op(b'(');
    for (i, (key, t)) in sd.tensors.iter().enumerate() {
        p.str(key);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        // persistent id: ('storage', torch.XStorage, key, 'cpu', numel)
        p.op(b'(');
        p.str("storage");
        let class = match t.values {
            Values::F32(_) => "FloatStorage",
            Values::I64(_) => "LongStorage",
        };
        p.global("torch", class);
        p.str(&i.to_string());
        p.str("cpu");
        p.int(t.values.len());
        p.op(b't');
        p.op(b'Q');
        p.int(0);
        p.tuple(&t.shape);
        p.tuple(&contiguous_strides(&t.shape));
        p.op(0x89);
        p.global("collections", "OrderedDict");
        p.op(b')');
        p.op(b'R');
        p.op(b't');
        p.op(b'R');
    }
    p.op(b'u');
    p.op(b'u');
    p.op(b'.');
    p.out
}

/// Writes a state dict as a zip-format PyTorch checkpoint `{'model': state_dict}`, atomically, and
/// the model card it carries beside it.
pub fn write(sd: &StateDict, path: &Path) -> Result<(), WeightError> {
    let fail = |reason: String| WeightError::Format { path: path.into(), reason };
    let stem = path
        .file_stem()
        .map(|s| {
            s.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
        })
        .unwrap_or_else(|| "archive".to_string());
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64);
        let mut put = |name: String, bytes: &[u8]| -> Result<(), String> {
            zip.start_file(name, opts).map_err(|e| e.to_string())?;
            zip.write_all(bytes).map_err(|e| e.to_string())
        };
        put(format!("{stem}/data.pkl"), &pickle_state_dict(sd)).map_err(fail)?;
        put(format!("{stem}/byteorder"), b"little").map_err(fail)?;
        for (i, t) in sd.tensors.values().enumerate() {
            let bytes: Vec<u8> = match &t.values {
                Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            put(format!("{stem}/data/{i}"), &bytes).map_err(fail)?;
        }
        put(format!("{stem}/version"), b"3\n").map_err(fail)?;
        zip.finish().map_err(|e| fail(e.to_string()))?;
    }
    crate::write_atomic(path, &buf.into_inner())?;
    // a .pth holds no metadata: the card, if the state dict carries one, goes only beside it
    crate::write_card_beside(sd, path)
}
