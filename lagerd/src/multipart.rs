//! `multipart/form-data` parsing for `POST /python` (runner.md §1), byte
//! exact: binary data, CRLF and boundary-like text inside a part arrive
//! intact. Written by hand: the crates for it are unmaintained or async
//! (shared/notes/dependencies.md). Part bodies borrow from the request body.

/// One form field. Content types are ignored, and the runner never depends
/// on filenames (the Python client gives every part one, runner.md §1);
/// `/wheels` takes a wheel's name from its filename (scripts.md §3).
#[derive(Debug, PartialEq)]
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub data: &'a [u8],
}

#[derive(Debug, PartialEq)]
pub enum MultipartError {
    NoBoundary,
    NoOpeningBoundary,
    Unterminated,
    BadPartHeaders,
    NoName,
}

impl std::fmt::Display for MultipartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MultipartError::NoBoundary => "multipart Content-Type without a boundary",
            MultipartError::NoOpeningBoundary => "body does not start with the multipart boundary",
            MultipartError::Unterminated => "multipart body ends before its closing boundary",
            MultipartError::BadPartHeaders => "a multipart part has malformed headers",
            MultipartError::NoName => "a multipart part has no form field name",
        })
    }
}

/// The boundary of a `multipart/form-data` Content-Type, or `None` when the
/// body is not multipart (the spec reads such a body as having no fields).
pub fn boundary(content_type: &str) -> Option<Result<String, MultipartError>> {
    let mut params = content_type.split(';');
    let mime = params.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params.find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
    });
    Some(
        boundary
            .filter(|b| !b.is_empty() && b.len() <= 200)
            .ok_or(MultipartError::NoBoundary),
    )
}

/// Splits `body` into its parts, in order.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, MultipartError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // Preamble: anything before the first delimiter is ignored (RFC 2046).
    let first = find(body, delimiter, 0).ok_or(MultipartError::NoOpeningBoundary)?;
    let mut cursor = first + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body[cursor..].starts_with(b"--") {
            return Ok(parts);
        }
        // The delimiter line may carry transport padding before its CRLF.
        let line_end = find(body, b"\r\n", cursor).ok_or(MultipartError::Unterminated)?;
        if body[cursor..line_end]
            .iter()
            .any(|b| !matches!(b, b' ' | b'\t'))
        {
            return Err(MultipartError::BadPartHeaders);
        }
        let headers_start = line_end + 2;
        let (headers_end, data_start) = if body[headers_start..].starts_with(b"\r\n") {
            (headers_start, headers_start + 2)
        } else {
            let end = find(body, b"\r\n\r\n", headers_start).ok_or(MultipartError::Unterminated)?;
            (end, end + 4)
        };
        let (name, filename) = field_name(&body[headers_start..headers_end])?;
        let mut next_delimiter = Vec::with_capacity(delimiter.len() + 2);
        next_delimiter.extend_from_slice(b"\r\n");
        next_delimiter.extend_from_slice(delimiter);
        let data_end =
            find(body, &next_delimiter, data_start).ok_or(MultipartError::Unterminated)?;
        parts.push(Part {
            name,
            filename,
            data: &body[data_start..data_end],
        });
        cursor = data_end + next_delimiter.len();
    }
}

/// The `name` and `filename` of a part's `Content-Disposition: form-data;
/// name="..."; filename="..."`.
fn field_name(headers: &[u8]) -> Result<(String, Option<String>), MultipartError> {
    let text = std::str::from_utf8(headers).map_err(|_| MultipartError::BadPartHeaders)?;
    for line in text.split("\r\n") {
        let (key, value) = line.split_once(':').ok_or(MultipartError::BadPartHeaders)?;
        if !key.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let (mut name, mut filename) = (None, None);
        for param in value.split(';').skip(1) {
            if let Some((key, value)) = param.split_once('=') {
                let value = value.trim().trim_matches('"').to_string();
                if key.trim().eq_ignore_ascii_case("name") {
                    name = name.or(Some(value));
                } else if key.trim().eq_ignore_ascii_case("filename") {
                    filename = filename.or(Some(value));
                }
            }
        }
        return name.map(|n| (n, filename)).ok_or(MultipartError::NoName);
    }
    Err(MultipartError::NoName)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let offset = haystack[at..=haystack.len() - needle.len()]
            .iter()
            .position(|b| *b == first)?;
        at += offset;
        if &haystack[at..at + needle.len()] == needle {
            return Some(at);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, &[u8])], boundary: &str) -> Vec<u8> {
        let mut out = b"preamble\r\n".to_vec();
        for (name, data) in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            );
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    #[test]
    fn reads_the_boundary_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc"),
            Some(Ok("abc".into()))
        );
        assert_eq!(
            boundary("Multipart/Form-Data;boundary=\"a b\""),
            Some(Ok("a b".into()))
        );
        assert_eq!(
            boundary("multipart/form-data"),
            Some(Err(MultipartError::NoBoundary))
        );
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary(""), None);
    }

    #[test]
    fn parts_arrive_byte_exact_and_in_order() {
        let binary: Vec<u8> = (0..=255u8).collect();
        // Boundary-like text that is not the delimiter (clients pick a
        // boundary that never occurs in the data, as RFC 2046 requires).
        let tricky = b"line\r\n--bound but not the boundary\r\n--boundar\r\n\r\n--";
        let parts = [
            ("args", &b"one"[..]),
            ("args", b""),
            ("script", &binary),
            ("env", tricky),
        ];
        let bytes = body(&parts, "boundary");
        let got = parse(&bytes, "boundary").unwrap();
        let expect: Vec<Part> = parts
            .iter()
            .map(|(name, data)| Part {
                name: name.to_string(),
                filename: Some(name.to_string()),
                data,
            })
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn malformed_bodies_are_errors_never_panics() {
        let good = body(&[("a", b"1")], "b");
        assert_eq!(parse(b"", "b"), Err(MultipartError::NoOpeningBoundary));
        assert_eq!(
            parse(
                b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1",
                "b"
            ),
            Err(MultipartError::Unterminated)
        );
        assert_eq!(
            parse(b"--b\r\nX-No-Disposition: 1\r\n\r\n1\r\n--b--", "b"),
            Err(MultipartError::NoName)
        );
        assert_eq!(
            parse(b"--bJUNK\r\n\r\n", "b"),
            Err(MultipartError::BadPartHeaders)
        );
        // A body cut anywhere is an error until its closing delimiter is
        // in: an upload that lost its end never runs with part of a script.
        let whole = parse(&good, "b").unwrap();
        let closed = good.len() - "\r\n".len();
        for cut in 0..good.len() {
            match parse(&good[..cut], "b") {
                Ok(parts) => assert!(cut >= closed && parts == whole, "cut at {cut}: {parts:?}"),
                Err(e) => assert!(cut < closed, "cut at {cut}: {e}"),
            }
        }
        assert_eq!(parse(b"--b--", "b"), Ok(vec![]));
    }
}
