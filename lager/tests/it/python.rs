//! `lager python` (runner.md §5) end to end: the real `lager` uploads real
//! `python3` scripts to a real `lagerd`, each test with its own HOME,
//! config dir, state dir and `LAGERD_RUN_DIR`. Every release path is
//! checked by asking the box whether it is still locked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use lager_testsupport::{request, wait_until, TempDir};
use serde_json::{json, Value};

use crate::{fake_box, lagerd_path, refused_port, Cli, Run};

/// A real lagerd whose runs live in a private `LAGERD_RUN_DIR`.
struct RunnerBox {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl RunnerBox {
    fn start() -> RunnerBox {
        RunnerBox::start_with(&[])
    }

    fn start_with(args: &[&str]) -> RunnerBox {
        let dir = TempDir::new("lagerd-runner");
        for sub in ["state", "run"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let mut child = Command::new(lagerd_path())
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path().join("state"))
            .args(args)
            .env("LAGERD_RUN_DIR", dir.path().join("run"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lagerd");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read lagerd stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("lagerd said {line:?}"));
        // Keep draining so lagerd never blocks on a full stdout pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink);
        });
        RunnerBox { child, addr, dir }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn lock(&self) -> Value {
        let reply = request(self.addr, "GET", "/lock", None);
        serde_json::from_str(&reply.text()).expect("lock JSON")
    }

    fn assert_unlocked(&self) {
        assert_eq!(
            self.lock(),
            json!({"locked": false}),
            "the box is still locked"
        );
    }

    fn lock_as(&self, user: &str) {
        let body = json!({"user": user}).to_string();
        assert_eq!(request(self.addr, "POST", "/lock", Some(&body)).status, 200);
    }

    fn unlock_as(&self, user: &str) {
        let body = json!({"user": user}).to_string();
        request(self.addr, "POST", "/unlock", Some(&body));
    }
}

impl Drop for RunnerBox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CLI environment whose saved box `b` is `port` on loopback.
fn cli_for(tag: &str, port: u16) -> Cli {
    let cli = Cli::new(tag);
    cli.write_config(&json!({"BOXES": {"b": crate::entry(port)}}));
    cli
}

fn script(cli: &Cli, name: &str, text: &str) -> PathBuf {
    let path = cli.work_dir().join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, text).expect("write script");
    path
}

/// `lager python` running in the background with piped output, read by a
/// thread so every wait has a deadline.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: String,
}

/// How long a test waits for any expected output or exit.
const PATIENCE: Duration = Duration::from_secs(20);

impl Running {
    fn start(cli: &Cli, args: &[&str], extra: &[(&str, &str)]) -> Running {
        let mut cmd = cli.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn lager");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Running {
            child,
            lines: read_lines(stdout),
            seen: String::new(),
        }
    }

    /// Waits until stdout has shown `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push_str(&line),
                Err(e) => panic!("no {needle:?} on stdout ({e}); saw {:?}", self.seen),
            }
        }
    }

    fn signal(&self, signo: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signo) };
    }

    /// Waits (bounded) for exit; returns the code (-1: killed by a
    /// signal) and all output.
    fn finish(mut self, within: Duration) -> Run {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!(
                    "lager did not exit within {within:?}; stdout {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.seen.push_str(&line);
        }
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout: self.seen,
            stderr,
            elapsed: start.elapsed(),
        }
    }
}

/// Lines of `reader` (newline kept) on a channel that closes at EOF.
fn read_lines(mut reader: impl BufRead + Send + 'static) -> mpsc::Receiver<String> {
    let (send, recv) = mpsc::channel();
    std::thread::spawn(move || loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 => {
                if send.send(line).is_err() {
                    return;
                }
            }
            _ => return,
        }
    });
    recv
}

#[test]
fn streams_stdout_and_stderr_separately_and_exits_with_the_script_code() {
    let b = RunnerBox::start();
    let cli = cli_for("py-basic", b.port());
    script(
        &cli,
        "t.py",
        "import sys\nfor i in range(3):\n    print(f'out{i}')\n    print(f'err{i}', file=sys.stderr)\nsys.exit(42)\n",
    );
    let run = cli.run(&["python", "t.py", "--box", "b"]);
    run.expect_code(42);
    assert_eq!(run.stdout, "out0\nout1\nout2\n");
    assert!(run.stderr.contains("err0\nerr1\nerr2\n"), "{}", run.stderr);
    b.assert_unlocked();
}

