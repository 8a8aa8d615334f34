//! The address a node advertises when none is given: its listen address, or for a wildcard
//! listen (`0.0.0.0`, `[::]`) the address of the interface that routes out, since peers
//! cannot dial a wildcard.

use crate::error::{Error, Result};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Documentation addresses (TEST-NET-2, 2001:db8::/32), only used to ask the kernel which
/// interface routes out: a UDP "connect" sends nothing.
const PROBE_V4: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 9);
const PROBE_V6: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    9,
);

/// The source address the kernel would use towards `to`, unless loopback or unspecified.
fn route_source(to: SocketAddr) -> Option<std::net::IpAddr> {
    let any: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect(to).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// `scheme://<listen>`, or for a wildcard listen the outbound interface address with the
/// listen port (IPv6 first for `[::]`, then IPv4, which a dual-stack socket also serves).
/// Without one, an error asking for an explicit advertise address.
pub(crate) fn default_advertise(local: SocketAddr, scheme: &str) -> Result<String> {
    if !local.ip().is_unspecified() {
        return Ok(format!("{scheme}://{local}"));
    }
    let ip = if local.is_ipv6() {
        route_source(PROBE_V6).or_else(|| route_source(PROBE_V4))
    } else {
        route_source(PROBE_V4)
    };
    let ip = ip.ok_or_else(|| {
        Error::Config(format!(
            "listening on {local} (every interface), peers need an address to dial and no \
             interface routes out: give one with --advertise HOST:PORT"
        ))
    })?;
    let addr = format!("{scheme}://{}", SocketAddr::new(ip, local.port()));
    tracing::info!(listen = %local, advertise = %addr, "advertising the address of the interface that routes out (--advertise overrides)");
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_listen_address_is_advertised_as_it_is() {
        let local: SocketAddr = "127.0.0.1:7100".parse().unwrap();
        assert_eq!(
            default_advertise(local, "ws").unwrap(),
            "ws://127.0.0.1:7100"
        );
        let local: SocketAddr = "[::1]:7100".parse().unwrap();
        assert_eq!(default_advertise(local, "wss").unwrap(), "wss://[::1]:7100");
    }
}
