//! The version-skew warning (diagnose.md §5): once per process per box
//! address, tell the user when the box runs an older lagerd than this CLI.
//! Fail-open: anything unexpected is silent.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use common::version::{box_is_behind, usable};

use crate::client::Client;
use crate::output;
use crate::transport::{capped, Reply, TransportError};

const SKEW_TIMEOUT: Duration = Duration::from_millis(1500);

/// Records `addr` as checked; `false` if it already was. Recorded before
/// the fetch, so a failed check is not retried in this process.
fn first_time(addr: &str) -> bool {
    static CHECKED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    checked
        .get_or_insert_with(HashSet::new)
        .insert(addr.to_string())
}

/// Fetches `/status` (1.5 s) and warns if the box is behind; at most once
/// per address per process.
pub fn check(client: &Client, display: &str) {
    if !first_time(client.addr()) {
        return;
    }
    let status = client.get("/status", capped(SKEW_TIMEOUT));
    if let Some(text) = warning(display, &status, common::VERSION) {
        output::warn(&text);
    }
}

/// Like [`check`], but reuses a `/status` answer the caller already has.
pub fn check_with(client: &Client, display: &str, status: &Result<Reply, TransportError>) {
    if first_time(client.addr()) {
        if let Some(text) = warning(display, status, common::VERSION) {
            output::warn(&text);
        }
    }
}

/// The warning text for a `/status` outcome, if one is due.
pub fn warning(
    display: &str,
    status: &Result<Reply, TransportError>,
    cli_version: &str,
) -> Option<String> {
    let reply = status.as_ref().ok()?;
    match reply.status {
        404 => Some(format!(
            "\n[warning] Box {display} does not report a version on its :9000 API — it is likely running an image too old for this CLI.\n          Some commands may fail. To update the box:\n          lager box update --box {display}\n"
        )),
        200 => {
            let body = reply.json()?;
            let reported = body
                .get("version")
                .and_then(|v| v.as_str())
                .and_then(|v| usable(Some(v)))
                .or_else(|| body.get("box_version").and_then(|v| v.as_str()).and_then(|v| usable(Some(v))))?;
            box_is_behind(cli_version, reported).then(|| {
                format!(
                    "\n[warning] Box {display} is on lager {reported}; CLI is on {cli_version}.\n          Some commands may behave unexpectedly. To update the box:\n          lager box update --box {display}\n"
                )
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Result<Reply, TransportError> {
        Ok(Reply {
            status,
            body: body.to_string(),
        })
    }

    #[test]
    fn warns_when_box_is_behind() {
        let text = warning("b1", &reply(200, r#"{"version":"0.1.0"}"#), "0.2.0").expect("warns");
        assert_eq!(
            text,
            "\n[warning] Box b1 is on lager 0.1.0; CLI is on 0.2.0.\n          Some commands may behave unexpectedly. To update the box:\n          lager box update --box b1\n"
        );
        let text = warning(
            "b1",
            &reply(200, r#"{"version":"unknown","box_version":"0.0.5"}"#),
            "0.1.0",
        );
        assert!(text
            .expect("falls back to box_version")
            .contains("lager 0.0.5"));
    }

    #[test]
    fn silent_when_current_ahead_or_odd() {
        assert_eq!(
            warning("b", &reply(200, r#"{"version":"0.1.0"}"#), "0.1.0"),
            None
        );
        assert_eq!(
            warning("b", &reply(200, r#"{"version":"0.3.0"}"#), "0.1.0"),
            None
        );
        assert_eq!(warning("b", &reply(200, "not json"), "0.2.0"), None);
        assert_eq!(warning("b", &reply(500, ""), "0.2.0"), None);
        assert_eq!(
            warning("b", &reply(200, r#"{"version":"unknown"}"#), "0.2.0"),
            None
        );
    }

    #[test]
    fn old_image_404() {
        let text = warning("b", &reply(404, ""), "0.1.0").expect("warns");
        assert!(
            text.contains("does not report a version on its :9000 API"),
            "{text}"
        );
    }

    #[test]
    fn once_per_address() {
        assert!(first_time("10.9.9.9:9000"));
        assert!(!first_time("10.9.9.9:9000"));
        assert!(first_time("10.9.9.9:9001"));
    }
}
