//! Address classification shared by admission (egress CIDRs), rendering (NetworkPolicy
//! exclusions) and the gateway (SSRF defence for URL arguments).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
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
            None => {
                let own = classify_v6(v6);
                // An ISATAP interface identifier names an IPv4 host behind the tunnel router.
                match isatap_v4(v6).map(classify_v4) {
                    Some(inner) if own.is_public() && !inner.is_public() => inner,
                    _ => own,
                }
            }
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
    } else if TUNNELLING_V6.iter().any(|c| in_net(addr, c)) {
        // Teredo and the other IETF protocol assignments: they tunnel to addresses that the
        // prefix does not name (Teredo obfuscates its client's IPv4), so they are never public.
        AddressClass::Reserved
    } else if in_net(addr, "2000::/3") {
        AddressClass::Public
    } else {
        // Outside global unicast: discard-only, Teredo, ORCHID and unassigned space.
        AddressClass::Reserved
    }
}

/// IPv6 prefixes that tunnel to, or stand for, other addresses: IETF protocol assignments
/// (Teredo 2001::/32, benchmarking, ORCHID, AMT, ...), and the NAT64 local-use prefix, whose
/// IPv4 embedding position depends on the site.
pub const TUNNELLING_V6: &[&str] = &["2001::/23", "64:ff9b:1::/48"];

/// Classifies an address and, for IPv6 forms that carry an IPv4 address in their interface
/// identifier (ISATAP), takes the stricter of the two readings.
fn isatap_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    ((s[4] == 0 || s[4] == 0x0200) && s[5] == 0x5efe)
        .then(|| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
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
    // NAT64 well-known prefix 64:ff9b::/96 (the local-use 64:ff9b:1::/48 embeds where the
    // site chooses, so it is classified as a whole: see TUNNELLING_V6).
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
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

/// IPv6 prefixes that carry an IPv4 address, and where: (prefix, its length, the bit offset
/// of the IPv4 address from the most significant bit). Mapped, compatible, NAT64 and 6to4.
const V4_IN_V6: &[(&str, u8, u8)] = &[
    ("::ffff:0:0/96", 96, 96),
    ("::/96", 96, 96),
    ("64:ff9b::/96", 96, 96),
    ("2002::/16", 16, 16),
];

fn v4_embedding(prefix: &str) -> Option<Ipv6Net> {
    prefix.parse().ok()
}

/// The IPv6 spellings of an IPv4 range: mapped, compatible, NAT64 and 6to4.
fn v6_forms(v4: Ipv4Net) -> Vec<IpNet> {
    let bits = u128::from(u32::from(v4.network()));
    V4_IN_V6
        .iter()
        .filter_map(|(prefix, len, offset)| {
            let base = v4_embedding(prefix)?;
            let shift = 128 - u32::from(*offset) - 32;
            let addr = u128::from(base.network()) | (bits << shift);
            Ipv6Net::new(Ipv6Addr::from(addr), len + v4.prefix_len()).ok().map(IpNet::V6)
        })
        .collect()
}

/// `nets` with every IPv4 range also written in each IPv6 form that reaches it, so that a rule
/// cannot name a denied range in another spelling (`::ffff:169.254.169.254/128`,
/// `64:ff9b::a9fe:a9fe/128`, `2002:a9fe:a9fe::/48`), and so that excluded ranges are carved
/// out of IPv6 blocks too.
pub fn in_every_family(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out = nets.to_vec();
    for n in nets {
        if let IpNet::V4(v4) = n {
            out.extend(v6_forms(*v4));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// [`always_denied`] in every family.
pub fn always_denied_everywhere() -> Vec<IpNet> {
    in_every_family(&always_denied())
}

/// How many addresses a set of rules reaches together, counting the IPv6 forms of IPv4
/// addresses as the IPv4 addresses they reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    pub v4: u128,
    pub v6: u128,
}

/// Rules that together reach more than this many IPv4 addresses (a /8) are "the internet".
pub const BROAD_V4: u128 = 1 << 24;
/// Rules that together reach more than this many IPv6 addresses (a /16) are "the internet".
pub const BROAD_V6: u128 = 1 << 112;

impl Coverage {
    /// Whether the rules together reach more than a /8 of IPv4 or a /16 of IPv6.
    pub fn is_broad(&self) -> bool {
        self.v4 > BROAD_V4 || self.v6 > BROAD_V6
    }
}

fn merged_len(mut ranges: Vec<(u128, u128)>) -> u128 {
    ranges.sort_unstable();
    let mut total: u128 = 0;
    let mut current: Option<(u128, u128)> = None;
    for (lo, hi) in ranges {
        match current {
            Some((clo, chi)) if lo <= chi.saturating_add(1) => current = Some((clo, chi.max(hi))),
            Some((clo, chi)) => {
                total = total.saturating_add(chi - clo).saturating_add(1);
                current = Some((lo, hi));
            }
            None => current = Some((lo, hi)),
        }
    }
    if let Some((clo, chi)) = current {
        total = total.saturating_add(chi - clo).saturating_add(1);
    }
    total
}

/// The union of what `nets` reach, by family.
pub fn coverage(nets: &[IpNet]) -> Coverage {
    let mut v4: Vec<(u128, u128)> = Vec::new();
    let mut v6: Vec<(u128, u128)> = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => {
                v4.push((u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast()))))
            }
            IpNet::V6(n) => {
                v6.push((u128::from(n.network()), u128::from(n.broadcast())));
                for (prefix, _, offset) in V4_IN_V6 {
                    let Some(base) = v4_embedding(prefix) else { continue };
                    if n.contains(&base) {
                        v4.push((0, u128::from(u32::MAX)));
                    } else if base.contains(n) {
                        // The IPv4 bits of the range's first and last address.
                        let shift = 128 - u32::from(*offset) - 32;
                        let lo = (u128::from(n.network()) >> shift) & 0xffff_ffff;
                        let hi = (u128::from(n.broadcast()) >> shift) & 0xffff_ffff;
                        v4.push((lo, hi));
                    }
                }
            }
        }
    }
    Coverage { v4: merged_len(v4), v6: merged_len(v6) }
}

