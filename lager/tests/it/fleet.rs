//! Picking a free box (fleet.md §3, issue 16): `lager boxes lock --any`
//! and `lager python --box any:PATTERN` against many real lagerds on
//! loopback, plus a refusing and a hanging box in every pool. What a user
//! notices: each caller gets one box, waiters get boxes as they free, a
//! dead box costs one timeout, and nobody ever holds two boxes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lager_testsupport::{request, wait_until};
use serde_json::{json, Map, Value};

use crate::{entry, refused_port, silent_listener, Box_, Cli};

/// Per-box timeout of every `lager` in these tests.
const TIMEOUT_MS: u64 = 1000;

/// `bench-1..n` live boxes, plus `bench-dead` (refuses) and `bench-hang`
/// (accepts, never answers), saved in a fresh CLI environment.
struct Fleet {
    boxes: Vec<Box_>,
    cli: Cli,
    _hang: std::net::TcpListener,
}

impl Fleet {
    fn start(tag: &str, n: usize, args: &[&str]) -> Fleet {
        let boxes: Vec<Box_> = (0..n).map(|_| Box_::start_with(args)).collect();
        let mut saved = Map::new();
        for (i, b) in boxes.iter().enumerate() {
            saved.insert(format!("bench-{}", i + 1), entry(b.port()));
        }
        saved.insert("bench-dead".into(), entry(refused_port()));
        let hang = silent_listener();
        saved.insert(
            "bench-hang".into(),
            entry(hang.local_addr().unwrap().port()),
        );
        saved.insert("other-1".into(), entry(boxes[0].port()));
        let mut cli = Cli::new(tag);
        cli.set("LAGER_BOX_TIMEOUT_MS", &TIMEOUT_MS.to_string());
        cli.write_config(&json!({ "BOXES": Value::Object(saved) }));
        Fleet {
            boxes,
            cli,
            _hang: hang,
        }
    }

    fn name_of(&self, port: u16) -> String {
        let i = self.boxes.iter().position(|b| b.port() == port).unwrap();
        format!("bench-{}", i + 1)
    }

    /// Holder of every box, by box name (`None`: free).
    fn holders(&self) -> BTreeMap<String, Option<String>> {
        self.boxes
            .iter()
            .map(|b| {
                let lock = b.lock();
                let user = lock["user"].as_str().map(str::to_string);
                (self.name_of(b.port()), user)
            })
            .collect()
    }

    /// Waiters queued on each box, from its `/metrics`.
    fn queued(&self) -> Vec<u64> {
        self.boxes
            .iter()
            .map(|b| {
                let text = request(b.addr(), "GET", "/metrics", None).text();
                text.lines()
                    .find_map(|l| l.strip_prefix("lagerd_lock_queue_length "))
                    .and_then(|v| v.parse().ok())
                    .unwrap()
            })
            .collect()
    }

    fn spawn_any(&self, user: &str, wait_secs: u64) -> Child {
        self.cli
            .command(&[
                "boxes",
                "lock",
                "--any",
                "--pool",
                "bench-*",
                "--wait",
                &wait_secs.to_string(),
                "--json",
            ])
            .env("LAGER_USER", user)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Moves every caller that exited into `got` (user → box it was told).
fn collect(waiting: &mut BTreeMap<String, Child>, got: &mut BTreeMap<String, String>) {
    let done: Vec<String> = waiting
        .iter_mut()
        .filter_map(|(user, child)| matches!(child.try_wait(), Ok(Some(_))).then(|| user.clone()))
        .collect();
    for user in done {
        let child = waiting.remove(&user).unwrap();
        let (code, name, stderr) = picked_box(child);
        assert_eq!(code, 0, "{user}: {stderr}");
        got.insert(user, name.expect("a box name in --json"));
    }
}

/// The box a finished `--any --json` caller got.
fn picked_box(child: Child) -> (i32, Option<String>, String) {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let name = serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_string));
    (out.status.code().unwrap_or(-1), name, stderr)
}

#[test]
fn issue16_twenty_callers_on_ten_boxes_each_get_one_and_never_two() {
    let fleet = Fleet::start("any-20", 10, &["--health-interval-secs", "0"]);
    let started = Instant::now();
    let mut waiting: BTreeMap<String, Child> = (1..=20)
        .map(|i| {
            let user = format!("caller-{i:02}");
            let child = fleet.spawn_any(&user, 90);
            (user, child)
        })
        .collect();
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    // Ten callers get the ten boxes; the other ten queue.
    assert!(
        wait_until(Duration::from_secs(30), || {
            collect(&mut waiting, &mut got);
            got.len() == 10
        }),
        "only {} callers got a box: {got:?}",
        got.len()
    );
    let first_wave = started.elapsed();
    let boxes: BTreeSet<&String> = got.values().collect();
    assert_eq!(
        boxes.len(),
        10,
        "each box went to exactly one caller: {got:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || fleet
            .queued()
            .iter()
            .all(|q| *q == 10)),
        "every box should queue the ten waiters: {:?}",
        fleet.queued()
    );
    std::thread::sleep(Duration::from_millis(300));
    collect(&mut waiting, &mut got);
    assert_eq!(got.len(), 10, "nobody got a box while all were held");

    // Free the boxes one at a time: each goes to exactly one waiter.
    let first: Vec<(String, String)> = got.clone().into_iter().collect();
    for (round, (holder, name)) in first.iter().enumerate() {
        let index: usize = name.trim_start_matches("bench-").parse().unwrap();
        let body = json!({"user": holder}).to_string();
        let b = &fleet.boxes[index - 1];
        assert_eq!(
            request(b.addr(), "POST", "/unlock", Some(&body)).status,
            200
        );
        got.remove(holder);
        assert!(
            wait_until(Duration::from_secs(20), || {
                collect(&mut waiting, &mut got);
                got.len() == 10
            }),
            "round {round}: nobody got {name} after {holder} released it"
        );
        assert!(
            got.iter().any(|(user, n)| n == name && user != holder),
            "round {round}: {name} went elsewhere: {got:?}"
        );
    }
    assert!(waiting.is_empty());

    // At the end, checked on every box: one holder each, none twice, and
    // every queue place of the winners given back.
    assert!(wait_until(Duration::from_secs(5), || fleet
        .queued()
        .iter()
        .all(|q| *q == 0)));
    let holders = fleet.holders();
    let mut seen = BTreeSet::new();
    for (name, holder) in &holders {
        let holder = holder
            .as_ref()
            .unwrap_or_else(|| panic!("{name} is free: {holders:?}"));
        assert!(
            seen.insert(holder.clone()),
            "{holder} holds two boxes: {holders:?}"
        );
        assert_eq!(got.get(holder), Some(name), "{holder} was told another box");
    }
    eprintln!("first wave of 10 boxes: {first_wave:?}");
}

