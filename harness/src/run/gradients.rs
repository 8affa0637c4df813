//! The loss and every parameter's gradient of a scenario's layer model on one given batch, at
//! its initial weights, in f32: what the comparison of an imported ONNX model with the original
//! PyTorch module reads (`tests/onnx_torch.rs`), without the training loop's batching.

use candle_core::{DType, Device, Tensor};

use super::model::Model;
use super::net::Net;
use crate::error::{Error, Result};
use crate::ops::loss::Loss;
use crate::scenario::Scenario;

/// Each parameter's gradient: its name and values, row-major.
pub type Gradients = Vec<(String, Vec<f64>)>;

/// The loss of `s`'s model and loss on inputs `x` and targets `y` (one row each per example) at
/// the initial weights, and each parameter's gradient (name and values, row-major), in f32.
/// An image row (`data.image`) is its `channels × height × width` values, row-major.
pub fn first_gradients(s: &Scenario, x: &[Vec<f64>], y: &[Vec<f64>]) -> Result<(f64, Gradients)> {
    let invalid = |message: String| Error::Invalid { location: s.name.clone(), key: "data".into(), message };
    let input = crate::scenario::input_shape(&s.data).ok_or_else(|| invalid("the data's shape is not known before it is read".into()))?;
    let plan = crate::scenario::plan(&s.model, input).map_err(|(k, m)| invalid(format!("model.{k}: {m}")))?;
    let dev = Device::Cpu;
    let model = Model::new(&s.model, &plan, &mut super::rng::stream(s.seed, super::rng::INIT_STREAM), DType::F32, &dev)?;
    let rows = |t: &[Vec<f64>]| -> Result<Tensor> {
        let cols = t.first().map_or(0, Vec::len);
        let flat: Vec<f32> = t.iter().flatten().map(|&v| v as f32).collect();
        Ok(Tensor::from_vec(flat, (t.len(), cols), &dev)?)
    };
    let n = x.len();
    let x = rows(x)?;
    // A sequence's rows hold `seq_len × features` values, as the data gives them: the model reads (batch, seq, features);
    // images are `(batch, channels, height, width)`, as the loop's batches give them.
    let x = match input.shape() {
        crate::scenario::Shape::Seq { len, width } => x.reshape((n, len, width))?,
        crate::scenario::Shape::Image { channels, height, width } => x.reshape((n, channels, height, width))?,
        crate::scenario::Shape::Flat(_) | crate::scenario::Shape::Tokens { .. } => x,
    };
    let outs = model.forward(&x, None)?;
    let pred = outs.last().ok_or_else(|| invalid("the model has no layers".into()))?;
    // Targets of a sequence model (`next_token`'s one-hot rows) take the prediction's shape, as the loop gives them.
    let y = rows(y)?;
    let y = if y.elem_count() == pred.elem_count() { y.reshape(pred.shape())? } else { y };
    let loss = Loss(s.loss.clone()).apply(pred, &y)?;
    let grads = loss.backward()?;
    let mut out = Vec::with_capacity(model.params().len());
    for p in model.params() {
        let g = grads.get(p.var.as_tensor()).ok_or_else(|| invalid(format!("the parameter `{}` has no gradient", p.name)))?;
        out.push((p.name.clone(), g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?));
    }
    Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, out))
}

#[cfg(test)]
mod tests {
    /// The patched candle-core (`vendor/README.md`) takes a tensor's first gradient as it is, as
    /// PyTorch's autograd does, and sums the later ones. PyTorch 2.15: with `x = [1., 2.]`
    /// (requires_grad) and `c = [-0., 3.]`, `(x * c).sum().backward()` gives `x.grad = [-0., 3.]`
    /// (the sign of the zero kept), and `(x * c + x * c)` gives `[-0., 6.]`. Candle 0.11.1 as
    /// published added the first gradient to a tensor of zeros: `0 + (-0.)` is `+0.`.
    #[test]
    fn the_backward_takes_a_first_gradient_as_it_is_and_sums_the_rest() {
        use candle_core::{Device, Tensor, Var};
        let x = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let c = Tensor::new(&[-0.0f32, 3.0], &Device::Cpu).unwrap();
        let once = x.as_tensor().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = once.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!((g[0].to_bits(), g[1]), ((-0.0f32).to_bits(), 3.0));
        let twice = (x.as_tensor().mul(&c).unwrap() + x.as_tensor().mul(&c).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = twice.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!((g[0].to_bits(), g[1]), ((-0.0f32).to_bits(), 6.0));
    }

    #[test]
    fn init_scale_multiplies_an_imported_models_file_weights() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/onnx/mlp.toml");
        let mut s = crate::scenario::load(&path).unwrap();
        let x = vec![vec![1.0, -2.0, 0.5, 3.0], vec![0.0, 1.0, -1.0, 2.0]];
        let y = vec![vec![1.0], vec![-3.0]];
        let (at_file, _) = super::first_gradients(&s, &x, &y).unwrap();
        s.model.init_scale = 0.0;
        let (loss, grads) = super::first_gradients(&s, &x, &y).unwrap();
        // Every weight and bias times 0: the prediction is 0, so MSE is (1² + 3²) / 2 = 5, and
        // d/d(fc3.bias) = mean(2 (0 − y)) = (−2 + 6) / 2 = 2; relu'(0) = 0 stops fc1's gradient.
        assert_eq!(loss, 5.0);
        assert!((at_file - 5.0).abs() > 0.1, "the file's weights predict something: {at_file}");
        let grad = |n: &str| grads.iter().find(|g| g.0 == n).unwrap_or_else(|| panic!("{n}")).1.clone();
        assert_eq!(grad("layers.fc3.bias"), [2.0]);
        assert!(grad("layers.fc1.weight").iter().all(|g| *g == 0.0));
    }

