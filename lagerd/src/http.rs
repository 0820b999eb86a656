//! Routes: decode a request, call the module that owns the state, encode
//! the reply. Every listener serves this one router (locking.md A.1), so the
//! two-implementation drift of the Python system cannot recur.

use std::path::PathBuf;
use std::sync::Arc;

use common::console::{STREAM_CONTENT_TYPE, STREAM_VERSION, STREAM_VERSION_HEADER};
use common::holder::lock_scope;
use common::wire::{HOLDER_HEADER, LOCK_BODY_LIMIT, OUTPUT_VERSION_HEADER};
use log::debug;
use serde_json::{json, Map, Value};

use crate::console::{ConsoleError, Consoles, Position};
use crate::diagnose::Diagnose;
use crate::health::Health;
use crate::instruments::Instruments;
use crate::lockbox::{LockBox, LockError};
use crate::multipart;
use crate::nets::Nets;
use crate::runner::callers::{constant_time_eq, Caller};
use crate::runner::manage::{self, DownloadError, DOWNLOAD_ROOTS};
use crate::runner::{RunError, RunRequest, Runner, Started};
use crate::server::{Body, Client, Request, Response, Service};
use crate::sim::Simulator;

/// Largest `POST /python` upload (runner.md §1).
const UPLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// What `/status` reports besides the lock (boxes.md §6).
pub struct BoxInfo {
    pub state_dir: PathBuf,
    /// Running under `--sim`: the simulated Keithley 2281S (served as
    /// nets) and a simulated Rigol DP832 (for nets users add).
    pub simulator: Option<Simulator>,
    pub rigol: Option<Simulator>,
    /// A second simulated DP832 behind a pseudo-terminal (`ASRL…`).
    pub serial: Option<crate::sim::serial::SerialSimulator>,
    /// The simulated device whose console is `console1`.
    pub dut: Option<crate::sim::dut::SimDut>,
    pub enforce_locks: bool,
    pub token: Option<String>,
}

pub struct Api {
    lock_box: Arc<LockBox>,
    runner: Arc<Runner>,
    diagnose: Arc<Diagnose>,
    nets: Arc<Nets>,
    health: Arc<Health>,
    instruments: Arc<Instruments>,
    consoles: Arc<Consoles>,
    info: BoxInfo,
}

/// The parts behind the routes, each owning its own state.
pub struct Parts {
    pub lock_box: Arc<LockBox>,
    pub runner: Arc<Runner>,
    pub diagnose: Arc<Diagnose>,
    pub nets: Arc<Nets>,
    pub health: Arc<Health>,
    pub instruments: Arc<Instruments>,
    pub consoles: Arc<Consoles>,
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
    /// Runner failures carry `"status": "error"` (runner.md §3.4).
    Run(RunError),
    Download(DownloadError),
    /// A.10: a runner or hardware request from someone but the holder.
    Locked(Map<String, Value>),
    Console(ConsoleError),
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
            ApiError::Run(e) => e.status(),
            ApiError::Download(DownloadError::Forbidden) => 403,
            ApiError::Download(DownloadError::NotFound(_)) => 404,
            ApiError::Download(DownloadError::NotAFile) => 400,
            ApiError::Locked(_) => 423,
            ApiError::Console(e) => match e {
                ConsoleError::UnknownNet(_) => 404,
                ConsoleError::NotUart { .. } | ConsoleError::BadRequest(_) => 400,
                ConsoleError::WriterBusy { .. } | ConsoleError::NotWriter { .. } => 409,
                ConsoleError::NotOpen { .. } => 503,
                ConsoleError::WriteTimeout { .. } => 504,
                ConsoleError::Port { .. } => 502,
            },
        }
    }

    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.to_string()));
        match self {
            ApiError::Lock(LockError::Held { record, .. }) | ApiError::Locked(record) => {
                body.insert("lock".into(), Value::Object(record));
            }
            ApiError::Run(_) => {
                body.insert("status".into(), Value::String("error".into()));
            }
            // The instrument routes' shape (instruments.md §10.5), plus who
            // types when the writer is taken.
            ApiError::Console(e) => {
                body.insert("success".into(), Value::Bool(false));
                if let ConsoleError::WriterBusy { holder, .. } = e {
                    body.insert("writer".into(), Value::String(holder));
                }
            }
            _ => {}
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
            ApiError::Run(e) => e.fmt(f),
            ApiError::Download(e) => e.fmt(f),
            ApiError::Console(e) => e.fmt(f),
            ApiError::Locked(record) => {
                let user = record
                    .get("user")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                write!(f, "Box is locked by {user}")
            }
        }
    }
}

