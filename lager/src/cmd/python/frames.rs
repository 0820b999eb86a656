//! The framed output stream of a run (runner.md §3.1): an incremental
//! parser fed with whatever body bytes arrived, handing stdout/stderr
//! payloads to a [`Sink`] as borrowed slices (no per-byte work, no copies
//! on the hot path) and decoding output-channel objects.
//!
//! Frames: `<fileno> <len> <payload>`; fileno `1` stdout, `2` stderr, `3`
//! output channel (itself framed `<encoder> <len> <payload>`), `0`
//! keepalive (`0 0 `), `-` the exit marker whose payload is the code.
//! Both layers run one state machine, `Framer`, with their own tags,
//! limits and words for errors.

use std::io;

/// Longest length field accepted (`u64::MAX` has 20 digits).
const MAX_LEN_DIGITS: u8 = 20;
/// Longest exit-marker payload kept (a code is a few digits).
const MAX_EXIT_PAYLOAD: u64 = 64;
/// Largest output-channel object buffered for decoding.
const MAX_CHANNEL_OBJECT: u64 = 64 * 1024 * 1024;

/// Where frame payloads go.
pub trait Sink {
    fn stdout(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn stderr(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// One decoded output-channel object, as the line to print.
    fn channel(&mut self, text: &str) -> io::Result<()>;
}

/// Why parsing stopped without an exit marker.
#[derive(Debug)]
pub enum FeedError {
    /// The stream broke the frame grammar; what was wrong.
    Protocol(String),
    /// The sink failed (e.g. stdout is a closed pipe).
    Sink(io::Error),
}

/// Where a reader is in the one frame grammar of both layers,
/// `<tag> <len> <payload>`: the outer stream's tag is the fileno, the
/// output channel's the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a tag character.
    Tag,
    /// Expecting the space after the tag.
    Space(u8),
    /// Reading length digits up to a space.
    Len { tag: u8, len: u64, digits: u8 },
    /// `remaining` payload bytes of a frame of `tag` to go.
    Payload { tag: u8, remaining: u64 },
}

/// What the grammar found next.
#[derive(Debug, PartialEq, Eq)]
enum Event<'a> {
    /// A frame's head was read: its tag and payload length.
    Head { tag: u8, len: u64 },
    /// Part of the current frame's payload, in order; `end` on its last
    /// part (an empty frame has one, empty).
    Payload { tag: u8, bytes: &'a [u8], end: bool },
}

/// How a byte broke the grammar; each layer words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    Tag(u8),
    Space(u8),
    Length(u8),
    Overflow,
}

/// The frame grammar as a state machine over pieces of bytes: both
/// layers run this one, each with its own tags.
#[derive(Debug)]
struct Framer {
    state: State,
    /// Whether `-` starts a frame (the exit marker, outer layer only);
    /// digits always do.
    dash: bool,
}

impl Framer {
    fn new(dash: bool) -> Framer {
        Framer {
            state: State::Tag,
            dash,
        }
    }

    /// The next event from `data[*at..]`, advancing `at`; `None` when the
    /// piece is used up. Payload bytes come as one slice per call, so the
    /// hot path (1 KiB frames) is one call for the head, one for the bytes.
    #[inline]
    fn next<'a>(&mut self, data: &'a [u8], at: &mut usize) -> Result<Option<Event<'a>>, Broken> {
        let mut i = *at;
        let mut state = self.state;
        let found = loop {
            if let State::Payload { tag, remaining } = state {
                let take = remaining.min((data.len() - i) as u64) as usize;
                if take == 0 && remaining > 0 {
                    break Ok(None);
                }
                let bytes = &data[i..i + take];
                i += take;
                let remaining = remaining - take as u64;
                state = if remaining == 0 {
                    State::Tag
                } else {
                    State::Payload { tag, remaining }
                };
                let end = remaining == 0;
                break Ok(Some(Event::Payload { tag, bytes, end }));
            }
            let Some(&b) = data.get(i) else {
                break Ok(None);
            };
            i += 1;
            state = match state {
                State::Tag if b.is_ascii_digit() || (self.dash && b == b'-') => State::Space(b),
                State::Tag => break Err(Broken::Tag(b)),
                State::Space(tag) if b == b' ' => State::Len {
                    tag,
                    len: 0,
                    digits: 0,
                },
                State::Space(tag) => break Err(Broken::Space(tag)),
                State::Len { tag, len, digits } if b == b' ' && digits > 0 => {
                    state = State::Payload {
                        tag,
                        remaining: len,
                    };
                    break Ok(Some(Event::Head { tag, len }));
                }
                State::Len { tag, len, digits }
                    if b.is_ascii_digit() && digits < MAX_LEN_DIGITS =>
                {
                    let Some(len) = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(u64::from(b - b'0')))
                    else {
                        break Err(Broken::Overflow);
                    };
                    State::Len {
                        tag,
                        len,
                        digits: digits + 1,
                    }
                }
                State::Len { tag, .. } => break Err(Broken::Length(tag)),
                // Handled above, before a byte is taken.
                State::Payload { .. } => state,
            };
        };
        self.state = state;
        *at = i;
        found
    }
}

