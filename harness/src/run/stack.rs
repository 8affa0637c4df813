//! Sized stacks for training. Candle's backward (`Tensor::backward`, through
//! `sorted_nodes`) walks the autograd graph recursively, one call per node on
//! a path from the loss to a parameter, and dropping a graph recurses the same
//! way; a long sequence through a recurrent layer, or a deep stack of layers,
//! overflowed the thread's stack and aborted the process.
//!
//! So every run estimates, from its plan, an upper bound on its graph's depth
//! ([`levels`]), refuses a graph deeper than [`MAX_LEVELS`] with a located
//! error before anything trains, and otherwise trains on a thread whose stack
//! holds that depth ([`on_stack`]). A code model's graph is not known before it
//! runs: it trains on [`CODE_STACK`] bytes.
//!
//! The constants were measured, not guessed: see [`BYTES_PER_LEVEL`].

use crate::error::{Error, Result};
use crate::scenario::{Input, Layer, Node, Plan, Shape};

/// Stack bytes per level of graph depth that the estimate allows. Measured on x86-64 with
/// `cargo run -p nanhunt --example stack_probe` (chains of 10,000 to 40,000 affine ops on a
/// `Var`, each walked by backward, or dropped, on threads whose stack is bisected to the
/// smallest that does not overflow): Candle's recursive walk takes 240 bytes per level and the
/// drop 80. Whole runs (dev profile, the same bisection around `nanhunt::run`, before runs
/// got their own threads) agree: 40,000 `tanh` layers needed 9.4 MiB, 240 bytes per layer,
/// and an LSTM 1.4 KiB per time step (6 levels of the walk). The walk is Candle's code, built
/// at `opt-level = 3` in every profile of this workspace. A third more is allowed.
pub const BYTES_PER_LEVEL: u64 = 320;

/// Stack for everything a run does besides the walk: measured (as [`BYTES_PER_LEVEL`], on
/// whole runs) at 35 KiB for the seed MLP and `tiny_gpt`, 39 KiB for an AMP scenario; six
/// times that is allowed.
pub const BASE_BYTES: u64 = 256 << 10;

/// The deepest graph nanhunt trains: 320 MiB of stack at most, of which the walk touches
/// about a third (the estimate counts every node, the walk only a path). Beyond it the run
/// is refused before training. A time step adds up to 24 levels to an LSTM or GRU and 6 to
/// an RNN, so an LSTM or GRU trains over up to about 43,000 steps and an RNN over about
/// 174,000. Candle's backward of a recurrent layer is quadratic in the sequence's length
/// (each step's slice of the input projection gets a gradient as long as the sequence): an
/// RNN over 43,000 steps took 1 s per optimizer step, so the longest take about 16 s.
pub const MAX_LEVELS: u64 = 1 << 20;

/// The stack a code model trains on: its graph's depth is unknown until it runs, so it gets
/// a generous 64 MiB, room for about 200,000 levels at [`BYTES_PER_LEVEL`]: a code model
/// deeper than that still overflows it. Only the pages used are ever touched; the rest is
/// address space.
pub const CODE_STACK: u64 = 64 << 20;

/// The stack of nanhunt's own worker threads (hunt, check and margins workers), which run a
/// shallow graph in place rather than on a thread of its own.
pub const WORKER_STACK: usize = 8 << 20;

/// A run that needs at most this much stack runs on the calling thread: half of Rust's
/// default 2 MiB for spawned threads, so any thread of default size can run it.
const INLINE_BYTES: u64 = 1 << 20;

/// Levels for the loss, its scaling and division, and the casts around it.
const LOSS_LEVELS: u64 = 64;

