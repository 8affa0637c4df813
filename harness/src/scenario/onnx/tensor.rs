//! Decoding one ONNX tensor (an initializer or a `Constant` node's value) into a [`Const`]:
//! its dims and element count checked first, its bytes counted against the caller's budget
//! before anything is allocated, then its values read from `raw_data`, the typed fields, or an
//! external data file (through [`External`]).

use std::path::{Path, PathBuf};

use super::proto::{tensor_proto::DataLocation, tensor_proto::DataType, TensorProto};
use super::{Const, FloatType, Values};

/// Where a model's external data files may be read from: its folder, if it has one.
pub(super) struct External<'a> {
    /// The model's folder (`None` for bytes read from elsewhere: external data is refused).
    pub dir: Option<&'a Path>,
    /// The external data files read so far, by location, in the order first read.
    pub read: std::cell::RefCell<Vec<String>>,
}

/// Bytes left for constants (the memory limit less what is already decoded), spent as tensors
/// are decoded.
pub(super) struct Budget {
    /// Bytes still allowed.
    pub left: u64,
    /// The limit, in MiB, for the error.
    pub limit_mb: u64,
}

impl Budget {
    /// Spends `bytes` on tensor `name`, or says the limit is over.
    fn spend(&mut self, name: &str, bytes: u64) -> Result<(), String> {
        if bytes > self.left {
            return Err(format!("tensor `{name}` needs {} MiB, over what is left of the memory limit of {} MiB: raise `train.memory_limit_mb` to import it", bytes.div_ceil(1 << 20), self.limit_mb));
        }
        self.left -= bytes;
        Ok(())
    }
}

/// The element type of a tensor, as nanhunt keeps it: a float type, or an integer of `bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    Float(FloatType),
    Int(usize),
}

fn elem(data_type: i32) -> Option<Elem> {
    let t = DataType::try_from(data_type).ok()?;
    Some(match t {
        DataType::Float => Elem::Float(FloatType::F32),
        DataType::Float16 => Elem::Float(FloatType::F16),
        DataType::Bfloat16 => Elem::Float(FloatType::Bf16),
        DataType::Double => Elem::Float(FloatType::F64),
        DataType::Int64 => Elem::Int(8),
        DataType::Int32 => Elem::Int(4),
        DataType::Int8 | DataType::Uint8 | DataType::Bool => Elem::Int(1),
        DataType::Undefined
        | DataType::Uint16
        | DataType::Int16
        | DataType::String
        | DataType::Uint32
        | DataType::Uint64
        | DataType::Complex64
        | DataType::Complex128
        | DataType::Float8e4m3fn
        | DataType::Float8e4m3fnuz
        | DataType::Float8e5m2
        | DataType::Float8e5m2fnuz
        | DataType::Uint4
        | DataType::Int4
        | DataType::Float4e2m1
        | DataType::Float8e8m0
        | DataType::Uint2
        | DataType::Int2
        | DataType::Float6e2m3
        | DataType::Float6e3m2 => return None,
    })
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::Float(FloatType::F32) => 4,
            Elem::Float(FloatType::F16 | FloatType::Bf16) => 2,
            Elem::Float(FloatType::F64) => 8,
            Elem::Int(n) => n,
        }
    }
}

/// Decodes tensor `t` (named `name` in errors), spending its size from `budget` first.
pub(super) fn decode(t: &TensorProto, name: &str, ext: &External<'_>, budget: &mut Budget) -> Result<Const, String> {
    let dt = t.data_type();
    let Some(kind) = elem(dt) else {
        let type_name = DataType::try_from(dt).map_or_else(|_| format!("data type {dt}"), |d| d.as_str_name().to_string());
        return Err(format!("tensor `{name}` is of {type_name}: nanhunt imports float32, float16, bfloat16, float64 and integer tensors"));
    };
    if t.segment.is_some() {
        return Err(format!("tensor `{name}` is segmented, which nanhunt does not read"));
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        dims.push(usize::try_from(d).map_err(|_| format!("tensor `{name}` has a negative dimension {d}"))?);
    }
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| format!("tensor `{name}` has more elements than can be counted"))?;
    // Kept as f64 or i64: 8 bytes a value, counted before anything is read or allocated.
    budget.spend(name, (n as u64).saturating_mul(8))?;
    let external = t.data_location == Some(DataLocation::External as i32);
    let values = if external {
        let bytes = read_external(t, name, ext, n.saturating_mul(kind.size()))?;
        from_raw(&bytes, kind)
    } else if let Some(raw) = &t.raw_data {
        if raw.len() != n.saturating_mul(kind.size()) {
            return Err(format!("tensor `{name}` has {} bytes of data, but its dims {dims:?} need {}", raw.len(), n.saturating_mul(kind.size())));
        }
        from_raw(raw, kind)
    } else {
        typed(t, kind)
    };
    let have = match &values {
        Values::Float(v, _) => v.len(),
        Values::Int(v) => v.len(),
    };
    if have != n {
        return Err(format!("tensor `{name}` holds {have} values, but its dims {dims:?} need {n}"));
    }
    Ok(Const { dims, values })
}

