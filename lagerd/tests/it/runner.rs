//! The script runner (runner.md): real `python3` scripts through the real
//! daemon, real process groups and signals, over loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lager_testsupport::{raw_request, read_reply, wait_until, Daemon, Reply, TempDir};
use serde_json::{json, Value};

use crate::lagerd;

/// A daemon whose run dir and state dir live in one temp dir.
struct Runner {
    daemon: Daemon,
    dir: TempDir,
}

impl Runner {
    fn start(tag: &str, args: &[&str]) -> Runner {
        let dir = TempDir::new(tag);
        let run_dir = dir.path().join("runs");
        let daemon = Daemon::start_with_env(
            &lagerd(),
            &dir.path().join("state"),
            &["127.0.0.1:0"],
            args,
            &[("LAGERD_RUN_DIR", run_dir.to_str().unwrap())],
        );
        Runner { daemon, dir }
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    fn post_python(&self, parts: &[(&str, &[u8])]) -> Reply {
        self.post_python_with(parts, "")
    }

    fn post_python_with(&self, parts: &[(&str, &[u8])], extra_headers: &str) -> Reply {
        let (content_type, body) = multipart(parts);
        let mut request = format!(
            "POST /python HTTP/1.1\r\nHost: lagerd\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        raw_request(self.daemon.addr(), &request).unwrap()
    }

    fn post_json(&self, path: &str, body: &str) -> (u16, Value) {
        let reply = lager_testsupport::request(self.daemon.addr(), "POST", path, Some(body));
        (
            reply.status,
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
        )
    }
}

pub fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "lagertestboundary7d3f";
    let mut body = Vec::new();
    for (name, data) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A stream's frames as (fileno, payload), keepalives dropped, and the code
/// in its exit marker.
fn parse_frames(body: &[u8]) -> (Vec<(u8, Vec<u8>)>, Option<String>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let fileno = body[at];
        let len_start = at + 2;
        let len_end = len_start
            + body[len_start..]
                .iter()
                .position(|b| *b == b' ')
                .expect("length ends");
        let len: usize = std::str::from_utf8(&body[len_start..len_end])
            .unwrap()
            .parse()
            .unwrap();
        let payload = body[len_end + 1..len_end + 1 + len].to_vec();
        at = len_end + 1 + len;
        if fileno == b'-' {
            return (out, Some(String::from_utf8(payload).unwrap()));
        }
        if len > 0 {
            out.push((fileno - b'0', payload));
        }
    }
    (out, None)
}

fn stream_text(frames: &[(u8, Vec<u8>)], fileno: u8) -> String {
    frames
        .iter()
        .filter(|(f, _)| *f == fileno)
        .map(|(_, p)| String::from_utf8_lossy(p))
        .collect()
}

fn pid_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

fn read_pid(path: &Path) -> i32 {
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n'))
    }));
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const ID: &str = "6f1c7f3a-1b2c-4d5e-8f90-0123456789ab";

