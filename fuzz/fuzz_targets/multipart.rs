//! `multipart/form-data` for `POST /python` (`lagerd/src/multipart.rs`):
//! any Content-Type and body either parse or are refused, every part is a
//! slice of the body in order, and whatever `lager python`'s encoder
//! writes parses back to exactly its fields, byte for byte.
#![no_main]

use lager::cmd::python::multipart::Multipart;
use lagerd::multipart::{boundary, parse, Part};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// The fields `lager python` sends (runner.md §1), plus one it does not.
const NAMES: [&str; 12] = [
    "stdout_is_stderr",
    "detach",
    "args",
    "env",
    "timeout",
    "script",
    "module",
    "holder",
    "muxes",
    "usb_mapping",
    "dut_commands",
    "org",
];

/// RFC 2046 §5.1.1 `bchars` without the space.
const BCHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?";

#[derive(Arbitrary, Debug)]
enum Input {
    /// A Content-Type and a body as any client may send them.
    Raw { content_type: String, body: Vec<u8> },
    /// A body split at a boundary the client did not declare.
    Direct { boundary: String, body: Vec<u8> },
    /// Fields as `lager python` encodes them.
    Encoded {
        boundary: Vec<u8>,
        fields: Vec<Field>,
    },
}

#[derive(Arbitrary, Debug)]
struct Field {
    name: u8,
    value: Vec<u8>,
    filename: Option<String>,
}

/// Parts must be slices of the body, in order, not overlapping.
fn check_slices(body: &[u8], parts: &[Part<'_>]) {
    let start = body.as_ptr() as usize;
    let mut previous_end = start;
    for part in parts {
        let at = part.data.as_ptr() as usize;
        assert!(at >= previous_end, "parts in order, apart");
        assert!(
            at + part.data.len() <= start + body.len(),
            "inside the body"
        );
        previous_end = at + part.data.len();
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { content_type, body } => {
            if let Some(Ok(found)) = boundary(&content_type) {
                assert!(!found.is_empty() && found.len() <= 200);
                if let Ok(parts) = parse(&body, &found) {
                    check_slices(&body, &parts);
                }
            }
        }
        Input::Direct { boundary, body } => {
            if let Ok(parts) = parse(&body, &boundary) {
                check_slices(&body, &parts);
            }
        }
        Input::Encoded {
            boundary: raw,
            fields,
        } => {
            let chosen: String = raw
                .iter()
                .take(70)
                .map(|b| BCHARS[usize::from(*b) % BCHARS.len()] as char)
                .collect();
            // The encoder's contract: the boundary occurs in no field.
            if chosen.is_empty()
                || fields.iter().any(|f| {
                    f.value
                        .windows(chosen.len())
                        .any(|w| w == chosen.as_bytes())
                })
            {
                return;
            }
            let mut form = Multipart::new(chosen.clone());
            let mut expected = Vec::new();
            for field in &fields {
                let name = NAMES[usize::from(field.name) % NAMES.len()];
                match (&field.filename, std::str::from_utf8(&field.value)) {
                    (None, Ok(text)) => form.text(name, text),
                    (filename, _) => {
                        form.file(name, filename.as_deref().unwrap_or("x.py"), &field.value)
                    }
                }
                expected.push((name.to_string(), field.value.clone()));
            }
            let content_type = form.content_type();
            let body = form.finish();
            let found = boundary(&content_type)
                .expect("multipart")
                .expect("a boundary");
            assert_eq!(found, chosen);
            let parts = parse(&body, &found).expect("lager's own upload parses");
            check_slices(&body, &parts);
            let got: Vec<(String, Vec<u8>)> = parts
                .iter()
                .map(|p| (p.name.clone(), p.data.to_vec()))
                .collect();
            assert_eq!(got, expected);
        }
    }
});
