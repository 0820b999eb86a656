//! Request framing as pure functions over bytes: the head (`httparse`, plus
//! the strictness of RFC 9112 that httparse leaves to its user) and the body
//! (`Content-Length` or chunked, trailers included). No IO and no clock: the
//! transport feeds them what the socket had, and the fuzz targets
//! (`fuzz/fuzz_targets/http_head.rs`, `http_body.rs`) feed them anything.
//!
//! Both are incremental: called again with more bytes, they give the answer
//! they would have given had everything arrived at once (the fuzz targets
//! check that), and neither looks at more than a bounded prefix.

use std::ops::Range;

/// Largest request line plus headers.
pub const HEAD_MAX: usize = 16 * 1024;
/// At most this many header fields.
pub const HEADERS_MAX: usize = 100;
/// Longest chunk-size line, extensions included.
pub const CHUNK_LINE_MAX: usize = 1024;
/// Largest trailer section (the fields after the last chunk, and its blank line).
pub const TRAILERS_MAX: usize = 8 * 1024;

/// Why a request cannot be served: the status to answer and a short reason
/// (sent as `Bad request: <why>` for 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bad {
    pub status: u16,
    pub why: &'static str,
}

const fn bad(why: &'static str) -> Bad {
    Bad { status: 400, why }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The path without the query string, as sent (from an absolute-form
    /// target, the part after the authority).
    pub path: String,
    /// The text after `?`, undecoded.
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// False for an HTTP/1.0 request line.
    pub http11: bool,
    pub framing: Framing,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expects_continue: bool,
}

/// Parses a request head from the front of `buf`: `Ok(None)` while it is
/// incomplete, else the head and its length in bytes (the body follows).
/// Leading empty lines (CRLF) are skipped as RFC 9112 §2.2 allows.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Bad> {
    // Look at no more than a head may be long, so the answer for a long
    // buffer is the one the transport got when it had HEAD_MAX bytes.
    let window = &buf[..buf.len().min(HEAD_MAX)];
    let mut fields = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut fields);
    // httparse takes a bare LF as a line end; RFC 9112 §2.2 lets a server
    // do that, we do not (a bare LF inside a field is how requests are
    // smuggled past a proxy that reads lines differently). httparse sees
    // the bytes before the first bare LF: a head complete before it is
    // fine, any other fault before it wins, else the bare LF is the fault.
    // So the answer depends on the first fault only, not on how much of
    // the rest has arrived.
    let bare_lf = first_bare_lf(window);
    let parsed = request.parse(&window[..bare_lf.unwrap_or(window.len())]);
    let end = match parsed {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) if bare_lf.is_some() => {
            return Err(bad("bare LF in the request head (lines end with CRLF)"))
        }
        Ok(httparse::Status::Partial) if buf.len() >= HEAD_MAX => {
            return Err(Bad {
                status: 431,
                why: "Request header fields too large",
            })
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Bad {
                status: 431,
                why: "Request header fields too large",
            })
        }
        Err(e) => return Err(bad(head_error(e))),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(bad("malformed request line"));
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("malformed method"));
    }
    let http11 = version == 1;
    let (path, query) = split_target(target)?;
    let mut headers = Vec::with_capacity(request.headers.len());
    let mut hosts = 0;
    let mut framing = Framing::None;
    let mut expects_continue = false;
    for field in request.headers.iter() {
        let value =
            std::str::from_utf8(field.value).map_err(|_| bad("header value is not UTF-8"))?;
        let name = field.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !value.bytes().all(is_host_byte) {
                return Err(bad("invalid Host header"));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let length = parse_length(value)?;
            framing = match framing {
                Framing::None => Framing::Length(length),
                Framing::Length(seen) if seen == length => framing,
                Framing::Length(_) => return Err(bad("conflicting Content-Length")),
                Framing::Chunked => return Err(bad("both Content-Length and Transfer-Encoding")),
            };
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                // RFC 9112 §6.1: HTTP/1.0 has no transfer codings.
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(bad("unsupported Transfer-Encoding (only chunked)"));
            }
            framing = match framing {
                Framing::None => Framing::Chunked,
                Framing::Chunked => return Err(bad("Transfer-Encoding sent twice")),
                Framing::Length(_) => return Err(bad("both Content-Length and Transfer-Encoding")),
            };
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = http11 && value.eq_ignore_ascii_case("100-continue");
        }
        headers.push((name.to_string(), value.to_string()));
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host, and any request with
    // two, is answered 400.
    if hosts > 1 {
        return Err(bad("more than one Host header"));
    }
    if hosts == 0 && http11 {
        return Err(bad("HTTP/1.1 request without a Host header"));
    }
    Ok(Some((
        Head {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers,
            http11,
            framing,
            expects_continue,
        },
        end,
    )))
}

