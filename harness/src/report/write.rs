//! Writing a report: one directory per finding that pastes into a bug report
//! and replays bit for bit.
//!
//! `reports/<scenario>-<signature>/` holds `repro.toml` (self-contained),
//! `trace.csv`, `summary.md` (one screen), `summary.json` (versioned),
//! `trace.svg` and `trace.png`, and an imported ONNX model's file (pinned by its SHA-256)
//! when it is small, so the report replays from its own folder. The directory is built under a temporary name
//! and renamed into place, so it is never half-written. [`Reports`] plugs this
//! into a hunt as its [`Reporter`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::markdown::markdown;
use super::plot;
use super::summary::{changes, leading_up, mark, Environment, RunSettings, Summary, SCHEMA_VERSION};
use super::verdict::expect_at;
use crate::error::{Error, Result};
use crate::run::{Outcome, RunOptions};
use crate::scenario::{InputSpec, Scenario, MAX_NAME_CHARS};
use crate::search::{fnv1a, rebuild, reductions, signature, Built, Finding, Minimal, Reporter, Threshold, Trigger};

/// Everything a report is made from.
pub struct ReportInput<'a> {
    /// The scenario that reproduces the finding.
    pub repro: &'a Scenario,
    /// The scenario it was derived from (the repro itself for `run --report`).
    pub base: &'a Scenario,
    /// The repro's outcome.
    pub outcome: &'a Outcome,
    /// Flip thresholds, if a minimizer found them.
    pub thresholds: Vec<Threshold>,
    /// How the run was made.
    pub settings: RunSettings,
    /// Reductions beyond knob changes (rows, features, steps cut), in words.
    pub reductions: Vec<String>,
    /// The knob-level repro the diff is taken against (the repro itself if none).
    pub knob_repro: Option<&'a Scenario>,
    /// A signature computed by the caller (a hunt's), instead of one from the diff.
    pub signature: Option<String>,
    /// For a hunt's root cause: what the site means.
    pub note: Option<String>,
    /// For a hunt's root cause: all its triggers, nearest first.
    pub triggers: Vec<Trigger>,
}

