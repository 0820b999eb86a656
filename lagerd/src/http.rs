//! Routes: decode a request, call the module that owns the state, encode
//! the reply. Every listener serves this one router (locking.md A.1), so the
//! two-implementation drift of the Python system cannot recur.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use common::console::{STREAM_CONTENT_TYPE, STREAM_VERSION, STREAM_VERSION_HEADER};
use common::holder::{format_lock_user, lock_scope};
use common::wire::{HOLDER_HEADER, LOCK_BODY_LIMIT, OUTPUT_VERSION_HEADER};
use log::debug;
use serde_json::{json, Map, Value};

use crate::console::{ConsoleError, Consoles, Position};
use crate::diagnose::{Diagnose, DiagnoseError, Facts};
use crate::fsutil::read_limited;
use crate::health::Health;
use crate::instruments::scpi::{DriverError, Outcome};
use crate::instruments::session::SessionError;
use crate::instruments::{CommandError, Instruments};
use crate::lockbox::{LockBox, LockError};
use crate::metrics;
use crate::multipart;
use crate::nets::{Nets, NetsError};
use crate::runner::callers::{constant_time_eq, Caller};
use crate::runner::manage::{self, DownloadError, DOWNLOAD_ROOTS};
use crate::runner::{RunError, RunRequest, Runner, Started};
use crate::scriptenv::wheels::WheelError;
use crate::server::{Body, Client, Request, Response, Service};

/// How much of each console the status page shows.
const CONSOLE_TAIL_BYTES: usize = 2048;

/// Largest `POST /python` upload (runner.md §1).
const UPLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// What `/status` reports besides the lock (boxes.md §6).
pub struct BoxInfo {
    pub state_dir: PathBuf,
    /// What `--sim` started; nothing without it.
    pub simulated: Simulated,
    pub enforce_locks: bool,
    pub token: Option<String>,
    /// `--metrics-token`: the bearer token `GET /metrics` requires.
    pub metrics_token: Option<String>,
}

/// What `--sim` started, for `/status`'s `capabilities`: a simulated
/// Keithley 2281S (served as nets), a simulated Rigol DP832 (for nets users
/// add), a second DP832 behind a pseudo-terminal (`ASRL…`) and a device
/// under test with a serial console. Addresses only: the router reaches a
/// simulator as it reaches hardware.
#[derive(Default)]
pub struct Simulated {
    pub keithley: Option<SimulatedInstrument>,
    pub rigol: Option<SimulatedInstrument>,
    pub serial: Option<SimulatedInstrument>,
    /// A simulated device under test whose console is `console1`.
    pub dut: Option<SimulatedConsole>,
}

/// Where a simulated device's console appears, as `/dev/serial/by-id`
/// would show a real one, and where its device is driven.
pub struct SimulatedConsole {
    /// The link to its pty, in the state dir.
    pub link: String,
    /// The simulated device's control port.
    pub control: std::net::SocketAddr,
}

/// Where a simulated instrument answers, and where its faults are driven.
pub struct SimulatedInstrument {
    /// Its VISA address, as a net names it.
    pub address: String,
    /// Its fault-injection control port.
    pub control: std::net::SocketAddr,
}

impl SimulatedInstrument {
    fn json(&self) -> Value {
        json!({"address": self.address, "control": self.control.to_string()})
    }
}

