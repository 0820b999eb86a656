//! `lager diagnose NET [--box B] [--type ROLE] [--json]` (diagnose.md §4):
//! find the net's address in the box's saved nets, fetch the three
//! `/diagnose/*` views of it in parallel, print them and one classification
//! (`common::diagnose`) with the next step.
//!
//! Every request goes to the box's lock/status port (or its explicit
//! port): lagerd serves `/diagnose/dispatcher` on the same router as the
//! rest, so there is no `:8080` here. Exit codes: 0 REACHABLE, 2 any other
//! bucket, 1 when nothing could be diagnosed.

use std::process::ExitCode;
use std::time::Duration;

use common::diagnose::{classify, holder_labels, Bucket, Classification, Context, Tone};
use common::truthy::field as truthy;
use serde_json::{json, Value};

use crate::args::DiagnoseOpts;
use crate::boxsel::{passive_check, resolve};
use crate::client::Client;
use crate::config::Config;
use crate::error::{CliError, DiagnoseFailure};
use crate::identity::Identity;
use crate::output::{self, Color, Stream};
use crate::skew;
use crate::transport::{capped, Reply, TransportError, TransportKind};

/// Step 1: the saved-nets lookup gets 5 s.
const NETS_TIMEOUT: Duration = Duration::from_secs(5);
/// Step 4: each endpoint gets 8 s; they run at the same time.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(8);
/// Step 5: what a 404 from a `/diagnose/*` route becomes.
const UNAVAILABLE: &str = "endpoint not served by this box; update the box to use this section";
/// Maps "no answer" at step 1 to the step 2 messages.
fn unreachable(display: &str, error: TransportError) -> DiagnoseFailure {
    match error.kind {
        TransportKind::Refused => DiagnoseFailure::Refused {
            display: display.to_string(),
            addr: error.addr,
        },
        TransportKind::Timeout => DiagnoseFailure::Timeout {
            display: display.to_string(),
            addr: error.addr,
            timeout: error.timeout,
        },
        TransportKind::NoRoute | TransportKind::Dns | TransportKind::Other(_) => {
            DiagnoseFailure::Unreachable {
                display: display.to_string(),
                error,
            }
        }
    }
}

/// The net entry chosen in step 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub role: String,
    pub address: String,
    /// The yellow warning when `--type` matched no entry.
    pub warning: Option<String>,
}

fn str_field<'v>(entry: &'v Value, key: &str) -> Option<&'v str> {
    entry.get(key).and_then(Value::as_str)
}

/// The nets of a `/nets/list` body: a list, or `{"nets": [...]}` (older boxes).
pub fn nets_of(body: &Value) -> Option<&Vec<Value>> {
    match body {
        Value::Array(nets) => Some(nets),
        Value::Object(map) => map.get("nets").and_then(Value::as_array),
        _ => None,
    }
}

/// Step 1: the entries named `net`, narrowed to `role` when one is given
/// and some entry has it (else a warning and all of them); the first wins.
pub fn choose(nets: &[Value], net: &str, role: Option<&str>) -> Result<Chosen, DiagnoseFailure> {
    let named: Vec<&Value> = nets
        .iter()
        .filter(|entry| str_field(entry, "name") == Some(net))
        .collect();
    if named.is_empty() {
        let mut available: Vec<String> = Vec::new();
        for name in nets.iter().filter_map(|entry| str_field(entry, "name")) {
            if !available.iter().any(|a| a == name) {
                available.push(name.to_string());
            }
        }
        return Err(DiagnoseFailure::NetMissing {
            net: net.to_string(),
            available,
        });
    }
    let mut warning = None;
    let mut candidates = named.clone();
    if let Some(role) = role {
        let with_role: Vec<&Value> = named
            .iter()
            .copied()
            .filter(|entry| str_field(entry, "role") == Some(role))
            .collect();
        if with_role.is_empty() {
            let mut roles: Vec<&str> = Vec::new();
            for r in named.iter().filter_map(|entry| str_field(entry, "role")) {
                if !roles.contains(&r) {
                    roles.push(r);
                }
            }
            warning = Some(format!(
                "Net '{net}' exists but no entry has role='{role}'. Available roles: {}",
                roles.join(", ")
            ));
        } else {
            candidates = with_role;
        }
    }
    let entry = candidates[0];
    let address = str_field(entry, "address").map(str::trim).unwrap_or("");
    if address.is_empty() {
        return Err(DiagnoseFailure::NoAddress {
            net: net.to_string(),
        });
    }
    Ok(Chosen {
        role: str_field(entry, "role").unwrap_or("unknown").to_string(),
        address: address.to_string(),
        warning,
    })
}

