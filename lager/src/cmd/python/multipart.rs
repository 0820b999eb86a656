//! A minimal `multipart/form-data` encoder for `POST /python`
//! (runner.md §1): text fields and byte parts, in the order added.

/// One request body under construction.
#[derive(Debug)]
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Multipart {
    /// `boundary` must not occur in any part; callers pass 128 random bits
    /// (hex), which no script plausibly contains.
    pub fn new(boundary: String) -> Multipart {
        Multipart {
            boundary,
            body: Vec::new(),
        }
    }

    fn head(&mut self, name: &str, filename: Option<&str>) {
        self.body.extend_from_slice(b"--");
        self.body.extend_from_slice(self.boundary.as_bytes());
        self.body
            .extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        self.body.extend_from_slice(quote(name).as_bytes());
        self.body.push(b'"');
        if let Some(filename) = filename {
            self.body.extend_from_slice(b"; filename=\"");
            self.body.extend_from_slice(quote(filename).as_bytes());
            self.body
                .extend_from_slice(b"\"\r\nContent-Type: application/octet-stream");
        }
        self.body.extend_from_slice(b"\r\n\r\n");
    }

    /// A plain text field.
    pub fn text(&mut self, name: &str, value: &str) {
        self.head(name, None);
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
    }

    /// A file part (`application/octet-stream`).
    pub fn file(&mut self, name: &str, filename: &str, bytes: &[u8]) {
        self.body.reserve(bytes.len() + 256);
        self.head(name, Some(filename));
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
    }

    /// The `Content-Type` header value.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// Closes the body.
    pub fn finish(mut self) -> Vec<u8> {
        self.body.extend_from_slice(b"--");
        self.body.extend_from_slice(self.boundary.as_bytes());
        self.body.extend_from_slice(b"--\r\n");
        self.body
    }
}

/// Header parameter quoting: `"` and CR/LF cannot appear raw.
fn quote(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_parts_in_order() {
        let mut form = Multipart::new("XyZ".into());
        form.text("detach", "0");
        form.text("args", "a b");
        form.file("script", "t\"1.py", b"print(1)\r\n");
        assert_eq!(form.content_type(), "multipart/form-data; boundary=XyZ");
        let body = form.finish();
        let expected = "--XyZ\r\nContent-Disposition: form-data; name=\"detach\"\r\n\r\n0\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"args\"\r\n\r\na b\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"script\"; filename=\"t\\\"1.py\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nprint(1)\r\n\r\n\
             --XyZ--\r\n";
        assert_eq!(String::from_utf8_lossy(&body), expected);
    }
}
