//! `lager uart [NET]` (console.md §4): follow a device's serial console
//! through the box, and with `-i` type on it.
//!
//! The console is the box's `GET /uart/stream` (frames of `common::console`;
//! `POST` with `-i` also claims the one writer for as long as the stream
//! lasts), and keystrokes are `POST /uart/write`, each a request of its
//! own through `stream.rs`. All HTTP of this command is in this file. The
//! box words events and lays out diagnose's sections, which keeps this
//! small (the binary's budget).
//!
//! In `-i` mode the terminal's input side is raw (no echo, no line
//! editing, no signals from the keyboard: Ctrl-C goes to the device) while
//! output processing stays on, and it is put back on every way out: Ctrl-]
//! (as telnet and microcom), the end of the stream, an error, a panic, and
//! SIGINT/SIGTERM/SIGHUP from outside (the signal thread restores it
//! before exiting 128 + signal).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::console::{Decoder, Kind};
use common::wire::{HOLDER_HEADER, LOCK_PORT};
use serde_json::{json, Value};

use crate::args::{Start, UartOpts};
use crate::boxsel::{passive_check, resolve, Target};
use crate::client::{capped, Reply};
use crate::cmd::diagnose::query_encode;
use crate::cmd::instrument::{hold_box, not_delivered};
use crate::cmd::python::is_tty;
use crate::cmd::python::stream::{self, Response};
use crate::config::Config;
use crate::error::CliError;
use crate::identity::Identity;
use crate::{autolock, output, signals};

/// The box says it is alive every 10 s; silence this long means it is not.
const STREAM_SILENCE: Duration = Duration::from_secs(35);
/// A keystroke that takes this long to be accepted has failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Ctrl-]: quits `-i`.
const QUIT_KEY: u8 = 0x1d;
/// Largest refusal body read.
const REFUSAL_BYTES: usize = 64 * 1024;

/// Set by the key thread when the user quits; the stream then ends.
static QUIT: AtomicBool = AtomicBool::new(false);
/// The terminal settings to put back, while `-i` has it raw.
static SAVED_TERMINAL: Mutex<Option<libc::termios>> = Mutex::new(None);

pub fn run(opts: &UartOpts) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let net = match &opts.net {
        Some(net) => net.clone(),
        None => config
            .default_str("net_uart")
            .filter(|n| !n.trim().is_empty())
            .ok_or(CliError::NoDefaultNet {
                noun: "uart",
                option: "--uart-net",
            })?,
    };
    let target = resolve(&config, opts.box_name.as_deref())?;
    if opts.serial_port {
        return serial_port(&target, &net, opts.json);
    }
    let identity = Identity::current(config.default_str("user").as_deref());
    let holder = if opts.interactive {
        // Before the auto-lock installs its own: the first action wins,
        // and ours puts the terminal back before releasing and exiting.
        signals::install(on_signal);
        let client = target.lock_client();
        if let Some(error) = passive_check(&target, &client, &identity)? {
            return Err(CliError::BoxUnreachable(error));
        }
        hold_box(&target, &client, &identity)?
    } else {
        identity.holder.clone()
    };
    let mut response = open_stream(&target, &net, opts, &holder)?;
    let mut screen = Screen::new(&net, opts)?;
    let mut decoder = Decoder::new();
    let hello = first_frame(&mut response, &mut decoder, &target, &net)?;
    if screen.hello(&hello).is_err() {
        return Ok(ExitCode::SUCCESS);
    }
    if !opts.interactive {
        return follow(&mut response, &mut decoder, &mut screen, &target, &net);
    }
    let session = hello
        .get("session")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ending = match hello.get("line_ending").and_then(Value::as_str) {
        Some("crlf") => &b"\r\n"[..],
        Some("cr") => b"\r",
        _ => b"\n",
    };
    let writer = KeyWriter::new(&target, &net, &session, &holder);
    let socket = response
        .socket()
        .map_err(|e| ended(&target, &net, &format!("cannot read the keyboard: {e}")))?;
    let terminal = is_tty(0);
    let raw = if terminal {
        Some(RawTerminal::enter())
    } else {
        None
    };
    output::tell(
        output::Color::Cyan,
        &format!("Typing on {net} at box {}: Ctrl-] quits.", target.display),
    );
    let typist = std::thread::Builder::new()
        .name("uart-keys".into())
        .spawn(move || type_keys(writer, ending, terminal, socket))
        .map_err(|e| ended(&target, &net, &format!("cannot read the keyboard: {e}")))?;
    let outcome = follow(&mut response, &mut decoder, &mut screen, &target, &net);
    drop(raw);
    drop(typist);
    outcome
}

