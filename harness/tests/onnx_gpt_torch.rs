//! A GPT-2-style model written in PyTorch (`scenarios/onnx/make_models.py`: token and position
//! embeddings, a pre-norm block with hand-written causal attention over a padding mask, a GELU
//! MLP, final layer norm and LM head), exported as ONNX and imported as a graph (residual adds,
//! `q·kᵀ`, the mask read by the scores). Against the original `nn.Module` (rebuilt by the same
//! script with the same seed, not read back from the file): its loss and every parameter's
//! gradient at step 0 agree within f32 tolerance on the same tokens, its losses still agree after
//! several Adam steps, and a fully padded row goes NaN in the attention's softmax in both, as the
//! outcome says, named `fully_masked_row`, and `confirm` (export-torch's one torch call per node)
//! finds PyTorch NaN at the same step and tensor. The same for a block around PyTorch's own
//! `nn.MultiheadAttention` (`MhaBlock`, exported with a dynamic batch): loss, gradients and Adam
//! losses. Needs PyTorch 2.15 (feature `torch-tests`): it never passes vacuously.
#![cfg(feature = "torch-tests")]

mod common;

use std::path::PathBuf;
use std::process::Command;

const VOCAB: usize = 11;
const SEQ: usize = 5;

/// The interpreter with torch: `NANHUNT_TORCH_PYTHON`, else `.venv-torch/bin/python`.
fn python() -> PathBuf {
    common::torch_python()
}

/// The original module (`Gpt`, or `MhaBlock`, which reads no mask) and its next-token
/// cross-entropy on the rows of `data.json` (ids, then the mask), its gradients by parameter name (PyTorch's layout, as the import keeps it) and its
/// losses over `steps` full-batch Adam steps at `lr`.
const TORCH: &str = r#"
import json, sys
import torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
import make_models
d = json.load(open(sys.argv[2]))
torch.manual_seed(0)
m = getattr(make_models, d["model"])()
rows = torch.tensor(d["rows"])
x, y, mask = rows[:, :-1], rows[:, 1:], torch.tensor(d["mask"])
def loss_of():
    logits = m(x, mask) if d["model"] == "Gpt" else m(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
a = make_models.answer(m, loss_of, d["lr"], d["steps"], lambda n, p: False)
clean = lambda v: v if v == v and abs(v) != float("inf") else str(v)
grads = {n: [clean(v) for v in g] for n, g in a["grads"].items()}
print(json.dumps({"loss": clean(a["loss"]), "grads": grads, "losses": [clean(v) for v in a["losses"]]}))
"#;

/// The token rows (`SEQ + 1` ids each: the inputs and the next token).
fn rows() -> Vec<Vec<u32>> {
    (0..6u32).map(|i| (0..=SEQ as u32).map(|j| (i * 7 + j * (i + 2)) % VOCAB as u32).collect()).collect()
}

fn scenario(rows: &[Vec<u32>], steps: usize, lr: f64, lengths: Option<&[usize]>) -> String {
    scenario_of("gpt.onnx", rows, steps, lr, lengths)
}

fn scenario_of(file: &str, rows: &[Vec<u32>], steps: usize, lr: f64, lengths: Option<&[usize]>) -> String {
    let ids = rows.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", ");
    let padding = lengths.map_or(String::new(), |l| format!("padding = {{ lengths = {l:?} }}\n"));
    format!(
        "name = \"onnx_gpt_vs_torch\"\n[data]\nseq_len = {SEQ}\n{padding}inputs = {{ kind = \"tokens\", vocab = {VOCAB}, rows = [{ids}] }}\ntargets = {{ kind = \"next_token\" }}\n[model]\nonnx = \"{file}\"\n[loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"adam\"\nlr = {lr:?}\n[train]\nepochs = {steps}\nbatch_size = {}\n",
        rows.len()
    )
}

/// Runs the original module on `rows` with padding `mask`; returns its JSON answer.
fn torch(dir: &std::path::Path, rows: &[Vec<u32>], mask: &[Vec<f64>], steps: usize, lr: f64) -> serde_json::Value {
    torch_of("Gpt", dir, rows, mask, steps, lr)
}

