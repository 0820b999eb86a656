//! Incremental decoders for a `POST /python` reply body (runner.md §3.1):
//! HTTP/1.1 chunked transfer coding outside, `<fileno> <len> <bytes>`
//! frames inside, ending with the exit marker `- <len> <code>`.
//!
//! Both work on whole slices (a payload is skipped or copied in one step),
//! so a 1 GiB stream costs the reader a few copies' worth of CPU and the
//! raw-client throughput stays a measure of the daemon.

/// Longest frame header accepted (`1 1024 ` is 7 bytes).
const HEADER_MAX: usize = 32;

#[derive(Debug, PartialEq, Eq)]
enum FrameState {
    Header,
    Payload { fileno: u8, remaining: usize },
    Done,
}

/// Frame decoder: counts payload bytes per fileno and keeps the exit code.
pub struct Frames {
    state: FrameState,
    header: Vec<u8>,
    /// Payload bytes seen for filenos 0 (keepalive), 1, 2 and 3.
    pub bytes: [u64; 4],
    /// Frames seen for filenos 0 to 3.
    pub frames: [u64; 4],
    /// The exit marker's payload, once complete.
    pub exit: Option<String>,
    exit_text: Vec<u8>,
    /// Stdout payload, when asked to keep it.
    pub stdout: Option<Vec<u8>>,
}

impl Frames {
    pub fn new(keep_stdout: bool) -> Frames {
        Frames {
            state: FrameState::Header,
            header: Vec::with_capacity(HEADER_MAX),
            bytes: [0; 4],
            frames: [0; 4],
            exit: None,
            exit_text: Vec::new(),
            stdout: keep_stdout.then(Vec::new),
        }
    }

    pub fn done(&self) -> bool {
        self.state == FrameState::Done
    }

    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            match self.state {
                FrameState::Done => {
                    return Err(format!("{} bytes after the exit marker", data.len()));
                }
                FrameState::Header => {
                    let byte = data[0];
                    data = &data[1..];
                    self.header.push(byte);
                    if byte == b' ' && self.header.len() > 2 {
                        self.start_payload()?;
                    } else if self.header.len() >= HEADER_MAX {
                        return Err(format!(
                            "frame header too long: {:?}",
                            String::from_utf8_lossy(&self.header)
                        ));
                    }
                }
                FrameState::Payload { fileno, remaining } => {
                    let take = remaining.min(data.len());
                    let (piece, rest) = data.split_at(take);
                    data = rest;
                    if fileno == b'-' {
                        self.exit_text.extend_from_slice(piece);
                    } else {
                        let index = usize::from(fileno - b'0');
                        self.bytes[index] += take as u64;
                        if index == 1 {
                            if let Some(kept) = self.stdout.as_mut() {
                                kept.extend_from_slice(piece);
                            }
                        }
                    }
                    let remaining = remaining - take;
                    self.state = FrameState::Payload { fileno, remaining };
                    if remaining == 0 {
                        self.end_payload(fileno);
                    }
                }
            }
        }
        Ok(())
    }

    /// `header` is `<fileno> <digits> `: switch to reading the payload.
    fn start_payload(&mut self) -> Result<(), String> {
        let text = String::from_utf8_lossy(&self.header).into_owned();
        let bad = || format!("malformed frame header {text:?}");
        let (fileno, len) = match self.header.as_slice() {
            [f @ (b'0'..=b'3' | b'-'), b' ', digits @ .., b' ']
                if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) =>
            {
                let len: usize = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(bad)?;
                (*f, len)
            }
            _ => return Err(bad()),
        };
        self.header.clear();
        if fileno != b'-' {
            self.frames[usize::from(fileno - b'0')] += 1;
        }
        self.state = FrameState::Payload {
            fileno,
            remaining: len,
        };
        if len == 0 {
            self.end_payload(fileno);
        }
        Ok(())
    }

    fn end_payload(&mut self, fileno: u8) {
        if fileno == b'-' {
            self.exit = Some(String::from_utf8_lossy(&self.exit_text).into_owned());
            self.state = FrameState::Done;
        } else {
            self.state = FrameState::Header;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line (kept in `line`).
    Size,
    Data(usize),
    /// The CRLF after a chunk's data: this many bytes of it still to come.
    DataEnd(usize),
    /// The last chunk (size 0) was seen.
    End,
}

/// `Transfer-Encoding: chunked` decoder; data goes to a [`Frames`].
pub struct Dechunk {
    state: ChunkState,
    line: Vec<u8>,
}

impl Default for Dechunk {
    fn default() -> Dechunk {
        Dechunk {
            state: ChunkState::Size,
            line: Vec::new(),
        }
    }
}

impl Dechunk {
    pub fn ended(&self) -> bool {
        self.state == ChunkState::End
    }

    pub fn feed(&mut self, mut data: &[u8], frames: &mut Frames) -> Result<(), String> {
        while !data.is_empty() {
            match self.state {
                ChunkState::End => return Ok(()),
                ChunkState::Size => {
                    let byte = data[0];
                    data = &data[1..];
                    if byte != b'\n' {
                        self.line.push(byte);
                        if self.line.len() > 64 {
                            return Err("chunk-size line too long".into());
                        }
                        continue;
                    }
                    let text = String::from_utf8_lossy(&self.line).into_owned();
                    let digits = text.trim_end_matches('\r');
                    let digits = digits.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(digits, 16)
                        .map_err(|_| format!("bad chunk size {text:?}"))?;
                    self.line.clear();
                    self.state = if size == 0 {
                        ChunkState::End
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    let take = remaining.min(data.len());
                    frames.feed(&data[..take])?;
                    data = &data[take..];
                    self.state = if remaining == take {
                        ChunkState::DataEnd(2)
                    } else {
                        ChunkState::Data(remaining - take)
                    };
                }
                ChunkState::DataEnd(left) => {
                    let expected = if left == 2 { b'\r' } else { b'\n' };
                    if data[0] != expected {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    data = &data[1..];
                    self.state = if left == 2 {
                        ChunkState::DataEnd(1)
                    } else {
                        ChunkState::Size
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"6\r\n1 3 ab\r\nb\r\nc2 2 e!0 0 \r\n5\r\n- 1 0\r\n0\r\n\r\n";

    #[test]
    fn decodes_chunks_and_frames_in_any_split() {
        for split in 0..BODY.len() {
            let mut dechunk = Dechunk::default();
            let mut frames = Frames::new(true);
            dechunk.feed(&BODY[..split], &mut frames).unwrap();
            dechunk.feed(&BODY[split..], &mut frames).unwrap();
            assert!(dechunk.ended(), "split {split}");
            assert_eq!(frames.exit.as_deref(), Some("0"));
            assert_eq!(frames.stdout.as_deref(), Some(&b"abc"[..]));
            assert_eq!(frames.bytes, [0, 3, 2, 0]);
            assert_eq!(frames.frames, [1, 1, 1, 0]);
        }
    }

    #[test]
    fn rejects_garbage() {
        let mut frames = Frames::new(false);
        assert!(frames.feed(b"x 3 abc").is_err());
        let mut frames = Frames::new(false);
        assert!(frames.feed(b"- 2 -9extra").is_err());
        let mut frames = Frames::new(false);
        assert!(Dechunk::default().feed(b"zz\r\n", &mut frames).is_err());
    }
}
