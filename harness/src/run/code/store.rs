//! [`ParamStore`]: the named, seeded parameters of a model written in Rust.
//!
//! It is a candle-nn [`SimpleBackend`], so a model built from a `VarBuilder`
//! (`candle_nn::linear(8, 16, vb.pp("fc1"))`) takes its parameters here with no
//! change beyond how the builder is made ([`ParamStore::var_builder`]). Each
//! parameter is drawn once, by its init hint, from a stream keyed by the run's
//! seed, the fold and the parameter's name, so its values never depend on the
//! order a model asks for its parameters, and never come from Candle's RNG
//! (which cannot be seeded). `model.init_scale` multiplies every random
//! initialisation, as it multiplies the layer stack's weights; constants (a
//! norm's gain and shift) are left alone.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use rand::Rng;

use crate::run::net::Param;
use crate::run::rng::{named_stream, normal};

/// Named parameters handed out to a model's code, initialised from the run's seed.
#[derive(Clone)]
pub struct ParamStore {
    /// The parameters in the order they were first asked for (the watch checks them in it).
    params: Arc<Mutex<Vec<Param>>>,
    seed: u64,
    stream: u64,
    init_scale: f64,
    dtype: DType,
    dev: Device,
}

impl ParamStore {
    /// An empty store drawing from `(seed, stream)`; parameters are made in `dtype` on `dev`.
    pub(crate) fn new(seed: u64, stream: u64, init_scale: f64, dtype: DType, dev: &Device) -> Self {
        ParamStore { params: Arc::default(), seed, stream, init_scale, dtype, dev: dev.clone() }
    }

    /// A candle-nn `VarBuilder` whose every `get` is a parameter of this store.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), self.dtype, self.dev.clone())
    }

    /// The parameter `name` of `shape`, made from `init` the first time it is asked for.
    pub fn get(&self, name: &str, shape: impl Into<Shape>, init: Init) -> candle_core::Result<Tensor> {
        self.param(shape.into(), name, init, self.dtype)
    }

    /// The dtype parameters are made in (the scenario's `train.dtype`; f32 under autocast).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device parameters are made on.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// The parameters made so far, in the order they were first asked for.
    pub(crate) fn params(&self) -> Vec<Param> {
        self.params.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// How many parameters have been made.
    pub(crate) fn len(&self) -> usize {
        self.params.lock().map_or(0, |p| p.len())
    }

    fn existing(&self, name: &str) -> Option<Var> {
        self.params.lock().ok()?.iter().find(|p| p.name == name).map(|p| p.var.clone())
    }

    fn param(&self, shape: Shape, name: &str, init: Init, dtype: DType) -> candle_core::Result<Tensor> {
        if let Some(v) = self.existing(name) {
            return same_shape(name, v, &shape);
        }
        // Drawn without the lock held; a model is built on one thread, but a second ask for
        // the same name in between keeps the first parameter.
        let values = self.values(&shape, name, init);
        let var = Var::from_tensor(&Tensor::from_vec(values, shape.clone(), &self.dev)?.to_dtype(dtype)?)?;
        let mut params = self.params.lock().map_err(|_| candle_core::Error::Msg("the parameter store was poisoned by a panic".into()))?;
        if let Some(p) = params.iter().find(|p| p.name == name) {
            return same_shape(name, p.var.clone(), &shape);
        }
        params.push(Param { name: name.to_string(), var: var.clone() });
        Ok(var.as_tensor().clone())
    }

    /// The initial values of parameter `name`: `init`'s draws from the name's own stream.
    fn values(&self, shape: &Shape, name: &str, init: Init) -> Vec<f64> {
        let n = shape.elem_count();
        let rng = &mut named_stream(self.seed, self.stream, name);
        let uniform = |rng: &mut rand_chacha::ChaCha8Rng, lo: f64, up: f64| -> Vec<f64> { (0..n).map(|_| lo + (up - lo) * rng.random::<f64>()).collect() };
        let drawn = match init {
            Init::Const(c) => return vec![c; n],
            Init::Randn { mean, stdev } => (0..n).map(|_| mean + stdev * normal(rng)).collect(),
            Init::Uniform { lo, up } => uniform(rng, lo, up),
            Init::Kaiming { dist, fan, non_linearity } => {
                // torch.nn.init.kaiming_*: std = gain / sqrt(fan); the uniform bound is sqrt(3)·std.
                let std = non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt();
                match dist {
                    NormalOrUniform::Normal => (0..n).map(|_| std * normal(rng)).collect(),
                    NormalOrUniform::Uniform => uniform(rng, -(3f64.sqrt()) * std, 3f64.sqrt() * std),
                }
            }
        };
        drawn.into_iter().map(|v: f64| v * self.init_scale).collect()
    }
}

