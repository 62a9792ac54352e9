//! Reads what the address policy protects from the host itself: its
//! addresses and their subnets (`getifaddrs`), the gateways of its routes
//! (`/proc/thread-self/net/route` and `ipv6_route`) and its DNS resolvers
//! (`/etc/resolv.conf`, and systemd-resolved's upstream list when it
//! runs). The facts change (DHCP, a VPN coming up), so each daemon gathers
//! them again: the agent before every block, the manager when its copy is
//! a few seconds old ([`FactsCache`]).
//!
//! `thread-self`, not `self`: `/proc/self/net` shows the network namespace
//! of the process's main thread, and a test (or a daemon) may run the
//! policy on a thread that entered another namespace. Everything here is
//! synchronous and quick, so it runs on the calling thread, which is the
//! one whose namespace counts.
//!
//! The parsers take text, so they are tested with injected files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::address::HostFacts;

/// Where the facts are read from; [`Sources::default`] is the running
/// host, tests point it at their own files.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The IPv4 routing table (`/proc/net/route` format).
    pub route: PathBuf,
    /// The IPv6 routing table (`/proc/net/ipv6_route` format).
    pub ipv6_route: PathBuf,
    /// resolv.conf files; missing ones are skipped.
    pub resolv_conf: Vec<PathBuf>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            route: "/proc/thread-self/net/route".into(),
            ipv6_route: "/proc/thread-self/net/ipv6_route".into(),
            resolv_conf: vec![
                "/etc/resolv.conf".into(),
                "/run/systemd/resolve/resolv.conf".into(),
            ],
        }
    }
}

/// The facts could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct FactsError {
    what: String,
    #[source]
    source: std::io::Error,
}

fn read(path: &Path, optional: bool) -> Result<String, FactsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(FactsError {
            what: format!("reading {}", path.display()),
            source,
        }),
    }
}

/// Gathers the host's facts; `managers` are passed through. A host
/// without IPv6 has no `ipv6_route`, which is no error; an unreadable
/// interface list or IPv4 routing table is (no block is safe without
/// them).
pub fn gather(managers: Vec<IpAddr>, sources: &Sources) -> Result<HostFacts, FactsError> {
    let (own_addresses, subnets) = interfaces().map_err(|source| FactsError {
        what: "listing this host's addresses".into(),
        source,
    })?;
    let mut gateways = parse_route(&read(&sources.route, false)?);
    gateways.extend(parse_ipv6_route(&read(&sources.ipv6_route, true)?));
    gateways.sort();
    gateways.dedup();
    let mut resolvers = Vec::new();
    for path in &sources.resolv_conf {
        resolvers.extend(parse_resolv_conf(&read(path, true)?));
    }
    resolvers.sort();
    resolvers.dedup();
    Ok(HostFacts {
        managers,
        own_addresses,
        subnets,
        gateways,
        resolvers,
    })
}

/// The addresses of this host's interfaces and their subnets.
fn interfaces() -> std::io::Result<(Vec<IpAddr>, Vec<IpNet>)> {
    let mut addresses = Vec::new();
    let mut subnets = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        let Some(address) = ifa.address else {
            continue;
        };
        let mask = ifa.netmask;
        let (ip, prefix) = if let Some(v4) = address.as_sockaddr_in() {
            let prefix = mask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| u32::from(m.ip()).count_ones());
            (IpAddr::V4(v4.ip()), prefix)
        } else if let Some(v6) = address.as_sockaddr_in6() {
            let prefix = mask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map(|m| u128::from(m.ip()).count_ones());
            (IpAddr::V6(v6.ip()), prefix)
        } else {
            continue;
        };
        addresses.push(ip.to_canonical());
        if let Some(net) = prefix
            .and_then(|p| u8::try_from(p).ok())
            .and_then(|p| IpNet::new(ip, p).ok())
        {
            subnets.push(net.trunc());
        }
    }
    addresses.sort();
    addresses.dedup();
    subnets.sort();
    subnets.dedup();
    Ok((addresses, subnets))
}

/// The gateways in `/proc/net/route`: the third column, a little-endian
/// hex IPv4 address, where the RTF_GATEWAY flag (0x2) is set.
pub fn parse_route(text: &str) -> Vec<IpAddr> {
    const RTF_GATEWAY: u32 = 0x2;
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let gateway = u32::from_str_radix(cols.get(2)?, 16).ok()?;
            let flags = u32::from_str_radix(cols.get(3)?, 16).ok()?;
            (flags & RTF_GATEWAY != 0 && gateway != 0)
                .then(|| IpAddr::V4(Ipv4Addr::from(gateway.swap_bytes())))
        })
        .collect()
}

/// The next hops in `/proc/net/ipv6_route`: the fifth column, 32 hex
/// digits, where not all zero.
pub fn parse_ipv6_route(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let hop = line.split_whitespace().nth(4)?;
            if hop.len() != 32 {
                return None;
            }
            let hop = u128::from_str_radix(hop, 16).ok()?;
            (hop != 0).then(|| IpAddr::V6(Ipv6Addr::from(hop)).to_canonical())
        })
        .collect()
}

