//! Helpers every section of the file format uses: serde defaults and the [`Named`]
//! trait. A leaf: it imports no other part of the scenario.

/// The `snake_case` name of an enum value, exactly as written in scenario files.
///
/// Derived once per enum (strum's `IntoStaticStr` beside serde's
/// `rename_all = "snake_case"`); a test holds the two to the same names.
pub trait Named {
    /// The name, e.g. `"bce_torch"` or `"f16"`.
    fn name(&self) -> &'static str;
}

impl<T> Named for T
where
    for<'a> &'a T: Into<&'static str>,
{
    fn name(&self) -> &'static str {
        self.into()
    }
}

/// Serde default: 1.
pub(crate) fn one() -> f64 {
    1.0
}
/// Serde skip test: the value is 1.
pub(crate) fn is_one(v: &f64) -> bool {
    *v == 1.0
}
/// Serde default: 1.
pub(crate) fn one_usize() -> usize {
    1
}
