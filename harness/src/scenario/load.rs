//! Reading scenario files: TOML in, [`Scenario`] out, or an error that points
//! at `FILE:LINE:COL` and says what was expected.
//!
//! The format itself is the serde types of this folder; the checks of values
//! that parse but cannot run live in `validate`. This module joins them and
//! turns byte spans into lines and columns, adding "did you mean" hints.

use std::path::Path;

use super::{validate, Problem, Scenario};
use crate::error::{Error, Result};

/// Reads, parses and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario> {
    let src = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut scenario = parse_str(&src, &path.display().to_string())?;
    scenario.dir = path.parent().map(Path::to_path_buf);
    check(&scenario, &src, &path.display().to_string())?;
    Ok(scenario)
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
    check(&scenario, src, origin)?;
    Ok(scenario)
}

fn check(scenario: &Scenario, src: &str, origin: &str) -> Result<()> {
    match validate(scenario).into_iter().next() {
        None => Ok(()),
        Some(Problem { key, message }) => {
            let location = match locate_key(src, &key) {
                Some((line, col)) => format!("{origin}:{line}:{col}"),
                None => origin.to_string(),
            };
            Err(Error::Invalid { location, key, message })
        }
    }
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

/// Finds where a dotted key such as `optimizer.lr` or `model.layers.2` is written.
///
/// A best-effort text search: the table header (`[optimizer]`), then the key
/// within it. Array indices point at the n-th inline table of the array.
pub(crate) fn locate_key(src: &str, dotted: &str) -> Option<(usize, usize)> {
    let parts: Vec<&str> = dotted.split('.').collect();
    let lines: Vec<&str> = src.lines().collect();
    // Find the deepest table header that is a prefix of the key.
    let mut start = 0;
    let mut consumed = 0;
    for depth in (1..parts.len()).rev() {
        let header = format!("[{}]", parts[..depth].join("."));
        if let Some(i) = lines.iter().position(|l| l.trim_start().starts_with(&header)) {
            start = i + 1;
            consumed = depth;
            break;
        }
    }
    let key = parts.get(consumed)?;
    for (i, l) in lines.iter().enumerate().skip(start) {
        let t = l.trim_start();
        if consumed > 0 && t.starts_with('[') {
            break;
        }
        let rest = t.strip_prefix(key).map(str::trim_start);
        if let Some(rest) = rest {
            if rest.starts_with('=') {
                let col = l.len() - t.len() + 1;
                return Some((i + 1, col));
            }
        }
    }
    None
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
    const ALIASES: [(&str, &str); 6] =
        [("learning_rate", "lr"), ("num_epochs", "epochs"), ("batch", "batch_size"), ("epsilon", "eps"), ("loss_fn", "loss"), ("activation", "type")];
    if let Some((_, to)) = ALIASES.iter().find(|(from, to)| *from == wrong && ticked[1..].contains(to)) {
        return format!("{}; did you mean `{to}`?", message.trim_end());
    }
    let best = ticked[1..]
        .iter()
        .map(|c| (strsim::damerau_levenshtein(wrong, c), *c))
        .min()
        .filter(|(d, c)| *d <= c.len().max(wrong.len()) / 2 + 1);
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
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
