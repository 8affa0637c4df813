//! nanhunt: find, shrink and replay the training runs whose loss turns NaN.
//!
//! The crate is one dataflow, one folder per stage, each depending only on the
//! stages before it:
//!
//! - [`scenario`]: the TOML file format, loading with `FILE:LINE:COL` errors,
//!   validation, static shapes and the memory estimate;
//! - [`run`]: the Candle runner, `run(&Scenario) -> Outcome`, deterministic for a
//!   scenario and seed, watching every tensor;
//! - [`search`]: mutations, the hunt's engines, the minimizer, campaign state and
//!   fuzzing, which only produce and shrink scenarios;
//! - [`report`]: report directories, replay and the regression check, which only
//!   serialise scenarios and outcomes.
//!
//! The most used items are re-exported here.

#![deny(missing_docs)]

#[cfg(feature = "cli")]
pub mod alloc;
mod atomic;
mod error;
mod hash;
mod number;
pub mod report;
pub mod run;
pub mod scenario;
pub mod search;

pub use error::{Error, Result};
/// The Candle this crate is built on, for code models' tensors and `VarBuilder`s of the same version.
pub use candle_core;
/// candle-nn, whose layers a code model builds from [`ParamStore::var_builder`].
pub use candle_nn;
pub use number::{human, human_near_one};
pub use report::{assert_finite_within, check_all, check_module, replay, write as write_report, ReportInput, Reports};
pub use run::code::{run_module, CodeModel, ModelCard, ParamStore, Watch};
pub use run::{run, run_with, Location, Outcome, RunOptions, Status};
pub use scenario::{load, Phase, Scenario};
pub use search::{fuzzing, hunt, hunt_module, margins_module, HuntOptions};

/// Writes `bytes` to `path` atomically (temp file + fsync + rename).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    atomic::write(path, bytes)
}
