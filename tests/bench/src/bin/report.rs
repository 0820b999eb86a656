//! report: turns the `METRIC key value` lines collected by
//! `scripts/bench.sh` into one table of target, measured value and
//! PASS/FAIL per line (issue 3's and issue 4's targets), printed as
//! Markdown so it can be pasted into BENCHMARKS.md as is.
//!
//! The targets live here, in one list, next to how each is computed, so a
//! changed target is a one-line diff. A missing measurement is a FAIL (and
//! exit status 3): a benchmark that did not run must not look green.

use std::collections::HashMap;
use std::path::PathBuf;

use argh::FromArgs;

/// Print the issue 3 and issue 4 target table from a METRIC file.
#[derive(FromArgs)]
struct Args {
    /// file with `METRIC key value` lines (other lines are ignored)
    #[argh(positional)]
    metrics: PathBuf,
}

struct Metrics {
    numbers: HashMap<String, f64>,
    texts: HashMap<String, String>,
}

impl Metrics {
    fn get(&self, key: &str) -> Option<f64> {
        self.numbers.get(key).copied()
    }
}

struct Row {
    group: &'static str,
    what: String,
    target: String,
    measured: String,
    /// `None`: informational, no target.
    verdict: Option<bool>,
}

/// A measured value and its verdict (`None`: informational); `None` when
/// the measurement is missing.
type Measured = Option<(String, Option<bool>)>;

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    let text = match std::fs::read_to_string(&args.metrics) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("report: cannot read {}: {e}", args.metrics.display());
            return std::process::ExitCode::from(2);
        }
    };
    let metrics = parse(&text);
    let rows = rows(&metrics);
    print!("{}", render(&rows));
    let failed: Vec<&Row> = rows.iter().filter(|r| r.verdict == Some(false)).collect();
    let missing = rows.iter().any(|r| r.measured == "NO DATA");
    println!();
    let passed = rows.iter().filter(|r| r.verdict == Some(true)).count();
    if failed.is_empty() {
        println!("All {passed} targets PASS.");
    } else {
        println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        println!(
            "!!! FAIL: {} of {} targets missed:",
            failed.len(),
            failed.len() + passed
        );
        for row in &failed {
            println!(
                "!!!   {} / {}: {} (target {})",
                row.group, row.what, row.measured, row.target
            );
        }
        println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    }
    if missing {
        println!("Some measurements are missing (NO DATA): a benchmark failed to run; see its log above.");
        return std::process::ExitCode::from(3);
    }
    std::process::ExitCode::SUCCESS
}

