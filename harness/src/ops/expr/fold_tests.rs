//! Reshapes that fold the batch (`reshape(p, (-1, V))` of `(batch, T, V)`): their shapes, their
//! errors, a layer's refusal to output a fold, and a language model's loss written as PyTorch
//! users write it, `F.cross_entropy(p.view(-1, V), y.view(-1), ignore_index=-100)`, against
//! PyTorch 2.15.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};

use super::unfolded;
use crate::ops::expr::check::Dim::{Batch, Folded, N};
use crate::ops::expr::check::Dims;
use crate::ops::expr::compile;
use crate::ops::loss::Loss;
use crate::scenario::{LossKind, LossSpec};

/// `text` checked reading `p` of (batch, 3, 4), `y` of (batch, 3) and `z` of (batch*3,).
fn dims(text: &str) -> Result<Dims, String> {
    let inputs = [("p".to_string(), vec![Batch, N(3), N(4)]), ("y".to_string(), vec![Batch, N(3)]), ("z".to_string(), vec![Folded(3)])];
    compile(text, &inputs, &BTreeMap::new()).map(|c| c.ir.dims)
}

#[test]
fn a_reshape_folds_the_batch_with_the_sizes_it_leaves_and_unfolds_it_again() {
    assert_eq!(dims("reshape(p, (-1, 4))"), Ok(vec![Folded(3), N(4)]));
    assert_eq!(dims("reshape(y, (-1,))"), Ok(vec![Folded(3)]));
    assert_eq!(dims("reshape(p, (-1,))"), Ok(vec![Folded(12)]));
    // (batch*3,) back to (batch, 3), and (batch*3, 4) back to (batch, 3, 4): the batch again.
    assert_eq!(dims("reshape(z, (-1, 3))"), Ok(vec![Batch, N(3)]));
    assert_eq!(dims("reshape(reshape(p, (-1, 4)), (-1, 3, 4))"), Ok(vec![Batch, N(3), N(4)]));
    // A divisor of the elements per row folds part of them: (batch, 3, 4) as (batch*6, 2).
    assert_eq!(dims("reshape(p, (-1, 2))"), Ok(vec![Folded(6), N(2)]));
    // A fold moved from the front by a transpose is not reshaped: its rows would mix examples.
    assert!(dims("reshape(transpose(reshape(p, (-1, 4)), 0, 1), (-1,))").is_err());
    // A diagnosis quotes the shape as Python reads it: a tuple of one keeps its comma.
    assert_eq!(crate::ops::expr::parse::parse("reshape(y, (-1,))").unwrap().to_string(), "reshape(y, (-1,))");
}

#[test]
fn folded_dimensions_broadcast_and_reduce_as_pytorchs_real_sizes() {
    // One fold broadcasts with itself and with 1; reductions drop it or keep it as 1.
    assert_eq!(dims("reshape(p, (-1, 4)) * reshape(y, (-1, 1))"), Ok(vec![Folded(3), N(4)]));
    assert_eq!(dims("z + reshape(y, (-1,))"), Ok(vec![Folded(3)]));
    assert_eq!(dims("sum(reshape(p, (-1, 4)), dim=-1)"), Ok(vec![Folded(3)]));
    assert_eq!(dims("mean(reshape(p, (-1, 4)), dim=0, keepdim=true)"), Ok(vec![N(1), N(4)]));
    assert_eq!(dims("softmax(reshape(p, (-1, 4)), dim=-1)"), Ok(vec![Folded(3), N(4)]));
    assert_eq!(dims("mean(reshape(p, (-1, 4)))"), Ok(vec![]));
    // `@` of folded rows by their transpose: (batch*3, batch*3), as PyTorch's sizes give.
    assert_eq!(dims("reshape(p, (-1, 4)) @ transpose(reshape(p, (-1, 4)), 0, 1)"), Ok(vec![Folded(3), Folded(3)]));
}

