//! An expression's error, from the command line, names the file, line and column where the
//! character is written, however the TOML string is written (issue 28's audit): a multi-line
//! string, escapes, a literal string; a preprocessing step's expression; a constant that would
//! hide a named output.

mod common;
use common::*;

/// A scenario over 4 normal features whose model is `layers` (a TOML array) and whose data
/// ends with `extra`.
fn scenario(layers: &str, extra: &str) -> String {
    format!(
        "name = \"loc\"\nseed = 0\n[data]\nn = 8\nfeatures = 4\ninputs = {{ kind = \"normal\" }}\ntargets = {{ kind = \"linear\", noise = 0.1 }}\n{extra}\n[model]\nlayers = {layers}\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 1e-2\n"
    )
}

/// `nanhunt run` of `text`: exit 2, and the line of its error naming the file.
fn refused(text: &str) -> String {
    let dir = tempdir();
    let p = write(dir.path(), "s.toml", text);
    let out = nanhunt(&["run", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    stderr(&out).lines().find(|l| l.contains("s.toml:")).unwrap_or_default().to_string()
}

/// `s.toml:LINE:COL` of the first `needle` on line `line` (1-based) of `text`: the hand count.
fn at(text: &str, line: usize, needle: &str) -> String {
    let l = text.lines().nth(line - 1).unwrap();
    format!("s.toml:{line}:{}:", l[..l.find(needle).unwrap()].chars().count() + 1)
}

#[test]
fn a_multi_line_expression_points_at_the_line_it_is_written_on() {
    let text = scenario("[\n  { type = \"linear\", out = 1 },\n  { type = \"expr\", expr = \"\"\"\nx * 2\n  + 0.1 * lgo(abs(x) + 1)\n\"\"\" },\n]", "");
    let err = refused(&text);
    // Line 14 holds `  + 0.1 * lgo(...)`; the value's column counts `x * 2` and its newline (6), then 10.
    assert!(err.contains(&at(&text, 14, "lgo")) && err.contains("column 17: unknown function `lgo`, did you mean `log`?"), "{err}");
}

#[test]
fn escapes_and_literal_strings_are_counted_as_written() {
    for (expr, col) in [(r#""x + \u0061bs(x) + lgo(x)""#, 14), (r#""x +\tlgo(x)""#, 5), ("'''x + lgo(x)'''", 5)] {
        let text = scenario(&format!("[{{ type = \"linear\", out = 1 }}, {{ type = \"expr\", expr = {expr} }}]"), "");
        let err = refused(&text);
        assert!(err.contains(&at(&text, 10, "lgo")) && err.contains(&format!("column {col}: unknown function `lgo`")), "{expr}: {err}");
    }
}

#[test]
fn a_preprocessing_expression_has_its_location() {
    let text = scenario("[{ type = \"linear\", out = 1 }]", "[[data.preprocess]]\nexpr = \"x - mean(x, dim=(0, 0))\"\n[[data.preprocess]]\nexpr = \"lgo1p(abs(x))\"");
    let err = refused(&text);
    assert!(err.contains(&at(&text, 9, "mean")) && err.contains("invalid `data.preprocess.0.expr`: column 5: dim 0 appears multiple times"), "{err}");
    let err = refused(&text.replace("dim=(0, 0)", "dim=0"));
    assert!(err.contains(&at(&text, 11, "lgo1p")) && err.contains("`data.preprocess.1.expr`: column 1: unknown function `lgo1p`, did you mean `log1p`?"), "{err}");
}

#[test]
fn unknown_names_and_hidden_outputs_say_what_can_be_read() {
    let text = scenario("[{ type = \"linear\", out = 4, name = \"gate\" }, { type = \"expr\", expr = \"x * gaet\" }, { type = \"linear\", out = 1 }]", "");
    let err = refused(&text);
    assert!(err.contains(&at(&text, 10, "gaet")) && err.contains("unknown name `gaet`, did you mean `gate`? (the expression can read `x`, the named outputs `gate`, and no constants)"), "{err}");
    let text = scenario("[{ type = \"linear\", out = 4, name = \"T\" }, { type = \"expr\", expr = \"x / T\", consts = { T = 0.07 } }, { type = \"linear\", out = 1 }]", "");
    let err = refused(&text);
    assert!(err.contains(&at(&text, 10, "T = 0.07")) && err.contains("`model.layers.1.consts.T`: the constant `T`"), "{err}");
}

#[test]
fn a_float_where_pytorch_takes_an_int_points_at_the_literal() {
    // PyTorch 2.15: torch.sum(x, dim=1.0) and torch.reshape(x, (-1, 2.0)) raise a TypeError;
    // nanhunt refuses them before training, at the literal's line and column.
    let text = scenario("[{ type = \"linear\", out = 4 }, { type = \"expr\", expr = \"x - mean(x, dim=1.0, keepdim=true)\" }, { type = \"linear\", out = 1 }]", "");
    let err = refused(&text);
    assert!(err.contains(&at(&text, 10, "1.0")) && err.contains("column 17: mean(): argument 'dim' must be int or a tuple of ints, not float"), "{err}");
    let text = scenario("[{ type = \"linear\", out = 4 }, { type = \"expr\", expr = \"reshape(x, (-1, 2, 2.0))\" }, { type = \"linear\", out = 1 }]", "");
    let err = refused(&text);
    assert!(err.contains(&at(&text, 10, "2.0")) && err.contains("reshape(): argument 'shape' must be tuple of ints, but found element of type float at pos 2"), "{err}");
}