fn parse(text: &str) -> Metrics {
    let mut metrics = Metrics {
        numbers: HashMap::new(),
        texts: HashMap::new(),
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("METRIC") {
            continue;
        }
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        match value.parse::<f64>() {
            Ok(number) => {
                metrics.numbers.insert(key.to_string(), number);
            }
            Err(_) => {
                metrics.texts.insert(key.to_string(), value.to_string());
            }
        }
    }
    metrics
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn rows(m: &Metrics) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |group, what: &str, target: String, measured: Measured| {
        let (measured, verdict) = measured.unwrap_or_else(|| ("NO DATA".into(), Some(false)));
        rows.push(Row {
            group,
            what: what.to_string(),
            target,
            measured,
            verdict,
        });
    };

    // 1. Cold start.
    let hello = m.get("cold.hello.median_us");
    let method = m.texts.get("cold.method").map_or("?", String::as_str);
    add(
        "1 cold start",
        &format!("static hello world, median ({method})"),
        "baseline".into(),
        hello.map(|h| (ms(h), None)),
    );
    for (key, name) in [
        ("cold.version", "`lager --version`"),
        ("cold.boxes_help", "`lager boxes --help`"),
    ] {
        let median = m.get(&format!("{key}.median_us"));
        add(
            "1 cold start",
            &format!("{name}, median"),
            "≤ 2 ms".into(),
            median.map(|v| (ms(v), Some(v <= 2000.0))),
        );
        add(
            "1 cold start",
            &format!("{name} / hello world"),
            "≤ 2×".into(),
            median
                .zip(hello)
                .map(|(v, h)| (format!("{:.2}×", v / h), Some(v <= 2.0 * h))),
        );
    }

    // 2. Reads and refusals, 8 keep-alive clients.
    for (label, name) in [
        ("read.get", "`GET /lock` (box held)"),
        ("read.conflict", "`POST /lock` → 409"),
    ] {
        let errors = m.get(&format!("{label}.errors")).unwrap_or(0.0)
            + m.get(&format!("{label}_paced.errors")).unwrap_or(0.0);
        let paced = format!("{label}_paced");
        let offered = m.get(&format!("{paced}.offered_rps")).unwrap_or(20_000.0);
        let p50 = m.get(&format!("{paced}.all.p50_us"));
        let p99 = m.get(&format!("{paced}.all.p99_us"));
        add(
            "2 reads",
            &format!("{name} p50 at {offered:.0} req/s"),
            "≤ 100 µs".into(),
            p50.map(|v| (us(v), Some(v <= 100.0))),
        );
        add(
            "2 reads",
            &format!("{name} p99 at {offered:.0} req/s"),
            "≤ 1 ms".into(),
            p99.map(|v| (us(v), Some(v <= 1000.0))),
        );
        let rps = m.get(&format!("{label}.rps"));
        let sat_p50 = m.get(&format!("{label}.all.p50_us"));
        let sat_p99 = m.get(&format!("{label}.all.p99_us"));
        add(
            "2 reads",
            &format!("{name} throughput, saturated"),
            "≥ 20,000 req/s, 0 errors".into(),
            rps.map(|v| {
                let detail = match (sat_p50, sat_p99) {
                    (Some(a), Some(b)) => format!(" (p50 {}, p99 {})", us(a), us(b)),
                    _ => String::new(),
                };
                let errors_note = if errors > 0.0 {
                    format!(", {errors:.0} errors")
                } else {
                    String::new()
                };
                (
                    format!("{v:.0} req/s{detail}{errors_note}"),
                    Some(v >= 20_000.0 && errors == 0.0),
                )
            }),
        );
    }
    add(
        "2 reads",
        "baseline: old Python box server",
        "quoted from issue 3, not measured".into(),
        Some(("~1,000 req/s, stalls for seconds".into(), None)),
    );

    // 3. Durable writes.
    let floor_p50 = m.get("floor.p50_us");
    add(
        "3 writes",
        "raw floor: temp+write+fsync+rename+dir fsync",
        "baseline".into(),
        floor_p50.map(|f| {
            let p99 = m
                .get("floor.p99_us")
                .map_or(String::new(), |p| format!(", p99 {}", us(p)));
            (format!("p50 {}{p99}", us(f)), None)
        }),
    );
    let write_p50 = m.get("write.seq.write.p50_us");
    add(
        "3 writes",
        "write p50, 1 client (acquire, heartbeat, release)",
        floor_p50.map_or("≤ floor p50 + 300 µs".into(), |f| {
            format!("≤ floor p50 + 300 µs = {}", us(f + 300.0))
        }),
        write_p50.zip(floor_p50).map(|(w, f)| {
            let p99 = m
                .get("write.seq.write.p99_us")
                .map_or(String::new(), |p| format!(" (p99 {})", us(p)));
            (
                format!("{} = floor {:+.0} µs{p99}", us(w), w - f),
                Some(w <= f + 300.0),
            )
        }),
    );
    for (key, name) in [("max_us", "max"), ("p99_us", "p99")] {
        let value = m.get(&format!("write.contended.all.{key}"));
        add(
            "3 writes",
            &format!("8 contending clients, any request, {name}"),
            floor_p50.map_or("≤ 4× floor p50".into(), |f| {
                format!("≤ 4× floor p50 = {}", us(4.0 * f))
            }),
            value.zip(floor_p50).map(|(v, f)| {
                let detail = if key == "max_us" {
                    let writes = m
                        .get("write.contended.write.p50_us")
                        .map_or(String::new(), |w| format!(", writes p50 {}", us(w)));
                    let above = m
                        .get("write.contended.all.above_limit")
                        .zip(m.get("write.contended.all.n"))
                        .map_or(String::new(), |(a, n)| format!(", {a:.0} of {n:.0} above"));
                    format!("{writes}{above}")
                } else {
                    String::new()
                };
                (
                    format!("{} = {:.2}× floor{detail}", us(v), v / f),
                    Some(v <= 4.0 * f),
                )
            }),
        );
    }

    // 4. lager boxes over 50 boxes, 10 dead.
    for (label, name) in [
        ("boxes", "`lager boxes`, 50 boxes (10 dead)"),
        ("boxes_default", "`lager boxes`, default timeout"),
    ] {
        let timeout = m.get(&format!("{label}.timeout_ms"));
        let worst = m.get(&format!("{label}.max_ms"));
        if label == "boxes_default" && timeout.is_none() {
            continue; // only in full runs
        }
        let misreported = m.get(&format!("{label}.misreported_runs")).is_some();
        add(
            "4 boxes",
            &format!("{name}, worst total"),
            timeout.map_or("≤ per-box timeout + 100 ms".into(), |t| {
                format!("≤ {t:.0} + 100 ms")
            }),
            worst.zip(timeout).map(|(w, t)| {
                let median = m
                    .get(&format!("{label}.median_ms"))
                    .map_or(String::new(), |v| format!(", median {v:.0} ms"));
                let wrong = if misreported { ", TABLE WRONG" } else { "" };
                (
                    format!("{w:.0} ms (margin {:.0} ms{median}{wrong})", t + 100.0 - w),
                    Some(w <= t + 100.0 && !misreported),
                )
            }),
        );
    }

    // 5. Size and memory.
    for (key, name, limit_mib) in [
        ("size.lagerd_bytes", "`lagerd` static musl binary", 2.0),
        ("size.lager_bytes", "`lager` static musl binary", 1.5),
    ] {
        add(
            "5 footprint",
            name,
            format!("≤ {limit_mib} MiB"),
            m.get(key).map(|b| {
                (
                    format!("{:.2} MiB ({b:.0} B)", b / MIB),
                    Some(b <= limit_mib * MIB),
                )
            }),
        );
    }
    for (key, name, limit_mib) in [
        ("rss.idle", "`lagerd` VmRSS idle", 3.0),
        (
            "rss.keepalive",
            "`lagerd` VmRSS, 100 keep-alive conns (1 request each)",
            6.0,
        ),
        ("rss.silent", "`lagerd` VmRSS, 100 silent conns", 6.0),
    ] {
        add(
            "5 footprint",
            name,
            format!("≤ {limit_mib} MiB"),
            m.get(&format!("{key}.rss_kib")).map(|k| {
                let hwm = m
                    .get(&format!("{key}.hwm_kib"))
                    .map_or(String::new(), |h| format!(" (peak {:.2} MiB)", h / KIB));
                (
                    format!("{:.2} MiB{hwm}", k / KIB),
                    Some(k <= limit_mib * KIB),
                )
            }),
        );
    }

    issue4_rows(m, &mut add);
    rows
}

