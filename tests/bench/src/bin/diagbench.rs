//! diagbench: wall time of `lager diagnose NET --box bench` end to end on
//! loopback (issue 5, target 2: at most 50 ms with a fixture sysfs of 20
//! USB devices).
//!
//! The box is a real `lagerd --sim` on 127.0.0.1, started through a
//! two-line `sh` wrapper that adds `--sys-root <fixture> --dev-root
//! <fixture> --health-interval-secs 0` (exec: the pid stays lagerd's), with
//! the isolated `bench` box config of `lager_bench::benchbox`. The fixture
//! sysfs holds `--devices` (20) USB devices, each with one interface, among
//! them a Keithley 2281S (05e6:2281, serial 4587429) on bus 1, device 4,
//! whose usbfs node `<dev-root>/bus/usb/001/004` exists (a regular file)
//! and is held by nobody. The state dir's `saved_nets.json` names it `k1`;
//! `--sim` adds `supply1` on the simulated Keithley (TCP on loopback).
//!
//! hyperfine (`--shell=none`, `-i`) times both in one invocation:
//! * `lager diagnose k1 --box bench`: exit 2 by design (lagerd has no USB
//!   transport yet, so the fresh probe fails), but every step runs: saved
//!   nets, the three `/diagnose/*` views (the USB one walks the fixture
//!   sysfs, scans the real `/proc` for holders and runs `dmesg`), the
//!   classification and the report.
//! * `lager diagnose supply1 --box bench`: exit 0, REACHABLE after a fresh
//!   `*IDN?` to the simulator.
//!
//! Each command is first run once and checked (exit code, enumerated
//! device, classification), so a fast failure cannot pass. lagerd's CPU
//! time per diagnose is reported next to the wall time.
//!
//! A variant (`--big-log-runs`, info only) repeats `lager diagnose k1` on a
//! second lagerd whose PATH starts with a directory holding a stand-in
//! `dmesg` that prints a kernel log of `BIG_LOG_LINES` lines (136,000
//! bytes, less than a default 256 KiB ring buffer holds): lagerd runs
//! `dmesg` from PATH for every `/diagnose/usb`, and this shows what that
//! costs on a box that has been up for a while, not on a fresh VM.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use argh::FromArgs;
use lager_bench::benchbox::{BenchBox, BOX_NAME};
use lager_bench::timing::hyperfine_version;
use lager_bench::{fail, main_with, metric, proc_cpu_secs, require_binary, BenchError, WorkDir};
use serde_json::Value;

/// Time `lager diagnose` against a loopback lagerd with a 20-device sysfs.
#[derive(FromArgs)]
struct Args {
    /// the lagerd binary serving the box
    #[argh(option)]
    lagerd: PathBuf,
    /// the lager binary to time
    #[argh(option)]
    lager: PathBuf,
    /// parent of the scratch dir (default: the system temp dir)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// USB devices in the fixture sysfs, the Keithley included (default 20)
    #[argh(option, default = "20")]
    devices: usize,
    /// timed runs per command (default 100)
    #[argh(option, default = "100")]
    runs: usize,
    /// unmeasured runs per command first (default 10)
    #[argh(option, default = "10")]
    warmup: usize,
    /// the target median, in milliseconds (default 50)
    #[argh(option, default = "50.0")]
    limit_ms: f64,
    /// runs of the large-kernel-log variant (default 3; 0 skips it)
    #[argh(option, default = "3")]
    big_log_runs: usize,
    /// also keep hyperfine's JSON (every run's time and exit code) here
    #[argh(option)]
    export_json: Option<PathBuf>,
}

/// Lines the stand-in `dmesg` prints (86 bytes each).
const BIG_LOG_LINES: usize = 1600;
const SAVED_NETS: &str = r#"[{"name":"k1","role":"battery","instrument":"Keithley_2281S","address":"USB0::0x05E6::0x2281::4587429::INSTR"}]"#;
const MAX_DEVICES: usize = 120;
const MAX_RUNS: usize = 2000;