/// Writes a report under `parent` and returns its directory.
pub fn write(parent: &Path, input: &ReportInput) -> Result<PathBuf> {
    let o = input.outcome;
    let changes = changes(input.base, input.knob_repro.unwrap_or(input.repro));
    let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    let signature = input.signature.clone().unwrap_or_else(|| signature(o.failure_site().as_ref(), o.dtype_name(), &keys));
    let mut repro = input.repro.clone();
    let onnx = pin_onnx(&mut repro);
    let csv = match &mut repro.data.inputs {
        InputSpec::Csv { path, .. } => Some(input.repro.dir.as_deref().unwrap_or(Path::new(".")).join(std::mem::replace(path, "data.csv".into()))),
        _ => None,
    };
    // The name becomes a directory name: safe characters, bounded length, and a hash of the
    // whole base scenario, so two scenarios of one name failing at one place do not share a report.
    let name: String = input.repro.name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).take(MAX_NAME_CHARS).collect();
    let name = match name.trim_start_matches(['.', '-']) {
        "" => "scenario",
        n => n,
    };
    if !changes.is_empty() || !input.reductions.is_empty() {
        // The description must be true of the repro: say how it was derived.
        let diff: Vec<String> = changes.iter().map(|c| format!("{} {} → {}", c.key, or_none(&c.base), or_none(&c.repro))).collect();
        let mut what = diff.join(", ");
        for r in &input.reductions {
            what += &format!("{}{r}", if what.is_empty() { "" } else { "; " });
        }
        repro.description = format!("Derived by nanhunt from `{}`: {what}. The base: {}", input.base.name, input.base.description);
    }
    let toml_text = readable_floats(&toml::to_string(&repro).map_err(|source| Error::Toml { path: parent.join("repro.toml"), source })?);
    // The hash is of the base, so a root cause keeps its directory as its nearest trigger changes.
    let base_text = toml::to_string(input.base).map_err(|source| Error::Toml { path: parent.join("repro.toml"), source })?;
    let id = format!("{signature}-{:08x}", fnv1a(base_text.as_bytes()) as u32);
    let dir = parent.join(format!("{name}-{id}"));
    let tmp = parent.join(format!(".{name}-{id}.tmp{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(p, e)
    };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    if let Some(src) = csv {
        // Self-contained: the data travels with the repro.
        std::fs::copy(&src, tmp.join("data.csv")).map_err(io(&src))?;
    }
    for (src, to) in &onnx.copies {
        let dest = tmp.join(to);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::copy(src, &dest).map_err(io(src))?;
    }
    // A code model is not in the report: the test that has it replays it.
    let replay = match &o.model {
        Some(m) => format!(
            "// the model is Rust code (`{}`): replay from the test that has it\nnanhunt::report::replay_module(&model, std::path::Path::new({:?}), &Default::default())",
            m.name,
            dir.display().to_string()
        ),
        None => format!("nanhunt replay {}", dir.display()),
    };
    let run = if o.model.is_some() { "nanhunt::run_module(&model, &model.scenario_file(std::path::Path::new(\"repro.toml\"))?)" } else { "nanhunt run repro.toml" };
    let mut header = format!("# nanhunt repro of `{}`.\n# Replay: {}\n# Run:    {run}\n", input.base.name, replay.replace('\n', "\n#         "));
    header += &onnx.note;
    header += "\n";
    std::fs::write(tmp.join("repro.toml"), header + &toml_text).map_err(io(&tmp))?;
    std::fs::write(tmp.join("trace.csv"), o.trace.to_csv()?).map_err(io(&tmp))?;
    let leading_up = leading_up(o);
    let summary = Summary {
        schema_version: SCHEMA_VERSION,
        scenario: input.repro.name.clone(),
        signature,
        outcome: o.clone(),
        leading_up,
        changes,
        thresholds: input.thresholds.clone(),
        environment: Environment::of(o),
        settings: input.settings,
        reductions: input.reductions.clone(),
        replay,
        note: input.note.clone(),
        triggers: input.triggers.clone(),
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|source| Error::Json { path: dir.join("summary.json"), what: "report summary", source })?;
    std::fs::write(tmp.join("summary.json"), json).map_err(io(&tmp))?;
    std::fs::write(tmp.join("summary.md"), markdown(&summary)).map_err(io(&tmp))?;
    let mark = mark(o);
    let title = format!("{}: {}", summary.scenario, o.failure_site().map_or("finite".into(), |f| format!("{} in {} at step {}", f.kind, f.tensor, f.step)));
    std::fs::write(tmp.join("trace.svg"), plot::svg(&title, &o.trace, mark)?).map_err(io(&tmp))?;
    plot::png(&tmp.join("trace.png"), &title, &o.trace, mark)?;
    // Swap the finished directory into place.
    let old = parent.join(format!(".{name}-{id}.old{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(io(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(dir)
}

/// Largest imported ONNX model (the file and its external data) a report copies beside
/// `repro.toml`: 16 MiB. A larger one is named by its absolute path, pinned by its hash alike.
pub const MAX_COPIED_ONNX_BYTES: u64 = 16 << 20;

/// The files a report copies for an imported model, and what its header says of them.
#[derive(Default)]
struct OnnxCopy {
    /// Each file's source and its path in the report.
    copies: Vec<(PathBuf, String)>,
    /// A comment line for `repro.toml`'s header (empty when the model travels with it).
    note: String,
}

/// Pins `repro`'s imported model by the hash loading read (replay refuses a changed file) and,
/// when it is at most [`MAX_COPIED_ONNX_BYTES`], moves it (and its external data, at the same
/// places relative to it) beside `repro.toml`; a larger one keeps its absolute path.
fn pin_onnx(repro: &mut Scenario) -> OnnxCopy {
    let dir = repro.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let Some(import) = repro.model.onnx.as_mut() else { return OnnxCopy::default() };
    let Some(read) = import.read.clone() else { return OnnxCopy::default() };
    import.sha256 = Some(read.sha256.clone());
    let model = dir.join(&import.path);
    let folder = model.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Only plain relative names that are none of the report's own files travel with it.
    let own = ["repro.toml", "trace.csv", "data.csv", "summary.json", "summary.md", "trace.svg", "trace.png"];
    let plain = |p: &str| !p.is_empty() && !own.contains(&p) && Path::new(p).components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if read.bytes <= MAX_COPIED_ONNX_BYTES && plain(&name) && read.external.iter().all(|e| plain(e) && e != &name) {
        import.path.clone_from(&name);
        let copies = std::iter::once((model, name)).chain(read.external.iter().map(|e| (folder.join(e), e.clone()))).collect();
        return OnnxCopy { copies, note: String::new() };
    }
    import.path = std::fs::canonicalize(&model).unwrap_or(model).display().to_string();
    let note = format!("# The ONNX model ({} bytes) stays where it is (reports copy up to {MAX_COPIED_ONNX_BYTES} bytes): run with --allow-outside-paths.\n", read.bytes);
    OnnxCopy { copies: Vec::new(), note }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "(none)"
    } else {
        s
    }
}

/// Rewrites float literals of TOML text in shortest exponent form where that is
/// at least 3 characters shorter (`0.00000001` → `1e-8`, `100000.0` → `1e5`;
/// `0.001` stays), outside strings and comments, keeping every value's bits.
fn readable_floats(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let starts = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| chars.get(i + k) == Some(&c));
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // Strings (basic, literal, and their multi-line forms) and comments are copied as they are.
        let close = match c {
            '"' if starts(i, "\"\"\"") => Some(("\"\"\"", true)),
            '\'' if starts(i, "\'\'\'") => Some(("\'\'\'", false)),
            '"' => Some(("\"", true)),
            '\'' => Some(("\'", false)),
            '#' => Some(("\n", false)),
            _ => None,
        };
        if let Some((end, escapes)) = close {
            let open = if end == "\n" { 1 } else { end.chars().count() };
            let mut j = i + open;
            while j < chars.len() && !starts(j, end) {
                j += if escapes && chars[j] == '\\' { 2 } else { 1 };
            }
            let j = (j + if end == "\n" { 0 } else { end.chars().count() }).min(chars.len());
            out.extend(&chars[i..j]);
            i = j;
            continue;
        }
        let starts_number = (c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))) && (i == 0 || " [,=".contains(chars[i - 1]));
        if starts_number {
            let end = (i + 1..chars.len()).find(|&j| !(chars[j].is_ascii_digit() || ".eE+-_".contains(chars[j]))).unwrap_or(chars.len());
            let token: String = chars[i..end].iter().collect();
            let shorter = token
                .parse::<f64>()
                .ok()
                .filter(|_| token.contains('.') && !token.contains(['e', 'E']))
                .map(|v| format!("{v:e}"))
                .filter(|s| s.len() + 3 <= token.len() && s.parse::<f64>().ok() == token.parse::<f64>().ok());
            out += shorter.as_deref().unwrap_or(&token);
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

impl<'a> ReportInput<'a> {
    /// The report of a scenario as written: its own base, no thresholds.
    pub fn of_run(scenario: &'a Scenario, outcome: &'a Outcome, settings: RunSettings) -> Self {
        ReportInput { repro: scenario, base: scenario, outcome, thresholds: vec![], settings, reductions: vec![], knob_repro: None, signature: None, note: None, triggers: vec![] }
    }

    /// The report of a minimized finding of `base`, as `fuzz-shrink` writes it.
    pub fn of_minimal(base: &'a Scenario, m: &'a Minimal, signature: Option<String>) -> Self {
        ReportInput {
            repro: &m.repro,
            base,
            outcome: &m.outcome,
            thresholds: m.thresholds.clone(),
            settings: RunSettings { watch: true, continue_steps: 0 },
            reductions: m.reductions(),
            knob_repro: Some(&m.knob_repro),
            signature,
            note: None,
            triggers: vec![],
        }
    }
}

/// A hunt's [`Reporter`] that writes each root cause's report under one directory:
/// the nearest trigger's repro, made again from the campaign's record, and every trigger in the summary.
#[derive(Debug, Clone)]
pub struct Reports {
    /// The directory reports go under.
    pub dir: PathBuf,
}

impl Reporter for Reports {
    fn report(&self, base: &Scenario, finding: &Finding, run_limit: Duration) -> Result<PathBuf> {
        let nearest = finding.nearest().ok_or_else(|| Error::Replay { dir: self.dir.clone(), message: format!("root cause {} has no trigger", finding.signature) })?;
        // The repro made at minimization; after a resume, made again, each run within the limit.
        let built = match &nearest.built {
            Some(b) => b.as_ref().clone(),
            None => rebuild(base, &nearest.mutations, nearest.rows.as_ref(), &RunOptions { deadline: Some(Instant::now() + run_limit), ..RunOptions::default() })
                .ok_or_else(|| Error::Replay { dir: self.dir.clone(), message: format!("the trigger of root cause {} no longer applies to `{}`", finding.signature, base.name) })?,
        };
        let Built { knob_repro, mut repro, mut outcome } = built;
        // A repro made again after a resume keeps the verdict its trigger recorded.
        outcome.verdict = outcome.verdict.or_else(|| nearest.verdict.clone());
        repro.expect = outcome.failure_site().as_ref().map(expect_at);
        let reductions = reductions(&knob_repro, &repro, &outcome, nearest.rows.as_ref(), nearest.full_step);
        let input = ReportInput {
            repro: &repro,
            base,
            outcome: &outcome,
            thresholds: nearest.thresholds.clone(),
            settings: RunSettings { watch: true, continue_steps: 0 },
            reductions,
            knob_repro: Some(&knob_repro),
            signature: Some(finding.signature.clone()),
            note: finding.note.clone(),
            triggers: finding.triggers.clone(),
        };
        write(&self.dir, &input)
    }
}

#[cfg(test)]
mod tests {
    use super::readable_floats;

    #[test]
    fn floats_are_written_readably_and_keep_their_bits() {
        let text = "name = \"0.00000001 \\\" stays\"\nd = 'a \" 0.00000001 # b'\ne = \"\"\"\n0.00000001 \" x\n\"\"\"\neps = 0.00000001\nbeta1 = 0.9\nrows = [[1.0, 100000.0], [-0.0001, 2.5]]\n# 0.00000001\nseed = 10\n";
        let out = readable_floats(text);
        let want = text.replace("eps = 0.00000001", "eps = 1e-8").replace("100000.0]", "1e5]");
        assert_eq!(out, want, "strings of every kind and comments are left alone");
        let (a, b): (toml::Value, toml::Value) = (toml::from_str(text).unwrap(), toml::from_str(&out).unwrap());
        assert_eq!(a, b, "the same values");
    }

    #[test]
    fn every_seed_scenario_round_trips_through_repro_toml() {
        for e in std::fs::read_dir(crate::scenario::seeds_dir()).unwrap() {
            let p = e.unwrap().path();
            let mut s = crate::scenario::load(&p).unwrap();
            s.dir = None;
            let text = toml::to_string(&s).unwrap();
            let back = crate::scenario::from_str(&text, "repro.toml").unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()));
            // Compared as text: a scenario may hold NaN, which is not equal to itself.
            assert_eq!(toml::to_string(&back).unwrap(), text, "{}", p.display());
            assert_eq!(format!("{back:?}"), format!("{s:?}"));
        }
    }
}
