//! Reader for zip-format PyTorch checkpoints (`torch.save` since 1.6) without Python: a small
//! pickle machine that builds plain values, treats any class it does not know (an
//! `argparse.Namespace`, a `GradScaler` state) as an opaque object, and materialises tensors
//! from the archive's storages. The state dict is taken from `model`, `state_dict`, or the root.
//!
//! The file is untrusted: nothing it says is executed (globals are names, never imported), every
//! value is shared rather than copied (a pickle that duplicates and nests a value n times holds n
//! nodes, not 2^n), values are torn down without recursion (a million nested tuples, or a list
//! that holds itself, cannot overflow the stack), errors describe values shallowly, archive
//! entries are read no further than their declared sizes within [`MAX_ENTRY_BYTES`] (compressed
//! ones within [`MAX_INFLATED_BYTES`]), and a
//! tensor never holds more elements than its storage.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use crate::safetensors_io::decode;
use crate::{StateDict, TensorEntry, Values, WeightError};

/// A pickled value. Containers are shared so that mutation after memoisation is seen everywhere.
// Scalars and opaque objects are kept whole so that error messages can show them.
#[allow(dead_code)]
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    List(Rc<RefCell<Vec<Value>>>),
    Tuple(Rc<Vec<Value>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Rc<str>, Rc<str>),
    Object(Rc<(Value, Value)>),
    Storage { dtype: &'static str, key: Rc<str> },
    Tensor(Rc<TensorRef>),
    Mark,
}

/// Largest archive entry (the pickle, or one tensor storage) read into memory: 8 GiB.
pub const MAX_ENTRY_BYTES: u64 = 8 << 30;

/// Largest entry inflated from a compressed one (torch.save writes none): 64 MiB.
pub const MAX_INFLATED_BYTES: u64 = 64 << 20;

/// Most pickle opcodes run (each makes at most one value, of about 100 bytes held): 2,000,000,
/// so a pickle can make the machine hold about 200 MiB at most. The official VIS-MAE checkpoint's
/// pickle has 27,866.
pub const MAX_OPS: usize = 2_000_000;

impl Value {
    /// A one-line description that never looks inside containers (their contents may be deep,
    /// huge or cyclic).
    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("{b}"),
            Value::Int(i) => format!("{i}"),
            Value::Float(f) => format!("{f}"),
            Value::Str(s) => format!("{:?}", s.chars().take(60).collect::<String>()),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::List(l) => format!("a list of {}", l.try_borrow().map_or(0, |l| l.len())),
            Value::Tuple(t) => format!("a tuple of {}", t.len()),
            Value::Dict(d) => format!("a dict of {}", d.try_borrow().map_or(0, |d| d.len())),
            Value::Global(m, n) => format!("{m}.{n}"),
            // one level only: objects can be made of objects a million deep
            Value::Object(o) => match &o.0 {
                Value::Global(m, n) => format!("an object of {m}.{n}"),
                _ => "an object".into(),
            },
            Value::Storage { dtype, key } => format!("a {dtype} storage {key:?}"),
            Value::Tensor(t) => format!("a tensor of shape {:?}", t.shape),
            Value::Mark => "MARK".into(),
        }
    }
}

