//! The one address policy: may this IP be blocked? The manager asks before
//! it records an active response, the agent asks again before it changes
//! anything on its host (a compromised or misconfigured manager must not
//! cut an agent off from its manager, from itself or from its white list).
//! Both ask [`AddressPolicy`], so they cannot disagree.
//!
//! Addresses are parsed strictly ([`parse_ip`]: no ports, zones, brackets
//! or spaces) before anything else looks at them, and an IPv4-mapped IPv6
//! address (`::ffff:a.b.c.d`) is folded to IPv4 everywhere (the address,
//! the white list, the protected hosts) so it cannot slip past an IPv4
//! rule.
//!
//! A refusal is a [`Refusal`], with a short [`Refusal::reason`] for logs
//! and a sentence for the operator. The checks come in two kinds: what the
//! address is by itself (unspecified, loopback, multicast, broadcast) and
//! what this deployment protects ([`HostFacts`]: the manager, this host's
//! own addresses) and the white list. New kinds of protected address are a
//! new [`Refusal`] variant and a new field of [`HostFacts`].

use std::net::IpAddr;

use ipnet::IpNet;

/// Which daemon applies the policy; it names whose own addresses are
/// protected in a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The manager.
    Manager,
    /// An agent.
    Agent,
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Manager => "the manager",
            Self::Agent => "this agent",
        })
    }
}

/// Why an address is not blocked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The text is not an IP address.
    #[error("{0:?} is not an IP address")]
    NotAnAddress(String),
    /// 0.0.0.0 or ::.
    #[error("{0} is the unspecified address")]
    Unspecified(IpAddr),
    /// 127.0.0.0/8 or ::1, in any spelling.
    #[error("{0} is a loopback address")]
    Loopback(IpAddr),
    /// Multicast, or the IPv4 limited broadcast 255.255.255.255.
    #[error("{0} is a multicast or broadcast address")]
    Multicast(IpAddr),
    /// An address of the manager, as the agent knows it.
    #[error("{0} is the manager's address")]
    Manager(IpAddr),
    /// One of the addresses of the host applying the policy.
    #[error("{ip} is an address of {host}")]
    OwnAddress {
        /// The address.
        ip: IpAddr,
        /// Whose.
        host: Host,
    },
    /// On the white list.
    #[error("{ip} is white-listed ({net})")]
    WhiteListed {
        /// The address.
        ip: IpAddr,
        /// The white-list entry it falls in.
        net: IpNet,
    },
    /// The host's own addresses could not be read, so no block is safe.
    #[error("cannot read the host's own addresses ({0})")]
    OwnAddressesUnknown(String),
}

impl Refusal {
    /// A short machine-friendly reason, for logs and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAnAddress(_) => "not an address",
            Self::Unspecified(_) => "unspecified",
            Self::Loopback(_) => "loopback",
            Self::Multicast(_) => "multicast",
            Self::Manager(_) => "manager",
            Self::OwnAddress { .. } => "own address",
            Self::WhiteListed { .. } => "white-listed",
            Self::OwnAddressesUnknown(_) => "own addresses unknown",
        }
    }
}

/// Parses a source address strictly (no ports, zones, brackets or spaces)
/// and folds IPv4-mapped IPv6 to IPv4.
pub fn parse_ip(text: &str) -> Result<IpAddr, Refusal> {
    text.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| Refusal::NotAnAddress(text.chars().take(128).collect()))
}

/// What the deployment protects beyond the fixed rules, as known at the
/// time of the check. Each daemon gathers its own: the agent reads its
/// addresses over netlink before each block, the manager at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The manager's addresses (on the agent: what its manager address
    /// resolves to).
    pub managers: Vec<IpAddr>,
    /// The addresses of the host applying the policy.
    pub own_addresses: Vec<IpAddr>,
}

/// The policy: the fixed rules, a white list and whose host it guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    host: Host,
    white_list: Vec<IpNet>,
}

impl AddressPolicy {
    /// The policy for `host` with `white_list` (IPv4-mapped entries are
    /// folded to IPv4, host bits cleared).
    pub fn new(host: Host, white_list: &[IpNet]) -> Self {
        Self {
            host,
            white_list: white_list
                .iter()
                .map(|n| crate::network::fold(*n).trunc())
                .collect(),
        }
    }

    /// The white list, folded.
    pub fn white_list(&self) -> &[IpNet] {
        &self.white_list
    }

    /// Parses `text` and checks it: the address to block, or why not.
    pub fn vet(&self, text: &str, facts: &HostFacts) -> Result<IpAddr, Refusal> {
        let ip = parse_ip(text)?;
        self.check(ip, facts)?;
        Ok(ip)
    }

