//! The box's health for `/status` and `lager boxes`: every net's diagnose
//! bucket, classified in the background so a fleet view shows a stuck
//! instrument without anyone running `lager diagnose`, and `/status` never
//! waits for an instrument.
//!
//! The check is passive by default (issue 12): sysfs presence, the bound
//! driver, the holder scan and the state of a session lagerd already has
//! open. It never opens an instrument, because a probe once a minute
//! collides with a user's own program holding it (the EBUSY race the
//! seeds describe). `--health-probe` adds the fresh `*IDN?` of
//! `/diagnose/visa` for instruments with no open session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use common::diagnose::{bucket, Bucket};
use serde_json::{json, Value};

use crate::diagnose::Diagnose;
use crate::nets::Nets;

/// What a passive check calls an instrument it has no facts against:
/// nothing wrong on the host, and lagerd has not talked to it yet.
const IDLE: &str = "idle";

pub struct Health {
    /// The last report; `None` until the first check finished.
    report: Mutex<Option<Value>>,
}

impl Health {
    /// Checks every `interval` (the first after a short delay) until `stop`;
    /// a zero interval never checks. `probe` lets a check open instruments.
    pub fn spawn(
        diagnose: Arc<Diagnose>,
        nets: Arc<Nets>,
        interval: Duration,
        probe: bool,
        stop: Arc<AtomicBool>,
    ) -> Arc<Health> {
        let health = Arc::new(Health {
            report: Mutex::new(None),
        });
        if interval.is_zero() {
            return health;
        }
        let checker = health.clone();
        let spawned = thread::Builder::new().name("health".into()).spawn(move || {
            let mut wait = Duration::from_secs(1);
            loop {
                let mut slept = Duration::ZERO;
                while slept < wait {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(100));
                    slept += Duration::from_millis(100);
                }
                let report = check(&diagnose, &nets.list(), probe);
                *checker
                    .report
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(report);
                wait = interval;
            }
        });
        if let Err(e) = spawned {
            log::warn!("cannot start the health checker: {e}");
        }
        health
    }

    /// `{"state": "ok" | "degraded" | "unknown", "probe": bool, "nets": [...]}`.
    pub fn report(&self) -> Value {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| json!({"state": "unknown", "nets": []}))
    }
}

/// Classifies each net with an address as `lager diagnose` would; nets on
/// one instrument share one check.
fn check(diagnose: &Diagnose, nets: &[Value], probe: bool) -> Value {
    let mut results = Vec::new();
    let mut checked: Vec<(String, &'static str, bool)> = Vec::new();
    for net in nets {
        let (Some(name), Some(address)) = (net["name"].as_str(), net["address"].as_str()) else {
            continue;
        };
        // A console's port is lagerd's own (console.md §2); probing it as
        // an instrument would fight the capture. Its state is reported
        // under `consoles`.
        if net["role"] == "uart" {
            continue;
        }
        let (bucket, ok) = match checked.iter().find(|(a, _, _)| a == address) {
            Some((_, bucket, ok)) => (*bucket, *ok),
            None => {
                let verdict = match classify(diagnose, address, probe) {
                    Some(bucket) => (bucket.as_str(), bucket.is_reachable()),
                    None => (IDLE, true),
                };
                checked.push((address.to_string(), verdict.0, verdict.1));
                verdict
            }
        };
        results.push(json!({"name": name, "address": address, "bucket": bucket, "ok": ok}));
    }
    let worst = results
        .iter()
        .find(|r| r["ok"] == false)
        .map(|r| r["bucket"].clone());
    match worst {
        None => json!({"state": "ok", "probe": probe, "nets": results}),
        Some(bucket) => {
            json!({"state": "degraded", "probe": probe, "bucket": bucket, "nets": results})
        }
    }
}

/// The instrument's bucket, or `None` (idle) when a passive check found
/// nothing to say about it.
fn classify(diagnose: &Diagnose, address: &str, probe: bool) -> Option<Bucket> {
    // A refused request (no address, not a USB one) has no facts: null.
    let usb = diagnose.usb(address).unwrap_or(Value::Null);
    let dispatcher = diagnose.dispatcher(address).unwrap_or(Value::Null);
    let open = dispatcher["cached_session"] == true;
    if probe {
        // The fresh probe of /diagnose/visa (skipped when a session is open).
        let visa = diagnose.visa(address).unwrap_or(Value::Null);
        return Some(bucket(&usb, &visa, &dispatcher));
    }
    // Passive: what an open would have met, from what the host shows.
    let own_pid = std::process::id().to_string();
    let others_hold = usb["lsof"]
        .as_array()
        .is_some_and(|holders| holders.iter().any(|h| h["pid"] != own_pid.as_str()));
    let visa = if open {
        json!({"skipped": true})
    } else if others_hold || usb["usbtmc_bound"] == true {
        json!({"error_class": "busy"})
    } else {
        json!({})
    };
    match bucket(&usb, &visa, &dispatcher) {
        Bucket::Unclear => None,
        found => Some(found),
    }
}
