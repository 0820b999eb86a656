//! `lager boxes` (list, add, delete, lock, unlock): locking.md B.9–B.11 and
//! boxes.md §5.
//!
//! Listing probes every box concurrently on a bounded pool of threads. Each
//! box gets one worker and one budget (5 s, or `LAGER_BOX_TIMEOUT_MS`): it
//! asks `GET /status` (5 s) first and then `GET /lock` (3 s) with whatever
//! budget is left, skipping the lock probe when the box did not answer at
//! all. So a dead box costs at most one budget, whatever its failure mode,
//! and never delays the others. The collecting thread enforces each box's
//! deadline itself, because socket timeouts overshoot (kernel timer slack).

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::holder::format_lock_user;
use common::version::{self, VersionStatus};
use serde_json::{json, Map, Value};

use crate::boxsel::{display_address, parse_address, resolve, Target};
use crate::client::{capped, Client, Reply, TransportError, TransportKind};
use crate::cmd::{aborted, confirm, print_body};
use crate::config::{natural_cmp, BoxEntry, Config};
use crate::error::CliError;
use crate::identity::lager_user;
use crate::output::{self, paint_if, Color, Stream};

/// Most probe threads `lager boxes` starts at once.
const MAX_PROBE_THREADS: usize = 32;
/// Spec B.11: `GET /status` gets 5 s, `GET /lock` 3 s.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
const LOCK_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// One box's whole probe (status, then lock) must fit in this.
const BOX_BUDGET: Duration = Duration::from_secs(5);
/// Spec B.9/B.10: lock and unlock requests get 5 s.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_SSH_USER: &str = "lagerdata";

/// One line of `lager boxes`.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub ip: String,
    pub port: Option<u16>,
    pub ssh_user: String,
    pub version: Option<String>,
    pub status: String,
    pub status_color: Color,
    /// Whether the box could not be reached at all.
    pub unreachable: bool,
    pub version_status: Option<VersionStatus>,
    /// The `GET /lock` body, when it answered with JSON.
    pub lock: Option<Value>,
    /// The `health` object of `/status` (instruments classified by the box).
    pub health: Option<Value>,
}

impl Row {
    /// The raw holder, when the box is locked.
    pub fn locked_by(&self) -> Option<&str> {
        let lock = self.lock.as_ref()?;
        if lock.get("locked").and_then(Value::as_bool) != Some(true) {
            return None;
        }
        lock.get("user").and_then(Value::as_str)
    }

    /// `degraded: <bucket>` when the box reports a stuck instrument.
    pub fn degraded(&self) -> Option<String> {
        let health = self.health.as_ref()?;
        if health.get("state").and_then(Value::as_str) != Some("degraded") {
            return None;
        }
        let bucket = health
            .get("bucket")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        Some(format!("degraded: {bucket}"))
    }
}

fn transport_status(error: &TransportError) -> &'static str {
    match error.kind {
        TransportKind::Timeout => "timeout",
        TransportKind::Refused | TransportKind::Dns => "unreachable",
        TransportKind::Other(_) => "error",
    }
}

/// Status column for a `/status` answer, with the version it reported.
fn status_of_reply(reply: &Reply) -> (String, Color, Option<String>, Option<VersionStatus>) {
    match reply.status {
        200 => {
            let Some(body) = reply.json() else {
                return ("invalid JSON".into(), Color::Red, None, None);
            };
            let field = |key: &str| {
                body.get(key)
                    .and_then(Value::as_str)
                    .and_then(|v| version::usable(Some(v)))
                    .map(str::to_string)
            };
            let reported = field("version").or_else(|| field("box_version"));
            let status = version::status(reported.as_deref(), common::VERSION);
            let color = match status {
                VersionStatus::Current => Color::Green,
                VersionStatus::NeedsUpdate => Color::Yellow,
                VersionStatus::Newer => Color::Cyan,
                VersionStatus::BadResponse => Color::Red,
            };
            (status.as_str().into(), color, reported, Some(status))
        }
        404 => ("old box".into(), Color::Red, None, None),
        n => (format!("HTTP {n}"), Color::Red, None, None),
    }
}

