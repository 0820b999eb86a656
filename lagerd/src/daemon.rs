//! Wires the parts together: lock state, listeners, the HTTP server, the
//! reaper thread and signal handling. Returns when SIGTERM/SIGINT arrives
//! and requests in flight have finished; state is already on disk.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{error, info, warn};

use crate::clock::SystemClock;
use crate::config::{Config, StartError};
use crate::console::{self, Consoles};
use crate::devlock::{self, DeviceLocks};
use crate::diagnose::{Diagnose, Roots};
use crate::health::Health;
use crate::http::{Api, BoxInfo, Parts, Simulated, SimulatedConsole, SimulatedInstrument};
use crate::instruments::session::{ScanRoots, Sessions};
use crate::instruments::Instruments;
use crate::lockbox::LockBox;
use crate::nets::Nets;
use crate::runner::{Runner, RunnerConfig};
use crate::scriptenv::ScriptEnv;
use crate::server::Server;
use crate::signals::Signals;
use crate::sim::dut::SimDut;
use crate::sim::rigol::RigolDp832;
use crate::sim::serial::SerialSimulator;
use crate::sim::{Kind, Simulator};

/// In-flight requests get this long to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub fn run(config: Config) -> Result<(), StartError> {
    crate::metrics::mark_start();
    raise_fd_limit();
    let lock_box = LockBox::open(&config.state_dir, Arc::new(SystemClock))
        .map(Arc::new)
        .map_err(|err| StartError::StateDir {
            path: config.state_dir.clone(),
            err,
        })?;
    let signals = Signals::install(&[libc::SIGTERM, libc::SIGINT]).map_err(StartError::Io)?;

    let mut listeners = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for addr in &config.listen {
        let listener =
            TcpListener::bind(addr).map_err(|err| StartError::Bind { addr: *addr, err })?;
        let bound = listener.local_addr().map_err(StartError::Io)?;
        // Tests and scripts read the bound address from this line.
        let _ = writeln!(stdout, "listening on {bound}");
        info!("listening on {bound}");
        listeners.push(listener);
    }
    let _ = stdout.flush();
    drop(stdout);

    let simulated = if config.sim {
        start_simulators(&config.state_dir).map_err(StartError::Io)?
    } else {
        Simulated::default()
    };
    let sim_keithley = simulated.keithley.as_ref().map(|sim| sim.address.clone());
    let sim_console = simulated.dut.as_ref().map(|dut| dut.link.clone());
    let info = BoxInfo {
        state_dir: config.state_dir.clone(),
        simulated,
        enforce_locks: config.enforce_locks,
        token: config.token,
        metrics_token: config.metrics_token,
    };
    let runner_config = RunnerConfig {
        max_jobs: config.max_jobs,
        ..RunnerConfig::from_env(&config.state_dir, &config.proc_root)
    };
    // The `lager` package for scripts, on every job's path (scripts.md §1).
    let bound: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let script_env = ScriptEnv::open(&config.state_dir, &runner_config.python, &bound)
        .map(Arc::new)
        .map_err(|err| StartError::StateDir {
            path: config.state_dir.join("python"),
            err,
        })?;
    let runner = Arc::new(Runner::new(runner_config, script_env));
    // One device-lock manager per process (diagnose.md §1): the sessions and
    // diagnose's fresh probe must see each other's locks.
    let device_locks = Arc::new(DeviceLocks::new(
        &config.state_dir,
        "lager_device_locks",
        devlock::DEFAULT_TIMEOUT,
    ));
    let sessions = Arc::new(Sessions::new(
        device_locks.clone(),
        config.instrument_timeout,
        ScanRoots {
            proc: config.proc_root.clone(),
            dev: config.dev_root.clone(),
        },
    ));
    let roots = Roots {
        sys: config.sys_root.clone(),
        proc: config.proc_root.clone(),
        dev: config.dev_root.clone(),
        state: config.state_dir.clone(),
    };
    let diagnose = Arc::new(Diagnose::new(roots, device_locks, sessions.clone()));
    let mut nets = Nets::new(config.state_dir.clone(), sim_keithley);
    if let Some(link) = sim_console {
        nets = nets.with_sim_console(link);
    }
    let nets = Arc::new(nets);
    let stop_background = Arc::new(AtomicBool::new(false));
    let consoles = Consoles::start(
        console::Config {
            ring_bytes: config.uart_ring_bytes,
            log_file_bytes: console::LOG_FILE_BYTES,
            log_root: config.state_dir.join("uart"),
            roots: console::Roots {
                sys: config.sys_root.clone(),
                dev: config.dev_root.clone(),
                proc: config.proc_root.clone(),
            },
        },
        nets.clone(),
        stop_background.clone(),
    );
    let health = Health::spawn(
        diagnose.clone(),
        nets.clone(),
        config.health_interval,
        config.health_probe,
        stop_background.clone(),
    );
    let instruments = Arc::new(Instruments::new(sessions, nets.clone()));
    let parts = Parts {
        lock_box: lock_box.clone(),
        runner,
        diagnose,
        nets,
        health,
        instruments,
        consoles: consoles.clone(),
    };
    let api = Arc::new(Api::new(parts, info));
    let server = Server::start(listeners, api.clone(), config.limits).map_err(StartError::Io)?;
    api.count_connections(server.connections());
    info!(
        "lagerd {} serving state dir {}",
        common::VERSION,
        config.state_dir.display()
    );

    let reaper = spawn_reaper(lock_box.clone(), stop_background.clone()).map_err(StartError::Io)?;

    let signal = signals.wait();
    info!("signal {signal} received: finishing requests in flight");
    lock_box.shut_down();
    server.stop(SHUTDOWN_GRACE);
    stop_background.store(true, Ordering::SeqCst);
    consoles.shutdown();
    let _ = reaper.join();
    info!("stopped");
    Ok(())
}

