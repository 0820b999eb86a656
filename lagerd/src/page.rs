//! The status page at `/` (fleet.md §2) and its data, `/overview`.
//!
//! One renderer, here: `/` is a whole page whose `<main>` is rendered on
//! the server, so it reads fine without JavaScript (a `<noscript>` refresh
//! keeps it current). The script in `assets/status.js` only fetches
//! `/?part=main` again every 2 s and paints live readings from the monitor
//! streams. The assets are real files embedded at build time; the page
//! makes no request to any other host and changes nothing on the box.

use common::holder::format_lock_user;
use serde_json::{json, Value};

const TEMPLATE: &str = include_str!("../assets/status.html");
const CSS: &str = include_str!("../assets/status.css");
const JS: &str = include_str!("../assets/status.js");

/// The whole page for the `/overview` data.
pub fn render_page(overview: &Value) -> String {
    let name = overview["box"]["name"].as_str().unwrap_or("box");
    let holder = match overview["lock"]["holder"].as_str() {
        Some(holder) => format!("locked by {holder}"),
        None => "free".to_string(),
    };
    TEMPLATE
        .replace("{{title}}", &escape(&format!("{name}: {holder} · lager")))
        .replace("{{css}}", CSS)
        .replace("{{js}}", JS)
        .replace("{{main}}", &render_main(overview))
}

/// The contents of `<main>`: what `/?part=main` answers.
pub fn render_main(overview: &Value) -> String {
    let mut out = String::with_capacity(4096);
    let info = &overview["box"];
    out.push_str(&format!(
        "<header><h1 id=\"box-name\">{}</h1><span class=\"dim\">lagerd <span id=\"version\">{}</span></span>{}</header>\n",
        text(&info["name"]),
        text(&info["version"]),
        info["box_id"]
            .as_str()
            .map(|id| format!("<span class=\"dim\">box id {}</span>", escape(id)))
            .unwrap_or_default()
    ));
    render_lock(&mut out, overview);
    render_nets(&mut out, &overview["nets"], &overview["health_state"]);
    render_jobs(&mut out, &overview["jobs"]);
    render_consoles(&mut out, &overview["consoles"]);
    out
}

fn render_lock(out: &mut String, overview: &Value) {
    let lock = &overview["lock"];
    out.push_str("<section id=\"lock\"><h2>Lock</h2>\n");
    match lock["holder"].as_str() {
        Some(holder) => {
            out.push_str(&format!(
                "<div class=\"holder\" id=\"holder\">{}</div>\n<div class=\"dim\">{} since <time id=\"locked-at\">{}</time> ({}){}</div>\n",
                escape(holder),
                text(&lock["holder_type"]),
                text(&lock["locked_at"]),
                duration(lock["held_seconds"].as_f64().unwrap_or(0.0)),
                match lock["ttl_seconds"].as_u64() {
                    Some(ttl) => format!(", TTL {}", duration(ttl as f64)),
                    None => ", no expiry".to_string(),
                }
            ));
        }
        None => out.push_str("<div class=\"holder ok\" id=\"holder\">free</div>\n"),
    }
    out.push_str("<h2 style=\"margin-top:10px\">Queue</h2>\n");
    match overview["queue"].as_array().filter(|q| !q.is_empty()) {
        Some(queue) => {
            out.push_str("<ol id=\"queue\">");
            for waiter in queue {
                out.push_str(&format!("<li>{}</li>", text(waiter)));
            }
            out.push_str("</ol>\n");
        }
        None => out.push_str("<div class=\"dim\" id=\"queue\">nobody waiting</div>\n"),
    }
    out.push_str("</section>\n");
}

fn render_nets(out: &mut String, nets: &Value, state: &Value) {
    out.push_str(&format!(
        "<section id=\"nets\"><h2>Nets <span class=\"{}\">{}</span></h2>\n",
        match state.as_str() {
            Some("ok") => "ok",
            Some("degraded") => "bad",
            _ => "dim",
        },
        text(state)
    ));
    let Some(nets) = nets.as_array().filter(|n| !n.is_empty()) else {
        out.push_str("<div class=\"dim\">no nets (add one: lager nets add)</div></section>\n");
        return;
    };
    out.push_str("<table><tr><th>net</th><th>health</th><th>reading</th></tr>\n");
    for net in nets {
        let name = net["name"].as_str().unwrap_or_default();
        let role = net["role"].as_str().unwrap_or_default();
        let health = match (net["bucket"].as_str(), net["ok"].as_bool()) {
            (Some(bucket), Some(true)) => format!("<span class=\"ok\">{}</span>", escape(bucket)),
            (Some(bucket), _) => format!("<span class=\"bad\">{}</span>", escape(bucket)),
            (None, _) => "<span class=\"dim\">not checked yet</span>".to_string(),
        };
        let reading = if matches!(role, "power-supply" | "battery") {
            format!(
                "<span class=\"reading\" data-reading=\"{0}\" data-role=\"{1}\">—</span>",
                escape(name),
                escape(role)
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "<tr class=\"net\" data-net=\"{0}\"><td>{0}<div class=\"dim\">{1} · {2}</div></td><td>{3}</td><td>{4}</td></tr>\n",
            escape(name),
            escape(role),
            text(&net["instrument"]),
            health,
            reading
        ));
    }
    out.push_str("</table></section>\n");
}

