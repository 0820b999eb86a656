//! One console's memory (console.md §2, §3): the last `capacity` bytes
//! captured, addressed by absolute offset, with when they arrived and the
//! events (gone, back) between them. Pure data: the capture thread pushes,
//! readers copy frames out from their own cursor, under the console's mutex.
//!
//! A reader's cursor is a byte offset plus the sequence number of the next
//! event it has not seen, so an event lands between exactly the bytes it
//! happened between, and a reader that fell behind the ring learns how
//! many bytes it missed (a `gap`) instead of blocking the capture.

use std::collections::VecDeque;

use common::console::{encode, encode_header, Kind};
use serde_json::{json, Value};

/// Bytes arriving within this long of the last time entry share its time:
/// a per-read entry would cost 16 bytes per byte at interactive rates.
const TIME_GRANULE_US: u64 = 1_000;
/// Events kept at most; older ones fall out with their bytes anyway.
const EVENTS_MAX: usize = 1024;

/// Where a reader is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub offset: u64,
    /// Sequence number of the next event to deliver.
    pub event: u64,
}

struct Event {
    seq: u64,
    offset: u64,
    time_us: u64,
    body: Value,
}

pub struct Ring {
    buf: Box<[u8]>,
    /// Offset of the next byte to arrive.
    end: u64,
    /// `(offset, time_us)`: bytes from `offset` up to the next entry arrived
    /// at `time_us` (within a granule).
    times: VecDeque<(u64, u64)>,
    times_max: usize,
    events: VecDeque<Event>,
    next_seq: u64,
}

