//! The box's routing table, read and trimmed from inside.
//!
//! [`default_routes`] reads `/proc/net/route` and `/proc/net/ipv6_route` and names every
//! route that leads off the box's own networks. `openmono seal-routes` ([`seal`]) deletes
//! the IPv4 default route: Docker gives every container on a network a default route
//! through the network's gateway, even on an internal network whose bridge has no host
//! address. Nothing answers there, but a box with no default route has no way to even
//! try. `apply` runs it in a helper container that shares the box's network namespace
//! and holds `CAP_NET_ADMIN` for that moment only; the box itself never has it.

use std::net::Ipv4Addr;

/// A route that leads off the box's networks: `default via GATEWAY dev IFACE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub gateway: Option<String>,
    pub interface: String,
}

impl std::fmt::Display for DefaultRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.gateway {
            Some(gateway) => write!(f, "default via {gateway} dev {}", self.interface),
            None => write!(f, "default dev {}", self.interface),
        }
    }
}

/// Every default route in the box's routing tables, IPv4 and IPv6.
pub fn default_routes() -> Vec<DefaultRoute> {
    let mut routes = parse_ipv4(&std::fs::read_to_string("/proc/net/route").unwrap_or_default());
    routes.extend(parse_ipv6(
        &std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    ));
    routes
}

/// IPv4 default routes in the text of `/proc/net/route` (addresses in host byte order,
/// as hex).
fn parse_ipv4(table: &str) -> Vec<DefaultRoute> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (interface, destination, gateway, mask) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(2)?,
                fields.get(7)?,
            );
            if *destination != "00000000" || *mask != "00000000" {
                return None;
            }
            let gateway = u32::from_str_radix(gateway, 16).ok()?;
            Some(DefaultRoute {
                // The kernel prints the address as it lies in memory: little-endian here.
                gateway: (gateway != 0).then(|| Ipv4Addr::from(gateway.to_le_bytes()).to_string()),
                interface: (*interface).to_owned(),
            })
        })
        .collect()
}

/// IPv6 default routes (`::/0`) in the text of `/proc/net/ipv6_route`, leaving out the
/// kernel's own `unreachable` route on `lo` (flag `RTF_REJECT`).
fn parse_ipv6(table: &str) -> Vec<DefaultRoute> {
    const RTF_REJECT: u32 = 0x0200;
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (destination, prefix, gateway, flags, interface) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(4)?,
                fields.get(8)?,
                fields.get(9)?,
            );
            let flags = u32::from_str_radix(flags, 16).ok()?;
            if destination.chars().any(|c| c != '0') || *prefix != "00" || flags & RTF_REJECT != 0 {
                return None;
            }
            let gateway = u128::from_str_radix(gateway, 16).ok()?;
            Some(DefaultRoute {
                gateway: (gateway != 0).then(|| std::net::Ipv6Addr::from(gateway).to_string()),
                interface: (*interface).to_owned(),
            })
        })
        .collect()
}

/// Deletes every IPv4 default route; returns the exit code: 0 when none is left, 1 when
/// one could not be deleted (with the reason on stderr).
#[must_use]
pub fn seal() -> i32 {
    // SAFETY: socket takes no pointers; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        eprintln!(
            "openmono seal-routes: no socket: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    let mut code = 0;
    // One default route per network the box is on, at most; a few more tries are free.
    for _ in 0..16 {
        // SAFETY: an all-zero rtentry is valid: null device, zero addresses.
        let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
        let any = libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(2),
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr have the same size; both are plain data.
        let any: libc::sockaddr = unsafe { std::mem::transmute(any) };
        route.rt_dst = any;
        route.rt_genmask = any;
        route.rt_flags = libc::RTF_UP;
        // SAFETY: SIOCDELRT reads one rtentry, which lives until the call returns.
        if unsafe { libc::ioctl(fd, libc::SIOCDELRT, &raw const route) } != 0 {
            let error = std::io::Error::last_os_error();
            // ESRCH: no such route, so none is left.
            if error.raw_os_error() != Some(libc::ESRCH) {
                eprintln!("openmono seal-routes: cannot delete the default route: {error}");
                code = 1;
            }
            break;
        }
    }
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv4_default_route_is_found_with_its_gateway() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t01F0A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t00F0A8C0\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0\n";
        assert_eq!(
            parse_ipv4(table),
            vec![DefaultRoute {
                gateway: Some("192.168.240.1".into()),
                interface: "eth0".into()
            }]
        );
        assert_eq!(
            parse_ipv4(table)[0].to_string(),
            "default via 192.168.240.1 dev eth0"
        );
        let sealed = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00F0A8C0\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0\n";
        assert!(parse_ipv4(sealed).is_empty());
        assert!(parse_ipv4("").is_empty());
    }

    #[test]
    fn the_ipv6_default_route_counts_and_the_kernels_unreachable_one_does_not() {
        let table = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n\
            fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(
            parse_ipv6(table),
            vec![DefaultRoute {
                gateway: Some("fd00::1".into()),
                interface: "eth0".into()
            }]
        );
    }
}
