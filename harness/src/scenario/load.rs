//! Reading scenario files: TOML in, [`Scenario`] out, or an error that points
//! at `FILE:LINE:COL` and says what was expected.
//!
//! The format itself is the serde types of this folder; the checks of values
//! that parse but cannot run live in `validate`. This module joins them and
//! turns byte spans into lines and columns, adding "did you mean" hints.

use std::path::{Path, PathBuf};

use super::{validate, InputSpec, Problem, Scenario};
use crate::error::{Error, Result};

/// Limits on what loading reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Largest scenario file read, in bytes. Parsing costs about 30× the file's
    /// size in memory, so large data belongs in a CSV file.
    pub max_bytes: u64,
    /// Let a CSV path point outside the scenario's folder.
    pub allow_outside_paths: bool,
}

/// Default largest scenario file: 16 MiB.
pub const DEFAULT_MAX_SCENARIO_BYTES: u64 = 16 << 20;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { max_bytes: DEFAULT_MAX_SCENARIO_BYTES, allow_outside_paths: false }
    }
}

/// Reads, parses and validates a scenario file with the default limits.
pub fn load(path: &Path) -> Result<Scenario> {
    load_with(path, &LoadOptions::default())
}

/// Reads, parses and validates a scenario file. Only a regular file within
/// `opts.max_bytes` is read (a FIFO or device would block or never end).
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Scenario> {
    load_edited(path, opts, &|src| src, &|_| {})
}

/// [`load_with`], with the text edited before it is parsed (without moving any line) and the
/// parsed scenario changed before it is validated: how a code model takes the stack's place.
pub(crate) fn load_edited(path: &Path, opts: &LoadOptions, edit: &dyn Fn(String) -> String, change: &dyn Fn(&mut Scenario)) -> Result<Scenario> {
    let bytes = read_regular(path, opts.max_bytes, "a scenario file", "write large data as a CSV file (`inputs = { kind = \"csv\", ... }`), or raise the limit with `--max-scenario-mb`")?;
    let origin = path.display().to_string();
    let src = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.as_bytes()[..valid]);
        let (line, col) = line_col(&text, valid);
        Error::Parse { path: origin.clone(), line, col, message: "this is not UTF-8 text: a scenario is a TOML file".into() }
    })?;
    let src = edit(src);
    let mut scenario = parse_str(&src, &origin)?;
    scenario.dir = path.parent().map(Path::to_path_buf);
    change(&mut scenario);
    let dir = scenario.dir.clone().filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| PathBuf::from("."));
    let limit = scenario.train.memory_limit_mb;
    if let Some(import) = scenario.model.onnx.as_mut() {
        // An imported model starts at the file's values; a written `[model] init` redraws them.
        let written = src.parse::<toml::Table>().ok().and_then(|t| t.get("model")?.get("init").cloned()).is_some();
        if !written {
            scenario.model.init = super::Init::File;
        }
        if let Err(message) = inside(&dir, &import.path, opts.allow_outside_paths, "ONNX model") {
            let location = locate_key(&src, "model.onnx").map_or(origin.clone(), |(l, c)| format!("{origin}:{l}:{c}"));
            return Err(Error::Invalid { location, key: "model.onnx".into(), message });
        }
        let file = dir.join(&import.path);
        if let Some((kind, reduction)) = super::onnx::resolve(import, &file, limit, scenario.loss.from_model.as_deref())? {
            // The graph's loss is the loss: a written kind must be the one it computes.
            if !matches!(scenario.loss.kind, super::LossKind::Expr) && scenario.loss.kind != kind {
                let location = locate_key(&src, "loss.kind").map_or(origin.clone(), |(l, c)| format!("{origin}:{l}:{c}"));
                let message = format!("the model's output `{}` computes the loss {}: leave `kind` out or write that", scenario.loss.from_model.as_deref().unwrap_or(""), <&str>::from(kind));
                return Err(Error::Invalid { location, key: "loss.kind".into(), message });
            }
            (scenario.loss.kind, scenario.loss.reduction) = (kind, reduction);
        }
    }
    check_text(&scenario, &src, &origin)?;
    if let InputSpec::Csv { path: csv, .. } = &scenario.data.inputs {
        if let Err(message) = inside(&dir, csv, opts.allow_outside_paths, "CSV") {
            let location = locate_key(&src, "data.inputs").map_or(origin.clone(), |(l, c)| format!("{origin}:{l}:{c}"));
            return Err(Error::Invalid { location, key: "data.inputs".into(), message });
        }
    }
    Ok(scenario)
}

