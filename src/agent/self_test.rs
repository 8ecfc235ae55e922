//! `openmono self-test ADDRESS…`: the egress probes, run inside the box before an agent
//! starts. Out comes one line per probe, `closed: …` or `OPEN: …`, and the exit code:
//! 0 when nothing answered, 1 when something did.
//!
//! The probes:
//! - the routing table holds no default route ([`super::routes`]);
//! - no TCP connection to each ADDRESS (the host's addresses and the networks'
//!   gateways, which the host passes) and to each default route's gateway is accepted
//!   or refused within the timeout: a refusal is an answer too, from a reachable host;
//! - a name under `.invalid` does not resolve, and no resolver says it does not exist
//!   (that answer would have come from outside the box). The lookup runs only when the
//!   box has no default route, so that the self-test itself never sends a question out
//!   of a box that is open.
//!
//! Every probe is bounded by its timeout; all run at once.

use std::{
    ffi::CString,
    net::{IpAddr, SocketAddr, TcpStream},
    sync::mpsc,
    time::Duration,
};

use super::routes::default_routes;

/// What the self-test is told.
#[derive(clap::Args, Debug, Clone)]
pub struct SelfTestArgs {
    /// Addresses that must not answer: the host's, the gateways'
    pub addresses: Vec<IpAddr>,
    /// A name that must not resolve
    #[arg(long, default_value = "openmono-self-test.invalid")]
    pub name: String,
    /// The TCP port to knock on; a refusal counts as an answer
    #[arg(long, default_value_t = 9)]
    pub port: u16,
    /// How long each probe waits for an answer
    #[arg(long, default_value_t = 500)]
    pub timeout_ms: u64,
}

/// One probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Closed(String),
    Open(String),
}

/// Runs every probe, prints each verdict; returns the exit code.
#[must_use]
pub fn run(args: &SelfTestArgs) -> i32 {
    let verdicts = probe(args);
    for verdict in &verdicts {
        match verdict {
            Verdict::Closed(what) => println!("closed: {what}"),
            Verdict::Open(what) => println!("OPEN: {what}"),
        }
    }
    i32::from(verdicts.iter().any(|v| matches!(v, Verdict::Open(_))))
}

fn probe(args: &SelfTestArgs) -> Vec<Verdict> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let routes = default_routes();
    let mut targets = args.addresses.clone();
    targets.extend(
        routes
            .iter()
            .filter_map(|r| r.gateway.as_deref()?.parse::<IpAddr>().ok()),
    );
    targets.sort_unstable();
    targets.dedup();
    let (sender, answers) = mpsc::channel();
    for (i, address) in targets.iter().enumerate() {
        let sender = sender.clone();
        let target = SocketAddr::new(*address, args.port);
        std::thread::spawn(move || {
            let _ = sender.send((i, knock(target, timeout)));
        });
    }
    let lookup = routes.is_empty().then(|| {
        let (sender, answer) = mpsc::channel();
        let name = args.name.clone();
        std::thread::spawn(move || {
            let _ = sender.send(resolve(&name));
        });
        answer
    });
    let mut verdicts: Vec<Verdict> = if routes.is_empty() {
        vec![Verdict::Closed("no default route".into())]
    } else {
        routes
            .iter()
            .map(|r| Verdict::Open(format!("a route out of the box: {r}")))
            .collect()
    };
    let mut knocks: Vec<Option<Verdict>> = vec![None; targets.len()];
    // Each thread gives up at its own timeout; a little more here covers the start.
    let deadline = std::time::Instant::now() + timeout + Duration::from_millis(200);
    while knocks.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match answers.recv_timeout(left) {
            Ok((i, verdict)) => knocks[i] = Some(verdict),
            Err(_) => break,
        }
    }
    verdicts.extend(knocks.into_iter().zip(&targets).map(|(verdict, address)| {
        verdict
            .unwrap_or_else(|| Verdict::Closed(format!("{address} port {}: no answer", args.port)))
    }));
    verdicts.push(match lookup {
        // The resolver gets its own try and timeout: `timeout:1` in the box's resolv.conf.
        Some(answer) => answer
            .recv_timeout(timeout.max(Duration::from_millis(2500)))
            .unwrap_or_else(|_| Verdict::Closed(format!("{}: no answer", args.name))),
        None => Verdict::Closed(format!(
            "{}: not looked up, the box has a route out already",
            args.name
        )),
    });
    verdicts
}