#[test]
fn args_env_and_the_lock_during_the_run() {
    let b = RunnerBox::start();
    let mut cli = cli_for("py-env", b.port());
    cli.set("FROM_HERE", "passed");
    script(
        &cli,
        "t.py",
        "import os, sys, json, urllib.request\n\
         print(sys.argv[1:])\n\
         for k in ['GREETING', 'FROM_HERE', 'LAGER_BOX', 'LAGER_RUNNABLE']:\n    print(k, os.environ.get(k))\n\
         print('ID', os.environ['LAGER_PROCESS_ID'])\n\
         lock = json.load(urllib.request.urlopen(os.environ['LOCK_URL']))\n\
         print('LOCK', lock.get('user'), lock.get('holder_type'), lock.get('ttl_seconds'))\n",
    );
    let lock_url = format!("LOCK_URL=http://{}/lock", b.addr);
    let run = cli.run(&[
        "python",
        "t.py",
        "--box",
        "b",
        "--env",
        "GREETING=hi there",
        "--env",
        &lock_url,
        "--passenv",
        "FROM_HERE",
        "--",
        "--flag",
        "two words",
    ]);
    run.expect_code(0);
    let out = &run.stdout;
    assert!(out.contains("['--flag', 'two words']\n"), "{out}");
    assert!(out.contains("GREETING hi there\n"), "{out}");
    assert!(out.contains("FROM_HERE passed\n"), "{out}");
    assert!(out.contains("LAGER_BOX b\n"), "{out}");
    assert!(out.contains("LAGER_RUNNABLE t.py\n"), "{out}");
    assert!(out.contains("LOCK tester ephemeral 1800\n"), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("ID "))
        .expect("process id");
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "4", "a v4 UUID: {id}");
    b.assert_unlocked();
}