#[test]
fn streams_stdout_and_stderr_and_the_exit_code() {
    let r = Runner::start("stream", &[]);
    let script = b"import sys\nprint('out 1')\nprint('err 1', file=sys.stderr)\nprint('out 2')\nsys.exit(42)\n";
    let reply = r.post_python(&[("stdout_is_stderr", b"False"), ("script", script)]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("lager-output-version"), Some("1"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    let (frames, code) = parse_frames(&reply.body);
    assert_eq!(code.as_deref(), Some("42"));
    assert_eq!(stream_text(&frames, 1), "out 1\nout 2\n");
    assert_eq!(stream_text(&frames, 2), "err 1\n");

    // stdout_is_stderr (the default): one pipe, the script's own order.
    let reply = r.post_python(&[("script", script)]);
    let (frames, code) = self::parse_frames(&reply.body);
    assert_eq!(
        (stream_text(&frames, 1), code.as_deref()),
        ("out 1\nerr 1\nout 2\n".to_string(), Some("42"))
    );
    // Work dirs are cleaned when an attached run ends.
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("lager-job-{}-", r.daemon.pid())))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn arguments_and_environment_reach_the_script() {
    let r = Runner::start("env", &[]);
    let state = r.dir.path().join("state");
    std::fs::write(state.join("box_id"), "box-7\n").unwrap();
    std::fs::write(state.join("org_secrets.json"), r#"{"API_KEY": "s3cret"}"#).unwrap();
    let script = b"import os, sys\nprint(sys.argv[1:])\nfor k in ['LAGER_PROCESS_ID','MINE','LAGER_BOX_ID','LAGER_SECRET_API_KEY','LAGER_STDOUT_IS_STDERR','LAGER_MUXES']:\n    print(k, os.environ.get(k))\nprint('host-is-box', os.environ['LAGER_HOST'] != 'spoofed')\nprint('cwd-is-work', os.getcwd() == os.environ['LAGER_HOST_MODULE_FOLDER'])\n";
    let reply = r.post_python(&[
        ("args", b"--flag"),
        ("args", b"two words"),
        ("env", b"MINE=a=b"),
        ("env", b"LAGER_HOST=spoofed"),
        ("env", format!("LAGER_PROCESS_ID={ID}").as_bytes()),
        ("muxes", b"[1]"),
        ("script", script),
    ]);
    let (frames, code) = parse_frames(&reply.body);
    assert_eq!(code.as_deref(), Some("0"));
    assert_eq!(
        stream_text(&frames, 1),
        format!(
            "['--flag', 'two words']\nLAGER_PROCESS_ID {ID}\nMINE a=b\nLAGER_BOX_ID box-7\nLAGER_SECRET_API_KEY s3cret\nLAGER_STDOUT_IS_STDERR True\nLAGER_MUXES [1]\nhost-is-box True\ncwd-is-work True\n"
        )
    );
}

fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut buf);
    for (name, data, mode) in entries {
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        writer.start_file(*name, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap();
    buf.into_inner()
}

#[test]
fn modules_run_main_py_and_bad_archives_are_refused() {
    let r = Runner::start("module", &[]);
    let module = zip_of(&[
        ("main.py", b"import helper, os, stat\nprint(helper.GREETING)\nprint(oct(os.stat('tool.sh').st_mode & 0o777))\n", 0o644),
        ("helper.py", b"GREETING = 'from a module'\n", 0o644),
        ("tool.sh", b"#!/bin/sh\n", 0o755),
    ]);
    let reply = r.post_python(&[("module", &module)]);
    let (frames, code) = parse_frames(&reply.body);
    assert_eq!(
        (stream_text(&frames, 1), code.as_deref()),
        ("from a module\n0o755\n".to_string(), Some("0"))
    );

    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            zip_of(&[("helper.py", b"", 0o644)]),
            422,
            "Could not find main.py in module",
        ),
        (
            zip_of(&[("main.py", b"", 0o644), ("../escape.py", b"", 0o644)]),
            422,
            "Invalid module archive: ../escape.py",
        ),
        (
            zip_of(&[("main.py", b"", 0o644), ("/etc/evil", b"", 0o644)]),
            422,
            "Invalid module archive: /etc/evil",
        ),
        (
            b"PK\x03\x04garbage".to_vec(),
            422,
            "Invalid module archive: ",
        ),
    ];
    for (module, status, message) in cases {
        let reply = r.post_python(&[("module", &module)]);
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(reply.status, status, "{body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(message),
            "{body}"
        );
        assert_eq!(body["status"], "error");
    }
    let reply = r.post_python(&[("args", b"x")]);
    assert_eq!(
        (reply.status, reply.text()),
        (
            422,
            r#"{"error":"Could not find module folder","status":"error"}"#.into()
        )
    );
}

