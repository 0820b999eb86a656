//! The runs' management side of `lager python` (runner.md §5.7–5.9):
//! `--kill`, `--kill-all`, `--reattach`, `--continue`, `--console`, the
//! TTY stdin thread that resumes breakpoints, and `--download`. None of
//! these takes or checks the box lock (locking.md B.8).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::wire::RUNNER_PORT;
use flate2::read::GzDecoder;
use serde_json::{json, Value};

use super::render::{self, Outcome, Terminal, DETACHING};
use super::{error_text, finish_run, http_error, is_tty, normalize, process_exit, set_active};
use super::{stream, ActiveRun, SMALL_BODY};
use crate::args::Manage;
use crate::boxsel::Target;
use crate::client::Client;
use crate::error::CliError;
use crate::output::{self, Color};
use crate::readcap;

/// Management requests connect within 7 s (§5.6–5.7).
const CONNECT: Duration = Duration::from_secs(7);
/// Kill waits up to 5 s on the box before SIGKILL; leave room.
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Console connect (§5.8).
const CONSOLE_CONNECT: Duration = Duration::from_secs(10);
/// Longest line typed to a console or a paused run that is read at once.
const LINE_MAX: usize = 64 * 1024;
/// After Ctrl+D, how long a silent console may keep the CLI waiting.
const CONSOLE_DRAIN: Duration = Duration::from_millis(500);
/// Downloads: connect like lock traffic; any wait for bytes up to 60 s.
const DOWNLOAD_READ: Duration = Duration::from_secs(60);

pub fn run(
    op: &Manage,
    target: &Target,
    runner: &Client,
    label: &str,
) -> Result<ExitCode, CliError> {
    match op {
        Manage::Kill { id, signal } => kill(runner, json!(id), *signal, &target.display)
            .map(|()| println!("Process {id} killed")),
        Manage::KillAll { signal } => kill(runner, Value::Null, *signal, &target.display)
            .map(|()| println!("All processes killed")),
        Manage::Continue(id) => resume(runner, id, &target.display),
        Manage::Console(id) => return console(runner, target, id),
        Manage::Reattach(id) => return reattach(runner, target, id, label),
    }
    .map(|()| ExitCode::SUCCESS)
}

fn kill(runner: &Client, id: Value, signal: i32, display: &str) -> Result<(), CliError> {
    let body = json!({"lager_process_id": id, "signal": signal});
    let reply = runner
        .post_json_timeouts("/python/kill", &body, CONNECT, KILL_TIMEOUT)
        .map_err(|error| unreachable(display, error))?;
    match reply.status {
        200 => Ok(()),
        422 => Err(CliError::Rejected(
            error_text(&reply.body).unwrap_or(reply.body),
        )),
        status => Err(http_error(status, &reply.body, display)),
    }
}

fn unreachable(display: &str, error: crate::client::TransportError) -> CliError {
    CliError::Unreachable {
        display: display.to_string(),
        error,
    }
}

/// `POST /python/continue` for `id`; `Ok(true)` when a breakpoint resumed.
fn send_continue(runner: &Client, id: &str, display: &str) -> Result<bool, CliError> {
    let reply = runner
        .post_json_timeouts(
            "/python/continue",
            &json!({"lager_process_id": id}),
            CONNECT,
            SHORT_TIMEOUT,
        )
        .map_err(|error| unreachable(display, error))?;
    match reply.status {
        200 => Ok(reply
            .json()
            .and_then(|v| v.get("resumed").and_then(Value::as_bool))
            == Some(true)),
        400 | 422 => Err(CliError::Rejected(
            error_text(&reply.body).unwrap_or(reply.body),
        )),
        status => Err(http_error(status, &reply.body, display)),
    }
}

fn resume(runner: &Client, id: &str, display: &str) -> Result<(), CliError> {
    if send_continue(runner, id, display)? {
        println!("Resumed {id}");
    } else {
        output::warn(&format!("No paused breakpoint found for {id} on {display}"));
    }
    Ok(())
}