#[test]
fn a_failing_script_and_a_module_directory() {
    let b = RunnerBox::start();
    let cli = cli_for("py-module", b.port());
    script(&cli, "proj/main.py", "import helper\nhelper.go()\n");
    script(
        &cli,
        "proj/helper.py",
        "def go():\n    print('from helper')\n    raise RuntimeError('boom')\n",
    );
    script(&cli, "proj/.git/junk.py", "raise SystemExit(9)\n");
    let run = cli.run(&["python", "proj", "--box", "b"]);
    run.expect_code(1);
    assert_eq!(run.stdout, "from helper\n");
    assert!(run.stderr.contains("RuntimeError: boom"), "{}", run.stderr);
    b.assert_unlocked();

    // A single file with --add-file becomes main.py next to the extra file.
    script(&cli, "solo.py", "print(open('data.txt').read())\n");
    script(&cli, "data.txt", "shipped along");
    let run = cli.run(&["python", "solo.py", "--box", "b", "--add-file", "data.txt"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "shipped along\n");
}

#[test]
fn the_box_timeout_exits_124() {
    let b = RunnerBox::start();
    let cli = cli_for("py-timeout", b.port());
    script(
        &cli,
        "t.py",
        "import time\nprint('start')\ntime.sleep(30)\n",
    );
    // Long enough for python3 to start and print on a loaded machine.
    let run = cli.run(&["python", "t.py", "--box", "b", "--timeout", "3"]);
    run.expect_code(124);
    assert!(run.stdout.starts_with("start\n"), "{}", run.stdout);
    assert!(
        run.stderr.contains("Script terminated due to timeout."),
        "{}",
        run.stderr
    );
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
    b.assert_unlocked();
}

const SLEEPER: &str = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n";

/// runner.md §5.6: a signal to `lager python` sends exactly one `POST
/// /python/kill` with signal 15 for this run, the job dies of it (143,
/// not the SIGKILL of a job that outlived the kill's grace), and the lock
/// is released.
fn signal_stops_the_job_and_releases(signo: i32, tag: &str) {
    let b = RunnerBox::start();
    let proxy = Proxy::start(b.addr);
    let cli = cli_for(tag, proxy.port);
    script(
        &cli,
        "t.py",
        "import os, time\nprint('ID', os.environ['LAGER_PROCESS_ID'], flush=True)\nprint('ready', flush=True)\ntime.sleep(60)\n",
    );
    let mut running = Running::start(&cli, &["python", "t.py", "--box", "b"], &[]);
    running.wait_for("ready");
    let id = running
        .seen
        .lines()
        .find_map(|l| l.strip_prefix("ID "))
        .expect("the run's id")
        .to_string();
    assert_eq!(b.lock()["user"], "tester");
    running.signal(signo);
    let run = running.finish(Duration::from_secs(20));
    assert_eq!(
        run.code, 143,
        "the job died of the kill's SIGTERM; stderr {}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains(" Attempting to stop Lager Python job\n"),
        "{}",
        run.stdout
    );
    let kills = proxy.requests("POST /python/kill ");
    assert_eq!(kills.len(), 1, "one kill request: {kills:?}");
    let body = kills[0]
        .split_once("\r\n\r\n")
        .map(|(_, body)| serde_json::from_str::<Value>(body.trim()))
        .expect("a body")
        .expect("JSON");
    assert_eq!(body, json!({"lager_process_id": id, "signal": 15}));
    b.assert_unlocked();
}

#[test]
fn sigint_is_forwarded_as_one_kill_and_releases() {
    signal_stops_the_job_and_releases(libc::SIGINT, "py-sigint");
}

#[test]
fn sigterm_is_forwarded_as_one_kill_and_releases() {
    signal_stops_the_job_and_releases(libc::SIGTERM, "py-sigterm");
}

#[test]
fn sighup_is_forwarded_as_one_kill_and_releases() {
    signal_stops_the_job_and_releases(libc::SIGHUP, "py-sighup");
}

#[test]
fn a_second_signal_kills_the_cli() {
    // The job ignores SIGTERM, so the box's kill request takes its full
    // 5 s grace; the second Ctrl+C must not wait for it.
    let b = RunnerBox::start();
    let cli = cli_for("py-2sig", b.port());
    script(
        &cli,
        "t.py",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)\n",
    );
    let mut running = Running::start(&cli, &["python", "t.py", "--box", "b"], &[]);
    running.wait_for("ready");
    running.signal(libc::SIGINT);
    running.wait_for("Attempting to stop");
    running.signal(libc::SIGINT);
    let start = Instant::now();
    let run = running.finish(Duration::from_secs(10));
    assert_eq!(run.code, -1, "killed by the second SIGINT: {run:?}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn killing_lagerd_mid_run_is_a_lost_connection() {
    let mut b = RunnerBox::start();
    let cli = cli_for("py-lost", b.port());
    script(&cli, "t.py", SLEEPER);
    let mut running = Running::start(&cli, &["python", "t.py", "--box", "b"], &[]);
    running.wait_for("ready");
    let _ = b.child.kill();
    let _ = b.child.wait();
    let run = running.finish(Duration::from_secs(20));
    run.expect_code(255);
    assert!(
        run.stderr.contains(
            "Error: Lost connection to box 'b' before the script finished; its exit status is unknown."
        ),
        "{}",
        run.stderr
    );
}

/// What the CLI sent on one connection, as the proxy forwarded it.
type Recording = Arc<Mutex<Vec<u8>>>;

/// A TCP proxy in front of lagerd that keeps a copy of every byte the
/// CLI sends (so a test can count its requests) and can cut its `POST
/// /python` connections, so the lock routes stay reachable after the cut.
struct Proxy {
    port: u16,
    runs: Arc<Mutex<Vec<TcpStream>>>,
    /// What the CLI sent, one entry per connection.
    sent: Arc<Mutex<Vec<Recording>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let runs: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let sent: Arc<Mutex<Vec<Recording>>> = Arc::default();
        let (shared_runs, shared_sent) = (Arc::clone(&runs), Arc::clone(&sent));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let runs = Arc::clone(&shared_runs);
                let copy: Recording = Arc::default();
                shared_sent.lock().expect("sent").push(Arc::clone(&copy));
                std::thread::spawn(move || {
                    let mut first = [0u8; 13];
                    let mut from_client = client.try_clone().expect("clone");
                    let Ok(()) = from_client.read_exact(&mut first) else {
                        return;
                    };
                    if &first == b"POST /python " {
                        runs.lock()
                            .expect("runs")
                            .push(client.try_clone().expect("clone"));
                    }
                    let mut to_server = server.try_clone().expect("clone");
                    copy.lock().expect("copy").extend_from_slice(&first);
                    if to_server.write_all(&first).is_err() {
                        return;
                    }
                    let (mut server_reader, mut client_writer) =
                        (server.try_clone().expect("clone"), client);
                    let back = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut server_reader, &mut client_writer);
                        let _ = client_writer.shutdown(Shutdown::Both);
                    });
                    let mut block = [0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut block) {
                        copy.lock().expect("copy").extend_from_slice(&block[..n]);
                        if to_server.write_all(&block[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(Shutdown::Both);
                    let _ = back.join();
                });
            }
        });
        Proxy { port, runs, sent }
    }

    fn cut_runs(&self) {
        for stream in self.runs.lock().expect("runs").iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Every request the CLI sent whose request line starts with `line`
    /// (e.g. `POST /python/kill `), head and all that followed it on its
    /// connection up to the next request line.
    fn requests(&self, line: &str) -> Vec<String> {
        let mut found = Vec::new();
        for copy in self.sent.lock().expect("sent").iter() {
            let text = String::from_utf8_lossy(&copy.lock().expect("copy")).into_owned();
            let starts: Vec<usize> = text
                .match_indices("HTTP/1.1\r\n")
                .map(|(at, _)| text[..at].rfind('\n').map_or(0, |newline| newline + 1))
                .collect();
            for (i, &start) in starts.iter().enumerate() {
                let end = starts.get(i + 1).copied().unwrap_or(text.len());
                if text[start..].starts_with(line) {
                    found.push(text[start..end].to_string());
                }
            }
        }
        found
    }
}