#[test]
fn issue16_any_costs_one_timeout_for_dead_and_hanging_boxes() {
    let fleet = Fleet::start("any-dead", 2, &["--health-interval-secs", "0"]);
    for b in &fleet.boxes {
        b.lock_as("somebody");
    }
    // No free box, no wait: fails after about one per-box timeout.
    let run = fleet.cli.run_with(
        &["boxes", "lock", "--any", "--pool", "bench-*"],
        &[("LAGER_USER", "me")],
    );
    run.expect_code(1);
    assert!(
        run.stderr.contains(
            "No free box matches 'bench-*' (2 busy, 0 without the nets asked for, 2 unreachable)"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.elapsed < Duration::from_millis(TIMEOUT_MS + 1500),
        "took {:?}",
        run.elapsed
    );
    // One box frees: it is found before the hanging box times out.
    let body = json!({"user": "somebody"}).to_string();
    request(fleet.boxes[1].addr(), "POST", "/unlock", Some(&body));
    let run = fleet.cli.run_with(
        &["boxes", "lock", "--any", "--pool", "bench-*"],
        &[("LAGER_USER", "me")],
    );
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), "bench-2");
    assert!(
        run.stderr.contains("Box 'bench-2' is locked by me"),
        "{}",
        run.stderr
    );
    assert!(
        run.elapsed < Duration::from_millis(TIMEOUT_MS),
        "a free box waited for the dead ones: {:?}",
        run.elapsed
    );
    assert_eq!(fleet.boxes[1].lock()["holder_type"], "user");
    assert_eq!(fleet.boxes[1].lock()["ttl_seconds"], Value::Null);
    // Asking again finds the box already ours and takes nothing new.
    let run = fleet.cli.run_with(
        &["boxes", "lock", "--any", "--json"],
        &[("LAGER_USER", "me")],
    );
    run.expect_code(0);
    let picked: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(picked["already_ours"], true, "{picked}");
    assert_eq!(fleet.boxes[0].lock()["user"], "somebody");
}

#[test]
fn issue16_any_with_net_skips_boxes_without_it() {
    let plain = Box_::start_with(&["--health-interval-secs", "0"]);
    let sim = Box_::start_with(&["--sim", "--health-interval-secs", "0"]);
    let cli = Cli::new("any-net");
    cli.write_config(
        &json!({"BOXES": {"a-plain": entry(plain.port()), "b-sim": entry(sim.port())}}),
    );
    let run = cli.run_with(
        &[
            "boxes", "lock", "--any", "--net", "supply1", "--net", "battery1",
        ],
        &[("LAGER_USER", "netter")],
    );
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), "b-sim");
    assert_eq!(
        plain.lock()["locked"],
        false,
        "the box without the net stays free"
    );
    let run = cli.run_with(
        &["boxes", "lock", "--any", "--net", "no-such-net"],
        &[("LAGER_USER", "netter2")],
    );
    run.expect_code(1);
    assert!(
        run.stderr.contains("2 without the nets asked for"),
        "{}",
        run.stderr
    );
    let run = cli.run_with(&["boxes", "lock", "--any", "--pool", "zzz-*"], &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("No saved box matches 'zzz-*'"),
        "{}",
        run.stderr
    );
}

#[test]
fn issue16_python_any_pattern_runs_on_a_free_box_and_releases_it() {
    let fleet = Fleet::start("py-any", 2, &["--health-interval-secs", "0"]);
    fleet.boxes[0].lock_as("somebody");
    let script = fleet.cli.work_dir().join("where.py");
    std::fs::write(
        &script,
        "import os\nprint('running on', os.environ['LAGER_BOX'])\n",
    )
    .unwrap();
    let run = fleet.cli.run_with(
        &["python", "--box", "any:bench-*", script.to_str().unwrap()],
        &[("LAGER_USER", "runner-user")],
    );
    run.expect_code(0);
    assert!(
        run.stdout.contains("running on bench-2"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains("Picked box 'bench-2'"),
        "{}",
        run.stderr
    );
    assert_eq!(fleet.boxes[1].lock()["locked"], false, "released at exit");
    assert_eq!(fleet.boxes[0].lock()["user"], "somebody");
    let run = fleet
        .cli
        .run_with(&["python", "--box", "any:bench-*", "--kill-all"], &[]);
    run.expect_code(2);
}
