//! `confirm` and `export-torch` on bad input, without PyTorch: a fake interpreter (a shell
//! script passed as `--python`) that hangs, floods its output, dies or writes a junk trace;
//! a report edited so it no longer fails; a `summary.md` that is a symbolic link; an export
//! into a folder it did not write. Each is a clear error (exit 2), never a hang or a false
//! agreement, and leaves no scratch folder behind.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{repo, seed, stderr, stdout, tempdir};

/// The recorded report of seed 002 ex1: +Inf in the loss at step 3 (epoch 3, fold 0).
const REPORT: &str = "reports/s002_ex1_linreg_sgd-eca5b23c-e638dfd9";

/// What the script prints last when PyTorch goes non-finite where that report does.
const AT_STEP_3: &str = r#"NANHUNT {"torch": "fake", "first": {"step": 3, "epoch": 3, "fold": 0, "phase": "loss", "tensor": "loss"}}"#;

/// A fake interpreter: `body` as a shell script, executable, in `dir`.
fn fake(dir: &Path, body: &str) -> PathBuf {
    let p = common::write(dir, "python", &format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Runs `nanhunt` with `TMPDIR` pointed at `tmp`, killing its process group if it is not done
/// within `limit` (so a hang fails the test instead of hanging it). Returns the output and
/// how long it took.
fn nanhunt_in(tmp: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nanhunt")).args(args).env("TMPDIR", tmp).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).spawn().unwrap();
    let pid = child.id();
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out_pipe, &mut v).ok();
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut v).ok();
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            // SAFETY: kill(2) on the test's own child's process group.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("nanhunt {args:?} still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    (Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }, elapsed)
}

/// The `nanhunt-confirm-*` folders in `tmp`.
fn scratch_left(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("nanhunt-confirm-")).collect()
}

