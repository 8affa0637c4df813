//! A mutation's encodings: the file format of corpora, findings and reports
//! (`{"knob": "optimizer.lr", "value": 0.01}`, with `feature` for `data.scale`
//! `what` and `split` for `data.inject`, `layer`, `within` (inside residual blocks, where not empty), `name` and `scale` for `consts`), and fuzzer bytes (`arbitrary`:
//! a knob, then a value of its type, as the derive on the former enum of one
//! variant per knob decoded them, so saved fuzz inputs decode as before).

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Mutation;
use crate::scenario::{Added, Constant, Factor, Fields, Knob, Value};

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("knob", &self.knob)?;
        match self.value {
            Value::Real(v) => m.serialize_entry("value", &v)?,
            Value::Count(n) => m.serialize_entry("value", &n)?,
            Value::Off => m.serialize_entry("value", &None::<f64>)?,
            Value::Seed(n) => m.serialize_entry("value", &n)?,
            Value::Dtype(d) => m.serialize_entry("value", &d)?,
            Value::Optimizer(o) => m.serialize_entry("value", &o)?,
            Value::Precision(p) => m.serialize_entry("value", &p)?,
            Value::Loss(l) => m.serialize_entry("value", &l)?,
            Value::Reduction(r) => m.serialize_entry("value", &r)?,
            Value::Factor(Factor { feature, value }) => {
                m.serialize_entry("feature", &feature)?;
                m.serialize_entry("value", &value)?;
            }
            Value::Const(Constant { at, value, scale }) => {
                m.serialize_entry("layer", &at.layer)?;
                if !at.within.is_empty() {
                    m.serialize_entry("within", at.within)?;
                }
                m.serialize_entry("name", at.name)?;
                m.serialize_entry("scale", &scale)?;
                m.serialize_entry("value", &value)?;
            }
            Value::Inject(Added { what, split, fraction }) => {
                m.serialize_entry("what", &what)?;
                m.serialize_entry("split", &split)?;
                m.serialize_entry("value", &fraction)?;
            }
        }
        m.end()
    }
}

/// A saved mutation as read: its knob, then whichever fields that knob's value needs.
#[derive(Deserialize)]
struct Saved {
    knob: Knob,
    #[serde(flatten)]
    fields: Fields,
}

impl<'de> Deserialize<'de> for Mutation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Saved { knob, fields } = Saved::deserialize(d)?;
        let value = (knob.entry().read)(&fields).map_err(|e| D::Error::custom(format!("`{knob}`: {e}")))?;
        Ok(Mutation { knob, value })
    }
}

impl<'a> arbitrary::Arbitrary<'a> for Mutation {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let knob = <Knob as arbitrary::Arbitrary>::arbitrary(u)?;
        Ok(Mutation { knob, value: (knob.entry().arbitrary)(u)? })
    }
}
