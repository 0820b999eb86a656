//! `lager supply|battery NET tui` (alias `watch`, instruments.md §10):
//! follows `GET /<role>/monitor`, the box's NDJSON stream of readings.
//!
//! On a terminal each reading redraws a plain view; otherwise each becomes
//! one `key=value` line, and `--json` passes the box's lines through as
//! they come. The box keeps the monitor registered (the cross-role check)
//! only while this connection lives, so Ctrl-C needs no cleanup here.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use common::wire::LOCK_PORT;
use serde_json::Value;

use crate::args::WatchOpts;
use crate::boxsel::{resolve, Target};
use crate::client::Reply;
use crate::cmd::diagnose::query_encode;
use crate::cmd::instrument::{answer, done, net_or_default, COMMAND_TIMEOUT, HOLDER_HEADER};
use crate::cmd::python::is_tty;
use crate::cmd::python::stream::{self, Response};
use crate::config::Config;
use crate::error::CliError;
use crate::identity::Identity;

/// Largest refusal body read before giving up on it.
const REFUSAL_BYTES: usize = 64 * 1024;
/// Longest line accepted from the stream; a reading is a few hundred bytes.
const MAX_LINE_BYTES: usize = 1024 * 1024;

pub fn run(opts: &WatchOpts) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let net = net_or_default(&config, opts.role, opts.net.as_deref())?;
    let target = resolve(&config, opts.box_name.as_deref())?;
    let identity = Identity::current(config.default_str("user").as_deref());
    let path = format!(
        "{}?netname={}&interval={}",
        opts.role.monitor_path(),
        query_encode(&net),
        opts.interval.as_secs_f64()
    );
    let mut headers = vec![(HOLDER_HEADER, identity.holder.clone())];
    if let Some(token) = &target.token {
        headers.push(("Authorization", format!("Bearer {token}")));
    }
    let request = stream::Request {
        method: "GET",
        host: &target.host,
        port: target.port.unwrap_or(LOCK_PORT),
        path: &path,
        headers,
        content_type: "application/json",
        body: b"",
        // A reading may take the box's whole command deadline.
        read_timeout: Some(opts.interval + COMMAND_TIMEOUT),
    };
    let mut response = stream::send(&request).map_err(CliError::RunnerConnect)?;
    if response.status != 200 {
        let reply = Reply {
            status: response.status,
            body: response.text(REFUSAL_BYTES).unwrap_or_default(),
        };
        done(
            answer(opts.role.noun(), opts.role.monitor_path(), &reply)?,
            &target,
            &net,
        )?;
        return Err(CliError::UnexpectedStatus(reply.status));
    }
    let mut view = View {
        json: opts.json,
        terminal: is_tty(1),
        title: format!(
            "{} {net} on {}, every {} s (Ctrl-C to stop)",
            opts.role.noun(),
            target.display,
            opts.interval.as_secs_f64()
        ),
        started: Instant::now(),
    };
    let outcome = follow(&mut response, &mut view, opts.count, &target, &net);
    // The box frees the instrument's role as soon as it sees the reset.
    response.abort();
    outcome
}

/// Reads lines until `count` readings arrived or the stream stops.
fn follow(
    response: &mut Response,
    view: &mut View,
    count: Option<u64>,
    target: &Target,
    net: &str,
) -> Result<ExitCode, CliError> {
    let ended = |reason: String| CliError::MonitorEnded {
        display: target.display.clone(),
        reason,
    };
    let mut line = Vec::new();
    let mut readings = 0u64;
    loop {
        let piece = match response.next(&mut || {}) {
            Ok(Some(piece)) => piece,
            Ok(None) => return Err(ended("the box closed it".into())),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return Err(ended("no reading arrived in time".into()))
            }
            Err(e) => return Err(ended(e.to_string())),
        };
        for &byte in piece {
            if byte != b'\n' {
                if line.len() >= MAX_LINE_BYTES {
                    return Err(ended("a line was too long".into()));
                }
                line.push(byte);
                continue;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            let Ok(event) = serde_json::from_str::<Value>(&text) else {
                return Err(ended("a line was not JSON".into()));
            };
            let failed = match view.show(&text, &event) {
                Shown::Reading => None,
                Shown::Error(message) => Some(message),
                Shown::Other => continue,
            };
            readings += 1;
            if count.is_some_and(|c| readings >= c) {
                // The exit code tells a script whether the last reading worked.
                return match failed {
                    None => Ok(ExitCode::SUCCESS),
                    Some(error) => Err(CliError::Instrument {
                        box_name: target.display.clone(),
                        net: Some(net.to_string()),
                        error,
                    }),
                };
            }
        }
    }
}

/// How one line of the stream was shown.
enum Shown {
    Reading,
    Error(String),
    /// `monitor_started`, `driver_ready` and events this CLI does not know.
    Other,
}

struct View {
    json: bool,
    terminal: bool,
    title: String,
    started: Instant,
}

impl View {
    fn show(&mut self, text: &str, event: &Value) -> Shown {
        let shown = match event.get("event").and_then(Value::as_str) {
            Some("state") => Shown::Reading,
            Some("error") => Shown::Error(
                event
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string(),
            ),
            _ => Shown::Other,
        };
        let mut out = io::stdout().lock();
        // A closed stdout (`| head`) ends nothing here; the count or
        // Ctrl-C does, as for any streaming command.
        let _ = if self.json {
            writeln!(out, "{text}")
        } else {
            match &shown {
                Shown::Reading => self.reading(&mut out, event.get("state")),
                Shown::Error(message) => self.error(&mut out, message),
                Shown::Other => Ok(()),
            }
        };
        let _ = out.flush();
        shown
    }

    fn reading(&self, out: &mut impl Write, state: Option<&Value>) -> io::Result<()> {
        let fields = fields(state);
        if self.terminal {
            // Home, clear to end: a redraw without scrolling.
            write!(out, "\x1b[H\x1b[J{}\n\n", self.title)?;
            let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (key, value) in &fields {
                writeln!(out, "  {key:width$}  {value}")?;
            }
            Ok(())
        } else {
            let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(out, "{} {}", self.elapsed(), pairs.join(" "))
        }
    }

    fn error(&self, out: &mut impl Write, message: &str) -> io::Result<()> {
        if self.terminal {
            write!(out, "\x1b[H\x1b[J{}\n\n  Error: {message}\n", self.title)
        } else {
            // Readings go to stdout; a failed one is news for stderr.
            let _ = out;
            eprintln!("{} Error: {message}", self.elapsed());
            Ok(())
        }
    }

    fn elapsed(&self) -> String {
        format!("+{:.1}s", self.started.elapsed().as_secs_f64())
    }
}

/// A state object as `(key, value)` pairs in key order, values unquoted.
fn fields(state: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Object(map)) = state else {
        return Vec::new();
    };
    map.iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => "-".to_string(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_fields_are_sorted_and_unquoted() {
        let state = json!({"voltage": 5.0, "enabled": true, "mode": "CV", "trip": null});
        assert_eq!(
            fields(Some(&state)),
            vec![
                ("enabled".to_string(), "true".to_string()),
                ("mode".to_string(), "CV".to_string()),
                ("trip".to_string(), "-".to_string()),
                ("voltage".to_string(), "5.0".to_string()),
            ]
        );
        assert!(fields(None).is_empty());
    }
}
