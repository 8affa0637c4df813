//! Progress bars (indicatif) for long work: a run's steps, a hunt's time
//! budget, a check's scenarios. They draw on stderr and vanish when done.

use indicatif::{ProgressBar, ProgressStyle};

fn bar(len: u64, template: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "))
}

/// Steps of one run, named by its scenario.
pub(crate) fn steps(name: &str) -> ProgressBar {
    let b = bar(0, "{spinner} {msg} [{bar:30}] step {pos}/{len} {per_sec} eta {eta}");
    b.set_message(name.to_string());
    b
}

/// Seconds of a hunt's budget.
pub(crate) fn budget(seconds: u64) -> ProgressBar {
    bar(seconds.max(1), "{spinner} {msg} [{bar:25}] {elapsed} / remaining {eta}")
}

/// Entries of a check.
pub(crate) fn entries(n: usize) -> ProgressBar {
    bar(n as u64, "{spinner} checking [{bar:30}] {pos}/{len} {msg}")
}