/// `lager uart NET serial-port`: the device the console's port is now.
fn serial_port(target: &Target, net: &str, json: bool) -> Result<ExitCode, CliError> {
    let path = format!("/uart/status?netname={}", query_encode(net));
    let reply = target
        .lock_client()
        .get(&path, capped(STATUS_TIMEOUT))
        .map_err(not_delivered)?;
    let status = answer(&reply)?;
    if json {
        println!("{status}");
        return Ok(ExitCode::SUCCESS);
    }
    let text = |key: &str| status.get(key).and_then(Value::as_str).map(str::to_string);
    match text("device").or_else(|| text("path")) {
        Some(device) if text("state").as_deref() == Some("open") => {
            println!("{device}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(CliError::BoxRefused(format!(
            "console {net} is not connected ({}); lager diagnose {net} --box {} says why",
            text("reason").unwrap_or_else(|| "unknown".into()),
            target.display
        ))),
    }
}

/// `lager diagnose NET` on a uart net: what lagerd's console says, the
/// adapter as the box sees it now, and one classification. Exit 0 when it
/// is being captured, 2 when it needs attention.
pub fn diagnose(
    client: &crate::client::Client,
    ctx: &common::diagnose::Context,
    address: &str,
    json: bool,
) -> Result<ExitCode, CliError> {
    let path = format!("/diagnose/uart?net={}", query_encode(ctx.net));
    let reply = client
        .get(&path, capped(STATUS_TIMEOUT))
        .map_err(not_delivered)?;
    let facts = answer(&reply)?;
    // The box classifies (it saw the port); this prints.
    let good = facts["ok"] == true;
    let headline = facts["headline"].as_str().unwrap_or("UNCLEAR").to_string();
    let tone = match facts["bucket"].as_str() {
        Some("capturing") => output::Color::Green,
        Some("transient" | "unclear") => output::Color::Yellow,
        _ => output::Color::Red,
    };
    if json {
        // The box's facts, bucket and headline, and where they came from.
        let mut report = facts;
        report["box"] = Value::from(ctx.box_name);
        report["role"] = Value::from(ctx.role);
        report["address"] = Value::from(address);
        println!("{report}");
    } else {
        // The box lays the sections out too: `[[title, [[label, value]…]]…]`.
        let mut out = String::new();
        for section in facts["sections"].as_array().into_iter().flatten() {
            out.push_str("\n== ");
            out.push_str(section[0].as_str().unwrap_or(""));
            out.push_str(" ==\n");
            for pair in section[1].as_array().into_iter().flatten() {
                let (label, value) = (
                    pair[0].as_str().unwrap_or(""),
                    pair[1].as_str().unwrap_or(""),
                );
                out.push_str("   ");
                out.push_str(label);
                out.push(':');
                out.push_str(&" ".repeat(13usize.saturating_sub(label.len())));
                out.push_str(value);
                out.push('\n');
            }
        }
        let color = output::colored(output::Stream::Stdout);
        let headline = "Classification: ".to_string() + &headline;
        println!("{out}\n{}", output::paint_bold_if(color, tone, &headline));
    }
    Ok(if good {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// A JSON reply of the uart routes: the body on 200, else its error.
fn answer(reply: &Reply) -> Result<Value, CliError> {
    let body = reply.json().ok_or(CliError::NonJsonReply {
        status: reply.status,
    })?;
    if reply.status == 200 {
        return Ok(body);
    }
    let error = body
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("the box answered HTTP {}", reply.status));
    if reply.status == 404 && body.get("success").is_none() {
        return Err(CliError::BoxRefused(format!(
            "{error}: this box does not serve consoles; update it (lager update)"
        )));
    }
    Err(CliError::BoxRefused(error))
}

/// Opens the console stream: a GET to watch, a POST to also type.
fn open_stream(
    target: &Target,
    net: &str,
    opts: &UartOpts,
    holder: &str,
) -> Result<Response, CliError> {
    let mut path = format!("/uart/stream?netname={}", query_encode(net));
    match opts.start {
        Start::Now => {}
        Start::FromStart => path.push_str("&from=0"),
        // Whole milliseconds: no float formatting in the binary for this.
        Start::Since(ago) => {
            let ms = ago.as_millis();
            path.push_str(&format!("&since={}.{:03}", ms / 1000, ms % 1000));
        }
        Start::Tail(bytes) => path.push_str(&format!("&tail={bytes}")),
    }
    if opts.takeover {
        path.push_str("&takeover=1");
    }
    let mut headers = vec![(HOLDER_HEADER, holder.to_string())];
    if let Some(token) = &target.token {
        headers.push(("Authorization", format!("Bearer {token}")));
    }
    let request = stream::Request {
        method: if opts.interactive { "POST" } else { "GET" },
        host: &target.host,
        port: target.port.unwrap_or(LOCK_PORT),
        path: &path,
        headers,
        content_type: "application/octet-stream",
        body: b"",
        read_timeout: Some(STREAM_SILENCE),
    };
    let mut response = stream::send(&request).map_err(CliError::RunnerConnect)?;
    if response.status == 200 {
        return Ok(response);
    }
    let reply = Reply {
        status: response.status,
        body: response.text(REFUSAL_BYTES).unwrap_or_default(),
    };
    let body = reply.json().unwrap_or(Value::Null);
    Err(match reply.status {
        401 => CliError::TokenRequired {
            display: target.display.clone(),
        },
        423 => CliError::Locked {
            display: target.display.clone(),
            user: common::holder::format_lock_user(
                body["lock"]["user"].as_str().unwrap_or("unknown"),
            ),
            waited_secs: None,
        },
        _ => match answer(&reply) {
            Err(e) => e,
            Ok(_) => CliError::UnexpectedStatus(reply.status),
        },
    })
}

fn ended(target: &Target, net: &str, reason: &str) -> CliError {
    CliError::ConsoleEnded {
        display: target.display.clone(),
        net: net.to_string(),
        reason: reason.to_string(),
    }
}

/// Reads the stream's first frame, the console's status.
fn first_frame(
    response: &mut Response,
    decoder: &mut Decoder,
    target: &Target,
    net: &str,
) -> Result<Value, CliError> {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) if frame.kind == Kind::Event => {
                return serde_json::from_slice(frame.payload)
                    .map_err(|_| ended(target, net, "its first frame was not JSON"));
            }
            Ok(Some(_)) => {
                return Err(ended(
                    target,
                    net,
                    "it did not start with the console's status",
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(ended(target, net, &e.to_string())),
        }
        match response.next(&mut || {}) {
            Ok(Some(piece)) => decoder.feed(piece),
            Ok(None) => return Err(ended(target, net, "the box closed it")),
            Err(e) => return Err(ended(target, net, &e.to_string())),
        }
    }
}

/// Shows frames until the stream ends; quitting (Ctrl-]) is a success.
fn follow(
    response: &mut Response,
    decoder: &mut Decoder,
    screen: &mut Screen,
    target: &Target,
    net: &str,
) -> Result<ExitCode, CliError> {
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(ended(target, net, &e.to_string())),
            };
            let shown = match frame.kind {
                Kind::Data => screen.data(frame.offset, frame.time_us, frame.payload),
                Kind::Event => {
                    let body: Value = serde_json::from_slice(frame.payload).unwrap_or(Value::Null);
                    if body["event"] == "closed" {
                        let _ = screen.flush();
                        return Err(ended(
                            target,
                            net,
                            "the box stopped serving it: lagerd is stopping or the net was deleted",
                        ));
                    }
                    screen.event(frame.offset, frame.time_us, &body)
                }
            };
            // A reader that went away (`| head`) ends the command quietly.
            if shown.is_err() {
                return Ok(ExitCode::SUCCESS);
            }
        }
        let next = response.next(&mut || {
            let _ = screen.flush();
        });
        match next {
            Ok(Some(piece)) => decoder.feed(piece),
            _ if QUIT.load(Ordering::SeqCst) => {
                let _ = screen.flush();
                return Ok(ExitCode::SUCCESS);
            }
            Ok(None) => return Err(ended(target, net, "the box closed it")),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return Err(ended(target, net, "no word from the box for 35 s"))
            }
            Err(e) => return Err(ended(target, net, &e.to_string())),
        }
    }
}