#[test]
fn a_fold_against_another_size_and_a_minus_one_past_the_first_are_refused_at_their_column() {
    let err = |t: &str| dims(t).unwrap_err();
    assert_eq!(
        err("reshape(p, (-1, 4)) + p"),
        "column 1: shapes (batch*3, 4) and (batch, 3, 4) do not broadcast: batch*3 against 3 (a folded batch matches only the same fold, or 1: nanhunt checks before it knows the batch size)"
    );
    assert_eq!(
        err("z * reshape(p, (-1,))"),
        "column 1: shapes (batch*3,) and (batch*12,) do not broadcast: batch*3 against batch*12 (a folded batch matches only the same fold, or 1: nanhunt checks before it knows the batch size)"
    );
    assert_eq!(
        err("z - mean(y, dim=-1)"),
        "column 1: shapes (batch*3,) and (batch,) do not broadcast: batch*3 against batch (a folded batch matches only the same fold, or 1: nanhunt checks before it knows the batch size)"
    );
    let minus_one = "write the shape as (-1, sizes...), the -1 first: nanhunt checks shapes before it knows the batch size (and the last batch may be smaller), so the dimension PyTorch infers must be the one holding the batch (the input is (batch, 3, 4), 12 elements per batch row)";
    assert_eq!(err("1 + reshape(p, (16 * 3, -1))"), format!("column 5: {minus_one}"));
    assert_eq!(err("reshape(p, (48, 4))"), format!("column 1: {minus_one}"));
    assert_eq!(err("reshape(p, (-1, -1, 4))"), format!("column 1: {minus_one}"));
    assert_eq!(
        err("reshape(p, (-1, 5))"),
        "column 1: the sizes after -1 multiply to 5, which does not divide the 12 elements per batch row of (batch, 3, 4): write (-1, sizes...) whose sizes multiply to 12 or a divisor of it"
    );
    assert_eq!(err("reshape(p, (-1, 0))"), "column 1: a reshape's sizes after -1 are whole numbers of at least 1 (the input is (batch, 3, 4))");
    let first = "nanhunt reshapes a tensor that holds the batch in its first dimension, and only there, and the input is";
    assert_eq!(err("reshape(sum(p), (-1,))"), format!("column 1: {first} ()"));
    // PyTorch would fold (3, batch, 4) position-major, mixing examples in a row.
    assert_eq!(err("reshape(transpose(p, 0, 1), (-1, 4))"), format!("column 1: {first} (3, batch, 4)"));
}

#[test]
fn named_losses_read_folded_rows_alike_in_prediction_and_targets() {
    assert_eq!(dims("cross_entropy(reshape(p, (-1, 4)), reshape(y, (-1,)), ignore_index=-100)"), Ok(vec![]));
    assert_eq!(dims("cross_entropy(reshape(p, (-1, 4)), z, reduction='none')"), Ok(vec![Folded(3)]));
    assert_eq!(dims("kl_div(log_softmax(reshape(p, (-1, 4)), dim=-1), softmax(reshape(p, (-1, 4)), dim=-1), reduction='batchmean')"), Ok(vec![]));
    assert_eq!(dims("info_nce(reshape(p, (-1, 4)), reshape(p, (-1, 4)), reduction='none')"), Ok(vec![Folded(3)]));
    // The targets left unfolded: (batch*3, 4) rows against (batch, 3) targets, refused as PyTorch's sizes would be.
    assert_eq!(
        dims("cross_entropy(reshape(p, (-1, 4)), y)").unwrap_err(),
        "column 1: `cross_entropy` reads a batch of predictions and a batch of targets (the batch, or one folded alike, first in both), and gets (batch*3, 4) and (batch, 3)"
    );
    assert_eq!(
        dims("ctc(reshape(reshape(p, (-1, 4)), (-1, 3, 2)), reshape(y, (-1, 3, 1)))").map_err(|e| e.contains("ctc")),
        Err(true),
        "ctc reads sequences of the batch, whose lengths are the mask's rows"
    );
}

#[test]
fn a_layer_may_fold_inside_but_outputs_the_batch_unfolded() {
    let layer = |t: &str| compile(t, &[("x".to_string(), vec![Batch, N(3), N(4)])], &BTreeMap::new()).map(|c| unfolded(&c.ir).map_err(|e| e.to_string()));
    assert_eq!(layer("reshape(softmax(reshape(x, (-1, 4)), dim=-1), (-1, 3, 4))"), Ok(Ok(())));
    assert_eq!(
        layer("2 * softmax(reshape(x, (-1, 4)), dim=-1)"),
        Ok(Err("column 13: the expression makes (batch*3, 4), and a layer's output keeps the batch first, unfolded (the next layers, the targets and the watch read rows of the batch): reshape back with (-1, 3, 4), or fold the batch in the loss expression".into()))
    );
    // Through the plan: the error is the layer's, with the column inside its `expr`.
    let layers = vec![crate::scenario::Layer::Expr(crate::ops::expr::Expr { expr: "reshape(x, (-1, 4))".into(), consts: BTreeMap::new() })];
    let spec = crate::scenario::ModelSpec { init: crate::scenario::Init::Torch, layers, init_scale: 1.0, code: None, onnx: None };
    let err = crate::scenario::plan(&spec, crate::scenario::InShape { features: 4, seq_len: Some(3), vocab: None, image: None }).unwrap_err().1;
    assert!(err.contains("column 1: the expression makes (batch*3, 4), and a layer's output keeps the batch first"), "{err}");
}

/// The logits of PyTorch's case: (2, 3, 4), a batch of 2 sequences of 3 positions over 4 classes.
const P: [[[f64; 4]; 3]; 2] = [[[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0], [2.0, 1.0, -1.0, 0.5]], [[-1.5, 2.5, 0.0, 1.0], [4.0, -3.0, 2.0, 0.0], [0.25, 0.5, 0.75, -0.5]]];

