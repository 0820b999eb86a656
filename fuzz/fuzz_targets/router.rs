//! The router (`lagerd/src/http.rs`) driven with random routes, query
//! strings, headers and JSON bodies against real in-process daemon state:
//! the real `Api` over a real `LockBox` on a scratch state dir, the
//! simulated instruments on loopback, the simulated device's console on a
//! pty, a runner whose python cannot start (no real jobs), and a manual
//! clock, called as the server calls it.
//!
//! After every request: nothing panicked, every answer has a clear status
//! and a JSON body where it says JSON, `lock.json` is absent or a valid
//! record, and an acknowledged lock is never lost: a lock the router
//! answered 200 for is what `GET /lock` and the file say until it is
//! released or its TTL runs out, and no lock appears that nobody was
//! granted. A stream the server never runs (the answer to a HEAD) leaves
//! nothing behind that blocks the other role of its instrument, and the
//! process's descriptors stay bounded.
#![no_main]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::addr::Address;
use lager_fuzz::scratch_dir;
use lagerd::clock::{parse_timestamp, Clock, ManualClock};
use lagerd::console::{self, Consoles};
use lagerd::devlock::{self, DeviceLocks};
use lagerd::diagnose::{Diagnose, Roots};
use lagerd::health::Health;
use lagerd::http::{Api, BoxInfo, Parts, Simulated, SimulatedConsole, SimulatedInstrument};
use lagerd::instruments::session::{ScanRoots, Sessions};
use lagerd::instruments::Instruments;
use lagerd::lockbox::{parse_record, LockBox};
use lagerd::nets::Nets;
use lagerd::runner::{Runner, RunnerConfig};
use lagerd::scriptenv::ScriptEnv;
use lagerd::server::{Body, Client, Request, Response, Service};
use lagerd::sim::dut::SimDut;
use lagerd::sim::{Kind, Simulator};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const TOKEN: &str = "fuzz-token";
/// Far above what the fixture holds (simulators, sessions, state files).
const FDS_MAX: usize = 512;

/// Every route of the router, and a few it does not have.
const ROUTES: [&str; 41] = [
    "/lock",
    "/lock/heartbeat",
    "/unlock",
    "/status",
    "/health",
    "/version",
    "/hello",
    "/cli-version",
    "/python",
    "/python/kill",
    "/python/attach",
    "/python/continue",
    "/python/breakpoint",
    "/download-file",
    "/diagnose/usb",
    "/diagnose/visa",
    "/diagnose/dispatcher",
    "/nets/list",
    "/nets",
    "/cache/clear",
    "/cache/clear_all",
    "/cache/stats",
    "/supply/monitor",
    "/battery/monitor",
    "/supply/command",
    "/battery/command",
    "/test-stream",
    "/wheels",
    "/wheels/uninstall",
    "/uart/stream",
    "/uart/release",
    "/uart/status",
    "/diagnose/uart",
    "/uart",
    "/overview",
    "/",
    "/lock/",
    "/LOCK",
    "/lock?x",
    "//lock",
    "/metrics",
];

/// Holders: plain users, two processes of one CI job (one lock scope), and
/// the empty user the API refuses.
const USERS: [&str; 6] = [
    "alice",
    "bob",
    "ci:github:lager/lager#9-1/test@r1:41",
    "ci:github:lager/lager#9-1/test@r1:42",
    "",
    "x",
];

/// Keys the routes read, so random objects hit them often.
const KEYS: [&str; 33] = [
    "user",
    "holder_type",
    "ttl_seconds",
    "wait_seconds",
    "force",
    "locked",
    "netname",
    "action",
    "params",
    "value",
    "ovp",
    "ocp",
    "net",
    "name",
    "role",
    "instrument",
    "address",
    "pin",
    "lager_process_id",
    "signal",
    "slot",
    "voc",
    "esr",
    "holder",
    "interval",
    "filename",
    "mode",
    "capacity",
    "soc",
    "model",
    "net",
    "data",
    "params",
];

/// Strings the routes compare against.
const WORDS: [&str; 26] = [
    "supply1",
    "battery1",
    "console1",
    "uart",
    "power-supply",
    "battery",
    "Keithley_2281S",
    "Rigol_DP832",
    "add",
    "delete",
    "voltage",
    "current",
    "state",
    "enable",
    "disable",
    "set_soc",
    "set_mode",
    "static",
    "dynamic",
    "user",
    "ci",
    "ephemeral",
    "null",
    "1e20",
    "NaN",
    "7f3c1c6e-8f21-4a55-9a0e-2b2f1c9d4e01",
];