#[test]
fn a_timeout_kills_the_whole_group_with_124_or_minus_9() {
    let r = Runner::start("timeout", &[]);
    let pid_file = r.dir.path().join("grandchild.pid");
    // A script that ignores SIGTERM and leaves a grandchild behind: both
    // must die, and only SIGKILL can do it (-9).
    let script = format!(
        "import signal, subprocess, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\np = subprocess.Popen(['sleep', '100'])\nopen({:?}, 'w').write(f'{{p.pid}}\\n')\nprint('started', flush=True)\nwhile True: time.sleep(0.1)\n",
        pid_file.to_str().unwrap()
    );
    let started = Instant::now();
    let reply = r.post_python(&[("timeout", b"1"), ("script", script.as_bytes())]);
    let (frames, code) = parse_frames(&reply.body);
    assert_eq!(
        (stream_text(&frames, 1), code.as_deref()),
        ("started\n".to_string(), Some("-9"))
    );
    assert!(
        started.elapsed() >= Duration::from_secs(6) && started.elapsed() < Duration::from_secs(15)
    );
    let grandchild = read_pid(&pid_file);
    assert!(
        wait_until(Duration::from_secs(3), || !pid_alive(grandchild)),
        "grandchild {grandchild} survived"
    );

    // A script that honours SIGTERM ends with 124.
    let reply = r.post_python(&[
        ("timeout", b"1"),
        ("script", b"import time\ntime.sleep(30)\n"),
    ]);
    assert_eq!(parse_frames(&reply.body).1.as_deref(), Some("124"));
}

#[test]
fn a_client_that_hangs_up_gets_its_job_reaped_gently() {
    let r = Runner::start("hangup", &[]);
    let pid_file = r.dir.path().join("script.pid");
    let cleaned = r.dir.path().join("cleaned-up");
    let script = format!(
        "import os, time\nopen({:?}, 'w').write(f'{{os.getpid()}}\\n')\nprint('running', flush=True)\ntry:\n    time.sleep(60)\nfinally:\n    open({:?}, 'w').write('yes')\n",
        pid_file.to_str().unwrap(),
        cleaned.to_str().unwrap()
    );
    let (content_type, body) = multipart(&[("script", script.as_bytes())]);
    let mut stream = TcpStream::connect(r.daemon.addr()).unwrap();
    write!(
        stream,
        "POST /python HTTP/1.1\r\nHost: lagerd\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let pid = read_pid(&pid_file);
    assert!(pid_alive(pid));
    drop(stream);
    // SIGINT first, so the script's `finally` runs, well within seconds.
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(pid)),
        "script {pid} still running"
    );
    assert_eq!(std::fs::read_to_string(&cleaned).unwrap(), "yes");
}

#[test]
fn detached_runs_can_be_attached_to_and_killed() {
    let r = Runner::start("detach", &[]);
    let env = format!("LAGER_PROCESS_ID={ID}");
    let reply = r.post_python(&[
        ("detach", b"1"),
        ("env", env.as_bytes()),
        (
            "script",
            b"import sys\nprint('detached says hi')\nsys.exit(5)\n",
        ),
    ]);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        (body["status"].as_str(), body["lager_process_id"].as_str()),
        (Some("detached"), Some(ID))
    );
    assert!(body["pid"].as_u64().is_some());
    let attach = lager_testsupport::request(
        r.daemon.addr(),
        "POST",
        "/python/attach",
        Some(&json!({"lager_process_id": ID}).to_string()),
    );
    assert_eq!(attach.header("lager-output-version"), Some("1"));
    let (frames, code) = parse_frames(&attach.body);
    assert_eq!(
        (stream_text(&frames, 1), code.as_deref()),
        ("detached says hi\n".to_string(), Some("5"))
    );
    let meta: Value =
        serde_json::from_slice(&std::fs::read(r.run_dir().join(ID).join("meta.json")).unwrap())
            .unwrap();
    assert_eq!(
        (meta["status"].as_str(), meta["returncode"].as_i64()),
        (Some("finished"), Some(5))
    );

    // A long detached run: killed by id, its process gone, its dir deleted.
    let long_id = "0c2fa7a4-5b1a-4c8e-9d0e-aaaaaaaaaaaa";
    let pid_file = r.dir.path().join("long.pid");
    let script = format!(
        "import os, time\nopen({:?}, 'w').write(f'{{os.getpid()}}\\n')\ntime.sleep(60)\n",
        pid_file.to_str().unwrap()
    );
    let env = format!("LAGER_PROCESS_ID={long_id}");
    let reply = r.post_python(&[
        ("detach", b"true"),
        ("env", env.as_bytes()),
        ("script", script.as_bytes()),
    ]);
    assert_eq!(reply.status, 200);
    let pid = read_pid(&pid_file);
    let (status, body) = r.post_json(
        "/python/kill",
        &json!({"lager_process_id": long_id, "signal": 15}).to_string(),
    );
    assert_eq!((status, body), (200, json!({"status": "killed"})));
    assert!(!pid_alive(pid), "killed before the reply");
    assert!(!r.run_dir().join(long_id).exists());
    let (status, body) = r.post_json(
        "/python/attach",
        &json!({"lager_process_id": long_id}).to_string(),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some(format!("Process not found: {long_id}").as_str()))
    );
}