/// Reads a file that must be a regular file of at most `max` bytes.
pub(crate) fn read_regular(path: &Path, max: u64, what: &str, hint: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(path, std::io::Error::other(format!("{what} must be a regular file, not a directory, pipe or device"))));
    }
    if meta.len() > max {
        return Err(Error::FileTooLarge { path: path.to_path_buf(), what: what.to_string(), bytes: meta.len(), limit: max, hint: hint.to_string() });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    use std::io::Read;
    std::fs::File::open(path).and_then(|f| f.take(max + 1).read_to_end(&mut bytes)).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::FileTooLarge { path: path.to_path_buf(), what: what.to_string(), bytes: bytes.len() as u64, limit: max, hint: hint.to_string() });
    }
    Ok(bytes)
}

/// Checks that `file` (a `what` file: CSV, ONNX model), relative to `dir`, is a regular file
/// inside `dir` (unless `outside` allows any).
fn inside(dir: &Path, file: &str, outside: bool, what: &str) -> std::result::Result<(), String> {
    let full = dir.join(file);
    let real = full.canonicalize().map_err(|e| format!("cannot open the {what} file `{}`: {e}", full.display()))?;
    if !real.is_file() {
        return Err(format!("the {what} path `{file}` is not a regular file"));
    }
    let home = dir.canonicalize().map_err(|e| format!("cannot open the scenario's folder `{}`: {e}", dir.display()))?;
    if !outside && !real.starts_with(&home) {
        return Err(format!("the {what} path `{file}` leads outside the scenario's folder; move the file beside the scenario, or pass `--allow-outside-paths`"));
    }
    Ok(())
}

/// Parses scenario text; `origin` names it in errors. Does not validate values.
pub fn parse_str(src: &str, origin: &str) -> Result<Scenario> {
    toml::from_str::<Scenario>(src).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(src, s.start)).unwrap_or((1, 1));
        Error::Parse { path: origin.to_string(), line, col, message: with_hint(e.message()) }
    })
}

/// Parses and validates scenario text in one go (for tests and in-memory scenarios).
pub fn from_str(src: &str, origin: &str) -> Result<Scenario> {
    let scenario = parse_str(src, origin)?;
    check_text(&scenario, src, origin)?;
    Ok(scenario)
}

/// Validates a parsed scenario, locating the first problem's key in its text `src`.
pub(crate) fn check_text(scenario: &Scenario, src: &str, origin: &str) -> Result<()> {
    match validate(scenario).into_iter().next() {
        None => Ok(()),
        Some(Problem { key, message }) => {
            let location = match expression_at(src, &key, &message).or_else(|| locate_key(src, &key)) {
                Some((line, col)) => format!("{origin}:{line}:{col}"),
                None => origin.to_string(),
            };
            Err(Error::Invalid { location, key, message })
        }
    }
}

/// Where an expression's error is written: a `message` starting "column N:" about the layer,
/// loss or preprocessing step at `key` points at the N-th character of its `expr` string's value,
/// found in the raw literal (escapes, multi-line strings: `toml_string`).
fn expression_at(src: &str, key: &str, message: &str) -> Option<(usize, usize)> {
    let col: usize = message.strip_prefix("column ")?.split(':').next()?.parse().ok()?;
    let dotted = if key.ends_with(".expr") { key.to_string() } else { format!("{key}.expr") };
    let span = spanned(src, &dotted, true)?;
    let inside = super::toml_string::raw_offset(src.get(span.clone())?, col.checked_sub(1)?)?;
    Some(line_col(src, span.start + inside))
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds where a dotted key such as `optimizer.lr`, `model.layers.2.layers.1.heads` or
/// `data.inputs.rows.3.5` is written: from the parsed document's spans, so keys inside
/// inline tables and array elements are found exactly; the text search below is the
/// fallback for a key the document does not hold (a default the user never wrote).
pub(crate) fn locate_key(src: &str, dotted: &str) -> Option<(usize, usize)> {
    spanned_key(src, dotted).map(|offset| line_col(src, offset)).or_else(|| search_key(src, dotted))
}

/// The byte offset of a dotted key in the parsed document (of the key itself in a table, of
/// the element in an array), or of its deepest written parent.
fn spanned_key(src: &str, dotted: &str) -> Option<usize> {
    spanned(src, dotted, false).map(|s| s.start)
}

/// The byte span of a dotted key in the parsed document, or with `value` of the value it
/// holds (an array's element either way); else of its deepest written parent.
fn spanned(src: &str, dotted: &str, value_span: bool) -> Option<std::ops::Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(src).ok()?;
    let mut value: &DeValue = &DeValue::Table(root.get_ref().clone());
    let mut at = None;
    for part in dotted.split('.') {
        match value {
            DeValue::Table(t) => {
                let (k, v) = t.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
                at = Some(if value_span { v.span() } else { k.span() });
                value = v.get_ref();
            }
            DeValue::Array(a) => {
                let v = a.get(part.parse::<usize>().ok()?)?;
                at = Some(v.span());
                value = v.get_ref();
            }
            _ => break,
        }
    }
    at
}