/// `--sim`: a simulated Keithley 2281S on loopback, served as two nets on
/// one address (the dual-role case), two Rigol DP832s, one over TCP and one
/// behind a pty, and a device under test whose console is served as
/// `console1`, so everything works without hardware. What the rest of
/// lagerd gets is their addresses; the simulators run on their own threads.
fn start_simulators(state_dir: &Path) -> std::io::Result<Simulated> {
    let keithley = Simulator::start(Kind::Keithley2281S)?;
    let rigol = Simulator::start(Kind::RigolDp832)?;
    info!(
        "simulated Keithley 2281S at {} (fault control on {}), Rigol DP832 at {} (on {})",
        keithley.visa_address(),
        keithley.control,
        rigol.visa_address(),
        rigol.control
    );
    // The serial path with no adapter. A box without ptys still gets the
    // TCP simulators.
    let serial = SerialSimulator::start(Box::new(RigolDp832::new()))
        .inspect(|sim| info!("simulated Rigol DP832 on serial {}", sim.visa_address()))
        .map_err(|e| warn!("no serial simulator (cannot open a pty): {e}"))
        .ok();
    // The console's link is in the state dir, as /dev/serial/by-id would be.
    let dut = SimDut::start(state_dir.join("sim").join("console1"))
        .inspect(|dut| {
            info!(
                "simulated device console at {} (control on {})",
                dut.link.display(),
                dut.control
            )
        })
        .map_err(|e| warn!("no simulated device console (cannot open a pty): {e}"))
        .ok();
    Ok(Simulated {
        keithley: Some(SimulatedInstrument {
            address: keithley.visa_address(),
            control: keithley.control,
        }),
        rigol: Some(SimulatedInstrument {
            address: rigol.visa_address(),
            control: rigol.control,
        }),
        serial: serial.map(|sim| SimulatedInstrument {
            address: sim.visa_address(),
            control: sim.control,
        }),
        dut: dut.map(|dut| SimulatedConsole {
            link: dut.link.display().to_string(),
            control: dut.control,
        }),
    })
}

/// A.7: frees an expired lock (and wakes the queue) even if nobody asks.
fn spawn_reaper(
    lock_box: Arc<LockBox>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("lock-reaper".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(250));
                if let Err(e) = lock_box.reap() {
                    error!("reaper: {e}");
                }
            }
        })
}

/// Idle keep-alive connections each hold a descriptor; the common soft
/// limit of 1024 would cap them well below `--max-connections`.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the local `limit` struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max.min(65_536);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                warn!(
                    "could not raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}
