//! A model written in Rust rather than as a layer stack: `[model] code = "name"`.
//!
//! The scenario only names the code model; the model itself is a value the
//! runner recognises (`run::code`), carried here as an opaque handle so the
//! scenario stage depends on nothing after it. A scenario read back from a
//! report has the name and no handle: its runs are refused with a clear error
//! that says to replay it from the test that defines the model.

use std::any::Any;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A code model's name, and the model itself when the scenario was made in Rust.
#[derive(Clone)]
pub struct Code {
    /// The name the model was given, as written in `[model] code`.
    pub name: String,
    /// The model (`run::code`'s type), absent in a scenario read from a file.
    pub handle: Option<Arc<dyn Any + Send + Sync>>,
}

impl Code {
    /// A name with no model behind it (what a file holds).
    pub fn named(name: impl Into<String>) -> Self {
        Code { name: name.into(), handle: None }
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Code({:?}{})", self.name, if self.handle.is_some() { "" } else { ", no model" })
    }
}

/// Two codes are equal when they name the same model and hold the same one (or neither holds one).
impl PartialEq for Code {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && match (&self.handle, &other.handle) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Code::named)
    }
}

impl<'a> arbitrary::Arbitrary<'a> for Code {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        String::arbitrary(u).map(Code::named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_model_is_written_as_its_name_and_read_back_without_a_model() {
        let c = Code { name: "block".into(), handle: Some(Arc::new(3u8)) };
        #[derive(Serialize, Deserialize)]
        struct M {
            code: Code,
        }
        let text = toml::to_string(&M { code: c.clone() }).unwrap();
        assert_eq!(text.trim(), "code = \"block\"");
        let back: M = toml::from_str(&text).unwrap();
        assert_eq!(back.code.name, "block");
        assert!(back.code.handle.is_none());
        assert_ne!(back.code, c, "a name without its model is not the model");
        assert_eq!(c.clone(), c);
    }
}