    /// Each parameter's initial values for `s` (its seed's init stream), by name.
    fn initial(s: &crate::scenario::Scenario) -> Vec<(String, Vec<f64>)> {
        let plan = crate::scenario::plan(&s.model, crate::scenario::input_shape(&s.data).unwrap()).unwrap();
        let mut rng = crate::run::rng::stream(s.seed, crate::run::rng::INIT_STREAM);
        let m = super::Model::new(&s.model, &plan, &mut rng, candle_core::DType::F64, &candle_core::Device::Cpu).unwrap();
        m.params.iter().map(|p| (p.name.clone(), p.var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap())).collect()
    }

    #[test]
    fn a_written_model_init_redraws_an_imported_models_parameters_by_pytorchs_default() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/onnx");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(folder.join("mlp.onnx"), dir.path().join("mlp.onnx")).unwrap();
        let text = std::fs::read_to_string(folder.join("mlp.toml")).unwrap();
        let at_file = crate::scenario::load(&folder.join("mlp.toml")).unwrap();
        assert_eq!(at_file.model.init, crate::scenario::Init::File, "no `[model] init`: the file's values");
        let path = dir.path().join("s.toml");
        std::fs::write(&path, text.replace("onnx = \"mlp.onnx\"", "onnx = \"mlp.onnx\"\ninit = { kind = \"torch\" }")).unwrap();
        let mut s = crate::scenario::load(&path).unwrap();
        assert_eq!(s.model.init, crate::scenario::Init::Torch);
        let (file, drawn) = (initial(&at_file), initial(&s));
        // PyTorch's nn.Linear: kaiming_uniform_(a = sqrt(5)) weights and U(±1/sqrt(fan_in)) biases,
        // so every value lies within 1/sqrt(fan_in): 1/sqrt(4) = 0.5 for fc1, 1/sqrt(8) ≈ 0.35355 for fc2 and fc3.
        for ((name, v), (_, f)) in drawn.iter().zip(&file) {
            let bound = if name.starts_with("layers.fc1.") { 0.5 } else { 8f64.sqrt().recip() };
            assert!(v.iter().all(|x| x.abs() <= bound), "{name}: {v:?} outside ±{bound}");
            assert_ne!(v, f, "{name} is redrawn, not the file's");
        }
        // The 32 weights of fc1 spread over the bound (each within 0.1 of it with chance 0.2 a side).
        let fc1 = &drawn[0].1;
        assert!(fc1.iter().any(|x| *x > 0.4) && fc1.iter().any(|x| *x < -0.4), "{fc1:?}");
        // init_scale still multiplies what is drawn, exactly (the same seed draws the same values).
        s.model.init_scale = 3.0;
        for ((name, v), (_, d)) in initial(&s).iter().zip(&drawn) {
            assert!(v.iter().zip(d).all(|(a, b)| *a == 3.0 * b), "{name}");
        }
    }

    #[test]
    fn init_file_is_refused_for_a_model_of_layers() {
        let text = "name = \"t\"\n[data]\nn = 4\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"linear\" }\n[model]\ninit = { kind = \"file\" }\nlayers = [{ type = \"linear\", out = 1 }]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n";
        let e = crate::scenario::from_str(text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("model.init.kind") && e.contains("`file` is an imported model's own values"), "{e}");
    }
}
