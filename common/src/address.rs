//! The one address policy: may this IP be blocked? The manager asks before
//! it records an active response, the agent asks again before it changes
//! anything on its host (a compromised or misconfigured manager must not
//! cut an agent off from its manager, from itself, its network or its
//! white list). Both ask [`AddressPolicy`], so they cannot disagree.
//!
//! Addresses are parsed strictly ([`parse_ip`]: no ports, zones, brackets
//! or spaces) before anything else looks at them, and an IPv4-mapped IPv6
//! address (`::ffff:a.b.c.d`) is folded to IPv4 everywhere (the address,
//! the white list, the protected hosts) so it cannot slip past an IPv4
//! rule. The other IPv6 spellings of an IPv4 address (IPv4-compatible
//! `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are checked twice: as they are
//! and as the IPv4 address they embed, so `::127.0.0.1` is loopback and
//! `64:ff9b::c000:201` is refused wherever `192.0.2.1` is.
//!
//! A refusal is a [`Refusal`], with a short [`Refusal::reason`] for logs
//! and a sentence for the operator. The checks come in two kinds: what the
//! address is by itself (unspecified, loopback, link-local, multicast,
//! broadcast) and what this deployment protects ([`HostFacts`]: the
//! manager, this host's own addresses, its subnets' network and broadcast
//! addresses, its gateways and DNS resolvers) and the white list. New
//! kinds of protected address are a new [`Refusal`] variant and a new field
//! of [`HostFacts`]; [`crate::hostfacts`] reads them from the host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// 169.254.0.0/16 or fe80::/10.
    #[error("{0} is a link-local address")]
    LinkLocal(IpAddr),
    /// Multicast.
    #[error("{0} is a multicast address")]
    Multicast(IpAddr),
    /// The IPv4 limited broadcast 255.255.255.255.
    #[error("{0} is the broadcast address")]
    Broadcast(IpAddr),
    /// The network address (IPv6: the subnet-router anycast address) of
    /// one of the host's own subnets.
    #[error("{ip} is the network address of this host's subnet {net}")]
    SubnetNetwork {
        /// The address.
        ip: IpAddr,
        /// The subnet.
        net: IpNet,
    },
    /// The broadcast address of one of the host's own IPv4 subnets.
    #[error("{ip} is the broadcast address of this host's subnet {net}")]
    SubnetBroadcast {
        /// The address.
        ip: IpAddr,
        /// The subnet.
        net: IpNet,
    },
    /// A gateway of the host's routes.
    #[error("{0} is a gateway of this host")]
    Gateway(IpAddr),
    /// A DNS resolver the host uses.
    #[error("{0} is a DNS resolver of this host")]
    Resolver(IpAddr),
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
            Self::LinkLocal(_) => "link-local",
            Self::Multicast(_) => "multicast",
            Self::Broadcast(_) => "broadcast",
            Self::SubnetNetwork { .. } => "subnet network address",
            Self::SubnetBroadcast { .. } => "subnet broadcast address",
            Self::Gateway(_) => "gateway",
            Self::Resolver(_) => "resolver",
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

/// The well-known NAT64 prefix (RFC 6052).
const NAT64: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

/// The IPv4 address an IPv6 address spells, besides the mapped form that
/// [`parse_ip`] folds: IPv4-compatible (`::a.b.c.d`, deprecated but still
/// parsed) and NAT64 (`64:ff9b::/96`). `::` and `::1` embed nothing.
pub fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip.to_canonical() else {
        return None;
    };
    let o = v6.octets();
    let v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let nat64 = o[..12] == NAT64.octets()[..12];
    let compatible = o[..12] == [0; 12] && u32::from(v4) > 1;
    (nat64 || compatible).then_some(v4)
}

/// What the deployment protects beyond the fixed rules, as known at the
/// time of the check. Each daemon gathers its own
/// ([`crate::hostfacts::gather`]): the agent before each block, the
/// manager every few seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The manager's addresses (on the agent: the address it connected to
    /// and those the manager announced).
    pub managers: Vec<IpAddr>,
    /// The addresses of the host applying the policy.
    pub own_addresses: Vec<IpAddr>,
    /// The subnets of those addresses (address and prefix length).
    pub subnets: Vec<IpNet>,
    /// The gateways of the host's routes (default routes and others).
    pub gateways: Vec<IpAddr>,
    /// The DNS resolvers the host uses.
    pub resolvers: Vec<IpAddr>,
}

