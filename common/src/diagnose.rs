//! The `lager diagnose` classifier (diagnose.md §4.1): one bucket, with its
//! headline and colour, from the three endpoint results.
//!
//! The inputs are the JSON bodies as the CLI received them; an endpoint
//! that could not be asked is `{"unavailable": …}` or `{"transport_error":
//! …}`, which simply lacks every key the rules look at. Rules read the
//! bodies the way the Python classifier did (truthiness for flags, "exactly
//! false" where the spec says so), and the first matching row wins.

use serde_json::Value;

use crate::truthy;

/// The classification buckets, in the table's row order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Row 1: the `usbtmc` kernel module is loaded.
    UsbtmcLoaded,
    /// Row 2: busy, and two or more processes hold the device.
    BusyMultiple,
    /// Row 3: busy.
    Busy,
    /// Row 4: the device disappeared (ENODEV/ENOENT).
    Nodev,
    /// Row 5: the probe timed out: firmware wedged.
    Wedged,
    /// lagerd's row after 5: the OS refused the device node (EACCES), so
    /// the udev rules are missing (the errno table's fourth row).
    Permission,
    /// Row 6: not on the USB bus at all.
    NotEnumerated,
    /// Row 7: `*IDN?` answered.
    Reachable,
    /// Row 8: the daemon holds a session; the fresh probe was skipped.
    ReachableCached,
    /// Row 9: a USB-TMC device the fresh probe could not open.
    TransientUsbtmc,
    /// Row 10: the same failure on a vendor-SDK (non USB-TMC) device.
    NotUsbtmc,
    /// Row 11: none of the above.
    Unclear,
}

/// The colour a headline is printed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Red,
    Yellow,
    Green,
}

impl Bucket {
    /// Stable machine name, used by `lager diagnose --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::UsbtmcLoaded => "usbtmc_loaded",
            Bucket::BusyMultiple => "busy_multiple",
            Bucket::Busy => "busy",
            Bucket::Nodev => "nodev",
            Bucket::Wedged => "wedged",
            Bucket::Permission => "permission",
            Bucket::NotEnumerated => "not_enumerated",
            Bucket::Reachable => "reachable",
            Bucket::ReachableCached => "reachable_cached",
            Bucket::TransientUsbtmc => "transient_usbtmc",
            Bucket::NotUsbtmc => "not_usbtmc",
            Bucket::Unclear => "unclear",
        }
    }

    pub fn tone(self) -> Tone {
        match self {
            Bucket::UsbtmcLoaded
            | Bucket::BusyMultiple
            | Bucket::Busy
            | Bucket::Wedged
            | Bucket::Permission
            | Bucket::NotEnumerated => Tone::Red,
            Bucket::Nodev | Bucket::TransientUsbtmc | Bucket::NotUsbtmc | Bucket::Unclear => {
                Tone::Yellow
            }
            Bucket::Reachable | Bucket::ReachableCached => Tone::Green,
        }
    }

    /// Whether this is a `REACHABLE` bucket (exit 0, diagnose.md §4 step 8).
    pub fn is_reachable(self) -> bool {
        matches!(self, Bucket::Reachable | Bucket::ReachableCached)
    }
}

/// What the headlines name: the box and net as the user typed them, and
/// the net's role.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub box_name: &'a str,
    pub net: &'a str,
    pub role: &'a str,
}

/// A bucket with its rendered headline and, unless reachable, a next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub bucket: Bucket,
    pub headline: String,
    pub advice: Option<String>,
}

fn field<'v>(body: &'v Value, key: &str) -> &'v Value {
    body.get(key).unwrap_or(&Value::Null)
}

fn text<'v>(body: &'v Value, key: &str) -> &'v str {
    field(body, key).as_str().unwrap_or("")
}

/// A JSON scalar as text: strings bare, numbers and bools as JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "?".to_string(),
        other => other.to_string(),
    }
}

