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
//!
//! # Your own Candle model
//!
//! A model written with Candle (built from a candle-nn `VarBuilder`, run by
//! `Module::forward`) runs under the same watch, hunt, margins and reports as a
//! scenario's layer stack. A [`CodeModel`] pairs how to build it, from a
//! [`ParamStore`] whose `var_builder()` hands out named parameters drawn from
//! the scenario's seed, with how to run it; [`Watch::check`] names intermediate
//! tensors for the watch (without it, the watch still covers the output, the
//! loss, every gradient and every updated parameter). Everything else comes
//! from the scenario file, without its `[model]` layers:
//!
//! ```
//! use nanhunt::candle_core::{Module, Tensor};
//! use nanhunt::{CodeModel, Status, Watch};
//!
//! // Seed 002's regression on unscaled features (1 vs 1e5), as Candle code.
//! let model = CodeModel::new(
//!     "linreg",
//!     |store| nanhunt::candle_nn::linear(2, 1, store.var_builder().pp("fc")),
//!     |fc: &nanhunt::candle_nn::Linear, x: &Tensor, watch: &mut Watch| {
//!         let y = fc.forward(x)?;
//!         watch.check("fc.out", &y);
//!         Ok(y)
//!     },
//! );
//! let scenario = model.scenario(r#"
//! name = "linreg"
//! [data]
//! inputs = { kind = "values", rows = [[1.0, 1e5], [2.0, 2e5], [3.0, 3e5]] }
//! targets = { kind = "values", values = [10.0, 20.0, 30.0] }
//! [loss]
//! kind = "mse"
//! [optimizer]
//! kind = "sgd"
//! lr = 0.01
//! [train]
//! epochs = 20
//! "#, "linreg.toml")?;
//! let outcome = nanhunt::run_module(&model, &scenario);
//! assert_eq!(outcome.outcome, Status::Nonfinite);
//! let first = outcome.first_nonfinite.unwrap();
//! assert!(first.step <= 5, "lr 0.01 is far above the stability bound 2/λ ≈ 2e-11");
//! # Ok::<(), nanhunt::Error>(())
//! ```
//!
//! [`hunt_module`] and [`margins_module`] search around it as `nanhunt hunt`
//! and `nanhunt margins` do; [`assert_finite_within`] fails a `#[test]` with
//! the hunt's summary when anything in the scenario's `[search]` goes
//! non-finite, and saves the case next to the test to replay it first next
//! time. A report of a code model records its name, parameters and initial
//! hash; the model is code, so the test replays it
//! ([`report::replay_module`]), not the CLI.
//!
//! candle-nn's `LayerNorm`, `RmsNorm` and `ops::softmax_last_dim` have no backward on their
//! fused path (candle#2168): a run reports their parameters as `no_gradient`. [`nn`] has
//! drop-ins that train.

#![deny(missing_docs)]

#[cfg(feature = "cli")]
pub mod alloc;
mod atomic;
mod error;
mod hash;
pub mod nn;
mod number;
pub mod ops;
pub mod report;
pub mod run;
pub mod scenario;
pub mod search;

/// The Candle this crate is built on, for code models' tensors and `VarBuilder`s of the same version.
pub use candle_core;
/// candle-nn, whose layers a code model builds from [`ParamStore::var_builder`].
pub use candle_nn;
pub use error::{Error, Result};
pub use number::{human, human_near_one};
pub use report::{assert_finite_within, check_all, check_module, replay, write as write_report, ReportInput, Reports};
pub use run::code::{run_module, CodeModel, ModelCard, ParamStore, Watch};
pub use run::{run, run_with, Location, Outcome, RunOptions, Status};
pub use scenario::{load, Phase, Scenario, TensorId};
pub use search::{fuzzing, hunt, hunt_module, margins_module, HuntOptions};

/// Writes `bytes` to `path` atomically (temp file + fsync + rename).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    atomic::write(path, bytes)
}