#[test]
fn management_requests_validate_their_input() {
    let r = Runner::start("manage", &[]);
    let cases = [
        ("/python/kill", "", 400, "Invalid JSON"),
        ("/python/kill", "[1]", 400, "Invalid JSON"),
        (
            "/python/kill",
            r#"{"lager_process_id": "../../etc", "signal": 15}"#,
            422,
            "Invalid process UUID: ../../etc",
        ),
        (
            "/python/kill",
            &format!(r#"{{"lager_process_id": "{ID}", "signal": 999}}"#),
            422,
            "Invalid signal: 999",
        ),
        ("/python/attach", "{}", 400, "lager_process_id is required"),
        (
            "/python/attach",
            &format!(r#"{{"lager_process_id": "{ID}"}}"#),
            422,
            &format!("Process not found: {ID}"),
        ),
        (
            "/python/continue",
            "{}",
            400,
            "lager_process_id is required",
        ),
    ];
    for (path, body, status, message) in cases {
        let (got_status, got) = r.post_json(path, body);
        assert_eq!(
            (got_status, got["error"].as_str()),
            (status, Some(message)),
            "{path} {body}"
        );
        assert_eq!(got["status"], "error");
    }
    // Unknown-but-valid ids: kill is a no-op success, continue finds no breakpoint.
    assert_eq!(
        r.post_json("/python/kill", &json!({"lager_process_id": ID}).to_string()),
        (200, json!({"status": "killed"}))
    );
    assert_eq!(
        r.post_json(
            "/python/continue",
            &json!({"lager_process_id": ID}).to_string()
        ),
        (200, json!({"resumed": false}))
    );
    assert_eq!(
        r.post_json(
            "/python/breakpoint",
            &json!({"lager_process_id": ID}).to_string()
        ),
        (200, json!({"paused": false}))
    );

    // A paused run: continue creates `resume`, breakpoint reports the file.
    let dir = r.run_dir().join(ID);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("breakpoint.json"),
        r#"{"paused": true, "line": 7}"#,
    )
    .unwrap();
    assert_eq!(
        r.post_json(
            "/python/breakpoint",
            &json!({"lager_process_id": ID}).to_string()
        )
        .1["line"],
        7
    );
    assert_eq!(
        r.post_json(
            "/python/continue",
            &json!({"lager_process_id": ID}).to_string()
        )
        .1,
        json!({"resumed": true})
    );
    assert!(dir.join("resume").exists());
}

#[test]
fn bad_uploads_get_clear_errors() {
    let r = Runner::start("uploads", &[]);
    let reply = r.post_python(&[("timeout", b"soon"), ("script", b"print(1)")]);
    assert_eq!(
        (reply.status, reply.text()),
        (
            400,
            r#"{"error":"timeout must be an integer","status":"error"}"#.into()
        )
    );
    let bad = b"POST /python HTTP/1.1\r\nHost: lagerd\r\nContent-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot multip";
    let reply = raw_request(r.daemon.addr(), bad).unwrap();
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().contains("Failed to parse request: "),
        "{}",
        reply.text()
    );
    // Over 64 MiB: refused before the body is read, in the runner's shape.
    let mut stream = TcpStream::connect(r.daemon.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "POST /python HTTP/1.1\r\nHost: lagerd\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\n\r\n", 65 << 20).unwrap();
    let reply = read_reply(&mut stream).unwrap();
    assert_eq!(
        (reply.status, reply.text()),
        (
            413,
            r#"{"error":"Request body too large","status":"error"}"#.into()
        )
    );
}