pub struct Api {
    parts: Parts,
    info: BoxInfo,
    /// The server's open-connection count, once it runs (`/metrics`).
    connections: OnceLock<Arc<AtomicUsize>>,
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
    /// A supply or battery command that was not carried out (§7, §10).
    Command(CommandError),
    /// A monitor that did not start; as `Command`, but a watch of the
    /// other role is a 409 (§7.1).
    Monitor(CommandError),
    /// A wheel change that did not happen (scripts.md §3).
    Wheel(WheelError),
    /// `POST /nets` refused or could not save a change (§10.6).
    Nets(NetsError),
    /// diagnose.md §3: a request without an address, or not a USB one.
    Diagnose(DiagnoseError),
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
            ApiError::Lock(LockError::Taken { .. }) => 409,
            ApiError::Lock(LockError::NotHolder { .. }) => 403,
            ApiError::Lock(LockError::Persist(_)) => 500,
            ApiError::Lock(LockError::ShuttingDown) => 503,
            ApiError::Lock(LockError::Abandoned) => 408,
            ApiError::Run(e) => run_status(e),
            ApiError::Download(DownloadError::Forbidden) => 403,
            ApiError::Download(DownloadError::NotFound(_)) => 404,
            ApiError::Download(DownloadError::NotAFile) => 400,
            ApiError::Diagnose(_) => 400,
            ApiError::Nets(NetsError::NotSaved(_)) => 404,
            ApiError::Nets(NetsError::Save(_)) => 500,
            ApiError::Nets(_) => 400,
            ApiError::Wheel(WheelError::BadUpload(_)) => 400,
            ApiError::Wheel(WheelError::NotInstalled(_)) => 404,
            ApiError::Wheel(WheelError::Pip { .. }) => 422,
            ApiError::Wheel(WheelError::Io(_)) => 500,
            ApiError::Command(e) => instrument_status(e, 200),
            ApiError::Monitor(e) => instrument_status(e, 409),
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
            ApiError::Lock(LockError::Taken { record } | LockError::NotHolder { record })
            | ApiError::Locked(record) => {
                body.insert("lock".into(), Value::Object(record));
            }
            ApiError::Run(_) => {
                body.insert("status".into(), Value::String("error".into()));
            }
            ApiError::Command(_) | ApiError::Monitor(_) | ApiError::Nets(_) => {
                body.insert("success".into(), Value::Bool(false));
            }
            // scripts.md §3: pip's failure names the wheel and pip's last lines.
            ApiError::Wheel(e) => {
                body.insert("success".into(), Value::Bool(false));
                if let WheelError::Pip { what, output } = e {
                    body.insert("wheel".into(), Value::String(what));
                    body.insert("output".into(), Value::String(output));
                }
            }
            ApiError::Diagnose(DiagnoseError::NotUsb { address }) => {
                body.insert("address".into(), Value::String(address));
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
            ApiError::Diagnose(e) => e.fmt(f),
            ApiError::Command(e) | ApiError::Monitor(e) => e.fmt(f),
            ApiError::Nets(e) => e.fmt(f),
            ApiError::Wheel(e) => e.fmt(f),
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
        Api {
            parts,
            info,
            connections: OnceLock::new(),
        }
    }

    /// Gives `/metrics` the server's open-connection count.
    pub fn count_connections(&self, open: Arc<AtomicUsize>) {
        let _ = self.connections.set(open);
    }

    /// The route table's answer to `request`: 404 for an unknown path, 405
    /// for a known path with another method, 401 when token mode wants the
    /// token, else the handler's reply.
    fn route(&self, request: &Request, client: &Client) -> Result<Response, ApiError> {
        let route = Route::find(&request.method, &request.path)?;
        if !self.authorized(request, route) {
            return Err(ApiError::Unauthorized);
        }
        (route.handler)(self, request, client)
    }

