//! HTTP request bodies (issue 12): `Content-Length` and chunked framing,
//! trailers included. Any bytes decode to a body or a refusal, never a
//! panic or a body over the limit; the result does not depend on how the
//! bytes are split into reads; and any valid chunked encoding of a body
//! (random chunk sizes, extensions, trailers) decodes back to that body.
#![no_main]

use lagerd::server::framing::{Bad, BodyDecoder, Framing};
use libfuzzer_sys::fuzz_target;

/// Feeds `input` in reads of the sizes `splits` gives (cycling), as a
/// socket would; returns the body, the bytes used, and whether it is done.
fn decode(
    framing: Framing,
    limit: u64,
    input: &[u8],
    splits: &[u8],
) -> Result<(Vec<u8>, usize, bool), Bad> {
    let mut decoder = BodyDecoder::new(framing, limit)?;
    let (mut body, mut used, mut available) = (Vec::new(), 0, 0);
    let mut sizes = splits.iter().cycle().map(|s| usize::from(*s).max(1));
    loop {
        loop {
            let step = decoder.step(&input[used..available])?;
            if step.consumed == 0 {
                break;
            }
            assert!(step.data.end <= step.consumed);
            body.extend_from_slice(&input[used..][step.data]);
            used += step.consumed;
        }
        if decoder.is_done() || available == input.len() {
            return Ok((body, used, decoder.is_done()));
        }
        available = (available + sizes.next().unwrap_or(input.len())).min(input.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, limit, split_count, rest @ ..] = data else {
        return;
    };
    let split_count = usize::from(*split_count % 8).min(rest.len());
    let (splits, input) = rest.split_at(split_count);
    let limit = u64::from(*limit) * 16;
    if mode & 0x80 != 0 {
        // Encode `input` validly, then decode it.
        let mut encoded = Vec::new();
        let mut sizes = splits.iter().cycle().map(|s| usize::from(*s).max(1));
        let mut left = input;
        while !left.is_empty() {
            let size = sizes.next().unwrap_or(left.len()).min(left.len());
            let ext = if size % 3 == 0 { ";name=\"v\"\t" } else { "" };
            encoded.extend_from_slice(format!("{size:X}{ext}\r\n").as_bytes());
            encoded.extend_from_slice(&left[..size]);
            encoded.extend_from_slice(b"\r\n");
            left = &left[size..];
        }
        encoded.extend_from_slice(if mode & 1 == 0 {
            b"0\r\n\r\n"
        } else {
            b"0\r\nX-Sum: 1\r\n\r\n"
        });
        let got = decode(Framing::Chunked, u64::MAX, &encoded, splits);
        assert_eq!(got, Ok((input.to_vec(), encoded.len(), true)));
        return;
    }
    let framing = match mode % 3 {
        0 => Framing::Chunked,
        1 => Framing::Length(u64::from(mode >> 2) * 7),
        _ => Framing::None,
    };
    let whole = decode(framing, limit, input, &[u8::MAX]);
    if let Ok((body, used, done)) = &whole {
        assert!(*used <= input.len());
        assert!(body.len() as u64 <= limit, "{} > {limit}", body.len());
        if let (Framing::Length(length), true) = (framing, done) {
            assert_eq!(body.len() as u64, length);
        }
    }
    if !splits.is_empty() {
        // The same status (the reason may name another of several faults).
        let status = |result: Result<_, Bad>| result.map_err(|bad| bad.status);
        assert_eq!(status(decode(framing, limit, input, splits)), status(whole));
    }
});