#[derive(Arbitrary, Debug)]
enum Step {
    Call(Box<Call>),
    /// `lager supply|battery NET watch` (or a HEAD to the same URL).
    Monitor {
        battery: bool,
        head: bool,
        net: Text,
        interval: Option<Text>,
    },
    /// `lager diagnose` on an address this process may open.
    Diagnose {
        route: u8,
        address: u8,
    },
    /// Time passes on the box's clock.
    Advance(u16),
    /// What the reaper thread does every 250 ms.
    Reap,
}

#[derive(Arbitrary, Debug)]
struct Call {
    method: Method,
    route: u8,
    query: Vec<(Text, Text)>,
    holder: Option<Text>,
    auth: Auth,
    body: Payload,
}

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
    Head,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Auth {
    Token,
    None,
    Wrong(String),
}

#[derive(Arbitrary, Debug)]
enum Text {
    User(u8),
    Key(u8),
    Word(u8),
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Empty,
    Raw(Vec<u8>),
    Json(Json),
    /// A lock request shaped as clients send them.
    Lock {
        user: Option<Json>,
        holder_type: Option<Json>,
        ttl_seconds: Option<Json>,
        wait_seconds: Option<Json>,
        force: Option<Json>,
    },
    /// A net on an instrument this process may touch.
    AddNet {
        name: Text,
        role: Text,
        instrument: Text,
        address: u8,
        pin: Option<Json>,
    },
    Command {
        netname: Text,
        action: Text,
        params: Vec<(Text, Json)>,
        holder: Option<Text>,
    },
}

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Small(u8),
    Float(f64),
    Str(Text),
    Array(Vec<Json>),
    Object(Vec<(Text, Json)>),
}

impl Text {
    fn text(&self) -> String {
        let pick = |list: &[&str], i: u8| list[usize::from(i) % list.len()].to_string();
        match self {
            Text::User(i) => pick(&USERS, *i),
            Text::Key(i) => pick(&KEYS, *i),
            Text::Word(i) => pick(&WORDS, *i),
            Text::Any(text) => text.clone(),
        }
    }
}

impl Json {
    fn value(&self, depth: u8) -> Value {
        if depth > 8 {
            return Value::Null;
        }
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(i) => json!(i),
            Json::Small(n) => json!(n),
            // Non-finite floats have no JSON form; `json!` makes them null.
            Json::Float(f) => json!(f),
            Json::Str(text) => json!(text.text()),
            Json::Array(items) => Value::Array(items.iter().map(|j| j.value(depth + 1)).collect()),
            Json::Object(fields) => Value::Object(object(fields, depth + 1)),
        }
    }
}

fn object(fields: &[(Text, Json)], depth: u8) -> Map<String, Value> {
    fields
        .iter()
        .map(|(key, value)| (key.text(), value.value(depth)))
        .collect()
}