/// How the console is shown: raw bytes (with `--timestamps` a time at the
/// start of each line), events as one dim line each, or with `--json` one
/// object per frame. `--log` gets the same, without colour.
struct Screen {
    net: String,
    json: bool,
    timestamps: bool,
    dim: bool,
    out: io::BufWriter<io::Stdout>,
    log: Option<File>,
    at_line_start: bool,
    /// `--json`: the start of a UTF-8 sequence split across frames.
    carry: Vec<u8>,
}

impl Screen {
    fn new(net: &str, opts: &UartOpts) -> Result<Screen, CliError> {
        let log = match &opts.log {
            None => None,
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| CliError::ConsoleLog {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?,
            ),
        };
        Ok(Screen {
            net: net.to_string(),
            json: opts.json,
            timestamps: opts.timestamps,
            dim: output::colored(output::Stream::Stdout),
            out: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
            log,
            at_line_start: true,
            carry: Vec::new(),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(log) = &mut self.log {
            let _ = log.flush();
        }
        self.out.flush()
    }

    /// Bytes to the terminal and the log alike.
    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(log) = &mut self.log {
            if log.write_all(bytes).is_err() {
                // A full disk must not stop the console; say so once.
                output::warn("Warning: the --log file could not be written; not logging any more");
                self.log = None;
            }
        }
        self.out.write_all(bytes)
    }

    /// A line of its own, dim on a terminal.
    fn note(&mut self, text: &str) -> io::Result<()> {
        if !self.at_line_start {
            self.emit(b"\n")?;
        }
        if self.dim {
            self.out.write_all(b"\x1b[2m")?;
        }
        let line = format!("-- {text} --");
        self.emit(line.as_bytes())?;
        if self.dim {
            self.out.write_all(b"\x1b[0m")?;
        }
        self.emit(b"\n")?;
        self.at_line_start = true;
        Ok(())
    }

    fn hello(&mut self, status: &Value) -> io::Result<()> {
        if self.json {
            return self.json_line(status["from"].as_u64().unwrap_or(0), now_us(), status);
        }
        // A console that is not open says so (its `text`), as an event would.
        self.event(status["from"].as_u64().unwrap_or(0), now_us(), status)
    }

    fn data(&mut self, offset: u64, time_us: u64, bytes: &[u8]) -> io::Result<()> {
        if self.json {
            let mut whole = std::mem::take(&mut self.carry);
            whole.extend_from_slice(bytes);
            let cut = utf8_complete(&whole);
            self.carry = whole[cut..].to_vec();
            let text = String::from_utf8_lossy(&whole[..cut]);
            let start = offset - (whole.len() - bytes.len()) as u64;
            return self.json_line(start, time_us, &json!({"data": text}));
        }
        if !self.timestamps {
            self.at_line_start = bytes.last() == Some(&b'\n');
            return self.emit(bytes);
        }
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            if self.at_line_start {
                let stamp = format!("[{}] ", clock(time_us, false));
                self.emit(stamp.as_bytes())?;
            }
            self.emit(line)?;
            self.at_line_start = line.last() == Some(&b'\n');
        }
        Ok(())
    }