#[test]
fn enforced_locks_refuse_other_holders_before_running_anything() {
    let r = Runner::start("enforce", &["--enforce-locks"]);
    let marker = r.dir.path().join("ran");
    let script = format!("open({:?}, 'w').write('ran')\n", marker.to_str().unwrap());
    // Unlocked: anyone may run.
    assert_eq!(
        parse_frames(&r.post_python(&[("script", script.as_bytes())]).body)
            .1
            .as_deref(),
        Some("0")
    );
    std::fs::remove_file(&marker).unwrap();
    r.post_json("/lock", r#"{"user": "ci:jenkins:job-9:4242@host"}"#);
    let reply = r.post_python(&[("script", script.as_bytes())]);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        (reply.status, body["error"].as_str()),
        (423, Some("Box is locked by ci:jenkins:job-9:4242@host"))
    );
    assert!(!marker.exists(), "nothing ran");
    // Another process of the same CI job (same scope) may run; so may the
    // holder named in the form field.
    let reply = r.post_python_with(
        &[("script", script.as_bytes())],
        "Lager-Holder: ci:jenkins:job-9:77@host\r\n",
    );
    assert_eq!(parse_frames(&reply.body).1.as_deref(), Some("0"));
    let reply = r.post_python(&[
        ("holder", b"ci:jenkins:job-9:4242@host"),
        ("script", script.as_bytes()),
    ]);
    assert_eq!(reply.status, 200);
    let reply = r.post_python_with(
        &[("script", script.as_bytes())],
        "Lager-Holder: ci:jenkins:job-10:1@host\r\n",
    );
    assert_eq!(reply.status, 423);
}

#[test]
fn downloads_are_limited_to_the_output_dirs() {
    let r = Runner::start("download", &[]);
    let dir = Path::new("/tmp/lager-output");
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join(format!("it-{}.txt", std::process::id()));
    std::fs::write(&file, b"measured: 3.3V\n").unwrap();
    let get = |name: &str| {
        let path = format!("/download-file?filename={}", name.replace('/', "%2F"));
        lager_testsupport::request(r.daemon.addr(), "GET", &path, None)
    };
    let reply = get(file.to_str().unwrap());
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"measured: 3.3V\n"[..])
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        get("/etc/passwd").text(),
        r#"{"error":"Access to this path is not permitted"}"#
    );
    assert_eq!(get("/tmp/lager-output/../../etc/passwd").status, 403);
    assert_eq!(get("/tmp/lager-output/nope.txt").status, 404);
    assert_eq!(
        get("/tmp/lager-output").text(),
        r#"{"error":"Path is not a file"}"#
    );
    std::fs::remove_file(file).unwrap();
}

#[test]
fn concurrent_runs_keep_their_output_apart() {
    let r = Runner::start("concurrent", &["--max-jobs", "16"]);
    let addr = r.daemon.addr();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let script = format!("for n in range(200):\n    print('run{i:02} line', n)\n");
                let (content_type, body) = multipart(&[("script", script.as_bytes())]);
                let mut request = format!(
                    "POST /python HTTP/1.1\r\nHost: lagerd\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(&body);
                (i, raw_request(addr, &request).unwrap())
            })
        })
        .collect();
    for thread in threads {
        let (i, reply) = thread.join().unwrap();
        let (frames, code) = parse_frames(&reply.body);
        let expected: String = (0..200).map(|n| format!("run{i:02} line {n}\n")).collect();
        assert_eq!(
            (stream_text(&frames, 1), code.as_deref()),
            (expected, Some("0"))
        );
    }
}

