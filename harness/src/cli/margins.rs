//! `nanhunt margins`: how far each knob can move alone before the run flips,
//! or for a failing run, how far it must move to be fixed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nanhunt::run::Status;
use nanhunt::search::{margins, Bound, Growing, KnobMargin, MarginOptions, Margins, Scale, Target};
use nanhunt::{human, human_near_one};

/// How far is this configuration from NaN (or, failing, from a fix)?
#[derive(clap::Args)]
pub(crate) struct MarginsCmd {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// Stop searching after this long: sides not searched to their end are marked so, thresholds not refined are unverified.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    time: Duration,
    /// How many decades log-scaled knobs may move from their base, unless the scenario's `[search]` says.
    #[arg(long, default_value_t = 10.0)]
    decades: f64,
    /// Wall-time limit of one run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    run_timeout: Duration,
    /// What counts as a flip: a non-finite value, or also a finite run that diverges.
    #[arg(long, value_enum, default_value = "nonfinite")]
    target: MarginTarget,
    /// Knob sides searched at once (Candle stays single-threaded in each); the margins do not depend on it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    jobs: u16,
    /// Print the margins as one JSON object.
    #[arg(long)]
    json: bool,
    /// Draw the margins (one bar per knob, decades either side of the base) as SVG here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

impl MarginsCmd {
    /// Prints the margins; exit 0 for a finite base, 1 for a failing one.
    pub(crate) fn exec(self, ctx: &super::Context) -> anyhow::Result<u8> {
        let mut base = nanhunt::scenario::load_with(&self.scenario, &ctx.load)?;
        if !(self.decades.is_finite() && self.decades > 0.0 && self.decades <= 30.0) {
            anyhow::bail!("--decades must be in (0, 30], got {}", self.decades);
        }
        let search = base.search.get_or_insert_with(Default::default);
        search.decades = search.decades.or(Some(self.decades));
        let target = match self.target {
            MarginTarget::Nonfinite => Target::Nonfinite,
            MarginTarget::Diverge => Target::Diverge,
        };
        let opts = MarginOptions { target, deadline: Some(Instant::now() + self.time), run_timeout: Some(self.run_timeout), jobs: usize::from(self.jobs), ..Default::default() };
        // No knob to move, or a base that timed out or could not run: an error, not an empty or "finite" table.
        let m = margins(&base, &opts)?;
        if let Some(p) = &self.plot {
            nanhunt::write_atomic(p, nanhunt::report::margins_svg(&m)?.as_bytes()).with_context(|| format!("writing the plot to {}", p.display()))?;
        }
        if self.json {
            println!("{}", serde_json::to_string(&m)?);
        } else {
            print!("{}", table(&m));
        }
        Ok(u8::from(m.base_outcome == Status::Nonfinite))
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MarginTarget {
    Nonfinite,
    Diverge,
}

/// One side of a knob, in words: its threshold, none in the whole range searched (for a failing
/// base, with the nearest value whose finite run was still no fix), or why it was not searched to
/// its end.
fn side(k: &KnobMargin, b: Option<&Bound>, unsearched: Option<&String>, growing: Option<&Growing>, failing: bool, below: bool) -> String {
    if let Some(why) = unsearched {
        return why.clone();
    }
    let dir = if below { "≤" } else { "≥" };
    let show = |v: f64| if k.scale == Scale::Complement { human_near_one(v) } else { human(v) };
    let Some(b) = b else {
        return match growing {
            Some(g) => format!("no fix: {dir} {} still grows*", show(g.at)),
            None => "none within range".into(),
        };
    };
    let log = k.is_factor();
    let what = if failing { "fixed at" } else { "flips at" };
    let margin = match (log, b.margin < 1.0) {
        (true, false) if k.scale == Scale::Complement => format!("1 − v ÷{}", human(b.margin)),
        (true, true) if k.scale == Scale::Complement => format!("1 − v ×{}", human(1.0 / b.margin)),
        (true, false) => format!("×{}", human(b.margin)),
        (true, true) => format!("÷{}", human(1.0 / b.margin)),
        (false, _) => format!("±{}", human(b.margin)),
    };
    let check = if b.verified { "" } else { " (unverified)" };
    format!("{what} {dir} {} ({margin}){check}", show(KnobMargin::threshold(b, failing)))
}

/// The margins as a table that fits on a screen.
fn table(m: &Margins) -> String {
    let failing = m.base_outcome == Status::Nonfinite;
    let mut s = match &m.base_location {
        Some(at) => format!("`{}` goes non-finite as written ({at}); each knob alone, the nearest value that fixes it:\n", m.scenario),
        None => format!("`{}` stays finite as written; each knob alone, the nearest value that flips it:\n", m.scenario),
    };
    // The knob column is as wide as its longest name (`train.loss_scale.growth_interval`).
    let w = m.knobs.iter().map(|k| k.label().chars().count()).max().unwrap_or(0).max(22);
    s += &format!("  {:<w$} {:>10}  {:<34} {}\n", "knob", "base", "below", "above");
    for k in &m.knobs {
        let base = if k.scale == Scale::Complement { human_near_one(k.base) } else { human(k.base) };
        let below = side(k, k.lower.as_ref(), k.lower_unsearched.as_ref(), k.lower_growing.as_ref(), failing, true);
        let above = side(k, k.upper.as_ref(), k.upper_unsearched.as_ref(), k.upper_growing.as_ref(), failing, false);
        s += &format!("  {:<w$} {:>10}  {:<34} {}\n", k.label(), base, below, above);
    }
    for c in &m.categorical {
        let effect = match (&c.unsearched, c.flips != failing, failing) {
            (Some(why), _, _) => format!("unknown: {why}"),
            (None, true, false) => format!("flips: {}", c.location.as_ref().map_or(String::new(), |l| l.to_string())),
            (None, true, true) => c.growing.as_ref().map_or_else(|| "fixes it".to_string(), |why| format!("no fix: {why}")),
            (None, false, _) => "no change".to_string(),
        };
        s += &format!("  {} = {}: {effect}\n", c.knob, c.value);
    }
    for (k, g) in m.knobs.iter().flat_map(|k| [(k, &k.lower_growing), (k, &k.upper_growing)]).filter_map(|(k, g)| Some((k, g.as_ref()?))) {
        s += &format!("* {} = {}: {}, so it only delays the failure\n", k.label(), human(g.at), g.why);
    }
    if m.knobs.iter().flat_map(|k| [&k.lower, &k.upper]).flatten().any(|b| !b.verified) {
        s += "(unverified): the threshold was not confirmed by running both of its sides again (changed at it, unchanged 1% back towards the base): time ran out while refining it, or a run near it timed out or could not run; raise --time (or --run-timeout) to verify it\n";
    }
    let unsearched = m.knobs.iter().flat_map(|k| [&k.lower_unsearched, &k.upper_unsearched]).chain(m.categorical.iter().map(|c| &c.unsearched)).filter(|u| u.is_some()).count();
    if unsearched > 0 {
        s += &format!("{unsearched} searches did not finish, so say nothing: raise --time (or --run-timeout)\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanhunt::scenario::Knob;

    fn knob(knob: Knob, lower: Option<Bound>, lower_growing: Option<Growing>) -> KnobMargin {
        KnobMargin { knob, constant: None, scale: Scale::Log, base: 0.01, lower, upper: None, lower_unsearched: None, upper_unsearched: None, lower_growing, upper_growing: None }
    }

    #[test]
    fn every_unverified_threshold_and_every_side_without_a_fix_is_explained() {
        let bound = |verified| Bound { flips_at: 0.002, stays_finite_at: 0.001, margin: 0.1, location: None, verified };
        let growing = Growing { at: 2.0, why: "finite but diverging at step 2: up".into() };
        let mut m = Margins { scenario: "s".into(), base_outcome: Status::Finite, base_location: None, knobs: vec![knob(Knob::Lr, Some(bound(true)), None)], categorical: vec![] };
        let verified = table(&m);
        assert!(verified.contains("flips at ≤ 0.002 (÷10)\n") || verified.contains("flips at ≤ 0.002 (÷10) "), "{verified}");
        assert!(!verified.contains("unverified"), "{verified}");
        m.knobs[0].lower = Some(bound(false));
        let t = table(&m);
        assert!(t.contains("(÷10) (unverified)"), "{t}");
        let note = t.lines().find(|l| l.starts_with("(unverified): ")).expect("a line saying what (unverified) means");
        assert!(note.contains("not confirmed by running both of its sides") && note.contains("--time"), "{note}");
        // A failing base whose only finite value below was still growing: no fix, and why.
        (m.base_outcome, m.base_location) = (Status::Nonfinite, Some(nanhunt::run::Location::default()));
        m.knobs = vec![knob(Knob::Epochs, None, Some(growing))];
        let t = table(&m);
        let row = t.lines().find(|l| l.trim_start().starts_with("train.epochs")).expect("the epochs row");
        assert!(row.contains("no fix: ≤ 2 still grows*") && row.matches("none within range").count() == 1 && !t.contains("(unverified)"), "{t}");
        assert!(t.contains("* train.epochs = 2: finite but diverging at step 2: up, so it only delays the failure"), "{t}");
    }
}
