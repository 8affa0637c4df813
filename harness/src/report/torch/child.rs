//! Running the exported script: in its own process group, under a time limit,
//! with its output kept in bounded buffers.
//!
//! The interpreter is the user's, so nothing it does may hang or exhaust
//! nanhunt: on the time limit (or Ctrl-C) its whole process group is killed,
//! a script's own children with it; once it exits, whatever it left running
//! in its group is killed too (it would hold the output pipes open); and of
//! each stream only the first and last [`KEEP`] bytes are kept, however much
//! it prints (the result line is the script's last).

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Bytes kept of each end of each stream (so at most twice this per stream).
pub(crate) const KEEP: usize = 64 * 1024;

/// The start and end of a stream, and how much of its middle was not kept.
#[derive(Debug, Default)]
pub(crate) struct Capped {
    head: Vec<u8>,
    tail: Vec<u8>,
    /// Bytes read but kept in neither end.
    pub(crate) dropped: u64,
}

impl Capped {
    fn push(&mut self, mut bytes: &[u8]) {
        let room = KEEP.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..room]);
        bytes = &bytes[room..];
        self.tail.extend_from_slice(bytes);
        // Trim in batches, so each byte is moved a bounded number of times.
        if self.tail.len() >= 2 * KEEP {
            let cut = self.tail.len() - KEEP;
            self.dropped += cut as u64;
            self.tail.drain(..cut);
        }
    }

    /// The kept text, with a marker where bytes were not kept.
    pub(crate) fn text(&self) -> String {
        let mut t = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            t += &format!("\n[... {} bytes not kept ...]\n", self.dropped);
        }
        t + &String::from_utf8_lossy(&self.tail)
    }

    /// Reads `r` to its end (or a read error), keeping both ends.
    fn drain(mut r: impl Read) -> Capped {
        let mut c = Capped::default();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            c.push(&buf[..n]);
        }
        c
    }
}

/// How a finished script ended, and the kept ends of its output.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Standard output.
    pub(crate) stdout: Capped,
    /// Standard error.
    pub(crate) stderr: Capped,
}

/// An exit status in words: "exit code 1", "killed by signal 9".
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "ended without an exit code".into(),
    }
}

/// A duration as the CLI takes it: whole seconds as `90s`, else milliseconds.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Sends SIGKILL to process group `pgid` (gone already is fine).
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
    // SAFETY: kill(2) has no memory effects; `-pgid` names the group the child leads, which
    // stays reserved until the child is reaped (the callers reap it after this).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Whether `child` has exited, without reaping it (so its pid, and its group's, stays reserved).
fn exited(child: &Child) -> bool {
    let pid: libc::id_t = child.id();
    // SAFETY: waitid(2) writes only into `info`, a zeroed siginfo_t we own.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    // SAFETY: after waitid, si_pid is the field it fills (0 while the child runs).
    r != 0 || unsafe { info.si_pid() } != 0
}

/// Drains a pipe on a thread; the receiver gets its kept ends once it closes.
fn reader(pipe: impl Read + Send + 'static) -> Receiver<Capped> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(Capped::drain(pipe)));
    rx
}

/// Runs `python repro.py` in `work`; kills its process group after `timeout` or once `stop`
/// is set. Errors say why, for [`crate::Error::Torch`].
pub(crate) fn run(python: &Path, work: &Path, timeout: Duration, stop: Option<&AtomicBool>) -> std::result::Result<Finished, String> {
    let mut cmd = Command::new(python);
    cmd.arg("repro.py").current_dir(work).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run it: {e} (pass --python PATH, an interpreter that has torch)"))?;
    let pgid = child.id();
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    let why = loop {
        if exited(&child) {
            break None;
        }
        if start.elapsed() >= timeout {
            break Some(format!("repro.py did not finish within {}: its process group was killed (a longer run needs a larger --timeout)", seconds(timeout)));
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break Some("interrupted: the script's process group was killed".to_string());
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    };
    // On a timeout the script itself; after an exit, anything it left running on its pipes.
    kill_group(pgid);
    let status = child.wait().map_err(|e| format!("cannot wait for it: {e}"))?;
    // A process that left the group (setsid) may still hold a pipe: wait for it only so long.
    let join = |r: Option<Receiver<Capped>>| r.and_then(|r| r.recv_timeout(Duration::from_secs(5)).ok()).unwrap_or_default();
    let (stdout, stderr) = (join(out), join(err));
    match why {
        Some(why) => Err(why),
        None => Ok(Finished { status, stdout, stderr }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_keeps_its_ends_and_counts_the_rest() {
        let mut c = Capped::default();
        let n = 10 * KEEP + 7;
        for i in 0..n / 1000 + 1 {
            let chunk: Vec<u8> = (0..1000).map(|j| b'a' + ((i * 1000 + j) % 26) as u8).collect();
            c.push(&chunk[..(n - (i * 1000).min(n)).min(1000)]);
        }
        assert_eq!(c.head.len(), KEEP);
        assert!(c.tail.len() >= KEEP && c.tail.len() < 2 * KEEP);
        assert_eq!(c.head.len() as u64 + c.tail.len() as u64 + c.dropped, n as u64);
        // The last byte is stream byte n - 1: letter (n - 1) mod 26.
        assert_eq!(*c.tail.last().unwrap(), b'a' + ((n - 1) % 26) as u8);
        assert!(c.text().contains(&format!("[... {} bytes not kept ...]", c.dropped)));
        let mut small = Capped::default();
        small.push(b"NANHUNT {}\n");
        assert_eq!((small.text().as_str(), small.dropped), ("NANHUNT {}\n", 0));
    }

    #[test]
    fn statuses_and_durations_read_as_words() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit code 3");
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by signal 9");
        assert_eq!((seconds(Duration::from_secs(2)).as_str(), seconds(Duration::from_millis(1500)).as_str()), ("2s", "1500ms"));
    }
}