fn render_jobs(out: &mut String, jobs: &Value) {
    out.push_str("<section id=\"jobs\" class=\"wide\"><h2>Jobs</h2>\n");
    let Some(jobs) = jobs.as_array().filter(|j| !j.is_empty()) else {
        out.push_str("<div class=\"dim\">no jobs since lagerd started</div></section>\n");
        return;
    };
    for job in jobs {
        let status = match (job["status"].as_str(), job["outcome"].as_str()) {
            (Some("running"), _) => "<span class=\"ok\">running</span>".to_string(),
            (_, Some("exit0")) => "finished, exit 0".to_string(),
            (_, Some(outcome)) => format!(
                "<span class=\"bad\">{} ({})</span>",
                escape(outcome),
                text(&job["returncode"])
            ),
            _ => text(&job["status"]),
        };
        out.push_str(&format!(
            "<div class=\"job\" data-job=\"{0}\"><div><b>{1}</b> · {2} · pid {3} · since {4}</div><div class=\"dim\">{0}</div><pre>{5}</pre></div>\n",
            text(&job["id"]),
            if job["detached"] == true { "detached" } else { "attached" },
            status,
            text(&job["pid"]),
            text(&job["started"]),
            text(&job["tail"]),
        ));
    }
    out.push_str("</section>\n");
}

/// Issue 15 (serial consoles): each console as `{"net", "tail", ...}`;
/// the section is rendered only once a box has consoles.
fn render_consoles(out: &mut String, consoles: &Value) {
    let Some(consoles) = consoles.as_array().filter(|c| !c.is_empty()) else {
        return;
    };
    out.push_str("<section id=\"consoles\" class=\"wide\"><h2>Consoles</h2>\n");
    for console in consoles {
        out.push_str(&format!(
            "<div class=\"job\" data-console=\"{0}\"><b>{0}</b> <span class=\"dim\">{1}</span><pre>{2}</pre></div>\n",
            text(&console["net"]),
            text(&console["status"]),
            text(&console["tail"]),
        ));
    }
    out.push_str("</section>\n");
}

/// `holder` as `lager boxes` shows it, the raw `user` beside it.
pub fn lock_json(record: Option<&serde_json::Map<String, Value>>, held_secs: f64) -> Value {
    let Some(record) = record else {
        return json!({"locked": false, "holder": null});
    };
    let user = record.get("user").and_then(Value::as_str).unwrap_or("");
    json!({
        "locked": true,
        "holder": format_lock_user(user),
        "user": user,
        "holder_type": record.get("holder_type").and_then(Value::as_str).unwrap_or("user"),
        "locked_at": record.get("locked_at"),
        "ttl_seconds": record.get("ttl_seconds"),
        "held_seconds": held_secs.floor(),
    })
}

/// `45s`, `12m`, `3h 5m`, `2d 4h`.
fn duration(secs: f64) -> String {
    let secs = secs.max(0.0) as u64;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h {}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d {}h", secs / 86_400, secs / 3600 % 24),
    }
}

/// A JSON value as escaped text (strings without their quotes).
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => escape(s),
        Value::Null => String::new(),
        other => escape(&other.to_string()),
    }
}

fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overview() -> Value {
        json!({
            "box": {"name": "bench<3>", "version": "0.61.0", "box_id": null},
            "lock": lock_json(
                json!({"locked": true, "user": "ci:github:org/repo#99-1/test@runner:7",
                       "holder_type": "ci", "locked_at": "2025-01-01T00:00:00Z",
                       "ttl_seconds": 1800}).as_object(),
                125.0,
            ),
            "queue": ["alice", "<script>"],
            "health_state": "ok",
            "nets": [{"name": "supply1", "role": "power-supply", "instrument": "Keithley_2281S",
                      "bucket": "reachable", "ok": true}],
            "jobs": [{"id": "j1", "pid": 5, "detached": false, "started": "x", "status": "finished",
                      "outcome": "exit_nonzero", "returncode": 3, "tail": "a < b\n"}],
            "consoles": [],
        })
    }

    #[test]
    fn page_shows_holder_queue_nets_and_jobs_escaped() {
        let page = render_page(&overview());
        assert!(page.contains("github org/repo run 99 job test on runner"));
        assert!(page.contains("<li>&lt;script&gt;</li>"), "queue escaped");
        assert!(page.contains("bench&lt;3&gt;"));
        assert!(page.contains("data-reading=\"supply1\""));
        assert!(page.contains("exit_nonzero (3)"));
        assert!(page.contains("a &lt; b"));
        assert!(page.contains("2m"), "held for 125 s");
        assert!(!page.contains("{{"), "every placeholder filled");
        assert!(!page.contains("id=\"consoles\""), "no consoles yet");
    }

    #[test]
    fn the_page_never_names_another_host() {
        let page = render_page(&overview());
        for needle in ["http://", "https://", "//cdn", "src=\"//"] {
            assert!(!page.contains(needle), "{needle} in the page");
        }
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(5.0), "5s");
        assert_eq!(duration(125.0), "2m");
        assert_eq!(duration(3720.0), "1h 2m");
        assert_eq!(duration(90_000.0), "1d 1h");
    }
}