/// The `nameserver` addresses of a resolv.conf (a zone index, as in
/// `fe80::1%eth0`, is dropped).
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let address = words.next()?;
            let address = address.split('%').next()?;
            address.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
        })
        .collect()
}

/// The manager's facts, gathered again when older than its time to live:
/// the responder vets addresses on every triggered alert, so it must not
/// read the host each time, and still sees a new address or route soon.
#[derive(Debug)]
pub struct FactsCache {
    ttl: Duration,
    sources: Sources,
    /// Addresses to protect besides the host's (the manager's listen
    /// address), put in `own_addresses`.
    extra_own: Vec<IpAddr>,
    current: Mutex<Option<(Instant, Arc<HostFacts>)>>,
}

impl FactsCache {
    /// A cache that reads `sources` at most every `ttl`.
    pub fn new(ttl: Duration, sources: Sources, extra_own: Vec<IpAddr>) -> Self {
        Self {
            ttl,
            sources,
            extra_own,
            current: Mutex::new(None),
        }
    }

    /// The facts, read again if stale. When they cannot be read, the last
    /// ones known are kept and the error returned (the caller logs it);
    /// with none known, the error.
    pub fn get(&self) -> Result<Arc<HostFacts>, (FactsError, Option<Arc<HostFacts>>)> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, facts)) = current.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(facts.clone());
        }
        match gather(Vec::new(), &self.sources) {
            Ok(mut facts) => {
                facts.own_addresses.extend(self.extra_own.iter().copied());
                let facts = Arc::new(facts);
                *current = Some((Instant::now(), facts.clone()));
                Ok(facts)
            }
            Err(e) => Err((e, current.as_ref().map(|(_, f)| f.clone()))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_gateways_are_the_routes_with_the_gateway_flag() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                    eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
                    wg0\t0000000A\tFE0110AC\t0003\t0\t0\t0\t000000FF\t0\t0\t0\n\
                    bad\tzz\n";
        assert_eq!(parse_route(text), [ip("192.168.2.1"), ip("172.16.1.254")]);
    }

    #[test]
    fn ipv6_next_hops_are_the_non_zero_ones() {
        let text = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                    20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db80000000000000000000000fe 00000400 00000001 00000000 00000003 eth0\n";
        assert_eq!(parse_ipv6_route(text), [ip("fe80::1"), ip("2001:db8::fe")]);
    }

    #[test]
    fn resolvers_are_the_nameserver_lines() {
        let text = "# generated\nsearch example.org\nnameserver 192.0.2.53\n\
                    nameserver  2001:db8::53\nnameserver fe80::1%eth0\n\
                    nameserver bogus\n;nameserver 10.9.9.9\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(text),
            [ip("192.0.2.53"), ip("2001:db8::53"), ip("fe80::1")]
        );
    }

    #[test]
    fn injected_files_are_gathered_and_the_live_host_read() {
        let dir = tempfile::tempdir().unwrap();
        let route = dir.path().join("route");
        std::fs::write(
            &route,
            "Iface\tDestination\tGateway\tFlags\neth0\t00000000\t0102A8C0\t0003\n",
        )
        .unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
        let sources = Sources {
            route,
            ipv6_route: dir.path().join("no-ipv6"),
            resolv_conf: vec![resolv, dir.path().join("missing")],
        };
        let facts = gather(vec![ip("198.51.100.1")], &sources).unwrap();
        assert_eq!(facts.managers, [ip("198.51.100.1")]);
        assert_eq!(facts.gateways, [ip("192.168.2.1")]);
        assert_eq!(facts.resolvers, [ip("192.0.2.53")]);
        // The interfaces are this host's: loopback is among them, with its
        // subnet.
        assert!(facts.own_addresses.contains(&ip("127.0.0.1")), "{facts:?}");
        assert!(
            facts.subnets.contains(&"127.0.0.0/8".parse().unwrap()),
            "{facts:?}"
        );
        // The real files parse too.
        gather(Vec::new(), &Sources::default()).unwrap();
        // An unreadable routing table is an error, not an empty list.
        let broken = Sources {
            route: dir.path().join("missing"),
            ..sources
        };
        let e = gather(Vec::new(), &broken).unwrap_err();
        assert!(e.to_string().starts_with("reading "), "{e}");
    }

    #[test]
    fn the_cache_reads_again_when_stale() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
        let sources = Sources {
            resolv_conf: vec![resolv.clone()],
            ..Sources::default()
        };
        let cache = FactsCache::new(Duration::from_secs(3600), sources.clone(), vec![]);
        assert_eq!(cache.get().unwrap().resolvers, [ip("192.0.2.53")]);
        std::fs::write(&resolv, "nameserver 192.0.2.54\n").unwrap();
        assert_eq!(
            cache.get().unwrap().resolvers,
            [ip("192.0.2.53")],
            "fresh: not read again"
        );
        let cache = FactsCache::new(Duration::ZERO, sources, vec![ip("203.0.113.1")]);
        let facts = cache.get().unwrap();
        assert_eq!(facts.resolvers, [ip("192.0.2.54")]);
        assert!(facts.own_addresses.contains(&ip("203.0.113.1")));
    }
}
