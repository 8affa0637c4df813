//! Search, the third stage of the dataflow: engines that produce scenarios
//! from a base and shrink the ones that flip. They never look inside a run;
//! they only read its [`crate::run::Outcome`].
//!
//! As proptest keeps `Strategy`, `ValueTree` and `TestRunner` apart, here
//! generation (`space`: proptest strategies over typed [`Mutation`]s), running
//! ([`crate::run::run`]) and shrinking ([`Minimizer`]) are separate. The same
//! [`Mutation`] type feeds the strategies, the hunt's engines and the cargo-fuzz
//! targets ([`fuzzing`]). A campaign ([`hunt`]) keeps its state in a corpus
//! on disk, bounded by a [`Cap`] (`corpus_cap.rs`), names each finding by a stable [`signature`], and weighs its
//! candidates by their expected cost ([`work`], `cost.rs`).

mod code;
mod corpus;
mod corpus_cap;
mod cost;
mod errors;
mod finding;
pub mod fuzzing;
mod hunt;
mod margins;
mod minimize;
mod mutation;
mod reach;
mod root_cause;
mod score;
mod space;
mod sweep;

pub use code::{hunt_module, margins_module};
pub use corpus::{merge, read_findings, write_findings};
pub use corpus_cap::{entry_bytes, prune_dir, Cap, Pruned, Size, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};
pub use cost::{relative, work, DEFER, STEP_ROWS};
pub use errors::{merge_errors, read_errors, write_errors, ErrorEntry};
pub use finding::{distance, fnv1a, signature, site_signature, Finding, Pending, Site, Target, Threshold, Trigger};
pub use hunt::{hunt, Engine, HuntOptions, HuntResult, Progress, Reporter, Stage};
pub use margins::{margins, Bound, Categorical, Growing, KnobMargin, MarginOptions, Margins};
pub use minimize::{fails, materialize, rebuild, reductions, round3_away, Built, Minimal, Minimizer, RowCut, ROW_RUNS};
pub use mutation::{describe, effective, mutate, normalize, try_mutate, Mutation, Scale};
pub use reach::margin_search;
pub use root_cause::{group, group_known, read_known, trigger_text, write_root_causes, Mechanism, PrecisionClass, RootCause, Tally};
pub(crate) use space::neighbourhood;
pub use sweep::{sweep, wilson, Sweep};