/// Values from little-endian bytes whose length is a multiple of the element size.
fn from_raw(b: &[u8], kind: Elem) -> Values {
    let f = |v: Vec<f64>, t| Values::Float(v, t);
    match kind {
        Elem::Float(FloatType::F32) => f(b.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(), FloatType::F32),
        Elem::Float(FloatType::F16) => f(b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(), FloatType::F16),
        Elem::Float(FloatType::Bf16) => f(b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(), FloatType::Bf16),
        Elem::Float(FloatType::F64) => f(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(), FloatType::F64),
        Elem::Int(8) => Values::Int(b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
        Elem::Int(4) => Values::Int(b.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()),
        Elem::Int(_) => Values::Int(b.iter().map(|&c| i64::from(c)).collect()),
    }
}

/// Values from the typed fields (ONNX keeps float16, bfloat16 and small integers in `int32_data`).
fn typed(t: &TensorProto, kind: Elem) -> Values {
    match kind {
        Elem::Float(FloatType::F32) => Values::Float(t.float_data.iter().map(|&v| f64::from(v)).collect(), FloatType::F32),
        Elem::Float(FloatType::F16) => Values::Float(t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16).to_f64()).collect(), FloatType::F16),
        Elem::Float(FloatType::Bf16) => Values::Float(t.int32_data.iter().map(|&v| half::bf16::from_bits(v as u16).to_f64()).collect(), FloatType::Bf16),
        Elem::Float(FloatType::F64) => Values::Float(t.double_data.clone(), FloatType::F64),
        Elem::Int(8) => Values::Int(t.int64_data.clone()),
        Elem::Int(_) => Values::Int(t.int32_data.iter().map(|&v| i64::from(v)).collect()),
    }
}

/// Reads `want` bytes of tensor `name` from its external data file, which must lie in the model's folder.
fn read_external(t: &TensorProto, name: &str, ext: &External<'_>, want: usize) -> Result<Vec<u8>, String> {
    let key = |k: &str| t.external_data.iter().find(|e| e.key() == k).map(|e| e.value().to_string());
    let location = key("location").ok_or_else(|| format!("tensor `{name}` is external but names no `location`"))?;
    let number = |k: &str| -> Result<Option<u64>, String> { key(k).map(|v| v.parse::<u64>().map_err(|_| format!("tensor `{name}`: external `{k}` `{v}` is not a byte count"))).transpose() };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    if length.is_some_and(|l| l != want as u64) {
        return Err(format!("tensor `{name}`: its external data is {} bytes, but its dims need {want}", length.unwrap_or(0)));
    }
    let dir = ext.dir.ok_or_else(|| format!("tensor `{name}` is in an external file `{location}`, and this model has no folder to read it from"))?;
    let path = confined(dir, &location).map_err(|m| format!("tensor `{name}`: {m}"))?;
    if !ext.read.borrow().contains(&location) {
        ext.read.borrow_mut().push(location.clone());
    }
    let io = |e: std::io::Error| format!("tensor `{name}`: cannot read its external data `{location}`: {e}");
    let mut f = std::fs::File::open(&path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if offset.checked_add(want as u64).is_none_or(|end| end > len) {
        return Err(format!("tensor `{name}`: its external data `{location}` has {len} bytes, too few for {want} bytes at offset {offset}"));
    }
    use std::io::{Read, Seek};
    f.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
    let mut bytes = vec![0u8; want];
    f.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// The regular file `file` names relative to `dir`, if it lies inside `dir`.
fn confined(dir: &Path, file: &str) -> Result<PathBuf, String> {
    let real = dir.join(file).canonicalize().map_err(|e| format!("cannot open its external data file `{file}`: {e}"))?;
    let home = dir.canonicalize().map_err(|e| format!("cannot open the model's folder `{}`: {e}", dir.display()))?;
    if !real.starts_with(&home) {
        return Err(format!("its external data file `{file}` lies outside the model's folder; move it beside the model"));
    }
    if !real.is_file() {
        return Err(format!("its external data file `{file}` is not a regular file"));
    }
    Ok(real)
}
