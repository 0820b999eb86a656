//! One reader of a console (console.md §3): `GET /uart/stream` (and the
//! writer's `POST`), framed per `common::console`. It starts where the
//! request asked (now, an offset, some seconds back, the last bytes),
//! copies frames out of the ring in batches and writes them on its own
//! thread, so a slow or silent reader only ever delays itself: when it
//! falls behind the ring it gets a `gap` event and carries on.

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::console::{encode, Kind};
use serde_json::{json, Value};

use super::ring::Cursor;
use super::{now_us, Claim, Console, ConsoleError};

/// Payload bytes per write to the client.
const BATCH_BYTES: usize = 64 * 1024;
/// How long a reader lets bytes gather after sending a small batch.
const GATHER: Duration = Duration::from_micros(200);
/// How long a reader waits for news before checking on its client.
const WAIT: Duration = Duration::from_millis(250);
/// An idle stream says it is alive this often, so a client can tell a
/// quiet console from a dead box.
const ALIVE_EVERY: Duration = Duration::from_secs(10);
/// ... and the writer's stream this often: the transport learns that a
/// client vanished only when a write to it fails or is reset, and the
/// writer's claim must not outlive its client by more than a moment.
const WRITER_ALIVE_EVERY: Duration = Duration::from_secs(1);

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Position {
    /// From now on.
    Live,
    /// From this offset (0: everything the ring still holds).
    From(u64),
    /// From the first byte received this long ago or later.
    Since(Duration),
    /// The last this many bytes.
    Tail(u64),
}

impl Position {
    /// From the query's `from`, `since` (seconds) or `tail` (bytes); at
    /// most one.
    pub fn from_query(
        from: Option<&str>,
        since: Option<&str>,
        tail: Option<&str>,
    ) -> Result<Position, ConsoleError> {
        let bad = |what: &str, value: &str| {
            ConsoleError::BadRequest(format!(
                "{what} must be a non-negative number, not {value:?}"
            ))
        };
        match (from, since, tail) {
            (None, None, None) => Ok(Position::Live),
            (Some(from), None, None) => from
                .trim()
                .parse()
                .map(Position::From)
                .map_err(|_| bad("from", from)),
            (None, Some(since), None) => match since.trim().parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs >= 0.0 => {
                    Ok(Position::Since(Duration::from_secs_f64(secs.min(1e9))))
                }
                _ => Err(bad("since", since)),
            },
            (None, None, Some(tail)) => tail
                .trim()
                .parse()
                .map(Position::Tail)
                .map_err(|_| bad("tail", tail)),
            _ => Err(ConsoleError::BadRequest(
                "give at most one of from, since and tail".into(),
            )),
        }
    }
}

