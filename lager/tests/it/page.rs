//! The status page at `/` (fleet.md §2, issue 16) in a real browser:
//! headless Chromium, driven by `tests/browser/cdp.py` over the DevTools
//! protocol, reads the rendered DOM at phone size, sees a live reading
//! change after a `lager supply` command without a reload, takes phone and
//! desktop screenshots (kept under `target/page-shots/`), reads the page
//! again with JavaScript disabled, and reports every URL it asked for.
//!
//! `scripts/test.sh` installs Debian's `chromium`; with
//! `LAGER_REQUIRE_BROWSER` set (as there and in CI) a missing browser fails.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use lager_testsupport::{request, wait_until};
use serde_json::{json, Value};

use crate::{entry, Box_, Cli};

const CI_HOLDER: &str = "ci:github:lager/lager#999-2/integration@bench-3:42";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn have_chromium() -> bool {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .any(|name| {
            Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if !found {
        assert!(
            std::env::var_os("LAGER_REQUIRE_BROWSER").is_none(),
            "chromium is required (LAGER_REQUIRE_BROWSER); scripts/test.sh installs it"
        );
        eprintln!("SKIPPED the status page in a browser: no chromium; scripts/test.sh installs it");
    }
    found
}

#[test]
fn issue16_the_status_page_in_a_real_browser() {
    if !have_chromium() {
        return;
    }
    let b = Box_::start_with(&["--sim", "--health-interval-secs", "1"]);
    let cli = Cli::new("page");
    cli.write_config(&json!({"BOXES": {"b1": entry(b.port())}}));
    let base = format!("http://{}/", b.addr());

    // A job with output, run before anyone holds the box.
    let script = cli.work_dir().join("hello.py");
    std::fs::write(
        &script,
        "print('hello from the job')\nraise SystemExit(3)\n",
    )
    .unwrap();
    let run = cli.run_with(
        &["python", "--box", "b1", script.to_str().unwrap()],
        &[("LAGER_USER", "runner")],
    );
    run.expect_code(3);

    // A CI job holds the box; bob waits in its queue.
    let body = json!({"user": CI_HOLDER, "holder_type": "ci", "ttl_seconds": 600}).to_string();
    assert_eq!(request(b.addr(), "POST", "/lock", Some(&body)).status, 200);
    let mut waiter = TcpStream::connect(b.addr()).unwrap();
    let wait_body = json!({"user": "bob", "wait_seconds": 120}).to_string();
    write!(
        waiter,
        "POST /lock HTTP/1.1\r\nHost: lagerd\r\nContent-Length: {}\r\n\r\n{wait_body}",
        wait_body.len()
    )
    .unwrap();
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        request(b.addr(), "GET", "/overview", None)
            .text()
            .contains("\"queue\":[\"bob\"]")
    }));

    let shots = workspace().join("target/page-shots");
    let mut browser = Command::new("python3")
        .arg(workspace().join("tests/browser/cdp.py"))
        .args(["check", &base, "--shots"])
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 for tests/browser/cdp.py");
    let mut to_browser = browser.stdin.take().unwrap();
    let mut from_browser = BufReader::new(browser.stdout.take().unwrap());
    let mut phase = |name: &str| -> Value {
        let mut line = String::new();
        from_browser.read_line(&mut line).unwrap();
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the browser driver said {line:?} instead of phase {name}"));
        assert_eq!(value["phase"], name, "{value}");
        value
    };

    let loaded = phase("loaded");
    let holder = "github lager/lager run 999 job integration on bench-3";
    assert_eq!(loaded["holder"], holder, "holder as `lager boxes` shows it");
    assert_eq!(loaded["queue"], json!(["bob"]));
    assert_eq!(loaded["nets"], json!(["supply1", "battery1", "console1"]));
    // The simulated device's console: what it printed at boot, read-only.
    assert!(
        loaded["consoles"]
            .to_string()
            .contains("Lager simulated DUT, boot #1"),
        "the console's tail: {}",
        loaded["consoles"]
    );
    assert!(
        loaded["jobs"].to_string().contains("hello from the job"),
        "the job's output tail: {}",
        loaded["jobs"]
    );
    assert!(loaded["jobs"].to_string().contains("exit_nonzero (3)"));
    assert_eq!(
        loaded["width"], loaded["viewport"],
        "no sideways scrolling on a phone"
    );

    // The CI job changes the supply; the page follows without a reload.
    let run = cli.run_with(
        &[
            "supply", "supply1", "--box", "b1", "voltage", "4.2", "--yes",
        ],
        &[("LAGER_LOCK_HOLDER", CI_HOLDER)],
    );
    run.expect_code(0);
    writeln!(to_browser, "{}", json!({"expect": "set 4.200 V"})).unwrap();
    let live = phase("live");
    assert!(
        live["readings"]["supply1"]
            .as_str()
            .unwrap()
            .contains("set 4.200 V"),
        "live reading: {}",
        live["readings"]
    );
    assert_eq!(live["same_document"], "yes", "the page reloaded");

    let nojs = phase("nojs");
    assert_eq!(nojs["holder"], holder);
    assert_eq!(nojs["queue"], json!(["bob"]));
    assert_eq!(nojs["nets"], json!(["supply1", "battery1", "console1"]));
    assert!(nojs["consoles"]
        .to_string()
        .contains("Booting on the simulated CPU"));
    assert!(nojs["jobs"].to_string().contains("hello from the job"));
    assert_eq!(
        nojs["readings"]["supply1"], "—",
        "no script, no live reading"
    );
    for shot in nojs["shots"].as_array().unwrap() {
        let bytes = std::fs::read(shot.as_str().unwrap()).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{shot}"
        );
    }

    let requests = phase("requests");
    let urls = requests["urls"].as_array().unwrap();
    assert!(urls.len() >= 4, "{urls:?}");
    for url in urls {
        assert!(
            url.as_str().unwrap().starts_with(&base),
            "the page asked another host: {url}"
        );
    }
    assert!(browser.wait().unwrap().success());
    // The page changed nothing: the CI job still holds the box, bob waits.
    assert_eq!(b.lock()["user"], CI_HOLDER);
    drop(waiter);
}
