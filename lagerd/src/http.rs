//! Routes: decode a request, call the module that owns the state, encode
//! the reply. Every listener serves this one router (locking.md A.1), so the
//! two-implementation drift of the Python system cannot recur.

use std::path::PathBuf;
use std::sync::Arc;

use common::wire::LOCK_BODY_LIMIT;
use log::debug;
use serde_json::{json, Map, Value};

use crate::lockbox::{LockBox, LockError};
use crate::server::{Body, Client, Request, Response, Service};

/// What `/status` reports besides the lock (boxes.md §6).
pub struct BoxInfo {
    pub state_dir: PathBuf,
    pub sim: bool,
    pub enforce_locks: bool,
    pub token: Option<String>,
}

pub struct Api {
    lock_box: Arc<LockBox>,
    info: BoxInfo,
}

/// Why a request failed, before or after reaching its owner.
#[derive(Debug)]
pub enum ApiError {
    NotFound,
    MethodNotAllowed,
    /// A.9a: a mutating request without the box's bearer token.
    Unauthorized,
    InvalidJson,
    NotAnObject,
    /// `/cli-version` before install stamped one.
    NoVersionFile,
    Lock(LockError),
}

impl ApiError {
    fn status(&self) -> u16 {
        match self {
            ApiError::NotFound | ApiError::NoVersionFile => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::Unauthorized => 401,
            ApiError::InvalidJson | ApiError::NotAnObject => 400,
            ApiError::Lock(LockError::Invalid(_)) => 400,
            ApiError::Lock(LockError::NotLocked) => 404,
            ApiError::Lock(LockError::Held { status, .. }) => *status,
            ApiError::Lock(LockError::Persist(_)) => 500,
            ApiError::Lock(LockError::ShuttingDown) => 503,
            ApiError::Lock(LockError::Abandoned) => 408,
        }
    }

    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.to_string()));
        if let ApiError::Lock(LockError::Held { record, .. }) = self {
            body.insert("lock".into(), Value::Object(record));
        }
        let mut response = json_response(status, &Value::Object(body));
        if status == 401 {
            response.headers.push(("WWW-Authenticate", "Bearer".into()));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::NotFound => f.write_str("Not found"),
            ApiError::MethodNotAllowed => f.write_str("Method not allowed"),
            ApiError::Unauthorized => f.write_str("Authorization required"),
            ApiError::InvalidJson => f.write_str("Invalid JSON"),
            ApiError::NotAnObject => f.write_str("Expected a JSON object"),
            ApiError::NoVersionFile => f.write_str("Version file not found"),
            ApiError::Lock(e) => e.fmt(f),
        }
    }
}

impl From<LockError> for ApiError {
    fn from(e: LockError) -> ApiError {
        ApiError::Lock(e)
    }
}

impl Api {
    pub fn new(lock_box: Arc<LockBox>, info: BoxInfo) -> Api {
        Api { lock_box, info }
    }

    fn route(&self, request: &Request, client: &Client) -> Result<Response, ApiError> {
        let get = matches!(request.method.as_str(), "GET" | "HEAD");
        let post = request.method == "POST";
        let ok = |value: Value| Ok(json_response(200, &value));
        match request.path.as_str() {
            "/lock" if get => ok(self.lock_box.status()?),
            "/lock" if post => ok(self
                .lock_box
                .acquire(&json_object(&request.body)?, &|| client.gone())?),
            "/lock/heartbeat" if post => {
                ok(self.lock_box.heartbeat(&json_object(&request.body)?)?)
            }
            "/unlock" if post => ok(self.lock_box.release(&json_object(&request.body)?)?),
            "/status" if get => ok(self.status()),
            "/health" if get => ok(json!({
                "status": "healthy",
                "service": "lager-python-box",
                "version": self.version(),
            })),
            "/version" if get => Ok(Response {
                status: 200,
                headers: vec![("Content-Type", "text/plain".into())],
                body: Body::Full(format!("lager-python-box {}\n", self.version()).into_bytes()),
            }),
            "/hello" if get => ok(json!({
                "message": "Hello from Lager Python Box!",
                "service": "lager-python-box",
            })),
            "/cli-version" if get => {
                let text = std::fs::read(self.info.state_dir.join("cli_version.json"))
                    .map_err(|_| ApiError::NoVersionFile)?;
                ok(serde_json::from_slice(&text).map_err(|_| ApiError::NoVersionFile)?)
            }
            "/lock" | "/lock/heartbeat" | "/unlock" | "/status" | "/health" | "/version"
            | "/hello" | "/cli-version" => Err(ApiError::MethodNotAllowed),
            _ => Err(ApiError::NotFound),
        }
    }