    /// Checks an address. The rules that need nothing but the address come
    /// first, so a caller may check with empty [`HostFacts`] before it
    /// spends time gathering them.
    pub fn check(&self, ip: IpAddr, facts: &HostFacts) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if ip.is_unspecified() {
            return Err(Refusal::Unspecified(ip));
        }
        if ip.is_loopback() {
            return Err(Refusal::Loopback(ip));
        }
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if ip.is_multicast() || broadcast {
            return Err(Refusal::Multicast(ip));
        }
        if facts.managers.iter().any(|m| m.to_canonical() == ip) {
            return Err(Refusal::Manager(ip));
        }
        if facts.own_addresses.iter().any(|a| a.to_canonical() == ip) {
            return Err(Refusal::OwnAddress {
                ip,
                host: self.host,
            });
        }
        if let Some(net) = self.white_list.iter().find(|n| n.contains(&ip)) {
            return Err(Refusal::WhiteListed { ip, net: *net });
        }
        Ok(())
    }
}

/// The addresses of this host's interfaces, as the C library lists them.
pub fn host_addresses() -> std::io::Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(host: Host, white_list: &[&str]) -> AddressPolicy {
        let nets: Vec<IpNet> = white_list.iter().map(|n| n.parse().unwrap()).collect();
        AddressPolicy::new(host, &nets)
    }

    #[test]
    fn text_that_is_not_an_address_is_refused() {
        for bad in [
            "",
            "1.2.3.4;rm -rf /",
            "1.2.3.4 ",
            " 1.2.3.4",
            "$(reboot)",
            "1.2.3",
            "010.0.0.1",
            "fe80::1%eth0",
            "[2001:db8::1]",
            "198.51.100.7/32",
            "198.51.100.7:80",
            "example.com",
        ] {
            assert!(
                matches!(parse_ip(bad), Err(Refusal::NotAnAddress(_))),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn mapped_ipv6_is_folded_to_ipv4() {
        assert_eq!(parse_ip("::ffff:198.51.100.7").unwrap(), ip("198.51.100.7"));
        assert_eq!(parse_ip("2001:db8::7").unwrap(), ip("2001:db8::7"));
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let facts = HostFacts {
            managers: vec![ip("192.0.2.1"), ip("2001:db8::1")],
            own_addresses: vec![ip("192.0.2.50"), ip("::ffff:192.0.2.51")],
        };
        let p = policy(Host::Agent, &["10.0.0.0/8", "2001:db8:ff::/48"]);
        let cases: &[(&str, &str)] = &[
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "multicast"),
            ("::ffff:255.255.255.255", "multicast"),
            ("ff02::1", "multicast"),
            ("192.0.2.1", "manager"),
            ("::ffff:192.0.2.1", "manager"),
            ("2001:db8::1", "manager"),
            ("192.0.2.50", "own address"),
            ("192.0.2.51", "own address"),
            ("10.20.30.40", "white-listed"),
            ("::ffff:10.0.0.9", "white-listed"),
            ("2001:db8:ff::9", "white-listed"),
        ];
        for (addr, reason) in cases {
            let r = p.vet(addr, &facts).unwrap_err();
            assert_eq!(r.reason(), *reason, "{addr}: {r}");
        }
        for ok in ["198.51.100.7", "2001:db8:1::7", "11.0.0.1"] {
            assert_eq!(p.vet(ok, &facts).unwrap(), ip(ok));
        }
    }

    #[test]
    fn the_address_alone_decides_before_any_facts_are_known() {
        let p = policy(Host::Manager, &[]);
        let none = HostFacts::default();
        assert_eq!(
            p.check(ip("255.255.255.255"), &none).unwrap_err().reason(),
            "multicast",
            "the manager refuses broadcast as the agent does"
        );
        p.check(ip("192.0.2.50"), &none).unwrap();
    }

    #[test]
    fn white_list_entries_are_folded_too() {
        let p = policy(
            Host::Manager,
            &["::ffff:10.0.0.0/104", "::ffff:192.0.2.9/128"],
        );
        assert_eq!(
            p.white_list()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.0.0/8", "192.0.2.9/32"]
        );
        let none = HostFacts::default();
        for blocked in ["10.1.2.3", "::ffff:10.1.2.3", "192.0.2.9"] {
            assert_eq!(
                p.vet(blocked, &none).unwrap_err().reason(),
                "white-listed",
                "{blocked}"
            );
        }
    }

    #[test]
    fn messages_say_what_and_why() {
        let none = HostFacts::default();
        let r = policy(Host::Agent, &["10.0.0.0/8"])
            .vet("10.1.1.1", &none)
            .unwrap_err();
        assert_eq!(r.to_string(), "10.1.1.1 is white-listed (10.0.0.0/8)");
        assert_eq!(
            parse_ip(";rm -rf /").unwrap_err().to_string(),
            "\";rm -rf /\" is not an IP address"
        );
        let own = HostFacts {
            own_addresses: vec![ip("192.0.2.1")],
            ..HostFacts::default()
        };
        assert_eq!(
            policy(Host::Manager, &[])
                .vet("192.0.2.1", &own)
                .unwrap_err()
                .to_string(),
            "192.0.2.1 is an address of the manager"
        );
        assert_eq!(
            policy(Host::Agent, &[])
                .vet("192.0.2.1", &own)
                .unwrap_err()
                .to_string(),
            "192.0.2.1 is an address of this agent"
        );
    }

    #[test]
    fn this_hosts_addresses_include_loopback() {
        let own = host_addresses().unwrap();
        assert!(own.iter().any(IpAddr::is_loopback), "{own:?}");
    }
}