/// The parameter asked for again, if it has the shape asked for.
fn same_shape(name: &str, v: Var, shape: &Shape) -> candle_core::Result<Tensor> {
    if v.shape() != shape {
        return Err(candle_core::Error::Msg(format!("parameter `{name}` was asked for with shape {:?}, then with {:?}", v.dims(), shape.dims())));
    }
    Ok(v.as_tensor().clone())
}

impl SimpleBackend for ParamStore {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !dev.same_device(&self.dev) {
            return Err(candle_core::Error::Msg(format!("parameter `{name}` was asked for on {dev:?}, but the run's device is {:?}", self.dev)));
        }
        self.param(s, name, h, dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        self.existing(name).map(|v| v.as_tensor().clone()).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.existing(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Module;

    fn store(seed: u64, scale: f64) -> ParamStore {
        ParamStore::new(seed, 7, scale, DType::F64, &Device::Cpu)
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    #[test]
    fn a_candle_nn_linear_takes_its_parameters_from_the_store_by_name() {
        let s = store(1, 1.0);
        let fc = candle_nn::linear(3, 2, s.var_builder().pp("fc1")).unwrap();
        let names: Vec<_> = s.params().iter().map(|p| (p.name.clone(), p.var.dims().to_vec())).collect();
        assert_eq!(names, [("fc1.weight".to_string(), vec![2, 3]), ("fc1.bias".to_string(), vec![2])]);
        // The layer reads the store's variables: setting one changes its output.
        let x = Tensor::new(&[[1.0f64, 2.0, 3.0]], &Device::Cpu).unwrap();
        s.params()[0].var.set(&Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap()).unwrap();
        s.params()[1].var.set(&Tensor::new(&[0.5f64, -0.5], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(values(&fc.forward(&x).unwrap()), [6.5, 5.5]);
    }

    #[test]
    fn values_depend_on_seed_and_name_not_on_the_order_of_asking() {
        let (a, b) = (store(1, 1.0), store(1, 1.0));
        let init = Init::Randn { mean: 0.0, stdev: 1.0 };
        let a1 = values(&a.get("x", 5, init).unwrap());
        let a2 = values(&a.get("y", 5, init).unwrap());
        let b2 = values(&b.get("y", 5, init).unwrap());
        let b1 = values(&b.get("x", 5, init).unwrap());
        assert_eq!((a1.clone(), a2.clone()), (b1, b2));
        assert_ne!(a1, a2);
        assert_ne!(a1, values(&store(2, 1.0).get("x", 5, init).unwrap()));
        // Asked for again, the same variable; with another shape, an error.
        assert_eq!(values(&a.get("x", 5, Init::Const(3.0)).unwrap()), a1);
        assert!(a.get("x", 6, init).unwrap_err().to_string().contains("shape"));
    }

    #[test]
    fn init_hints_draw_what_they_name_and_init_scale_multiplies_random_ones_only() {
        let s = store(3, 1.0);
        assert_eq!(values(&s.get("c", 4, Init::Const(0.25)).unwrap()), [0.25; 4]);
        let u = values(&s.get("u", 20_000, Init::Uniform { lo: -2.0, up: 6.0 }).unwrap());
        assert!(u.iter().all(|v| (-2.0..6.0).contains(v)));
        // Mean of U(−2, 6) is 2, its sd 8/√12 = 2.31; the mean of 20 000 draws is within 0.07 (4 sd).
        assert!((u.iter().sum::<f64>() / 2e4 - 2.0).abs() < 0.07);
        // Kaiming normal for a (100, 50) weight with ReLU: std = √2 / √50 = 0.2 (fan-in 50).
        let k = values(&s.get("k", (100, 50), candle_nn::init::DEFAULT_KAIMING_NORMAL).unwrap());
        let sd = (k.iter().map(|v| v * v).sum::<f64>() / 5000.0).sqrt();
        assert!((sd - 0.2).abs() < 0.01, "{sd}");
        let scaled = store(3, 10.0);
        assert_eq!(values(&scaled.get("c", 4, Init::Const(0.25)).unwrap()), [0.25; 4]);
        let u10 = values(&scaled.get("u", 20_000, Init::Uniform { lo: -2.0, up: 6.0 }).unwrap());
        assert!(u10.iter().zip(&u).all(|(a, b)| *a == 10.0 * b));
    }
}