fn head_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "malformed header name",
        httparse::Error::HeaderValue => "malformed header value",
        httparse::Error::NewLine | httparse::Error::Status => "malformed line ending",
        httparse::Error::Token => "malformed method",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// Origin form (`/path?query`) or absolute form (`http://host:port/path?query`,
/// which RFC 9112 §3.2.2 says a server must accept); nothing else.
fn split_target(target: &str) -> Result<(&str, &str), Bad> {
    let path_and_query = if target.starts_with('/') {
        target
    } else {
        let rest = strip_prefix_ignore_case(target, "http://")
            .or_else(|| strip_prefix_ignore_case(target, "https://"))
            .ok_or(bad("request target must be a path or an http:// URI"))?;
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if authority_end == 0 || !rest[..authority_end].bytes().all(is_host_byte) {
            return Err(bad("invalid authority in the request target"));
        }
        &rest[authority_end..]
    };
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    // `http://host?x` has an empty path, which means `/`.
    Ok((if path.is_empty() { "/" } else { path }, query))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// RFC 3986 `host [":" port]`: reg-name, IP literal or IPv4 characters.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b)
}

/// RFC 9110 §8.6: `1*DIGIT`, nothing else (no sign, no spaces, no list).
fn parse_length(value: &str) -> Result<u64, Bad> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("invalid Content-Length"));
    }
    value.parse().map_err(|_| bad("invalid Content-Length"))
}

fn first_bare_lf(bytes: &[u8]) -> Option<usize> {
    bytes
        .iter()
        .enumerate()
        .position(|(at, b)| *b == b'\n' && (at == 0 || bytes[at - 1] != b'\r'))
}

/// Decodes a request body, `Content-Length` or chunked, from the bytes that
/// follow its head. The caller keeps the undecoded rest for the next call.
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    state: State,
    /// Body bytes announced so far (chunked: the sum of chunk sizes seen).
    announced: u64,
    limit: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Body bytes still to come.
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    Done,
}

/// One decoding step: `consumed` bytes of the input were used, of which
/// `data` (a range of the input) is body. Nothing consumed and not done
/// means more input is needed.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub data: Range<usize>,
}