/// The exit marker's raw return code: a non-integer payload is −1
/// (runner.md §5.5).
pub fn parse_exit_code(payload: &[u8]) -> i64 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(-1)
}

/// Incremental parser of the outer frame stream.
#[derive(Debug)]
pub struct FrameParser {
    framer: Framer,
    exit_payload: Vec<u8>,
    channel: ChannelParser,
    /// The exit marker was complete; nothing more is read.
    done: bool,
}

impl Default for FrameParser {
    fn default() -> Self {
        FrameParser::new()
    }
}

impl FrameParser {
    pub fn new() -> FrameParser {
        FrameParser {
            framer: Framer::new(true),
            exit_payload: Vec::new(),
            channel: ChannelParser::new(),
            done: false,
        }
    }

    /// True between frames: a stream that ends here ended cleanly apart
    /// from the missing exit marker.
    pub fn at_frame_boundary(&self) -> bool {
        self.framer.state == State::Tag && !self.done
    }

    /// Parses `data`; returns the exit marker's raw code once it is
    /// complete (bytes after it are ignored).
    pub fn feed(&mut self, data: &[u8], sink: &mut impl Sink) -> Result<Option<i64>, FeedError> {
        let mut at = 0;
        while !self.done {
            let event = self.framer.next(data, &mut at).map_err(|broken| {
                FeedError::Protocol(match broken {
                    Broken::Tag(b) => {
                        format!("unexpected byte 0x{b:02x} where a frame should start")
                    }
                    Broken::Space(tag) => {
                        format!("no space after frame type '{}'", tag as char)
                    }
                    Broken::Length(tag) => {
                        format!("bad length in a frame of type '{}'", tag as char)
                    }
                    Broken::Overflow => "frame length overflows".to_string(),
                })
            })?;
            match event {
                None => return Ok(None),
                Some(Event::Head { tag: b'-', len }) if len > MAX_EXIT_PAYLOAD => {
                    return Err(FeedError::Protocol(format!("exit marker of {len} bytes")))
                }
                Some(Event::Head { .. }) => self.exit_payload.clear(),
                Some(Event::Payload { tag, bytes, end }) => match tag {
                    b'1' => sink.stdout(bytes).map_err(FeedError::Sink)?,
                    b'2' => sink.stderr(bytes).map_err(FeedError::Sink)?,
                    b'3' => self.channel.feed(bytes, sink)?,
                    b'-' => {
                        self.exit_payload.extend_from_slice(bytes);
                        if end {
                            self.done = true;
                            return Ok(Some(parse_exit_code(&self.exit_payload)));
                        }
                    }
                    // Keepalives have no payload; unknown types are
                    // skipped so a newer box does not break the CLI.
                    _ => {}
                },
            }
        }
        Ok(None)
    }
}

/// The output channel's inner frames, `<encoder> <len> <payload>`,
/// which may span several outer `3` frames.
#[derive(Debug)]
struct ChannelParser {
    framer: Framer,
    object: Vec<u8>,
}

impl ChannelParser {
    fn new() -> ChannelParser {
        ChannelParser {
            framer: Framer::new(false),
            object: Vec::new(),
        }
    }

    fn feed(&mut self, data: &[u8], sink: &mut impl Sink) -> Result<(), FeedError> {
        let mut at = 0;
        loop {
            let event = self.framer.next(data, &mut at).map_err(|broken| {
                FeedError::Protocol(format!(
                    "output channel: {}",
                    match broken {
                        Broken::Tag(_) => "bad encoder",
                        Broken::Space(_) => "no space after the encoder",
                        Broken::Length(_) => "bad length",
                        Broken::Overflow => "object too large",
                    }
                ))
            })?;
            match event {
                None => return Ok(()),
                Some(Event::Head { len, .. }) if len > MAX_CHANNEL_OBJECT => {
                    return Err(FeedError::Protocol(
                        "output channel: object too large".into(),
                    ))
                }
                Some(Event::Head { .. }) => self.object.clear(),
                Some(Event::Payload { tag, bytes, end }) => {
                    self.object.extend_from_slice(bytes);
                    if end {
                        let text = decode_object(tag, &self.object);
                        self.object.clear();
                        sink.channel(&text).map_err(FeedError::Sink)?;
                    }
                }
            }
        }
    }
}