    fn event(&mut self, offset: u64, time_us: u64, body: &Value) -> io::Result<()> {
        let kind = body["event"].as_str().unwrap_or("");
        if kind == "alive" {
            return Ok(());
        }
        if self.json {
            return self.json_line(offset, time_us, body);
        }
        // The box words its events (`text`); this adds when and where.
        let Some(text) = body["text"].as_str() else {
            return Ok(());
        };
        let line = clock(time_us, false) + " " + &self.net + " " + text;
        self.note(&line)?;
        self.flush()
    }

    /// `{"offset", "time", ...}` on one line.
    fn json_line(&mut self, offset: u64, time_us: u64, body: &Value) -> io::Result<()> {
        let mut object = body.clone();
        object["offset"] = Value::from(offset);
        object["time"] = Value::from(clock(time_us, true));
        let mut line = object.to_string().into_bytes();
        line.push(b'\n');
        self.emit(&line)
    }
}

/// How much of `bytes` is whole UTF-8 (a trailing partial sequence of at
/// most three bytes waits for the next frame).
fn utf8_complete(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() && bytes.len() - e.valid_up_to() < 4 => e.valid_up_to(),
        Err(_) => bytes.len(),
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `HH:MM:SS.mmm`, or with `date` `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`; UTC, as
/// the box's own timestamps (and no time zone code in the binary).
fn clock(time_us: u64, date: bool) -> String {
    let secs = time_us / 1_000_000;
    let micros = time_us % 1_000_000;
    let (hour, minute, second) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if !date {
        return format!("{hour:02}:{minute:02}:{second:02}.{:03}", micros / 1000);
    }
    // Civil from days (H. Hinnant's algorithm), for 1970 onwards.
    let days = secs / 86_400 + 719_468;
    let era = days / 146_097;
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z")
}

/// The terminal with its input side raw, put back when dropped.
struct RawTerminal;

impl RawTerminal {
    fn enter() -> RawTerminal {
        // SAFETY: termios is plain data, filled by tcgetattr before use.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return RawTerminal;
            }
            *SAVED_TERMINAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
            let mut raw = saved;
            raw.c_iflag &= !(libc::IGNBRK
                | libc::BRKINT
                | libc::PARMRK
                | libc::ISTRIP
                | libc::INLCR
                | libc::IGNCR
                | libc::ICRNL
                | libc::IXON);
            raw.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &raw);
        }
        // A panic (release builds abort) must not leave it raw either.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        RawTerminal
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Puts the terminal back as `-i` found it (once; later calls do nothing).
fn restore_terminal() {
    let saved = SAVED_TERMINAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(saved) = saved {
        // SAFETY: a termios that tcgetattr filled, on stdin.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
    }
}

