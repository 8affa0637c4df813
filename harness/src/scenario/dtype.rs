//! The compute dtype as a scenario names it. A leaf: the ops, the amp settings and
//! the training section all read it, and it reads none of them.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

/// The compute dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, arbitrary::Arbitrary, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DTypeName {
    /// 32-bit float.
    #[default]
    F32,
    /// 64-bit float.
    F64,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl DTypeName {
    /// Bytes per element.
    pub fn bytes(self) -> u128 {
        match self {
            DTypeName::F64 => 8,
            DTypeName::F32 => 4,
            DTypeName::F16 | DTypeName::Bf16 => 2,
        }
    }
}
