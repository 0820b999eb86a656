//! The serial console stream (console.md §3): the frames `GET|POST
//! /uart/stream` sends and every reader (the CLI, the on-box Python
//! package, tests) decodes.
//!
//! A frame is a header line `<kind> <offset> <time_us> <len>\n` followed by
//! exactly `len` payload bytes, so console bytes pass untouched whatever
//! they are (NULs, newlines, invalid UTF-8). `kind` is `d` for console
//! bytes (the payload) or `e` for an event (the payload is a JSON object
//! with an `"event"` key: `status`, `gone`, `back`, `gap`, `writer`,
//! `alive`, `closed`; readers skip events they do not know). `offset`
//! counts the net's bytes since lagerd started capturing it: a data frame's
//! first byte, or for an event the position between bytes where it
//! happened. `time_us` is the receive time in microseconds since the Unix
//! epoch.

/// Response header carrying the frame format's version.
pub const STREAM_VERSION_HEADER: &str = "Lager-Uart-Version";
pub const STREAM_VERSION: &str = "1";
pub const STREAM_CONTENT_TYPE: &str = "application/x-lager-uart";

/// Largest payload a decoder accepts; lagerd sends at most 64 KiB.
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// A header line is at most this long (three u64 and a kind).
const MAX_HEADER: usize = 80;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data,
    Event,
}

/// Appends one frame to `out`.
pub fn encode(out: &mut Vec<u8>, kind: Kind, offset: u64, time_us: u64, payload: &[u8]) {
    encode_header(out, kind, offset, time_us, payload.len());
    out.extend_from_slice(payload);
}

/// Appends the header of a frame whose `len` payload bytes the caller
/// appends next (lagerd copies them straight out of its ring).
pub fn encode_header(out: &mut Vec<u8>, kind: Kind, offset: u64, time_us: u64, len: usize) {
    let tag = match kind {
        Kind::Data => 'd',
        Kind::Event => 'e',
    };
    // Written by hand: `write!` would pull fmt machinery into a hot loop.
    out.push(tag as u8);
    for number in [offset, time_us, len as u64] {
        out.push(b' ');
        push_decimal(out, number);
    }
    out.push(b'\n');
}

fn push_decimal(out: &mut Vec<u8>, mut number: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// One decoded frame, borrowing its payload from the decoder.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub offset: u64,
    pub time_us: u64,
    pub payload: &'a [u8],
}

/// Why a byte stream is not frames.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    BadHeader(String),
    TooLarge(u64),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadHeader(text) => write!(f, "malformed console frame header {text:?}"),
            DecodeError::TooLarge(len) => write!(
                f,
                "console frame of {len} bytes is larger than the {MAX_PAYLOAD} allowed"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Incremental decoder: `feed` bytes as they arrive, then take frames with
/// `next` until it returns `Ok(None)`.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames.
    consumed: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The next whole frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, DecodeError> {
        let rest = &self.buf[self.consumed..];
        let Some(newline) = rest.iter().take(MAX_HEADER + 1).position(|b| *b == b'\n') else {
            if rest.len() > MAX_HEADER {
                return Err(bad_header(&rest[..MAX_HEADER]));
            }
            return Ok(None);
        };
        let (kind, offset, time_us, len) = parse_header(&rest[..newline])?;
        if len > MAX_PAYLOAD as u64 {
            return Err(DecodeError::TooLarge(len));
        }
        let start = newline + 1;
        let end = start + len as usize;
        if rest.len() < end {
            return Ok(None);
        }
        let at = self.consumed;
        self.consumed += end;
        Ok(Some(Frame {
            kind,
            offset,
            time_us,
            payload: &self.buf[at + start..at + end],
        }))
    }
}

fn bad_header(bytes: &[u8]) -> DecodeError {
    DecodeError::BadHeader(String::from_utf8_lossy(bytes).into_owned())
}

fn parse_header(line: &[u8]) -> Result<(Kind, u64, u64, u64), DecodeError> {
    let text = std::str::from_utf8(line).map_err(|_| bad_header(line))?;
    let mut parts = text.split(' ');
    let kind = match parts.next() {
        Some("d") => Kind::Data,
        Some("e") => Kind::Event,
        _ => return Err(bad_header(line)),
    };
    let mut number = || -> Result<u64, DecodeError> {
        let part = parts.next().ok_or_else(|| bad_header(line))?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_header(line));
        }
        part.parse().map_err(|_| bad_header(line))
    };
    let (offset, time_us, len) = (number()?, number()?, number()?);
    if parts.next().is_some() {
        return Err(bad_header(line));
    }
    Ok((kind, offset, time_us, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whatever_the_bytes() {
        let mut wire = Vec::new();
        encode(
            &mut wire,
            Kind::Data,
            0,
            1_700_000_000_000_000,
            b"boot\n\0\xff\r\n",
        );
        encode(
            &mut wire,
            Kind::Event,
            10,
            1_700_000_000_000_001,
            br#"{"event":"gone"}"#,
        );
        encode(&mut wire, Kind::Data, 10, 7, b"");
        assert!(wire.starts_with(b"d 0 1700000000000000 9\nboot\n\0\xff\r\ne 10 "));
        // Fed one byte at a time, as a slow socket would deliver it.
        let mut decoder = Decoder::new();
        let mut seen = Vec::new();
        for byte in &wire {
            decoder.feed(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().unwrap() {
                seen.push((
                    frame.kind,
                    frame.offset,
                    frame.time_us,
                    frame.payload.to_vec(),
                ));
            }
        }
        assert_eq!(
            seen,
            [
                (
                    Kind::Data,
                    0,
                    1_700_000_000_000_000,
                    b"boot\n\0\xff\r\n".to_vec()
                ),
                (
                    Kind::Event,
                    10,
                    1_700_000_000_000_001,
                    br#"{"event":"gone"}"#.to_vec()
                ),
                (Kind::Data, 10, 7, Vec::new()),
            ]
        );
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        for bad in [
            &b"x 1 2 3\n"[..],
            b"d 1 2\n",
            b"d 1 2 3 4\n",
            b"d -1 2 3\n",
            b"d 1  2 3\n",
            b"d 99999999999999999999999 2 3\n",
            b"d \xff 2 3\n",
        ] {
            let mut decoder = Decoder::new();
            decoder.feed(bad);
            assert!(
                matches!(decoder.next_frame(), Err(DecodeError::BadHeader(_))),
                "{bad:?}"
            );
        }
        let mut decoder = Decoder::new();
        decoder.feed(&[b'd'; 200]);
        assert!(
            decoder.next_frame().is_err(),
            "an endless header is refused"
        );
        let mut decoder = Decoder::new();
        decoder.feed(b"d 0 0 99999999\n");
        assert_eq!(decoder.next_frame(), Err(DecodeError::TooLarge(99_999_999)));
    }
}
