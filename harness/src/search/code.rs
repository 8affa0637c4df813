//! The hunt and the margins of a model written in Rust: the scenario's search
//! with the model in place of its layer stack. Every candidate is a copy of the
//! scenario, and carries the model along, so the engines need nothing else.

use crate::error::Result;
use crate::run::code::CodeModel;
use crate::scenario::Scenario;
use crate::search::{hunt, margins, HuntOptions, HuntResult, MarginOptions, Margins, Progress, Reporter};

/// [`hunt`] around `s` with `model` in place of its layers: the same findings, root causes
/// and reports as `nanhunt hunt`.
pub fn hunt_module(model: &CodeModel, s: &Scenario, opts: &HuntOptions, reporter: Option<&dyn Reporter>, progress: &(dyn Fn(&Progress) + Sync)) -> Result<HuntResult> {
    hunt(&model.attach(s.clone()), opts, reporter, progress)
}

/// [`margins`] of `s` with `model` in place of its layers: how far each knob can move before
/// the run flips, as `nanhunt margins` measures it.
pub fn margins_module(model: &CodeModel, s: &Scenario, opts: &MarginOptions) -> Margins {
    margins(&model.attach(s.clone()), opts)
}