/// One output-channel object as printed: raw and YAML as text, JSON
/// re-serialised compactly (as written if it does not parse), pickle not
/// decoded (runner.md §5.4).
pub fn decode_object(encoder: u8, payload: &[u8]) -> String {
    match encoder {
        b'2' => format!("<pickle: {} bytes>", payload.len()),
        b'3' => match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(value) => value.to_string(),
            Err(_) => String::from_utf8_lossy(payload).into_owned(),
        },
        _ => String::from_utf8_lossy(payload)
            .trim_end_matches('\n')
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Record {
        events: Vec<(char, Vec<u8>)>,
    }

    impl Record {
        fn push(&mut self, fd: char, bytes: &[u8]) {
            match self.events.last_mut() {
                Some((last, buf)) if *last == fd && fd != '3' => buf.extend_from_slice(bytes),
                _ => self.events.push((fd, bytes.to_vec())),
            }
        }
    }

    impl Sink for Record {
        fn stdout(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.push('1', bytes);
            Ok(())
        }
        fn stderr(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.push('2', bytes);
            Ok(())
        }
        fn channel(&mut self, text: &str) -> io::Result<()> {
            self.push('3', text.as_bytes());
            Ok(())
        }
    }

    /// Feeds `stream` in pieces of `step` bytes.
    fn parse_in_steps(stream: &[u8], step: usize) -> (Record, Result<Option<i64>, String>) {
        let mut parser = FrameParser::new();
        let mut sink = Record::default();
        for piece in stream.chunks(step) {
            match parser.feed(piece, &mut sink) {
                Ok(Some(code)) => return (sink, Ok(Some(code))),
                Ok(None) => {}
                Err(e) => return (sink, Err(format!("{e:?}"))),
            }
        }
        (sink, Ok(None))
    }

    #[test]
    fn frames_in_any_split_give_the_same_result() {
        // The last channel object spans two outer frames.
        let stream =
            b"1 6 hello\n0 0 2 4 oops1 3 a b3 12 3 8 {\"a\": 1}3 4 1 5 3 5 x 0 11 1 \n- 2 42trailing";
        for step in 1..stream.len() {
            let (sink, result) = parse_in_steps(stream, step);
            assert_eq!(result, Ok(Some(42)), "step {step}");
            assert_eq!(
                sink.events,
                vec![
                    ('1', b"hello\n".to_vec()),
                    ('2', b"oops".to_vec()),
                    ('1', b"a b".to_vec()),
                    ('3', b"{\"a\":1}".to_vec()),
                    ('3', b"x 0 1".to_vec()),
                    ('1', b"\n".to_vec()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn payloads_are_byte_exact() {
        let payload: Vec<u8> = (0..=255u8).chain(b"- 1 0\r\n".iter().copied()).collect();
        let mut stream = format!("1 {} ", payload.len()).into_bytes();
        stream.extend_from_slice(&payload);
        stream.extend_from_slice(b"- 2 -9");
        let (sink, result) = parse_in_steps(&stream, 7);
        assert_eq!(result, Ok(Some(-9)));
        assert_eq!(sink.events, vec![('1', payload)]);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(parse_in_steps(b"- 1 0", 100).1, Ok(Some(0)));
        assert_eq!(parse_in_steps(b"- 3 124", 100).1, Ok(Some(124)));
        assert_eq!(parse_in_steps(b"- 3 abc", 100).1, Ok(Some(-1)));
        assert_eq!(parse_in_steps(b"- 0 ", 100).1, Ok(Some(-1)));
        assert_eq!(parse_in_steps(b"1 5 abc", 100).1, Ok(None));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [&b"x 1 a"[..], b"11 a", b"1 x a", b"1  a", b"- 999 1"] {
            let (_, result) = parse_in_steps(bad, 100);
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // Unknown frame types are skipped.
        assert_eq!(parse_in_steps(b"7 2 zz- 1 5", 100).1, Ok(Some(5)));
    }

    #[test]
    fn boundary_tracking() {
        let mut parser = FrameParser::new();
        let mut sink = Record::default();
        assert!(parser.at_frame_boundary());
        parser.feed(b"1 3 ab", &mut sink).expect("feed");
        assert!(!parser.at_frame_boundary());
        parser.feed(b"c", &mut sink).expect("feed");
        assert!(parser.at_frame_boundary());
    }

    #[test]
    fn channel_objects() {
        assert_eq!(decode_object(b'1', b"raw text\n"), "raw text");
        assert_eq!(decode_object(b'2', b"\x80\x04abc"), "<pickle: 5 bytes>");
        assert_eq!(decode_object(b'3', b"[1, 2]"), "[1,2]");
        assert_eq!(decode_object(b'3', b"not json"), "not json");
        assert_eq!(decode_object(b'4', b"a: 1\nb: 2\n"), "a: 1\nb: 2");
    }
}
