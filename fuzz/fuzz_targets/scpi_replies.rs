//! SCPI reply parsing in the drivers (`keithley.rs`, `rigol.rs`): every
//! supply and battery action runs through `Instruments::command`, the
//! route's own entry, against an instrument on a real loopback socket whose
//! every reply is chosen by the fuzzer. Whatever it answers, the command
//! ends in a clear status (200, 400 or 502), and no number lagerd writes
//! to the instrument is `NaN` or infinite: a reading that is not a number
//! is JSON `null` in a state (scripts.md §2) and is never written back.
#![no_main]

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use lager_fuzz::scratch_dir;
use lagerd::devlock::DeviceLocks;
use lagerd::instruments::session::{ScanRoots, Sessions};
use lagerd::instruments::{CommandError, Instruments};
use lagerd::nets::Nets;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

/// Nets on the one scripted instrument: (name, battery role).
const NETS: [(&str, bool); 5] = [
    ("keithley_supply", false),
    ("keithley_battery", true),
    ("rigol_ch1", false),
    ("rigol_ch2", false),
    ("rigol_ch3", false),
];
const SUPPLY_ACTIONS: [&str; 10] = [
    "voltage",
    "current",
    "ovp",
    "ocp",
    "enable",
    "disable",
    "clear_ocp",
    "state",
    "set_mode",
    "print_state",
];
const BATTERY_ACTIONS: [&str; 18] = [
    "set_to_battery_mode",
    "set_volt_full",
    "set_volt_empty",
    "set_ovp",
    "set_ocp",
    "set_model",
    "list_models",
    "export_model",
    "create_model",
    "set_soc",
    "set_voc",
    "set_capacity",
    "set_current_limit",
    "set_mode",
    "enable_battery",
    "disable_battery",
    "state",
    "clear",
];

#[derive(Arbitrary, Debug)]
struct Input {
    net: u8,
    action: u8,
    value: Option<f64>,
    ovp: Option<f64>,
    ocp: Option<f64>,
    slot: u8,
    force: bool,
    /// The instrument's answers to the queries, one per line, in order.
    replies: Vec<u8>,
}

type Lines = Arc<Mutex<Vec<String>>>;

struct Fixture {
    instruments: Instruments,
    replies: Arc<Mutex<VecDeque<Vec<u8>>>>,
    /// Every line lagerd sent the instrument.
    received: Lines,
}

/// An instrument that answers each query line (one with a `?`) with the
/// next scripted reply, an empty line once they run out.
fn scripted_instrument(replies: Arc<Mutex<VecDeque<Vec<u8>>>>, received: Lines) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(reader) = stream.try_clone() else {
                continue;
            };
            for line in BufReader::new(reader).split(b'\n') {
                let Ok(line) = line else { break };
                received
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(String::from_utf8_lossy(&line).into_owned());
                if !line.contains(&b'?') {
                    continue;
                }
                let mut reply = replies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front()
                    .unwrap_or_default();
                reply.push(b'\n');
                if stream.write_all(&reply).is_err() {
                    break;
                }
            }
        }
    });
    port
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch_dir("scpi_replies");
        let replies = Arc::new(Mutex::new(VecDeque::new()));
        let received = Lines::default();
        let port = scripted_instrument(replies.clone(), received.clone());
        let address = format!("TCPIP0::127.0.0.1::{port}::SOCKET");
        let mut nets = vec![
            json!({"name": "keithley_supply", "role": "power-supply", "instrument": "Keithley_2281S", "address": address, "pin": 1}),
            json!({"name": "keithley_battery", "role": "battery", "instrument": "Keithley_2281S", "address": address, "pin": 1}),
        ];
        for channel in 1..=3 {
            nets.push(json!({"name": format!("rigol_ch{channel}"), "role": "power-supply", "instrument": "Rigol_DP832", "address": address, "pin": channel}));
        }
        fs::write(dir.join("saved_nets.json"), Value::Array(nets).to_string())
            .expect("the nets file");
        let empty = dir.join("empty");
        fs::create_dir_all(&empty).expect("an empty proc root");
        let locks = Arc::new(DeviceLocks::new(&dir, "device_locks", Duration::from_secs(2)));
        let roots = ScanRoots {
            proc: empty.clone(),
            dev: empty,
        };
        let sessions = Arc::new(Sessions::new(locks, Duration::from_secs(2), roots));
        let nets = Arc::new(Nets::new(dir, None));
        Fixture {
            instruments: Instruments::new(sessions, nets),
            replies,
            received,
        }
    })
}

