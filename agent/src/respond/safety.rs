//! What the agent refuses to block, whatever the manager says. The manager
//! checks too, but the agent is the last line: a compromised or
//! misconfigured manager must not be able to cut the agent off from its
//! manager, from itself, or from the white list. Addresses are parsed as
//! addresses before anything else looks at them, and IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`) is folded to IPv4 first so it cannot slip past an
//! IPv4 rule.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why an address is not blocked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The text is not an IP address.
    #[error("refused: {0:?} is not an IP address")]
    NotAnAddress(String),
    /// 127.0.0.0/8 or ::1.
    #[error("refused: {0} is a loopback address")]
    Loopback(IpAddr),
    /// 0.0.0.0 or ::.
    #[error("refused: {0} is the unspecified address")]
    Unspecified(IpAddr),
    /// Multicast or the IPv4 broadcast address.
    #[error("refused: {0} is a multicast or broadcast address")]
    Multicast(IpAddr),
    /// The manager's address.
    #[error("refused: {0} is the manager's address")]
    Manager(IpAddr),
    /// One of this host's addresses.
    #[error("refused: {0} is an address of this agent")]
    OwnAddress(IpAddr),
    /// In `active_response.white_list`.
    #[error("refused: {ip} is white-listed ({net})")]
    WhiteListed {
        /// The address.
        ip: IpAddr,
        /// The entry it falls in.
        net: IpNet,
    },
    /// This host's addresses could not be read, so no block is safe.
    #[error("refused: cannot read this agent's own addresses ({0})")]
    OwnAddressesUnknown(String),
}

impl Refusal {
    /// A short machine-friendly reason, for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAnAddress(_) => "not an address",
            Self::Loopback(_) => "loopback",
            Self::Unspecified(_) => "unspecified",
            Self::Multicast(_) => "multicast",
            Self::Manager(_) => "manager",
            Self::OwnAddress(_) => "own address",
            Self::WhiteListed { .. } => "white-listed",
            Self::OwnAddressesUnknown(_) => "own addresses unknown",
        }
    }
}

/// Parses a source address strictly (no ports, zones, brackets or spaces)
/// and canonicalises IPv4-mapped IPv6 to IPv4.
pub fn parse_ip(text: &str) -> Result<IpAddr, Refusal> {
    text.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| Refusal::NotAnAddress(text.chars().take(128).collect()))
}

/// Refusals that need nothing but the address and the fixed lists.
pub fn check(
    ip: IpAddr,
    managers: &[IpAddr],
    own: &[IpAddr],
    white_list: &[IpNet],
) -> Result<(), Refusal> {
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
    if managers.iter().any(|m| m.to_canonical() == ip) {
        return Err(Refusal::Manager(ip));
    }
    if own.iter().any(|a| a.to_canonical() == ip) {
        return Err(Refusal::OwnAddress(ip));
    }
    if let Some(net) = white_list.iter().find(|n| n.contains(&ip)) {
        return Err(Refusal::WhiteListed { ip, net: *net });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
        let managers = [ip("192.0.2.1"), ip("2001:db8::1")];
        let own = [ip("192.0.2.50")];
        let wl = [
            "10.0.0.0/8".parse::<IpNet>().unwrap(),
            "2001:db8:ff::/48".parse().unwrap(),
        ];
        let cases: &[(&str, &str)] = &[
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "multicast"),
            ("ff02::1", "multicast"),
            ("192.0.2.1", "manager"),
            ("::ffff:192.0.2.1", "manager"),
            ("2001:db8::1", "manager"),
            ("192.0.2.50", "own address"),
            ("10.20.30.40", "white-listed"),
            ("::ffff:10.0.0.9", "white-listed"),
            ("2001:db8:ff::9", "white-listed"),
        ];
        for (addr, reason) in cases {
            let r = check(ip(addr), &managers, &own, &wl).unwrap_err();
            assert_eq!(r.reason(), *reason, "{addr}: {r}");
        }
        for ok in ["198.51.100.7", "2001:db8:1::7", "11.0.0.1"] {
            check(ip(ok), &managers, &own, &wl).unwrap();
        }
    }

    #[test]
    fn messages_say_what_and_why() {
        let r = check(ip("10.1.1.1"), &[], &[], &["10.0.0.0/8".parse().unwrap()]).unwrap_err();
        assert_eq!(
            r.to_string(),
            "refused: 10.1.1.1 is white-listed (10.0.0.0/8)"
        );
        assert_eq!(
            parse_ip(";rm -rf /").unwrap_err().to_string(),
            "refused: \";rm -rf /\" is not an IP address"
        );
    }
}