impl From<LockError> for ApiError {
    fn from(e: LockError) -> ApiError {
        ApiError::Lock(e)
    }
}

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> ApiError {
        ApiError::Console(e)
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        ApiError::Run(e)
    }
}

impl Api {
    pub fn new(parts: Parts, info: BoxInfo) -> Api {
        let Parts {
            lock_box,
            runner,
            diagnose,
            nets,
            health,
            instruments,
            consoles,
        } = parts;
        Api {
            lock_box,
            runner,
            diagnose,
            nets,
            health,
            instruments,
            consoles,
            info,
        }
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
            "/python" if post => self.run_python(request),
            "/python/kill" if post => ok(self.runner.kill(&runner_body(&request.body)?)?),
            "/python/attach" if post => {
                let run_dir = self.runner.attach_target(&runner_body(&request.body)?)?;
                Ok(framed_stream(Box::new(move |out, client| {
                    manage::follow(&run_dir, out, &|| client.gone())
                })))
            }
            "/python/continue" if post => ok(self.runner.resume(&runner_body(&request.body)?)?),
            "/python/breakpoint" if post => {
                ok(self.runner.breakpoint(&runner_body(&request.body)?)?)
            }
            "/download-file" if get => {
                let filename = request.query_param("filename").unwrap_or_default();
                let roots: Vec<PathBuf> = DOWNLOAD_ROOTS.iter().map(PathBuf::from).collect();
                let bytes = manage::download(&filename, &roots).map_err(ApiError::Download)?;
                Ok(Response {
                    status: 200,
                    headers: vec![("Content-Type", "application/octet-stream".into())],
                    body: Body::Full(bytes),
                })
            }
            "/diagnose/usb" if get => Ok(answer(self.diagnose.usb(&address_param(request)))),
            "/diagnose/visa" if get => Ok(answer(self.diagnose.visa(&address_param(request)))),
            "/diagnose/dispatcher" if get => {
                Ok(answer(self.diagnose.dispatcher(&address_param(request))))
            }
            "/nets/list" if get => ok(Value::Array(
                // `local`: the saved file only, without `--sim`'s nets.
                if request.query_param("local").is_some() {
                    self.nets.saved()
                } else {
                    self.nets.list()
                },
            )),
            "/wheels" if get => {
                let wheels: Vec<Value> = self
                    .runner
                    .script_env
                    .list_wheels()
                    .iter()
                    .map(|w| w.json())
                    .collect();
                let site = self.runner.script_env.site_dir().display().to_string();
                ok(json!({"wheels": wheels, "site": site}))
            }
            "/wheels" if post => self.install_wheels(request),
            "/wheels/uninstall" if post => {
                let body = json_object(&request.body)?;
                self.enforce_lock(self.holder(request, None).as_deref())?;
                let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
                Ok(match self.runner.script_env.uninstall_wheel(name) {
                    Ok(gone) => json_response(
                        200,
                        &json!({"success": true, "name": gone.name, "version": gone.version}),
                    ),
                    Err(e) => wheel_failure(&e),
                })
            }
            "/nets" if post => {
                let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&request.body) else {
                    return Ok(json_response(
                        400,
                        &json!({"success": false, "error": "Invalid JSON"}),
                    ));
                };
                Ok(match self.nets.change(&body) {
                    Ok(message) => {
                        // A uart net is captured from the moment it is saved.
                        self.consoles.sync();
                        json_response(200, &json!({"success": true, "message": message}))
                    }
                    Err((status, error)) => {
                        json_response(status, &json!({"success": false, "error": error}))
                    }
                })
            }
            "/cache/clear" if post => ok(self.instruments.clear_cache(false)),
            "/cache/clear_all" if post => ok(self.instruments.clear_cache(true)),
            "/cache/stats" if get => ok(self.instruments.cache_stats()),
            "/supply/monitor" if get => self.monitor(request, false),
            "/battery/monitor" if get => self.monitor(request, true),
            "/supply/command" if post => self.instrument_command(request, false),
            "/battery/command" if post => self.instrument_command(request, true),
            "/uart/stream" if get || post => self.uart_stream(request, post),
            "/uart/write" if post => self.uart_write(request),
            "/uart/release" if post => {
                let name = request.query_param("netname").unwrap_or_default();
                let session = request.query_param("session").unwrap_or_default();
                let released = self.consoles.console(&name)?.release(&session);
                ok(json!({"success": true, "released": released}))
            }
            "/uart/status" if get => match request.query_param("netname") {
                Some(name) => ok(self.consoles.console(&name)?.status()),
                None => ok(json!(self.consoles.stats())),
            },
            "/diagnose/uart" if get => {
                let name = request.query_param("net").unwrap_or_default();
                ok(self.consoles.diagnose(&name)?)
            }
            "/test-stream" if get => Ok(Response {
                status: 200,
                headers: vec![
                    ("Content-Type", "text/plain".into()),
                    (OUTPUT_VERSION_HEADER, "1".into()),
                ],
                body: Body::Full(b"1 12 Hello world\n- 1 0".to_vec()),
            }),
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