impl BodyDecoder {
    /// A decoder for `framing` that refuses (413) bodies over `limit` bytes
    /// before reading them.
    pub fn new(framing: Framing, limit: u64) -> Result<BodyDecoder, Bad> {
        let state = match framing {
            Framing::None => State::Done,
            Framing::Length(length) if length > limit => return Err(TOO_LARGE),
            Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::ChunkSize,
        };
        Ok(BodyDecoder {
            state,
            announced: 0,
            limit,
        })
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `input`.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, Bad> {
        let need_more = Step {
            consumed: 0,
            data: 0..0,
        };
        match self.state {
            State::Done => Ok(need_more),
            State::Length(left) | State::ChunkData(left) => {
                let take = left.min(input.len() as u64) as usize;
                let left = left - take as u64;
                self.state = match (self.state, left) {
                    (State::Length(_), 0) => State::Done,
                    (State::Length(_), left) => State::Length(left),
                    (_, 0) => State::ChunkEnd,
                    (_, left) => State::ChunkData(left),
                };
                Ok(Step {
                    consumed: take,
                    data: 0..take,
                })
            }
            State::ChunkEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = State::ChunkSize;
                    Ok(Step {
                        consumed: 2,
                        data: 0..0,
                    })
                }
                [] | [b'\r'] => Ok(need_more),
                _ => Err(bad("chunk data not followed by CRLF")),
            },
            State::ChunkSize => {
                let window = &input[..input.len().min(CHUNK_LINE_MAX)];
                let Some(lf) = window.iter().position(|b| *b == b'\n') else {
                    if input.len() >= CHUNK_LINE_MAX {
                        return Err(bad("chunk size line too long"));
                    }
                    return Ok(need_more);
                };
                let size = parse_chunk_line(&input[..=lf])?;
                if self.announced.saturating_add(size) > self.limit {
                    return Err(TOO_LARGE);
                }
                self.announced += size;
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                Ok(Step {
                    consumed: lf + 1,
                    data: 0..0,
                })
            }
            State::Trailers => {
                // The blank line alone is the common case; else header
                // fields (read and dropped), bounded like a head.
                let window = &input[..input.len().min(TRAILERS_MAX)];
                let mut fields = [httparse::EMPTY_HEADER; 16];
                // As for the head: the first fault decides.
                let bare_lf = first_bare_lf(window);
                let parsed = httparse::parse_headers(
                    &window[..bare_lf.unwrap_or(window.len())],
                    &mut fields,
                );
                match parsed {
                    Ok(httparse::Status::Complete((end, _))) => {
                        self.state = State::Done;
                        Ok(Step {
                            consumed: end,
                            data: 0..0,
                        })
                    }
                    Ok(httparse::Status::Partial) if bare_lf.is_some() => {
                        Err(bad("bare LF in the trailer section"))
                    }
                    Ok(httparse::Status::Partial) if input.len() >= TRAILERS_MAX => {
                        Err(TRAILERS_TOO_LARGE)
                    }
                    Ok(httparse::Status::Partial) => Ok(need_more),
                    Err(httparse::Error::TooManyHeaders) => Err(TRAILERS_TOO_LARGE),
                    Err(_) => Err(bad("malformed trailer field")),
                }
            }
        }
    }
}

const TOO_LARGE: Bad = Bad {
    status: 413,
    why: "Request body too large",
};
const TRAILERS_TOO_LARGE: Bad = Bad {
    status: 431,
    why: "Request trailer fields too large",
};

