//! Measures the stack Candle's backward and a graph's drop take per level of graph depth,
//! the figure behind `nanhunt::run::stack::BYTES_PER_LEVEL`.
//!
//! `cargo run -p nanhunt --example stack_probe` builds chains of `n` affine ops on a `Var`
//! (`n` = 10000, 20000, 40000) and, for each, bisects the smallest thread stack on which the
//! chain's backward (or its drop) finishes, running each try in a child process (an overflow
//! aborts it). It prints the stack per level. `stack_probe walk|drop N KIB` is one try.

use std::process::{Command, Stdio};

use candle_core::{Device, Var};

/// Builds a chain of `n` ops and walks it (`walk`) or drops it (`drop`) on a thread of `kib` KiB.
fn one(what: &str, n: usize, kib: usize) {
    let walk = what == "walk";
    let thread = std::thread::Builder::new().stack_size(kib << 10).spawn(move || {
        let v = Var::new(&[1.0f32, 2.0], &Device::Cpu).expect("a variable");
        let mut t = v.as_tensor().clone();
        for _ in 0..n {
            t = t.affine(0.5, 0.1).expect("an affine op");
        }
        if walk {
            let grads = t.sum_all().and_then(|l| l.backward()).expect("a backward");
            // Only the walk is measured here: the chain is left for the process exit to free.
            std::mem::forget(t);
            drop(grads);
        } else {
            drop(t);
        }
    });
    thread.expect("a thread").join().expect("no panic");
}

/// Whether a try on `kib` KiB finishes (in a child process, as an overflow aborts).
fn fits(what: &str, n: usize, kib: usize) -> bool {
    let exe = std::env::current_exe().expect("this program");
    let status = Command::new(exe).args([what, &n.to_string(), &kib.to_string()]).stderr(Stdio::null()).status();
    status.is_ok_and(|s| s.success())
}

/// The smallest stack, in KiB (to 4 KiB), on which the try finishes.
fn smallest(what: &str, n: usize) -> usize {
    let (mut lo, mut hi) = (16, 1 << 20);
    while hi - lo > 4 {
        let mid = (lo + hi) / 2;
        if fits(what, n, mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [what, n, kib] = args.as_slice() {
        one(what, n.parse().expect("N"), kib.parse().expect("KIB"));
        return;
    }
    for what in ["walk", "drop"] {
        for n in [10_000, 20_000, 40_000] {
            let kib = smallest(what, n);
            println!("{what:>4} of {n:>6} levels: {kib:>6} KiB, {:.0} bytes per level", (kib << 10) as f64 / n as f64);
        }
    }
}