/// A best-effort text search: the deepest table header (`[optimizer]`) or
/// array-of-tables entry (the second `[[data.preprocess]]`) the key starts
/// with, then the key within it. Where the key itself is not written (a value
/// inside an inline table), the nearest enclosing line found is given.
fn search_key(src: &str, dotted: &str) -> Option<(usize, usize)> {
    let parts: Vec<&str> = dotted.split('.').collect();
    let lines: Vec<&str> = src.lines().collect();
    let col = |l: &str| l.len() - l.trim_start().len() + 1;
    let mut start = 0;
    let mut consumed = 0;
    let mut found = None;
    for depth in (1..=parts.len()).rev() {
        let name = parts[..depth].join(".");
        if let Some(index) = parts.get(depth).and_then(|p| p.parse::<usize>().ok()) {
            let entries: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.trim() == format!("[[{name}]]")).map(|(i, _)| i).collect();
            if let Some(&h) = entries.get(index) {
                (start, consumed, found) = (h + 1, depth + 1, Some((h + 1, col(lines[h]))));
                break;
            }
        }
        let header = format!("[{name}]");
        if let Some(h) = lines.iter().position(|l| l.trim_start().starts_with(&header)) {
            (start, consumed, found) = (h + 1, depth, Some((h + 1, col(lines[h]))));
            break;
        }
    }
    let Some(key) = parts.get(consumed) else { return found };
    for (i, l) in lines.iter().enumerate().skip(start) {
        let t = l.trim_start();
        if t.starts_with('[') {
            break;
        }
        if t.strip_prefix(key).map(str::trim_start).is_some_and(|rest| rest.starts_with('=')) {
            return Some((i + 1, col(l)));
        }
    }
    found
}