/// On a TTY, each line typed resumes the run's breakpoint; with `socket`
/// (a reattached stream) Ctrl+D detaches by shutting it down.
pub fn spawn_stdin_continue(runner: Client, id: String, socket: Option<TcpStream>) {
    let spawned = std::thread::Builder::new()
        .name("lager-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            loop {
                line.clear();
                match readcap::read_line(&mut stdin.lock(), &mut line, LINE_MAX) {
                    Ok(0) | Err(_) => {
                        if let Some(socket) = &socket {
                            DETACHING.store(true, Ordering::SeqCst);
                            let _ = socket.shutdown(Shutdown::Both);
                        }
                        return;
                    }
                    Ok(_) => {
                        if let Err(e) = send_continue(&runner, &id, runner.addr()) {
                            output::tell(Color::Red, &e.to_string());
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot read the terminal for breakpoint resumes: {e}");
    }
}

fn reattach(runner: &Client, target: &Target, id: &str, label: &str) -> Result<ExitCode, CliError> {
    let body = json!({"lager_process_id": id}).to_string();
    let mut headers = Vec::new();
    if let Some(token) = &target.token {
        headers.push(("Authorization", format!("Bearer {token}")));
    }
    let request = stream::Request {
        method: "POST",
        host: &target.host,
        port: target.port.unwrap_or(RUNNER_PORT),
        path: "/python/attach",
        headers,
        content_type: "application/json",
        body: body.as_bytes(),
        // An attached follower may wait on a silent job indefinitely.
        read_timeout: None,
    };
    let mut response = stream::send(&request).map_err(CliError::RunnerConnect)?;
    if response.status != 200 {
        let text = response.text(SMALL_BODY).unwrap_or_default();
        return Err(match response.status {
            404 | 422 => CliError::Rejected(error_text(&text).unwrap_or(text)),
            status => CliError::RunnerHttp {
                status,
                detail: None,
            },
        });
    }
    let run = ActiveRun {
        runner: runner.clone(),
        process_id: id.to_string(),
    };
    set_active(Some(run.clone()));
    if is_tty(0) {
        spawn_stdin_continue(runner.clone(), id.to_string(), response.socket().ok());
    }
    let _ = std::io::stdout().flush();
    let mut terminal = Terminal::new();
    let outcome = render::follow(&mut response, &mut terminal);
    drop(response);
    set_active(None);
    match outcome {
        Outcome::Exit(raw) => {
            let code = normalize(raw);
            println!("Process exited with code {code}");
            Ok(ExitCode::from(process_exit(code)))
        }
        Outcome::Detached => {
            println!("\nDetaching...");
            println!("To reattach: lager python --reattach {id} --box {label}");
            println!("To kill: lager python --kill {id} --box {label}");
            Ok(ExitCode::SUCCESS)
        }
        other => finish_run(other, &run, &target.display, || {}),
    }
}

fn console(runner: &Client, target: &Target, id: &str) -> Result<ExitCode, CliError> {
    let reply = runner
        .post_json_timeouts(
            "/python/breakpoint",
            &json!({"lager_process_id": id}),
            CONNECT,
            SHORT_TIMEOUT,
        )
        .map_err(|error| unreachable(&target.display, error))?;
    if reply.status != 200 {
        return Err(match reply.status {
            400 | 422 => CliError::Rejected(error_text(&reply.body).unwrap_or(reply.body)),
            status => http_error(status, &reply.body, &target.display),
        });
    }
    let info = reply.json().unwrap_or(Value::Null);
    if info.get("paused").and_then(Value::as_bool) != Some(true) {
        return Err(CliError::NotPaused(id.to_string()));
    }
    let Some(port) = info
        .get("console_port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
    else {
        return Err(CliError::NoConsole);
    };
    let addr = crate::boxsel::display_address(&target.host, Some(port));
    let failed = |reason: String| CliError::Console {
        addr: addr.clone(),
        reason,
    };
    let socket_addr = (target.host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| failed(e.to_string()))?
        .next()
        .ok_or_else(|| failed("no address".to_string()))?;
    let stream = TcpStream::connect_timeout(&socket_addr, CONSOLE_CONNECT)
        .map_err(|e| failed(e.to_string()))?;
    println!("Connected to interactive console (Ctrl+D to disconnect)");
    let mut from_box = stream.try_clone().map_err(|e| failed(e.to_string()))?;
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut out = std::io::stdout();
        loop {
            match from_box.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
            }
        }
    });
    let mut to_box = stream;
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        match readcap::read_line(&mut stdin.lock(), &mut line, LINE_MAX) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if to_box.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        }
        if printer.is_finished() {
            break;
        }
    }
    // Ctrl+D: say we are done, show what the console still sends, and
    // stop once it closes or goes quiet for CONSOLE_DRAIN.
    let _ = to_box.shutdown(Shutdown::Write);
    let _ = to_box.set_read_timeout(Some(CONSOLE_DRAIN));
    let _ = printer.join();
    let _ = to_box.shutdown(Shutdown::Both);
    println!("Disconnected from console");
    Ok(ExitCode::SUCCESS)
}

/// The local file name a `--download PATH` is saved under.
pub fn download_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.replace('/', "_"))
}

/// Percent-encodes a query value (unreserved characters and `/` kept).
fn query_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// §5.9: fetches each path after the run; failures are reported, never
/// change the exit code.
pub fn downloads(target: &Target, paths: &[String]) {
    if paths.is_empty() {
        return;
    }
    let client = target.lock_client();
    for path in paths {
        if let Err(reason) = download(&client, path) {
            output::tell(Color::Red, &format!("Failed to download {path}: {reason}"));
        }
    }
}

fn download(client: &Client, path: &str) -> Result<(), String> {
    let reply = client
        .get_stream(
            &format!("/download-file?filename={}", query_encode(path)),
            CONNECT,
            DOWNLOAD_READ,
        )
        .map_err(|e| e.to_string())?;
    let reader = reply.reader;
    if reply.status != 200 {
        let mut body = Vec::new();
        let _ = reader.take(SMALL_BODY as u64).read_to_end(&mut body);
        let body = String::from_utf8_lossy(&body).into_owned();
        let error = error_text(&body).unwrap_or(body);
        return Err(format!("HTTP {} - {error}", reply.status));
    }
    let gzip = reply
        .content_encoding
        .is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(reader))
    } else {
        reader
    };
    let name = download_name(path);
    let partial = format!(".{name}.lager-download");
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&partial)?;
        std::io::copy(&mut reader, &mut file)?;
        file.sync_all()?;
        std::fs::rename(&partial, &name)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(format!("{e} (saving ./{name})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_encoding() {
        assert_eq!(download_name("/tmp/lager-output/r.csv"), "r.csv");
        assert_eq!(download_name("x"), "x");
        assert_eq!(
            query_encode("/tmp/lager-output/a b&c.txt"),
            "/tmp/lager-output/a%20b%26c.txt"
        );
    }
}
