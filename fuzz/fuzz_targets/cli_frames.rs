//! The CLI's frame parser (`lager/src/cmd/python/frames.rs`, runner.md
//! §3.1): any stream, in any split, gives the same output and the same
//! verdict as when it arrives whole; and whatever lagerd frames
//! (`runner::job::encode_frames`) comes out byte for byte with its exit
//! code, however the network cuts it.
#![no_main]

use std::io;

use lager::cmd::python::frames::{decode_object, FrameParser, Sink};
use lager_fuzz::pieces;
use lagerd::runner::job::encode_frames;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any bytes a box (or something else on its port) may send.
    Raw { bytes: Vec<u8>, cuts: Vec<u8> },
    /// A run's output as lagerd frames it, then the exit marker.
    Framed {
        chunks: Vec<Chunk>,
        code: i32,
        after: Vec<u8>,
        cuts: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// One output-channel object: encoder digit and payload.
    Channel(u8, Vec<u8>),
}

/// What reached the terminal: runs of stdout/stderr bytes, channel lines.
#[derive(Default, Debug, PartialEq)]
struct Record(Vec<(u8, Vec<u8>)>);

impl Record {
    fn push(&mut self, fd: u8, bytes: &[u8]) {
        match self.0.last_mut() {
            Some((last, run)) if *last == fd && fd != 3 => run.extend_from_slice(bytes),
            _ if bytes.is_empty() && fd != 3 => {}
            _ => self.0.push((fd, bytes.to_vec())),
        }
    }
}

impl Sink for Record {
    fn stdout(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.push(1, bytes);
        Ok(())
    }
    fn stderr(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.push(2, bytes);
        Ok(())
    }
    fn channel(&mut self, text: &str) -> io::Result<()> {
        self.push(3, text.as_bytes());
        Ok(())
    }
}

/// Parses `pieces` in order: what was written and the verdict.
fn parse(pieces: &[&[u8]]) -> (Record, Result<Option<i64>, String>) {
    let mut parser = FrameParser::new();
    let mut sink = Record::default();
    for piece in pieces {
        match parser.feed(piece, &mut sink) {
            Ok(Some(code)) => return (sink, Ok(Some(code))),
            Ok(None) => {}
            Err(e) => return (sink, Err(format!("{e:?}"))),
        }
    }
    (sink, Ok(None))
}

fuzz_target!(|input: Input| match input {
    Input::Raw { bytes, cuts } => {
        let whole = parse(&[&bytes]);
        assert_eq!(parse(&pieces(&bytes, &cuts)), whole);
    }
    Input::Framed {
        chunks,
        code,
        after,
        cuts,
    } => {
        let mut raw = Vec::new();
        let mut expected = Record::default();
        for chunk in &chunks {
            match chunk {
                Chunk::Stdout(bytes) => {
                    raw.push((1, bytes.clone()));
                    expected.push(1, bytes);
                }
                Chunk::Stderr(bytes) => {
                    raw.push((2, bytes.clone()));
                    expected.push(2, bytes);
                }
                Chunk::Channel(encoder, payload) => {
                    let encoder = b'0' + encoder % 10;
                    let mut object = format!("{} {} ", encoder as char, payload.len()).into_bytes();
                    object.extend_from_slice(payload);
                    raw.push((3, object));
                    expected.push(3, decode_object(encoder, payload).as_bytes());
                }
            }
        }
        let mut stream = Vec::new();
        encode_frames(&raw, &mut stream);
        let code_text = code.to_string();
        stream.extend_from_slice(format!("- {} {code_text}", code_text.len()).as_bytes());
        stream.extend_from_slice(&after);
        let (record, verdict) = parse(&pieces(&stream, &cuts));
        assert_eq!(verdict, Ok(Some(i64::from(code))));
        assert_eq!(record, expected);
    }
});
