//! The SSRF guard: a webhook URL is configured by a tenant, so the dispatcher must not become a
//! way into the network it runs in. Addresses in loopback, private, shared (CGNAT), link-local,
//! unique-local, multicast, reserved and documentation ranges, and the cloud metadata addresses,
//! are refused unless an allow-list entry covers them. IPv6 addresses that carry an IPv4 address
//! (IPv4-mapped `::ffff:0:0/96`, IPv4-translated `::ffff:0:0:0/96`, IPv4-compatible, NAT64
//! `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`) are judged by
//! every IPv4 address they carry as well: a gateway on the path would deliver them there.
//!
//! The policy is applied where the address is known for certain: in the resolver that `reqwest`
//! connects with — the addresses it answers are the only ones `reqwest` connects to, so a name
//! that answered a public address once and a private one the next time (DNS rebinding) is
//! refused at that connect — and to IP literals in the URL, which `reqwest` never resolves. The
//! client takes no proxy from the environment (see [`crate::client`]): through a proxy the guard
//! would judge the proxy's address while the proxy resolved the tenant's name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};

/// An address range, `addr/prefix` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Text that is not a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address range like 127.0.0.0/8 or ::1/128")]
pub struct InvalidCidr(pub String);

impl Cidr {
    pub const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCidr(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Ranges no webhook may reach unless allow-listed.
const FORBIDDEN: &[Cidr] = &[
    Cidr::v4(0, 0, 0, 0, 8),                         // "this network"
    Cidr::v4(10, 0, 0, 0, 8),                        // private
    Cidr::v4(100, 64, 0, 0, 10), // shared address space (CGNAT); Alibaba metadata
    Cidr::v4(127, 0, 0, 0, 8),   // loopback
    Cidr::v4(169, 254, 0, 0, 16), // link-local; AWS/GCP/Azure metadata 169.254.169.254
    Cidr::v4(172, 16, 0, 0, 12), // private
    Cidr::v4(192, 0, 0, 0, 24),  // IETF protocol assignments; Oracle metadata
    Cidr::v4(192, 0, 2, 0, 24),  // documentation
    Cidr::v4(192, 88, 99, 0, 24), // 6to4 relay
    Cidr::v4(192, 168, 0, 0, 16), // private
    Cidr::v4(198, 18, 0, 0, 15), // benchmarking
    Cidr::v4(198, 51, 100, 0, 24), // documentation
    Cidr::v4(203, 0, 113, 0, 24), // documentation
    Cidr::v4(224, 0, 0, 0, 4),   // multicast
    Cidr::v4(240, 0, 0, 0, 4),   // reserved, broadcast
    Cidr::v4(168, 63, 129, 16, 32), // Azure host (wire server)
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), // unspecified
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), // loopback
    Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard
    Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), // unique-local; AWS metadata fd00:ec2::254
    Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // site-local (deprecated)
    Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), // multicast
];

/// Which addresses webhooks may reach: everything public, plus the allow-listed ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AddressPolicy {
    /// Ranges allowed although they are private (`["127.0.0.0/8"]` for a local receiver).
    pub allow: Vec<Cidr>,
}

/// An address the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {addr}, a non-public address that is not allow-listed")]
pub struct Refused {
    pub host: String,
    pub addr: IpAddr,
}

impl AddressPolicy {
    pub fn allowing(allow: Vec<Cidr>) -> Self {
        AddressPolicy { allow }
    }

    /// Whether a webhook may connect to `ip`: allow-listed, or public and carrying no IPv4
    /// address that is not.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.allow.iter().any(|c| c.contains(ip)) {
            return true;
        }
        let embedded = embedded_v4(ip);
        if !embedded.is_empty() {
            return embedded.iter().all(|v4| self.permits(IpAddr::V4(*v4)));
        }
        !FORBIDDEN.iter().any(|c| c.contains(ip))
    }

    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refused {
                host: host.to_owned(),
                addr: ip,
            })
        }
    }
}

fn v4_of(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
}