    fn lock_status(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.parts.lock_box.status()?)
    }

    fn lock(&self, request: &Request, client: &Client) -> Result<Response, ApiError> {
        ok(self
            .parts
            .lock_box
            .acquire(&json_object(&request.body)?, &|| client.gone())?)
    }

    fn heartbeat(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self
            .parts
            .lock_box
            .heartbeat(&json_object(&request.body)?)?)
    }

    fn unlock(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.parts.lock_box.release(&json_object(&request.body)?)?)
    }

    fn status_route(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.status())
    }

    fn health(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(json!({
            "status": "healthy",
            "service": "lager-python-box",
            "version": self.version(),
        }))
    }

    fn version_route(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        Ok(Response {
            status: 200,
            headers: vec![("Content-Type", "text/plain".into())],
            body: Body::Full(format!("lager-python-box {}\n", self.version()).into_bytes()),
        })
    }

    fn hello(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(json!({
            "message": "Hello from Lager Python Box!",
            "service": "lager-python-box",
        }))
    }

    fn python_kill(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.parts.runner.kill(&runner_body(&request.body)?)?)
    }

    fn python_attach(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        let run_dir = self
            .parts
            .runner
            .attach_target(&runner_body(&request.body)?)?;
        Ok(framed_stream(Box::new(move |out, client| {
            manage::follow(&run_dir, out, &|| client.gone())
        })))
    }

    fn python_continue(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.parts.runner.resume(&runner_body(&request.body)?)?)
    }

    fn python_breakpoint(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.parts.runner.breakpoint(&runner_body(&request.body)?)?)
    }

    fn download(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        let filename = request.query_param("filename").unwrap_or_default();
        let roots: Vec<PathBuf> = DOWNLOAD_ROOTS.iter().map(PathBuf::from).collect();
        let file = manage::download(&filename, &roots).map_err(ApiError::Download)?;
        Ok(Response {
            status: 200,
            headers: vec![("Content-Type", "application/octet-stream".into())],
            body: Body::Stream(Box::new(move |out, client| {
                manage::send_file(file, out, &|| client.gone())
            })),
        })
    }

    fn diagnose_usb(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        facts(self.parts.diagnose.usb(&address_param(request)))
    }

    fn diagnose_visa(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        facts(self.parts.diagnose.visa(&address_param(request)))
    }

    fn diagnose_dispatcher(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        facts(self.parts.diagnose.dispatcher(&address_param(request)))
    }

    fn nets_list(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(Value::Array(
            // `local`: the saved file only, without `--sim`'s nets.
            if request.query_param("local").is_some() {
                self.parts.nets.saved()
            } else {
                self.parts.nets.list()
            },
        ))
    }

    fn wheels_list(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        let wheels: Vec<Value> = self
            .parts
            .runner
            .script_env
            .list_wheels()
            .iter()
            .map(|w| w.json())
            .collect();
        let site = self
            .parts
            .runner
            .script_env
            .site_dir()
            .display()
            .to_string();
        ok(json!({"wheels": wheels, "site": site}))
    }

    fn wheels_install(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        self.install_wheels(request)
    }

    fn wheels_uninstall(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        let body = json_object(&request.body)?;
        self.enforce_lock(self.holder(request, None).as_deref())?;
        let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
        let gone = self
            .parts
            .runner
            .script_env
            .uninstall_wheel(name)
            .map_err(ApiError::Wheel)?;
        ok(json!({"success": true, "name": gone.name, "version": gone.version}))
    }

    fn metrics_route(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        self.metrics(request)
    }

    fn page_route(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        Ok(self.page(request))
    }

    fn overview_route(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.overview())
    }

    fn nets_change(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&request.body) else {
            return Ok(json_response(
                400,
                &json!({"success": false, "error": "Invalid JSON"}),
            ));
        };
        let message = self.parts.nets.change(&body).map_err(ApiError::Nets)?;
        // A uart net is captured from the moment it is saved.
        self.parts.consoles.sync();
        ok(json!({"success": true, "message": message}))
    }

    fn uart_read(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        self.uart_stream(request, false)
    }

    fn uart_type(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        self.uart_stream(request, true)
    }

    fn uart_write_route(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        self.uart_write(request)
    }

    fn uart_release(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        let name = request.query_param("netname").unwrap_or_default();
        let session = request.query_param("session").unwrap_or_default();
        let released = self.parts.consoles.console(&name)?.release(&session);
        ok(json!({"success": true, "released": released}))
    }

    fn uart_status(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        match request.query_param("netname") {
            Some(name) => ok(self.parts.consoles.console(&name)?.status()),
            None => ok(json!(self.parts.consoles.stats())),
        }
    }

    fn diagnose_uart(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        let name = request.query_param("net").unwrap_or_default();
        ok(self.parts.consoles.diagnose(&name)?)
    }

    fn cache_clear(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.parts.instruments.clear_cache(false))
    }

    fn cache_clear_all(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.parts.instruments.clear_cache(true))
    }

    fn cache_stats(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        ok(self.parts.instruments.cache_stats())
    }

    fn supply_monitor(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        self.monitor(request, false)
    }

    fn battery_monitor(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        self.monitor(request, true)
    }

    fn supply_command(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        self.instrument_command(request, false)
    }

    fn battery_command(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        self.instrument_command(request, true)
    }

    fn test_stream(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        Ok(Response {
            status: 200,
            headers: vec![
                ("Content-Type", "text/plain".into()),
                (OUTPUT_VERSION_HEADER, "1".into()),
            ],
            body: Body::Full(b"1 12 Hello world\n- 1 0".to_vec()),
        })
    }

    fn cli_version(&self, _: &Request, _: &Client) -> Result<Response, ApiError> {
        let text = read_limited(&self.info.state_dir.join("cli_version.json"), 64 * 1024)
            .map_err(|_| ApiError::NoVersionFile)?;
        ok(serde_json::from_slice(&text).map_err(|_| ApiError::NoVersionFile)?)
    }

    /// `POST /python`: parse the upload, enforce the lock, start the job.
    fn run_python(&self, request: &Request, _: &Client) -> Result<Response, ApiError> {
        let boundary = request.header("content-type").and_then(multipart::boundary);
        let parts = match boundary {
            _ if request.body.is_empty() => Vec::new(),
            None => Vec::new(),
            Some(Err(e)) => return Err(RunError::Upload(e).into()),
            Some(Ok(boundary)) => {
                multipart::parse(&request.body, &boundary).map_err(RunError::Upload)?
            }
        };
        let mut run = RunRequest::from_parts(&parts)?;
        run.holder = self.holder(request, run.holder.as_deref());
        self.enforce_lock(run.holder.as_deref())?;
        match self
            .parts
            .runner
            .start(run, &request.peer.ip().to_string())?
        {
            Started::Detached { pid, id } => Ok(json_response(
                200,
                &json!({"status": "detached", "pid": pid, "lager_process_id": id}),
            )),
            Started::Attached(job) => {
                let runner = self.parts.runner.clone();
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
        let bad = |why: String| ApiError::Wheel(WheelError::BadUpload(why));
        let parts = match request.header("content-type").and_then(multipart::boundary) {
            Some(Ok(boundary)) => multipart::parse(&request.body, &boundary)
                .map_err(|e| bad(format!("Failed to parse request: {e}")))?,
            _ => return Err(bad("send the wheels as multipart/form-data".into())),
        };
        let mut wheels = Vec::new();
        for part in parts.iter().filter(|p| p.name == "wheel") {
            let Some(file) = part.filename.clone() else {
                return Err(bad(
                    "a wheel part has no filename: the wheel's name comes from it".into(),
                ));
            };
            wheels.push((file, part.data));
        }
        let installed = self
            .parts
            .runner
            .script_env
            .install_wheels(&wheels)
            .map_err(ApiError::Wheel)?;
        let installed: Vec<Value> = installed.iter().map(|w| w.json()).collect();
        ok(json!({"success": true, "installed": installed}))
    }

    /// `GET /supply|battery/monitor`: an NDJSON stream of the net's state.
    fn monitor(&self, request: &Request, battery: bool) -> Result<Response, ApiError> {
        let name = request.query_param("netname").unwrap_or_default();
        let holder = request
            .header(HOLDER_HEADER)
            .map(str::to_string)
            .unwrap_or_else(|| format!("a client at {}", request.peer.ip()));
        let interval = request.query_param("interval");
        let observe = request.query_param("observe").as_deref() == Some("1");
        match self
            .parts
            .instruments
            .monitor(battery, &name, interval.as_deref(), holder, observe)
        {
            Err(refused) => Err(ApiError::Monitor(refused)),
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
        let action = body.get("action").cloned();
        let Outcome { message, state } = self
            .parts
            .instruments
            .command(battery, &body)
            .map_err(ApiError::Command)?;
        let mut reply = json!({"success": true, "action": action, "message": message});
        if let Some(state) = state {
            reply["state"] = state;
        }
        ok(reply)
    }

    /// `GET /uart/stream` reads a console (console.md §3); `POST` also
    /// claims its writer (token and lock enforced, like any change) for as
    /// long as the stream lasts.
    fn uart_stream(&self, request: &Request, post: bool) -> Result<Response, ApiError> {
        let name = request.query_param("netname").unwrap_or_default();
        let console = self.parts.consoles.console(&name)?;
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
        let console = self.parts.consoles.console(&name)?;
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
        self.parts.runner.callers.find(token.trim())
    }

    /// `GET /metrics` (fleet.md §1): read from each part's cheap accessor;
    /// nothing here touches an instrument, the lock file's flock or a job.
    fn metrics(&self, request: &Request) -> Result<Response, ApiError> {
        if let Some(token) = &self.info.metrics_token {
            if !bearer_matches(request, token) {
                return Err(ApiError::Unauthorized);
            }
        }
        let lock = self.parts.lock_box.snapshot();
        let health = self.parts.health.report();
        let sources = metrics::Sources {
            version: self.version(),
            lock: metrics::LockGauge {
                held_by: lock.as_ref().map(|record| {
                    metrics::holder_class(record.get("holder_type").and_then(Value::as_str))
                }),
                held_secs: lock
                    .as_ref()
                    .map_or(0.0, |record| self.parts.lock_box.held_secs(record)),
                queue_length: self.parts.lock_box.queue_length(),
            },
            connections: self
                .connections
                .get()
                .map_or(0, |open| open.load(Ordering::Relaxed)),
            sessions: self.parts.instruments.session_states(),
            health: health["nets"]
                .as_array()
                .map(|nets| {
                    nets.iter()
                        .filter_map(|net| {
                            Some((
                                net["name"].as_str()?.to_string(),
                                net["bucket"].as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            uart_bytes: self
                .parts
                .consoles
                .stats()
                .into_iter()
                .map(|stats| (stats.net, stats.bytes))
                .collect(),
        };
        Ok(Response {
            status: 200,
            headers: vec![("Content-Type", metrics::CONTENT_TYPE.into())],
            body: Body::Full(metrics::render(&sources).into_bytes()),
        })
    }

    /// `GET /`: the status page, or with `?part=main` the part its script
    /// refreshes.
    fn page(&self, request: &Request) -> Response {
        let overview = self.overview();
        let (html, cache) = if request.query_param("part").as_deref() == Some("main") {
            (crate::page::render_main(&overview), "no-store")
        } else {
            (crate::page::render_page(&overview), "no-cache")
        };
        Response {
            status: 200,
            headers: vec![
                ("Content-Type", "text/html; charset=utf-8".into()),
                ("Cache-Control", cache.into()),
                // Belt and braces for "no request to another host".
                (
                    "Content-Security-Policy",
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:".into(),
                ),
                ("X-Content-Type-Options", "nosniff".into()),
            ],
            body: Body::Full(html.into_bytes()),
        }
    }

    /// Each console for the status page: its state and what it printed last.
    fn console_tails(&self) -> Vec<Value> {
        self.parts
            .consoles
            .stats()
            .into_iter()
            .map(|stats| {
                let tail = self
                    .parts
                    .consoles
                    .console(&stats.net)
                    .map(|console| console.tail_text(CONSOLE_TAIL_BYTES))
                    .unwrap_or_default();
                let status = match &stats.path {
                    Some(path) => format!("{} on {path}, {} bytes", stats.state, stats.bytes),
                    None => format!("{}, {} bytes", stats.state, stats.bytes),
                };
                json!({"net": stats.net, "status": status, "tail": tail})
            })
            .collect()
    }

    /// `GET /overview`: what the status page shows, as JSON.
    fn overview(&self) -> Value {
        let lock = self.parts.lock_box.snapshot();
        let held_secs = lock
            .as_ref()
            .map_or(0.0, |record| self.parts.lock_box.held_secs(record));
        let health = self.parts.health.report();
        let buckets = health["nets"].as_array().cloned().unwrap_or_default();
        let nets: Vec<Value> = self
            .parts
            .nets
            .list()
            .iter()
            .map(|net| {
                let name = net.get("name").and_then(Value::as_str).unwrap_or_default();
                let checked = buckets.iter().find(|b| b["name"] == name);
                json!({
                    "name": name,
                    "role": net.get("role"),
                    "instrument": net.get("instrument"),
                    "address": net.get("address"),
                    "bucket": checked.map(|b| b["bucket"].clone()),
                    "ok": checked.map(|b| b["ok"].clone()),
                })
            })
            .collect();
        let box_id = std::fs::read_to_string(self.info.state_dir.join("box_id"))
            .ok()
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty());
        json!({
            "box": {
                "name": crate::runner::hostname(),
                "box_id": box_id,
                "version": self.version(),
            },
            "lock": crate::page::lock_json(lock.as_ref(), held_secs),
            "queue": self
                .parts.lock_box
                .waiters()
                .iter()
                .map(|user| format_lock_user(user))
                .collect::<Vec<_>>(),
            "health_state": health["state"],
            "nets": nets,
            "jobs": self.parts.runner.board.json(),
            "consoles": self.console_tails(),
        })
    }

    /// A.10: with `--enforce-locks`, only the holder's scope may proceed.
    fn enforce_lock(&self, holder: Option<&str>) -> Result<(), ApiError> {
        if !self.info.enforce_locks {
            return Ok(());
        }
        let Value::Object(record) = self.parts.lock_box.status()? else {
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

    /// A.9a, extended by issue 12: with a token configured, every route that
    /// changes state or touches hardware needs it, GETs included (the
    /// monitors open instrument sessions). `/diagnose/visa` probes a saved
    /// net's address without it, any other address only with it.
    fn authorized(&self, request: &Request, route: &Route) -> bool {
        let Some(token) = &self.info.token else {
            return true;
        };
        let needed = match route.effect {
            Effect::Probe => !self.is_net_address(&address_param(request)),
            _ => route.needs_token(),
        };
        // A job's own token stands for the box's (scripts.md §1).
        !needed || bearer_matches(request, token) || self.caller(request).is_some()
    }

    /// Whether `address` is a saved net's instrument (compared canonically).
    fn is_net_address(&self, address: &str) -> bool {
        let Ok(wanted) = common::addr::Address::parse(address) else {
            return false;
        };
        let wanted = wanted.canonical();
        self.parts.nets.list().iter().any(|net| {
            net.get("address")
                .and_then(Value::as_str)
                .and_then(|a| common::addr::Address::parse(a).ok())
                .is_some_and(|a| a.canonical() == wanted)
        })
    }

    /// The build version, unless install/update stamped `<state-dir>/version`
    /// (its text up to the first `|`).
    fn version(&self) -> String {
        read_limited(&self.info.state_dir.join("version"), 4096)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .and_then(|text| {
                let stamped = text.split('|').next().unwrap_or("").trim().to_string();
                (!stamped.is_empty()).then_some(stamped)
            })
            .unwrap_or_else(|| common::VERSION.to_string())
    }

    fn status(&self) -> Value {
        let version = self.version();
        let simulated = &self.info.simulated;
        json!({
            "healthy": true,
            "version": version,
            "box_version": version,
            "nets": self.net_summaries(),
            "health": self.health_with_consoles(),
            "capabilities": {
                "sim": simulated.keithley.is_some(),
                "simulator": simulated.keithley.as_ref().map(SimulatedInstrument::json),
                "rigol_simulator": simulated.rigol.as_ref().map(SimulatedInstrument::json),
                "serial_simulator": simulated.serial.as_ref().map(SimulatedInstrument::json),
                "dut_simulator": simulated.dut.as_ref().map(|dut| json!({
                    "link": dut.link,
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
        let mut health = self.parts.health.report();
        if let Value::Object(map) = &mut health {
            map.insert("consoles".into(), json!(self.parts.consoles.stats()));
        }
        health
    }

    /// Names and roles of the saved nets, for `/status`.
    fn net_summaries(&self) -> Value {
        let nets = self.parts.nets.list();
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

/// What a route does, which decides who may call it (A.9a, issue 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Reads the box's state and touches no instrument.
    Read,
    /// Changes the box's state: the lock, nets, jobs, session caches.
    Change,
    /// Opens or drives an instrument.
    Hardware,
    /// Opens the instrument at the request's `address` (`/diagnose/visa`):
    /// a saved net's address is a read, any other one is hardware.
    Probe,
}

type Handler = fn(&Api, &Request, &Client) -> Result<Response, ApiError>;

/// One route: method, exact path and effect, and the handler that serves
/// it. `GET` routes also answer `HEAD`.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub effect: Effect,
    handler: Handler,
}

impl Route {
    /// Whether token mode requires the bearer token: every method but GET
    /// and HEAD (A.9a), and any route that changes state or touches
    /// hardware (issue 12). `Probe` depends on the address (`Api::authorized`).
    pub fn needs_token(&self) -> bool {
        self.method != "GET" || matches!(self.effect, Effect::Change | Effect::Hardware)
    }

    /// The route for `method` and `path`: `NotFound` for an unknown path,
    /// `MethodNotAllowed` for a known one with another method.
    fn find(method: &str, path: &str) -> Result<&'static Route, ApiError> {
        let method = if method == "HEAD" { "GET" } else { method };
        let mut known_path = false;
        for route in ROUTES {
            if route.path == path {
                if route.method == method {
                    return Ok(route);
                }
                known_path = true;
            }
        }
        Err(if known_path {
            ApiError::MethodNotAllowed
        } else {
            ApiError::NotFound
        })
    }
}

const fn route(
    method: &'static str,
    path: &'static str,
    effect: Effect,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        effect,
        handler,
    }
}

/// Every route lagerd serves, on every listener (locking.md A.1). The one
/// place that says what a route does: the router dispatches from it, token
/// mode authorizes from its `effect`, and `lagerd/tests/it/tokens.rs` walks
/// it, so a route added here is guarded and tested without more code.
/// Add a route as one line; classify it by what it does, not by its method.
#[rustfmt::skip]
pub static ROUTES: &[Route] = &[
    route("GET", "/lock", Effect::Read, Api::lock_status),
    route("POST", "/lock", Effect::Change, Api::lock),
    route("POST", "/lock/heartbeat", Effect::Change, Api::heartbeat),
    route("POST", "/unlock", Effect::Change, Api::unlock),
    route("GET", "/status", Effect::Read, Api::status_route),
    route("GET", "/health", Effect::Read, Api::health),
    route("GET", "/version", Effect::Read, Api::version_route),
    route("GET", "/hello", Effect::Read, Api::hello),
    route("GET", "/cli-version", Effect::Read, Api::cli_version),
    route("GET", "/test-stream", Effect::Read, Api::test_stream),
    // Scripts drive instruments and run code on the box.
    route("POST", "/python", Effect::Hardware, Api::run_python),
    route("POST", "/python/kill", Effect::Change, Api::python_kill),
    route("POST", "/python/attach", Effect::Read, Api::python_attach),
    route("POST", "/python/continue", Effect::Change, Api::python_continue),
    route("POST", "/python/breakpoint", Effect::Read, Api::python_breakpoint),
    route("GET", "/download-file", Effect::Read, Api::download),
    route("GET", "/diagnose/usb", Effect::Read, Api::diagnose_usb),
    route("GET", "/diagnose/visa", Effect::Probe, Api::diagnose_visa),
    route("GET", "/diagnose/dispatcher", Effect::Read, Api::diagnose_dispatcher),
    route("GET", "/nets/list", Effect::Read, Api::nets_list),
    route("POST", "/nets", Effect::Change, Api::nets_change),
    // Wheels are code every later job imports.
    route("GET", "/wheels", Effect::Read, Api::wheels_list),
    route("POST", "/wheels", Effect::Change, Api::wheels_install),
    route("POST", "/wheels/uninstall", Effect::Change, Api::wheels_uninstall),
    // Consoles (console.md §3): reading is a read of lagerd's own capture;
    // claiming the writer, typing and releasing change the bench.
    route("GET", "/uart/stream", Effect::Read, Api::uart_read),
    route("POST", "/uart/stream", Effect::Hardware, Api::uart_type),
    route("POST", "/uart/write", Effect::Hardware, Api::uart_write_route),
    route("POST", "/uart/release", Effect::Change, Api::uart_release),
    route("GET", "/uart/status", Effect::Read, Api::uart_status),
    route("GET", "/diagnose/uart", Effect::Read, Api::diagnose_uart),
    // The fleet view (fleet.md §1-2): reads that never touch an instrument;
    // `/metrics` has its own optional token (`--metrics-token`).
    route("GET", "/metrics", Effect::Read, Api::metrics_route),
    route("GET", "/", Effect::Read, Api::page_route),
    route("GET", "/overview", Effect::Read, Api::overview_route),
    route("POST", "/cache/clear", Effect::Change, Api::cache_clear),
    route("POST", "/cache/clear_all", Effect::Change, Api::cache_clear_all),
    route("GET", "/cache/stats", Effect::Read, Api::cache_stats),
    // Monitors open (and keep using) an instrument session.
    route("GET", "/supply/monitor", Effect::Hardware, Api::supply_monitor),
    route("GET", "/battery/monitor", Effect::Hardware, Api::battery_monitor),
    route("POST", "/supply/command", Effect::Hardware, Api::supply_command),
    route("POST", "/battery/command", Effect::Hardware, Api::battery_command),
];

impl Service for Api {
    fn body_limit(&self, method: &str, path: &str) -> usize {
        if method == "POST" && (path == "/python" || path == "/wheels") {
            UPLOAD_LIMIT
        } else {
            LOCK_BODY_LIMIT
        }
    }

    fn handle(&self, request: Request, client: &Client) -> Response {
        let started = Instant::now();
        let route = metrics::route_index(&request.path);
        let response = self
            .route(&request, client)
            .unwrap_or_else(ApiError::into_response);
        debug!(
            "{} {} {} -> {}",
            request.peer, request.method, request.path, response.status
        );
        metrics::request_done(route, response.status, started.elapsed());
        response
    }

    fn refusal(&self, status: u16, message: &str, path: Option<&str>) -> Response {
        metrics::request_refused(metrics::route_index(path.unwrap_or("")), status);
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
        _ => Err(RunError::InvalidJson.into()),
    }
}

/// runner.md §3.4 and §4: the request's own fault 400, a run that cannot
/// be (no such run, an unusable module, a failed pip) 422, a full box
/// 503, the box's own failure 500.
fn run_status(error: &RunError) -> u16 {
    use crate::runner::archive::ArchiveError;
    match error {
        RunError::Upload(_)
        | RunError::InvalidJson
        | RunError::BadTimeout
        | RunError::NoProcessId => 400,
        RunError::BadProcessId(_)
        | RunError::BadSignal(_)
        | RunError::NoSuchRun(_)
        | RunError::NoPayload
        | RunError::NoMain
        | RunError::Requirements(_) => 422,
        RunError::Archive(ArchiveError::Io(_)) | RunError::Io(_) | RunError::NoPython { .. } => 500,
        RunError::Archive(_) => 422,
        RunError::Full { .. } => 503,
    }
}

/// The `address` query parameter of the diagnose routes, `""` when absent.
fn address_param(request: &Request) -> String {
    request.query_param("address").unwrap_or_default()
}

fn ok(value: Value) -> Result<Response, ApiError> {
    Ok(json_response(200, &value))
}

fn facts(facts: Facts) -> Result<Response, ApiError> {
    ok(facts.map_err(ApiError::Diagnose)?)
}

/// instruments.md §7 and §10: a net or action the box cannot serve is
/// 404 or 400; the instrument's own failure 502, or 504 when its call ran
/// past the 30 s deadline (§2); a watch of the other role holding the
/// instrument is `in_use` (a 200 refusal for commands, 409 for monitors).
fn instrument_status(error: &CommandError, in_use: u16) -> u16 {
    match error {
        CommandError::UnknownNet(_) => 404,
        CommandError::InUse(_) => in_use,
        CommandError::Driver { error, .. } => match error {
            DriverError::Invalid(_) => 400,
            DriverError::Session(SessionError::Deadline { .. }) => 504,
            _ => 502,
        },
        CommandError::Incomplete
        | CommandError::WrongRole { .. }
        | CommandError::BadChannel { .. }
        | CommandError::Unsupported { .. }
        | CommandError::BadAddress { .. }
        | CommandError::BadInterval { .. }
        | CommandError::Action(_) => 400,
    }
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

/// `Authorization: Bearer <token>`, compared in constant time.
fn bearer_matches(request: &Request, token: &str) -> bool {
    request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
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
    fn the_route_table_has_one_entry_per_method_and_path() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(a.path.starts_with('/'), "{}", a.path);
            assert!(matches!(a.method, "GET" | "POST"), "{}", a.method);
            assert!(
                !ROUTES[..i]
                    .iter()
                    .any(|b| b.method == a.method && b.path == a.path),
                "{} {} twice",
                a.method,
                a.path
            );
        }
        assert!(matches!(Route::find("HEAD", "/status"), Ok(r) if r.path == "/status"));
        assert!(matches!(
            Route::find("DELETE", "/lock"),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(
            Route::find("GET", "/nope"),
            Err(ApiError::NotFound)
        ));
    }

    #[test]
    fn an_instrument_past_the_call_deadline_is_504_invoke_timeout() {
        let address = "TCPIP0::127.0.0.1::5025::SOCKET".to_string();
        let wedged = CommandError::Driver {
            address: address.clone(),
            error: DriverError::Session(SessionError::Deadline {
                address: address.clone(),
            }),
        };
        let response = ApiError::Command(wedged).into_response();
        assert_eq!(response.status, 504, "instruments.md §2");
        let Body::Full(body) = response.body else {
            panic!("a JSON body");
        };
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["success"], false);
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with("invoke-timeout: "), "{error}");
        assert!(error.ends_with(&format!("({address})")), "{error}");
        // Any other failure of the instrument stays 502 (§10.4).
        let gone = CommandError::Driver {
            address,
            error: DriverError::Function("no"),
        };
        assert_eq!(instrument_status(&gone, 200), 502);
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