#[test]
fn the_test_stream_is_the_python_systems() {
    let r = Runner::start("test-stream", &[]);
    let mut stream = TcpStream::connect(r.daemon.addr()).unwrap();
    stream
        .write_all(b"GET /test-stream HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.contains("Lager-Output-Version: 1\r\n"), "{raw}");
    assert!(raw.ends_with("\r\n\r\n1 12 Hello world\n- 1 0"), "{raw}");
}

/// Peak resident memory of a process, from `/proc/<pid>/status`.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Issue 12 defect 3: `/download-file` read the whole file into memory, so
/// a large result file cost the box its size in RAM. It is streamed from
/// disk now: lagerd's peak memory does not grow with the file.
#[test]
fn issue12_a_download_is_streamed_from_disk_not_held_in_memory() {
    let r = Runner::start("download-stream", &[]);
    let root = Path::new("/tmp/lager-output");
    std::fs::create_dir_all(root).unwrap();
    let path = root.join(format!("issue12-stream-{}.bin", std::process::id()));
    const SIZE: u64 = 160 << 20;
    // Sparse: the disk holds nothing, a reader gets 160 MiB of zeroes.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(SIZE).unwrap();
    drop(file);
    let before = peak_rss_kib(r.daemon.pid());

    let mut stream = TcpStream::connect(r.daemon.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET /download-file?filename={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        path.display()
    )
    .unwrap();
    // Count the body's bytes as they come, without keeping them.
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    use std::io::BufRead;
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        chunked |= line.eq_ignore_ascii_case("transfer-encoding: chunked\r\n");
    }
    let mut received = 0u64;
    let mut block = vec![0u8; 64 * 1024];
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let size = u64::from_str_radix(line.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            let mut left = size;
            while left > 0 {
                let n = reader
                    .read(&mut block[..left.min(64 * 1024) as usize])
                    .unwrap();
                assert!(n > 0, "cut short");
                left -= n as u64;
            }
            received += size;
            line.clear();
            reader.read_line(&mut line).unwrap();
        }
    } else {
        loop {
            let n = reader.read(&mut block).unwrap();
            if n == 0 {
                break;
            }
            received += n as u64;
        }
    }
    let after = peak_rss_kib(r.daemon.pid());
    let _ = std::fs::remove_file(&path);
    assert_eq!(received, SIZE, "the whole file arrived");
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "peak RSS grew by {} KiB for a {} MiB download",
        after - before,
        SIZE >> 20
    );
}

/// A script that writes its pid to `pid_file` and sleeps a minute.
fn sleeper(pid_file: &Path) -> String {
    format!(
        "import os, time\nopen({:?}, 'w').write(f'{{os.getpid()}}\\n')\ntime.sleep(60)\n",
        pid_file.to_str().unwrap()
    )
}

/// Issue 12 defect 3: nothing capped concurrent or detached jobs (each a
/// python3 and 2-4 threads). `--max-jobs` caps attached plus detached runs;
/// one more is a 503 that names the cap and what to do.
#[test]
fn issue12_jobs_beyond_max_jobs_are_refused_with_503_naming_the_cap() {
    let r = Runner::start("max-jobs", &["--max-jobs", "2"]);
    let mut ids = Vec::new();
    for n in 0..2 {
        let id = format!("0c2fa7a4-5b1a-4c8e-9d0e-00000000000{n}");
        let env = format!("LAGER_PROCESS_ID={id}");
        let script = sleeper(&r.dir.path().join(format!("sleeper{n}.pid")));
        let reply = r.post_python(&[
            ("detach", b"1"),
            ("env", env.as_bytes()),
            ("script", script.as_bytes()),
        ]);
        assert_eq!(reply.status, 200, "{}", reply.text());
        ids.push(id);
    }
    let full = r.post_python(&[("script", b"print('one too many')\n")]);
    let body: Value = serde_json::from_slice(&full.body).unwrap();
    assert_eq!(full.status, 503, "{body}");
    assert_eq!(body["status"], "error");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("already running 2 jobs")
            && error.contains("--max-jobs 2")
            && error.contains("lager python --kill"),
        "{error}"
    );
    // A detached run that ends gives its place back.
    let (status, _) = r.post_json(
        "/python/kill",
        &json!({"lager_process_id": ids[0], "signal": 15}).to_string(),
    );
    assert_eq!(status, 200);
    let reply = r.post_python(&[("script", b"print('now there is room')\n")]);
    let (frames, code) = parse_frames(&reply.body);
    assert_eq!(
        (reply.status, stream_text(&frames, 1), code.as_deref()),
        (200, "now there is room\n".to_string(), Some("0"))
    );
    // So does an attached run that ended: one place is free again.
    let env = format!("LAGER_PROCESS_ID={}", ids[0]);
    let script = sleeper(&r.dir.path().join("sleeper-again.pid"));
    let reply = r.post_python(&[
        ("detach", b"1"),
        ("env", env.as_bytes()),
        ("script", script.as_bytes()),
    ]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(r.post_python(&[("script", b"print(1)\n")]).status, 503);
    // By id: a kill of every job would reach other tests' scripts too.
    for id in &ids {
        let kill = json!({"lager_process_id": id, "signal": 9}).to_string();
        r.post_json("/python/kill", &kill);
    }
}