/// A valid 101-point model: VOC rising, ESR falling.
fn model_params(input: &Input) -> Map<String, Value> {
    let voc: Vec<f64> = (0..=100).map(|i| 3.0 + f64::from(i) / 100.0).collect();
    let esr: Vec<f64> = (0..=100).map(|i| 0.2 - f64::from(i) / 1000.0).collect();
    let mut params = Map::new();
    params.insert("slot".into(), json!(input.slot % 11));
    params.insert("voc".into(), json!(voc));
    params.insert("esr".into(), json!(esr));
    params.insert("force".into(), json!(input.force));
    params
}

fuzz_target!(|input: Input| {
    let f = fixture();
    // Each run starts from an unknown entry function, as after a reopen.
    f.instruments.clear_cache(false);
    let (net, battery) = NETS[usize::from(input.net) % NETS.len()];
    let action = if battery {
        BATTERY_ACTIONS[usize::from(input.action) % BATTERY_ACTIONS.len()]
    } else {
        SUPPLY_ACTIONS[usize::from(input.action) % SUPPLY_ACTIONS.len()]
    };
    let mut params = if action == "create_model" {
        model_params(&input)
    } else {
        Map::new()
    };
    for (key, value) in [
        ("value", input.value),
        ("ovp", input.ovp),
        ("ocp", input.ocp),
    ] {
        if let Some(value) = value {
            params.insert(key.into(), json!(value));
        }
    }
    if action == "export_model" || action == "set_model" {
        params.insert("slot".into(), json!(input.slot % 11));
        params.insert("value".into(), json!(input.slot % 11));
    }
    {
        let mut replies = f.replies.lock().unwrap_or_else(PoisonError::into_inner);
        replies.clear();
        replies.extend(input.replies.split(|b| *b == b'\n').map(<[u8]>::to_vec));
    }
    let mut body = Map::new();
    body.insert("netname".into(), json!(net));
    body.insert("action".into(), json!(action));
    body.insert("params".into(), Value::Object(params));

    f.received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    let answer = f.instruments.command(battery, &body);

    for line in f
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        assert!(!has_non_number(line), "{action} on {net} sent {line:?}");
    }
    // The net exists and nothing else holds the instrument: an answer, a
    // refusal of the request (400) or the instrument's failure (502), each
    // with words; never a missing net, a watch in the way or a deadline.
    match answer {
        Ok(outcome) => assert!(!outcome.message.is_empty(), "{action}: no message"),
        Err(e) => {
            assert!(
                !matches!(
                    e,
                    CommandError::UnknownNet(_) | CommandError::InUse(_) | CommandError::Incomplete
                ),
                "{action} on {net}: {e}"
            );
            assert!(
                !e.to_string().is_empty(),
                "{action}: an error without words"
            );
        }
    }
});

/// Whether `text` holds a number that is none: `NaN`, `inf`, `infinity`.
fn has_non_number(text: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || ",;:\"()/".contains(c))
        .map(|word| word.trim_start_matches(['+', '-']).to_ascii_lowercase())
        .map(|word| word.trim_end_matches(['v', 'a', 'w', 's', '%']).to_string())
        .any(|word| matches!(word.as_str(), "nan" | "inf" | "infinity"))
}