/// 6. `lager python` (issue 4).
fn issue4_rows(m: &Metrics, add: &mut dyn FnMut(&'static str, &str, String, Measured)) {
    const G: &str = "6 lager python";
    let method = m.texts.get("py.hello.method").map_or("?", String::as_str);
    let pass = m.get("py.hello.python_pass.median_us");
    let direct = m.get("py.hello.python_hello.median_us");
    let lager = m.get("py.hello.lager.median_us");
    add(
        G,
        &format!("`python3 -c pass`, median ({method})"),
        "baseline".into(),
        pass.map(|v| (ms(v), None)),
    );
    add(
        G,
        "`python3 -u hello.py`, median",
        "baseline".into(),
        direct.map(|v| (ms(v), None)),
    );
    add(
        G,
        "`lager python hello.py --box bench`, median",
        "info".into(),
        lager.map(|v| {
            let max = m
                .get("py.hello.lager.max_us")
                .map_or(String::new(), |x| format!(" (max {})", ms(x)));
            (format!("{}{max}", ms(v)), None)
        }),
    );
    add(
        G,
        "`lager python hello.py` − `python3 -c pass`, medians",
        "≤ 40 ms".into(),
        lager.zip(pass).map(|(l, p)| {
            let vs_direct = direct.map_or(String::new(), |d| {
                format!(" (− `python3 -u hello.py`: {})", ms(l - d))
            });
            (format!("{}{vs_direct}", ms(l - p)), Some(l - p <= 40_000.0))
        }),
    );

    let bytes = m.get("py.stream.bytes");
    let size = bytes.map_or("?".into(), |b| format!("{:.0} MiB", b / MIB));
    let dropped = m.get("py.stream.cli.dropped_bytes").unwrap_or(0.0);
    add(
        G,
        &format!("stdout via `lager python big.py > /dev/null`, {size} in 64 KiB writes"),
        "≥ 200 MB/s, nothing dropped".into(),
        m.get("py.stream.cli.mbps").map(|v| {
            let secs = m
                .get("py.stream.cli.secs")
                .map_or(String::new(), |s| format!(" ({s:.2} s"));
            let cpu = match (
                m.get("py.stream.cli.lagerd_cpu_secs"),
                m.get("py.stream.cli.client_cpu_secs"),
            ) {
                (Some(d), Some(c)) => format!("; CPU lagerd {d:.2} s, lager {c:.2} s)"),
                _ if secs.is_empty() => String::new(),
                _ => ")".into(),
            };
            let lost = if dropped > 0.0 {
                format!(", {dropped:.0} B DROPPED")
            } else {
                String::new()
            };
            (
                format!("{v:.0} MB/s{secs}{cpu}{lost}"),
                Some(v >= 200.0 && dropped == 0.0),
            )
        }),
    );
    add(
        G,
        &format!("stdout via lager-bench's raw HTTP client, {size} (daemon alone)"),
        "info".into(),
        m.get("py.stream.raw.mbps").map(|v| {
            let detail = match (
                m.get("py.stream.raw.secs"),
                m.get("py.stream.raw.lagerd_cpu_secs"),
            ) {
                (Some(s), Some(d)) => format!(" ({s:.2} s; CPU lagerd {d:.2} s)"),
                _ => String::new(),
            };
            (format!("{v:.0} MB/s{detail}"), None)
        }),
    );
    for (key, name) in [
        (
            "cli",
            "`lagerd` VmRSS peak while streaming via `lager python`",
        ),
        ("raw", "`lagerd` VmRSS peak while streaming via raw client"),
    ] {
        add(
            G,
            &format!("{name} (sampled every 50 ms)"),
            "≤ 8 MiB".into(),
            m.get(&format!("py.stream.{key}.rss_peak_kib")).map(|k| {
                let hwm = m
                    .get(&format!("py.stream.{key}.hwm_kib"))
                    .map_or(String::new(), |h| format!(", VmHWM {:.2} MiB", h / KIB));
                let samples = m
                    .get(&format!("py.stream.{key}.rss_samples"))
                    .map_or(String::new(), |n| format!(" ({n:.0} samples{hwm})"));
                (format!("{:.2} MiB{samples}", k / KIB), Some(k <= 8.0 * KIB))
            }),
        );
    }

    let clients = m.get("py.concurrent.clients");
    let via = match m.texts.get("py.concurrent.via").map(String::as_str) {
        Some("raw") => "raw HTTP clients",
        _ => "`lager python` processes, auto-lock off",
    };
    add(
        G,
        &format!(
            "{} concurrent runs from {via}",
            clients.map_or("32".into(), |c| format!("{c:.0}"))
        ),
        "all complete, correct, unmixed; 0 errors".into(),
        m.get("py.concurrent.errors")
            .zip(clients)
            .map(|(errors, clients)| {
                let ok = m.get("py.concurrent.runs_ok").unwrap_or(0.0);
                let lines = m.get("py.concurrent.lines_checked").unwrap_or(0.0);
                let expected = m.get("py.concurrent.lines_expected").unwrap_or(f64::NAN);
                let wall = m
                    .get("py.concurrent.wall_ms")
                    .map_or(String::new(), |w| format!(", wall {w:.0} ms"));
                (
                    format!(
                        "{ok:.0}/{clients:.0} runs OK, {lines:.0}/{expected:.0} lines checked, {errors:.0} errors{wall}"
                    ),
                    Some(errors == 0.0 && ok == clients && lines == expected),
                )
            }),
    );
}

fn render(rows: &[Row]) -> String {
    let mut out =
        String::from("| # | measurement | target | measured | result |\n|---|---|---|---|---|\n");
    for row in rows {
        let verdict = match row.verdict {
            Some(true) => "PASS",
            Some(false) => "**FAIL**",
            None => "info",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.group, row.what, row.target, row.measured, verdict
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_measurements_fail() {
        let m =
            parse("METRIC cold.hello.median_us 500\nnoise\nMETRIC cold.version.median_us 900\n");
        let rows = rows(&m);
        let version = rows
            .iter()
            .find(|r| r.what == "`lager --version`, median")
            .unwrap();
        assert_eq!(version.verdict, Some(true));
        let ratio = rows
            .iter()
            .find(|r| r.what == "`lager --version` / hello world")
            .unwrap();
        assert_eq!(ratio.verdict, Some(true));
        let help = rows
            .iter()
            .find(|r| r.what == "`lager boxes --help`, median")
            .unwrap();
        assert_eq!(
            (help.measured.as_str(), help.verdict),
            ("NO DATA", Some(false))
        );
    }

    #[test]
    fn lager_python_targets() {
        let m = parse(
            "METRIC py.hello.python_pass.median_us 13000\nMETRIC py.hello.lager.median_us 56000\n\
             METRIC py.stream.bytes 1073741824\nMETRIC py.stream.cli.mbps 419\n\
             METRIC py.stream.cli.dropped_bytes 0\nMETRIC py.stream.cli.rss_peak_kib 4096\n\
             METRIC py.concurrent.clients 32\nMETRIC py.concurrent.errors 0\n\
             METRIC py.concurrent.runs_ok 32\nMETRIC py.concurrent.lines_checked 64000\n\
             METRIC py.concurrent.lines_expected 64000\n",
        );
        let rows = rows(&m);
        let verdict = |prefix: &str| {
            rows.iter()
                .find(|r| r.what.starts_with(prefix))
                .unwrap()
                .verdict
        };
        assert_eq!(verdict("`lager python hello.py` − "), Some(false));
        assert_eq!(verdict("stdout via `lager python"), Some(true));
        assert_eq!(
            verdict("`lagerd` VmRSS peak while streaming via `lager"),
            Some(true)
        );
        assert_eq!(verdict("32 concurrent runs"), Some(true));
        // A run the raw client did not make is missing, not passed.
        let raw_rss = rows
            .iter()
            .find(|r| {
                r.what
                    .starts_with("`lagerd` VmRSS peak while streaming via raw")
            })
            .unwrap();
        assert_eq!(raw_rss.measured, "NO DATA");
    }

    #[test]
    fn write_targets_are_relative_to_the_floor() {
        let m = parse(
            "METRIC floor.p50_us 1000\nMETRIC write.seq.write.p50_us 1250\n\
             METRIC write.contended.all.max_us 4500\nMETRIC write.contended.all.p99_us 3000\n",
        );
        let rows = rows(&m);
        let verdict = |prefix: &str| {
            rows.iter()
                .find(|r| r.what.starts_with(prefix))
                .unwrap()
                .verdict
        };
        assert_eq!(verdict("write p50"), Some(true));
        assert_eq!(
            verdict("8 contending clients, any request, max"),
            Some(false)
        );
        assert_eq!(
            verdict("8 contending clients, any request, p99"),
            Some(true)
        );
    }
}