/// Counts a reader while it lives.
struct Counted(Arc<Console>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Reader {
    console: Arc<Console>,
    cursor: Cursor,
    claim: Option<Claim>,
    /// False for a writer that only wants events (a script's claim).
    data: bool,
    _counted: Counted,
}

impl Console {
    /// A reader from `position`; with a claim it is also the writer's
    /// stream, and the claim lives exactly as long as it does.
    pub fn reader(
        self: &Arc<Self>,
        position: Position,
        claim: Option<Claim>,
        data: bool,
    ) -> Reader {
        self.readers.fetch_add(1, Ordering::Relaxed);
        let cursor = {
            let inner = self.inner();
            let ring = &inner.ring;
            match position {
                Position::Live => ring.live(),
                Position::From(offset) => ring.at(offset),
                Position::Since(ago) => {
                    let ago_us = ago.as_micros().min(u128::from(u64::MAX)) as u64;
                    ring.at(ring.offset_since(now_us().saturating_sub(ago_us)))
                }
                Position::Tail(bytes) => ring.tail(bytes),
            }
        };
        Reader {
            console: self.clone(),
            cursor,
            claim,
            data,
            _counted: Counted(self.clone()),
        }
    }
}

impl Reader {
    /// The stream's first frame: where the console is and where this
    /// reader starts, and for the writer its session.
    fn hello(&self) -> Value {
        let mut status = self.console.status();
        status["event"] = json!("status");
        status["from"] = json!(self.cursor.offset);
        if status["state"] != "open" {
            let reason = status["reason"].as_str().unwrap_or("not open").to_string();
            status["text"] = json!(format!(
                "not connected ({reason}); it shows up here when it is"
            ));
        }
        if let Some(claim) = &self.claim {
            status["session"] = json!(claim.session());
        }
        status
    }

    /// Streams until the client leaves (`client_gone`), a write fails or
    /// the console is stopped (its net deleted, lagerd stopping).
    pub fn run(mut self, out: &mut dyn Write, client_gone: &dyn Fn() -> bool) -> io::Result<()> {
        let mut batch = Vec::new();
        event(&mut batch, self.cursor.offset, &self.hello());
        out.write_all(&batch)?;
        let mut last_sent = Instant::now();
        let mut last_checked = Instant::now();
        loop {
            batch.clear();
            let stopped = self.next_batch(&mut batch);
            self.check_claim(&mut batch);
            if stopped {
                event(&mut batch, self.cursor.offset, &json!({"event": "closed"}));
                out.write_all(&batch)?;
                return Ok(());
            }
            if !batch.is_empty() {
                out.write_all(&batch)?;
                last_sent = Instant::now();
                // A part batch, and more has come meanwhile: let it gather
                // before the next one, so a fast console costs a few large
                // writes per reader instead of one per read of the port (at
                // pty speed 8 readers fell behind a 1 MiB ring on a loaded
                // machine). A keystroke's echo, alone, still goes at once.
                if batch.len() < BATCH_BYTES / 4 && self.pending() {
                    std::thread::sleep(GATHER);
                }
            }
            // A client that left is noticed while idle and, when the
            // console is busy, at least every WAIT; a write to a closed
            // client is reset, which is what makes it "gone".
            if batch.is_empty() || last_checked.elapsed() >= WAIT {
                if client_gone() {
                    return Ok(());
                }
                last_checked = Instant::now();
            }
            let alive_every = if self.claim.is_some() {
                WRITER_ALIVE_EVERY
            } else {
                ALIVE_EVERY
            };
            if last_sent.elapsed() >= alive_every {
                batch.clear();
                event(&mut batch, self.cursor.offset, &json!({"event": "alive"}));
                out.write_all(&batch)?;
                last_sent = Instant::now();
            }
        }
    }

    /// Whether bytes or events are waiting for this reader.
    fn pending(&self) -> bool {
        self.console.inner().ring.ready(&self.cursor)
    }

    /// Waits up to `WAIT` for news, then copies frames into `batch`.
    /// True once the console is stopped.
    fn next_batch(&mut self, batch: &mut Vec<u8>) -> bool {
        let console = &self.console;
        let mut inner = console.inner();
        if !inner.ring.ready(&self.cursor) && !console.stopping() {
            inner = console
                .changed
                .wait_timeout(inner, WAIT)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        if self.data {
            inner.ring.read(&mut self.cursor, batch, BATCH_BYTES);
        } else {
            // A writer's claim without the bytes: only its own events.
            self.cursor = inner.ring.live();
        }
        console.stopping()
    }

    /// Tells the writer once when someone took the console over; from then
    /// on this stream only reads.
    fn check_claim(&mut self, batch: &mut Vec<u8>) {
        let Some(claim) = &self.claim else {
            return;
        };
        if let Some(now) = self.console.taken_from(claim.session()) {
            event(
                batch,
                self.cursor.offset,
                &json!({
                    "event": "writer",
                    "state": "taken",
                    "by": now,
                    "text": format!(
                        "taken over by {}; you only watch now",
                        common::holder::format_lock_user(now.as_deref().unwrap_or("someone"))
                    ),
                }),
            );
            self.claim = None;
        }
    }
}

fn event(out: &mut Vec<u8>, offset: u64, body: &Value) {
    encode(
        out,
        Kind::Event,
        offset,
        now_us(),
        body.to_string().as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_from_the_query() {
        assert_eq!(
            Position::from_query(None, None, None).unwrap(),
            Position::Live
        );
        assert_eq!(
            Position::from_query(Some("0"), None, None).unwrap(),
            Position::From(0)
        );
        assert_eq!(
            Position::from_query(None, Some("1.5"), None).unwrap(),
            Position::Since(Duration::from_millis(1500))
        );
        assert_eq!(
            Position::from_query(None, None, Some("100")).unwrap(),
            Position::Tail(100)
        );
        for (from, since, tail) in [
            (Some("-1"), None, None),
            (None, Some("nan"), None),
            (None, Some("-3"), None),
            (None, None, Some("x")),
            (Some("1"), None, Some("2")),
        ] {
            assert!(Position::from_query(from, since, tail).is_err());
        }
    }
}
