//! rss: lagerd's resident memory idle and with 100 open connections
//! (issue 3, target 5).
//!
//! lagerd runs on Pi-class boxes next to the user's own test scripts, so
//! its footprint must stay small, also when many clients keep connections
//! open (dashboards, CI jobs polling the lock). Three scenarios, each on a
//! fresh daemon so none inherits another's heap: idle (started, no
//! client), 100 keep-alive connections that each made one `GET /lock` and
//! stay open, and 100 connections that connected but never sent a byte.
//! `VmRSS` (and the peak, `VmHWM`) come from `/proc/<pid>/status` after the
//! connections have settled.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use lager_bench::daemon::Daemon;
use lager_bench::http::{render, Connection};
use lager_bench::net::check_loopback;
use lager_bench::{fail, main_with, metric, require_binary, BenchError, WorkDir};

/// Resident memory of lagerd idle and with open connections.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary to measure
    #[argh(option)]
    lagerd: PathBuf,
    /// parent of the state dirs (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// connections per scenario (default 100)
    #[argh(option, default = "100")]
    connections: usize,
    /// how long to let the daemon settle before reading its memory, in
    /// milliseconds (default 500; workers linger 50 ms before parking)
    #[argh(option, default = "500")]
    settle_ms: u64,
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("rss", || run(args))
}

fn run(args: Args) -> Result<(), BenchError> {
    let lagerd = require_binary(&args.lagerd)?;
    let work = WorkDir::new(args.work_dir.as_deref(), "rss")?;
    let settle = Duration::from_millis(args.settle_ms);
    let n = args.connections;

    for scenario in ["idle", "keepalive", "silent"] {
        let daemon = Daemon::start(&lagerd, &work.path().join(scenario), 1)?;
        let addr = daemon.addr();
        check_loopback(addr)?;
        let mut held: Vec<TcpStream> = Vec::new();
        let mut conns: Vec<Connection> = Vec::new();
        match scenario {
            "keepalive" => {
                let request = render("GET", "/lock", None);
                for _ in 0..n {
                    conns.push(Connection::open(addr, TIMEOUT)?);
                }
                for conn in &mut conns {
                    let response = conn
                        .call(&request)
                        .map_err(|e| fail!("GET /lock on a kept-alive connection failed: {e}"))?;
                    if response.status != 200 {
                        return Err(fail!("GET /lock answered {}", response.status));
                    }
                }
            }
            "silent" => {
                for _ in 0..n {
                    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
                        .map_err(|e| fail!("cannot connect to lagerd at {addr}: {e}"))?;
                    held.push(stream);
                }
            }
            _ => {}
        }
        std::thread::sleep(settle);
        let (rss_kib, hwm_kib) = daemon.memory_kib()?;
        let threads = daemon
            .threads()
            .map_or_else(|| "?".into(), |t| t.to_string());
        let open = conns.len() + held.len();
        eprintln!(
            "  {scenario:<10} {open:>3} connections: VmRSS {rss_kib:>6} KiB ({:.2} MiB), VmHWM {hwm_kib:>6} KiB, {threads} threads",
            rss_kib as f64 / 1024.0
        );
        metric(&format!("rss.{scenario}.rss_kib"), rss_kib);
        metric(&format!("rss.{scenario}.hwm_kib"), hwm_kib);
        // Connections close before the daemon is stopped.
        drop(conns);
        drop(held);
    }
    Ok(())
}
