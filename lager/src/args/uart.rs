//! `lager uart` (console.md §4) as typed, and validated into [`UartOpts`].

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use super::{Command, EarlyExit};

/// Watch a device's serial console, or type on it with -i.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "uart",
    note = "The box captures every uart net from the moment it starts, so nothing the\n\
            device prints is lost: --from-start shows what it still holds (1 MiB by\n\
            default), even bytes printed while nobody watched. Any number of people and\n\
            scripts can watch a console; one at a time types (-i). In -i mode the\n\
            terminal is raw, Enter sends the net's line ending and Ctrl-] quits.\n\
            `lager uart NET serial-port` prints the port's device path.\n\
            Exit status: 0 when you quit, 1 when the box or the console stream fails,\n\
            2 for a usage error."
)]
pub(super) struct UartArgs {
    /// the uart net (default: lager defaults' uart-net), optionally followed
    /// by serial-port
    #[argh(positional, arg_name = "NET")]
    words: Vec<String>,
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// start this long ago: 30s, 5m, 2h or seconds
    #[argh(option)]
    since: Option<String>,
    /// start with everything the box still holds
    #[argh(switch)]
    from_start: bool,
    /// start with the last N bytes
    #[argh(option)]
    tail: Option<u64>,
    /// begin every line with the time it arrived (UTC)
    #[argh(switch)]
    timestamps: bool,
    /// print one JSON object per chunk of output or event
    #[argh(switch)]
    json: bool,
    /// also append what is shown to this file
    #[argh(option)]
    log: Option<PathBuf>,
    /// type on the console: keystrokes go to the device (Ctrl-] quits)
    #[argh(switch, short = 'i')]
    interactive: bool,
    /// with -i: take over the console from whoever types on it
    #[argh(switch)]
    takeover: bool,
}

/// Where a watch starts (console.md §3's `from`, `since`, `tail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Now,
    FromStart,
    Since(Duration),
    Tail(u64),
}

/// `lager uart`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UartOpts {
    /// `None`: the `uart-net` default, looked up when run.
    pub net: Option<String>,
    pub box_name: Option<String>,
    /// `lager uart NET serial-port`: print the device path and stop.
    pub serial_port: bool,
    pub start: Start,
    pub timestamps: bool,
    pub json: bool,
    pub log: Option<PathBuf>,
    pub interactive: bool,
    pub takeover: bool,
}

fn usage(text: &str) -> EarlyExit {
    EarlyExit::Usage(text.to_string())
}

/// `30s`, `5m`, `2h`, `1.5` (seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last()? {
        (at, 's') => (&text[..at], 1.0),
        (at, 'm') => (&text[..at], 60.0),
        (at, 'h') => (&text[..at], 3600.0),
        _ => (text, 1.0),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0 && value * scale < 1e9)
        .then(|| Duration::from_secs_f64(value * scale))
}

pub(super) fn uart(args: UartArgs) -> Result<Command, EarlyExit> {
    let mut words = args.words.into_iter();
    let (net, serial_port) =
        match (words.next(), words.next(), words.next()) {
            (None, _, _) => (None, false),
            (Some(word), None, _) if word == "serial-port" => (None, true),
            (Some(net), None, _) => (Some(net), false),
            (Some(net), Some(word), None) if word == "serial-port" => (Some(net), true),
            _ => return Err(usage(
                "Usage: lager uart [NET] [--box BOX] [options], or lager uart [NET] serial-port",
            )),
        };
    if net.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(usage("Net name cannot be empty. Usage: lager uart [NET]"));
    }
    let since = match &args.since {
        None => None,
        Some(text) => Some(parse_duration(text).ok_or_else(|| {
            EarlyExit::Usage(format!(
                "Invalid --since '{text}': use seconds or a number with s, m or h, e.g. 30s or 5m"
            ))
        })?),
    };
    let start = match (args.from_start, since, args.tail) {
        (false, None, None) => Start::Now,
        (true, None, None) => Start::FromStart,
        (false, Some(since), None) => Start::Since(since),
        (false, None, Some(tail)) => Start::Tail(tail),
        _ => {
            return Err(usage(
                "Give at most one of --from-start, --since and --tail",
            ))
        }
    };
    if args.takeover && !args.interactive {
        return Err(usage(
            "--takeover only applies with -i (typing on the console)",
        ));
    }
    if args.interactive && args.json {
        return Err(usage(
            "-i and --json do not go together: -i is for a person at a terminal",
        ));
    }
    if serial_port
        && (args.interactive || start != Start::Now || args.timestamps || args.log.is_some())
    {
        return Err(usage(
            "lager uart NET serial-port takes only --box and --json",
        ));
    }
    Ok(Command::Uart(UartOpts {
        net,
        box_name: args.box_name,
        serial_port,
        start,
        timestamps: args.timestamps,
        json: args.json,
        log: args.log,
        interactive: args.interactive,
        takeover: args.takeover,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn opts(args: &[&str]) -> UartOpts {
        let mut full = vec!["uart"];
        full.extend_from_slice(args);
        match parse(&full).expect("parses").command {
            Command::Uart(opts) => opts,
            other => panic!("not uart: {other:?}"),
        }
    }

    fn usage_of(args: &[&str]) -> String {
        let mut full = vec!["uart"];
        full.extend_from_slice(args);
        match parse(&full) {
            Err(EarlyExit::Usage(text)) => text,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn net_start_and_serial_port() {
        let watch = opts(&["console1", "--box", "b", "--since", "30s", "--timestamps"]);
        assert_eq!(watch.net.as_deref(), Some("console1"));
        assert_eq!(watch.start, Start::Since(Duration::from_secs(30)));
        assert!(watch.timestamps && !watch.serial_port);
        assert_eq!(opts(&[]).net, None);
        assert_eq!(opts(&["--from-start"]).start, Start::FromStart);
        assert_eq!(opts(&["c", "--tail", "100"]).start, Start::Tail(100));
        let port = opts(&["c", "serial-port"]);
        assert!(port.serial_port && port.net.as_deref() == Some("c"));
        assert!(opts(&["serial-port"]).net.is_none());
        let typing = opts(&["c", "-i", "--takeover"]);
        assert!(typing.interactive && typing.takeover);
    }

    #[test]
    fn usage_errors() {
        assert!(usage_of(&["--from-start", "--tail", "3"]).contains("at most one"));
        assert!(usage_of(&["--since", "soon"]).contains("Invalid --since"));
        assert!(usage_of(&["--takeover"]).contains("only applies with -i"));
        assert!(usage_of(&["-i", "--json"]).contains("do not go together"));
        assert!(usage_of(&["c", "serial-port", "-i"]).contains("serial-port takes only"));
        assert!(usage_of(&["a", "b"]).starts_with("Usage: lager uart"));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("-1s"), None);
    }
}