struct Fixture {
    api: Api,
    /// The simulated device's console, a pty behind this link.
    console: String,
    lock_box: Arc<LockBox>,
    clock: Arc<ManualClock>,
    state: PathBuf,
    run: PathBuf,
    work: PathBuf,
    /// Addresses a request may name: the simulators and a closed port.
    reachable: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch_dir("router");
        let [state, run, work, empty] = ["state", "run", "work", "empty"].map(|d| dir.join(d));
        for d in [&state, &run, &work, &empty] {
            fs::create_dir_all(d).expect("a scratch dir");
        }
        let clock = Arc::new(ManualClock::at("2026-03-20T13:00:00Z"));
        let lock_box = Arc::new(LockBox::open(&state, clock.clone()).expect("a lock box"));
        let keithley = Simulator::start(Kind::Keithley2281S).expect("the Keithley simulator");
        let rigol = Simulator::start(Kind::RigolDp832).expect("the Rigol simulator");
        let reachable = vec![
            keithley.visa_address(),
            rigol.visa_address(),
            "TCPIP0::127.0.0.1::1::SOCKET".to_string(),
        ];
        let python = "/nonexistent/lager-fuzz/python3";
        let script_env =
            Arc::new(ScriptEnv::open(&state, python, &[]).expect("the scripts' package"));
        let runner = Arc::new(Runner::new(
            RunnerConfig {
                run_dir: run.clone(),
                work_root: work.clone(),
                python: python.into(),
                state_dir: state.clone(),
                proc_root: empty.clone(),
                max_jobs: 4,
            },
            script_env,
        ));
        let locks = Arc::new(DeviceLocks::new(
            &state,
            "lager_device_locks",
            devlock::DEFAULT_TIMEOUT,
        ));
        let sessions = Arc::new(Sessions::new(
            locks.clone(),
            Duration::from_secs(2),
            ScanRoots {
                proc: empty.clone(),
                dev: empty.clone(),
            },
        ));
        let roots = Roots {
            sys: empty.clone(),
            proc: empty.clone(),
            dev: empty.clone(),
            state: state.clone(),
        };
        let diagnose = Arc::new(Diagnose::new(roots, locks, sessions.clone()));
        let dut = SimDut::start(state.join("sim").join("console1")).expect("the simulated DUT");
        let console = dut.link.display().to_string();
        let nets = Arc::new(
            Nets::new(state.clone(), Some(keithley.visa_address()))
                .with_sim_console(console.clone()),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let consoles = Consoles::start(
            console::Config {
                ring_bytes: 64 * 1024,
                log_file_bytes: 256 * 1024,
                log_root: state.join("uart"),
                roots: console::Roots {
                    sys: empty.clone(),
                    dev: empty.clone(),
                    proc: empty.clone(),
                },
            },
            nets.clone(),
            stop.clone(),
        );
        // A zero interval: the health checker never runs on its own.
        let health = Health::spawn(diagnose.clone(), nets.clone(), Duration::ZERO, false, stop);
        let instruments = Arc::new(Instruments::new(sessions, nets.clone()));
        let parts = Parts {
            lock_box: lock_box.clone(),
            runner,
            diagnose,
            nets,
            health,
            instruments,
            consoles,
        };
        let info = BoxInfo {
            state_dir: state.clone(),
            simulated: Simulated {
                keithley: Some(SimulatedInstrument {
                    address: keithley.visa_address(),
                    control: keithley.control,
                }),
                rigol: Some(SimulatedInstrument {
                    address: rigol.visa_address(),
                    control: rigol.control,
                }),
                serial: None,
                dut: Some(SimulatedConsole {
                    link: console.clone(),
                    control: dut.control,
                }),
            },
            enforce_locks: true,
            token: Some(TOKEN.into()),
            metrics_token: None,
        };
        Fixture {
            api: Api::new(parts, info),
            console,
            lock_box,
            clock,
            state,
            run,
            work,
            reachable,
        }
    })
}

/// True when every address-like text in the request is one this process
/// may open: no request may reach a real device or a remote host. A path
/// is one (a uart net names its port by path), so only the simulated
/// device's may appear.
fn only_reachable(f: &Fixture, request: &Request) -> bool {
    let allowed = |text: &str| match Address::parse(text) {
        Ok(address) => f.reachable.contains(&address.canonical()),
        Err(_) if text.trim_start().starts_with('/') => text.trim() == f.console,
        Err(_) => true,
    };
    fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::String(s) => out.push(s),
            Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            Value::Object(map) => map.iter().for_each(|(k, v)| {
                out.push(k);
                strings(v, out)
            }),
            _ => {}
        }
    }
    let mut texts = Vec::new();
    let body = serde_json::from_slice::<Value>(&request.body).ok();
    if let Some(body) = &body {
        strings(body, &mut texts);
    }
    // The diagnose routes read `address`, decoded, first match.
    let address = request.query_param("address");
    texts.extend(address.as_deref());
    texts.into_iter().all(allowed)
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// Percent-encodes everything but the unreserved characters.
fn escape(text: String) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A request with the token, as an authorised client sends it.
fn plain(method: &str, path: &str, query: &str, body: Vec<u8>) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: vec![("Authorization".into(), format!("Bearer {TOKEN}"))],
        body: body.into(),
        peer: peer(),
        http11: true,
    }
}

fn encode_query(pairs: &[(Text, Text)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k.text()), escape(v.text())))
        .collect::<Vec<_>>()
        .join("&")
}