/// The policy: the fixed rules, a white list and whose host it guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    host: Host,
    white_list: Vec<IpNet>,
}

fn same(a: &IpAddr, ip: IpAddr) -> bool {
    a.to_canonical() == ip
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

    /// Checks an address, and the IPv4 address it embeds if it spells one
    /// ([`embedded_ipv4`]); a refusal names the address as given. The
    /// rules that need nothing but the address come first, so a caller may
    /// check with empty [`HostFacts`] before it spends time gathering them.
    pub fn check(&self, ip: IpAddr, facts: &HostFacts) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        self.check_as(ip, ip, facts)?;
        match embedded_ipv4(ip) {
            Some(v4) => self.check_as(IpAddr::V4(v4), ip, facts),
            None => Ok(()),
        }
    }

    /// Checks `ip`; a refusal names `shown`.
    fn check_as(&self, ip: IpAddr, shown: IpAddr, facts: &HostFacts) -> Result<(), Refusal> {
        if ip.is_unspecified() {
            return Err(Refusal::Unspecified(shown));
        }
        if ip.is_loopback() {
            return Err(Refusal::Loopback(shown));
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        if link_local {
            return Err(Refusal::LinkLocal(shown));
        }
        if ip.is_multicast() {
            return Err(Refusal::Multicast(shown));
        }
        if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
            return Err(Refusal::Broadcast(shown));
        }
        if facts.managers.iter().any(|m| same(m, ip)) {
            return Err(Refusal::Manager(shown));
        }
        if facts.own_addresses.iter().any(|a| same(a, ip)) {
            return Err(Refusal::OwnAddress {
                ip: shown,
                host: self.host,
            });
        }
        for net in &facts.subnets {
            let net = crate::network::fold(*net).trunc();
            // A /31, /32 (RFC 3021) or /127, /128 has no such addresses.
            let edges = match net {
                IpNet::V4(_) => net.prefix_len() <= 30,
                IpNet::V6(_) => net.prefix_len() <= 126,
            };
            if !edges {
                continue;
            }
            if net.network() == ip {
                return Err(Refusal::SubnetNetwork { ip: shown, net });
            }
            if matches!(net, IpNet::V4(_)) && net.broadcast() == ip {
                return Err(Refusal::SubnetBroadcast { ip: shown, net });
            }
        }
        if facts.gateways.iter().any(|g| same(g, ip)) {
            return Err(Refusal::Gateway(shown));
        }
        if facts.resolvers.iter().any(|r| same(r, ip)) {
            return Err(Refusal::Resolver(shown));
        }
        if let Some(net) = self.white_list.iter().find(|n| n.contains(&ip)) {
            return Err(Refusal::WhiteListed {
                ip: shown,
                net: *net,
            });
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

    fn facts() -> HostFacts {
        HostFacts {
            managers: vec![ip("192.0.2.1"), ip("2001:db8::1")],
            own_addresses: vec![ip("192.0.2.50"), ip("::ffff:192.0.2.51")],
            subnets: vec![
                "192.0.2.50/24".parse().unwrap(),
                "203.0.113.8/30".parse().unwrap(),
                "198.51.100.7/31".parse().unwrap(),
                "100.64.0.9/32".parse().unwrap(),
                "2001:db8:5::50/64".parse().unwrap(),
                "::ffff:172.16.0.0/108".parse().unwrap(),
            ],
            gateways: vec![ip("192.0.2.254"), ip("2001:db8:5::fe")],
            resolvers: vec![ip("192.0.2.53"), ip("::ffff:9.9.9.9")],
        }
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let p = policy(Host::Agent, &["10.0.0.0/8", "2001:db8:ff::/48"]);
        let cases: &[(&str, &str)] = &[
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("64:ff9b::", "unspecified"),
            // Loopback in every spelling.
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("0:0:0:0:0:0:0:1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:7f00:1", "loopback"),
            ("::127.0.0.1", "loopback"),
            ("::7f00:1", "loopback"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:FF9B:0:0:0:0:7F08:90A", "loopback"),
            // Link-local.
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("fe80::1", "link-local"),
            ("febf:ffff::1", "link-local"),
            // Multicast and broadcast.
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("ff05::1:3", "multicast"),
            ("::ffff:224.0.0.251", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::ffff:255.255.255.255", "broadcast"),
            ("::255.255.255.255", "broadcast"),
            // The manager and this host.
            ("192.0.2.1", "manager"),
            ("::ffff:192.0.2.1", "manager"),
            ("::192.0.2.1", "manager"),
            ("64:ff9b::c000:201", "manager"),
            ("2001:db8::1", "manager"),
            ("192.0.2.50", "own address"),
            ("192.0.2.51", "own address"),
            ("64:ff9b::192.0.2.51", "own address"),
            // The network and broadcast addresses of its subnets.
            ("192.0.2.0", "subnet network address"),
            ("192.0.2.255", "subnet broadcast address"),
            ("::ffff:192.0.2.255", "subnet broadcast address"),
            ("203.0.113.8", "subnet network address"),
            ("203.0.113.11", "subnet broadcast address"),
            ("2001:db8:5::", "subnet network address"),
            ("172.16.0.0", "subnet network address"),
            ("172.31.255.255", "subnet broadcast address"),
            // Its gateways and resolvers.
            ("192.0.2.254", "gateway"),
            ("::ffff:192.0.2.254", "gateway"),
            ("2001:db8:5::fe", "gateway"),
            ("192.0.2.53", "resolver"),
            ("9.9.9.9", "resolver"),
            ("64:ff9b::909:909", "resolver"),
            // The white list.
            ("10.20.30.40", "white-listed"),
            ("::ffff:10.0.0.9", "white-listed"),
            ("::10.0.0.9", "white-listed"),
            ("2001:db8:ff::9", "white-listed"),
        ];
        let facts = facts();
        for (addr, reason) in cases {
            let r = p.vet(addr, &facts).unwrap_err();
            assert_eq!(r.reason(), *reason, "{addr}: {r}");
        }
        for ok in [
            "198.51.100.7",
            "198.51.100.6",
            "100.64.0.9",
            "203.0.113.9",
            "2001:db8:1::7",
            "2001:db8:5::7",
            "11.0.0.1",
            "64:ff9b::cb00:7109",
            "64:ff9b:1::c000:201",
            "2002:c000:201::1",
            "::ffff:198.51.100.7",
            "169.255.0.1",
            "fec0::1",
        ] {
            assert_eq!(
                p.vet(ok, &facts).unwrap(),
                ip(ok).to_canonical(),
                "{ok} was refused"
            );
        }
    }

    #[test]
    fn embedded_ipv4_is_read_from_compatible_and_nat64_forms_only() {
        for (v6, v4) in [
            ("::192.0.2.1", Some("192.0.2.1")),
            ("64:ff9b::192.0.2.1", Some("192.0.2.1")),
            ("::ffff:192.0.2.1", None),
            ("::", None),
            ("::1", None),
            ("2001:db8::c000:201", None),
            ("192.0.2.1", None),
        ] {
            assert_eq!(
                embedded_ipv4(ip(v6)),
                v4.map(|a| a.parse().unwrap()),
                "{v6}"
            );
        }
    }

    #[test]
    fn a_refusal_names_the_address_as_given() {
        let r = policy(Host::Agent, &[])
            .vet("64:ff9b::c000:201", &facts())
            .unwrap_err();
        assert_eq!(r.to_string(), "64:ff9b::c000:201 is the manager's address");
        let r = policy(Host::Agent, &[])
            .vet("192.0.2.255", &facts())
            .unwrap_err();
        assert_eq!(
            r.to_string(),
            "192.0.2.255 is the broadcast address of this host's subnet 192.0.2.0/24"
        );
    }

    #[test]
    fn the_address_alone_decides_before_any_facts_are_known() {
        let p = policy(Host::Manager, &[]);
        let none = HostFacts::default();
        assert_eq!(
            p.check(ip("255.255.255.255"), &none).unwrap_err().reason(),
            "broadcast",
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