/// Zones whose names resolve inside a cluster, a cloud or a private network by convention
/// (RFC 6761, RFC 8375, cloud-internal and Kubernetes zones), never on the public internet.
pub const INTERNAL_ZONES: &[&str] = &[
    "localhost",
    "local",
    "internal",
    "home.arpa",
    "localdomain",
    "lan",
    "intranet",
    "corp",
    "private",
    "svc",
    "cluster.local",
    "in-addr.arpa",
    "ip6.arpa",
    "invalid",
    "test",
];

/// Public zones that answer any name with the address written in it (DNS rebinding and
/// "wildcard DNS" services): `169.254.169.254.nip.io` is the metadata service.
pub const REBINDING_ZONES: &[&str] = &[
    "nip.io",
    "sslip.io",
    "xip.io",
    "traefik.me",
    "localtest.me",
    "lvh.me",
    "vcap.me",
    "fuf.me",
    "localho.st",
    "1u.ms",
    "rbndr.us",
    "rebind.it",
    "rebind.network",
    "lock.cmpxchg8b.com",
    "nip.direct",
    "backname.io",
];

/// Whether some label (or run of labels) of a name spells an IP address: dotted or dashed
/// quads, a single numeric or hexadecimal label, or an IPv6 address with dashes.
fn spells_an_address(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    // Four consecutive numeric labels: 10.0.0.1.example.com.
    if labels.windows(4).any(|w| {
        w.iter().all(|l| !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()))
    }) {
        return true;
    }
    labels.iter().any(|l| {
        let dashed: Vec<&str> = l.split('-').collect();
        let quad = |parts: &[&str]| {
            parts.len() == 4
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        };
        // 169-254-169-254, or app-10-0-0-1 (sslip.io reads the last four).
        let dashed_quad = dashed.windows(4).any(quad);
        let hex8 = l.len() == 8
            && l.bytes().all(|b| b.is_ascii_hexdigit())
            && l.bytes().any(|b| b.is_ascii_digit());
        let numeric = l.len() >= 8 && l.bytes().all(|b| b.is_ascii_digit());
        let hex_literal =
            l.starts_with("0x") && l.len() > 2 && l[2..].bytes().all(|b| b.is_ascii_hexdigit());
        // 2001-db8--1 (sslip.io's IPv6 spelling): a label with "--" and hex groups.
        let dashed_v6 = l.contains("--")
            && l.split('-').all(|g| g.len() <= 4 && g.bytes().all(|b| b.is_ascii_hexdigit()));
        dashed_quad || hex8 || numeric || hex_literal || dashed_v6
    })
}