fn build(f: &Fixture, call: &Call) -> Request {
    let method = match &call.method {
        Method::Get => "GET".to_string(),
        Method::Post => "POST".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Other(m) => m.clone(),
    };
    let route = ROUTES[usize::from(call.route) % ROUTES.len()];
    let (path, mut query) = match route.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (route.to_string(), String::new()),
    };
    if !call.query.is_empty() {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&encode_query(&call.query));
    }
    let mut headers = vec![("Host".to_string(), "box".to_string())];
    match &call.auth {
        Auth::Token => headers.push(("Authorization".into(), format!("Bearer {TOKEN}"))),
        Auth::None => {}
        Auth::Wrong(given) => headers.push(("Authorization".into(), given.clone())),
    }
    if let Some(holder) = &call.holder {
        headers.push(("Lager-Holder".into(), holder.text()));
    }
    let body = match &call.body {
        Payload::Empty => Vec::new(),
        Payload::Raw(bytes) => bytes.clone(),
        Payload::Json(json) => json.value(0).to_string().into_bytes(),
        Payload::Lock {
            user,
            holder_type,
            ttl_seconds,
            wait_seconds,
            force,
        } => {
            let mut map = Map::new();
            for (key, value) in [
                ("user", user),
                ("holder_type", holder_type),
                ("ttl_seconds", ttl_seconds),
                ("wait_seconds", wait_seconds),
                ("force", force),
            ] {
                if let Some(value) = value {
                    map.insert(key.into(), value.value(0));
                }
            }
            // Users mostly from the shared list, so locks collide.
            if let Some(Value::Number(n)) = map.get("user") {
                let i = n.as_u64().unwrap_or(0) as usize;
                map.insert("user".into(), json!(USERS[i % USERS.len()]));
            }
            Value::Object(map).to_string().into_bytes()
        }
        Payload::AddNet {
            name,
            role,
            instrument,
            address,
            pin,
        } => {
            // An instrument's address, or the console's path for a uart net.
            let choices: Vec<&String> = f.reachable.iter().chain([&f.console]).collect();
            let address = choices[usize::from(*address) % choices.len()];
            let mut net = json!({
                "name": name.text(),
                "role": role.text(),
                "instrument": instrument.text(),
                "address": address,
            });
            if let Some(pin) = pin {
                net["pin"] = pin.value(0);
            }
            json!({"action": "add", "net": net})
                .to_string()
                .into_bytes()
        }
        Payload::Command {
            netname,
            action,
            params,
            holder,
        } => {
            let mut body = json!({
                "netname": netname.text(),
                "action": action.text(),
                "params": object(params, 1),
            });
            if let Some(holder) = holder {
                body["holder"] = json!(holder.text());
            }
            body.to_string().into_bytes()
        }
    };
    Request {
        method,
        path,
        query,
        headers,
        body: body.into(),
        peer: peer(),
        http11: true,
    }
}

/// A lock the router acknowledged: its holder and when it expires.
#[derive(Debug)]
struct Granted {
    user: String,
    /// `None`: never (a reservation).
    expires_after: Option<f64>,
}

impl Granted {
    fn from_reply(reply: &Value) -> Granted {
        let user = reply["user"]
            .as_str()
            .expect("a granted lock names its user");
        let ttl = reply["ttl_seconds"].as_f64();
        let since = reply["last_heartbeat"]
            .as_str()
            .or(reply["locked_at"].as_str())
            .and_then(parse_timestamp);
        Granted {
            user: user.to_string(),
            expires_after: match (ttl, since) {
                (Some(ttl), Some(since)) => Some(since + ttl),
                _ => None,
            },
        }
    }

    fn expired(&self, now: f64) -> bool {
        self.expires_after.is_some_and(|at| now > at)
    }
}

/// Runs a streamed answer as the server would for a GET; a HEAD's stream
/// is dropped unrun, as the server drops it.
fn finish(response: Response, head: bool) -> (u16, Vec<u8>, bool) {
    let json = response.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("content-type") && value == "application/json"
    });
    match response.body {
        Body::Full(bytes) => (response.status, bytes, json),
        Body::Stream(produce) => {
            let mut out = Vec::new();
            if !head {
                let _ = produce(&mut out, &Client::gone_already());
            }
            (response.status, out, false)
        }
    }
}

fn get_lock(f: &Fixture) -> Value {
    let request = plain("GET", "/lock", "", Vec::new());
    let (status, body, _) = finish(f.api.handle(request, &Client::gone_already()), false);
    assert_eq!(status, 200, "GET /lock is always 200");
    serde_json::from_slice(&body).expect("GET /lock answers JSON")
}

fn lock_file(state: &Path) -> Option<Map<String, Value>> {
    let bytes = fs::read(state.join("lock.json")).ok()?;
    Some(
        parse_record(&bytes)
            .expect("lock.json always parses as a record")
            .expect("lagerd writes only held records"),
    )
}