/// The IPv4 addresses an IPv6 address carries, by the transition mechanism its prefix names;
/// empty for a plain IPv6 address.
fn embedded_v4(ip: IpAddr) -> Vec<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return Vec::new();
    };
    let s = v6.segments();
    let b = v6.octets();
    match s {
        // IPv4-mapped ::ffff:a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d.
        [0, 0, 0, 0, 0, 0xffff, high, low] | [0, 0, 0, 0, 0xffff, 0, high, low] => {
            vec![v4_of(high, low)]
        }
        // IPv4-compatible ::a.b.c.d (deprecated), but not :: and ::1.
        [0, 0, 0, 0, 0, 0, high, low] if high != 0 || low > 1 => vec![v4_of(high, low)],
        // NAT64 well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => vec![v4_of(high, low)],
        // NAT64 local-use prefix 64:ff9b:1::/48: operators pick the prefix length (RFC 6052),
        // so both the /48 layout (octets 6-7 and 9-10) and the /96 layout are judged.
        [0x64, 0xff9b, 1, ..] => vec![Ipv4Addr::new(b[6], b[7], b[9], b[10]), v4_of(s[6], s[7])],
        // 6to4 2002:AABB:CCDD::/48: the site's IPv4 address follows the prefix.
        [0x2002, high, low, ..] => vec![v4_of(high, low)],
        // Teredo 2001:0::/32: the server's address, and the client's, stored inverted.
        [
            0x2001,
            0,
            server_high,
            server_low,
            _,
            _,
            client_high,
            client_low,
        ] => vec![
            v4_of(server_high, server_low),
            v4_of(!client_high, !client_low),
        ],
        _ => Vec::new(),
    }
}

/// Resolves names for [`GuardedResolver`]; the system resolver unless a test brings its own.
pub type InnerResolver = Arc<dyn Resolve>;

/// The resolver webhooks connect through: system DNS (or an inner resolver), then the policy.
/// A name with any refused address is refused whole, so a receiver cannot mix a public address
/// with a private one. It runs at every new connection, and `reqwest` connects only to what it
/// answered, so the address checked is the address connected to.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
    inner: Option<InnerResolver>,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .field("inner", &self.inner.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        GuardedResolver {
            policy,
            inner: None,
        }
    }

    /// Resolves with `inner` instead of the system resolver, then applies the policy.
    pub fn with_inner(policy: Arc<AddressPolicy>, inner: InnerResolver) -> Self {
        GuardedResolver {
            policy,
            inner: Some(inner),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = match inner {
                Some(inner) => inner.resolve(name).await?.collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            for addr in &addrs {
                policy.check(&host, addr.ip())?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        let policy = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "168.63.129.16",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "ff02::1",
            // NAT64 local-use, /48 layout (10.0.0.1) and /96 layout (169.254.169.254).
            "64:ff9b:1:a00:0:100::",
            "64:ff9b:1::a9fe:a9fe",
            // 6to4 of 127.0.0.1 and of 192.168.0.1.
            "2002:7f00:1::1",
            "2002:c0a8:1::",
            // Teredo: private server 10.0.0.1; client 127.0.0.1 stored inverted.
            "2001:0:a00:1::1",
            "2001:0:808:808::80ff:fefe",
            // IPv4-translated ::ffff:0:10.0.0.1 and IPv4-compatible ::169.254.169.254.
            "::ffff:0:a00:1",
            "::a9fe:a9fe",
        ] {
            assert!(!policy.permits(ip(refused)), "{refused} must be refused");
        }
        for allowed in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            // Teredo server 8.8.8.8, client 1.1.1.1 (inverted: fefe:fefe).
            "2001:0:808:808::fefe:fefe",
        ] {
            assert!(policy.permits(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn allow_listed_ranges_are_permitted() {
        let policy =
            AddressPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]);
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("::1")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")));
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(!policy.permits(ip("169.254.169.254")));
    }

    #[test]
    fn cidrs_parse_and_print() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(ip("10.255.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost_unless_allowed() {
        let refusing = GuardedResolver::new(Arc::new(AddressPolicy::default()));
        let error = match refusing.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(error.downcast_ref::<Refused>().is_some(), "{error}");
        let allowing = GuardedResolver::new(Arc::new(AddressPolicy::allowing(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])));
        let addrs: Vec<SocketAddr> = allowing
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
    }
}