#[test]
fn a_lost_connection_releases_the_lock_and_exits_255() {
    let b = RunnerBox::start();
    let proxy = Proxy::start(b.addr);
    let cli = cli_for("py-cut", proxy.port);
    script(&cli, "t.py", SLEEPER);
    let mut running = Running::start(&cli, &["python", "t.py", "--box", "b"], &[]);
    running.wait_for("ready");
    assert_eq!(b.lock()["user"], "tester");
    proxy.cut_runs();
    let run = running.finish(Duration::from_secs(20));
    run.expect_code(255);
    assert!(
        run.stderr.contains("Lost connection to box 'b'"),
        "{}",
        run.stderr
    );
    b.assert_unlocked();
}

#[test]
fn a_closed_stdout_pipe_stops_the_job_and_exits_0() {
    let b = RunnerBox::start();
    let cli = cli_for("py-pipe", b.port());
    script(
        &cli,
        "t.py",
        "import time\nwhile True:\n    print('spam', flush=True)\n    time.sleep(0.01)\n",
    );
    let mut cmd = cli.command(&["python", "t.py", "--box", "b"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first line");
    assert_eq!(line, "spam\n");
    // Like `| head -1`: the reader goes away.
    drop(stdout);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "lager kept running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    b.assert_unlocked();
}

#[test]
fn detach_keeps_the_lock_then_reattach_and_kill() {
    let b = RunnerBox::start();
    let cli = cli_for("py-detach", b.port());
    script(
        &cli,
        "t.py",
        "import time\nfor i in range(3):\n    print('line', i, flush=True)\nwhile True:\n    time.sleep(0.1)\n",
    );
    let run = cli.run(&["python", "t.py", "--box", "b", "--detach"]);
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("Box 'b' locked for detached run; release with: lager boxes unlock --box b"),
        "{}",
        run.stderr
    );
    let id = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Process detached (Process ID: "))
        .and_then(|l| l.strip_suffix(')'))
        .expect("process id line")
        .to_string();
    assert!(run.stdout.contains(&format!(
        "To reattach: lager python --reattach {id} --box b\n"
    )));
    assert!(run
        .stdout
        .contains(&format!("To kill: lager python --kill {id} --box b\n")));
    let lock = b.lock();
    assert_eq!(lock["user"], "tester");
    assert_eq!(lock["ttl_seconds"], Value::Null);

    // Reattach replays the output; killing the job ends the stream.
    let mut following = Running::start(&cli, &["python", "--reattach", &id, "--box", "b"], &[]);
    following.wait_for("line 2");
    let run = cli.run(&["python", "--kill", &id, "--box", "b"]);
    run.expect_code(0);
    assert_eq!(run.stdout, format!("Process {id} killed\n"));
    let run = following.finish(Duration::from_secs(20));
    assert!(
        run.stdout.starts_with("line 0\nline 1\nline 2\n"),
        "{}",
        run.stdout
    );
    // The follower sees the SIGTERM exit, or `- 2 -1` if the job's dir
    // was deleted first (runner.md §4).
    assert!(
        (run.code == 143 && run.stdout.ends_with("Process exited with code 143\n"))
            || run.code == 255,
        "{run:?}"
    );
    // The detached run's lock stays until unlocked by hand.
    assert_eq!(b.lock()["user"], "tester");
    cli.run(&["boxes", "unlock", "--box", "b"]).expect_code(0);
    b.assert_unlocked();

    // An unknown id: the box's 422 text.
    let run = cli.run(&["python", "--reattach", &id, "--box", "b"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&format!("Process not found: {id}")),
        "{}",
        run.stderr
    );
    let run = cli.run(&["python", "--kill", "not-a-uuid", "--box", "b"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("Invalid process UUID: not-a-uuid"),
        "{}",
        run.stderr
    );
}

#[test]
fn reattach_to_a_finished_run_prints_its_exit_code() {
    let b = RunnerBox::start();
    let cli = cli_for("py-reattach", b.port());
    script(&cli, "t.py", "print('done early')\nraise SystemExit(3)\n");
    let run = cli.run(&["python", "t.py", "--box", "b", "-d"]);
    run.expect_code(0);
    let id = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Process detached (Process ID: "))
        .and_then(|l| l.strip_suffix(')'))
        .expect("process id")
        .to_string();
    let meta = b.run_dir().join(&id).join("meta.json");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&meta)
            .is_ok_and(|m| m.contains("finished"))),
        "the detached run did not finish"
    );
    let run = cli.run(&["python", "--reattach", &id, "--box", "b"]);
    run.expect_code(3);
    assert_eq!(run.stdout, "done early\nProcess exited with code 3\n");
    cli.run(&["boxes", "unlock", "--box", "b"]).expect_code(0);
}

#[test]
fn download_after_the_run() {
    let b = RunnerBox::start();
    let cli = cli_for("py-download", b.port());
    let name = format!("lager-cli-test-{}.txt", std::process::id());
    let remote = format!("/tmp/lager-output/{name}");
    script(
        &cli,
        "t.py",
        &format!(
            "import os\nos.makedirs('/tmp/lager-output', exist_ok=True)\nopen('{remote}', 'w').write('results')\n"
        ),
    );
    let run = cli.run(&["python", "t.py", "--box", "b", "--download", &remote]);
    run.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(cli.work_dir().join(&name)).expect("downloaded"),
        "results"
    );
    // The file is there now: without --allow-overwrite it is a usage error.
    let run = cli.run(&["python", "t.py", "--box", "b", "--download", &remote]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(&format!(
            "File {name} exists; please rename it or use the --allow-overwrite flag"
        )),
        "{}",
        run.stderr
    );
    let missing = "/tmp/lager-output/lager-cli-test-missing-file";
    let run = cli.run(&[
        "python",
        "t.py",
        "--box",
        "b",
        "--allow-overwrite",
        "--download",
        missing,
    ]);
    run.expect_code(0);
    assert!(
        run.stderr.contains(&format!(
            "Failed to download {missing}: HTTP 404 - File not found"
        )),
        "{}",
        run.stderr
    );
    let _ = std::fs::remove_file(&remote);
    b.assert_unlocked();
}

