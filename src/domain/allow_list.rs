//! Inside addresses: the ranges an outbound call chosen by a workflow or a configuration file may
//! not reach (loopback, private, link-local, cloud metadata, ...), and the operator's exceptions
//! (`HERALD_HTTP_ALLOW`: host names and address ranges). Pure rules; resolving is the caller's.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// `HERALD_HTTP_ALLOW`, parsed: inside hosts and ranges outbound calls may reach after all.
/// Written comma-separated: host names (`crm.internal`, `*.corp.example` for every name under
/// it), addresses (`10.1.2.3`, `::1`) and CIDR ranges (`10.0.0.0/8`, `fd00::/8`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpAllowList {
    hosts: Vec<HostPattern>,
    ranges: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// `crm.internal`.
    Exact(String),
    /// `*.corp.example`, kept as `.corp.example`.
    Under(String),
}

/// An entry of `HERALD_HTTP_ALLOW` that is none of the forms it takes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a host name (crm.internal, *.corp.example), an IP address or a CIDR range \
     (10.0.0.0/8)"
)]
pub struct InvalidAllowEntry(String);

impl HttpAllowList {
    /// The variable the list is read from, for messages that tell how to allow a call.
    pub const VARIABLE: &'static str = "HERALD_HTTP_ALLOW";

    pub fn parse(raw: &str) -> Result<Self, InvalidAllowEntry> {
        let mut list = HttpAllowList::default();
        for entry in raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let bare = entry.trim_start_matches('[').trim_end_matches(']');
            if let Ok(net) = bare.parse::<IpNet>() {
                list.ranges.push(net.trunc());
            } else if let Ok(ip) = bare.parse::<IpAddr>() {
                list.ranges.push(IpNet::from(ip));
            } else {
                list.hosts.push(host_pattern(entry)?);
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.ranges.is_empty()
    }

    /// Whether `host` (a name as in a URL) is listed: then every address it resolves to may be
    /// reached.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.iter().any(|pattern| match pattern {
            HostPattern::Exact(name) => *name == host,
            HostPattern::Under(suffix) => host.ends_with(suffix.as_str()),
        })
    }

    /// Whether `ip` is in a listed range (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.ranges
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }
}

fn host_pattern(entry: &str) -> Result<HostPattern, InvalidAllowEntry> {
    let invalid = || InvalidAllowEntry(entry.to_string());
    let name = entry.trim_end_matches('.').to_ascii_lowercase();
    let (under, name) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, name),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(invalid());
    }
    Ok(if under {
        HostPattern::Under(format!(".{name}"))
    } else {
        HostPattern::Exact(name)
    })
}

impl fmt::Display for HttpAllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts = self.hosts.iter().map(|h| match h {
            HostPattern::Exact(name) => name.clone(),
            HostPattern::Under(suffix) => format!("*{suffix}"),
        });
        let ranges = self.ranges.iter().map(IpNet::to_string);
        f.write_str(&hosts.chain(ranges).collect::<Vec<_>>().join(","))
    }
}

/// What kind of inside address `ip` is (`"a loopback address"`), or `None` for an address on
/// the public internet. IPv6 addresses that carry an IPv4 one (mapped, compatible, NAT64, 6to4)
/// are judged by the IPv4 address they carry.
pub fn inside_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => inside_v4(v4),
        IpAddr::V6(v6) => inside_v6(v6),
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// Inside IPv4 ranges, the narrower first.
const INSIDE_V4: [(Ipv4Net, &str); 13] = [
    (v4(169, 254, 169, 254, 32), "the cloud metadata address"),
    (v4(255, 255, 255, 255, 32), "the broadcast address"),
    (v4(0, 0, 0, 0, 8), "a 'this network' address"),
    (v4(10, 0, 0, 0, 8), "a private address"),
    (
        v4(100, 64, 0, 0, 10),
        "a shared (carrier-grade NAT) address",
    ),
    (v4(127, 0, 0, 0, 8), "a loopback address"),
    (v4(169, 254, 0, 0, 16), "a link-local address"),
    (v4(172, 16, 0, 0, 12), "a private address"),
    (v4(192, 0, 0, 0, 24), "a reserved address"),
    (v4(192, 168, 0, 0, 16), "a private address"),
    (v4(198, 18, 0, 0, 15), "a benchmarking address"),
    (v4(224, 0, 0, 0, 4), "a multicast address"),
    (v4(240, 0, 0, 0, 4), "a reserved address"),
];