/// Everyday USB devices around the instrument: (vid, pid, product).
const OTHERS: [(&str, &str, &str); 6] = [
    ("0403", "6001", "FT232R USB UART"),
    ("1366", "1015", "J-Link"),
    ("0483", "374b", "STLINK-V3"),
    ("2a03", "0043", "Arduino Uno"),
    ("0424", "2514", "USB 2.0 Hub"),
    ("1ab1", "0e11", "DP800 Serials"),
];

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("diagbench", || run(args))
}

fn write_attrs(dir: &Path, attrs: &[(&str, &str)]) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| fail!("cannot create {}: {e}", dir.display()))?;
    for (name, value) in attrs {
        std::fs::write(dir.join(name), format!("{value}\n"))?;
    }
    Ok(())
}

/// `devices` USB devices under `<sys>/bus/usb/devices`: the root hub
/// `usb1`, the Keithley `1-1.2` (bus 1, device 4) and others `1-1.N`, each
/// with an interface `<name>:1.0`; and `<dev>/bus/usb/001/004`.
fn fixture(sys: &Path, dev: &Path, devices: usize) -> Result<(), BenchError> {
    let base = sys.join("bus/usb/devices");
    write_attrs(
        &base.join("usb1"),
        &[
            ("idVendor", "1d6b"),
            ("idProduct", "0002"),
            ("busnum", "1"),
            ("devnum", "1"),
            ("product", "xHCI Host Controller"),
        ],
    )?;
    write_attrs(
        &base.join("usb1:1.0"),
        &[("bInterfaceClass", "09"), ("bInterfaceSubClass", "00")],
    )?;
    write_attrs(
        &base.join("1-1.2"),
        &[
            ("idVendor", "05e6"),
            ("idProduct", "2281"),
            ("serial", "4587429"),
            ("busnum", "1"),
            ("devnum", "4"),
            ("manufacturer", "Keithley Instruments"),
            ("product", "2281S"),
        ],
    )?;
    write_attrs(
        &base.join("1-1.2:1.0"),
        &[
            ("bInterfaceClass", "fe"),
            ("bInterfaceSubClass", "03"),
            ("bInterfaceProtocol", "01"),
        ],
    )?;
    // Devices 3.. take the remaining slots; device numbers skip the Keithley's 4.
    for n in 0..devices.saturating_sub(2) {
        let (vid, pid, product) = OTHERS[n % OTHERS.len()];
        let name = format!("1-1.{}", n + 3);
        let devnum = (n + 5).to_string();
        let serial = format!("SN{:06}", n + 1);
        write_attrs(
            &base.join(&name),
            &[
                ("idVendor", vid),
                ("idProduct", pid),
                ("serial", &serial),
                ("busnum", "1"),
                ("devnum", &devnum),
                ("product", product),
            ],
        )?;
        write_attrs(
            &base.join(format!("{name}:1.0")),
            &[("bInterfaceClass", "ff"), ("bInterfaceSubClass", "00")],
        )?;
    }
    let node_dir = dev.join("bus/usb/001");
    std::fs::create_dir_all(&node_dir)?;
    std::fs::write(node_dir.join("004"), b"")?;
    Ok(())
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// `sh` wrapper that runs `lagerd --sim` with the fixture roots (exec: same
/// pid), with `path_first` ahead of PATH when given.
fn wrapper(
    dir: &Path,
    lagerd: &Path,
    sys: &Path,
    dev: &Path,
    path_first: Option<&Path>,
) -> Result<PathBuf, BenchError> {
    let path = dir.join("lagerd-fixture");
    let env = path_first
        .map(|p| format!("PATH={}:\"$PATH\" ", quote(p)))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n{env}exec {} --sim --sys-root {} --dev-root {} --health-interval-secs 0 \"$@\"\n",
            quote(lagerd),
            quote(sys),
            quote(dev)
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Runs `lager diagnose <net> --box bench` once and checks what it says.
fn check(
    bench: &BenchBox,
    lager: &Path,
    net: &str,
    want_code: i32,
    want: &[&str],
) -> Result<(), BenchError> {
    let mut command = Command::new(lager);
    command.args(["diagnose", net, "--box", BOX_NAME]);
    bench.isolate(&mut command);
    let output = command
        .output()
        .map_err(|e| fail!("cannot run {}: {e}", lager.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let missing: Vec<&&str> = want.iter().filter(|w| !stdout.contains(**w)).collect();
    if output.status.code() != Some(want_code) || !missing.is_empty() {
        return Err(fail!(
            "`lager diagnose {net} --box {BOX_NAME}` exited {} (expected {want_code}) \
             without {missing:?}; stdout: {stdout}; stderr: {stderr}; lagerd log: {}",
            output.status,
            bench.daemon().log_tail()
        ));
    }
    let headline = stdout
        .lines()
        .find(|l| l.contains("Classification:"))
        .unwrap_or("")
        .trim();
    eprintln!("diagbench: {net}: exit {want_code}, {headline}");
    Ok(())
}

struct Timing {
    median_ms: Vec<f64>,
    mean_ms: Vec<f64>,
    min_ms: Vec<f64>,
    max_ms: Vec<f64>,
}

/// hyperfine `-i` (exit 2 is the expected answer for the USB net).
fn hyperfine(
    bench: &BenchBox,
    commands: &[(&str, String)],
    runs: usize,
    warmup: usize,
    json_path: &Path,
) -> Result<Timing, BenchError> {
    let mut command = Command::new("hyperfine");
    bench.isolate(&mut command);
    command
        .args([
            "--shell=none",
            "-i",
            "--style",
            "basic",
            "--time-unit",
            "millisecond",
        ])
        .args(["--warmup", &warmup.to_string()])
        .args(["--runs", &runs.to_string()])
        .arg("--export-json")
        .arg(json_path);
    for (name, line) in commands {
        command.args(["--command-name", name]).arg(line);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail!("cannot run hyperfine: {e}"))?;
    eprint!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        return Err(fail!(
            "hyperfine failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = std::fs::read_to_string(json_path)
        .map_err(|e| fail!("hyperfine wrote no {}: {e}", json_path.display()))?;
    let report: Value =
        serde_json::from_str(&text).map_err(|e| fail!("hyperfine's JSON is unreadable: {e}"))?;
    let results = report
        .get("results")
        .and_then(Value::as_array)
        .filter(|r| r.len() == commands.len())
        .ok_or_else(|| fail!("hyperfine's JSON lacks one result per command"))?;
    let field = |key: &str| -> Result<Vec<f64>, BenchError> {
        results
            .iter()
            .map(|r| {
                r.get(key)
                    .and_then(Value::as_f64)
                    .map(|s| s * 1e3)
                    .ok_or_else(|| fail!("a hyperfine result has no {key}"))
            })
            .collect()
    };
    Ok(Timing {
        median_ms: field("median")?,
        mean_ms: field("mean")?,
        min_ms: field("min")?,
        max_ms: field("max")?,
    })
}

fn row(measurement: &str, target: &str, measured: &str, result: &str) {
    println!("ROW | 7 diagnose | {measurement} | {target} | {measured} | {result} |");
}

fn run(args: Args) -> Result<(), BenchError> {
    if !(2..=MAX_DEVICES).contains(&args.devices) {
        return Err(fail!("--devices must be 2..={MAX_DEVICES}"));
    }
    if args.runs == 0 || args.runs > MAX_RUNS || args.warmup > MAX_RUNS {
        return Err(fail!(
            "--runs must be 1..={MAX_RUNS}, --warmup at most {MAX_RUNS}"
        ));
    }
    let version = hyperfine_version()
        .ok_or_else(|| fail!("hyperfine not found; install it (apt-get install hyperfine)"))?;
    let lagerd = require_binary(&args.lagerd)?;
    let lager = require_binary(&args.lager)?;
    let work = WorkDir::new(args.work_dir.as_deref(), "diagbench")?;
    let (sys, dev) = (work.path().join("sys"), work.path().join("dev"));
    fixture(&sys, &dev, args.devices)?;
    let wrapped = wrapper(work.path(), &lagerd, &sys, &dev, None)?;
    let state = work.path().join("state");
    std::fs::create_dir_all(&state)?;
    std::fs::write(state.join("saved_nets.json"), SAVED_NETS)?;
    // The interpreter is only the runner's (`LAGERD_PYTHON`); diagnose never starts it.
    let bench = BenchBox::start(&wrapped, &lager, Path::new("/usr/bin/python3"), work.path())?;
    eprintln!(
        "diagbench: lagerd --sim on {} with {} fixture USB devices",
        bench.daemon().addr(),
        args.devices
    );

    check(
        &bench,
        &lager,
        "k1",
        2,
        &[
            "enumerated:   true",
            "device:       /dev/bus/usb/001/004",
            "Classification:",
        ],
    )?;
    check(&bench, &lager, "supply1", 0, &["REACHABLE"])?;

    let lager_arg = lager.display().to_string();
    let commands = [
        (
            "lager diagnose k1 (USB, exit 2)",
            format!("{lager_arg} diagnose k1 --box {BOX_NAME}"),
        ),
        (
            "lager diagnose supply1 (sim TCP, exit 0)",
            format!("{lager_arg} diagnose supply1 --box {BOX_NAME}"),
        ),
        ("lager --version", format!("{lager_arg} --version")),
    ];
    if lager_arg.contains([' ', '\'', '"', '\\']) {
        return Err(fail!(
            "the lager path {lager_arg:?} needs quoting; use a plain path"
        ));
    }
    eprintln!(
        "diagbench: {version} (--shell=none -i, {} warm-up + {} runs each)",
        args.warmup, args.runs
    );
    let cpu_before = proc_cpu_secs(bench.daemon().pid()).unwrap_or(f64::NAN);
    let timing = hyperfine(
        &bench,
        &commands,
        args.runs,
        args.warmup,
        &work.path().join("hyperfine.json"),
    )?;
    let cpu_after = proc_cpu_secs(bench.daemon().pid()).unwrap_or(f64::NAN);
    if let Some(keep) = &args.export_json {
        std::fs::copy(work.path().join("hyperfine.json"), keep)
            .map_err(|e| fail!("cannot copy hyperfine's JSON to {}: {e}", keep.display()))?;
    }
    // Two diagnoses per round; `--version` never reaches lagerd.
    let lagerd_cpu_ms = (cpu_after - cpu_before) * 1e3 / (2 * (args.runs + args.warmup)) as f64;

    metric("diagnose.devices", args.devices);
    metric("diagnose.runs", args.runs);
    for (i, key) in ["usb", "sim", "version"].iter().enumerate() {
        metric(
            &format!("diagnose.{key}.median_ms"),
            format!("{:.3}", timing.median_ms[i]),
        );
        metric(
            &format!("diagnose.{key}.mean_ms"),
            format!("{:.3}", timing.mean_ms[i]),
        );
        metric(
            &format!("diagnose.{key}.min_ms"),
            format!("{:.3}", timing.min_ms[i]),
        );
        metric(
            &format!("diagnose.{key}.max_ms"),
            format!("{:.3}", timing.max_ms[i]),
        );
    }
    metric(
        "diagnose.lagerd_cpu_ms_per_run",
        format!("{lagerd_cpu_ms:.3}"),
    );

    let limit = args.limit_ms;
    for (i, what) in [
        format!(
            "`lager diagnose k1` (USB address, exit 2), {} devices, median",
            args.devices
        ),
        "`lager diagnose supply1` (simulated TCP, exit 0, REACHABLE), median".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let median = timing.median_ms[i];
        row(
            what,
            &format!("≤ {limit:.0} ms"),
            &format!(
                "{median:.2} ms (min {:.2}, max {:.2})",
                timing.min_ms[i], timing.max_ms[i]
            ),
            if median <= limit { "PASS" } else { "**FAIL**" },
        );
    }
    row(
        "`lager --version` (process start, for scale), median",
        "info",
        &format!("{:.2} ms", timing.median_ms[2]),
        "info",
    );
    row(
        "lagerd CPU per diagnose (both nets, mean)",
        "info",
        &format!("{lagerd_cpu_ms:.2} ms"),
        "info",
    );
    drop(bench);
    if args.big_log_runs > 0 {
        big_log(&args, &lagerd, &lager, &sys, &dev, work.path())?;
    }
    Ok(())
}

/// The same `lager diagnose k1` against a lagerd whose `dmesg` prints a
/// large kernel log (see the tool's documentation); info only.
fn big_log(
    args: &Args,
    lagerd: &Path,
    lager: &Path,
    sys: &Path,
    dev: &Path,
    work: &Path,
) -> Result<(), BenchError> {
    let dir = work.join("big-log");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let dmesg = bin.join("dmesg");
    std::fs::write(
        &dmesg,
        format!(
            "#!/bin/sh\n# stand-in kernel log: {BIG_LOG_LINES} lines of 86 bytes\ni=0\n\
             while [ $i -lt {BIG_LOG_LINES} ]; do\n\
             printf '[%12d.000000] usb 1-1.2: new high-speed USB device number %3d using xhci_hcd\\n' $i $((i % 128))\n\
             i=$((i + 1))\ndone\n"
        ),
    )?;
    std::fs::set_permissions(&dmesg, std::fs::Permissions::from_mode(0o755))?;
    let printed = Command::new(&dmesg)
        .output()
        .map_err(|e| fail!("cannot run the stand-in dmesg: {e}"))?
        .stdout
        .len();
    let wrapped = wrapper(&dir, lagerd, sys, dev, Some(&bin))?;
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    std::fs::write(state.join("saved_nets.json"), SAVED_NETS)?;
    let bench = BenchBox::start(&wrapped, lager, Path::new("/usr/bin/python3"), &dir)?;
    eprintln!(
        "diagbench: large kernel log: lagerd on {} runs a dmesg that prints {printed} bytes",
        bench.daemon().addr()
    );
    let commands = [(
        "lager diagnose k1, large kernel log",
        format!("{} diagnose k1 --box {BOX_NAME}", lager.display()),
    )];
    let timing = hyperfine(
        &bench,
        &commands,
        args.big_log_runs,
        0,
        &dir.join("hyperfine.json"),
    )?;
    let mut command = Command::new(lager);
    command.args(["diagnose", "k1", "--box", BOX_NAME]);
    bench.isolate(&mut command);
    let output = command
        .output()
        .map_err(|e| fail!("cannot run {}: {e}", lager.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dmesg_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("dmesg tail:"))
        .unwrap_or("")
        .trim();
    eprintln!("diagbench: large kernel log: {dmesg_line}");
    let readable = !dmesg_line.contains("not readable");
    metric("diagnose.big_log.bytes", printed);
    metric(
        "diagnose.big_log.median_ms",
        format!("{:.3}", timing.median_ms[0]),
    );
    metric("diagnose.big_log.dmesg_readable", readable);
    row(
        &format!(
            "`lager diagnose k1` with a {} KiB kernel log (stand-in `dmesg`), median of {}",
            printed / 1024,
            args.big_log_runs
        ),
        "info (not the specified load)",
        &format!(
            "{:.0} ms; dmesg tail {}",
            timing.median_ms[0],
            if readable {
                "shown"
            } else {
                "reported \"not readable\""
            }
        ),
        if timing.median_ms[0] <= args.limit_ms {
            "info"
        } else {
            "info: over the limit"
        },
    );
    Ok(())
}