#[test]
fn auto_lock_disable_only_checks() {
    let b = RunnerBox::start();
    let cli = cli_for("py-nolock", b.port());
    script(
        &cli,
        "t.py",
        "import os, json, urllib.request\nprint(json.load(urllib.request.urlopen(os.environ['LOCK_URL'])))\n",
    );
    let lock_url = format!("LOCK_URL=http://{}/lock", b.addr);
    let disabled = [("LAGER_AUTO_LOCK_DISABLE", "0")];
    let run = cli.run_with(
        &["python", "t.py", "--box", "b", "--env", &lock_url],
        &disabled,
    );
    run.expect_code(0);
    assert_eq!(run.stdout, "{'locked': False}\n");
    // The passive check still refuses someone else's box.
    b.lock_as("bob");
    let run = cli.run_with(&["python", "t.py", "--box", "b"], &disabled);
    run.expect_code(1);
    assert!(
        run.stderr.contains("Error: Box 'b' is locked by bob"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_collision_fails_before_anything_runs() {
    let b = RunnerBox::start();
    let cli = cli_for("py-collide", b.port());
    let marker = cli.dir.path().join("ran");
    script(
        &cli,
        "t.py",
        &format!("open({:?}, 'w').write('x')\n", marker.display().to_string()),
    );
    b.lock_as("bob");
    let run = cli.run(&["python", "t.py", "--box", "b"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "Error: Box 'b' is locked by bob\nTo force unlock: lager boxes unlock --box b --force\n"
    );
    assert!(!marker.exists(), "the script ran despite the collision");
    assert_eq!(std::fs::read_dir(b.run_dir()).expect("run dir").count(), 0);
    assert_eq!(b.lock()["user"], "bob");
}

#[test]
fn lock_wait_queues_behind_the_holder() {
    let b = RunnerBox::start();
    let cli = cli_for("py-wait", b.port());
    script(&cli, "t.py", "print('ran')\n");
    b.lock_as("ci:drone:org/proj#15:5@runner-7");
    let mut cmd = cli.command(&["python", "t.py", "--box", "b"]);
    cmd.env("LAGER_LOCK_WAIT", "30")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let stderr = read_lines(BufReader::new(child.stderr.take().expect("stderr")));
    let line = stderr.recv_timeout(PATIENCE).expect("a waiting notice");
    assert_eq!(
        line,
        "Box 'b' is locked by drone org/proj build 15; waiting up to 30s for release...\n"
    );
    b.unlock_as("ci:drone:org/proj#15:5@runner-7");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    b.assert_unlocked();
}

#[test]
fn output_channel_objects_are_printed() {
    let b = RunnerBox::start();
    let cli = cli_for("py-channel", b.port());
    script(
        &cli,
        "t.py",
        "import os\n\
         def send(enc, data):\n    with open(os.environ['LAGER_OUTPUT_CHANNEL'], 'wb') as ch:\n        ch.write(b'%d %d ' % (enc, len(data)) + data)\n\
         send(3, b'{\"volts\": 3.3}')\nsend(1, b'raw text')\nsend(2, b'\\x80\\x04N.')\n",
    );
    let run = cli.run(&["python", "t.py", "--box", "b"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "{\"volts\":3.3}\nraw text\n<pickle: 4 bytes>\n");
}

#[test]
fn usage_errors_exit_2() {
    let cli = Cli::new("py-usage");
    let run = cli.run(&["python"]);
    run.expect_code(2);
    assert!(
        run.stderr.starts_with(
            "Please supply a RUNNABLE, --kill, --kill-all, --reattach, --continue, or --console option"
        ),
        "{}",
        run.stderr
    );
    let run = cli.run(&["python", "nope.py", "--box", "10.0.0.1"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("Invalid value for 'RUNNABLE': Path 'nope.py' does not exist."),
        "{}",
        run.stderr
    );
    let run = cli.run(&["python", "x.py", "--env", "9=1"]);
    run.expect_code(2);
}

#[test]
fn unreachable_box_names_the_address() {
    let port = refused_port();
    let cli = cli_for("py-refused", port);
    script(&cli, "t.py", "print(1)\n");
    let run = cli.run(&["python", "t.py", "--box", "b"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(&format!(
            "Error: Connection refused by box (127.0.0.1:{port})"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn odd_box_answers() {
    let unlocked = r#"{"locked": false}"#;
    let granted = r#"{"locked": true, "user": "tester", "previous_user": null}"#;
    let cases = [
        (
            500,
            r#"{"error":"Internal server error: disk full","status":"error"}"#,
            "Error: Internal server error on box (HTTP 500)\nDetails: Internal server error: disk full\n",
        ),
        (
            423,
            r#"{"error":"Box is locked by bob","lock":{"user":"bob"}}"#,
            "Error: Box 'b' is locked by bob\nTo force unlock: lager boxes unlock --box b --force\n",
        ),
        (
            200,
            "1 1 x- 1 0",
            "Response format not supported. Please upgrade lager-cli\n",
        ),
    ];
    for (status, body, expected) in cases {
        let port = fake_box(&[
            ("GET /lock ", 200, unlocked),
            ("POST /lock ", 200, granted),
            ("POST /unlock ", 200, unlocked),
            ("POST /python ", status, body),
        ]);
        let cli = cli_for("py-odd", port);
        script(&cli, "t.py", "print(1)\n");
        let run = cli.run(&["python", "t.py", "--box", "b"]);
        run.expect_code(1);
        assert!(run.stderr.ends_with(expected), "{}", run.stderr);
    }
}

#[test]
fn detach_failure_releases_its_lock() {
    let b = RunnerBox::start();
    let cli = cli_for("py-detach-fail", b.port());
    // A directory without main.py is refused by the CLI before upload;
    // an empty module zip is refused by the box with 422.
    std::fs::create_dir_all(cli.work_dir().join("empty")).expect("mkdir");
    script(&cli, "empty/.lager", r#"{"includes": {}}"#);
    let run = cli.run(&["python", "empty", "--box", "b", "--detach"]);
    run.expect_code(1);
    assert!(run.stderr.contains("has no main.py"), "{}", run.stderr);
    b.assert_unlocked();
}

#[test]
fn continue_and_console_use_the_breakpoint_files() {
    let b = RunnerBox::start();
    let cli = cli_for("py-breakpoint", b.port());
    let id = "0b6d7f5e-3c1a-4e8b-9f0d-2a4c6e8f0a1b";
    let run = cli.run(&["python", "--continue", id, "--box", "b"]);
    run.expect_code(0);
    assert_eq!(
        run.stderr,
        format!("No paused breakpoint found for {id} on b\n")
    );
    let run = cli.run(&["python", "--console", id, "--box", "b"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        format!("No script is paused at a breakpoint for {id}\n")
    );

    // What the box-side helper writes when a script pauses, with a console
    // that greets, echoes each line and closes on EOF.
    let console = TcpListener::bind("127.0.0.1:0").expect("bind");
    let console_port = console.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let (stream, _) = console.accept().expect("accept");
        let mut out = stream.try_clone().expect("clone");
        out.write_all(b"paused at t.py:3\n").expect("greet");
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(out, "echo {line}");
        }
    });
    let dir = b.run_dir().join(id);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let breakpoint = json!({"paused": true, "label": "here", "file": "t.py", "line": 3,
        "func": "<module>", "since": 0, "timeout": 0, "pid": 1});
    std::fs::write(dir.join("breakpoint.json"), breakpoint.to_string()).expect("write");
    let run = cli.run(&["python", "--console", id, "--box", "b"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "This breakpoint has no interactive console.\nCall pause(..., interactive=True) to enable it.\n"
    );
    let mut with_console = breakpoint.clone();
    with_console["console_port"] = json!(console_port);
    std::fs::write(dir.join("breakpoint.json"), with_console.to_string()).expect("write");
    let mut cmd = cli.command(&["python", "--console", id, "--box", "b"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"print(1)\n")
        .expect("type");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("Connected to interactive console (Ctrl+D to disconnect)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("paused at t.py:3\n"), "{stdout}");
    assert!(stdout.ends_with("Disconnected from console\n"), "{stdout}");

    let run = cli.run(&["python", "--continue", id, "--box", "b"]);
    run.expect_code(0);
    assert_eq!(run.stdout, format!("Resumed {id}\n"));
    assert!(dir.join("resume").exists());
}

#[test]
fn kill_all_and_signal_names() {
    let port = fake_box(&[("POST /python/kill ", 200, r#"{"status":"killed"}"#)]);
    let cli = cli_for("py-killall", port);
    let run = cli.run(&["python", "--kill-all", "--box", "b", "--signal", "sigkill"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "All processes killed\n");
    let run = cli.run(&["python", "--kill-all", "--box", "b", "--signal", "HUP"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("Invalid --signal 'HUP'"),
        "{}",
        run.stderr
    );
}

#[test]
fn enforced_locks_let_the_holders_run_through() {
    let b = RunnerBox::start_with(&["--enforce-locks"]);
    let mut cli = cli_for("py-enforce", b.port());
    script(&cli, "t.py", "print('allowed')\n");
    // A CI job: the holder carries the pid, the header must match its scope.
    for (k, v) in [
        ("CI", "true"),
        ("GITHUB_RUN_ID", "999"),
        ("GITHUB_REPOSITORY", "lager/lager"),
        ("GITHUB_JOB", "hil"),
        ("RUNNER_NAME", "bench-3"),
    ] {
        cli.set(k, v);
    }
    let run = cli.run(&["python", "t.py", "--box", "b"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "allowed\n");
    b.assert_unlocked();
    // Someone else's lock, auto-lock off: the passive check stops us
    // before the box's 423 would.
    b.lock_as("bob");
    let run = cli.run_with(
        &["python", "t.py", "--box", "b"],
        &[("LAGER_AUTO_LOCK_DISABLE", "1")],
    );
    run.expect_code(1);
    assert!(
        run.stderr.starts_with("Error: Box 'b' is locked by bob\n"),
        "{}",
        run.stderr
    );
}
