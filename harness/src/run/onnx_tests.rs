//! The runner on imported ONNX graphs, checked against hand arithmetic and PyTorch 2.15: a
//! graph compiled node by node (`scenario/onnx/graph/`) and a loss exported with its model
//! (`[loss] from_model`, `scenario/onnx/loss_tail.rs`) train to the values computed by hand or
//! by the original `nn.Module`.

use crate::scenario::{LossKind, Reduction};

fn folder() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/onnx")
}

#[test]
fn a_graph_compiled_node_by_node_trains_to_the_hand_computed_loss_and_gradient() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("g.onnx"), crate::scenario::onnx::tests::dag()).unwrap();
    let toml = "name = \"g\"\n[data]\ninputs = { kind = \"values\", rows = [[1.0, 2.0, 0.5]] }\ntargets = { kind = \"values\", values = [[0.0, 0.0, 0.0]] }\n[model]\nonnx = \"g.onnx\"\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n";
    std::fs::write(dir.path().join("s.toml"), toml).unwrap();
    let s = crate::scenario::load(&dir.path().join("s.toml")).unwrap();
    let (loss, grads) = crate::run::first_gradients(&s, &[vec![1.0, 2.0, 0.5]], &[vec![0.0; 3]]).unwrap();
    // By hand (Python floats): h = tanh([1, 2, 0.5]), S = Σh = 2.1877390, r = h + x,
    // y_i = r_i·S·w_i = [3.8539080, 12.969037, 6.3145834]; MSE = Σy²/3 = 74.307496;
    // dL/dw_i = (2/3)·y_i·r_i·S = [9.9017382, 56.065305, 8.8608807].
    assert!((loss - 74.307496).abs() < 1e-4, "{loss}");
    assert_eq!(grads[0].0, "layers.w");
    for (a, b) in grads[0].1.iter().zip([9.9017382, 56.065305, 8.8608807]) {
        assert!((a - b).abs() < 1e-4 * b, "{:?}", grads[0].1);
    }
}

#[test]
fn the_exported_mse_loss_trains_as_the_pytorch_module_computes_it() {
    let s = crate::scenario::load(&folder().join("mlp_mse.toml")).unwrap();
    assert_eq!((s.loss.kind, s.loss.reduction, s.loss.from_model.as_deref()), (LossKind::Mse, Reduction::Mean, Some("loss")));
    let x = vec![vec![1.0, -2.0, 0.5, 3.0], vec![0.0, 1.0, -1.0, 2.0], vec![0.25, 0.5, -1.5, -0.75]];
    let y = vec![vec![1.0], vec![-3.0], vec![0.5]];
    let (loss, grads) = crate::run::first_gradients(&s, &x, &y).unwrap();
    // PyTorch 2.15: make_models.MlpMse() after torch.manual_seed(0), m(x, y) on these rows and
    // backward(): loss 3.6614599227905273, mlp.fc3.bias.grad [1.4144790172576904],
    // mlp.fc2.bias.grad[:2] [-0.21527305, 0.44358984], mlp.fc1.weight.grad[0, :2] [0.00408729, 0.00817458].
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 + 1e-5 * b.abs();
    assert!(close(loss, 3.661_459_922_790_527_3), "{loss}");
    let grad = |n: &str| grads.iter().find(|g| g.0 == n).unwrap_or_else(|| panic!("{n} among {grads:?}")).1.clone();
    assert!(close(grad("layers.mlp.fc3.bias")[0], 1.414_479_017_257_690_4));
    let fc2 = grad("layers.mlp.fc2.bias");
    assert!(close(fc2[0], -0.215_273_052_453_994_75) && close(fc2[1], 0.443_589_836_359_024_05), "{fc2:?}");
    // nanhunt's fc1.weight is (in, out): PyTorch's [0, 1] (out 0, in 1) is at [1, 0], index 8.
    let fc1 = grad("layers.mlp.fc1.weight");
    assert!(close(fc1[0], 0.004_087_290_260_940_79) && close(fc1[8], 0.008_174_580_521_881_58), "{fc1:?}");
}
