//! The candidates a hunt could not run, so a person can read why: each error
//! message once ([`ErrorEntry`]), with how many candidates met it and one
//! candidate's mutations, kept in the campaign state and written to
//! `errors.jsonl` beside `findings.jsonl`. Messages that differ only in their
//! numbers (a refused size, a value out of range) count as one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::mutation::Mutation;
use crate::error::{Error, Result};

/// Most distinct messages kept; later new ones are counted in the campaign's error total only.
pub const MAX_MESSAGES: usize = 100;

/// One error message and the candidates that met it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// The message, as the first candidate that met it got it.
    pub message: String,
    /// Candidates that met it (or the same message with other numbers).
    pub count: u64,
    /// The first such candidate's mutations.
    pub mutations: Vec<Mutation>,
}

/// The message with every run of digits (a number's parts) as `#`: the key errors are counted by.
fn shape(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('#');
            }
            digits = true;
        } else {
            digits = false;
            out.push(c);
        }
    }
    out
}

/// Counts an error met by `candidate` in `log`.
pub fn record(log: &mut Vec<ErrorEntry>, message: &str, candidate: &[Mutation]) {
    let key = shape(message);
    if let Some(e) = log.iter_mut().find(|e| shape(&e.message) == key) {
        e.count += 1;
    } else if log.len() < MAX_MESSAGES {
        log.push(ErrorEntry { message: message.to_string(), count: 1, mutations: candidate.to_vec() });
    }
}

/// The log with entries of the same message (numbers aside) summed, most met first.
pub fn merge_errors(all: impl IntoIterator<Item = ErrorEntry>) -> Vec<ErrorEntry> {
    let mut out: Vec<ErrorEntry> = Vec::new();
    for e in all {
        match out.iter_mut().find(|o| shape(&o.message) == shape(&e.message)) {
            Some(o) => o.count += e.count,
            None => out.push(e),
        }
    }
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.message.cmp(&b.message)));
    out
}

/// Writes the log as JSON lines (most met first), atomically.
pub fn write_errors(path: &Path, log: &[ErrorEntry]) -> Result<()> {
    crate::atomic::write_lines(path, &merge_errors(log.iter().cloned()), "errors")
}

/// Reads an `errors.jsonl`; a bad line is named by its line number.
pub fn read_errors(path: &Path) -> Result<Vec<ErrorEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::Parse { path: path.display().to_string(), line: i + 1, col: e.column(), message: format!("not a nanhunt error line: {e}") }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Knob;

    #[test]
    fn messages_differing_only_in_numbers_count_once_with_their_first_candidate() {
        let mut log = Vec::new();
        let (a, b) = ([Mutation::new(Knob::BatchSize, 9u32)], [Mutation::new(Knob::BatchSize, 12u32)]);
        record(&mut log, "invalid `train.batch_size`: 9 is more than the 4 training rows", &a);
        record(&mut log, "invalid `train.batch_size`: 12 is more than the 4 training rows", &b);
        record(&mut log, "refused: 3.2 GiB is over the limit", &b);
        record(&mut log, "invalid `train.batch_size`: 10 is more than the 4 training rows", &b);
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].count, log[0].mutations.as_slice()), (3, &a[..]));
        assert!(log[0].message.contains("9 is more"), "the first message is kept: {}", log[0].message);
        assert_eq!(log[1].count, 1);
        // A different word is a different message.
        record(&mut log, "invalid `train.epochs`: 9 is more than the 4 training rows", &a);
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn the_log_is_bounded_and_round_trips_sorted_by_count() {
        let mut log = Vec::new();
        for i in 0..MAX_MESSAGES + 5 {
            record(&mut log, &format!("message {}", "x".repeat(i)), &[]);
        }
        assert_eq!(log.len(), MAX_MESSAGES);
        record(&mut log, "message x", &[]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("errors.jsonl");
        write_errors(&p, &log).unwrap();
        let back = read_errors(&p).unwrap();
        assert_eq!(back.len(), MAX_MESSAGES);
        assert_eq!((back[0].message.as_str(), back[0].count), ("message x", 2));
        // Two shards' logs merge by message, counts summed.
        let merged = merge_errors(back.iter().cloned().chain(back.iter().take(1).cloned()));
        assert_eq!((merged.len(), merged[0].count), (MAX_MESSAGES, 4));
    }
}