/// Adds "did you mean" to serde's unknown-field and unknown-variant messages.
fn with_hint(message: &str) -> String {
    let ticked: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let is_unknown = message.starts_with("unknown field") || message.starts_with("unknown variant");
    if !is_unknown || ticked.len() < 2 {
        return message.trim_end().to_string();
    }
    let wrong = ticked[0];
    // Names other frameworks use for the same knob.
    const ALIASES: [(&str, &str); 6] = [("learning_rate", "lr"), ("num_epochs", "epochs"), ("batch", "batch_size"), ("epsilon", "eps"), ("loss_fn", "loss"), ("activation", "type")];
    if let Some((_, to)) = ALIASES.iter().find(|(from, to)| *from == wrong && ticked[1..].contains(to)) {
        return format!("{}; did you mean `{to}`?", message.trim_end());
    }
    let best = ticked[1..].iter().map(|c| (strsim::damerau_levenshtein(wrong, c), *c)).min().filter(|(d, c)| *d <= c.len().max(wrong.len()) / 2 + 1);
    match best {
        Some((_, c)) => format!("{}; did you mean `{c}`?", message.trim_end()),
        None => message.trim_end().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[data]
n = 4
features = 2
inputs = { kind = "normal" }
targets = { kind = "binary" }
[model]
layers = [{ type = "linear", out = 1 }, { type = "sigmoid" }]
[loss]
kind = "bce"
[optimizer]
kind = "sgd"
lr = 0.1
"#;

    #[test]
    fn good_scenario_parses_with_defaults() {
        let s = from_str(GOOD, "good.toml").unwrap();
        assert_eq!(s.train.epochs, 1);
        assert_eq!(s.optimizer.beta2, 0.999);
        assert_eq!(s.model.layers.len(), 2);
    }

    #[test]
    fn unknown_key_points_at_line_and_suggests() {
        let src = GOOD.replace("lr = 0.1", "lr = 0.1\nmomentun = 0.9");
        let err = from_str(&src, "f.toml").unwrap_err().to_string();
        assert!(err.starts_with("f.toml:15:1: unknown field `momentun`"), "{err}");
        assert!(err.contains("did you mean `momentum`?"), "{err}");
    }

    #[test]
    fn other_frameworks_names_are_recognised() {
        let err = from_str(&GOOD.replace("lr = 0.1", "learning_rate = 0.1"), "f.toml").unwrap_err().to_string();
        assert!(err.ends_with("did you mean `lr`?"), "{err}");
    }

    #[test]
    fn unknown_layer_type_is_named() {
        let src = GOOD.replace("\"sigmoid\"", "\"sigmiod\"");
        let err = from_str(&src, "f.toml").unwrap_err().to_string();
        assert!(err.starts_with("f.toml:9:"), "{err}");
        assert!(err.contains("sigmiod") && err.contains("did you mean `sigmoid`?"), "{err}");
    }

    #[test]
    fn wrong_type_is_reported_with_location() {
        let src = GOOD.replace("lr = 0.1", "lr = \"fast\"");
        let err = from_str(&src, "f.toml").unwrap_err().to_string();
        assert!(err.starts_with("f.toml:14:6:"), "{err}");
    }

    #[test]
    fn invalid_value_points_at_its_key() {
        let src = GOOD.replace("lr = 0.1", "lr = -0.1");
        let err = from_str(&src, "f.toml").unwrap_err().to_string();
        assert!(err.starts_with("f.toml:14:1: invalid `optimizer.lr`"), "{err}");
    }

    #[test]
    fn a_step_without_options_rejects_unknown_keys() {
        let src = format!("{GOOD}[[data.preprocess]]\nop = \"drop_nonfinite\"\ncolumns = [0]\n");
        let err = from_str(&src, "f.toml").unwrap_err().to_string();
        assert!(err.contains("unknown field `columns`"), "{err}");
    }

    #[test]
    fn keys_in_arrays_of_tables_are_located() {
        let src = "name = \"t\"\n[data]\nn = 1\n[[data.preprocess]]\nop = \"log\"\n[[data.preprocess]]\nop = \"clip\"\nmin = 1.0\nmax = 0.0\n[model]\nlayers = []\n";
        assert_eq!(locate_key(src, "data.preprocess.1.min"), Some((8, 1)));
        assert_eq!(locate_key(src, "data.preprocess.1"), Some((6, 1)), "the entry's header");
        assert_eq!(locate_key(src, "data.preprocess.0.epsilon"), Some((4, 1)), "not written: its entry");
        assert_eq!(locate_key(src, "name"), Some((1, 1)));
        assert_eq!(locate_key(src, "data.n"), Some((3, 1)));
    }

    #[test]
    fn binary_input_gets_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin.toml");
        std::fs::write(&p, b"name = \"t\"\nseed = \xff\xfe\n").unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("bin.toml:2:8: this is not UTF-8 text"), "{err}");
    }

    #[test]
    fn oversized_files_and_non_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.toml");
        std::fs::write(&p, vec![b'#'; 2048]).unwrap();
        let err = load_with(&p, &LoadOptions { max_bytes: 1024, ..LoadOptions::default() }).unwrap_err().to_string();
        assert!(err.contains("2048 bytes") && err.contains("1024") && err.contains("CSV"), "{err}");
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("must be a regular file"), "{err}");
    }

    #[test]
    fn csv_paths_stay_inside_the_scenario_folder() {
        let root = tempfile::tempdir().unwrap();
        let sub = root.path().join("s");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(root.path().join("outside.csv"), "a,y\n1,2\n").unwrap();
        std::fs::write(sub.join("in.csv"), "a,y\n1,2\n").unwrap();
        let scenario = |path: &str| {
            GOOD.replace("n = 4\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"binary\" }", &format!("inputs = {{ kind = \"csv\", path = \"{path}\", targets = [\"y\"] }}"))
        };
        let p = sub.join("t.toml");
        std::fs::write(&p, scenario("in.csv")).unwrap();
        load(&p).unwrap();
        std::fs::write(&p, scenario("../outside.csv")).unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("outside the scenario's folder") && err.contains("--allow-outside-paths"), "{err}");
        load_with(&p, &LoadOptions { allow_outside_paths: true, ..LoadOptions::default() }).unwrap();
    }

    /// The scenario `GOOD` with its model's layers `layers` (and `extra` after `[data]`'s keys).
    fn with_layers(layers: &str, extra: &str) -> String {
        let good = "layers = [{ type = \"linear\", out = 1 }, { type = \"sigmoid\" }]";
        GOOD.replace(good, layers).replace("targets = { kind = \"binary\" }", &format!("targets = {{ kind = \"binary\" }}{extra}"))
    }

    fn error_of(src: &str) -> String {
        from_str(src, "f.toml").unwrap_err().to_string()
    }

    /// The 1-based column of the first `needle` on the 1-based line `line` of `src`: the hand count.
    fn col_of(src: &str, line: usize, needle: &str) -> usize {
        let l = src.lines().nth(line - 1).unwrap();
        l[..l.find(needle).unwrap()].chars().count() + 1
    }

    #[test]
    fn an_expressions_error_points_inside_the_string_as_written() {
        let one = with_layers(r#"layers = [{ type = "expr", expr = "x + 1 + lgo(x)" }, { type = "linear", out = 1 }, { type = "sigmoid" }]"#, "");
        let at = |src: &str, line: usize, needle: &str| format!("f.toml:{line}:{}: invalid `model.layers.0`: column ", col_of(src, line, needle));
        assert!(error_of(&one).starts_with(&(at(&one, 9, "lgo") + "9: unknown function `lgo`")), "{}", error_of(&one));
        // Escapes: `\u0061` is one character of the value and six of the file; `\t` one and two.
        let esc = one.replace("x + 1 + lgo(x)", r"x + \u0061bs(x) + lgo(x)");
        assert!(error_of(&esc).starts_with(&(at(&esc, 9, "lgo") + "14: ")), "{}", error_of(&esc));
        let tab = one.replace("x + 1 + lgo(x)", r"x +\tlgo(x)");
        assert!(error_of(&tab).starts_with(&(at(&tab, 9, "lgo") + "5: ")), "{}", error_of(&tab));
        // A literal string has no escapes: its `\t` is a backslash (which no expression holds) and a `t`.
        let lit = one.replace(r#""x + 1 + lgo(x)""#, r"'x +\tlgo(x)'");
        let syntax = |src: &str, col: usize| format!("f.toml:9:{}: invalid `model.layers.0.expr`: column {col}: ", col_of(src, 9, "\\"));
        assert!(error_of(&lit).starts_with(&syntax(&lit, 4)), "{}", error_of(&lit));
        let lit = one.replace(r#""x + 1 + lgo(x)""#, r"'x + \u0061bs(x) + lgo(x)'");
        assert!(error_of(&lit).starts_with(&syntax(&lit, 5)), "{}", error_of(&lit));
        // A multi-line string: the line and column of `lgo`, the newline after the opening quotes dropped.
        let ml = with_layers("layers = [\n  { type = \"expr\", expr = \"\"\"\nmean(x, dim=-1, keepdim=true)\n  + 0.1 * lgo(abs(x) + 1)\n\"\"\" },\n  { type = \"sigmoid\" },\n]", "");
        assert!(error_of(&ml).starts_with(&(at(&ml, 12, "lgo") + "41: ")), "{}", error_of(&ml));
        // A line-ending backslash continues without its newline and the next line's indentation.
        let cont = ml.replace("keepdim=true)\n", "keepdim=true) \\\n    ");
        assert!(error_of(&cont).starts_with(&(at(&cont, 12, "lgo") + "39: ")), "{}", error_of(&cont));
        let mll = ml.replace("\"\"\"", "'''");
        assert!(error_of(&mll).starts_with(&(at(&mll, 12, "lgo") + "41: ")), "{}", error_of(&mll));
    }

    #[test]
    fn a_preprocessing_expressions_error_has_its_location() {
        let src = with_layers(r#"layers = [{ type = "linear", out = 1 }, { type = "sigmoid" }]"#, "\n[[data.preprocess]]\nexpr = \"log1p(abs(x)) + lgo1p(x)\"");
        let err = error_of(&src);
        let want = format!("f.toml:9:{}: invalid `data.preprocess.0.expr`: column 17: unknown function `lgo1p`, did you mean `log1p`?", col_of(&src, 9, "lgo1p"));
        assert!(err.starts_with(&want), "{err}");
        // A step must keep the inputs' shape (rows of 2 features here).
        let err = error_of(&src.replace("log1p(abs(x)) + lgo1p(x)", "mean(x, dim=0)"));
        assert!(err.starts_with("f.toml:9:1: ") && err.contains("makes (2,), and a preprocessing step keeps the inputs' shape (batch, 2)"), "{err}");
    }

    #[test]
    fn a_constant_with_an_outputs_name_is_refused_at_the_constant() {
        let src = with_layers(r#"layers = [{ type = "linear", out = 1, name = "T" }, { type = "expr", expr = "x / T", consts = { T = 0.07 } }, { type = "sigmoid" }]"#, "");
        let want = format!("f.toml:9:{}: invalid `model.layers.1.consts.T`: the constant `T` has the name of an earlier output", col_of(&src, 9, "T = 0.07"));
        assert!(error_of(&src).starts_with(&want), "{}", error_of(&src));
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
