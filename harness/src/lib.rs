//! nanhunt: find, shrink and replay the training runs whose loss turns NaN.
//!
//! The centre is one dataflow: a [`Scenario`] (read by [`load`]) goes through
//! the runner ([`run`]) to an [`Outcome`], which says whether every value stayed
//! finite and, if not, where the first non-finite one appeared. Search engines
//! and reports are built around it.

pub mod atomic;
pub mod check;
pub mod corpus;
pub mod data;
pub mod device;
pub mod error;
pub mod expect;
pub mod fuzzing;
pub mod hunt;
pub mod load;
pub mod loss;
pub mod minimize;
pub mod model;
pub mod mutation;
pub mod optim;
pub mod outcome;
pub mod plot;
pub mod replay;
pub mod report;
pub mod summary;
pub mod scenario;
pub mod score;
pub mod space;
pub mod stats;
pub mod trace;
pub mod train;
pub mod validate;

pub use error::{Error, Result};
pub use load::load;
pub use outcome::{Location, Outcome, Phase, Status};
pub use scenario::Scenario;
pub use train::{run, run_with, RunOptions};