/// Why a DNS name may resolve to an internal address (the cluster, a cloud's metadata service,
/// a private network), or `None` for an ordinary public name. `name` is lower case, without a
/// trailing dot; a leading `*.` (a wildcard rule) is judged by the zone it covers.
pub fn internal_name_reason(name: &str) -> Option<&'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let (wildcard, bare) = match name.strip_prefix("*.") {
        Some(zone) => (true, zone),
        None => (false, name),
    };
    if bare.is_empty() {
        return Some("an empty name");
    }
    if bare.parse::<IpAddr>().is_ok() || bare.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Some("an address written as a name");
    }
    if !bare.contains('.') {
        return Some(if wildcard {
            "a wildcard over a whole top-level domain"
        } else {
            "a single-label name, which resolves through the cluster's search domains"
        });
    }
    let in_zone = |z: &&str| bare == *z || bare.ends_with(&format!(".{z}"));
    if bare.contains(".svc.") || INTERNAL_ZONES.iter().any(in_zone) {
        return Some("a name in an internal zone (cluster, cloud-internal or local network)");
    }
    if REBINDING_ZONES.iter().any(in_zone) {
        return Some("a wildcard-DNS zone that answers with whatever address the name spells");
    }
    if spells_an_address(bare) {
        return Some("a name that spells an IP address (a rebinding-style name)");
    }
    None
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
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn tunnelled_and_embedded_ipv6_forms_are_never_public() {
        for (addr, want) in [
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", AddressClass::Reserved), // Teredo
            ("2001:2::1", AddressClass::Reserved),                            // benchmarking
            ("2001:20::1", AddressClass::Reserved),                           // ORCHIDv2
            ("64:ff9b:1::a9fe:a9fe", AddressClass::Reserved),                 // NAT64 local use
            ("64:ff9b::a9fe:a9fe", AddressClass::Metadata),
            ("2002:a9fe:a9fe::1", AddressClass::Metadata), // 6to4
            ("::a9fe:a9fe", AddressClass::Metadata),       // compatible
            ("2606:4700::5efe:a9fe:a9fe", AddressClass::Metadata), // ISATAP
            ("2606:4700::200:5efe:a00:1", AddressClass::Private), // ISATAP, 10.0.0.1
            ("2606:4700::5efe:808:808", AddressClass::Public),
        ] {
            assert_eq!(class(addr), want, "{addr}");
        }
    }

    #[test]
    fn denied_ranges_are_recognised_in_every_ipv6_spelling() {
        let denied = always_denied_everywhere();
        for spelled in [
            "::ffff:169.254.169.254/128",
            "::ffff:a9fe:0/112",
            "::169.254.169.254/128",
            "64:ff9b::a9fe:a9fe/128",
            "2002:a9fe:a9fe::/48",
            "::ffff:100.100.100.200/128",
        ] {
            let n: IpNet = spelled.parse().unwrap();
            assert!(
                denied_overlaps(&n, &denied).iter().any(|o| matches!(o, DeniedOverlap::Inside(_))),
                "{spelled} is not recognised as denied"
            );
        }
        // A broad IPv6 block gets every IPv6 form of the IPv4 metadata range carved out.
        let any6: IpNet = "::/0".parse().unwrap();
        let carved: Vec<String> = denied_overlaps(&any6, &denied)
            .into_iter()
            .filter_map(|o| match o {
                DeniedOverlap::Contains(n) => Some(n.to_string()),
                DeniedOverlap::Inside(_) => None,
            })
            .collect();
        for want in ["::ffff:169.254.0.0/112", "64:ff9b::a9fe:0/112", "2002:a9fe::/32", "fe80::/10"]
        {
            assert!(carved.iter().any(|c| c == want), "{want} not carved out of ::/0: {carved:?}");
        }
        let public: IpNet = "2606:4700::/32".parse().unwrap();
        assert!(denied_overlaps(&public, &denied).is_empty());
    }

    #[test]
    fn breadth_is_judged_by_what_rules_cover_together() {
        assert!(coverage(&nets(&["0.0.0.0/0"])).is_broad());
        assert!(coverage(&nets(&["0.0.0.0/1", "128.0.0.0/1"])).is_broad());
        assert!(coverage(&nets(&["3.0.0.0/8", "4.0.0.0/8"])).is_broad());
        assert!(coverage(&nets(&["::ffff:0:0/96"])).is_broad(), "all of IPv4, mapped");
        assert!(coverage(&nets(&["::ffff:0.0.0.0/98"])).is_broad(), "a quarter of IPv4, mapped");
        assert!(coverage(&nets(&["2000::/3"])).is_broad());
        assert!(coverage(&nets(&["::/0"])).is_broad());
        assert!(!coverage(&nets(&["3.0.0.0/8"])).is_broad(), "one /8 is not the internet");
        assert!(!coverage(&nets(&["3.0.0.0/8", "3.0.0.0/9"])).is_broad(), "overlaps count once");
        assert!(!coverage(&nets(&["203.0.113.0/24", "2606:4700::/32"])).is_broad());
        assert_eq!(coverage(&nets(&["10.0.0.0/24", "10.0.1.0/24"])).v4, 512);
    }

    #[test]
    fn internal_names_are_recognised() {
        for name in [
            "kubernetes",
            "metadata",
            "metadata.google.internal",
            "*.internal",
            "kubernetes.default.svc",
            "api.default.svc.cluster.local",
            "*.svc.cluster.local",
            "printer.local",
            "router.home.arpa",
            "169.254.169.254.nip.io",
            "app.10.0.0.1.sslip.io",
            "169-254-169-254.example.com",
            "a9fea9fe.rbndr.us",
            "anything.localtest.me",
            "0xa9fea9fe",
            "2852039166",
            "*.com",
            "10.0.0.1",
        ] {
            assert!(internal_name_reason(name).is_some(), "{name} passed as public");
        }
        for name in [
            "api.github.com",
            "login.example.com",
            "*.googleapis.com",
            "v2.api.example.org",
            "events2024.example.com",
            "s3.eu-west-1.amazonaws.com",
        ] {
            assert_eq!(internal_name_reason(name), None, "{name}");
        }
    }
}
