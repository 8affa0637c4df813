//! A built code model: [`CodeNet`], the [`Net`] the runner trains in place of
//! a layer stack. Its outputs are the tensors the forward checked (through
//! [`Watch::check`]), in order, then the model's output; it has no layers, so
//! its parameters belong to none and the cause rules have nothing to explain.
//!
//! `Build` and `Forward` erase the user's model type, so a scenario can carry
//! any model: `CodeModel` holds a `Build`, which makes a `Forward`.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use rand_chacha::ChaCha8Rng;

use super::checks::{Referenced, Watch};
use super::store::ParamStore;
use crate::error::{Error, Result};
use crate::run::model::Slot;
use crate::run::net::{Net, Param, Wide, Wrt};
use crate::scenario::Layer;

/// Builds a model from a store (type-erased, so a scenario can carry any model).
pub(super) trait Build: Send + Sync {
    fn build(&self, store: &ParamStore) -> candle_core::Result<Box<dyn Forward>>;
}

/// A built model's forward.
pub(super) trait Forward {
    fn forward(&self, x: &Tensor, watch: &mut Watch) -> candle_core::Result<Tensor>;
}

/// The user's `build` and `forward` closures.
pub(super) struct Pair<B, F> {
    pub(super) build: B,
    pub(super) forward: Arc<F>,
}

struct Built<M, F> {
    model: M,
    forward: Arc<F>,
}

impl<M, B, F> Build for Pair<B, F>
where
    M: 'static,
    B: Fn(&ParamStore) -> candle_core::Result<M> + Send + Sync,
    F: Fn(&M, &Tensor, &mut Watch) -> candle_core::Result<Tensor> + Send + Sync + 'static,
{
    fn build(&self, store: &ParamStore) -> candle_core::Result<Box<dyn Forward>> {
        Ok(Box::new(Built { model: (self.build)(store)?, forward: self.forward.clone() }))
    }
}

impl<M, F: Fn(&M, &Tensor, &mut Watch) -> candle_core::Result<Tensor>> Forward for Built<M, F> {
    fn forward(&self, x: &Tensor, watch: &mut Watch) -> candle_core::Result<Tensor> {
        (self.forward)(&self.model, x, watch)
    }
}

/// A runtime error of a code model, as Candle's errors read.
pub(super) fn code_error(message: String) -> Error {
    Error::Candle(candle_core::Error::Msg(message))
}

/// A built code model: its forward, the names its checks had in the first forward, its
/// parameters and its store (a forward that makes parameters is refused: they would be
/// neither trained nor watched).
pub(crate) struct CodeNet {
    forward: Box<dyn Forward>,
    names: Vec<String>,
    store: ParamStore,
    params: Vec<Param>,
    /// The low dtype under autocast (`Watch::autocast`), if any.
    autocast: Option<DType>,
    /// The current training step's dropout stream (`Watch::dropout`).
    dropout: RefCell<Option<ChaCha8Rng>>,
    /// The last forward's checks with an f64 reference (`Watch::check_op`).
    references: RefCell<Vec<Referenced>>,
}

impl CodeNet {
    /// The model `forward` over the parameters `store` made so far, which checks `names`.
    pub(super) fn new(forward: Box<dyn Forward>, store: ParamStore, names: Vec<String>) -> Self {
        CodeNet { forward, names, params: store.params(), store, autocast: None, dropout: RefCell::new(None), references: RefCell::new(Vec::new()) }
    }

    /// Runs every forward with [`Watch::autocast`] set to `low`.
    pub(crate) fn with_autocast(mut self, low: Option<DType>) -> Self {
        self.autocast = low;
        self
    }

    /// Runs the forward: the checked tensors, in order, then the output.
    fn outputs(&self, x: &Tensor, mask: Option<&Tensor>, training: bool) -> Result<Vec<Tensor>> {
        let (checks, out) = self.checked(x, mask, training, self.dropout.borrow_mut().as_mut())?;
        let names: Vec<&str> = checks.iter().map(|(n, _)| n.as_str()).collect();
        if names != self.names {
            return Err(code_error(format!(
                "the forward checked {names:?}, but its first forward checked {:?}: call `Watch::check` on the same names, in the same order, in every forward",
                self.names
            )));
        }
        Ok(checks.into_iter().map(|(_, t)| t).chain([out]).collect())
    }

