//! The loopback guard. These tools hammer a server as fast as they can, so
//! they only ever talk to this machine: 127.0.0.0/8 or ::1, nothing else,
//! not even a private-range address that happens to be ours.

use std::net::{IpAddr, SocketAddr};

use crate::{fail, BenchError};

/// True for 127.0.0.0/8 and ::1 only (a v4-mapped ::ffff:127.x is refused
/// too: it is not what anyone means to type).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// Parses `host:port` without DNS (`localhost` means 127.0.0.1) and refuses
/// anything that is not loopback.
pub fn loopback_addr(text: &str) -> Result<SocketAddr, BenchError> {
    let parsed = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match text.strip_prefix("localhost:").map(str::parse::<u16>) {
            Some(Ok(port)) => SocketAddr::from(([127, 0, 0, 1], port)),
            _ => {
                return Err(fail!(
                    "invalid address {text:?}: expected IP:PORT on loopback, e.g. 127.0.0.1:9000 or [::1]:9000"
                ))
            }
        },
    };
    check_loopback(parsed)?;
    Ok(parsed)
}

/// Refuses a non-loopback address with a message saying why.
pub fn check_loopback(addr: SocketAddr) -> Result<(), BenchError> {
    if is_loopback(addr.ip()) {
        Ok(())
    } else {
        Err(fail!(
            "refusing to load {addr}: benchmarks only target loopback (127.0.0.0/8 or ::1) on this machine"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        for good in [
            "127.0.0.1:9000",
            "127.9.8.7:1",
            "[::1]:9000",
            "localhost:5000",
        ] {
            assert!(loopback_addr(good).is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.5:9000",
            "192.168.1.2:80",
            "0.0.0.0:9000",
            "[::]:9000",
            "[::ffff:127.0.0.1]:9000",
            "[fe80::1]:9000",
            "example.com:80",
            "127.0.0.1",
        ] {
            assert!(loopback_addr(bad).is_err(), "{bad}");
        }
    }
}