/// The other role of the simulated Keithley answers: nothing that never
/// ran still claims the instrument.
fn both_roles_free(f: &Fixture) {
    for (path, net) in [
        ("/supply/command", "supply1"),
        ("/battery/command", "battery1"),
    ] {
        let body = json!({"netname": net, "action": "state"})
            .to_string()
            .into_bytes();
        let request = plain("POST", path, "", body);
        let (_, body, _) = finish(f.api.handle(request, &Client::gone_already()), false);
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("currently in use"),
            "{net} is blocked by a monitor that never ran: {text}"
        );
    }
}

fn sweep(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = fs::remove_dir_all(entry.path());
            let _ = fs::remove_file(entry.path());
        }
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let f = fixture();
    // Every run starts from a free box and no nets of its own.
    let _ = fs::remove_file(f.state.join("lock.json"));
    let _ = fs::remove_file(f.state.join("saved_nets.json"));
    sweep(&f.run);
    sweep(&f.work);
    let mut granted: Option<Granted> = None;
    let mut monitored = false;

    for step in steps.iter().take(32) {
        match step {
            Step::Advance(secs) => f.clock.advance(f64::from(*secs)),
            Step::Reap => f.lock_box.reap().expect("the reaper never fails here"),
            Step::Call(_) | Step::Monitor { .. } | Step::Diagnose { .. } => {
                let request = match step {
                    Step::Monitor {
                        battery,
                        head,
                        net,
                        interval,
                    } => {
                        let mut query = format!("netname={}", escape(net.text()));
                        if let Some(interval) = interval {
                            query.push_str(&format!("&interval={}", escape(interval.text())));
                        }
                        let path = if *battery {
                            "/battery/monitor"
                        } else {
                            "/supply/monitor"
                        };
                        plain(if *head { "HEAD" } else { "GET" }, path, &query, Vec::new())
                    }
                    Step::Diagnose { route, address } => {
                        let path = ["/diagnose/usb", "/diagnose/visa", "/diagnose/dispatcher"]
                            [usize::from(*route) % 3];
                        let address = &f.reachable[usize::from(*address) % f.reachable.len()];
                        plain(
                            "GET",
                            path,
                            &format!("address={}", escape(address.clone())),
                            Vec::new(),
                        )
                    }
                    Step::Call(call) => build(f, call),
                    _ => unreachable!("the other steps are matched above"),
                };
                if request.body.len() > f.api.body_limit(&request.method, &request.path)
                    || !only_reachable(f, &request)
                {
                    continue;
                }
                let path = request.path.clone();
                let head = request.method == "HEAD";
                monitored |= path.ends_with("/monitor");
                let lock_route = matches!(path.as_str(), "/lock" | "/lock/heartbeat" | "/unlock")
                    && request.method == "POST";
                let (status, body, json) =
                    finish(f.api.handle(request, &Client::gone_already()), head);
                assert!((200..600).contains(&status), "{path}: status {status}");
                // Only what must start python (which cannot) may fail so.
                assert!(
                    status != 500 || path == "/python" || path.starts_with("/wheels"),
                    "{path}: 500 {}",
                    String::from_utf8_lossy(&body)
                );
                if json && !head {
                    let value: Value = serde_json::from_slice(&body)
                        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body:?}"));
                    // Two routes list things: the nets, and every console
                    // when no net is named.
                    let lists = path == "/nets/list" || path == "/uart/status";
                    assert!(value.is_object() || lists, "{path}: {value}");
                    if lock_route && status == 200 {
                        match path.as_str() {
                            "/unlock" => granted = None,
                            _ => granted = Some(Granted::from_reply(&value)),
                        }
                    }
                }
            }
        }

        // The acknowledged lock is still there, or it was released or
        // expired; and nothing holds the box that was not granted.
        let now = f.clock.now();
        let served = get_lock(f);
        let on_disk = lock_file(&f.state);
        match &granted {
            Some(lock) if !lock.expired(now) => {
                assert_eq!(served["locked"], true, "{lock:?} was lost: {served}");
                assert_eq!(served["user"], lock.user.as_str(), "{lock:?}: {served}");
                let record = on_disk.expect("an acknowledged lock is on disk");
                assert_eq!(record["user"], lock.user.as_str());
            }
            _ => {
                assert_eq!(
                    served,
                    json!({"locked": false}),
                    "a lock nobody was granted"
                );
                assert!(on_disk.is_none(), "a file nobody was granted");
                granted = None;
            }
        }
    }
    if monitored {
        both_roles_free(f);
    }
    // Nothing keeps a descriptor per request: a leak here ran this process
    // out of them within minutes (and lock.json could not be written).
    let open = fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    assert!(
        open < FDS_MAX,
        "{open} descriptors open: something leaks them"
    );
});