/// Issue 12 defect 10: `--kill` returned while the detached script was
/// still a zombie (the referee saw it "not gone" 5 runs out of 5), and the
/// run's thread then logged `cannot write meta.json: No such file or
/// directory` into the dir the kill had removed. Now the kill returns
/// with the process reaped and the run's end recorded, and nothing fails.
#[test]
fn issue12_a_killed_detached_run_is_reaped_and_recorded_when_kill_returns() {
    let dir = TempDir::new("kill-record");
    let log_path = dir.path().join("lagerd.log");
    /// Kills and reaps the daemon however the test ends.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = std::process::Command::new(lagerd())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--health-interval-secs",
            "0",
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        .env("LAGERD_RUN_DIR", dir.path().join("runs"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .map(Reaped)
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let addr: std::net::SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    for round in 0..3 {
        let id = format!("0c2fa7a4-5b1a-4c8e-9d0e-10000000000{round}");
        let pid_file = dir.path().join(format!("long{round}.pid"));
        let (content_type, body) = multipart(&[
            ("detach", b"1"),
            ("env", format!("LAGER_PROCESS_ID={id}").as_bytes()),
            ("script", sleeper(&pid_file).as_bytes()),
        ]);
        let mut request = format!(
            "POST /python HTTP/1.1\r\nHost: lagerd\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let reply = raw_request(addr, &request).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::read_to_string(
                &pid_file
            )
            .is_ok_and(|t| t.ends_with('\n'))),
            "the script did not start: {}",
            log()
        );
        let pid = read_pid(&pid_file);
        let kill = json!({"lager_process_id": id, "signal": 15}).to_string();
        let reply = lager_testsupport::request(addr, "POST", "/python/kill", Some(&kill));
        assert_eq!(reply.status, 200);
        // The instant the kill returns: no process, not even a zombie.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "round {round}: pid {pid} still in /proc after --kill returned"
        );
        assert!(!dir.path().join("runs").join(&id).exists());
        assert!(
            log().contains(&format!("run {id}: detached job finished with -15")),
            "{}",
            log()
        );
    }
    // Nothing writes into the removed dirs afterwards.
    assert!(
        !wait_until(Duration::from_secs(1), || log()
            .contains("cannot write meta.json")),
        "{}",
        log()
    );
    drop(child);
}

/// Found by the `router` fuzz target: a box whose python is missing
/// answered `No such file or directory` without saying what was missing,
/// and left the job's work dir (and, detached, an empty run dir that
/// `--reattach` would follow forever) behind.
#[test]
fn issue12_a_missing_python_is_named_and_leaves_no_dirs_behind() {
    let dir = TempDir::new("nopython");
    let (tmp, runs) = (dir.path().join("tmp"), dir.path().join("runs"));
    std::fs::create_dir_all(&tmp).unwrap();
    let daemon = Daemon::start_with_env(
        &lagerd(),
        &dir.path().join("state"),
        &["127.0.0.1:0"],
        &[],
        &[
            ("LAGERD_RUN_DIR", runs.to_str().unwrap()),
            ("LAGERD_PYTHON", "/nonexistent/lager/python3"),
            ("TMPDIR", tmp.to_str().unwrap()),
        ],
    );
    let r = Runner { daemon, dir };
    let env = format!("LAGER_PROCESS_ID={ID}");
    for detach in [&b"0"[..], b"1"] {
        let reply = r.post_python(&[
            ("detach", detach),
            ("env", env.as_bytes()),
            ("script", b"print(1)\n"),
        ]);
        let text = reply.text();
        assert_eq!(reply.status, 500, "{text}");
        // runner.md §3.4: a 500 is `Internal server error: <e>`.
        assert!(
            text.contains(r#""error":"Internal server error: "#),
            "the spec's 500 shape: {text}"
        );
        assert!(
            text.contains("/nonexistent/lager/python3") && text.contains("LAGERD_PYTHON"),
            "names the python and what to set: {text}"
        );
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "work dirs left: {left:?}");
        let runs_left = std::fs::read_dir(&runs).map_or(0, |d| d.count());
        assert_eq!(runs_left, 0, "run dirs left under {}", runs.display());
    }
}