/// Runs `model` of make_models.py on `rows` (with padding `mask` for the `Gpt`).
fn torch_of(model: &str, dir: &std::path::Path, rows: &[Vec<u32>], mask: &[Vec<f64>], steps: usize, lr: f64) -> serde_json::Value {
    let data = serde_json::json!({ "model": model, "rows": rows, "mask": mask, "lr": lr, "steps": steps });
    common::write(dir, "data.json", &data.to_string());
    let out = common::output_within(Command::new(python()).arg("-c").arg(TORCH).arg(common::repo().join("scenarios/onnx")).arg(dir.join("data.json")), std::time::Duration::from_secs(300));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn setup(text: &str) -> (tempfile::TempDir, nanhunt::Scenario) {
    let dir = common::tempdir();
    for file in ["gpt.onnx", "mha.onnx"] {
        std::fs::copy(common::repo().join("scenarios/onnx").join(file), dir.path().join(file)).unwrap();
    }
    let path = common::write(dir.path(), "s.toml", text);
    let s = nanhunt::load(&path).unwrap();
    (dir, s)
}

#[test]
fn the_imported_gpt_agrees_with_its_pytorch_module_at_step_0_and_after_adam_steps() {
    agrees_with_its_module("Gpt", "gpt.onnx", 18);
}

#[test]
fn the_imported_multihead_attention_block_agrees_with_its_pytorch_module_at_step_0_and_after_adam_steps() {
    // nn.MultiheadAttention's in_proj_weight (24 × 8) and bias, out_proj, the layer norm, the
    // embedding and the head: 9 parameters, exported with a dynamic batch of 3 and trained at 6.
    agrees_with_its_module("MhaBlock", "mha.onnx", 9);
}

/// The import of `file` against make_models.py's `model` (of `params` parameters): the loss and
/// every gradient at step 0, then the losses of 6 full-batch Adam steps.
fn agrees_with_its_module(model: &str, file: &str, params: usize) {
    let (rows, steps, lr) = (rows(), 6usize, 1e-2);
    let (dir, s) = setup(&scenario_of(file, &rows, steps, lr, None));
    let ones = vec![vec![1.0; SEQ]; rows.len()];
    let theirs = torch_of(model, dir.path(), &rows, &ones, steps, lr);

    let x: Vec<Vec<f64>> = rows.iter().map(|r| r[..SEQ].iter().map(|&v| f64::from(v)).collect()).collect();
    let y: Vec<Vec<f64>> = rows.iter().map(|r| r[1..].iter().flat_map(|&t| (0..VOCAB).map(move |k| f64::from(u8::from(k == t as usize)))).collect()).collect();
    let (loss, grads) = nanhunt::run::first_gradients(&s, &x, &y).unwrap();
    assert_eq!(grads.len(), params, "{:?}", grads.iter().map(|g| &g.0).collect::<Vec<_>>());
    // Full-batch training: each step's batch is every row, in any order, so the mean loss and Adam agree.
    let o = nanhunt::run(&s);
    let ours: Vec<f64> = o.trace.rows.iter().map(|r| r.train_loss).collect();
    assert_eq!(ours.len(), steps, "{o:?}");
    common::agrees_with_torch(loss, &grads, &ours, &theirs);
}

#[test]
fn a_fully_padded_row_is_nan_in_the_attention_softmax_in_nanhunt_and_in_pytorch() {
    let mut rows = rows();
    let lengths = [5, 0, 5, 3, 5, 5];
    // nanhunt zeroes padded ids (token 0); the original module reads the same ids.
    for (r, &len) in rows.iter_mut().zip(&lengths) {
        r[len..SEQ].iter_mut().for_each(|t| *t = 0);
    }
    let (dir, s) = setup(&scenario(&rows, 1, 1e-2, Some(&lengths)));
    let o = nanhunt::run(&s);
    let first = o.first_nonfinite.as_ref().unwrap_or_else(|| panic!("finite: {o:?}"));
    assert_eq!((first.tensor.to_string().as_str(), first.step), ("layers.block.softmax.output", 1), "{o:?}");
    // Row 1's queries see no key: every one of its 2 heads × 5 × 5 probabilities is NaN, and only row 1's.
    assert_eq!(o.first_nonfinite.as_ref().map(|f| f.coords[0]), Some(1), "{o:?}");
    let mask: Vec<Vec<f64>> = lengths.iter().map(|&l| (0..SEQ).map(|j| f64::from(u8::from(j < l))).collect()).collect();
    let theirs = torch(dir.path(), &rows, &mask, 1, 1e-2);
    assert_eq!(theirs["loss"], "nan", "PyTorch 2.15's softmax of a row of -inf is NaN too: {theirs}");
    // The cause names the fully masked row (batch row 1), as the attention layer's rule does.
    let cause = o.cause.as_ref().unwrap_or_else(|| panic!("no cause: {o:?}"));
    assert_eq!(cause.rule, nanhunt::run::Rule::FullyMaskedRow, "{cause}");
    assert!(cause.reason.contains("of batch row 1"), "{cause}");
    // export-torch writes one torch call per node and `confirm` runs it: PyTorch goes NaN at
    // the same step and tensor.
    let work = nanhunt::report::torch::scratch().unwrap();
    let c = nanhunt::report::torch::confirm(&s, &python(), &work).unwrap();
    std::fs::remove_dir_all(&work).ok();
    assert_eq!(c.verdict, nanhunt::report::torch::TorchVerdict::Confirmed, "{c}");
    let theirs = c.pytorch.as_ref().map(|p| (p.step, p.tensor.to_string()));
    assert_eq!(theirs, Some((1, "layers.block.softmax.output".to_string())), "{c}");
}
