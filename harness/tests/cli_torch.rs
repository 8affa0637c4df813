//! `nanhunt export-torch` and `nanhunt confirm` without PyTorch: the files an
//! export writes, and the errors of a confirmation that cannot run. With a
//! real PyTorch, `tests/confirm.rs` (feature `torch-tests`) compares runs.

mod common;

use common::{nanhunt, seed, stderr, stdout, tempdir};

#[test]
fn export_writes_a_script_and_its_tensors() {
    let dir = tempdir();
    let out = dir.path().join("x");
    let o = nanhunt(&["export-torch", seed("s002_ex1_linreg_sgd").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("python repro.py"));
    let script = std::fs::read_to_string(out.join("repro.py")).unwrap();
    assert!(!script.contains("@SCENARIO@") && script.contains("\"name\": \"s002_ex1_linreg_sgd\"") && script.contains("import torch"));
    // The weights in PyTorch's layout: seed 002 ex1 is one linear layer from 2 features to 1
    // output, (out, in) = (1, 2); the data is its 3 rows.
    let init = std::fs::read(out.join("init.safetensors")).unwrap();
    let init = safetensors::SafeTensors::deserialize(&init).unwrap();
    assert_eq!(init.tensor("fold0.layers.0.linear.weight").unwrap().shape(), [1, 2]);
    let data = std::fs::read(out.join("data.safetensors")).unwrap();
    let data = safetensors::SafeTensors::deserialize(&data).unwrap();
    let x = data.tensor("fold0.train.inputs").unwrap();
    assert_eq!((x.shape(), x.dtype()), (&[3usize, 2][..], safetensors::Dtype::F64));
}

/// The scenario JSON `repro.py` embeds (`SCENARIO = json.loads(r"""...""")`).
fn embedded(script: &str) -> serde_json::Value {
    let start = script.find("json.loads(r\"\"\"").unwrap() + "json.loads(r\"\"\"".len();
    let end = start + script[start..].find("\"\"\")").unwrap();
    serde_json::from_str(&script[start..end]).unwrap()
}

#[test]
fn export_writes_the_whole_preprocess_chain_in_order_and_the_data_before_it() {
    // log1p, min_max, then a standardizing expression: the script runs all three, in order, on
    // the data as built without them (feature 3 injected 0 in both splits, the rest uniform in [0.5, 3)).
    let dir = tempdir();
    let s = common::repo().join("scenarios/layers/preprocess_chain_constant_feature.toml");
    let o = nanhunt(&["export-torch", s.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let sc = embedded(&std::fs::read_to_string(dir.path().join("repro.py")).unwrap());
    let steps = sc["preprocess"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0], serde_json::json!({ "op": "expr", "torch": "torch.log1p(x)" }));
    assert_eq!(steps[1], serde_json::json!({ "op": "min_max", "features": 4 }));
    assert_eq!(steps[2], serde_json::json!({ "op": "expr", "torch": "((x - torch.mean(x, dim=0)) / torch.std(x, dim=0))" }));
    let data = std::fs::read(dir.path().join("data.safetensors")).unwrap();
    let data = safetensors::SafeTensors::deserialize(&data).unwrap();
    for split in ["train", "validation"] {
        let x = data.tensor(&format!("fold0.{split}.inputs")).unwrap();
        let v: Vec<f64> = x.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
        // Raw: every feature but the injected one in [0.5, 3), not yet logged or scaled.
        assert!(v.chunks(4).all(|r| r[3] == 0.0 && r[..3].iter().all(|c| (0.5..3.0).contains(c))), "{split}: {v:?}");
    }
    // A scenario without preprocessing exports no steps.
    let o = nanhunt(&["export-torch", seed("s002_ex1_linreg_sgd").to_str().unwrap(), "--out", dir.path().join("b").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(embedded(&std::fs::read_to_string(dir.path().join("b/repro.py")).unwrap())["preprocess"], serde_json::json!([]));
}

#[test]
fn a_report_directory_exports_its_repro() {
    let dir = tempdir();
    let report = common::repo().join("reports/s002_ex1_linreg_sgd-eca5b23c-e638dfd9");
    let o = nanhunt(&["export-torch", report.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(dir.path().join("data.safetensors").is_file());
}

#[test]
fn confirm_without_an_interpreter_or_without_torch_is_a_clear_error() {
    let s = seed("s002_ex1_linreg_sgd");
    let o = nanhunt(&["confirm", s.to_str().unwrap(), "--python", "/nonexistent/python"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/python: cannot run it"), "{}", stderr(&o));
    // An interpreter without torch: a script that fails as Python does on `import torch`.
    let dir = tempdir();
    let fake = common::write(dir.path(), "python", "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = nanhunt(&["confirm", s.to_str().unwrap(), "--python", fake.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("torch is not installed for this interpreter"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}