/// The levels a node of `layer` adds: its own, and per time step of the sequence it reads
/// (recurrent layers); a registry op says its own (`Op::levels`). Each counts every op the layer records, with a tap (the birth re-run)
/// and autocast's casts, so it bounds the longest path through the layer. The tests hold
/// Candle's graphs to them: an activation adds at most 3 nodes, a linear layer 4, batch norm
/// 22, attention 25 over its three nodes, a time step 5 (RNN), 21 (LSTM) or 23 (GRU, with
/// every state returned and recurrent dropout).
fn layer_levels(layer: &Layer) -> (u64, u64) {
    layer.op().levels()
}

/// The length of a sequence a node reads (0 for anything else).
fn seq_len(shape: Shape) -> u64 {
    match shape {
        Shape::Seq { len, .. } | Shape::Tokens { len, .. } => len as u64,
        Shape::Flat(_) | Shape::Image { .. } => 0,
    }
}

/// Levels of one node, reading a tensor of shape `input`.
fn node_levels(node: &Node, input: Shape) -> u64 {
    let (own, per_step) = layer_levels(&node.layer);
    seq_len(input).saturating_mul(per_step).saturating_add(own)
}

/// An upper bound on the depth of one training step's autograd graph: the number of nodes
/// on its longest path, for the model `plan` fed `input`.
pub(crate) fn levels(plan: &Plan, input: Shape) -> u64 {
    let shape_of = |n: &Node| match n.input() {
        Input::Model => input,
        Input::Node(i) => plan.nodes[i].shape,
    };
    plan.nodes.iter().fold(LOSS_LEVELS, |sum, n| sum.saturating_add(node_levels(n, shape_of(n))))
}

/// The stack a graph of `levels` levels needs.
pub(crate) fn bytes(levels: u64) -> u64 {
    BASE_BYTES.saturating_add(levels.saturating_mul(BYTES_PER_LEVEL))
}

/// The stack a run of `plan` needs, or the located error that refuses a graph over [`MAX_LEVELS`].
pub(crate) fn need(name: &str, plan: &Plan, input: Shape) -> Result<u64> {
    let depth = levels(plan, input);
    if depth <= MAX_LEVELS {
        return Ok(bytes(depth));
    }
    let recurrent = plan.nodes.iter().any(|n| layer_levels(&n.layer).1 > 0);
    let (key, fix) = if recurrent { ("data.seq_len", "shorten the sequences") } else { ("model.layers", "use fewer layers") };
    let message = format!(
        "the training graph is up to {depth} nodes deep, over nanhunt's limit of {MAX_LEVELS}: Candle's backward walks it recursively, one stack frame per node ({} MiB of stack at most); {fix}",
        bytes(MAX_LEVELS) >> 20
    );
    Err(Error::Invalid { location: name.to_string(), key: key.into(), message })
}

/// Starts `job` on a worker thread of `scope` with [`WORKER_STACK`] bytes of stack, or, if the
/// system refuses the thread, runs it here.
pub(crate) fn spawn_worker<'scope>(scope: &'scope std::thread::Scope<'scope, '_>, job: impl FnOnce() + Send + Copy + 'scope) {
    if std::thread::Builder::new().stack_size(WORKER_STACK).spawn_scoped(scope, job).is_err() {
        job();
    }
}

/// Runs `f` on a thread with at least `bytes` of stack: on this one when that is small
/// ([`INLINE_BYTES`]), else on a thread of its own. A panic in `f` is resumed here.
pub(crate) fn on_stack<T: Send>(name: &str, bytes: u64, f: impl FnOnce() -> T + Send) -> Result<T> {
    if bytes <= INLINE_BYTES {
        return Ok(f());
    }
    let size = usize::try_from(bytes).unwrap_or(usize::MAX);
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().name("nanhunt-train".into()).stack_size(size).spawn_scoped(scope, f);
        let refused = |e: std::io::Error| Error::Invalid {
            location: name.to_string(),
            key: "model".into(),
            message: format!("the system refused a thread with {} MiB of stack for its training graph: {e}", bytes >> 20),
        };
        let handle = thread.map_err(refused)?;
        Ok(handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

#[cfg(test)]
mod tests;
