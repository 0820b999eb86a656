//! The box's health for `/status` and `lager boxes`: every net's diagnose
//! bucket, classified in the background so a fleet view shows a stuck
//! instrument without anyone running `lager diagnose`, and `/status` never
//! waits for an instrument.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use common::diagnose::{bucket, Bucket};
use serde_json::{json, Value};

use crate::diagnose::Diagnose;
use crate::nets::Nets;

pub struct Health {
    /// The last report; `None` until the first check finished.
    report: Mutex<Option<Value>>,
}

impl Health {
    /// Checks every `interval` (the first after a short delay) until `stop`;
    /// a zero interval never checks.
    pub fn spawn(
        diagnose: Arc<Diagnose>,
        nets: Arc<Nets>,
        interval: Duration,
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
                let report = check(&diagnose, &nets.list());
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

    /// `{"state": "ok" | "degraded" | "unknown", "nets": [...]}`.
    pub fn report(&self) -> Value {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| json!({"state": "unknown", "nets": []}))
    }
}

/// Classifies each net with an address as `lager diagnose` would; nets on
/// one instrument share one probe.
fn check(diagnose: &Diagnose, nets: &[Value]) -> Value {
    let mut results = Vec::new();
    let mut probed: Vec<(String, Bucket)> = Vec::new();
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
        let bucket = match probed.iter().find(|(a, _)| a == address) {
            Some((_, bucket)) => *bucket,
            None => {
                let bucket = classify(diagnose, address);
                probed.push((address.to_string(), bucket));
                bucket
            }
        };
        results.push(json!({"name": name, "address": address, "bucket": bucket.as_str(), "ok": bucket.is_reachable()}));
    }
    let worst = results
        .iter()
        .find(|r| r["ok"] == false)
        .map(|r| r["bucket"].clone());
    match worst {
        None => json!({"state": "ok", "nets": results}),
        Some(bucket) => json!({"state": "degraded", "bucket": bucket, "nets": results}),
    }
}

fn classify(diagnose: &Diagnose, address: &str) -> Bucket {
    let usb = match diagnose.usb(address) {
        (200, facts) => facts,
        _ => Value::Null,
    };
    let (_, visa) = diagnose.visa(address);
    let (_, dispatcher) = diagnose.dispatcher(address);
    bucket(&usb, &visa, &dispatcher)
}