/// Drops `values` without recursion: the contents of every container are moved out onto a
/// work list first (shared containers are emptied too, which also breaks cycles), so each drop
/// is shallow however deep the nesting.
fn teardown(mut values: Vec<Value>) {
    while let Some(v) = values.pop() {
        match v {
            Value::List(l) => {
                if let Ok(mut l) = l.try_borrow_mut() {
                    values.append(&mut l);
                }
            }
            Value::Dict(d) => {
                if let Ok(mut d) = d.try_borrow_mut() {
                    for (k, v) in d.drain(..) {
                        values.push(k);
                        values.push(v);
                    }
                }
            }
            Value::Tuple(t) => {
                if let Ok(t) = Rc::try_unwrap(t) {
                    values.extend(t);
                }
            }
            Value::Object(o) => {
                if let Ok((a, b)) = Rc::try_unwrap(o) {
                    values.push(a);
                    values.push(b);
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
struct TensorRef {
    dtype: &'static str,
    key: Rc<str>,
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
    /// Values the pickle threw away while running, kept for the teardown (dropping one in place
    /// would recurse through however deep it is).
    garbage: Vec<Value>,
}

impl Drop for Machine<'_> {
    /// Tears every value down without recursion; values taken from the machine must be used
    /// before it drops, since shared containers are emptied.
    fn drop(&mut self) {
        let mut all = std::mem::take(&mut self.stack);
        all.extend(std::mem::take(&mut self.memo).into_values());
        all.append(&mut self.garbage);
        teardown(all);
    }
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Machine { data, pos: 0, stack: Vec::new(), memo: HashMap::new(), garbage: Vec::new() }
    }
    /// Sets memo slot `i`, keeping what it held for the teardown.
    fn memoise(&mut self, i: u32, v: Value) {
        if let Some(old) = self.memo.insert(i, v) {
            self.garbage.push(old);
        }
    }
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
        Ok(Value::Str(String::from_utf8_lossy(b).into()))
    }
    fn line(&mut self) -> Result<Rc<str>, String> {
        let start = self.pos;
        while self.u8()? != b'\n' {}
        Ok(String::from_utf8_lossy(&self.data[start..self.pos - 1]).into())
    }

    fn set_items(&mut self, mut items: Vec<Value>) -> Result<(), String> {
        let result = match self.stack.last() {
            Some(Value::Dict(d)) => match d.try_borrow_mut() {
                Ok(mut d) => {
                    let mut it = items.drain(..);
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                    Ok(())
                }
                Err(_) => Err("SETITEM on a dict in use".to_string()),
            },
            // attributes set on an opaque object: not needed
            Some(Value::Object(..)) => Ok(()),
            Some(other) => Err(format!("SETITEM on a non-dict ({})", other.describe())),
            None => Err(format!("pickle stack empty at byte {}", self.pos)),
        };
        self.garbage.append(&mut items);
        result
    }

    fn append(&mut self, mut items: Vec<Value>) -> Result<(), String> {
        let result = match self.stack.last() {
            Some(Value::List(l)) => match l.try_borrow_mut() {
                Ok(mut l) => {
                    l.append(&mut items);
                    Ok(())
                }
                Err(_) => Err("APPEND on a list in use".to_string()),
            },
            Some(Value::Object(..)) => Ok(()),
            Some(other) => Err(format!("APPEND on a non-list ({})", other.describe())),
            None => Err(format!("pickle stack empty at byte {}", self.pos)),
        };
        self.garbage.append(&mut items);
        result
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value, String> {
        let args_vec: Vec<Value> = match &args {
            Value::Tuple(v) => v.iter().take(4).cloned().collect(),
            _ => Vec::new(),
        };
        let known = match &callable {
            Value::Global(module, name) => match (&**module, &**name) {
                ("collections", "OrderedDict") => Some(Ok(Value::Dict(Rc::default()))),
                ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                    Some(rebuild_tensor(&args_vec))
                }
                ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
                    Some(args_vec.first().cloned().ok_or_else(|| "empty _rebuild_parameter".into()))
                }
                _ => None,
            },
            _ => None,
        };
        self.garbage.extend(args_vec);
        match known {
            Some(v) => {
                self.garbage.push(callable);
                self.garbage.push(args);
                v
            }
            None => Ok(Value::Object(Rc::new((callable, args)))),
        }
    }

    fn run(&mut self) -> Result<Value, String> {
        for _ in 0..MAX_OPS {
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
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                0x8f => self.stack.push(Value::List(Rc::default())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(format!("pickle stack underflow at byte {at}"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(items)));
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
                    self.memoise(i, v);
                }
                b'r' => {
                    let i = self.uint(4)? as u32;
                    let v = self.top()?.clone();
                    self.memoise(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memoise(i, v);
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
                        (m, n) => {
                            self.garbage.push(m);
                            self.garbage.push(n);
                            return Err(format!("STACK_GLOBAL without names at byte {at}"));
                        }
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
                    let kwargs = self.pop()?;
                    self.garbage.push(kwargs);
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.reduce(cls, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD sets an object's state; nothing we read depends on it
                    let state = self.pop()?;
                    self.garbage.push(state);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(&pid);
                    self.garbage.push(pid);
                    self.stack.push(v?);
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
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()));
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
                    let v = self.pop()?;
                    self.garbage.push(v);
                }
                b'1' => {
                    let mut items = self.pop_mark()?;
                    self.garbage.append(&mut items);
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
        Err(format!(
            "the pickle runs more than {MAX_OPS} opcodes without stopping (refused: real checkpoints run tens of thousands)"
        ))
    }
}

fn as_usize_list(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                other => Err(format!("expected a size, found {}", other.describe())),
            })
            .collect(),
        other => Err(format!("expected a tuple of sizes, found {}", other.describe())),
    }
}

