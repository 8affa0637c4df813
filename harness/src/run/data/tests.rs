//! Data building: splits, injections, preprocessing, CSV and scales, against hand-computed values.
use super::*;
use crate::scenario::parse_str;

fn scenario(data: &str) -> Scenario {
    let src = format!("name = \"t\"\nseed = 5\n[data]\n{data}\n[model]\nlayers = []\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n");
    parse_str(&src, "t").unwrap()
}

fn rows(n: usize) -> String {
    let r: Vec<String> = (0..n).map(|i| format!("[{i}.0]")).collect();
    let t: Vec<String> = (0..n).map(|i| format!("{i}.0")).collect();
    format!("inputs = {{ kind = \"values\", rows = [{}] }}\ntargets = {{ kind = \"values\", values = [{}] }}", r.join(", "), t.join(", "))
}

#[test]
fn kfold_matches_sklearn_sizes_and_covers_every_row_once() {
    let d = build(&scenario(&format!("{}\nvalidation = {{ kfold = 3 }}", rows(10)))).unwrap();
    let sizes: Vec<_> = d.folds.iter().map(|f| (f.train.x.rows, f.val.as_ref().unwrap().x.rows)).collect();
    assert_eq!(sizes, [(6, 4), (7, 3), (7, 3)]);
    let mut seen: Vec<f64> = d.folds.iter().flat_map(|f| f.val.as_ref().unwrap().x.values.clone()).collect();
    seen.sort_by(f64::total_cmp);
    assert_eq!(seen, (0..10).map(f64::from).collect::<Vec<_>>());
}

#[test]
fn fraction_holds_out_the_last_rows() {
    let d = build(&scenario(&format!("{}\nvalidation = {{ fraction = 0.2 }}", rows(10)))).unwrap();
    assert_eq!(d.folds[0].val.as_ref().unwrap().x.values, vec![8.0, 9.0]);
    assert_eq!(d.folds[0].train.x.rows, 8);
}

#[test]
fn injection_fraction_and_cells_are_exact() {
    let s = scenario("n = 50\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"binary\" }\n[[data.inject]]\nvalue = \"nan\"\nfraction = 0.05\n[[data.inject]]\nvalue = \"zero\"\ninto = \"targets\"\nrows = [3, 7]");
    let d = build(&s).unwrap();
    let f = &d.folds[0].train;
    assert_eq!(f.x.values.iter().filter(|v| v.is_nan()).count(), 5, "5% of 100 cells");
    assert_eq!((f.y.values[3], f.y.values[7]), (0.0, 0.0));
    // Injections draw from their own stream: the clean cells equal an uninjected build.
    let clean = build(&scenario("n = 50\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"binary\" }")).unwrap();
    let x0 = &clean.folds[0].train.x.values;
    assert!(f.x.values.iter().zip(x0).all(|(a, b)| a.is_nan() || a == b));
}

#[test]
fn standardize_uses_training_statistics() {
    // Train column [0, 1, 2, 3]: mean 1.5, population std sqrt(1.25); validation row 4 → (4 − 1.5)/sqrt(1.25).
    let s = scenario(&format!("{}\nvalidation = {{ fraction = 0.2 }}\n[[data.preprocess]]\nop = \"standardize\"", rows(5)));
    let d = build(&s).unwrap();
    let sd = 1.25f64.sqrt();
    assert_eq!(d.folds[0].train.x.values, vec![-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd]);
    assert_eq!(d.folds[0].val.as_ref().unwrap().x.values, vec![2.5 / sd]);
}

#[test]
fn reciprocal_with_and_without_guard() {
    // Seed 001 ex2: 1 / [1, 2, 0, 4, 5], and np.where(data == 0, 1e-6, 1 / data).
    let data = "inputs = { kind = \"values\", rows = [[1.0], [2.0], [0.0], [4.0], [5.0]] }\ntargets = { kind = \"uniform\" }";
    let raw = build(&scenario(&format!("{data}\n[[data.preprocess]]\nop = \"reciprocal\""))).unwrap();
    assert_eq!(raw.folds[0].train.x.first_nonfinite(), Some((2, 0, f64::INFINITY)));
    let guarded = build(&scenario(&format!("{data}\n[[data.preprocess]]\nop = \"reciprocal\"\nguard = 1e-6"))).unwrap();
    assert_eq!(guarded.folds[0].train.x.values, vec![1.0, 0.5, 1e-6, 0.25, 0.2]);
}