/// `chunk-size [ chunk-ext ] CRLF` (RFC 9112 §7.1): hex digits first (no
/// sign, no space), CRLF last, no control bytes but HTAB between.
fn parse_chunk_line(line: &[u8]) -> Result<u64, Bad> {
    let invalid = bad("invalid chunk size");
    let [body @ .., b'\r', b'\n'] = line else {
        return Err(invalid);
    };
    if !body.first().is_some_and(u8::is_ascii_hexdigit)
        || body.iter().any(|b| b.is_ascii_control() && *b != b'\t')
    {
        return Err(invalid);
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((used, size))) if used == line.len() => Ok(size),
        _ => Err(invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, Bad> {
        match parse_head(text.as_bytes()) {
            Ok(Some((head, end))) => {
                assert_eq!(end, text.len(), "{text:?}");
                Ok(head)
            }
            Ok(None) => panic!("incomplete: {text:?}"),
            Err(e) => Err(e),
        }
    }

    /// Decodes all of `input` in one go: the body, or the refusal.
    fn decode(framing: Framing, limit: u64, input: &[u8]) -> Result<(Vec<u8>, usize), Bad> {
        let mut decoder = BodyDecoder::new(framing, limit)?;
        let (mut body, mut at) = (Vec::new(), 0);
        while !decoder.is_done() {
            let step = decoder.step(&input[at..])?;
            if step.consumed == 0 {
                break;
            }
            body.extend_from_slice(&input[at..][step.data]);
            at += step.consumed;
        }
        assert!(decoder.is_done(), "incomplete: {input:?}");
        Ok((body, at))
    }

    #[test]
    fn parses_a_request_head() {
        let h = head(
            "POST /lock?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nX-Odd:  spaced \t\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (h.method.as_str(), h.path.as_str(), h.query.as_str()),
            ("POST", "/lock", "x=1")
        );
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.http11);
        assert!(h
            .headers
            .contains(&("X-Odd".to_string(), "spaced".to_string())));
        assert_eq!(
            head("\r\nGET / HTTP/1.0\r\n\r\n").unwrap().framing,
            Framing::None
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
                .unwrap()
                .framing,
            Framing::Chunked
        );
        assert!(
            head("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .expects_continue
        );
        assert!(
            !head("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .expects_continue
        );
        // Identical repeated lengths are one length (RFC 9110 §8.6).
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .framing,
            Framing::Length(3)
        );
    }

    #[test]
    fn waits_for_the_rest_of_a_head() {
        let full = b"GET /lock HTTP/1.1\r\nHost: a\r\n\r\nbody";
        for cut in 0..full.len() - 4 {
            assert_eq!(parse_head(&full[..cut]), Ok(None), "{cut}");
        }
        assert_eq!(parse_head(full).unwrap().unwrap().1, full.len() - 4);
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(HEAD_MAX));
        assert_eq!(parse_head(endless.as_bytes()).unwrap_err().status, 431);
        let many: String = (0..=HEADERS_MAX).map(|i| format!("X{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(head(&many).unwrap_err().status, 431);
    }

    #[test]
    fn absolute_form_targets_are_accepted() {
        // RFC 9112 §3.2.2.
        for (target, path, query) in [
            ("http://host:9000/lock?x", "/lock", "x"),
            ("HTTP://10.0.0.2/status", "/status", ""),
            ("https://[::1]:5000/a/b", "/a/b", ""),
            ("http://box", "/", ""),
            ("http://box?q=1", "/", "q=1"),
        ] {
            let h = head(&format!("GET {target} HTTP/1.1\r\nHost: box\r\n\r\n")).unwrap();
            assert_eq!(
                (h.path.as_str(), h.query.as_str()),
                (path, query),
                "{target}"
            );
        }
        for target in [
            "*",
            "box:9000",
            "ftp://box/x",
            "http:///x",
            "http://a b/",
            "http://a\"b/",
        ] {
            let text = format!("GET {target} HTTP/1.1\r\nHost: box\r\n\r\n");
            let got = parse_head(text.as_bytes());
            assert!(
                matches!(got, Err(Bad { status: 400, .. })),
                "{target} -> {got:?}"
            );
        }
    }

    /// Issue 12, defect 2: every case of the lenient grammar, and Host.
    #[test]
    fn issue12_the_request_grammar_is_strict() {
        let refused = [
            // Content-Length is digits only.
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +14\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
            // Only SP and HTAB are whitespace around a value: VT and FF are not.
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0c\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \x0b5\r\n\r\n",
            // Bare LF or NUL inside a field.
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
            // Host: exactly one in HTTP/1.1, at most one in HTTP/1.0.
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            // Framing conflicts and codings we do not speak.
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            // The request line.
            "GET\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "get / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nName : x\r\n\r\n",
            "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
        ];
        for text in refused {
            let got = parse_head(text.as_bytes());
            assert!(
                matches!(got, Err(Bad { status: 400, .. })),
                "{text:?} -> {got:?}"
            );
        }
        assert!(parse_head(b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nX: \xff\r\n\r\n").is_err());
        // What stays fine: HTTP/1.0 needs no Host; OWS is SP and HTAB.
        assert!(head("GET / HTTP/1.0\r\n\r\n").is_ok());
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost:\tbox:9000 \r\nTransfer-Encoding: \tchunked\t\r\n\r\n")
                .unwrap()
                .framing,
            Framing::Chunked
        );
        assert!(
            head("GET / HTTP/1.1\r\nHost:\r\n\r\n").is_ok(),
            "an empty Host is allowed"
        );
    }

    #[test]
    fn decodes_length_and_chunked_bodies() {
        assert_eq!(
            decode(Framing::Length(3), 10, b"abcGET"),
            Ok((b"abc".to_vec(), 3))
        );
        assert_eq!(decode(Framing::None, 10, b"abc"), Ok((Vec::new(), 0)));
        assert_eq!(
            decode(Framing::Length(11), 10, b"").unwrap_err().status,
            413
        );
        let chunked =
            b"5\r\n{\"use\r\n9;name=\"v\"\t\r\nr\":\"ann\"}\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        assert_eq!(
            decode(Framing::Chunked, 100, chunked),
            Ok((br#"{"user":"ann"}"#.to_vec(), chunked.len() - 4))
        );
        assert_eq!(
            decode(Framing::Chunked, 100, b"A\r\n0123456789\r\n0\r\n\r\n")
                .unwrap()
                .0
                .len(),
            10
        );
        assert_eq!(
            decode(Framing::Chunked, 13, chunked).unwrap_err().status,
            413
        );
    }

    #[test]
    fn issue12_chunk_sizes_and_trailers_are_strict() {
        for input in [
            &b"+d\r\n0123456789abc\r\n0\r\n\r\n"[..],
            b"-1\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b";ext\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\nX: 1\nY: 2\r\n\r\n",
            b"0\r\nX: 1\r\n\n",
            b"0\r\n\n",
            b"0\r\nBad Name: 1\r\n\r\n",
            b"0\r\nX: a\0b\r\n\r\n",
            b"11111111111111111\r\n",
        ] {
            let got = decode(Framing::Chunked, u64::MAX, input);
            assert!(
                matches!(got, Err(Bad { status: 400, .. })),
                "{:?} -> {got:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_line = format!("1;{}\r\n", "e".repeat(CHUNK_LINE_MAX));
        assert_eq!(
            decode(Framing::Chunked, 10, long_line.as_bytes())
                .unwrap_err()
                .status,
            400
        );
        let mut endless = b"0\r\n".to_vec();
        while endless.len() <= TRAILERS_MAX + 8 {
            endless.extend_from_slice(b"X: 1\r\n");
        }
        let mut decoder = BodyDecoder::new(Framing::Chunked, 10).unwrap();
        assert_eq!(decoder.step(&endless).unwrap().consumed, 3);
        assert_eq!(decoder.step(&endless[3..]).unwrap_err().status, 431);
        // A size that would overflow the running total is too large, not a wrap.
        let mut decoder = BodyDecoder::new(Framing::Chunked, u64::MAX).unwrap();
        decoder.step(b"ffffffffffffffff\r\n").unwrap();
        assert_eq!(decoder.announced, u64::MAX);
    }

    #[test]
    fn chunked_decoding_does_not_depend_on_how_bytes_arrive() {
        let input = b"3\r\nabc\r\n10;x=y\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n";
        let whole = decode(Framing::Chunked, 100, input).unwrap();
        let mut decoder = BodyDecoder::new(Framing::Chunked, 100).unwrap();
        let (mut body, mut at) = (Vec::new(), 0);
        // Feed one more byte at a time, as a slow client would.
        for available in 0..=input.len() {
            loop {
                let step = decoder.step(&input[at..available]).unwrap();
                if step.consumed == 0 {
                    break;
                }
                body.extend_from_slice(&input[at..][step.data]);
                at += step.consumed;
            }
        }
        assert!(decoder.is_done());
        assert_eq!((body, at), whole);
    }
}
