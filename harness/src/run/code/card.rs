//! [`ModelCard`]: what a report records of a code model, which cannot be
//! replayed from the report alone: its name, its parameters' names and shapes,
//! and a hash of their initial values.

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::run::net::Param;

/// What a report records of a code model: it cannot be replayed from the report alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The model's name.
    pub name: String,
    /// Each parameter's name and shape, in the order the model asked for them.
    pub params: Vec<(String, Vec<usize>)>,
    /// FNV-1a (64-bit, hex) over the initial parameters' names, shapes and values (as f64 bits),
    /// for the first fold: a replay that starts elsewhere is not the same run.
    pub init_hash: String,
}

impl ModelCard {
    /// The card of the model `name` with the initial parameters `params`.
    pub(crate) fn of(name: String, params: &[Param]) -> Result<Self> {
        Ok(ModelCard { name, params: params.iter().map(|p| (p.name.clone(), p.var.dims().to_vec())).collect(), init_hash: init_hash(params)? })
    }
}

/// FNV-1a over every parameter's name, shape and values (as f64 bits), in order.
fn init_hash(params: &[Param]) -> Result<String> {
    let mut h = crate::hash::Fnv1a::default();
    let mut eat = |bytes: &[u8]| h.write(bytes);
    for p in params {
        eat(p.name.as_bytes());
        p.var.dims().iter().for_each(|d| eat(&(*d as u64).to_le_bytes()));
        for v in p.var.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()? {
            eat(&v.to_bits().to_le_bytes());
        }
    }
    Ok(format!("{:016x}", h.finish()))
}