fn rebuild_tensor(args: &[Value]) -> Result<Value, String> {
    let (Some(Value::Storage { dtype, key }), Some(Value::Int(offset)), Some(size), Some(stride)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        return Err("malformed _rebuild_tensor_v2 arguments".into());
    };
    Ok(Value::Tensor(Rc::new(TensorRef {
        dtype,
        key: key.clone(),
        offset: usize::try_from(*offset).map_err(|_| format!("negative storage offset {offset}"))?,
        shape: as_usize_list(size)?,
        stride: as_usize_list(stride)?,
    })))
}

fn persistent_load(pid: &Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("persistent id is not a tuple ({})", pid.describe()));
    };
    match (items.first(), items.get(1), items.get(2)) {
        (Some(Value::Str(kind)), Some(Value::Global(_, class)), Some(Value::Str(key))) if &**kind == "storage" => {
            Ok(Value::Storage { dtype: storage_dtype(class), key: key.clone() })
        }
        _ => Err(format!(
            "unsupported persistent id ({})",
            items.iter().map(Value::describe).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Gathers a (possibly strided) tensor out of its storage bytes.
fn materialise(t: &TensorRef, storage: &[u8]) -> Result<Values, String> {
    let size = dtype_size(t.dtype);
    if t.shape.len() != t.stride.len() {
        return Err(format!("tensor has {} sizes but {} strides", t.shape.len(), t.stride.len()));
    }
    let numel = t.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n));
    let numel = numel.ok_or_else(|| format!("tensor shape {:?} overflows", t.shape))?;
    let available = storage.len() / size;
    if numel > available {
        return Err(format!(
            "tensor of shape {:?} has {numel} elements but its storage {} holds {available} (repeated storages are not supported)",
            t.shape, t.key
        ));
    }
    if numel == 0 {
        return decode(t.dtype, &[]).ok_or_else(|| format!("unsupported dtype {}", t.dtype));
    }
    let contiguous_stride: Vec<usize> = {
        let mut s = vec![1usize; t.shape.len()];
        for i in (0..t.shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * t.shape[i + 1];
        }
        s
    };
    let max_index =
        t.shape.iter().zip(&t.stride).try_fold(t.offset, |acc, (&n, &s)| acc.checked_add((n - 1).checked_mul(s)?));
    let max_index = max_index.unwrap_or(usize::MAX);
    if max_index >= available {
        return Err(format!(
            "tensor of shape {:?} reaches element {max_index} but its storage {} holds {}",
            t.shape, t.key, available
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
    decode(t.dtype, &bytes).ok_or_else(|| format!("unsupported dtype {}", t.dtype))
}

/// Reads one archive entry whole, refusing one that declares more than [`MAX_ENTRY_BYTES`] or
/// more than deflate can make of its compressed bytes, and never reading past its declared size.
fn read_entry<R: Read + std::io::Seek>(zip: &mut zip::ZipArchive<R>, name: &str) -> Result<Vec<u8>, String> {
    let f = zip.by_name(name).map_err(|e| e.to_string())?;
    let (size, packed) = (f.size(), f.compressed_size());
    let stored = f.compression() == zip::CompressionMethod::Stored;
    // torch.save stores entries uncompressed, so a stored entry's bytes are in the file; a
    // compressed one could inflate far past the file, and is refused past MAX_INFLATED_BYTES
    if size > MAX_ENTRY_BYTES || (stored && size > packed) || (!stored && size > MAX_INFLATED_BYTES) {
        let how = if stored { "stored" } else { "compressed" };
        return Err(format!("the entry declares {size} bytes from {packed} {how} bytes: refused"));
    }
    let mut out = Vec::with_capacity(size.min(1 << 26) as usize);
    f.take(size).read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The tensors of the state dict `state` (string keys to tensors; other entries are skipped),
/// their storages read from the archive under `prefix`. The storages read may hold no more than
/// the archive's `file_len` bytes (zip entries can overlap on the same bytes), and the tensors no
/// more than four times the elements their storages hold (keys may share a storage, as tied
/// weights do, but a million keys naming one storage would multiply it).
fn tensors<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    prefix: &str,
    state: &Value,
    file_len: u64,
) -> Result<StateDict, String> {
    let Value::Dict(items) = state else {
        return Err(
            "the checkpoint holds no state dict (no 'model' or 'state_dict' entry, and the root is not a dict)".into(),
        );
    };
    let mut out = StateDict::default();
    let mut storages: HashMap<Rc<str>, Vec<u8>> = HashMap::new();
    let (mut read_bytes, mut read_elems, mut made_elems) = (0u64, 0u64, 0u64);
    let items = items.try_borrow().map_err(|_| "the state dict is in use".to_string())?;
    for (k, v) in items.iter() {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        if !storages.contains_key(&t.key) {
            let entry = format!("{prefix}data/{}", t.key);
            let bytes =
                read_entry(zip, &entry).map_err(|e| format!("tensor {name}: cannot read storage {entry}: {e}"))?;
            read_bytes += bytes.len() as u64;
            if read_bytes > file_len.saturating_add(MAX_INFLATED_BYTES) {
                return Err(format!(
                    "tensor {name}: the storages read so far hold {read_bytes} bytes, more than the {file_len}-byte file (entries overlap): refused"
                ));
            }
            read_elems += (bytes.len() / dtype_size(t.dtype)) as u64;
            storages.insert(t.key.clone(), bytes);
        }
        let values = materialise(t, &storages[&t.key]).map_err(|e| format!("tensor {name}: {e}"))?;
        made_elems += values.len() as u64;
        if made_elems > read_elems.saturating_mul(4).saturating_add(1 << 18) {
            return Err(format!(
                "tensor {name}: the tensors so far hold {made_elems} elements from {read_elems} in their storages (many keys name the same storage): refused"
            ));
        }
        out.tensors.insert(name.to_string(), TensorEntry { shape: t.shape.clone(), values });
    }
    Ok(out)
}

fn dict_get(d: &Value, key: &str) -> Option<Value> {
    match d {
        Value::Dict(items) => {
            items.borrow().iter().find(|(k, _)| matches!(k, Value::Str(s) if &**s == key)).map(|(_, v)| v.clone())
        }
        _ => None,
    }
}

/// Reads the model state dict out of a zip-format PyTorch checkpoint.
pub fn read(path: &Path) -> Result<StateDict, WeightError> {
    let fail = |reason: String| WeightError::Format { path: path.into(), reason };
    let file = std::fs::File::open(path).map_err(|source| WeightError::Io { path: path.into(), source })?;
    let file_len = file.metadata().map_err(|source| WeightError::Io { path: path.into(), source })?.len();
    let mut zip = zip::ZipArchive::new(file).map_err(|e| fail(format!("not a zip-format PyTorch checkpoint: {e}")))?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| fail("the archive has no data.pkl: not a torch.save checkpoint".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(f) = zip.by_name(&format!("{prefix}byteorder")) {
        // a few bytes ("little" or "big"), read no further whatever the entry declares
        let mut s = Vec::new();
        let _ = f.take(16).read_to_end(&mut s);
        if String::from_utf8_lossy(&s).trim() == "big" {
            return Err(fail("big-endian checkpoints are not supported".into()));
        }
    }
    let pkl = read_entry(&mut zip, &pkl_name).map_err(|e| fail(format!("cannot read {pkl_name}: {e}")))?;
    let mut machine = Machine::new(&pkl);
    let root = machine.run().map_err(|e| fail(format!("cannot unpickle {pkl_name}: {e}")))?;
    // the machine (its stack and memo share the values) is torn down when this function returns
    let state = dict_get(&root, "model").or_else(|| dict_get(&root, "state_dict")).unwrap_or_else(|| root.clone());
    let result = tensors(&mut zip, &prefix, &state, file_len).map_err(fail);
    teardown(vec![state, root]);
    let out = result?;
    if out.tensors.is_empty() {
        return Err(fail("the state dict holds no tensors".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Value, String> {
        // the machine's teardown would empty the shared containers the test looks into
        let mut m = Machine::new(bytes);
        let v = m.run();
        std::mem::forget(m);
        v
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
        let t = TensorRef { dtype: "F32", key: "0".into(), offset: 0, shape: vec![3, 2], stride: vec![1, 3] };
        assert_eq!(materialise(&t, &storage).unwrap(), Values::F32(vec![0., 3., 1., 4., 2., 5.]));
        let short = TensorRef { shape: vec![4, 2], ..t };
        assert!(materialise(&short, &storage).is_err());
    }

    /// A zip-format checkpoint holding `pkl` as its pickle (and nothing else).
    fn checkpoint(name: &str, pkl: &[u8]) -> std::path::PathBuf {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("vismae-pth-{}-{name}.pth", std::process::id()));
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("archive/data.pkl", opts).unwrap();
        zip.write_all(pkl).unwrap();
        zip.finish().unwrap();
        std::fs::write(&path, buf.into_inner()).unwrap();
        path
    }

    #[test]
    fn hostile_pickles_are_bounded_in_time_memory_and_stack() {
        let started = std::time::Instant::now();
        // 64 doublings (DUP, TUPLE2): 2^64 leaves if values were copied, 65 nodes when shared
        let mut p = vec![0x80, 2, b')'];
        p.extend((0..64).flat_map(|_| [b'2', 0x86]));
        p.push(b'.');
        assert!(matches!(run(&p), Ok(Value::Tuple(t)) if t.len() == 2));
        // nearly MAX_OPS nested tuples (one byte each) as the root: refused, and torn down without
        // recursion when the reader returns
        let mut deep = vec![0x80, 2, b')'];
        deep.extend(std::iter::repeat_n(0x85, MAX_OPS - 10));
        deep.push(b'.');
        let e = read(&checkpoint("deep", &deep)).unwrap_err().to_string();
        assert!(e.contains("holds no state dict"), "{e}");
        // the same nesting left on the stack of a pickle that stops early
        let e = read(&checkpoint("deep-cut", &deep[..deep.len() - 1])).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // a list that holds itself, then a SETITEM on it: described shallowly, no endless print
        let cyclic = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'K', 1, b'K', 2, b's', b'.'];
        let e = read(&checkpoint("cyclic", &cyclic)).unwrap_err().to_string();
        assert!(e.contains("SETITEM on a non-dict (a list of 1)"), "{e}");
        // a pickle that never stops: at most MAX_OPS opcodes
        let mut endless = vec![0x80, 2];
        endless.extend(std::iter::repeat_n(b'N', MAX_OPS + 1));
        let e = read(&checkpoint("endless", &endless)).unwrap_err().to_string();
        assert!(e.contains("more than 2000000 opcodes"), "{e}");
        // deep values thrown away while the pickle runs (POP), and a chain of a million objects
        // described in an error: neither recurses
        let mut popped = deep[..deep.len() - 1].to_vec();
        popped.extend([b'0', b'N', b'.']);
        let e = read(&checkpoint("deep-popped", &popped)).unwrap_err().to_string();
        assert!(e.contains("holds no state dict"), "{e}");
        let mut chain = vec![0x80, 2, b'N'];
        chain.extend((0..(MAX_OPS - 10) / 2).flat_map(|_| [b')', b'R']));
        chain.extend([b'Q', b'.']);
        let e = read(&checkpoint("object-chain", &chain)).unwrap_err().to_string();
        assert!(e.contains("persistent id is not a tuple (an object)"), "{e}");
        // a 1 MiB string fetched from the memo 500,000 times: shared, not copied (500 GB if copied)
        let mut fetch = vec![0x80, 2, b'X'];
        fetch.extend((1u32 << 20).to_le_bytes());
        fetch.extend(std::iter::repeat_n(b'a', 1 << 20));
        fetch.extend([b'q', 0]);
        fetch.extend((0..500_000).flat_map(|_| [b'h', 0]));
        fetch.push(b'.');
        let e = read(&checkpoint("memo-fetch", &fetch)).unwrap_err().to_string();
        assert!(e.contains("holds no state dict"), "{e}");
        // a deflated pickle of 65 MiB (a zip bomb's shape; torch.save never compresses)
        let mut bomb = vec![0x80, 2, b'N', b'.'];
        bomb.resize(65 << 20, b'N');
        let e = read(&checkpoint("bomb", &bomb)).unwrap_err().to_string();
        assert!(e.contains("compressed bytes: refused"), "{e}");
        assert!(started.elapsed().as_secs_f64() < 10.0, "took {:?}", started.elapsed());
    }

    #[test]
    fn tensors_never_hold_more_than_their_storage() {
        let storage = vec![0u8; 16];
        let t = |shape: Vec<usize>, stride: Vec<usize>, offset: usize| TensorRef {
            dtype: "F32",
            key: "0".into(),
            offset,
            shape,
            stride,
        };
        // a stride-0 view claiming 10^12 elements of a 4-element storage
        let e = materialise(&t(vec![1_000_000, 1_000_000], vec![0, 0], 0), &storage).unwrap_err();
        assert!(e.contains("repeated storages are not supported"), "{e}");
        // sizes whose product overflows, strides reaching past the storage, mismatched ranks
        assert!(materialise(&t(vec![usize::MAX, 3], vec![3, 1], 0), &storage).unwrap_err().contains("overflows"));
        assert!(materialise(&t(vec![2], vec![usize::MAX], 0), &storage).unwrap_err().contains("reaches element"));
        assert!(materialise(&t(vec![2], vec![1], usize::MAX), &storage).unwrap_err().contains("reaches element"));
        assert!(materialise(&t(vec![2], vec![1, 1], 0), &storage).unwrap_err().contains("2 strides"));
        assert_eq!(materialise(&t(vec![0, 5], vec![5, 1], 9), &storage).unwrap(), Values::F32(vec![]));
    }
}