#[test]
fn impute_and_drop_handle_missing_values() {
    let data = "inputs = { kind = \"values\", rows = [[1.0], [nan], [3.0]] }\ntargets = { kind = \"values\", values = [1.0, 2.0, 3.0] }";
    let imputed = build(&scenario(&format!("{data}\n[[data.preprocess]]\nop = \"impute_mean\""))).unwrap();
    assert_eq!(imputed.folds[0].train.x.values, vec![1.0, 2.0, 3.0]);
    let dropped = build(&scenario(&format!("{data}\n[[data.preprocess]]\nop = \"drop_nonfinite\""))).unwrap();
    assert_eq!(dropped.folds[0].train.y.values, vec![1.0, 3.0]);
}

#[test]
fn csv_inputs_with_named_targets_and_missing_cells() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.csv"), "a,y,b\n1,10,2\n3,30,\n").unwrap();
    let mut s = scenario("inputs = { kind = \"csv\", path = \"d.csv\", targets = [\"y\"] }");
    s.dir = Some(dir.path().to_path_buf());
    let d = build(&s).unwrap();
    assert_eq!(d.shape.features, 2);
    assert_eq!(d.folds[0].train.y.values, vec![10.0, 30.0]);
    assert_eq!(d.folds[0].train.x.values[..3], [1.0, 2.0, 3.0]);
    assert!(d.folds[0].train.x.values[3].is_nan(), "an empty cell reads as NaN");
    std::fs::write(dir.path().join("d.csv"), "a,y\n").unwrap();
    assert!(build(&s).unwrap_err().to_string().contains("no data rows"), "a header alone is an error, not a panic");
    std::fs::write(dir.path().join("d.csv"), "a,y\n1,x\n").unwrap();
    let err = build(&s).unwrap_err().to_string();
    assert!(err.contains("line 2, column 2: not a number") && !err.contains("`x`"), "names the cell, never echoes it: {err}");
}

#[test]
fn csv_shapes_that_cannot_train_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let with = |csv: &str, extra: &str| {
        std::fs::write(dir.path().join("d.csv"), csv).unwrap();
        let mut s = scenario(&format!("inputs = {{ kind = \"csv\", path = \"d.csv\", targets = [\"y\"] }}\n{extra}"));
        s.dir = Some(dir.path().to_path_buf());
        build(&s).map(|_| ()).map_err(|e| e.to_string())
    };
    let kfold = with("a,y\n1,2\n3,4\n", "validation = { kfold = 5 }").unwrap_err();
    assert!(kfold.contains("data.validation.kfold") && kfold.contains("5 folds need at least 5 rows, and there are 2"), "{kfold}");
    let no_features = with("y\n1\n2\n", "").unwrap_err();
    assert!(no_features.contains("no feature columns"), "{no_features}");
    let fraction = with("a,y\n1,2\n", "validation = { fraction = 0.5 }").unwrap_err();
    assert!(fraction.contains("leaving none to train on"), "{fraction}");
    let header = with("root:x:0:0,y\n1,2\n", "").map(|_| "built");
    assert_eq!(header, Ok("built"));
    let missing = with("secret,z\n1,2\n", "").unwrap_err();
    assert!(missing.contains("no column named `y`") && !missing.contains("secret"), "{missing}");
}

