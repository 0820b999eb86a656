//! Issue 6's instrument targets, against `lagerd --sim`'s simulated
//! Keithley 2281S on loopback, all in one run:
//!
//! * the raw SCPI round trip (our own socket straight to the simulator:
//!   `:OUTP?` then `:SOUR1:VOLT?`, what a voltage read sends) next to the
//!   same read through lagerd (`POST /supply/command`, keep-alive): the
//!   difference is the daemon's overhead (target ≤ 300 µs at p50);
//! * `lager supply supply1 voltage --box bench` end to end, CLI start to
//!   exit (target ≤ 5 ms at the median);
//! * 1,000 mixed supply/battery commands from 8 clients on one address:
//!   zero errors, and the simulator still sees exactly one session.
//!
//! Bounded in count; loopback only.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use argh::FromArgs;
use lager_bench::daemon::Daemon;
use lager_bench::http::{render, Connection};
use lager_bench::stats::Latencies;
use lager_bench::{fail, BenchError};
use serde_json::Value;

/// Issue 6 instrument benchmarks against lagerd --sim.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary
    #[argh(option)]
    lagerd: PathBuf,
    /// the lager binary (for the CLI round trip)
    #[argh(option)]
    lager: PathBuf,
    /// round trips per latency measurement (default 2000)
    #[argh(option, default = "2000")]
    rounds: usize,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("instbench: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    let scratch = std::env::temp_dir().join(format!("instbench-{}", std::process::id()));
    let state = scratch.join("state");
    std::fs::create_dir_all(&state).map_err(|e| fail!("cannot create {}: {e}", state.display()))?;
    let daemon = Daemon::start_with_args(
        &args.lagerd,
        &state,
        1,
        &["--sim", "--health-interval-secs", "0"],
        &[],
    )?;
    let addr = daemon.addr();
    let status = get_json(addr, "/status")?;
    let simulator = &status["capabilities"]["simulator"];
    let sim_addr = sim_socket(simulator["address"].as_str().unwrap_or_default())?;
    let control = simulator["control"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // Raw SCPI floor: the same two queries a voltage read sends.
    let mut raw =
        BufReader::new(TcpStream::connect(sim_addr).map_err(|e| fail!("simulator: {e}"))?);
    raw.get_ref().set_nodelay(true)?;
    let mut query = |line: &str| -> Result<String, BenchError> {
        raw.get_mut().write_all(format!("{line}\n").as_bytes())?;
        let mut reply = String::new();
        raw.read_line(&mut reply)?;
        Ok(reply)
    };
    let mut raw_ns = Vec::with_capacity(args.rounds);
    for i in 0..args.rounds + 200 {
        let t = Instant::now();
        query(":OUTP?")?;
        query(":SOUR1:VOLT?")?;
        if i >= 200 {
            raw_ns.push(t.elapsed().as_nanos() as u64);
        }
    }
    let raw = Latencies::new(raw_ns);

    // The same read through lagerd.
    let body = r#"{"netname":"supply1","action":"voltage"}"#;
    let request = render("POST", "/supply/command", Some(body));
    let mut http = Connection::open(addr, Duration::from_secs(10))?;
    let mut http_ns = Vec::with_capacity(args.rounds);
    for i in 0..args.rounds + 200 {
        let t = Instant::now();
        let response = http.call(&request)?;
        if response.status != 200 {
            return Err(fail!(
                "voltage read answered {}: {}",
                response.status,
                String::from_utf8_lossy(http.body(&response))
            ));
        }
        if i >= 200 {
            http_ns.push(t.elapsed().as_nanos() as u64);
        }
    }
    let through = Latencies::new(http_ns);

    // The CLI, start to exit.
    let cli = cli_round_trip(args, &scratch, addr)?;

    // 1,000 mixed commands from 8 clients on the one address.
    let before = control_line(&control, "connections?")?;
    let threads: Vec<_> = (0..8)
        .map(|client| {
            std::thread::spawn(move || -> Result<usize, BenchError> {
                let mut connection = Connection::open(addr, Duration::from_secs(30))?;
                let mut errors = 0;
                for i in 0..125 {
                    let (path, body) = match (client + i) % 4 {
                        0 => ("/supply/command", format!(r#"{{"netname":"supply1","action":"voltage","params":{{"value":{}}}}}"#, (client % 5) + 1)),
                        1 => ("/supply/command", r#"{"netname":"supply1","action":"state"}"#.to_string()),
                        2 => ("/battery/command", r#"{"netname":"battery1","action":"state"}"#.to_string()),
                        _ => ("/battery/command", format!(r#"{{"netname":"battery1","action":"set_soc","params":{{"value":{}}}}}"#, 10 * client)),
                    };
                    let response = connection.call(&render("POST", path, Some(&body)))?;
                    let ok = response.status == 200
                        && serde_json::from_slice::<Value>(connection.body(&response)).is_ok_and(|v| v["success"] == true);
                    if !ok {
                        errors += 1;
                    }
                }
                Ok(errors)
            })
        })
        .collect();
    let started = Instant::now();
    let mut errors = 0;
    for thread in threads {
        errors += thread
            .join()
            .map_err(|_| fail!("a client thread panicked"))??;
    }
    let mixed_wall = started.elapsed();
    let after = control_line(&control, "connections?")?;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&scratch);

    let overhead = through.percentile_us(50.0) - raw.percentile_us(50.0);
    let verdict = |ok: bool| if ok { "PASS" } else { "**FAIL**" };
    println!("| # | measurement | target | measured | result |");
    println!("|---|---|---|---|---|");
    println!("| 8 instruments | raw SCPI voltage read (2 queries), p50 / p99 | baseline | {:.0} µs / {:.0} µs | info |", raw.percentile_us(50.0), raw.percentile_us(99.0));
    println!("| 8 instruments | the same read via `POST /supply/command`, p50 / p99 | info | {:.0} µs / {:.0} µs | info |", through.percentile_us(50.0), through.percentile_us(99.0));
    println!(
        "| 8 instruments | lagerd overhead over raw SCPI, p50 | ≤ 300 µs | {overhead:.0} µs | {} |",
        verdict(overhead <= 300.0)
    );
    match cli {
        Some(median) => println!(
            "| 8 instruments | `lager supply supply1 voltage --box bench`, median | ≤ 5 ms | {:.2} ms | {} |",
            median * 1e3,
            verdict(median <= 0.005)
        ),
        None => println!("| 8 instruments | `lager supply supply1 voltage --box bench` | ≤ 5 ms | `lager supply` not available in this build | **FAIL** |"),
    }
    println!(
        "| 8 instruments | 1,000 mixed commands, 8 clients, one address | 0 errors, no extra session | {errors} errors, sessions {before} → {after}, wall {} ms | {} |",
        mixed_wall.as_millis(),
        verdict(errors == 0 && before == after)
    );
    Ok(())
}

/// `TCPIP0::127.0.0.1::PORT::SOCKET` → `127.0.0.1:PORT`.
fn sim_socket(visa: &str) -> Result<SocketAddr, BenchError> {
    let parts: Vec<&str> = visa.split("::").collect();
    match parts.as_slice() {
        [_, host, port, _] => format!("{host}:{port}")
            .parse()
            .map_err(|e| fail!("simulator address {visa:?}: {e}")),
        _ => Err(fail!(
            "lagerd reported no simulator address ({visa:?}); is it --sim?"
        )),
    }
}

fn get_json(addr: SocketAddr, path: &str) -> Result<Value, BenchError> {
    let mut connection = Connection::open(addr, Duration::from_secs(5))?;
    let response = connection.call(&render("GET", path, None))?;
    serde_json::from_slice(connection.body(&response)).map_err(|e| fail!("{path} is not JSON: {e}"))
}

fn control_line(control: &str, line: &str) -> Result<String, BenchError> {
    let mut stream =
        TcpStream::connect(control).map_err(|e| fail!("simulator control {control}: {e}"))?;
    writeln!(stream, "{line}")?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim().to_string())
}

/// Median wall time of `lager supply supply1 voltage` over 50 runs, or
/// `None` when this lager has no `supply` command yet.
fn cli_round_trip(
    args: &Args,
    scratch: &std::path::Path,
    addr: SocketAddr,
) -> Result<Option<f64>, BenchError> {
    let home = scratch.join("home");
    std::fs::create_dir_all(&home)?;
    let config = format!(
        r#"{{"BOXES": {{"bench": {{"ip": "127.0.0.1", "port": {}}}}}}}"#,
        addr.port()
    );
    std::fs::write(home.join(".lager"), config)?;
    let run = || {
        Command::new(&args.lager)
            .args(["supply", "supply1", "voltage", "--box", "bench"])
            .env("HOME", &home)
            .env("LAGER_CONFIG_FILE_DIR", &home)
            .env("LAGER_USER", "bench")
            .env_remove("CI")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    if !run()?.success() {
        return Ok(None);
    }
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let status = run()?;
        times.push(t.elapsed().as_secs_f64());
        if !status.success() {
            return Err(fail!(
                "`lager supply supply1 voltage` failed during the timing loop"
            ));
        }
    }
    Ok(Some(lager_bench::stats::median(&mut times)))
}