    /// Runs the forward: each checked tensor with its name, and the output.
    pub(super) fn checked(&self, x: &Tensor, mask: Option<&Tensor>, training: bool, dropout: Option<&mut ChaCha8Rng>) -> Result<(Vec<(String, Tensor)>, Tensor)> {
        let mut w = Watch { checks: Vec::new(), training, mask, autocast: self.autocast, dropout, references: Vec::new() };
        let out = self.forward.forward(x, &mut w)?;
        if self.store.len() != self.params.len() {
            let params = self.store.params();
            let late: Vec<&str> = params[self.params.len().min(params.len())..].iter().map(|p| p.name.as_str()).collect();
            return Err(code_error(format!("the forward made parameter(s) {late:?}: make every parameter in `build`, or it is neither trained nor watched")));
        }
        *self.references.borrow_mut() = w.references;
        Ok((w.checks, out))
    }
}

impl std::fmt::Debug for CodeNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodeNet({:?})", self.names)
    }
}

impl Net for CodeNet {
    /// The parameters, in the order `build` asked for them.
    fn params(&self) -> &[Param] {
        &self.params
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>> {
        self.outputs(x, mask, true)
    }

    fn forward_eval(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>> {
        self.outputs(x, mask, false)
    }

    /// The outputs of [`Net::forward`]; there are no layer outputs to tap.
    fn forward_tapped(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Vec<Tensor>, Vec<Slot>)> {
        Ok((self.outputs(x, mask, true)?, Vec::new()))
    }

    /// The output cast up to f32 if the forward left it in autocast's low dtype.
    fn to_loss(&self, pred: &Tensor) -> Result<Tensor> {
        if matches!(pred.dtype(), DType::F16 | DType::BF16) && self.autocast.is_some() {
            return crate::run::kernel::cast::cast(pred, DType::F32);
        }
        Ok(pred.clone())
    }

    /// Its checks' dtypes are its own: the run's compute dtype stands for them.
    fn output_dtypes(&self) -> Vec<DType> {
        Vec::new()
    }

    /// Its layers are its code's: none computes under nanhunt's autocast.
    fn read_dtypes(&self, _: usize) -> Vec<DType> {
        Vec::new()
    }

    /// Always: the forward may call [`Watch::dropout`].
    fn has_dropout(&self) -> bool {
        true
    }

    fn dropout_step(&self, rng: ChaCha8Rng) {
        *self.dropout.borrow_mut() = Some(rng);
    }

    fn layers(&self) -> &[Layer] {
        &[]
    }

    fn params_of(&self, _: usize) -> Range<usize> {
        0..0
    }

    fn input_of<'t>(&self, _: usize, x: &'t Tensor, _: &'t [Tensor]) -> &'t Tensor {
        x
    }

    fn others_of<'t>(&self, _: usize, _: &'t Tensor, _: &'t [Tensor]) -> Vec<&'t Tensor> {
        Vec::new()
    }

    fn reader_of(&self, _: usize) -> Option<usize> {
        None
    }

    /// Check `l` by its f64 reference (`Watch::check_op`), on its inputs cast to f64 (as the
    /// last forward, training or validation, had them).
    fn op_f64(&self, l: usize, _: &Tensor, _: &[Tensor], _: Option<&Tensor>, _: bool) -> Result<Option<Wide>> {
        let refs = self.references.borrow();
        let Some((_, inputs, reference)) = refs.iter().find(|(i, ..)| *i == l) else { return Ok(None) };
        let wide = inputs.iter().map(|t| t.to_dtype(DType::F64)).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Some(Wide { out: reference(&wide)?, inputs: inputs.clone(), reference: true }))
    }

    /// None: a code model's backward is Candle's over ops nanhunt does not know.
    fn grad_f64(&self, _: Wrt, _: &Tensor, _: &[Tensor], _: Option<&Tensor>, _: &dyn Fn(usize) -> Option<Tensor>) -> Result<Option<(Wide, Vec<usize>)>> {
        Ok(None)
    }
}
