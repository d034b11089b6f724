//! Reader for zip-format PyTorch checkpoints (`torch.save` since 1.6) without Python: a small
//! pickle machine that builds plain values, treats any class it does not know (an
//! `argparse.Namespace`, a `GradScaler` state) as an opaque object, and materialises tensors
//! from the archive's storages. The state dict is taken from `model`, `state_dict`, or the root.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use super::safetensors_io::decode;
use super::{StateDict, TensorEntry, Values, WeightError};

/// A pickled value. Containers are shared so that mutation after memoisation is seen everywhere.
// Scalars and opaque objects are kept whole so that error messages can show them.
#[allow(dead_code)]
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Rc<RefCell<Vec<Value>>>),
    Tuple(Vec<Value>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(String, String),
    Object(Box<Value>, Box<Value>),
    Storage { dtype: String, key: String },
    Tensor(Rc<TensorRef>),
    Mark,
}

#[derive(Debug)]
struct TensorRef {
    dtype: String,
    key: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn storage_dtype(class: &str) -> &'static str {
    match class {
        "DoubleStorage" => "F64",
        "HalfStorage" => "F16",
        "BFloat16Storage" => "BF16",
        "LongStorage" => "I64",
        "IntStorage" => "I32",
        "ShortStorage" => "I16",
        "CharStorage" => "I8",
        "ByteStorage" => "U8",
        "BoolStorage" => "BOOL",
        _ => "F32",
    }
}

fn dtype_size(dtype: &str) -> usize {
    match dtype {
        "F64" | "I64" => 8,
        "F32" | "I32" => 4,
        "F16" | "BF16" | "I16" => 2,
        _ => 1,
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }
    fn pop(&mut self) -> Result<Value, String> {
        self.stack.pop().ok_or_else(|| format!("pickle stack underflow at byte {}", self.pos))
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| format!("pickle MARK missing at byte {}", self.pos))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top(&mut self) -> Result<&mut Value, String> {
        let pos = self.pos;
        self.stack.last_mut().ok_or_else(|| format!("pickle stack empty at byte {pos}"))
    }
    fn string(&mut self, n: usize) -> Result<Value, String> {
        let b = self.take(n)?;
        Ok(Value::Str(String::from_utf8_lossy(b).into_owned()))
    }
    fn line(&mut self) -> Result<String, String> {
        let start = self.pos;
        while self.u8()? != b'\n' {}
        Ok(String::from_utf8_lossy(&self.data[start..self.pos - 1]).into_owned())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        match self.top()? {
            Value::Dict(d) => {
                let mut d = d.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                Ok(())
            }
            // attributes set on an opaque object: not needed
            Value::Object(..) => Ok(()),
            other => Err(format!("SETITEM on a non-dict ({other:?})")),
        }
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            Value::Object(..) => Ok(()),
            other => Err(format!("APPEND on a non-list ({other:?})")),
        }
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value, String> {
        let args_vec = match &args {
            Value::Tuple(v) => v.clone(),
            _ => Vec::new(),
        };
        if let Value::Global(module, name) = &callable {
            match (module.as_str(), name.as_str()) {
                ("collections", "OrderedDict") => return Ok(Value::Dict(Rc::default())),
                ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                    return rebuild_tensor(&args_vec);
                }
                ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
                    return args_vec.into_iter().next().ok_or_else(|| "empty _rebuild_parameter".into());
                }
                _ => {}
            }
        }
        Ok(Value::Object(Box::new(callable), Box::new(args)))
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b']' => self.stack.push(Value::List(Rc::default())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                0x8f => self.stack.push(Value::List(Rc::default())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(format!("pickle stack underflow at byte {at}"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(Rc::default()));
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.uint(4)? as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' | b'j' => {
                    let i = if op == b'h' { self.u8()? as u32 } else { self.uint(4)? as u32 };
                    let v = self.memo.get(&i).cloned().ok_or_else(|| format!("pickle memo {i} missing"))?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err(format!("STACK_GLOBAL without names at byte {at}")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.reduce(cls, args)?;
                    self.stack.push(v);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.reduce(cls, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD sets an object's state; nothing we read depends on it
                    self.pop()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_load(pid)?);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.uint(4)? as u32 as i32 as i64;
                    self.stack.push(Value::Int(v));
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v));
                }
                b'M' => {
                    let v = self.uint(2)? as i64;
                    self.stack.push(Value::Int(v));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { self.uint(4)? as usize };
                    let b = self.take(n)?;
                    let mut v: i128 = 0;
                    for (i, &x) in b.iter().enumerate().take(16) {
                        v |= (x as i128) << (8 * i);
                    }
                    if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    self.stack.push(Value::Int(v as i64));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'X' => {
                    let n = self.uint(4)? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8c | b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.uint(8)? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'T' => {
                    let n = self.uint(4)? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.uint(4)? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.uint(8)? as usize,
                    };
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let t = line.trim_end_matches('L');
                    let v = match t {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => Value::Int(t.parse().map_err(|_| format!("bad INT {line:?} at byte {at}"))?),
                    };
                    self.stack.push(v);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                other => {
                    return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {at}"));
                }
            }
        }
    }
}

