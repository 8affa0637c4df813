//! The list of ops, written once. `for_each_op!(m)` calls the macro `m` with every
//! registered op as `Variant => module::Type,` (the variant is the op's `Layer` variant,
//! whose snake_case name is the scenario's `type = "..."`); the `Layer` enum, its
//! `op()` dispatch and the tests that enumerate the registry are generated from it.
//!
//! Adding an op is one line here (and its file, declared in `ops/mod.rs`).

/// Calls `$m!` with the registered ops.
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_op {
    ($m:ident) => {
        $m! {
            // Variant => module::Type,
            Softsign => softsign::Softsign,
            Logsigmoid => logsigmoid::Logsigmoid,
            Clamp => clamp::Clamp,
            Normalize => normalize::Normalize,
        }
    };
}