/// A row before any probe: `no IP` until the box answers.
fn base_row(name: &str, entry: &BoxEntry) -> Row {
    Row {
        name: name.to_string(),
        ip: entry.ip.clone(),
        port: entry.port,
        ssh_user: entry
            .ssh_user
            .clone()
            .unwrap_or_else(|| DEFAULT_SSH_USER.to_string()),
        version: None,
        status: "no IP".into(),
        status_color: Color::Red,
        unreachable: false,
        version_status: None,
        lock: None,
        health: None,
    }
}

/// What a probe worker reports to the collecting thread.
enum Event {
    /// Box `i` is being probed from this instant on.
    Started(usize, Instant),
    /// Box `i` answered `/status`; the row so far (no lock yet).
    Status(usize, Row),
    Done(usize, Row),
}

/// Probes one box within `budget` (see the module comment), reporting the
/// row after `/status` so a hung lock probe cannot hide the status.
fn probe(i: usize, name: &str, entry: &BoxEntry, budget: Duration, events: &Sender<Event>) -> Row {
    let mut row = base_row(name, entry);
    if entry.ip.is_empty() {
        return row;
    }
    let Some((host, embedded_port)) =
        parse_address(&entry.ip, true).filter(|_| entry.bad_port.is_none())
    else {
        row.status = "error".into();
        return row;
    };
    let target = Target {
        display: name.to_string(),
        host,
        port: entry.port.or(embedded_port),
        token: None,
    };
    let client: Client = target.lock_client();
    let deadline = Instant::now() + budget;
    match client.get("/status", STATUS_TIMEOUT.min(budget)) {
        Err(error) => {
            log::debug!("{name}: /status failed: {error}");
            row.status = transport_status(&error).into();
            row.unreachable = true;
            return row;
        }
        Ok(reply) => {
            let (status, color, reported, version_status) = status_of_reply(&reply);
            row.health = reply.json().and_then(|body| body.get("health").cloned());
            row.status = status;
            row.status_color = color;
            row.version = reported;
            row.version_status = version_status;
        }
    }
    let _ = events.send(Event::Status(i, row.clone()));
    let left = deadline.saturating_duration_since(Instant::now());
    if left >= Duration::from_millis(1) {
        let headers = [("Cache-Control", "no-cache")];
        match client.get_with("/lock", &headers, LOCK_PROBE_TIMEOUT.min(left)) {
            Ok(reply) if reply.status == 200 => row.lock = reply.json().filter(Value::is_object),
            Ok(reply) => log::debug!("{name}: /lock answered HTTP {}", reply.status),
            Err(error) => log::debug!("{name}: /lock failed: {error}"),
        }
    }
    row
}

/// Slack past a box's budget before the collector stops waiting for it.
/// Socket timeouts run on the kernel's coarse timer wheel and overshoot
/// by up to ~3% (150 ms on 5 s, measured); the collector's own wait is
/// precise, so a hung box costs the budget plus this, not plus that.
const COLLECT_SLACK: Duration = Duration::from_millis(20);