fn inside_v4(ip: Ipv4Addr) -> Option<&'static str> {
    INSIDE_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, kind)| *kind)
}

/// Inside IPv6 ranges that carry no IPv4 address, the narrower first.
const INSIDE_V6: [(Ipv6Net, &str); 9] = [
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "the unspecified address"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "a loopback address"),
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        "the cloud metadata address",
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "a local NAT64 address",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "a unique-local address",
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "a link-local address",
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "a site-local address",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "a multicast address"),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "a discard-only address",
    ),
];

fn inside_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some((_, kind)) = INSIDE_V6.iter().find(|(net, _)| net.contains(&ip)) {
        return Some(kind);
    }
    embedded_v4(ip).and_then(inside_v4)
}

/// The IPv4 address an IPv6 one carries: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_private_link_local_metadata_and_the_like_are_inside() {
        for (address, kind) in [
            ("127.0.0.1", "a loopback address"),
            ("127.255.0.9", "a loopback address"),
            ("10.1.2.3", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("169.254.169.254", "the cloud metadata address"),
            ("169.254.1.1", "a link-local address"),
            ("100.64.0.1", "a shared (carrier-grade NAT) address"),
            ("100.100.100.200", "a shared (carrier-grade NAT) address"),
            ("0.0.0.0", "a 'this network' address"),
            ("224.0.0.1", "a multicast address"),
            ("255.255.255.255", "the broadcast address"),
            ("::1", "a loopback address"),
            ("::", "the unspecified address"),
            ("fe80::1", "a link-local address"),
            ("fc00::1", "a unique-local address"),
            ("fd12:3456::1", "a unique-local address"),
            ("fd00:ec2::254", "the cloud metadata address"),
            ("ff02::1", "a multicast address"),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("::ffff:169.254.169.254", "the cloud metadata address"),
            ("::ffff:10.0.0.1", "a private address"),
            ("::127.0.0.1", "a loopback address"),
            ("64:ff9b::10.0.0.1", "a private address"),
            ("2002:c0a8:0101::1", "a private address"),
        ] {
            assert_eq!(inside_address(ip(address)), Some(kind), "{address}");
        }
    }

    #[test]
    fn public_addresses_are_not_inside() {
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(inside_address(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn the_allow_list_takes_hosts_addresses_and_ranges() {
        let list = HttpAllowList::parse(
            "crm.internal, *.corp.example,127.0.0.1 10.0.0.0/8 [::1] fd00::/8 Ollama.Local.",
        )
        .unwrap();
        assert!(list.allows_host("crm.internal"));
        assert!(list.allows_host("CRM.internal."));
        assert!(list.allows_host("ollama.local"));
        assert!(list.allows_host("a.b.corp.example"));
        assert!(!list.allows_host("corp.example"));
        assert!(!list.allows_host("evilcorp.example"));
        assert!(!list.allows_host("crm.internal.evil.example"));
        assert!(list.allows_address(ip("127.0.0.1")));
        assert!(!list.allows_address(ip("127.0.0.2")));
        assert!(list.allows_address(ip("10.200.0.1")));
        assert!(list.allows_address(ip("::ffff:10.200.0.1")));
        assert!(list.allows_address(ip("::1")));
        assert!(list.allows_address(ip("fd00::5")));
        assert!(!list.allows_address(ip("192.168.0.1")));
        assert_eq!(
            list.to_string(),
            "crm.internal,*.corp.example,ollama.local,127.0.0.1/32,10.0.0.0/8,::1/128,fd00::/8"
        );
        assert!(HttpAllowList::parse("").unwrap().is_empty());
        assert!(HttpAllowList::parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn a_bad_entry_is_named() {
        for bad in [
            "crm.internal:8080",
            "http://x",
            "10.0.0.0/33",
            "a..b",
            "*",
            "x/y",
        ] {
            let err = HttpAllowList::parse(&format!("ok.example,{bad}")).unwrap_err();
            assert!(err.to_string().starts_with(&format!("'{bad}'")), "{err}");
        }
    }
}