/// SIGINT/SIGTERM/SIGHUP during `-i` (on the signal thread): terminal
/// back, lock released, exit 128 + signal.
fn on_signal(signo: i32) {
    restore_terminal();
    autolock::release();
    std::process::exit(128 + signo);
}

/// Reads the keyboard (or a pipe) and sends what is typed, Enter as the
/// net's line ending, until Ctrl-] (then the stream is shut down so the
/// main thread ends) or the end of input.
fn type_keys(mut writer: KeyWriter, ending: &[u8], terminal: bool, stream: TcpStream) {
    let enter = if terminal { b'\r' } else { b'\n' };
    let mut typing = true;
    let mut buffer = [0u8; 4096];
    loop {
        // SAFETY: reads into our own buffer, at most its length.
        let n = unsafe { libc::read(0, buffer.as_mut_ptr().cast(), buffer.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            // A pipe that ended: keep watching. A terminal that hung up: quit.
            if terminal {
                QUIT.store(true, Ordering::SeqCst);
                let _ = stream.shutdown(Shutdown::Both);
            }
            return;
        }
        let keys = &buffer[..n as usize];
        let quit_at = keys.iter().position(|b| *b == QUIT_KEY);
        let mut bytes = Vec::with_capacity(keys.len() + 8);
        for &key in &keys[..quit_at.unwrap_or(keys.len())] {
            if key == enter {
                bytes.extend_from_slice(ending);
            } else {
                bytes.push(key);
            }
        }
        if typing && !bytes.is_empty() {
            if let Err((status, error)) = writer.send(&bytes) {
                let _ = writeln!(io::stderr(), "\n-- not sent: {error} --");
                // Taken over: only watching from now on.
                typing = status != 409;
            }
        }
        if quit_at.is_some() {
            writer.release();
            QUIT.store(true, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Keystrokes as `POST /uart/write`, each on a connection of its own
/// (the raw request of `stream.rs`: one round trip and a loopback connect,
/// well inside the 2 ms a keystroke may take to echo).
struct KeyWriter {
    host: String,
    port: u16,
    /// `netname=…&session=…`, and the headers every request carries.
    query: String,
    headers: Vec<(&'static str, String)>,
}

impl KeyWriter {
    fn new(target: &Target, net: &str, session: &str, holder: &str) -> KeyWriter {
        let mut headers = vec![(HOLDER_HEADER, holder.to_string())];
        if let Some(token) = &target.token {
            headers.push(("Authorization", format!("Bearer {token}")));
        }
        KeyWriter {
            host: target.host.clone(),
            port: target.port.unwrap_or(LOCK_PORT),
            query: format!("netname={}&session={session}", query_encode(net)),
            headers,
        }
    }

    /// Sends keystrokes to the device.
    fn send(&mut self, bytes: &[u8]) -> Result<(), (u16, String)> {
        self.post("write", bytes)
    }

    /// Lets go of the writer claim at once, for whoever types next (the
    /// box would notice the closed stream only at its next write to it).
    fn release(&mut self) {
        let _ = self.post("release", b"");
    }

    /// `POST /uart/<route>`; the error is the HTTP status (0: no answer)
    /// and text.
    fn post(&mut self, route: &str, bytes: &[u8]) -> Result<(), (u16, String)> {
        let path = format!("/uart/{route}?{}", self.query);
        let request = stream::Request {
            method: "POST",
            host: &self.host,
            port: self.port,
            path: &path,
            headers: self.headers.clone(),
            content_type: "application/octet-stream",
            body: bytes,
            read_timeout: Some(WRITE_TIMEOUT),
        };
        let mut response = stream::send(&request).map_err(|e| (0, e.to_string()))?;
        if response.status == 200 {
            return Ok(());
        }
        let reply = Reply {
            status: response.status,
            body: response.text(REFUSAL_BYTES).unwrap_or_default(),
        };
        let error = reply
            .json()
            .and_then(|body| body["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("the box answered HTTP {}", reply.status));
        Err((reply.status, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_frames_waits_for_its_end() {
        let euro = "€".as_bytes(); // three bytes
        assert_eq!(utf8_complete(b"abc"), 3);
        assert_eq!(utf8_complete(&[b'a', euro[0], euro[1]]), 1);
        assert_eq!(
            utf8_complete(&[b'a', 0xff]),
            2,
            "invalid bytes are not held"
        );
    }

    #[test]
    fn times() {
        assert_eq!(
            clock(1_700_000_000_123_456, true),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(clock(1_700_000_000_123_456, false), "22:13:20.123");
        assert_eq!(
            clock(951_782_400_000_000, true),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(clock(0, true), "1970-01-01T00:00:00.000000Z");
    }
}