fn as_usize_list(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                other => Err(format!("expected a size, found {other:?}")),
            })
            .collect(),
        other => Err(format!("expected a tuple of sizes, found {other:?}")),
    }
}

fn rebuild_tensor(args: &[Value]) -> Result<Value, String> {
    let (Some(Value::Storage { dtype, key }), Some(Value::Int(offset)), Some(size), Some(stride)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        return Err("malformed _rebuild_tensor_v2 arguments".into());
    };
    Ok(Value::Tensor(Rc::new(TensorRef {
        dtype: dtype.clone(),
        key: key.clone(),
        offset: *offset as usize,
        shape: as_usize_list(size)?,
        stride: as_usize_list(stride)?,
    })))
}

fn persistent_load(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match (items.first(), items.get(1), items.get(2)) {
        (Some(Value::Str(kind)), Some(Value::Global(_, class)), Some(Value::Str(key))) if kind == "storage" => {
            Ok(Value::Storage { dtype: storage_dtype(class).to_string(), key: key.clone() })
        }
        _ => Err(format!("unsupported persistent id {items:?}")),
    }
}

/// Gathers a (possibly strided) tensor out of its storage bytes.
fn materialise(t: &TensorRef, storage: &[u8]) -> Result<Values, String> {
    let size = dtype_size(&t.dtype);
    let numel: usize = t.shape.iter().product();
    let contiguous_stride: Vec<usize> = {
        let mut s = vec![1usize; t.shape.len()];
        for i in (0..t.shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * t.shape[i + 1];
        }
        s
    };
    let max_index = t.offset + t.shape.iter().zip(&t.stride).map(|(&n, &s)| n.saturating_sub(1) * s).sum::<usize>();
    if numel > 0 && (max_index + 1) * size > storage.len() {
        return Err(format!(
            "tensor of shape {:?} reaches element {max_index} but its storage {} holds {}",
            t.shape,
            t.key,
            storage.len() / size
        ));
    }
    let bytes: Vec<u8> = if t.stride == contiguous_stride || numel <= 1 {
        storage[t.offset * size..(t.offset + numel) * size].to_vec()
    } else {
        let mut out = Vec::with_capacity(numel * size);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let e = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&storage[e * size..(e + 1) * size]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    };
    decode(&t.dtype, &bytes).ok_or_else(|| format!("unsupported dtype {}", t.dtype))
}

fn dict_get(d: &Value, key: &str) -> Option<Value> {
    match d {
        Value::Dict(items) => {
            items.borrow().iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v.clone())
        }
        _ => None,
    }
}

