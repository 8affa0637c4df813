//! Reports, the last stage of the dataflow: they only serialise scenarios and
//! outcomes. A report directory (`write`) holds the repro, the trace, a
//! one-screen `summary.md` (`markdown`), a versioned `summary.json`
//! (`summary`) and plots (`plot`); `replay` re-runs one bit for bit; `check`
//! is the regression suite over scenarios and reports (`verdict`, `junit`);
//! `torch` exports a scenario as a PyTorch script and confirms a finding there.

mod assert;
mod check;
mod hunt_text;
mod junit;
mod margins_plot;
mod markdown;
mod plot;
mod replay;
mod summary;
pub mod torch;
mod verdict;
mod write;

pub use assert::{assert_finite_within, check_finite_within};
pub use check::{check, check_all, check_module, check_scenario, collect, tally, CheckOptions, CheckResult, Entry, Verdict};
pub use hunt_text::hunt_summary;
pub use junit::junit;
pub use margins_plot::margins_svg;
pub use replay::{compare, replay, replay_module, Divergence};
pub use summary::{changes, read_summary, Change, Environment, RunSettings, SignalRow, Summary, SCHEMA_VERSION};
pub use verdict::verdict;
pub use write::{write, ReportInput, Reports};
