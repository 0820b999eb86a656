//! The jobs the status page shows (fleet.md §2): every job this lagerd
//! started, running or recently finished, with the tail of its output.
//!
//! A job appends what its stream or log writer already took from its
//! queue, so the board costs one short mutex per chunk and never blocks a
//! script. Finished jobs stay listed (a few, for a while) so a run that
//! just failed can still be read on the page.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::metrics::JobOutcome;

/// Bytes of output kept per job.
const TAIL_BYTES: usize = 4096;
/// Finished jobs kept on the board, newest first.
const FINISHED_KEPT: usize = 8;
/// A finished job leaves the board after this long.
const FINISHED_TTL: Duration = Duration::from_secs(3600);

/// One job on the board; the `Job` holds it and appends to it.
pub struct Entry {
    id: String,
    pid: u32,
    detached: bool,
    started: String,
    /// Set by `/python/kill`, so the outcome says who stopped the job.
    killed: AtomicBool,
    state: Mutex<EntryState>,
}

#[derive(Default)]
struct EntryState {
    tail: VecDeque<u8>,
    /// (outcome, return code, when) once the job ended.
    finished: Option<(JobOutcome, i32, Instant)>,
}

impl Entry {
    fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the last [`TAIL_BYTES`] of what the job printed (stdout,
    /// stderr and its output channel alike).
    pub fn append(&self, chunks: &[(u8, Vec<u8>)]) {
        if chunks.is_empty() {
            return;
        }
        let mut state = self.lock();
        for (_, data) in chunks {
            let data = &data[data.len().saturating_sub(TAIL_BYTES)..];
            state.tail.extend(data);
        }
        let excess = state.tail.len().saturating_sub(TAIL_BYTES);
        state.tail.drain(..excess);
    }

    pub fn finish(&self, outcome: JobOutcome, code: i32) {
        self.lock().finished = Some((outcome, code, Instant::now()));
    }

    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    fn finished_at(&self) -> Option<Instant> {
        self.lock().finished.map(|(_, _, at)| at)
    }

    fn json(&self) -> Value {
        let state = self.lock();
        let (bytes, _) = state.tail.as_slices();
        let mut tail = bytes.to_vec();
        tail.extend_from_slice(state.tail.as_slices().1);
        // Start at a line boundary when the tail was cut mid-line.
        let text = String::from_utf8_lossy(&tail).into_owned();
        let text = if state.tail.len() >= TAIL_BYTES {
            text.split_once('\n')
                .map_or(text.as_str(), |(_, rest)| rest)
                .to_string()
        } else {
            text
        };
        let (status, outcome, code) = match state.finished {
            None => ("running", None, None),
            Some((outcome, code, _)) => ("finished", Some(outcome.as_str()), Some(code)),
        };
        json!({
            "id": self.id,
            "pid": self.pid,
            "detached": self.detached,
            "started": self.started,
            "status": status,
            "outcome": outcome,
            "returncode": code,
            "tail": text,
        })
    }
}

#[derive(Default)]
pub struct Board {
    entries: Mutex<Vec<Arc<Entry>>>,
}

impl Board {
    /// Lists a job that just started.
    pub fn add(&self, id: &str, pid: u32, detached: bool) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            id: id.to_string(),
            pid,
            detached,
            started: crate::clock::format_timestamp(crate::clock::Clock::now(
                &crate::clock::SystemClock,
            )),
            killed: AtomicBool::new(false),
            state: Mutex::new(EntryState::default()),
        });
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        prune(&mut entries);
        entries.push(entry.clone());
        entry
    }

    /// `/python/kill` of `id` (every job when `None`).
    pub fn mark_killed(&self, id: Option<&str>) {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in entries.iter() {
            if id.is_none_or(|id| id == entry.id) && entry.finished_at().is_none() {
                entry.killed.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Running jobs first (oldest first), then recently finished ones.
    pub fn json(&self) -> Vec<Value> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        prune(&mut entries);
        let (running, finished): (Vec<_>, Vec<_>) = entries
            .iter()
            .partition(|entry| entry.finished_at().is_none());
        running
            .iter()
            .chain(finished.iter().rev())
            .map(|entry| entry.json())
            .collect()
    }
}

/// Drops finished jobs past the count or the age limit.
fn prune(entries: &mut Vec<Arc<Entry>>) {
    entries.retain(|entry| {
        entry
            .finished_at()
            .is_none_or(|at| at.elapsed() < FINISHED_TTL)
    });
    let finished = entries
        .iter()
        .filter(|entry| entry.finished_at().is_some())
        .count();
    let mut excess = finished.saturating_sub(FINISHED_KEPT);
    entries.retain(|entry| {
        if excess > 0 && entry.finished_at().is_some() {
            excess -= 1;
            return false;
        }
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_last_bytes_from_a_line_start() {
        let board = Board::default();
        let entry = board.add("id-1", 42, false);
        let mut text = Vec::new();
        for i in 0..1000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        entry.append(&[(1, text)]);
        let listed = board.json();
        let tail = listed[0]["tail"].as_str().unwrap();
        assert!(tail.starts_with("line "), "{tail:?}");
        assert!(tail.ends_with("line 999\n"));
        assert!(tail.len() <= TAIL_BYTES);
        assert_eq!(listed[0]["status"], "running");
    }

    #[test]
    fn finished_jobs_follow_running_ones_and_are_capped() {
        let board = Board::default();
        for i in 0..12 {
            let entry = board.add(&format!("done-{i}"), i, false);
            entry.finish(JobOutcome::Exit0, 0);
        }
        board.add("live", 99, true);
        board.mark_killed(Some("live"));
        let listed = board.json();
        assert_eq!(listed[0]["id"], "live");
        assert_eq!(listed.len(), 1 + FINISHED_KEPT);
        assert_eq!(listed[1]["id"], "done-11", "newest finished first");
        assert_eq!(listed[1]["outcome"], "exit0");
    }
}