/// Probes every box concurrently, at most [`MAX_PROBE_THREADS`] at a time,
/// and returns by each box's deadline even if its worker is still stuck:
/// a box without a row by then is a `timeout` (or keeps its `/status`).
/// Stuck workers are detached; the process exits soon after anyway.
pub fn probe_all(boxes: Vec<(String, BoxEntry)>, budget: Duration) -> Vec<Row> {
    let count = boxes.len();
    let boxes = Arc::new(boxes);
    let next = Arc::new(AtomicUsize::new(0));
    let (events, inbox) = mpsc::channel();
    for _ in 0..count.min(MAX_PROBE_THREADS) {
        let (boxes, next, events) = (Arc::clone(&boxes), Arc::clone(&next), events.clone());
        let spawned = std::thread::Builder::new()
            .name("lager-probe".into())
            .spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((name, entry)) = boxes.get(i) else {
                    break;
                };
                let _ = events.send(Event::Started(i, Instant::now()));
                let row = probe(i, name, entry, budget, &events);
                let _ = events.send(Event::Done(i, row));
            });
        if let Err(e) = spawned {
            // Fewer workers only makes the listing slower.
            log::warn!("cannot start a probe thread: {e}");
        }
    }
    drop(events);
    let mut rows: Vec<Option<Row>> = vec![None; count];
    let mut partial: Vec<Option<Row>> = vec![None; count];
    let mut started: Vec<Option<Instant>> = vec![None; count];
    let failed = |i: usize, status: &str| {
        let (name, entry) = &boxes[i];
        let mut row = base_row(name, entry);
        row.status = status.into();
        row.unreachable = true;
        row
    };
    while rows.iter().any(Option::is_none) {
        let overdue = (0..count)
            .filter(|i| rows[*i].is_none())
            .filter_map(|i| started[i].map(|t| t + budget + COLLECT_SLACK))
            .min();
        let event = match overdue {
            Some(at) => inbox.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(Event::Started(i, at)) => started[i] = Some(at),
            Ok(Event::Status(i, row)) => partial[i] = Some(row),
            Ok(Event::Done(i, row)) => {
                rows[i].get_or_insert(row);
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for i in 0..count {
                    let late = started[i].is_some_and(|t| t + budget + COLLECT_SLACK <= now);
                    if rows[i].is_none() && late {
                        rows[i] = Some(partial[i].take().unwrap_or_else(|| failed(i, "timeout")));
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                // Every worker is gone (none started, or one panicked).
                for (i, row) in rows.iter_mut().enumerate() {
                    if row.is_none() {
                        *row = Some(partial[i].take().unwrap_or_else(|| failed(i, "error")));
                    }
                }
            }
        }
    }
    rows.into_iter().flatten().collect()
}

/// The table of locking.md B.11 (without the footer).
pub fn render_table(rows: &[Row], color: bool) -> String {
    let any_locked = rows.iter().any(|r| r.locked_by().is_some());
    let any_degraded = rows.iter().any(|r| r.degraded().is_some());
    let mut header = vec!["name", "ip", "user", "version", "status"];
    if any_degraded {
        header.push("health");
    }
    if any_locked {
        header.push("locked by");
    }
    let cells: Vec<Vec<(String, Option<Color>)>> = rows
        .iter()
        .map(|r| {
            let mut line = vec![
                (r.name.clone(), None),
                (display_address(&r.ip, r.port), None),
                (r.ssh_user.clone(), None),
                (r.version.clone().unwrap_or_else(|| "-".into()), None),
                (r.status.clone(), Some(r.status_color)),
            ];
            if any_degraded {
                match r.degraded() {
                    Some(text) => line.push((text, Some(Color::Red))),
                    None if r.health.is_some() => line.push(("ok".into(), Some(Color::Green))),
                    None => line.push(("-".into(), None)),
                }
            }
            if any_locked {
                let who = r.locked_by().map(format_lock_user).unwrap_or_default();
                line.push((who, Some(Color::Magenta)));
            }
            line
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|line| line[c].0.chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |line: Vec<(String, Option<Color>)>| -> String {
        let last = line.len() - 1;
        let mut out = String::new();
        for (c, (text, hue)) in line.into_iter().enumerate() {
            let pad = if c == last {
                String::new()
            } else {
                " ".repeat(widths[c] - text.chars().count() + 3)
            };
            match hue {
                Some(hue) => out.push_str(&paint_if(color, hue, &text)),
                None => out.push_str(&text),
            }
            out.push_str(&pad);
        }
        out.trim_end().to_string()
    };
    let mut out = render(header.iter().map(|h| (h.to_string(), None)).collect());
    let total = widths.iter().sum::<usize>() + 3 * (widths.len() - 1);
    out.push('\n');
    out.push_str(&"=".repeat(total));
    for line in cells {
        out.push('\n');
        out.push_str(&render(line));
    }
    out
}

/// `--json` output of locking.md B.11.
pub fn rows_json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "ip": r.ip,
                    "port": r.port,
                    "user": r.ssh_user,
                    "version": r.version,
                    "status": r.status,
                    "locked_by": r.locked_by().map(format_lock_user),
                    "lock": r.lock,
                    "health": r.health,
                })
            })
            .collect(),
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "box"
    } else {
        "boxes"
    }
}

