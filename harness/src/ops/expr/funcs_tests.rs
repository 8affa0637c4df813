//! Python's two number types: an integer literal where PyTorch takes an int, a float literal
//! refused there with PyTorch 2.15's `TypeError` (checked with `/work/main/.venv-torch/bin/python`:
//! `torch.sum(x, dim=1.0)`, `torch.softmax(x, dim=1.0)`, `torch.reshape(x, (-1, 2.0))`,
//! `torch.sum(x, dim=1, keepdim=1)`, `F.cross_entropy(..., ignore_index=1.0)` all raise it;
//! `torch.norm(x, p=2.0)`, `torch.clamp(x, min=1)` and `torch.std(x, correction=1.5)` do not).

use std::collections::BTreeMap;

use super::super::ast::Kind;
use super::super::check::Dim;
use super::super::{compile, parse};

fn err(text: &str) -> String {
    let inputs = [("x".to_string(), vec![Dim::Batch, Dim::N(4)]), ("h".to_string(), vec![Dim::Batch, Dim::N(2), Dim::N(4)])];
    compile(text, &inputs, &BTreeMap::from([("k".to_string(), 1.0)])).map(|_| String::new()).unwrap_or_else(|e| e)
}

#[test]
fn the_tree_keeps_whether_a_number_was_written_as_an_int() {
    assert_eq!(parse::parse("1").unwrap().kind, Kind::Int(1));
    for float in ["1.0", "1e0", "1.", ".5", "2E3"] {
        assert!(matches!(parse::parse(float).unwrap().kind, Kind::Num(_)), "{float}");
    }
    // Written back as written: `2.0` stays a float for the message and the PyTorch line.
    assert_eq!(parse::parse("sum(x * 2.0, dim=1)").unwrap().to_string(), "sum(x * 2.0, dim=1)");
    assert_eq!(super::super::torch::python(&parse::parse("x ** 2 + x * 2.0").unwrap(), &BTreeMap::new(), "x"), "((x ** 2) + (x * 2.0))");
}

#[test]
fn a_float_where_pytorch_takes_an_int_is_refused_at_its_column() {
    assert_eq!(err("sum(x, dim=1.0)"), "column 12: sum(): argument 'dim' must be int or a tuple of ints, not float (PyTorch's TypeError)");
    assert_eq!(err("softmax(x, dim=-1e0)"), "column 16: softmax(): argument 'dim' must be int, not float (PyTorch's TypeError)");
    assert_eq!(err("mean(h, dim=(1, 2.0))"), "column 17: mean(): argument 'dim' must be a tuple of ints, and holds a float at pos 1 (PyTorch's TypeError)");
    assert_eq!(err("transpose(h, 0, 4 / 2)"), "column 17: transpose(): argument 'dim1' must be int, not float (PyTorch's TypeError)");
    assert_eq!(err("reshape(h, (-1, 8.0))"), "column 17: reshape(): argument 'shape' must be tuple of ints, but found element of type float at pos 1 (PyTorch's TypeError)");
    assert_eq!(err("sum(x, dim=1, keepdim=1)"), "column 23: sum(): argument 'keepdim' must be bool, not int (PyTorch's TypeError)");
    assert_eq!(err("norm(x, dim=1, keepdim='yes')"), "column 24: norm(): argument 'keepdim' must be bool, not str (PyTorch's TypeError)");
    let ce = err("sum(cross_entropy(h, x, ignore_index=1.0))");
    assert!(ce.starts_with("column 38: cross_entropy(): argument 'ignore_index' must be int, not float"), "{ce}");
    // What PyTorch takes: ints (also from int arithmetic and whole constants), a float `p`,
    // `min=`, `correction=`, and `true`/`false` for keepdim.
    for ok in [
        "sum(x, dim=1)",
        "sum(x, dim=-1, keepdim=true)",
        "sum(h, dim=(1, 2 - 1 + 1))",
        "sum(x, dim=k)",
        "norm(x, p=2.0, dim=1)",
        "clamp(x, min=1)",
        "std(x, dim=1, correction=1.5)",
        "reshape(h, (-1, 2 * 4))",
        "x * 2 ** -1",
    ] {
        assert_eq!(err(ok), "", "{ok}");
    }
}

#[test]
fn a_reshape_past_candles_8_dimensions_is_refused_at_its_column() {
    // The fuzz target's first finding (`tests/fuzz_regressions.rs`): Candle panics on a rank-9 tensor.
    assert_eq!(err("reshape(x, (-1, 1, 1, 1, 1, 1, 1, 1, 4)) - x"), "column 1: a reshape to 9 dimensions: nanhunt's tensors have at most 8 (Candle's limit)");
    assert_eq!(err("reshape(x, (-1, 1, 1, 1, 1, 1, 1, 4))"), "");
}

#[test]
fn a_constant_is_an_int_only_where_it_is_whole() {
    let inputs = [("x".to_string(), vec![Dim::Batch, Dim::N(4)])];
    let consts = BTreeMap::from([("one".to_string(), 1.0), ("half".to_string(), 0.5)]);
    assert!(compile("sum(x, dim=one)", &inputs, &consts).is_ok());
    let e = compile("sum(x, dim=half)", &inputs, &consts).map(|_| ()).unwrap_err();
    assert!(e.contains("float"), "{e}");
}

#[test]
fn a_matrix_norms_name_and_a_blank_outside_the_classes_are_refused_when_checked() {
    // torch.norm(x, p='nuc') is a matrix norm nanhunt does not have; it must not fall back to p = 2.
    assert!(err("norm(x, p='nuc')").contains("`p` of `norm` must be a number"), "{}", err("norm(x, p='nuc')"));
    assert!(err("norm(x, p=(1, 2))").contains("`p` of `norm` must be a number"));
    // F.ctc_loss needs blank < C; h has 4 classes (PyTorch 2.15: "blank must be in label range").
    let e = err("ctc(h, x, blank=4)");
    assert!(e.contains("takes a blank that is one of its classes"), "{e}");
    assert_eq!(err("ctc(h, x, blank=3)"), "");
}
