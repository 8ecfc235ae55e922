//! What closes a box beyond its internal network, and the check that it is closed.
//!
//! A container whose networks are all internal gets, from the executor:
//! - a DNS server that goes nowhere ([`SEALED_DNS`]): the engine's embedded resolver
//!   still answers the names of the network's containers and their aliases, and asks
//!   this server, from inside the box, about every other name. Engines before the fix
//!   for CVE-2024-29018 otherwise ask the host's resolvers, from the host when those
//!   listen on a loopback address: a box could send data out in the names it looks up;
//! - where an agent runs, no default route: Docker gives one through the network's
//!   gateway even on an internal network (a route that leads nowhere: the bridge has no
//!   host address and the network's rules drop what leaves it); `openmono seal-routes`
//!   deletes it from a helper container that shares the box's network namespace for a
//!   moment.
//!
//! Before an agent starts, `openmono self-test` probes from inside the box for a way
//! out: a default route, an answer from the host's addresses or the gateways, a name
//! resolved.

use std::net::IpAddr;

use super::*;
use crate::step::SELF_DIR;

/// The DNS server a sealed box's resolver forwards unknown names to: its own loopback,
/// where nothing answers. The engine dials a server given this way from inside the box.
pub const SEALED_DNS: &str = "127.0.0.1";

/// Resolver options for a sealed box: an unknown name fails in about a second, not the
/// twenty that the C library's defaults wait for an answer that never comes.
pub const SEALED_DNS_OPTIONS: [&str; 2] = ["timeout:1", "attempts:1"];

impl Executor<'_> {
    /// Whether a container on these networks (playbook names) is sealed: it is on one
    /// at least, and none of them lets traffic out.
    pub(super) fn sealed<'n>(&self, mut networks: impl Iterator<Item = &'n String>) -> bool {
        let egress = |net: &String| {
            self.plan
                .steps
                .iter()
                .any(|s| matches!(s, Step::CreateNetwork { egress: true, name } if name == net))
        };
        let mut any = false;
        networks.all(|n| {
            any = true;
            !egress(n)
        }) && any
    }

    /// The engine names of the networks that container `name` joins.
    pub(super) fn container_networks(&self, name: &str) -> Vec<String> {
        self.plan
            .steps
            .iter()
            .find_map(|s| match s {
                Step::StartContainer {
                    name: n, networks, ..
                } if n == name => Some(networks),
                _ => None,
            })
            .into_iter()
            .flatten()
            .filter_map(|(net, _)| self.network(net).ok())
            .collect()
    }

    /// The DNS settings of a container: [`SEALED_DNS`] when it is sealed.
    pub(super) fn dns(sealed: bool) -> (Vec<String>, Vec<String>) {
        if sealed {
            (
                vec![SEALED_DNS.to_owned()],
                SEALED_DNS_OPTIONS.map(str::to_owned).to_vec(),
            )
        } else {
            (Vec::new(), Vec::new())
        }
    }

    /// Whether an agent task runs in container `name`.
    pub(super) fn runs_an_agent(&self, name: &str) -> bool {
        self.plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::AgentTask { container, .. } if container == name))
    }

    /// Deletes the default route of container `id` (resource `name`), through a helper
    /// of `image` that shares its network namespace and is gone when this returns.
    pub(super) async fn seal_routes(
        &self,
        id: &str,
        name: &str,
        image: &str,
    ) -> Result<(), String> {
        let volume = self.self_volume(image).await?;
        // No playbook name holds a `.`: this name never clashes with another container.
        let helper = format!("{}.seal", self.engine_name(name));
        self.engine
            .seal_routes(id, image, (&volume, SELF_DIR), &helper, self.labels(name))
            .await
            .map_err(|e| error_chain(&e))?
            .map_err(|why| format!("cannot take the default route away from `{name}`: {why}"))
    }

    /// The self-test before agent task `task` in `container` (engine id `id`): on a
    /// way out, the task is reported failed and `Err` says what answered.
    pub(super) async fn guard(
        &self,
        (task, container, id): (&str, &str, &str),
        (log, log_path): (&mut File, &Path),
        bar: &StepProgress<'_>,
    ) -> Result<(), String> {
        let started = Instant::now();
        let networks = self.container_networks(container);
        let mut lines = Vec::new();
        let tested = self.self_test(id, &networks, (log, &mut lines), bar).await;
        if tested.is_err() {
            lock(&self.tasks).push(TaskReport {
                answer: None,
                check: None,
                duration: started.elapsed(),
                exit_code: None,
                kind: "agent",
                log: log_path.to_owned(),
                name: task.to_owned(),
                output_tail: lines,
                status: TaskStatus::Failed,
                transcript: None,
            });
        }
        tested
    }

    /// Runs `openmono self-test` in container `id` before an agent task starts,
    /// against the host's addresses and the gateways of `networks` (engine names);
    /// its lines go to `log` and `lines`. `Err` names what answered.
    async fn self_test(
        &self,
        id: &str,
        networks: &[String],
        (log, lines): (&mut File, &mut Vec<String>),
        bar: &StepProgress<'_>,
    ) -> Result<(), String> {
        bar.detail("self-test: looking for a way out of the box");
        let mut cmd = vec![SELF_PATH.to_owned(), "self-test".to_owned()];
        let mut addresses: Vec<IpAddr> = host_addresses();
        for net in networks {
            let gateways = self
                .engine
                .network_gateways(net)
                .await
                .map_err(|e| error_chain(&e))?;
            addresses.extend(gateways.iter().filter_map(|g| g.parse::<IpAddr>().ok()));
        }
        addresses.sort_unstable();
        addresses.dedup();
        cmd.extend(addresses.iter().map(ToString::to_string));
        let mut open = Vec::new();
        let code = self
            .engine
            .exec(id, cmd, &[], |_, line| {
                let _ = writeln!(log, "self-test {line}");
                lines.push(format!("self-test {line}"));
                if let Some(what) = line.strip_prefix("OPEN: ") {
                    open.push(what.to_owned());
                }
            })
            .await
            .map_err(|e| error_chain(&e))?;
        match (code, open.is_empty()) {
            (0, true) => Ok(()),
            (_, false) => Err(format!(
                "the self-test found a way out of the box, so the agent did not start: {}; a box that should reach out (`egress=#true`) needs `self-test #false` on the task",
                open.join("; ")
            )),
            (code, true) => Err(format!(
                "the self-test could not run in the box (exit code {code}), so the agent did not start; see the task's log"
            )),
        }
    }
}

/// This host's own addresses, loopback left out (inside the box, loopback is the
/// box's own).
fn host_addresses() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list it allocates to `list`; it is freed below.
    if unsafe { libc::getifaddrs(&raw mut list) } != 0 {
        return Vec::new();
    }
    let mut addresses = Vec::new();
    let mut next = list;
    while !next.is_null() {
        // SAFETY: each entry of the list is valid until freeifaddrs.
        let entry = unsafe { &*next };
        // SAFETY: ifa_addr is null or points to a sockaddr of the family it names.
        let address = unsafe { crate::agent::self_test::sockaddr_ip(entry.ifa_addr) };
        // Link-local IPv6 addresses need an interface to be dialled; the box has none
        // of the host's.
        if let Some(address) = address.filter(|a| {
            !a.is_loopback() && !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local())
        }) {
            addresses.push(address);
        }
        next = entry.ifa_next;
    }
    // SAFETY: list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}