/// One TCP connection attempt.
fn knock(target: SocketAddr, timeout: Duration) -> Verdict {
    let (address, port) = (target.ip(), target.port());
    match TcpStream::connect_timeout(&target, timeout) {
        Ok(_) => Verdict::Open(format!("{address} port {port} accepted a connection")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Verdict::Open(format!(
            "{address} port {port} refused a connection: the address is reachable"
        )),
        Err(e) => Verdict::Closed(format!("{address} port {port}: {}", brief(&e))),
    }
}

/// An error without the OS's error number.
fn brief(e: &std::io::Error) -> String {
    let text = e.to_string();
    text.split(" (os error").next().unwrap_or(&text).to_owned()
}

/// Looks `name` up as any program in the box would (`getaddrinfo`).
fn resolve(name: &str) -> Verdict {
    let Ok(node) = CString::new(name) else {
        return Verdict::Closed(format!("{name}: not a name"));
    };
    let mut found: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: an all-zero addrinfo is the "no hints" value getaddrinfo expects.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_socktype = libc::SOCK_STREAM;
    // SAFETY: node and hints outlive the call; found is freed below when set.
    let code = unsafe {
        libc::getaddrinfo(
            node.as_ptr(),
            std::ptr::null(),
            &raw const hints,
            &raw mut found,
        )
    };
    if code == 0 {
        let mut addresses = Vec::new();
        let mut next = found;
        while !next.is_null() {
            // SAFETY: getaddrinfo returned a list of valid entries, ending in null.
            let entry = unsafe { &*next };
            if let Some(ip) = socket_ip(entry) {
                addresses.push(ip.to_string());
            }
            next = entry.ai_next;
        }
        // SAFETY: found came from getaddrinfo and is freed once.
        unsafe { libc::freeaddrinfo(found) };
        addresses.dedup();
        return Verdict::Open(format!("{name} resolved to {}", addresses.join(", ")));
    }
    match code {
        libc::EAI_NONAME => Verdict::Open(format!(
            "a resolver answered that {name} does not exist: the question left the box"
        )),
        _ => Verdict::Closed(format!("{name}: not resolved")),
    }
}

fn socket_ip(entry: &libc::addrinfo) -> Option<IpAddr> {
    // SAFETY: getaddrinfo's entries point to a sockaddr of their family, or to null.
    unsafe { sockaddr_ip(entry.ai_addr) }
}

/// The address in a `sockaddr` of family `AF_INET` or `AF_INET6`; none for another
/// family or a null pointer.
///
/// # Safety
/// `addr` is null or points to a valid sockaddr of the family it names.
pub unsafe fn sockaddr_ip(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: the caller promises a valid sockaddr; the reads are unaligned-safe.
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET => {
                let a = std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>());
                Some(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()))
            }
            libc::AF_INET6 => {
                let a = std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>());
                Some(IpAddr::from(a.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_an_answer_and_a_listener_is_one_too() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let timeout = Duration::from_millis(500);
        assert_eq!(
            knock(SocketAddr::from(([127, 0, 0, 1], port)), timeout),
            Verdict::Open(format!("127.0.0.1 port {port} accepted a connection"))
        );
        drop(listener);
        assert_eq!(
            knock(SocketAddr::from(([127, 0, 0, 1], port)), timeout),
            Verdict::Open(format!(
                "127.0.0.1 port {port} refused a connection: the address is reachable"
            ))
        );
    }

    #[test]
    fn a_name_that_resolves_is_an_answer() {
        assert_eq!(
            resolve("127.0.0.1"),
            Verdict::Open("127.0.0.1 resolved to 127.0.0.1".into())
        );
        assert_eq!(
            resolve("bad\0name"),
            Verdict::Closed("bad\0name: not a name".into())
        );
    }
}