impl Ring {
    /// An empty ring; the buffer's pages are only touched as bytes arrive.
    pub fn new(capacity: usize) -> Ring {
        let capacity = capacity.max(1);
        Ring {
            buf: vec![0u8; capacity].into_boxed_slice(),
            end: 0,
            times: VecDeque::new(),
            // One entry per 16 bytes at most: a trickle of single bytes
            // costs no more memory than the ring itself.
            times_max: (capacity / 16).max(16),
            events: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// Offset of the oldest byte still held.
    pub fn start(&self) -> u64 {
        self.end.saturating_sub(self.buf.len() as u64)
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// A cursor at the live end: only what arrives from now on.
    pub fn live(&self) -> Cursor {
        Cursor {
            offset: self.end,
            event: self.next_seq,
        }
    }

    /// A cursor at `offset` (clamped to the end); events at or after it
    /// are still to come. An offset older than the ring reads as a gap.
    pub fn at(&self, offset: u64) -> Cursor {
        let offset = offset.min(self.end);
        let event = self
            .events
            .iter()
            .find(|e| e.offset >= offset)
            .map_or(self.next_seq, |e| e.seq);
        Cursor { offset, event }
    }

    /// The first offset received at or after `time_us`.
    pub fn offset_since(&self, time_us: u64) -> u64 {
        let index = self.times.partition_point(|&(_, t)| t < time_us);
        match self.times.get(index) {
            Some(&(offset, _)) => offset.max(self.start()),
            None => self.end,
        }
    }

    /// Appends captured bytes received at `time_us`.
    pub fn push(&mut self, bytes: &[u8], time_us: u64) {
        if bytes.is_empty() {
            return;
        }
        let new = match self.times.back() {
            Some(&(_, last)) => time_us.saturating_sub(last) >= TIME_GRANULE_US,
            None => true,
        };
        if new {
            self.times.push_back((self.end, time_us));
        }
        let capacity = self.buf.len();
        // Only the last `capacity` bytes can be kept.
        let skipped = bytes.len().saturating_sub(capacity);
        let kept = &bytes[skipped..];
        let mut at = ((self.end + skipped as u64) % capacity as u64) as usize;
        let mut rest = kept;
        while !rest.is_empty() {
            let n = rest.len().min(capacity - at);
            self.buf[at..at + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            at = (at + n) % capacity;
        }
        self.end += bytes.len() as u64;
        self.trim();
    }

    /// Records an event at the current end.
    pub fn push_event(&mut self, body: Value, time_us: u64) {
        self.events.push_back(Event {
            seq: self.next_seq,
            offset: self.end,
            time_us,
            body,
        });
        self.next_seq += 1;
        self.trim();
    }

    fn trim(&mut self) {
        let start = self.start();
        // Keep the entry that covers `start` itself.
        while self.times.len() > self.times_max
            || self
                .times
                .get(1)
                .is_some_and(|&(offset, _)| offset <= start)
        {
            self.times.pop_front();
        }
        while self.events.len() > EVENTS_MAX
            || self.events.front().is_some_and(|e| e.offset < start)
        {
            self.events.pop_front();
        }
    }

    /// True when `cursor` has something to read (bytes, events or a gap).
    pub fn ready(&self, cursor: &Cursor) -> bool {
        cursor.offset < self.end || cursor.event < self.next_seq
    }

    /// Appends frames from `cursor` on to `out` until about `budget` payload
    /// bytes were written, advancing the cursor. Returns the frame count.
    pub fn read(&self, cursor: &mut Cursor, out: &mut Vec<u8>, budget: usize) -> usize {
        let mut frames = 0;
        let start = self.start();
        if cursor.offset < start {
            let missed = start - cursor.offset;
            let body = json!({"event": "gap", "missed": missed, "text": format!("missed {missed} bytes, older than the box keeps")});
            let time = self.time_of(start);
            encode(out, Kind::Event, start, time, body.to_string().as_bytes());
            frames += 1;
            *cursor = Cursor {
                offset: start,
                event: cursor.event.max(self.at(start).event),
            };
        }
        let mut written = 0;
        while written < budget {
            let next_event = self.events.iter().find(|e| e.seq >= cursor.event);
            if let Some(event) = next_event.filter(|e| e.offset <= cursor.offset) {
                let body = event.body.to_string();
                encode(
                    out,
                    Kind::Event,
                    event.offset,
                    event.time_us,
                    body.as_bytes(),
                );
                cursor.event = event.seq + 1;
                frames += 1;
                continue;
            }
            if cursor.event < self.next_seq && next_event.is_none() {
                // Events trimmed before this reader saw them.
                cursor.event = self.next_seq;
            }
            let index = self.times.partition_point(|&(o, _)| o <= cursor.offset);
            let time = self.time_of(cursor.offset);
            let mut stop = self.end.min(cursor.offset + (budget - written) as u64);
            if let Some(&(boundary, _)) = self.times.get(index) {
                stop = stop.min(boundary);
            }
            if let Some(event) = next_event {
                stop = stop.min(event.offset);
            }
            if stop <= cursor.offset {
                break;
            }
            let length = (stop - cursor.offset) as usize;
            encode_header(out, Kind::Data, cursor.offset, time, length);
            self.copy(cursor.offset, length, out);
            cursor.offset = stop;
            written += length;
            frames += 1;
        }
        frames
    }

    /// The receive time of the byte at `offset` (0 before any byte).
    fn time_of(&self, offset: u64) -> u64 {
        let index = self.times.partition_point(|&(o, _)| o <= offset);
        index
            .checked_sub(1)
            .and_then(|i| self.times.get(i))
            .or(self.times.front())
            .map_or(0, |&(_, t)| t)
    }

    fn copy(&self, offset: u64, length: usize, out: &mut Vec<u8>) {
        let capacity = self.buf.len();
        let at = (offset % capacity as u64) as usize;
        let first = length.min(capacity - at);
        out.extend_from_slice(&self.buf[at..at + first]);
        out.extend_from_slice(&self.buf[..length - first]);
    }

    /// The last `n` bytes held (fewer when the ring holds fewer).
    pub fn last_bytes(&self, n: usize) -> Vec<u8> {
        let from = self.end.saturating_sub(n as u64).max(self.start());
        let length = (self.end - from) as usize;
        let mut out = Vec::with_capacity(length);
        self.copy(from, length, &mut out);
        out
    }

    /// The last `bytes` bytes held, as a cursor.
    pub fn tail(&self, bytes: u64) -> Cursor {
        self.at(self.end.saturating_sub(bytes).max(self.start()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::console::Decoder;

    /// Decodes frames into `(kind, offset, time, payload-or-event-json)`.
    fn frames(bytes: &[u8]) -> Vec<(char, u64, u64, String)> {
        let mut decoder = Decoder::new();
        decoder.feed(bytes);
        let mut out = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            let kind = match frame.kind {
                Kind::Data => 'd',
                Kind::Event => 'e',
            };
            out.push((
                kind,
                frame.offset,
                frame.time_us,
                String::from_utf8_lossy(frame.payload).into_owned(),
            ));
        }
        out
    }

    fn read_all(ring: &Ring, cursor: &mut Cursor) -> Vec<(char, u64, u64, String)> {
        let mut out = Vec::new();
        while ring.ready(cursor) {
            ring.read(cursor, &mut out, 4096);
        }
        frames(&out)
    }

    #[test]
    fn bytes_and_events_come_out_in_order_with_their_times() {
        let mut ring = Ring::new(64);
        let mut early = ring.live();
        ring.push(b"boot ", 1_000);
        ring.push(b"ok\n", 1_100); // same granule: same time entry
        ring.push_event(json!({"event": "gone"}), 5_000);
        ring.push_event(json!({"event": "back", "path": "/dev/ttyUSB1"}), 9_000);
        ring.push(b"login:", 10_000);
        let seen = read_all(&ring, &mut early);
        assert_eq!(
            seen,
            [
                ('d', 0, 1_000, "boot ok\n".into()),
                ('e', 8, 5_000, r#"{"event":"gone"}"#.into()),
                (
                    'e',
                    8,
                    9_000,
                    r#"{"event":"back","path":"/dev/ttyUSB1"}"#.into()
                ),
                ('d', 8, 10_000, "login:".into()),
            ]
        );
        assert!(!ring.ready(&early));
        // A reader from offset 8 sees both events; from the end, nothing.
        assert_eq!(read_all(&ring, &mut ring.at(8)).len(), 3);
        assert!(read_all(&ring, &mut ring.live()).is_empty());
        // since: the first byte received at or after the time.
        assert_eq!(ring.offset_since(0), 0);
        assert_eq!(ring.offset_since(6_000), 8);
        assert_eq!(ring.offset_since(20_000), 14);
    }

    #[test]
    fn a_reader_left_behind_gets_a_gap_and_capture_goes_on() {
        let mut ring = Ring::new(16);
        let mut slow = ring.live();
        for i in 0..10u8 {
            ring.push(&[b'a' + i; 4], u64::from(i) * 10_000);
        }
        assert_eq!((ring.start(), ring.end()), (24, 40));
        let seen = read_all(&ring, &mut slow);
        assert_eq!(
            seen[0],
            (
                'e',
                24,
                60_000,
                r#"{"event":"gap","missed":24,"text":"missed 24 bytes, older than the box keeps"}"#
                    .into()
            )
        );
        let text: String = seen[1..].iter().map(|f| f.3.clone()).collect();
        assert_eq!(text, "ggggHHHHiiiijjjj".to_ascii_lowercase());
        assert_eq!(slow.offset, 40);
        // A push larger than the ring keeps its last bytes and every offset.
        ring.push(b"0123456789ABCDEFGHIJ", 200_000);
        assert_eq!((ring.start(), ring.end()), (44, 60));
        let mut cursor = ring.at(0);
        let seen = read_all(&ring, &mut cursor);
        assert!(
            seen[0].3.starts_with(r#"{"event":"gap","missed":44,"#),
            "{}",
            seen[0].3
        );
        assert_eq!(seen[1], ('d', 44, 200_000, "456789ABCDEFGHIJ".into()));
    }

    #[test]
    fn wrapping_frames_and_budgets() {
        let mut ring = Ring::new(8);
        ring.push(b"abcdef", 1_000);
        let mut cursor = ring.at(4);
        ring.push(b"ghij", 1_000);
        let mut out = Vec::new();
        ring.read(&mut cursor, &mut out, 3);
        assert_eq!(frames(&out), [('d', 4, 1_000, "efg".into())]);
        out.clear();
        ring.read(&mut cursor, &mut out, 100);
        assert_eq!(frames(&out), [('d', 7, 1_000, "hij".into())]);
        assert_eq!(ring.tail(3), ring.at(7));
        assert_eq!(ring.tail(100).offset, ring.start());
    }

    #[test]
    fn time_index_stays_bounded() {
        let mut ring = Ring::new(1024);
        for i in 0..100_000u64 {
            ring.push(b"x", i * TIME_GRANULE_US);
        }
        assert!(ring.times.len() <= 64, "{}", ring.times.len());
        assert_eq!(ring.end(), 100_000);
    }
}
