//! The `lock.json` loader (locking.md A.3, A.4): whatever bytes are in
//! the file, `parse_record` reads them as a lock, no lock or corrupt, and
//! the real `LockBox` over that file answers, never fails, never serves a
//! record with the wrong types, and afterwards writes only valid records.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use lager_fuzz::scratch_dir;
use lagerd::clock::ManualClock;
use lagerd::lockbox::{parse_record, LockBox, LockError, Record};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

struct Fixture {
    dir: PathBuf,
    lock_box: LockBox,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch_dir("lock_file");
        let clock = Arc::new(ManualClock::at("2026-03-20T13:00:00Z"));
        let lock_box = LockBox::open(&dir, clock).expect("a lock box in the scratch dir");
        Fixture { dir, lock_box }
    })
}

fn body(value: Value) -> Record {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("bodies here are objects"),
    }
}

/// The file as the lock box left it: absent or a valid held record.
fn on_disk(f: &Fixture) -> Option<Record> {
    match fs::read(f.dir.join("lock.json")) {
        Err(_) => None,
        Ok(bytes) => Some(
            parse_record(&bytes)
                .expect("lagerd writes only valid records")
                .expect("lagerd writes only held records"),
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_record(data);
    if let Ok(Some(record)) = &parsed {
        // A refresh writes a loaded record back with its unknown keys: that
        // file must load as the same record.
        let written = serde_json::to_vec_pretty(record).expect("a record serializes");
        assert_eq!(parse_record(&written), Ok(Some(record.clone())));
    }

    let f = fixture();
    // As an operator's editor would: a new file renamed into place (an
    // in-place write within one timestamp tick may keep the stat the same).
    let temp = f.dir.join("lock.json.edit");
    fs::write(&temp, data).expect("write the seeded file");
    fs::rename(&temp, f.dir.join("lock.json")).expect("rename the seeded file");

    let status = f
        .lock_box
        .status()
        .expect("GET /lock never fails on a bad file");
    let unlocked = json!({"locked": false});
    match &parsed {
        Ok(Some(record)) => assert!(
            status == Value::Object(record.clone()) || status == unlocked,
            "a held record is served as it is, or reaped: {status}"
        ),
        _ => assert_eq!(
            status, unlocked,
            "no lock or a corrupt file reads as unlocked"
        ),
    }

    // The holder of the file (when it names one) refreshes it: unknown keys
    // and all go back to disk; anyone else is refused or takes a free box.
    let held_by = match &parsed {
        Ok(Some(record)) => record.get("user").and_then(Value::as_str),
        _ => None,
    };
    let user = match held_by {
        Some(user) if !user.is_empty() && user.len() <= 1024 => user.to_string(),
        _ => "fuzz".to_string(),
    };
    match f.lock_box.acquire(&body(json!({"user": user})), &|| false) {
        Ok(reply) => {
            assert_eq!(reply["user"], user.as_str());
            let record = on_disk(f).expect("a granted lock is on disk");
            assert_eq!(
                record.get("user").and_then(Value::as_str),
                Some(user.as_str())
            );
            f.lock_box
                .heartbeat(&body(json!({"user": user})))
                .expect("the holder's heartbeat");
        }
        Err(LockError::Taken { .. }) => {
            assert!(on_disk(f).is_some(), "refused only for a lock on disk");
        }
        Err(e) => panic!("acquire failed: {e}"),
    }
    f.lock_box
        .release(&body(json!({"user": "fuzz", "force": true})))
        .expect("a forced release");
    assert!(on_disk(f).is_none(), "released means no file");
});