pub fn list(json: bool) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let mut boxes: Vec<(String, BoxEntry)> = config.boxes.into_iter().collect();
    boxes.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    if boxes.is_empty() {
        if json {
            println!("[]");
        } else {
            println!(
                "No boxes found. Add boxes with: lager boxes add --name [NAME] --ip [IP_ADDRESS]"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows = probe_all(boxes, capped(BOX_BUDGET));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows_json(&rows)).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let color = output::colored(Stream::Stdout);
    println!("{}", render_table(&rows, color));
    println!();
    println!("Your CLI: {}", common::VERSION);
    let count = |want: VersionStatus| {
        rows.iter()
            .filter(|r| r.version_status == Some(want))
            .count()
    };
    let stale = count(VersionStatus::NeedsUpdate);
    if stale > 0 {
        println!(
            "{}",
            paint_if(
                color,
                Color::Yellow,
                &format!(
                    "{stale} {} updating",
                    if stale == 1 {
                        "box needs"
                    } else {
                        "boxes need"
                    }
                )
            )
        );
    }
    let newer = count(VersionStatus::Newer);
    if newer > 0 {
        println!(
            "{}",
            paint_if(
                color,
                Color::Cyan,
                &format!("{newer} {} newer than your CLI", plural(newer))
            )
        );
    }
    let unreachable = rows.iter().filter(|r| r.unreachable).count();
    if unreachable > 0 {
        println!(
            "{}",
            paint_if(
                color,
                Color::Red,
                &format!("{unreachable} {} could not be reached", plural(unreachable))
            )
        );
    }
    let root: Vec<&Row> = rows
        .iter()
        .filter(|r| r.locked_by() == Some("root"))
        .collect();
    if let Some(first) = root.first() {
        let n = root.len();
        let (noun, verb) = if n == 1 {
            ("box", "is")
        } else {
            ("boxes", "are")
        };
        let target = if n == 1 {
            first.name.as_str()
        } else {
            "[NAME]"
        };
        output::warn(&format!(
            "Warning: {n} {noun} {verb} locked as root (likely locked from inside a Docker container).\n\
             To lock as yourself, use: lager boxes lock --box {target} --user [USERNAME]\n\
             Or set permanently: lager defaults add --user [USERNAME]"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// What `boxes lock`/`unlock` got: with `--json` the reply is already
/// printed and only its exit code is left.
enum Posted {
    Printed(ExitCode),
    Reply(Reply),
}

/// `POST path` to the box's lock API; an unreachable box is the error.
fn post_lock_route(
    target: &Target,
    path: &str,
    body: &Value,
    json: bool,
) -> Result<Posted, CliError> {
    let reply = target
        .lock_client()
        .post_json(path, body, capped(LOCK_TIMEOUT))
        .map_err(|error| CliError::Unreachable {
            display: target.display.clone(),
            error,
        })?;
    Ok(if json {
        Posted::Printed(json_exit(&reply))
    } else {
        Posted::Reply(reply)
    })
}

fn json_exit(reply: &Reply) -> ExitCode {
    print_body(&reply.body);
    if reply.status == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The `lock` record's `user` of a 403/409 body, formatted.
fn lock_user_of(reply: &Reply) -> String {
    let user = reply
        .json()
        .and_then(|b| {
            b.get("lock")
                .and_then(|l| l.get("user"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".to_string());
    format_lock_user(&user)
}

/// The user `boxes lock` locks as (B.9), with the root warning.
fn lock_user(config: &Config, user: Option<&str>, display: &str) -> Result<String, CliError> {
    if user == Some("") {
        return Err(CliError::Usage("--user cannot be empty".into()));
    }
    let user = match user {
        Some(user) => user.to_string(),
        None => lager_user(config.default_str("user").as_deref()),
    };
    if user == "root" {
        output::warn(&format!(
            "Warning: locking as root (likely running inside a Docker container).\n\
             To lock as yourself, use: lager boxes lock --box {display} --user [USERNAME]\n\
             Or set permanently: lager defaults add --user [USERNAME]\n"
        ));
    }
    Ok(user)
}

/// `lager boxes lock --any` (fleet.md §3): reserve the first free box of
/// the pool as `boxes lock` would, print its name (`--json`: its entry).
pub fn lock_any(
    want: crate::pick::Want,
    wait: Duration,
    user: Option<&str>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let user = lock_user(&config, user, "NAME")?;
    let holder = crate::pick::Holder {
        user,
        holder_type: "user".into(),
        ttl_secs: None,
    };
    crate::signals::install(crate::pick::on_signal);
    let picked = crate::pick::pick(&config, &want, &holder, wait)?;
    if json {
        let entry = json!({
            "name": picked.name,
            "ip": picked.target.host,
            "port": picked.target.port,
            "already_ours": picked.already_ours,
            "lock": picked.record,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&entry).unwrap_or_default()
        );
    } else {
        println!("{}", picked.name);
        let holder = picked
            .record
            .get("user")
            .and_then(Value::as_str)
            .unwrap_or(&holder.user);
        output::tell(
            Color::Green,
            &format!(
                "Box '{}' is locked by {}",
                picked.name,
                format_lock_user(holder)
            ),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn lock(box_name: &str, user: Option<&str>, json: bool) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let target = resolve(&config, Some(box_name))?;
    let display = target.display.clone();
    let user = lock_user(&config, user, &display)?;
    let body = json!({"user": user, "holder_type": "user", "ttl_seconds": null});
    let reply = match post_lock_route(&target, "/lock", &body, json)? {
        Posted::Printed(code) => return Ok(code),
        Posted::Reply(reply) => reply,
    };
    match reply.status {
        200 => {
            let holder = reply
                .json()
                .and_then(|b| b.get("user").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(user);
            output::say(
                Color::Green,
                &format!("Box '{display}' is locked by {}", format_lock_user(&holder)),
            );
            Ok(ExitCode::SUCCESS)
        }
        409 => {
            let since = reply
                .json()
                .and_then(|b| {
                    b.get("lock")
                        .and_then(|l| l.get("locked_at"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "unknown".to_string());
            Err(CliError::AlreadyLocked {
                display,
                user: lock_user_of(&reply),
                since,
            })
        }
        401 => Err(CliError::TokenRequired { display }),
        status => Err(CliError::UnexpectedStatus(status)),
    }
}

pub fn unlock(box_name: &str, force: bool, json: bool) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let target = resolve(&config, Some(box_name))?;
    let display = target.display.clone();
    // Spec B.10: always the plain user; CI-held locks need --force.
    let user = lager_user(config.default_str("user").as_deref());
    let body = json!({"user": user, "force": force});
    let reply = match post_lock_route(&target, "/unlock", &body, json)? {
        Posted::Printed(code) => return Ok(code),
        Posted::Reply(reply) => reply,
    };
    match reply.status {
        200 => {
            output::say(Color::Green, &format!("Box '{display}' is now unlocked"));
            Ok(ExitCode::SUCCESS)
        }
        403 => Err(CliError::UnlockRefused {
            user: lock_user_of(&reply),
            display,
        }),
        401 => Err(CliError::TokenRequired { display }),
        status => Err(CliError::UnexpectedStatus(status)),
    }
}

pub struct AddBox<'a> {
    pub name: &'a str,
    pub ip: &'a str,
    pub user: &'a str,
    pub port: Option<u16>,
    pub version: Option<&'a str>,
    pub yes: bool,
}

pub fn add(req: AddBox<'_>) -> Result<ExitCode, CliError> {
    if req.name.is_empty() {
        return Err(CliError::Usage("--name cannot be empty".into()));
    }
    if req.user.is_empty() {
        return Err(CliError::Usage("--user cannot be empty".into()));
    }
    if req.port == Some(0) {
        return Err(CliError::Usage("--port must be between 1 and 65535".into()));
    }
    match parse_address(req.ip, true) {
        Some((_, None)) => {}
        _ => return Err(CliError::InvalidAddress(req.ip.to_string())),
    }
    let mut config = Config::load()?;
    let mut boxes = config.global_boxes();
    let new_addr = display_address(req.ip, req.port);
    if let Some(old) = boxes.get(req.name) {
        let old = BoxEntry::from_stored(old);
        output::warn(&format!(
            "Box '{}' already exists ({}); it will be replaced.",
            req.name,
            display_address(&old.ip, old.port)
        ));
    }
    let same_address: Vec<String> = boxes
        .iter()
        .filter(|(name, _)| name.as_str() != req.name)
        .filter(|(_, value)| {
            let entry = BoxEntry::from_stored(value);
            display_address(&entry.ip, entry.port) == new_addr
        })
        .map(|(name, _)| name.clone())
        .collect();
    for other in &same_address {
        output::warn(&format!(
            "Box '{other}' already uses {new_addr}; it will be removed."
        ));
    }
    if !req.yes {
        println!("Box entry:");
        println!("  name: {}", req.name);
        println!("  ip: {}", req.ip);
        println!("  user: {}", req.user);
        if let Some(port) = req.port {
            println!("  port: {port}");
        }
        if let Some(version) = req.version {
            println!("  version: {version}");
        }
        let mut hint = format!(
            "lager boxes add --name {} --ip {} --user {}",
            req.name, req.ip, req.user
        );
        if let Some(port) = req.port {
            hint.push_str(&format!(" --port {port}"));
        }
        if let Some(version) = req.version {
            hint.push_str(&format!(" --version {version}"));
        }
        hint.push_str(" --yes");
        if !confirm(&format!("Add box '{}' ({})?", req.name, req.ip), &hint)? {
            return Ok(aborted());
        }
    }
    // Keep fields this command does not set (token, unknown keys).
    let mut fields = match boxes.get(req.name) {
        Some(Value::Object(fields)) => fields.clone(),
        _ => Map::new(),
    };
    fields.insert("ip".into(), json!(req.ip));
    fields.insert("user".into(), json!(req.user));
    match req.port {
        Some(port) => fields.insert("port".into(), json!(port)),
        None => fields.remove("port"),
    };
    if let Some(version) = req.version {
        fields.insert("version".into(), json!(version));
    }
    for other in &same_address {
        boxes.remove(other);
    }
    boxes.insert(req.name.to_string(), Value::Object(fields));
    let defaults = config.defaults();
    config.save(boxes, defaults)?;
    output::say(
        Color::Green,
        &format!("Added box '{}' ({})", req.name, req.ip),
    );
    Ok(ExitCode::SUCCESS)
}

pub fn delete(name: &str, yes: bool) -> Result<ExitCode, CliError> {
    let mut config = Config::load()?;
    let mut boxes = config.global_boxes();
    let Some(stored) = boxes.get(name) else {
        return match config.boxes.get(name).and_then(|e| e.source.clone()) {
            Some(path) => Err(CliError::BoxInProjectFile {
                name: name.to_string(),
                path,
            }),
            None => Err(CliError::DeleteUnknownBox(name.to_string())),
        };
    };
    let entry = BoxEntry::from_stored(stored);
    if !yes {
        let question = format!(
            "Delete box '{name}' ({})?",
            display_address(&entry.ip, entry.port)
        );
        if !confirm(
            &question,
            &format!("lager boxes delete --name {name} --yes"),
        )? {
            return Ok(aborted());
        }
    }
    boxes.remove(name);
    let mut defaults = config.defaults();
    if defaults.get("gateway_id").and_then(Value::as_str) == Some(name) {
        defaults.remove("gateway_id");
    }
    config.save(boxes, defaults)?;
    output::say(Color::Green, &format!("Deleted box '{name}'"));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, status: &str, lock: Option<Value>) -> Row {
        Row {
            name: name.into(),
            ip: "10.0.0.1".into(),
            port: None,
            ssh_user: "lagerdata".into(),
            version: Some("0.1.0".into()),
            status: status.into(),
            status_color: Color::Green,
            unreachable: false,
            version_status: None,
            lock,
            health: None,
        }
    }

    #[test]
    fn a_degraded_box_gets_a_health_column() {
        let mut stuck = row("b1", "current", None);
        stuck.health = Some(json!({"state": "degraded", "bucket": "wedged", "nets": []}));
        let mut fine = row("b2", "current", None);
        fine.health = Some(json!({"state": "ok", "nets": []}));
        let old = row("b3", "current", None);
        let text = render_table(&[stuck.clone(), fine, old], false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("status    health"), "{text}");
        assert!(lines[2].ends_with("current   degraded: wedged"), "{text}");
        assert!(lines[3].ends_with("current   ok"), "{text}");
        assert!(lines[4].ends_with("current   -"), "{text}");
        assert_eq!(rows_json(&[stuck])[0]["health"]["bucket"], "wedged");
        let healthy = render_table(&[row("b1", "current", None)], false);
        assert!(
            !healthy.contains("health"),
            "no column while every box is fine"
        );
    }

    #[test]
    fn table_without_locks_has_no_locked_by_column() {
        let text = render_table(&[row("b1", "current", None)], false);
        assert_eq!(
            text,
            "name   ip         user        version   status\n\
             ===============================================\n\
             b1     10.0.0.1   lagerdata   0.1.0     current"
        );
    }

    #[test]
    fn table_with_a_lock_formats_the_holder() {
        let lock = json!({"locked": true, "user": "ci:drone:org/p#15:5@r"});
        let rows = [
            row("b1", "current", Some(lock)),
            row("b2", "timeout", Some(json!({"locked": false}))),
        ];
        let text = render_table(&rows, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("status    locked by"), "{text}");
        assert!(
            lines[2].ends_with("current   drone org/p build 15"),
            "{text}"
        );
        assert!(lines[3].ends_with("timeout"), "{text}");
        assert_eq!(lines[1].len(), lines[2].len(), "{text}");
    }

    #[test]
    fn colour_does_not_change_alignment() {
        let rows = [row("b1", "current", None)];
        let plain = render_table(&rows, false);
        let colored = render_table(&rows, true);
        assert_eq!(
            colored.replace("\x1b[32m", "").replace("\x1b[0m", ""),
            plain
        );
    }

    #[test]
    fn status_mapping_of_replies() {
        let reply = |status: u16, body: &str| Reply {
            status,
            body: body.into(),
        };
        assert_eq!(status_of_reply(&reply(200, "nope")).0, "invalid JSON");
        assert_eq!(status_of_reply(&reply(200, "{}")).0, "bad response");
        assert_eq!(status_of_reply(&reply(404, "")).0, "old box");
        assert_eq!(status_of_reply(&reply(500, "")).0, "HTTP 500");
        let current = format!(r#"{{"version":"{}"}}"#, common::VERSION);
        assert_eq!(status_of_reply(&reply(200, &current)).0, "current");
        assert_eq!(
            status_of_reply(&reply(200, r#"{"box_version":"0.0.1"}"#)).0,
            "needs update"
        );
        assert_eq!(
            status_of_reply(&reply(200, r#"{"version":"99.0"}"#)).0,
            "newer"
        );
    }
}