    /// `POST /python`: parse the upload, enforce the lock, start the job.
    fn run_python(&self, request: &Request) -> Result<Response, ApiError> {
        let parse_failed =
            |why: String| RunError::BadRequest(format!("Failed to parse request: {why}"));
        let boundary = request.header("content-type").and_then(multipart::boundary);
        let parts = match boundary {
            _ if request.body.is_empty() => Vec::new(),
            None => Vec::new(),
            Some(Err(e)) => return Err(parse_failed(e.to_string()).into()),
            Some(Ok(boundary)) => multipart::parse(&request.body, &boundary)
                .map_err(|e| parse_failed(e.to_string()))?,
        };
        let mut run = RunRequest::from_parts(&parts)?;
        run.holder = self.holder(request, run.holder.as_deref());
        self.enforce_lock(run.holder.as_deref())?;
        match self.runner.start(run, &request.peer.ip().to_string())? {
            Started::Detached { pid, id } => Ok(json_response(
                200,
                &json!({"status": "detached", "pid": pid, "lager_process_id": id}),
            )),
            Started::Attached(job) => {
                let runner = self.runner.clone();
                Ok(framed_stream(Box::new(move |out, client| {
                    job.stream(out, &|| client.gone(), &runner.quiesce)
                })))
            }
        }
    }

    /// `POST /wheels` (scripts.md §3): multipart, one part named `wheel` per
    /// file, its filename the wheel's; installed all or none. Lock-enforced:
    /// it changes what every later job imports.
    fn install_wheels(&self, request: &Request) -> Result<Response, ApiError> {
        self.enforce_lock(self.holder(request, None).as_deref())?;
        let bad = |why: String| Ok(json_response(400, &json!({"success": false, "error": why})));
        let parts = match request.header("content-type").and_then(multipart::boundary) {
            Some(Ok(boundary)) => match multipart::parse(&request.body, &boundary) {
                Ok(parts) => parts,
                Err(e) => return bad(format!("Failed to parse request: {e}")),
            },
            _ => return bad("send the wheels as multipart/form-data".into()),
        };
        let mut wheels = Vec::new();
        for part in parts.iter().filter(|p| p.name == "wheel") {
            let Some(file) = part.filename.clone() else {
                return bad("a wheel part has no filename: the wheel's name comes from it".into());
            };
            wheels.push((file, part.data));
        }
        Ok(match self.runner.script_env.install_wheels(&wheels) {
            Ok(installed) => {
                let installed: Vec<Value> = installed.iter().map(|w| w.json()).collect();
                json_response(200, &json!({"success": true, "installed": installed}))
            }
            Err(e) => wheel_failure(&e),
        })
    }

