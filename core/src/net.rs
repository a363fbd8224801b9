//! Address classification shared by admission (egress CIDRs), rendering (NetworkPolicy
//! exclusions) and the gateway (SSRF defence for URL arguments).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ranges that no Palisade workload may ever reach, whatever a policy says: cloud instance
/// metadata services and link-local space. They are excluded even from broad allowed CIDRs.
pub const ALWAYS_DENIED: &[&str] = &[
    "169.254.0.0/16", // IPv4 link-local: AWS/GCP/Azure/OpenStack IMDS 169.254.169.254, ECS 169.254.170.2
    "100.100.100.200/32", // Alibaba Cloud metadata
    "168.63.129.16/32", // Azure WireServer
    "192.0.0.192/32", // Oracle Cloud legacy metadata
    "fe80::/10",      // IPv6 link-local
    "fd00:ec2::254/128", // AWS IMDS over IPv6
    "fd20:ce::254/128", // GCE metadata over IPv6
];

/// Parsed [`ALWAYS_DENIED`]; the constants are literals checked by a test.
pub fn always_denied() -> Vec<IpNet> {
    ALWAYS_DENIED.iter().filter_map(|c| c.parse().ok()).collect()
}

/// What an address is, from the point of view of "may a tool make a request to it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    Metadata,
    SharedCgnat,
    UniqueLocal,
    Multicast,
    Broadcast,
    Documentation,
    Reserved,
}

impl AddressClass {
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "cloud-metadata",
            AddressClass::SharedCgnat => "shared-cgnat",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Documentation => "documentation",
            AddressClass::Reserved => "reserved",
        }
    }
}

fn in_net(ip: IpAddr, cidr: &str) -> bool {
    cidr.parse::<IpNet>().is_ok_and(|n| n.contains(&ip))
}

/// Classifies an address. IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64,
/// 6to4) are classified by the embedded address, so `::ffff:169.254.169.254` is metadata.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn is_metadata(ip: IpAddr) -> bool {
    ALWAYS_DENIED
        .iter()
        .filter(|c| !c.starts_with("169.254.") && !c.starts_with("fe80"))
        .any(|c| in_net(ip, c))
        || ip == IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))
        || ip == IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2))
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let addr = IpAddr::V4(ip);
    if is_metadata(addr) {
        return AddressClass::Metadata;
    }
    let o = ip.octets();
    if o[0] == 0 {
        return if ip.is_unspecified() {
            AddressClass::Unspecified
        } else {
            AddressClass::Reserved
        };
    }
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if in_net(addr, "100.64.0.0/10") {
        AddressClass::SharedCgnat
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_documentation() {
        AddressClass::Documentation
    } else if in_net(addr, "192.0.0.0/24")
        || in_net(addr, "198.18.0.0/15")
        || in_net(addr, "240.0.0.0/4")
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let addr = IpAddr::V6(ip);
    if is_metadata(addr) {
        AddressClass::Metadata
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if in_net(addr, "fe80::/10") || in_net(addr, "fec0::/10") {
        AddressClass::LinkLocal
    } else if in_net(addr, "fc00::/7") {
        AddressClass::UniqueLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if in_net(addr, "2001:db8::/32") || in_net(addr, "3fff::/20") {
        AddressClass::Documentation
    } else if in_net(addr, "2000::/3") {
        AddressClass::Public
    } else {
        // Outside global unicast: discard-only, Teredo, ORCHID and unassigned space.
        AddressClass::Reserved
    }
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible ::a.b.c.d (deprecated, still parsed by many stacks); not :: or ::1.
    if s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail);
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48.
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6].iter().all(|&x| x == 0) || s[2] == 1) {
        return Some(tail);
    }
    // 6to4 2002:AABB:CCDD::/48.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// The relation between an allowed CIDR and one of the ranges that are always denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeniedOverlap {
    /// The allowed CIDR lies inside a denied range: it can never be allowed.
    Inside(IpNet),
    /// The denied range lies inside the allowed CIDR: render it as an `except`.
    Contains(IpNet),
}

/// Every denied range that overlaps `allowed`, and how. CIDRs either nest or are disjoint.
pub fn denied_overlaps(allowed: &IpNet, denied: &[IpNet]) -> Vec<DeniedOverlap> {
    denied
        .iter()
        .filter_map(|d| {
            if d.contains(allowed) {
                Some(DeniedOverlap::Inside(*d))
            } else if allowed.contains(d) {
                Some(DeniedOverlap::Contains(*d))
            } else {
                None
            }
        })
        .collect()
}

/// `0.0.0.0/0` or `::/0`, or any CIDR with a prefix so short it is effectively "anywhere".
pub fn is_unrestricted(net: &IpNet) -> bool {
    net.prefix_len() == 0
}

/// Parses a CIDR and insists that it is in canonical form (no host bits set), because the
/// API server and CNIs disagree on what `10.0.0.1/8` means.
pub fn parse_canonical_cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32"))?;
    if net.trunc() != net {
        return Err(format!("{s:?} has host bits set; write {}", net.trunc()));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn always_denied_constants_parse() {
        assert_eq!(always_denied().len(), ALWAYS_DENIED.len());
    }

    #[test]
    fn classifies_the_dangerous_addresses() {
        let cases = [
            ("169.254.169.254", AddressClass::Metadata),
            ("169.254.170.2", AddressClass::Metadata),
            ("100.100.100.200", AddressClass::Metadata),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.1.2.3", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("0.0.0.0", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Reserved),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.5.4", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::SharedCgnat),
            ("fd12:3456::1", AddressClass::UniqueLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("::ffff:169.254.169.254", AddressClass::Metadata),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:10.1.1.1", AddressClass::Private),
            ("::10.1.1.1", AddressClass::Private),
            ("64:ff9b::a9fe:a9fe", AddressClass::Metadata),
            ("2002:7f00:1::", AddressClass::Loopback),
            ("224.0.0.1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Broadcast),
            ("240.0.0.1", AddressClass::Reserved),
            ("8.8.8.8", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
        ];
        for (addr, want) in cases {
            assert_eq!(class(addr), want, "{addr}");
        }
    }

    #[test]
    fn overlaps_with_denied_ranges() {
        let denied = always_denied();
        let any: IpNet = "0.0.0.0/0".parse().unwrap();
        let contained: Vec<_> = denied_overlaps(&any, &denied)
            .into_iter()
            .filter_map(|o| match o {
                DeniedOverlap::Contains(n) => Some(n.to_string()),
                DeniedOverlap::Inside(_) => None,
            })
            .collect();
        assert!(contained.contains(&"169.254.0.0/16".to_string()));
        assert!(contained.contains(&"100.100.100.200/32".to_string()));
        assert!(!contained.iter().any(|c| c.contains(':')), "v6 ranges are not inside 0.0.0.0/0");

        let imds: IpNet = "169.254.169.254/32".parse().unwrap();
        assert!(matches!(denied_overlaps(&imds, &denied)[0], DeniedOverlap::Inside(_)));
        let public: IpNet = "203.0.113.0/24".parse().unwrap();
        assert!(denied_overlaps(&public, &denied).is_empty());
    }

    #[test]
    fn canonical_cidrs_only() {
        assert!(parse_canonical_cidr("10.0.0.0/8").is_ok());
        assert!(parse_canonical_cidr("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(parse_canonical_cidr("10.0.0.0").is_err());
        assert!(parse_canonical_cidr("not-a-cidr").is_err());
        assert!(is_unrestricted(&parse_canonical_cidr("::/0").unwrap()));
    }
}