/// `text` percent-encoded for a query value: everything but RFC 3986's
/// unreserved characters, so `::` and `/` survive any server's parser.
pub fn query_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The first `n` characters of `text`.
fn first_chars(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Step 5: one endpoint's outcome as the value the sections and the
/// classifier read.
pub fn endpoint_result(result: Result<Reply, TransportError>) -> Value {
    let reply = match result {
        Ok(reply) => reply,
        Err(error) => return json!({ "transport_error": error.to_string() }),
    };
    match reply.status {
        404 => json!({ "unavailable": UNAVAILABLE }),
        status if status >= 400 => json!({
            "transport_error": format!("HTTP {status}: {}", first_chars(&reply.body, 200))
        }),
        status => match serde_json::from_str::<Value>(&reply.body) {
            Ok(body) => body,
            Err(e) => json!({
                "transport_error": format!("HTTP {status} with a body that is not JSON ({e}): {}", first_chars(&reply.body, 200))
            }),
        },
    }
}

/// The USB view of an instrument that is not on USB (issue 12: the box's
/// 400 for a TCPIP address was printed raw as a transport error).
pub fn usb_not_applicable(address: &str) -> Option<Value> {
    let kind = match common::addr::Address::parse(address).ok()? {
        common::addr::Address::Usb { .. } => return None,
        common::addr::Address::Socket { .. } => "a TCPIP instrument (reached over the network)",
        common::addr::Address::Serial { .. } => "a serial (ASRL) instrument",
    };
    Some(json!({ "not_applicable": format!("USB checks do not apply to {kind}") }))
}

/// The three views, fetched at the same time, one connection each; the
/// USB view only for a USB instrument.
fn fetch_all(client: &Client, address: &str) -> [Value; 3] {
    let query = query_encode(address);
    let timeout = capped(ENDPOINT_TIMEOUT);
    let usb_applies = usb_not_applicable(address).is_none();
    let paths = [
        usb_applies.then(|| format!("/diagnose/usb?address={query}")),
        Some(format!("/diagnose/visa?address={query}")),
        Some(format!("/diagnose/dispatcher?address={query}")),
    ];
    std::thread::scope(|scope| {
        let handles = paths.each_ref().map(|path| {
            scope.spawn(move || match path {
                Some(path) => endpoint_result(client.get(path, timeout)),
                None => usb_not_applicable(address).unwrap_or(Value::Null),
            })
        });
        handles.map(|handle| {
            handle.join().unwrap_or_else(|_| {
                json!({ "transport_error": "the request thread panicked; rerun with -vv and report it" })
            })
        })
    })
}

/// One printed line and its colour.
pub type Line = (Option<Color>, String);

fn plain(text: String) -> Line {
    (None, text)
}

/// A string field for display: missing, null or empty is `—`.
fn shown(body: &Value, key: &str) -> String {
    match body.get(key) {
        None | Some(Value::Null) => "—".to_string(),
        Some(Value::String(s)) if s.is_empty() => "—".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn usb_lines(usb: &Value) -> Vec<String> {
    let tmc_class = match usb.get("is_usbtmc") {
        None | Some(Value::Null) => "—",
        Some(_) if truthy(usb, "is_usbtmc") => "yes",
        Some(_) => "no",
    };
    let kmod = if truthy(usb, "usbtmc_loaded") {
        "LOADED (problem)"
    } else {
        "not loaded (good)"
    };
    let holders = holder_labels(usb);
    let holders = if holders.is_empty() {
        "no holders".to_string()
    } else {
        holders.join(", ")
    };
    let dmesg = usb.get("dmesg_tail").and_then(Value::as_str).unwrap_or("");
    let dmesg = if dmesg.is_empty() {
        "(empty)"
    } else {
        first_chars(dmesg, 300)
    };
    vec![
        format!("enumerated:   {}", shown(usb, "enumerated")),
        format!("sysfs:        {}", shown(usb, "sysfs_path")),
        format!("device:       {}", shown(usb, "device_path")),
        format!("usb-tmc class: {tmc_class}"),
        format!("usbtmc kmod:  {kmod}"),
        format!("lsof:         {holders}"),
        format!("dmesg tail:   {dmesg}"),
    ]
}

fn visa_lines(visa: &Value) -> Vec<String> {
    let elapsed = match visa.get("elapsed_ms") {
        Some(Value::Number(ms)) => ms.to_string(),
        _ => "?".to_string(),
    };
    let skipped = if truthy(visa, "skipped") {
        match visa.get("reason").and_then(Value::as_str) {
            Some(reason) if !reason.is_empty() => reason.to_string(),
            _ => "yes".to_string(),
        }
    } else {
        "—".to_string()
    };
    vec![
        format!("idn:         {}", shown(visa, "idn")),
        format!("elapsed:     {elapsed} ms"),
        format!("error:       {}", shown(visa, "error")),
        format!("error_class: {}", shown(visa, "error_class")),
        format!("skipped:     {skipped}"),
    ]
}

fn dispatcher_lines(dispatcher: &Value) -> Vec<String> {
    let drivers: Vec<String> = dispatcher
        .get("cached_drivers")
        .and_then(Value::as_array)
        .map(|drivers| {
            drivers
                .iter()
                .map(|d| format!("{}({})", shown(d, "device_name"), shown(d, "driver_class")))
                .collect()
        })
        .unwrap_or_default();
    let drivers = if drivers.is_empty() {
        "—".to_string()
    } else {
        drivers.join(", ")
    };
    let pool = match dispatcher.get("shared_pool_size").and_then(Value::as_u64) {
        Some(1) => "1 entry".to_string(),
        Some(n) => format!("{n} entries"),
        None => "? entries".to_string(),
    };
    vec![
        format!("cached_session:  {}", shown(dispatcher, "cached_session")),
        format!("cached_drivers:  {drivers}"),
        format!("shared_pool:     {pool}"),
    ]
}

/// Step 6: a blank line, `== title ==`, then the body's lines indented by
/// three spaces (or its unavailable / transport error line).
pub fn section(title: &str, body: &Value, lines: fn(&Value) -> Vec<String>) -> Vec<Line> {
    let mut out = vec![plain(String::new()), plain(format!("== {title} =="))];
    if let Some(text) = body.get("unavailable") {
        out.push((Some(Color::Yellow), format!("   {}", value_text(text))));
    } else if let Some(text) = body.get("not_applicable") {
        out.push(plain(format!("   {}", value_text(text))));
    } else if let Some(text) = body.get("transport_error") {
        out.push((
            Some(Color::Red),
            format!("   transport error: {}", value_text(text)),
        ));
    } else {
        for line in lines(body) {
            out.extend(line.split('\n').map(|l| plain(format!("   {l}"))));
        }
    }
    out
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The three sections, in the spec's order.
pub fn sections(usb: &Value, visa: &Value, dispatcher: &Value) -> Vec<Line> {
    let mut out = section("USB (host-side)", usb, usb_lines);
    out.extend(section("VISA (instrument-side)", visa, visa_lines));
    out.extend(section(
        "Dispatcher (hw_service in-process)",
        dispatcher,
        dispatcher_lines,
    ));
    out
}

fn color_of(tone: Tone) -> Color {
    match tone {
        Tone::Red => Color::Red,
        Tone::Yellow => Color::Yellow,
        Tone::Green => Color::Green,
    }
}

/// Exit status of a printed bucket (step 8).
pub fn exit_code(bucket: Bucket) -> ExitCode {
    if bucket.is_reachable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// The `--json` object.
pub fn json_report(
    ctx: &Context,
    address: &str,
    classification: &Classification,
    views: [&Value; 3],
) -> Value {
    let mut report = json!({
        "box": ctx.box_name,
        "net": ctx.net,
        "role": ctx.role,
        "address": address,
        "bucket": classification.bucket.as_str(),
        "headline": classification.headline,
        "usb": views[0],
        "visa": views[1],
        "dispatcher": views[2],
    });
    if let Some(advice) = &classification.advice {
        report["advice"] = json!(advice);
    }
    report
}

/// Roles whose diagnosis is not the USB-TMC path (step 4): J-Link probes
/// and USB hubs have their own endpoints, not served yet.
fn other_branch(role: &str, net: &str) -> Option<Classification> {
    matches!(role, "debug" | "usb").then(|| Classification {
        bucket: Bucket::Unclear,
        headline: format!(
            "UNCLEAR — `lager diagnose` does not cover {role} nets yet (they are not USB-TMC instruments); check `lager {role} {net} ...` directly."
        ),
        advice: Some(format!("Check the net directly with `lager {role} {net} ...`.")),
    })
}

pub fn run(opts: &DiagnoseOpts) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let target = resolve(&config, opts.box_name.as_deref())?;
    let identity = Identity::current(config.default_str("user").as_deref());
    let client = target.lock_client();
    let display = target.display.clone();
    let fail = |failure| CliError::CannotDiagnose(failure);
    if let Some(error) = passive_check(&target, &client, &identity)? {
        return Err(fail(unreachable(&display, error)));
    }
    skew::check(&client, &display);

    let reply = client
        .get("/nets/list", capped(NETS_TIMEOUT))
        .map_err(|error| fail(unreachable(&display, error)))?;
    if reply.status != 200 {
        return Err(fail(DiagnoseFailure::NetsStatus {
            display,
            addr: client.addr().to_string(),
            status: reply.status,
        }));
    }
    let body = reply.json().unwrap_or(Value::Null);
    let nets = nets_of(&body).ok_or_else(|| {
        fail(DiagnoseFailure::NetsMalformed {
            display: display.clone(),
            addr: client.addr().to_string(),
        })
    })?;
    let chosen = choose(nets, &opts.net, opts.role.as_deref()).map_err(fail)?;
    if let Some(warning) = &chosen.warning {
        output::warn(warning);
    }
    let ctx = Context {
        box_name: &display,
        net: &opts.net,
        role: &chosen.role,
    };

    let color = output::colored(Stream::Stdout);
    if !opts.json {
        println!("lager diagnose — {display} → {}", opts.net);
        println!("  NetType: {}    address: {}", chosen.role, chosen.address);
    }
    // A console is a serial port lagerd owns, not a USB-TMC instrument.
    if chosen.role == "uart" {
        return super::uart::diagnose(&client, &ctx, &chosen.address, opts.json);
    }
    let (classification, views) = match other_branch(&chosen.role, &opts.net) {
        Some(classification) => (classification, None),
        None => {
            let views = fetch_all(&client, &chosen.address);
            let classification = classify(&views[0], &views[1], &views[2], &ctx);
            (classification, Some(views))
        }
    };
    let code = exit_code(classification.bucket);
    if opts.json {
        let none = json!({ "unavailable": "not fetched for this role" });
        let view = |i: usize| views.as_ref().map_or(&none, |v| &v[i]);
        let report = json_report(
            &ctx,
            &chosen.address,
            &classification,
            [view(0), view(1), view(2)],
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string())
        );
        return Ok(code);
    }
    let mut out = String::new();
    if let Some(views) = &views {
        for (line_color, text) in sections(&views[0], &views[1], &views[2]) {
            match line_color {
                Some(c) => out.push_str(&output::paint_if(color, c, &text)),
                None => out.push_str(&text),
            }
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(&output::paint_bold_if(
        color,
        color_of(classification.bucket.tone()),
        &format!("Classification: {}", classification.headline),
    ));
    println!("{out}");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|(_, t)| t.as_str()).collect()
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            query_encode("USB0::0x05E6::0x2281::4587429::INSTR"),
            "USB0%3A%3A0x05E6%3A%3A0x2281%3A%3A4587429%3A%3AINSTR"
        );
        assert_eq!(query_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn choose_by_name_then_role() {
        let nets = vec![
            json!({"name": "supply1", "role": "power-supply", "address": "USB0::0x05E6::0x2281::1::INSTR"}),
            json!({"name": "k", "role": "power-supply", "address": "A1"}),
            json!({"name": "k", "role": "battery", "address": "A2"}),
        ];
        let auto = choose(&nets, "k", None).expect("found");
        assert_eq!(
            (auto.role.as_str(), auto.address.as_str()),
            ("power-supply", "A1")
        );
        assert_eq!(auto.warning, None);
        let battery = choose(&nets, "k", Some("battery")).expect("found");
        assert_eq!(battery.address, "A2");
        let scope = choose(&nets, "k", Some("scope")).expect("found");
        assert_eq!(scope.address, "A1");
        assert_eq!(
            scope.warning.as_deref(),
            Some("Net 'k' exists but no entry has role='scope'. Available roles: power-supply, battery")
        );
        let missing = choose(&nets, "nope", None).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "Net 'nope' not found on box. Available: supply1, k"
        );
        let no_addr = choose(&[json!({"name": "x", "role": "scope"})], "x", None).unwrap_err();
        assert!(no_addr
            .to_string()
            .starts_with("Net 'x' has no instrument address"));
    }

    #[test]
    fn available_names_stop_at_ten() {
        let nets: Vec<Value> = (0..12).map(|i| json!({"name": format!("n{i}")})).collect();
        assert_eq!(
            choose(&nets, "x", None).unwrap_err().to_string(),
            "Net 'x' not found on box. Available: n0, n1, n2, n3, n4, n5, n6, n7, n8, n9..."
        );
        assert_eq!(
            choose(&[], "x", None).unwrap_err().to_string(),
            "Net 'x' not found on box. Available: (none)"
        );
    }

    #[test]
    fn nets_body_forms() {
        assert_eq!(nets_of(&json!([{"name": "a"}])).map(Vec::len), Some(1));
        assert_eq!(nets_of(&json!({"nets": []})).map(Vec::len), Some(0));
        assert_eq!(nets_of(&json!({"other": []})), None);
        assert_eq!(nets_of(&json!("x")), None);
    }

    #[test]
    fn step_2_messages() {
        let refused = DiagnoseFailure::Refused {
            display: "b".into(),
            addr: "10.0.0.5:9100".into(),
        };
        assert_eq!(
            refused.to_string(),
            "Box 'b' unreachable at 10.0.0.5:9100 (connection refused). The lager container may be stopped. Check with:\n  lager ssh --box b -- \"sudo docker ps\""
        );
        let timeout = DiagnoseFailure::Timeout {
            display: "b".into(),
            addr: "10.0.0.5:9000".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            timeout.to_string(),
            "Box 'b' did not respond within 5s at 10.0.0.5:9000. Check network/Tailscale connectivity, then `lager hello --box b`."
        );
        assert_eq!(
            CliError::CannotDiagnose(timeout).to_string().lines().last(),
            Some("Cannot diagnose without a VISA address.")
        );
    }

    fn reply(status: u16, body: &str) -> Result<Reply, TransportError> {
        Ok(Reply {
            status,
            body: body.to_string(),
        })
    }

    #[test]
    fn endpoint_results() {
        assert_eq!(
            endpoint_result(reply(404, "nope")),
            json!({"unavailable": UNAVAILABLE})
        );
        let long = "x".repeat(300);
        assert_eq!(
            endpoint_result(reply(500, &long)),
            json!({"transport_error": format!("HTTP 500: {}", "x".repeat(200))})
        );
        // A 200 carrying an error is still the body.
        assert_eq!(
            endpoint_result(reply(200, r#"{"error":"e"}"#)),
            json!({"error": "e"})
        );
        let bad = endpoint_result(reply(200, "<html>"));
        assert!(bad["transport_error"]
            .as_str()
            .is_some_and(|t| t.starts_with("HTTP 200 with a body that is not JSON")));
        let err = endpoint_result(Err(TransportError {
            kind: TransportKind::Refused,
            addr: "h:1".into(),
            timeout: Duration::from_secs(8),
            connected: false,
        }));
        assert!(err["transport_error"]
            .as_str()
            .is_some_and(|t| t.starts_with("connection refused at h:1")));
    }

    #[test]
    fn sections_render_every_field() {
        let usb = json!({
            "enumerated": true, "sysfs_path": "/sys/bus/usb/devices/1-1.4",
            "device_path": null, "is_usbtmc": true, "usbtmc_loaded": false,
            "lsof": [{"command": "python3", "pid": "41", "user": "pi"}, {"command": "lagerd", "pid": "7"}],
            "dmesg_tail": "usb 1-1.4: new device\nusb 1-1.4: reset"
        });
        let visa = json!({"address": "A", "error": "[Errno 16] Resource busy", "error_class": "busy", "elapsed_ms": 12});
        let dispatcher =
            json!({"cached_session": false, "cached_drivers": [], "shared_pool_size": 0});
        let lines = sections(&usb, &visa, &dispatcher);
        assert_eq!(
            texts(&lines).join("\n"),
            "\n== USB (host-side) ==\n\
             \x20  enumerated:   true\n\
             \x20  sysfs:        /sys/bus/usb/devices/1-1.4\n\
             \x20  device:       —\n\
             \x20  usb-tmc class: yes\n\
             \x20  usbtmc kmod:  not loaded (good)\n\
             \x20  lsof:         python3(41), lagerd(7)\n\
             \x20  dmesg tail:   usb 1-1.4: new device\n\
             \x20  usb 1-1.4: reset\n\
             \n== VISA (instrument-side) ==\n\
             \x20  idn:         —\n\
             \x20  elapsed:     12 ms\n\
             \x20  error:       [Errno 16] Resource busy\n\
             \x20  error_class: busy\n\
             \x20  skipped:     —\n\
             \n== Dispatcher (hw_service in-process) ==\n\
             \x20  cached_session:  false\n\
             \x20  cached_drivers:  —\n\
             \x20  shared_pool:     0 entries"
        );
        assert!(lines.iter().all(|(c, _)| c.is_none()));
    }

    #[test]
    fn usb_checks_apply_only_to_usb_addresses() {
        assert_eq!(
            usb_not_applicable("USB0::0x05E6::0x2281::4587429::INSTR"),
            None
        );
        assert_eq!(
            usb_not_applicable("not an address"),
            None,
            "the box says why"
        );
        let serial = usb_not_applicable("ASRL/dev/ttyUSB0::INSTR").unwrap();
        assert_eq!(
            texts(&section("USB (host-side)", &serial, usb_lines)),
            [
                "",
                "== USB (host-side) ==",
                "   USB checks do not apply to a serial (ASRL) instrument"
            ]
        );
    }

    #[test]
    fn sections_for_missing_and_failed_views() {
        let usb = json!({"unavailable": UNAVAILABLE});
        let visa = json!({"skipped": true, "reason": "held"});
        let dispatcher = json!({"transport_error": "HTTP 500: boom"});
        let lines = sections(&usb, &visa, &dispatcher);
        assert_eq!(lines[2], (Some(Color::Yellow), format!("   {UNAVAILABLE}")));
        assert_eq!(
            lines.last(),
            Some(&(
                Some(Color::Red),
                "   transport error: HTTP 500: boom".to_string()
            ))
        );
        let text = texts(&lines).join("\n");
        assert!(text.contains("   elapsed:     ? ms\n"), "{text}");
        assert!(text.contains("   skipped:     held\n"), "{text}");
        let usb =
            json!({"enumerated": false, "usbtmc_loaded": true, "dmesg_tail": "é".repeat(400)});
        let text = texts(&section("U", &usb, usb_lines)).join("\n");
        assert!(text.contains("   usb-tmc class: —\n"), "{text}");
        assert!(
            text.contains("   usbtmc kmod:  LOADED (problem)\n"),
            "{text}"
        );
        assert!(text.contains("   lsof:         no holders\n"), "{text}");
        assert!(
            text.ends_with(&format!("   dmesg tail:   {}", "é".repeat(300))),
            "{text}"
        );
        let pool = json!({"cached_session": true, "cached_drivers": [{"device_name": "bat1", "driver_class": "KeithleyBattery"}], "shared_pool_size": 1});
        let text = texts(&section("D", &pool, dispatcher_lines)).join("\n");
        assert!(text.ends_with("   cached_session:  true\n   cached_drivers:  bat1(KeithleyBattery)\n   shared_pool:     1 entry"), "{text}");
    }

    #[test]
    fn json_report_shape() {
        let ctx = Context {
            box_name: "b",
            net: "n",
            role: "battery",
        };
        let usb = json!({"enumerated": false});
        let visa = json!({});
        let disp = json!({});
        let classification = classify(&usb, &visa, &disp, &ctx);
        let report = json_report(&ctx, "A", &classification, [&usb, &visa, &disp]);
        assert_eq!(report["bucket"], "not_enumerated");
        assert_eq!(report["usb"], usb);
        assert!(report["headline"]
            .as_str()
            .is_some_and(|h| h.starts_with("NOT ENUMERATED")));
        assert!(report.get("advice").is_some());
        let reachable = classify(&json!({}), &json!({"idn": "X"}), &disp, &ctx);
        let report = json_report(&ctx, "A", &reachable, [&usb, &visa, &disp]);
        assert_eq!(report.get("advice"), None);
        assert_eq!(exit_code(reachable.bucket), ExitCode::SUCCESS);
        assert_eq!(exit_code(Bucket::Unclear), ExitCode::from(2));
    }
}
