//! HTTP request heads (issue 12): any bytes are a head or a refusal, never
//! a panic. Incremental parsing never changes its mind (a prefix needs more
//! bytes or gives the status the whole gives), every head accepted is one
//! httparse accepts the same way (differential), and what is accepted is
//! strict: CRLF only, no NUL, trimmed values, one Host on HTTP/1.1, framing
//! from digits-only Content-Length or exactly `chunked`.
#![no_main]

use lagerd::server::framing::{parse_head, Framing, HEADERS_MAX, HEAD_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_head(data);
    if let Ok(Some((head, end))) = &whole {
        let end = *end;
        assert!(end <= data.len() && end <= HEAD_MAX);
        let bytes = &data[..end];
        let mut fields = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut request = httparse::Request::new(&mut fields);
        assert_eq!(request.parse(bytes), Ok(httparse::Status::Complete(end)));
        assert_eq!(request.method, Some(head.method.as_str()));
        assert_eq!(request.version, Some(u8::from(head.http11)));
        assert_eq!(request.headers.len(), head.headers.len());
        for (at, byte) in bytes.iter().enumerate() {
            assert!(*byte != 0, "NUL accepted");
            if *byte == b'\n' {
                assert!(at > 0 && bytes[at - 1] == b'\r', "bare LF accepted");
            }
        }
        assert!(head.path.starts_with('/'), "{:?}", head.path);
        let mut hosts = 0;
        for (name, value) in &head.headers {
            assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
            assert!(!value.bytes().any(|b| b.is_ascii_control() && b != b'\t'));
            assert!(!value.starts_with([' ', '\t']) && !value.ends_with([' ', '\t']));
            hosts += usize::from(name.eq_ignore_ascii_case("host"));
            if name.eq_ignore_ascii_case("content-length") {
                assert!(value.bytes().all(|b| b.is_ascii_digit()), "{value:?}");
            }
        }
        assert!(hosts <= 1 && (hosts == 1 || !head.http11));
        let header = |wanted: &str| {
            head.headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                .map(|(_, value)| value.as_str())
        };
        match head.framing {
            Framing::None => {
                assert!(header("content-length").is_none() && header("transfer-encoding").is_none())
            }
            Framing::Length(length) => assert_eq!(
                header("content-length").map(str::parse::<u64>),
                Some(Ok(length))
            ),
            Framing::Chunked => {
                assert!(
                    header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
                );
                assert!(header("content-length").is_none());
            }
        }
    }
    // The transport parses again as bytes arrive: every prefix it could
    // have seen must need more or agree with the whole.
    let step = (data.len() / 64).max(1);
    for cut in (0..data.len()).step_by(step) {
        match (parse_head(&data[..cut]), &whole) {
            (Ok(None), _) => {}
            (Ok(Some(part)), Ok(Some(all))) => assert_eq!(&part, all),
            // The same status (the reason may name another of several faults).
            (Err(part), Err(all)) => assert_eq!(part.status, all.status),
            (part, all) => panic!("prefix of {cut} bytes gave {part:?}, the whole {all:?}"),
        }
    }
});