/// A copy of the recorded report in `dir`.
fn report_copy(dir: &Path) -> PathBuf {
    let to = dir.join("report");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(repo().join(REPORT)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
fn gone(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

#[test]
fn a_hanging_interpreter_is_killed_at_the_timeout_and_its_folder_removed() {
    let dir = tempdir();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // The script starts a grandchild that sleeps too: the whole process group must go.
    let pids = dir.path().join("sleep.pid");
    let python = fake(dir.path(), &format!("sleep 600 &\necho $! > {}\nwait", pids.display()));
    let s = seed("s002_ex1_linreg_sgd");
    let (o, took) = nanhunt_in(&tmp, &["confirm", s.to_str().unwrap(), "--python", python.to_str().unwrap(), "--timeout", "2s"], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(took < Duration::from_secs(20), "took {took:?} with --timeout 2s");
    assert!(stderr(&o).contains("did not finish within 2s"), "{}", stderr(&o));
    assert_eq!(scratch_left(&tmp), Vec::<String>::new(), "the scratch folder is removed");
    let pid = std::fs::read_to_string(&pids).unwrap();
    // SIGKILL is delivered at once, but give the kernel a moment to tear the process down.
    let start = Instant::now();
    while !gone(pid.trim()) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone(pid.trim()), "the script's `sleep` (pid {}) outlived the timeout", pid.trim());
}

#[test]
fn the_timeout_is_a_duration() {
    let dir = tempdir();
    let (o, _) = nanhunt_in(dir.path(), &["confirm", seed("s002_ex1_linreg_sgd").to_str().unwrap(), "--timeout", "soon"], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--timeout"), "{}", stderr(&o));
}

#[test]
fn huge_interpreter_output_is_held_in_a_bounded_buffer() {
    let dir = tempdir();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // 100 MB on each stream, in single lines, then a failure.
    let python = fake(dir.path(), "head -c 100000000 /dev/zero | tr '\\0' o\nhead -c 100000000 /dev/zero | tr '\\0' e >&2\nexit 1");
    let s = seed("s002_ex1_linreg_sgd");
    let (o, _) = nanhunt_in(&tmp, &["confirm", s.to_str().unwrap(), "--python", python.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(2), "{}", &stderr(&o)[..stderr(&o).len().min(2000)]);
    let err = stderr(&o);
    assert!(err.len() < 64 * 1024, "the message holds {} bytes of the script's output", err.len());
    assert!(err.contains("exit code 1") && err.contains("bytes of its output not kept"), "{}", &err[..err.len().min(2000)]);
    assert_eq!(scratch_left(&tmp), Vec::<String>::new());
    // The largest child this test binary waited for (nanhunt; its tests' others are small): a
    // run of seed 002 takes about 20 MB; 200 MB of output read whole would take over 200 MB.
    // SAFETY: getrusage(2) into a zeroed struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    assert!(usage.ru_maxrss < 100 * 1024, "a child's peak RSS was {} KiB", usage.ru_maxrss);
}

#[test]
fn a_failed_interpreter_is_named_by_exit_code_or_signal() {
    let dir = tempdir();
    let s = seed("s002_ex1_linreg_sgd");
    for (body, want) in [("echo oops >&2\nexit 3", "exit code 3"), ("kill -9 $$", "killed by signal 9")] {
        let python = fake(dir.path(), body);
        let (o, _) = nanhunt_in(dir.path(), &["confirm", s.to_str().unwrap(), "--python", python.to_str().unwrap()], Duration::from_secs(60));
        assert_eq!(o.status.code(), Some(2));
        let err = stderr(&o);
        assert!(err.contains(want) && !err.contains("Some(") && !err.contains("None"), "{err}");
    }
}

#[test]
fn a_report_edited_so_it_no_longer_fails_is_refused() {
    let dir = tempdir();
    let report = report_copy(dir.path());
    let toml = report.join("repro.toml");
    // lr 1e-11 is below the stability bound: the edited repro stays finite (seed 002's fix).
    std::fs::write(&toml, std::fs::read_to_string(&toml).unwrap().replace("lr = 0.01", "lr = 1e-11")).unwrap();
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    let trace = dir.path().join("trace.torch.csv");
    let python = fake(
        dir.path(),
        &format!("printf 'step,epoch,fold,train_loss\\n1,1,0,1e0\\n' > trace.torch.csv\ncp trace.torch.csv {}\necho 'NANHUNT {{\"torch\": \"fake\", \"first\": null}}'", trace.display()),
    );
    let (o, _) = nanhunt_in(dir.path(), &["confirm", report.to_str().unwrap(), "--python", python.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("no longer reproduces"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(report.join("summary.md")).unwrap(), summary, "summary.md is left alone");
    assert!(!trace.exists(), "refused before PyTorch runs");
}

#[test]
fn a_junk_torch_trace_is_an_error() {
    let dir = tempdir();
    let s = seed("s002_ex1_linreg_sgd_fix_lower_lr");
    let finite = "echo 'NANHUNT {\"torch\": \"fake\", \"first\": null}'";
    let junk = ["printf 'junk\\n'", "printf 'step,epoch,fold,train_loss\\nx,y,z,w\\n'", "printf 'step,epoch,fold,train_loss\\n'", "true"];
    for write in junk {
        let python = fake(dir.path(), &format!("{write} > trace.torch.csv\n{finite}"));
        let (o, _) = nanhunt_in(dir.path(), &["confirm", s.to_str().unwrap(), "--python", python.to_str().unwrap()], Duration::from_secs(60));
        assert_eq!(o.status.code(), Some(2), "{write}: {}{}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains("trace.torch.csv"), "{write}: {}", stderr(&o));
    }
    // A whole trace (seed 002's fix: 10 steps) is read; its losses of 1 are not nanhunt's, so
    // both stay finite but part at once: numerics differ, exit 1.
    let rows: String = (1..=10).map(|i| format!("{i},{i},0,1e0\\n")).collect();
    let python = fake(dir.path(), &format!("printf 'step,epoch,fold,train_loss\\n{rows}' > trace.torch.csv\n{finite}"));
    let (o, _) = nanhunt_in(dir.path(), &["confirm", s.to_str().unwrap(), "--python", python.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("numerics differ: both stay finite, but nanhunt and PyTorch fake part within the first 10 steps; losses first differ"), "{}", stdout(&o));
}

#[test]
fn a_symlinked_summary_is_refused_and_the_outside_file_left_alone() {
    let dir = tempdir();
    let report = report_copy(dir.path());
    let outside = dir.path().join("outside.md");
    std::fs::rename(report.join("summary.md"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, report.join("summary.md")).unwrap();
    let before = std::fs::read_to_string(&outside).unwrap();
    let python = fake(dir.path(), &format!("printf 'step,epoch,fold,train_loss\\n1,1,0,1e0\\n' > trace.torch.csv\necho '{AT_STEP_3}'"));
    let (o, _) = nanhunt_in(dir.path(), &["confirm", report.to_str().unwrap(), "--python", python.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(report.join("summary.md")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), before);
}

#[test]
fn a_report_confirmed_by_a_fake_interpreter_gains_its_line() {
    // The path the refusals above guard still works: the line lands under the title.
    let dir = tempdir();
    let report = report_copy(dir.path());
    let python = fake(dir.path(), &format!("printf 'step,epoch,fold,train_loss\\n1,1,0,6.145485312e9\\n' > trace.torch.csv\necho '{AT_STEP_3}'"));
    let (o, _) = nanhunt_in(dir.path(), &["confirm", report.to_str().unwrap(), "--python", python.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(summary.contains("\n**PyTorch:** Confirmed in PyTorch fake: both go non-finite at step 3 (fold 0)"), "{summary}");
}

#[test]
fn export_refuses_a_folder_it_did_not_write() {
    let dir = tempdir();
    let out = dir.path().join("x");
    std::fs::create_dir(&out).unwrap();
    common::write(&out, "notes.txt", "mine");
    let o = common::nanhunt(&["export-torch", seed("s002_ex1_linreg_sgd").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("notes.txt"), "{}", stderr(&o));
    assert!(!out.join("repro.py").exists());
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn export_over_an_earlier_export_clears_its_stale_trace() {
    let dir = tempdir();
    let out = dir.path().join("x");
    let export = |name: &str| common::nanhunt(&["export-torch", seed(name).to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(export("s002_ex1_linreg_sgd").status.code(), Some(0));
    // Running the script leaves its trace; a new export makes that trace another run's.
    common::write(&out, "trace.torch.csv", "step,epoch,fold,train_loss\n1,1,0,1e0\n");
    let o = export("s002_ex1_linreg_sgd_fix_lower_lr");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!out.join("trace.torch.csv").exists(), "the earlier run's trace is gone");
    assert!(std::fs::read_to_string(out.join("repro.py")).unwrap().contains("s002_ex1_linreg_sgd_fix_lower_lr"));
}

#[test]
fn a_relative_interpreter_path_is_the_callers() {
    // The script runs in a scratch folder; `--python ./python` still names the caller's file.
    let dir = tempdir();
    fake(dir.path(), "echo oops >&2\nexit 3");
    let o = Command::new(env!("CARGO_BIN_EXE_nanhunt")).args(["confirm", seed("s002_ex1_linreg_sgd").to_str().unwrap(), "--python", "./python"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("./python: the script failed (exit code 3)"), "{}", stderr(&o));
}

#[test]
fn ctrl_c_kills_the_script_and_removes_the_scratch_folder() {
    let dir = tempdir();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let pids = dir.path().join("sleep.pid");
    let python = fake(dir.path(), &format!("sleep 600 &\necho $! > {}.part\nmv {0}.part {0}\nwait", pids.display()));
    let s = seed("s002_ex1_linreg_sgd");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nanhunt"))
        .args(["confirm", s.to_str().unwrap(), "--python", python.to_str().unwrap()])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pids.exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pids.exists(), "the script never started");
    // SAFETY: kill(2) to the test's own child, as a terminal's Ctrl-C would send it.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            // SAFETY: as above, its whole group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            panic!("still running a minute after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    assert_eq!(scratch_left(&tmp), Vec::<String>::new());
    let pid = std::fs::read_to_string(&pids).unwrap();
    let start = Instant::now();
    while !gone(pid.trim()) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone(pid.trim()), "the script's `sleep` outlived Ctrl-C");
}