    /// `GET /supply|battery/monitor`: an NDJSON stream of the net's state.
    fn monitor(&self, request: &Request, battery: bool) -> Result<Response, ApiError> {
        let name = request.query_param("netname").unwrap_or_default();
        let holder = request
            .header(HOLDER_HEADER)
            .map(str::to_string)
            .unwrap_or_else(|| format!("a client at {}", request.peer.ip()));
        let interval = request.query_param("interval");
        match self
            .instruments
            .monitor(battery, &name, interval.as_deref(), holder)
        {
            Err(refused) => Ok(answer(refused)),
            Ok(stream) => Ok(Response {
                status: 200,
                headers: vec![("Content-Type", "application/x-ndjson".into())],
                body: Body::Stream(Box::new(move |out, client| {
                    // The registry may ask from other threads; a `Client`
                    // answers "gone" for good once its connection closed.
                    let client = client.clone();
                    stream.run(out, Arc::new(move || client.gone()))
                })),
            }),
        }
    }

    /// `POST /supply|battery/command`; hardware changes are lock-enforced.
    fn instrument_command(&self, request: &Request, battery: bool) -> Result<Response, ApiError> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&request.body) else {
            return Ok(json_response(
                400,
                &json!({"success": false, "error": "Invalid JSON"}),
            ));
        };
        if Instruments::mutates(battery, &body) {
            let holder = self.holder(request, body.get("holder").and_then(Value::as_str));
            self.enforce_lock(holder.as_deref())?;
        }
        Ok(answer(self.instruments.command(battery, &body)))
    }

    /// `GET /uart/stream` reads a console (console.md §3); `POST` also
    /// claims its writer (token and lock enforced, like any change) for as
    /// long as the stream lasts.
    fn uart_stream(&self, request: &Request, post: bool) -> Result<Response, ApiError> {
        let name = request.query_param("netname").unwrap_or_default();
        let console = self.consoles.console(&name)?;
        let position = Position::from_query(
            request.query_param("from").as_deref(),
            request.query_param("since").as_deref(),
            request.query_param("tail").as_deref(),
        )?;
        let claim = if post {
            // A script's job acts as its run's holder (scripts.md §1).
            let holder = self.holder(request, None);
            self.enforce_lock(holder.as_deref())?;
            let who = holder.unwrap_or_else(|| format!("a client at {}", request.peer.ip()));
            let takeover = request.query_param("takeover").as_deref() == Some("1");
            Some(console.claim(&who, takeover)?)
        } else {
            None
        };
        let data = request.query_param("data").as_deref() != Some("0");
        let reader = console.reader(position, claim, data);
        Ok(Response {
            status: 200,
            headers: vec![
                ("Content-Type", STREAM_CONTENT_TYPE.into()),
                (STREAM_VERSION_HEADER, STREAM_VERSION.into()),
            ],
            body: Body::Stream(Box::new(move |out, client| {
                reader.run(out, &|| client.gone())
            })),
        })
    }

    /// `POST /uart/write?netname=N&session=S`: the body's bytes to the port,
    /// from the stream that holds the writer.
    fn uart_write(&self, request: &Request) -> Result<Response, ApiError> {
        let name = request.query_param("netname").unwrap_or_default();
        let console = self.consoles.console(&name)?;
        self.enforce_lock(self.holder(request, None).as_deref())?;
        let session = request.query_param("session").unwrap_or_default();
        let written = console.write(&session, &request.body)?;
        Ok(json_response(
            200,
            &json!({"success": true, "written": written}),
        ))
    }

    /// Who a request acts for (A.10): its `Lager-Holder` header, else the
    /// body's `holder`, else, for a request from a job, its run's holder.
    fn holder(&self, request: &Request, body_holder: Option<&str>) -> Option<String> {
        request
            .header(HOLDER_HEADER)
            .or(body_holder)
            .map(str::to_string)
            .or_else(|| self.caller(request).and_then(|job| job.holder))
    }

    /// The job a request comes from, by its job token (`runner::callers`).
    fn caller(&self, request: &Request) -> Option<Caller> {
        let token = request.header("authorization")?.strip_prefix("Bearer ")?;
        self.runner.callers.find(token.trim())
    }

    /// A.10: with `--enforce-locks`, only the holder's scope may proceed.
    fn enforce_lock(&self, holder: Option<&str>) -> Result<(), ApiError> {
        if !self.info.enforce_locks {
            return Ok(());
        }
        let Value::Object(record) = self.lock_box.status()? else {
            return Ok(());
        };
        if record.get("locked") != Some(&Value::Bool(true)) {
            return Ok(());
        }
        let stored = record
            .get("user")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match holder {
            Some(given) if lock_scope(given) == lock_scope(stored) => Ok(()),
            _ => Err(ApiError::Locked(record)),
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
        let given = request
            .header("authorization")
            .and_then(|value| value.strip_prefix("Bearer "));
        // A job's own token stands for the box's (scripts.md §1).
        given.is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
            || self.caller(request).is_some()
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
            "health": self.health_with_consoles(),
            "capabilities": {
                "sim": self.info.simulator.is_some(),
                "simulator": self.info.simulator.as_ref().map(simulator_json),
                "rigol_simulator": self.info.rigol.as_ref().map(simulator_json),
                "serial_simulator": self.info.serial.as_ref().map(|sim| json!({
                    "address": sim.visa_address(),
                    "control": sim.control.to_string(),
                })),
                "dut_simulator": self.info.dut.as_ref().map(|dut| json!({
                    "link": dut.link.display().to_string(),
                    "control": dut.control.to_string(),
                })),
                "uart": true,
                "lock_wait": true,
                "enforce_locks": self.info.enforce_locks,
                "token": self.info.token.is_some(),
            },
        })
    }

    /// The health report with each console's state (console.md §2): open,
    /// gone or held, bytes captured, readers, writer.
    fn health_with_consoles(&self) -> Value {
        let mut health = self.health.report();
        if let Value::Object(map) = &mut health {
            map.insert("consoles".into(), json!(self.consoles.stats()));
        }
        health
    }

    /// Names and roles of the saved nets, for `/status`.
    fn net_summaries(&self) -> Value {
        let nets = self.nets.list();
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
    fn body_limit(&self, method: &str, path: &str) -> usize {
        if method == "POST" && (path == "/python" || path == "/wheels") {
            UPLOAD_LIMIT
        } else {
            LOCK_BODY_LIMIT
        }
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

    fn refusal(&self, status: u16, message: &str, path: Option<&str>) -> Response {
        if path.is_some_and(|p| p.starts_with("/python")) {
            return json_response(status, &json!({ "error": message, "status": "error" }));
        }
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

/// Runner management bodies (runner.md §4): empty, invalid or non-object
/// JSON is 400 `Invalid JSON` (the Python system answered 500).
fn runner_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(RunError::BadRequest("Invalid JSON".into()).into()),
    }
}

fn wheel_failure(error: &crate::scriptenv::wheels::WheelError) -> Response {
    let mut body = json!({"success": false, "error": error.to_string()});
    if let crate::scriptenv::wheels::WheelError::Pip { what, output } = error {
        body["wheel"] = json!(what);
        body["output"] = json!(output);
    }
    json_response(error.status(), &body)
}

fn simulator_json(sim: &Simulator) -> Value {
    json!({"address": sim.visa_address(), "control": sim.control.to_string()})
}

/// The `address` query parameter of the diagnose routes, `""` when absent.
fn address_param(request: &Request) -> String {
    request.query_param("address").unwrap_or_default()
}

fn answer((status, body): (u16, Value)) -> Response {
    json_response(status, &body)
}

/// A `text/plain` framed stream with `Lager-Output-Version: 1` (§3.1).
fn framed_stream(produce: crate::server::StreamBody) -> Response {
    Response {
        status: 200,
        headers: vec![
            ("Content-Type", "text/plain".into()),
            (OUTPUT_VERSION_HEADER, "1".into()),
        ],
        body: Body::Stream(produce),
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