/// `usb.lsof` as `command(pid)` labels, in the endpoint's order.
pub fn holder_labels(usb: &Value) -> Vec<String> {
    field(usb, "lsof")
        .as_array()
        .map(|holders| {
            holders
                .iter()
                .map(|h| {
                    format!(
                        "{}({})",
                        scalar(field(h, "command")),
                        scalar(field(h, "pid"))
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// VISA error keywords of rows 9 and 10 (matched on the lowercased error).
const UNREACHABLE_KEYWORDS: [&str; 5] = [
    "invalid resource",
    "no device found",
    "parsing error",
    "vi_error_inv_rsrc_name",
    "vi_error_rsrc_nfound",
];

/// Classifies one net (diagnose.md §4.1, first match wins).
pub fn classify(usb: &Value, visa: &Value, dispatcher: &Value, ctx: &Context) -> Classification {
    let bucket = bucket(usb, visa, dispatcher);
    Classification {
        bucket,
        headline: headline(bucket, usb, visa, ctx),
        advice: advice(bucket, usb, ctx),
    }
}

/// The bucket alone: the rows of the table in order.
pub fn bucket(usb: &Value, visa: &Value, dispatcher: &Value) -> Bucket {
    let error_class = text(visa, "error_class");
    let holders = field(usb, "lsof").as_array().map_or(0, Vec::len);
    let visa_error = text(visa, "error").to_lowercase();
    let unreachable_error = UNREACHABLE_KEYWORDS.iter().any(|k| visa_error.contains(k));
    if truthy::field(usb, "usbtmc_loaded") {
        Bucket::UsbtmcLoaded
    } else if error_class == "busy" && holders >= 2 {
        Bucket::BusyMultiple
    } else if error_class == "busy" {
        Bucket::Busy
    } else if error_class == "nodev" {
        Bucket::Nodev
    } else if error_class == "timeout" {
        Bucket::Wedged
    } else if crate::errclass::errno_message(&visa_error).is_some_and(|row| row.name == "EACCES") {
        Bucket::Permission
    } else if field(usb, "enumerated") == &Value::Bool(false) {
        Bucket::NotEnumerated
    } else if !text(visa, "idn").trim().is_empty() {
        Bucket::Reachable
    } else if truthy::field(visa, "skipped")
        && truthy::field(dispatcher, "cached_session")
        && truthy::field(dispatcher, "cached_drivers")
    {
        Bucket::ReachableCached
    } else if unreachable_error
        && truthy::field(usb, "enumerated")
        && truthy::field(usb, "is_usbtmc")
    {
        Bucket::TransientUsbtmc
    } else if unreachable_error && field(usb, "is_usbtmc") != &Value::Bool(true) {
        Bucket::NotUsbtmc
    } else {
        Bucket::Unclear
    }
}

fn headline(bucket: Bucket, usb: &Value, visa: &Value, ctx: &Context) -> String {
    let Context {
        box_name,
        net,
        role,
    } = *ctx;
    match bucket {
        Bucket::UsbtmcLoaded => {
            "HOST-SIDE: usbtmc kernel module loaded — `lager box update` to install the blacklist."
                .to_string()
        }
        Bucket::BusyMultiple => {
            let holders = holder_labels(usb);
            let first: Vec<&str> = holders.iter().take(4).map(String::as_str).collect();
            format!(
                "HOST-SIDE: USB device claimed by multiple processes ({}). A second pyvisa/libusb client is racing the hw service.",
                first.join(", ")
            )
        }
        Bucket::Busy => format!(
            "HOST-SIDE: USB device busy — another process holds it. Inspect with `lager ssh {box_name}` then `sudo lsof /dev/bus/usb/...`."
        ),
        Bucket::Nodev => format!(
            "TRANSIENT: device disappeared from USB (re-enumeration). Hw service should auto-recover on next call (0.20.0+). If it doesn't, `lager ssh {box_name} && sudo docker restart lager`."
        ),
        Bucket::Wedged => "INSTRUMENT WEDGED: device enumerates and accepts session open, but won't respond to *IDN?. The instrument firmware is stuck — a mains-side power-cycle of the instrument itself is required. Software can't fix this.".to_string(),
        Bucket::Permission => format!(
            "HOST-SIDE: permission denied opening the instrument — the udev rules that give lagerd's `lager` group its device nodes are not installed. `lager update --box {box_name}` installs them; then replug the instrument."
        ),
        Bucket::NotEnumerated => "NOT ENUMERATED: device does not show up on USB. Check power, cable, and (if behind an Acroname hub) the upstream port.".to_string(),
        Bucket::Reachable => format!(
            "REACHABLE — IDN: {}. USB, the VISA session and *IDN? are all good. This does not exercise the instrument's function (e.g. whether a supply will actually enable its output).",
            text(visa, "idn").trim()
        ),
        Bucket::ReachableCached => "REACHABLE (hw_service has an active shared session for this address; fresh pyvisa probe skipped to avoid colliding with it). This does not exercise the instrument's function.".to_string(),
        // lagerd's wording (diagnose.md §4.1 note): no separate probe
        // process to kill; the fresh probe shares the daemon's transport.
        Bucket::TransientUsbtmc => "TRANSIENT: device is enumerated as USB-TMC but the fresh pyvisa probe couldn't reach it — Run any command for this net so the daemon caches a session; if it persists restart lagerd.".to_string(),
        Bucket::NotUsbtmc => format!(
            "NOT USB-TMC: this instrument uses a vendor SDK (LabJack/LJM, Picoscope/Pico SDK, Acroname/BrainStem, etc.), not pyvisa. `lager diagnose` only covers USB-TMC instruments today; for this net, check `lager {role} {net} ...` directly."
        ),
        Bucket::Unclear => {
            "UNCLEAR — review the per-section output above and rerun if needed.".to_string()
        }
    }
}

fn advice(bucket: Bucket, usb: &Value, ctx: &Context) -> Option<String> {
    let Context {
        box_name,
        net,
        role,
    } = *ctx;
    let rerun = format!("lager diagnose {net} --box {box_name}");
    Some(match bucket {
        Bucket::Reachable | Bucket::ReachableCached => return None,
        Bucket::UsbtmcLoaded => {
            format!("Run `lager box update --box {box_name}` to install the usbtmc blacklist, then rerun `{rerun}`.")
        }
        Bucket::BusyMultiple => format!(
            "Stop the other clients of this instrument ({}); only the daemon should open it. Then rerun `{rerun}`.",
            holder_labels(usb).join(", ")
        ),
        Bucket::Busy => format!(
            "Find and stop the process holding the device (`lager ssh {box_name}`), then rerun `{rerun}`."
        ),
        Bucket::Nodev => format!(
            "Run any command for this net; if it still fails, `lager ssh {box_name} && sudo docker restart lager`."
        ),
        Bucket::Wedged => {
            format!("Power-cycle the instrument at the mains, then rerun `{rerun}`.")
        }
        Bucket::Permission => format!(
            "Install them with `lager update --box {box_name}` (image/udev/99-lager-instruments.rules), replug the instrument, then rerun `{rerun}`."
        ),
        Bucket::NotEnumerated => format!(
            "Check the instrument's power and USB cable (and any upstream hub port), then rerun `{rerun}`."
        ),
        Bucket::TransientUsbtmc => format!(
            "Run any command for this net (e.g. `lager {role} {net} state`); if it persists, restart lagerd."
        ),
        Bucket::NotUsbtmc => format!("Check the net directly with `lager {role} {net} ...`."),
        Bucket::Unclear => format!("Review the sections above and rerun `{rerun}`."),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CTX: Context<'static> = Context {
        box_name: "bench-3",
        net: "bat1",
        role: "battery",
    };

    /// A healthy, enumerated USB-TMC device with no holders.
    fn usb_ok() -> Value {
        json!({
            "address": "USB0::0x05E6::0x2281::4587429::INSTR",
            "enumerated": true,
            "sysfs_path": "/sys/bus/usb/devices/1-1.4",
            "device_path": "/dev/bus/usb/001/004",
            "vid": "05e6", "pid": "2281", "serial": "4587429",
            "is_usbtmc": true,
            "lsof": [],
            "usbtmc_loaded": false,
            "dmesg_tail": "(no USB lines in the kernel ring buffer for this boot)"
        })
    }

    fn visa_error(error: &str, class: &str) -> Value {
        json!({"address": "A", "error": error, "error_class": class, "elapsed_ms": 12})
    }

    fn dispatcher(cached: bool, drivers: Value) -> Value {
        json!({"address": "A", "cached_session": cached, "cached_drivers": drivers, "shared_pool_size": 1})
    }

    fn no_session() -> Value {
        dispatcher(false, json!([]))
    }

    fn with(mut body: Value, key: &str, value: Value) -> Value {
        body[key] = value;
        body
    }

    fn holders(n: usize) -> Value {
        Value::Array(
            (0..n)
                .map(|i| json!({"command": format!("p{i}"), "pid": format!("{}", 100 + i), "user": ""}))
                .collect(),
        )
    }

    fn unavailable() -> Value {
        json!({"unavailable": "endpoint not served by this box; update the box to use this section"})
    }

    fn transport() -> Value {
        json!({"transport_error": "HTTP 500: boom"})
    }

    fn classify_(usb: &Value, visa: &Value, disp: &Value) -> Classification {
        classify(usb, visa, disp, &CTX)
    }

    #[test]
    fn each_row_on_its_own() {
        let idn =
            json!({"address": "A", "idn": "KEITHLEY,2281S-20-6,4587429,1.0", "elapsed_ms": 9});
        let cases: Vec<(&str, Value, Value, Value, Bucket)> = vec![
            (
                "1 kmod",
                with(usb_ok(), "usbtmc_loaded", json!(true)),
                idn.clone(),
                no_session(),
                Bucket::UsbtmcLoaded,
            ),
            (
                "2 busy x2",
                with(usb_ok(), "lsof", holders(2)),
                visa_error("[Errno 16] Resource busy", "busy"),
                no_session(),
                Bucket::BusyMultiple,
            ),
            (
                "3 busy x1",
                with(usb_ok(), "lsof", holders(1)),
                visa_error("[Errno 16] Resource busy", "busy"),
                no_session(),
                Bucket::Busy,
            ),
            (
                "3 busy x0",
                usb_ok(),
                visa_error("Device at A is locked", "busy"),
                no_session(),
                Bucket::Busy,
            ),
            (
                "4 nodev",
                usb_ok(),
                visa_error("[Errno 19] No such device", "nodev"),
                no_session(),
                Bucket::Nodev,
            ),
            (
                "5 timeout",
                usb_ok(),
                visa_error("[Errno 110] Operation timed out", "timeout"),
                no_session(),
                Bucket::Wedged,
            ),
            (
                "6 not enumerated",
                json!({"enumerated": false, "lsof": [], "usbtmc_loaded": false}),
                visa_error("boom", "other"),
                no_session(),
                Bucket::NotEnumerated,
            ),
            (
                "7 idn",
                usb_ok(),
                idn.clone(),
                no_session(),
                Bucket::Reachable,
            ),
            (
                "8 cached",
                usb_ok(),
                json!({"address": "A", "skipped": true, "reason": "r"}),
                dispatcher(
                    true,
                    json!([{"device_name": "bat1", "driver_class": "KeithleyBattery"}]),
                ),
                Bucket::ReachableCached,
            ),
            (
                "9 transient",
                usb_ok(),
                visa_error("VI_ERROR_RSRC_NFOUND (-1073807343)", "other"),
                no_session(),
                Bucket::TransientUsbtmc,
            ),
            (
                "10 not usbtmc",
                with(usb_ok(), "is_usbtmc", json!(false)),
                visa_error("Invalid resource name", "other"),
                no_session(),
                Bucket::NotUsbtmc,
            ),
            (
                "11 unclear",
                usb_ok(),
                visa_error("[Errno 5] Input/output error", "other"),
                no_session(),
                Bucket::Unclear,
            ),
        ];
        for (name, usb, visa, disp, want) in cases {
            assert_eq!(classify_(&usb, &visa, &disp).bucket, want, "{name}");
        }
    }

    #[test]
    fn precedence_between_rows() {
        let busy = visa_error("[Errno 16] Resource busy", "busy");
        // 1 beats everything, even a working probe.
        let usb = with(
            with(usb_ok(), "usbtmc_loaded", json!(true)),
            "lsof",
            holders(3),
        );
        assert_eq!(bucket(&usb, &busy, &no_session()), Bucket::UsbtmcLoaded);
        // 2 and 3 beat 6: a busy class wins over "not enumerated".
        let gone = json!({"enumerated": false, "lsof": []});
        assert_eq!(bucket(&gone, &busy, &no_session()), Bucket::Busy);
        // 4 and 5 beat 6.
        let nodev = visa_error("No device found.", "nodev");
        assert_eq!(bucket(&gone, &nodev, &no_session()), Bucket::Nodev);
        let timeout = visa_error("timed out", "timeout");
        assert_eq!(bucket(&gone, &timeout, &no_session()), Bucket::Wedged);
        // 6 beats 7: a stale idn with enumerated=false is still not enumerated.
        let idn = json!({"idn": "X"});
        assert_eq!(bucket(&gone, &idn, &no_session()), Bucket::NotEnumerated);
        // 7 beats 8.
        let both = json!({"idn": "X", "skipped": true});
        let cached = dispatcher(true, json!([{"device_name": "d", "driver_class": "C"}]));
        assert_eq!(bucket(&usb_ok(), &both, &cached), Bucket::Reachable);
        // 9 needs enumerated and is_usbtmc; otherwise 10.
        let nfound = visa_error("No device found.", "other");
        assert_eq!(
            bucket(&usb_ok(), &nfound, &no_session()),
            Bucket::TransientUsbtmc
        );
        let not_tmc = with(usb_ok(), "is_usbtmc", json!(false));
        assert_eq!(bucket(&not_tmc, &nfound, &no_session()), Bucket::NotUsbtmc);
        // Enumerated unknown (endpoint unavailable) and USB-TMC unknown: 10.
        assert_eq!(
            bucket(&unavailable(), &nfound, &no_session()),
            Bucket::NotUsbtmc
        );
        // is_usbtmc true but enumerated unknown: neither 9 nor 10.
        let odd = json!({"is_usbtmc": true});
        assert_eq!(bucket(&odd, &nfound, &no_session()), Bucket::Unclear);
    }

    #[test]
    fn row_8_needs_all_three_facts() {
        let skipped = json!({"skipped": true, "reason": "r"});
        let drivers = json!([{"device_name": "d", "driver_class": "C"}]);
        assert_eq!(
            bucket(&usb_ok(), &skipped, &dispatcher(true, drivers.clone())),
            Bucket::ReachableCached
        );
        assert_eq!(
            bucket(&usb_ok(), &skipped, &dispatcher(true, json!([]))),
            Bucket::Unclear
        );
        assert_eq!(
            bucket(&usb_ok(), &skipped, &dispatcher(false, drivers.clone())),
            Bucket::Unclear
        );
        assert_eq!(
            bucket(
                &usb_ok(),
                &json!({"skipped": false}),
                &dispatcher(true, drivers)
            ),
            Bucket::Unclear
        );
        assert_eq!(bucket(&usb_ok(), &skipped, &unavailable()), Bucket::Unclear);
    }

    #[test]
    fn unavailable_and_transport_errors_fall_through() {
        for usb in [unavailable(), transport()] {
            assert_eq!(bucket(&usb, &unavailable(), &transport()), Bucket::Unclear);
            // A TCP instrument: /diagnose/usb refuses the address, the probe works.
            assert_eq!(
                bucket(&usb, &json!({"idn": "SIM,1"}), &transport()),
                Bucket::Reachable
            );
        }
        // An empty or whitespace idn is no answer.
        assert_eq!(
            bucket(&usb_ok(), &json!({"idn": "  "}), &no_session()),
            Bucket::Unclear
        );
        // A non-object body does not panic.
        assert_eq!(
            bucket(&json!([1]), &json!("x"), &Value::Null),
            Bucket::Unclear
        );
    }

    #[test]
    fn headlines_are_the_spec_text() {
        let usb = with(usb_ok(), "lsof", holders(5));
        let busy = visa_error("[Errno 16] Resource busy", "busy");
        let c = classify_(&usb, &busy, &no_session());
        assert_eq!(
            c.headline,
            "HOST-SIDE: USB device claimed by multiple processes (p0(100), p1(101), p2(102), p3(103)). A second pyvisa/libusb client is racing the hw service."
        );
        assert_eq!(c.bucket.tone(), Tone::Red);
        let c = classify_(&usb_ok(), &busy, &no_session());
        assert_eq!(
            c.headline,
            "HOST-SIDE: USB device busy — another process holds it. Inspect with `lager ssh bench-3` then `sudo lsof /dev/bus/usb/...`."
        );
        let c = classify_(&usb_ok(), &visa_error("x", "nodev"), &no_session());
        assert_eq!(
            c.headline,
            "TRANSIENT: device disappeared from USB (re-enumeration). Hw service should auto-recover on next call (0.20.0+). If it doesn't, `lager ssh bench-3 && sudo docker restart lager`."
        );
        assert_eq!(c.bucket.tone(), Tone::Yellow);
        let c = classify_(
            &usb_ok(),
            &json!({"idn": " KEITHLEY,2281S \n"}),
            &no_session(),
        );
        assert_eq!(
            c.headline,
            "REACHABLE — IDN: KEITHLEY,2281S. USB, the VISA session and *IDN? are all good. This does not exercise the instrument's function (e.g. whether a supply will actually enable its output)."
        );
        assert!(!c.headline.to_lowercase().contains("healthy"));
        assert_eq!(c.bucket.tone(), Tone::Green);
        assert_eq!(c.advice, None);
        let c = classify_(
            &usb_ok(),
            &visa_error("parsing error", "other"),
            &no_session(),
        );
        assert!(c.headline.starts_with("TRANSIENT: device is enumerated as USB-TMC but the fresh pyvisa probe couldn't reach it — "), "{}", c.headline);
        assert!(c.headline.ends_with("Run any command for this net so the daemon caches a session; if it persists restart lagerd."), "{}", c.headline);
        assert!(!c.headline.contains("pkill"));
        let c = classify_(
            &with(usb_ok(), "is_usbtmc", json!(false)),
            &visa_error("parsing error", "other"),
            &no_session(),
        );
        assert!(
            c.headline
                .ends_with("check `lager battery bat1 ...` directly."),
            "{}",
            c.headline
        );
        let prefixes = [
            (Bucket::UsbtmcLoaded, "HOST-SIDE: usbtmc kernel module loaded — `lager box update` to install the blacklist."),
            (Bucket::Wedged, "INSTRUMENT WEDGED: device enumerates and accepts session open, but won't respond to *IDN?."),
            (Bucket::NotEnumerated, "NOT ENUMERATED: device does not show up on USB."),
            (Bucket::ReachableCached, "REACHABLE (hw_service has an active shared session for this address;"),
            (Bucket::Unclear, "UNCLEAR — review the per-section output above and rerun if needed."),
        ];
        for (bucket, prefix) in prefixes {
            let text = headline(bucket, &usb_ok(), &json!({}), &CTX);
            assert!(text.starts_with(prefix), "{bucket:?}: {text}");
            assert!(advice(bucket, &usb_ok(), &CTX).is_some() != bucket.is_reachable());
        }
    }

    #[test]
    fn a_refused_device_node_is_the_permission_row() {
        let visa = json!({
            "idn": "",
            "error": "[Errno 13] Permission denied: lagerd may not open /dev/bus/usb/001/004 for USB0::0x05e6::0x2281::4587429::INSTR",
            "error_class": "other",
        });
        let c = classify(&usb_ok(), &visa, &json!({}), &CTX);
        assert_eq!(c.bucket, Bucket::Permission);
        assert_eq!(c.bucket.tone(), Tone::Red);
        assert!(c.headline.contains("udev rules"), "{}", c.headline);
        assert_eq!(
            c.advice.as_deref(),
            Some("Install them with `lager update --box bench-3` (image/udev/99-lager-instruments.rules), replug the instrument, then rerun `lager diagnose bat1 --box bench-3`.")
        );
        // A bare "permission denied" (a file, HTTP) is not blamed on udev.
        let other =
            json!({"idn": "", "error": "Permission denied: /tmp/out.csv", "error_class": "other"});
        assert_eq!(bucket(&usb_ok(), &other, &json!({})), Bucket::Unclear);
    }

    #[test]
    fn holder_labels_accept_string_and_number_pids() {
        let usb = json!({"lsof": [{"command": "python3", "pid": "4121"}, {"command": "lagerd", "pid": 88}, {}]});
        assert_eq!(holder_labels(&usb), ["python3(4121)", "lagerd(88)", "?(?)"]);
        assert!(holder_labels(&json!({"lsof": "x"})).is_empty());
    }
}