#[test]
fn csv_reads_only_regular_files_within_the_memory_limit() {
    let mut s = scenario("inputs = { kind = \"csv\", path = \"/dev/zero\", targets = [\"y\"] }");
    let err = build(&s).unwrap_err().to_string();
    assert!(err.contains("must be a regular file"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.csv"), format!("a,y\n{}", "1,2\n".repeat(300_000))).unwrap();
    s.data.inputs = crate::scenario::InputSpec::Csv { path: "d.csv".into(), targets: vec!["y".into()] };
    s.dir = Some(dir.path().to_path_buf());
    s.train.memory_limit_mb = 1;
    let err = build(&s).unwrap_err().to_string();
    assert!(err.contains("refused") && err.contains("memory_limit_mb"), "{err}");
}

#[test]
fn scale_groups_and_classes() {
    let s = scenario("n = 4\nfeatures = 3\ninputs = { kind = \"uniform\", low = 1.0, high = 2.0 }\nscale_groups = [{ first = 2, factor = 100.0 }]\ntargets = { kind = \"classes\", k = 3 }");
    let d = build(&s).unwrap();
    let x = &d.folds[0].train.x;
    for r in 0..4 {
        let row = x.row(r);
        assert!(row[0] >= 100.0 && row[1] >= 100.0 && row[2] < 2.0, "{row:?}");
    }
    let y = &d.folds[0].train.y;
    assert_eq!(y.cols, 3);
    assert!((0..4).all(|r| y.row(r).iter().sum::<f64>() == 1.0), "one-hot rows");
}

#[test]
fn an_expression_step_standardizes_each_split_by_its_own_statistics_unguarded() {
    // Train rows [1, 5], [2, 5], [3, 5]: column 0 has mean 2 and std 1 (torch.std is unbiased:
    // sqrt(((−1)² + 0² + 1²) / 2) = 1), so it becomes [−1, 0, 1]; column 1 is constant, std 0,
    // and (5 − 5) / 0 = 0/0 = NaN, as PyTorch computes it (no guard, unlike `standardize`).
    // Validation rows [10, 5], [14, 5]: their own mean 12 and std sqrt((4 + 4) / 1) = 2√2.
    // PyTorch 2.15 on the same f64 tensors: [[-1, nan], [0, nan], [1, nan]] and
    // [[-0.7071, nan], [0.7071, nan]] (−2 / 2√2 = −0.70711).
    let data = "inputs = { kind = \"values\", rows = [[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [10.0, 5.0], [14.0, 5.0]] }\ntargets = { kind = \"uniform\" }\nvalidation = { fraction = 0.4 }";
    let step = "[[data.preprocess]]\nexpr = \"(x - mean(x, dim=0)) / std(x, dim=0)\"";
    let d = build(&scenario(&format!("{data}\n{step}"))).unwrap();
    let train = &d.folds[0].train.x.values;
    assert_eq!([train[0], train[2], train[4]], [-1.0, 0.0, 1.0]);
    assert!(train[1].is_nan() && train[3].is_nan() && train[5].is_nan(), "{train:?}");
    let val = &d.folds[0].val.as_ref().unwrap().x.values;
    let r = 2.0 * 2f64.sqrt();
    assert_eq!([val[0], val[2]], [-2.0 / r, 2.0 / r]);
    // `op = "expr"` is the same step, written back that way; a step that changes the shape is refused at its key.
    let s = scenario(&format!("{data}\n[[data.preprocess]]\nop = \"expr\"\nexpr = \"(x - mean(x, dim=0)) / std(x, dim=0)\""));
    assert_eq!(s.data.preprocess, scenario(&format!("{data}\n{step}")).data.preprocess);
    let e = build(&scenario(&format!("{data}\n[[data.preprocess]]\nexpr = \"mean(x, dim=0)\""))).unwrap_err().to_string();
    assert!(e.contains("data.preprocess.0") && e.contains("makes (2,), and a preprocessing step keeps the inputs' shape (batch, 2)"), "{e}");
}

#[test]
fn next_token_labels_are_the_next_ids_with_a_drawn_fraction_and_the_prompts_ignored() {
    let data = "n = 400\nseq_len = 4\ninputs = { kind = \"tokens\", vocab = 8 }\ntargets = { kind = \"next_token_labels\", ignore_fraction = 0.25 }";
    let d = build(&scenario(data)).unwrap();
    let (x, y) = (&d.folds[0].train.x, &d.folds[0].train.y);
    assert_eq!((y.rows, y.cols), (400, 4));
    let ignored = y.values.iter().filter(|v| **v == -100.0).count();
    // 1600 positions at 0.25: 400 expected, σ ≈ 17.3; within 3σ.
    assert!((348..=452).contains(&ignored), "{ignored} of 1600 ignored");
    // A kept label is the next position's input id (the last position's is the row's extra id).
    for r in 0..400 {
        for t in 0..3 {
            let v = y.row(r)[t];
            assert!(v == -100.0 || v == x.row(r)[t + 1], "row {r} position {t}: {v} vs {:?}", x.row(r));
        }
    }
    // Deterministic: the same scenario draws the same labels.
    assert_eq!(build(&scenario(data)).unwrap().folds[0].train.y.values, y.values);
    // Explicit prompts: row 1's first 2 positions ignored, row 2's prompt covers the whole row.
    let rows = "n = 3\nseq_len = 4\ninputs = { kind = \"tokens\", vocab = 8, rows = [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [3, 4, 5, 6, 7]] }";
    let d = build(&scenario(&format!("{rows}\ntargets = {{ kind = \"next_token_labels\", prompt_lengths = [0, 2, 9] }}"))).unwrap();
    assert_eq!(d.folds[0].train.y.values, [2.0, 3.0, 4.0, 5.0, -100.0, -100.0, 5.0, 6.0, -100.0, -100.0, -100.0, -100.0]);
    let short = scenario(&format!("{rows}\ntargets = {{ kind = \"next_token_labels\", prompt_lengths = [1, 2] }}"));
    let problems = crate::scenario::validate(&short);
    assert!(problems.iter().any(|p| p.key == "data.targets.prompt_lengths" && p.message == "has 2 prompt lengths for 3 rows: give one per row"), "{problems:?}");
    assert!(build(&short).unwrap_err().to_string().contains("has 2 prompt lengths for 3 rows"));
}
