//! Addresses and networks as operators write them (`white_list`,
//! `agent add --ip`): a CIDR (host bits cleared: `10.1.2.3/16` is
//! `10.1.0.0/16`), or a plain address meaning that one host. An IPv4-mapped IPv6 form (`::ffff:192.0.2.1`, `::ffff:10.0.0.0/104`) is
//! folded to IPv4, as addresses are before any check, so one network has
//! one spelling.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// Parses an address or a CIDR; a plain address is a host network.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    parse_written(text).map(|net| fold(net).trunc())
}

fn parse_written(text: &str) -> Result<IpNet, String> {
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .or_else(|_| text.parse::<IpNet>())
        .map_err(|_| format!("{text:?} is not an IP address or CIDR"))
}

/// An IPv4-mapped IPv6 network (`::ffff:0:0/96` or narrower) as the IPv4
/// network it stands for; any other network unchanged.
pub fn fold(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(folded) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(folded);
    }
    net
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn addresses_and_cidrs_are_networks() {
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("10.0.0.5").unwrap().to_string(),
            "10.0.0.5/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_network("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        for bad in ["", "bogus", "10.0.0.0/33", "10.0.0.1 ", "1.2.3"] {
            assert_eq!(
                parse_network(bad).unwrap_err(),
                format!("{bad:?} is not an IP address or CIDR")
            );
        }
    }

    #[test]
    fn mapped_forms_are_folded_to_ipv4() {
        assert_eq!(
            parse_network("::ffff:192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!(
            parse_network("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        // Wider than the mapped block: not one IPv4 network.
        let wide = parse_network("::ffff:0:0/95").unwrap();
        assert!(matches!(wide, IpNet::V6(_)) && wide.prefix_len() == 95);
    }
}