/// Reads the model state dict out of a zip-format PyTorch checkpoint.
pub fn read(path: &Path) -> Result<StateDict, WeightError> {
    let fail = |reason: String| WeightError::Format { path: path.into(), reason };
    let file = std::fs::File::open(path).map_err(|source| WeightError::Io { path: path.into(), source })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| fail(format!("not a zip-format PyTorch checkpoint: {e}")))?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| fail("the archive has no data.pkl: not a torch.save checkpoint".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        if s.trim() == "big" {
            return Err(fail("big-endian checkpoints are not supported".into()));
        }
    }
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| fail(format!("cannot read {pkl_name}: {e}")))?;
    let machine = Machine { data: &pkl, pos: 0, stack: Vec::new(), memo: HashMap::new() };
    let root = machine.run().map_err(|e| fail(format!("cannot unpickle {pkl_name}: {e}")))?;
    let state = dict_get(&root, "model").or_else(|| dict_get(&root, "state_dict")).unwrap_or(root);
    let Value::Dict(items) = state else {
        return Err(fail(
            "the checkpoint holds no state dict (no 'model' or 'state_dict' entry, and the root is not a dict)".into(),
        ));
    };
    let mut out = StateDict::default();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for (k, v) in items.borrow().iter() {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        if !storages.contains_key(&t.key) {
            let mut bytes = Vec::new();
            let entry = format!("{prefix}data/{}", t.key);
            zip.by_name(&entry)
                .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
                .map_err(|e| fail(format!("tensor {name}: cannot read storage {entry}: {e}")))?;
            storages.insert(t.key.clone(), bytes);
        }
        let values = materialise(t, &storages[&t.key]).map_err(|e| fail(format!("tensor {name}: {e}")))?;
        out.tensors.insert(name.clone(), TensorEntry { shape: t.shape.clone(), values });
    }
    if out.tensors.is_empty() {
        return Err(fail("the state dict holds no tensors".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Value, String> {
        Machine { data: bytes, pos: 0, stack: Vec::new(), memo: HashMap::new() }.run()
    }

    #[test]
    fn unpickles_small_values() {
        // {'a': (1, -2, 3.5), 'b': [True, None]} at protocol 2, hand-assembled
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', b'X'];
        p.extend(1u32.to_le_bytes());
        p.push(b'a');
        p.extend([b'K', 1, b'J']);
        p.extend((-2i32).to_le_bytes());
        p.push(b'G');
        p.extend(3.5f64.to_be_bytes());
        p.extend([0x87, 0x8c, 1, b'b', b']', b'(', 0x88, b'N', b'e', b'u', b'.']);
        let v = run(&p).unwrap();
        let a = dict_get(&v, "a").unwrap();
        match a {
            Value::Tuple(items) => {
                assert!(matches!(items[0], Value::Int(1)));
                assert!(matches!(items[1], Value::Int(-2)));
                assert!(matches!(items[2], Value::Float(f) if f == 3.5));
            }
            other => panic!("{other:?}"),
        }
        match dict_get(&v, "b").unwrap() {
            Value::List(l) => assert_eq!(l.borrow().len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_and_unknown_opcodes_are_errors() {
        assert!(run(&[0x80, 2, b'X', 5, 0]).unwrap_err().contains("truncated"));
        assert!(run(&[0x80, 2, 0xff]).unwrap_err().contains("0xff"));
        assert!(run(b".").unwrap_err().contains("underflow"));
    }

    #[test]
    fn strided_tensors_are_gathered() {
        // a 2x3 storage read as its 3x2 transpose
        let storage: Vec<u8> = [0f32, 1., 2., 3., 4., 5.].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = TensorRef { dtype: "F32".into(), key: "0".into(), offset: 0, shape: vec![3, 2], stride: vec![1, 3] };
        assert_eq!(materialise(&t, &storage).unwrap(), Values::F32(vec![0., 3., 1., 4., 2., 5.]));
        let short = TensorRef { shape: vec![4, 2], ..t };
        assert!(materialise(&short, &storage).is_err());
    }
}