/// The first `rows` rows of `t`.
fn first<A: candle_core::NdArray>(t: A, rows: usize) -> Tensor {
    Tensor::new(t, &Device::Cpu).unwrap().narrow(0, 0, rows).unwrap()
}

/// The loss `expr` of the first `rows` sequences of `P` against the label rows `y`, and its gradient wrt them.
fn lm_loss(expr: &str, rows: usize, y: &[[f64; 3]]) -> (f64, Vec<f64>) {
    let p = Var::from_tensor(&first(&P, rows)).unwrap();
    let y = Tensor::new(y.concat(), &Device::Cpu).unwrap().reshape((y.len(), 3)).unwrap();
    let spec = LossSpec { kind: LossKind::Expr, expr: Some(expr.into()), ..Default::default() };
    let l = Loss(spec).apply(p.as_tensor(), &y).unwrap();
    let g = l.backward().unwrap().get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    (l.to_scalar::<f64>().unwrap(), g)
}

fn near(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(u, v)| (u - v).abs() <= 1e-14)
}

const LM: &str = "cross_entropy(reshape(p, (-1, 4)), reshape(y, (-1,)), ignore_index=-100)";

#[test]
fn a_folded_cross_entropy_with_ignored_tokens_is_pytorchs_value_and_gradient() {
    // PyTorch 2.15 in f64: p as above, y = [[3, -100, 0], [1, -100, 2]],
    // F.cross_entropy(p.view(-1, 4), y.view(-1), ignore_index=-100) = 0.490126081069613; p.grad:
    let grad = [
        0.02763843759043481,
        0.00137603678189592,
        0.01676355978515287,
        -0.04577803415748358,
        0.0,
        0.0,
        0.0,
        0.0,
        -0.09763499060028072,
        0.05605195451205029,
        0.00758580713985406,
        0.03399722894837638,
        0.00345961705634306,
        -0.06111130890055691,
        0.01550492794896783,
        0.04214676389524603,
        0.0,
        0.0,
        0.0,
        0.0,
        0.05675223004997837,
        0.07287130583788204,
        -0.15643139115693366,
        0.02680785526907331,
    ];
    let (l, g) = lm_loss(LM, 2, &[[3.0, -100.0, 0.0], [1.0, -100.0, 2.0]]);
    assert!((l - 0.490126081069613).abs() < 1e-14, "{l}");
    assert!(near(&g, &grad), "{g:?}");
    // Every token ignored: PyTorch's 0/0 = nan, with a gradient of 0 (not NaN).
    let (l, g) = lm_loss(LM, 2, &[[-100.0; 3]; 2]);
    assert!(l.is_nan());
    assert!(g.iter().all(|v| *v == 0.0), "{g:?}");
}

#[test]
fn a_per_token_loss_reshaped_back_to_rows_is_pytorchs_and_a_smaller_last_batch_takes_the_same_tree() {
    // PyTorch 2.15 in f64: F.cross_entropy(p.reshape(-1, 4), y.reshape(-1), reduction='none').reshape(-1, 3)
    // = [[0.20225344767935172, 0, 0.49518189808585605], [0.2803030122753021, 0, 0.9827659662379423]],
    // row sums [0.6974353457652078, 1.2630689785132443].
    let text = "sum(reshape(cross_entropy(reshape(p, (-1, 4)), reshape(y, (-1,)), reduction='none'), (-1, 3)), dim=1)";
    let inputs = [("p".to_string(), vec![Batch, N(3), N(4)]), ("y".to_string(), vec![Batch, N(3)])];
    let checked = compile(text, &inputs, &BTreeMap::new()).unwrap();
    assert_eq!(checked.ir.dims, [Batch]);
    let y = [[3.0, -100.0, 0.0], [1.0, -100.0, 2.0]];
    let run = |rows: usize| {
        let (p, y) = (first(&P, rows), first(&y, rows));
        crate::ops::expr::eval::eval(&checked.ir, &[p, y], candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap()
    };
    assert!(near(&run(2), &[0.6974353457652078, 1.2630689785132443]), "{:?}", run(2));
    // One tree, checked once with the batch symbolic, runs a last batch of one sequence too.
    assert!(near(&run(1), &[0.6974353457652078]), "{:?}", run(1));
    // PyTorch 2.15: F.cross_entropy(p[:1].reshape(-1, 4), y[:1].reshape(-1)) = 0.3487176728826039,
    // the mean of that row's two kept tokens.
    let (one, g) = lm_loss(LM, 1, &y[..1]);
    assert!((one - 0.3487176728826039).abs() < 1e-14, "{one}");
    // A softmax minus a one-hot sums to 0 at every position; the ignored one has no gradient.
    assert!(g.chunks(4).all(|r| r.iter().sum::<f64>().abs() < 1e-12) && g[4..8] == [0.0; 4], "{g:?}");
}