    /// A.9a: with a token configured, everything but GET/HEAD needs it.
    fn authorized(&self, request: &Request) -> bool {
        let Some(token) = &self.info.token else {
            return true;
        };
        if matches!(request.method.as_str(), "GET" | "HEAD") {
            return true;
        }
        request
            .header("authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
    }

    /// The build version, unless install/update stamped `<state-dir>/version`
    /// (its text up to the first `|`).
    fn version(&self) -> String {
        std::fs::read_to_string(self.info.state_dir.join("version"))
            .ok()
            .and_then(|text| {
                let stamped = text.split('|').next().unwrap_or("").trim().to_string();
                (!stamped.is_empty()).then_some(stamped)
            })
            .unwrap_or_else(|| common::VERSION.to_string())
    }

    fn status(&self) -> Value {
        let version = self.version();
        json!({
            "healthy": true,
            "version": version,
            "box_version": version,
            "nets": self.net_summaries(),
            "capabilities": {
                "sim": self.info.sim,
                "lock_wait": true,
                "enforce_locks": self.info.enforce_locks,
                "token": self.info.token.is_some(),
            },
        })
    }

    /// Names and roles of the saved nets (instruments.md §3); `[]` when the
    /// box has none or the file is unreadable.
    fn net_summaries(&self) -> Value {
        let nets = std::fs::read(self.info.state_dir.join("saved_nets.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
            .unwrap_or_default();
        let summaries = nets
            .iter()
            .filter_map(|net| {
                let name = net.get("name")?.as_str()?;
                let role = net.get("role").and_then(Value::as_str).unwrap_or("unknown");
                Some(json!({"name": name, "type": role}))
            })
            .collect();
        Value::Array(summaries)
    }
}

impl Service for Api {
    fn body_limit(&self, _method: &str, _path: &str) -> usize {
        LOCK_BODY_LIMIT
    }

    fn handle(&self, request: Request, client: &Client) -> Response {
        let outcome = if self.authorized(&request) {
            self.route(&request, client)
        } else {
            Err(ApiError::Unauthorized)
        };
        let response = outcome.unwrap_or_else(ApiError::into_response);
        debug!(
            "{} {} {} -> {}",
            request.peer, request.method, request.path, response.status
        );
        response
    }

    fn refusal(&self, status: u16, message: &str) -> Response {
        json_response(status, &json!({ "error": message }))
    }
}

/// A.5: an empty body is `{}`; anything but a JSON object is refused.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body).map_err(|_| ApiError::InvalidJson)? {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::NotAnObject),
    }
}

fn json_response(status: u16, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Response {
        status,
        headers: vec![("Content-Type", "application/json".into())],
        body: Body::Full(body),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_parsed_per_a5() {
        assert!(json_object(b"").unwrap().is_empty());
        assert!(json_object(b" \r\n").unwrap().is_empty());
        for bad in [&b"{"[..], b"\xff\xfe", b"{\"user\": \"\xff\"}", b"nul"] {
            assert!(
                matches!(json_object(bad), Err(ApiError::InvalidJson)),
                "{bad:?}"
            );
        }
        for other in ["null", "[]", "\"x\"", "3", "true"] {
            assert!(
                matches!(json_object(other.as_bytes()), Err(ApiError::NotAnObject)),
                "{other}"
            );
        }
        assert_eq!(json_object(br#"{"user":"a"}"#).unwrap()["user"], "a");
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
