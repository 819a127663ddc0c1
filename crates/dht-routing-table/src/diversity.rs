//! The IP diversity filter: a defence against eclipse attacks.
//!
//! An attacker who controls a few hosts can run many peer ids on them and try to fill a
//! victim's buckets. The filter limits how many peers of one IP group (a `/24` for IPv4, a
//! `/48` for IPv6) may sit in one bucket and in the whole table; the defaults, 2 per bucket and
//! 3 per table, are those of go-libp2p-kad-dht's routing-table diversity filter.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use dht_proto::Multiaddr;
use multiaddr::Protocol;

use crate::RejectReason;

/// Limits of the [`DiversityFilter`].
///
/// ```
/// use dht_routing_table::DiversityConfig;
/// let lan = DiversityConfig::default().with_local_network(true);
/// assert_eq!((lan.max_per_bucket, lan.max_per_table), (2, 3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiversityConfig {
    /// At most this many peers of one IP group in one bucket (default 2).
    pub max_per_bucket: usize,
    /// At most this many peers of one IP group in the whole table (default 3).
    pub max_per_table: usize,
    /// Exempt loopback, private, link-local and unspecified addresses from the limits: for a
    /// node serving a local network or a devnet on one machine (default `false`). When
    /// `false`, such addresses are grouped like any other.
    pub local_network: bool,
}

impl Default for DiversityConfig {
    fn default() -> Self {
        DiversityConfig {
            max_per_bucket: 2,
            max_per_table: 3,
            local_network: false,
        }
    }
}

impl DiversityConfig {
    /// Sets [`DiversityConfig::max_per_bucket`].
    #[must_use]
    pub fn with_max_per_bucket(mut self, max: usize) -> Self {
        self.max_per_bucket = max;
        self
    }

    /// Sets [`DiversityConfig::max_per_table`].
    #[must_use]
    pub fn with_max_per_table(mut self, max: usize) -> Self {
        self.max_per_table = max;
        self
    }

    /// Sets [`DiversityConfig::local_network`].
    #[must_use]
    pub fn with_local_network(mut self, local: bool) -> Self {
        self.local_network = local;
        self
    }
}

/// A group of IP addresses that the filter counts together: the first 24 bits of an IPv4
/// address or the first 48 bits of an IPv6 address.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) group as the IPv4 address they carry.
///
/// ```
/// use dht_routing_table::IpGroup;
/// let g = IpGroup::of("203.0.113.7".parse()?);
/// assert_eq!(g, IpGroup::of("203.0.113.200".parse()?));
/// assert_eq!(g.to_string(), "203.0.113.0/24");
/// assert_eq!(IpGroup::of("2001:db8:1:2::1".parse()?).to_string(), "2001:db8:1::/48");
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpGroup {
    /// An IPv4 `/24`: the first three octets.
    V4([u8; 3]),
    /// An IPv6 `/48`: the first six octets.
    V6([u8; 6]),
}

impl IpGroup {
    /// The group of an address.
    pub fn of(ip: IpAddr) -> IpGroup {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of_v4(v4),
                None => {
                    let o = v6.octets();
                    IpGroup::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
                }
            },
        }
    }

    fn of_v4(v4: Ipv4Addr) -> IpGroup {
        let o = v4.octets();
        IpGroup::V4([o[0], o[1], o[2]])
    }
}

impl fmt::Display for IpGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpGroup::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            IpGroup::V6(o) => {
                let mut full = [0u8; 16];
                full[..6].copy_from_slice(o);
                write!(f, "{}/48", Ipv6Addr::from(full))
            }
        }
    }
}

/// Whether an address is loopback, private (RFC 1918, RFC 6598 shared space, IPv6 unique
/// local), link-local or unspecified: the addresses exempt from the filter when
/// [`DiversityConfig::local_network`] is set.
pub fn is_local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local_v4(v4),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
            }
        },
    }
}

fn is_local_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        // 100.64.0.0/10, carrier-grade NAT.
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
}

/// Whether an address is routable on the internet: not local ([`is_local_ip`]) and in none
/// of the ranges that are never a host's public address (this network, documentation and
/// benchmark ranges, the 6to4 relay anycast, multicast, reserved and broadcast). An IPv6
/// address must be global unicast (`2000::/3`, but not the documentation prefix) or in a
/// NAT64 prefix; an IPv4-mapped one is judged as its IPv4 address. These are the ranges
/// go-multiaddr's `IsPublicAddr` uses, so a Go peer and this one agree on what to serve.
///
/// ```
/// use std::net::IpAddr;
/// use dht_routing_table::is_public_ip;
/// for (ip, public) in [
///     ("8.8.8.8", true),
///     ("2606:4700::1111", true),
///     ("10.0.0.1", false),
///     ("203.0.113.7", false),
///     ("224.0.0.251", false),
///     ("ff02::1", false),
///     ("2001:db8::1", false),
///     ("::ffff:192.168.1.1", false),
/// ] {
///     assert_eq!(is_public_ip(ip.parse::<IpAddr>()?), public, "{ip}");
/// }
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => {
                let s = v6.segments();
                let global_unicast = (s[0] & 0xe000) == 0x2000;
                let documentation = s[0] == 0x2001 && s[1] == 0x0db8;
                // 64:ff9b::/96 (RFC 6052) and 64:ff9b:1::/48 (RFC 8215).
                let nat64 =
                    s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1);
                (global_unicast && !documentation) || nat64
            }
        },
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    let unroutable = o[0] == 0 // 0.0.0.0/8, this network
        || (o[0..3] == [192, 0, 0] && o[3] < 64) // 192.0.0.0/26, IETF protocol assignments
        || o[0..3] == [192, 0, 2] // TEST-NET-1
        || o[0..3] == [192, 88, 99] // 6to4 relay anycast
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || o[0..3] == [198, 51, 100] // TEST-NET-2
        || o[0..3] == [203, 0, 113] // TEST-NET-3
        || o[0] >= 224; // multicast, reserved and broadcast
    !is_local_v4(v4) && !unroutable
}

/// Counts peers by IP group, per bucket and per table, and says whether one more fits.
///
/// A peer belongs to the group of every IP address it lists (every `/ip4` and `/ip6`
/// component of every multiaddr, so a relayed address counts against its relay's group too):
/// it is accepted only if it fits in *all* its groups, and then counts once in each. This is
/// the conservative reading, and the one go-libp2p-kbucket's filter uses. A peer with no IP
/// address at all (e.g. only `/dns` addresses, which the table does not resolve) belongs to no
/// group and is always accepted. Tables given an [`AddressBook`](crate::AddressBook) group
/// a connected peer by the IP its connection comes from instead
/// ([`groups_of_ip`](Self::groups_of_ip)), whatever addresses it claims.
///
/// ```
/// use dht_routing_table::{DiversityConfig, DiversityFilter};
/// let mut filter = DiversityFilter::new(DiversityConfig::default());
/// let addrs = ["/ip4/203.0.113.7/tcp/4001".parse()?];
/// let groups = filter.groups(&addrs);
/// for _ in 0..2 {
///     assert!(filter.check(0, &groups).is_ok());
///     filter.add(0, &groups);
/// }
/// assert!(filter.check(0, &groups).is_err()); // a third in bucket 0
/// assert!(filter.check(1, &groups).is_ok()); // fits in bucket 1, the table's third
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct DiversityFilter {
    config: DiversityConfig,
    per_bucket: HashMap<(usize, IpGroup), usize>,
    per_table: HashMap<IpGroup, usize>,
}

impl DiversityFilter {
    /// An empty filter.
    pub fn new(config: DiversityConfig) -> Self {
        DiversityFilter {
            config,
            per_bucket: HashMap::new(),
            per_table: HashMap::new(),
        }
    }

    /// The filter's limits.
    pub fn config(&self) -> &DiversityConfig {
        &self.config
    }

    /// The groups a peer with these addresses belongs to, sorted and without duplicates;
    /// local addresses are left out when [`DiversityConfig::local_network`] is set.
    pub fn groups(&self, addrs: &[Multiaddr]) -> Vec<IpGroup> {
        let mut groups: Vec<IpGroup> = addrs
            .iter()
            .flat_map(ips)
            .filter(|ip| !self.exempt(*ip))
            .map(IpGroup::of)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// The groups of a peer known to connect from `ip`: its group, or none for a local
    /// address when [`DiversityConfig::local_network`] is set.
    pub fn groups_of_ip(&self, ip: IpAddr) -> Vec<IpGroup> {
        if self.exempt(ip) {
            Vec::new()
        } else {
            vec![IpGroup::of(ip)]
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.config.local_network && is_local_ip(ip)
    }

    /// Whether one more peer of `groups` fits in bucket `bucket` and in the table.
    ///
    /// # Errors
    /// [`RejectReason::BucketDiversity`] or [`RejectReason::TableDiversity`] naming the first
    /// group that is full.
    pub fn check(&self, bucket: usize, groups: &[IpGroup]) -> Result<(), RejectReason> {
        for &group in groups {
            if self.bucket_count(bucket, group) >= self.config.max_per_bucket {
                return Err(RejectReason::BucketDiversity { group, bucket });
            }
            if self.table_count(group) >= self.config.max_per_table {
                return Err(RejectReason::TableDiversity { group });
            }
        }
        Ok(())
    }

    /// Counts a peer of `groups` in bucket `bucket` (call after a successful
    /// [`check`](Self::check)).
    pub fn add(&mut self, bucket: usize, groups: &[IpGroup]) {
        for &group in groups {
            *self.per_bucket.entry((bucket, group)).or_insert(0) += 1;
            *self.per_table.entry(group).or_insert(0) += 1;
        }
    }

    /// Forgets a peer of `groups` in bucket `bucket`.
    pub fn remove(&mut self, bucket: usize, groups: &[IpGroup]) {
        for &group in groups {
            decrement(&mut self.per_bucket, (bucket, group));
            decrement(&mut self.per_table, group);
        }
    }

    /// How many peers of `group` are counted in bucket `bucket`.
    pub fn bucket_count(&self, bucket: usize, group: IpGroup) -> usize {
        self.per_bucket.get(&(bucket, group)).copied().unwrap_or(0)
    }

    /// How many peers of `group` are counted in the table.
    pub fn table_count(&self, group: IpGroup) -> usize {
        self.per_table.get(&group).copied().unwrap_or(0)
    }
}

/// Every IP address an address carries (its `/ip4` and `/ip6` components).
pub(crate) fn ips(addr: &Multiaddr) -> impl Iterator<Item = IpAddr> + '_ {
    addr.iter().filter_map(|p| match p {
        Protocol::Ip4(v4) => Some(IpAddr::V4(v4)),
        Protocol::Ip6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    })
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_groups(addrs: &[&str], local_network: bool, expected: &[&str]) {
        let filter =
            DiversityFilter::new(DiversityConfig::default().with_local_network(local_network));
        let addrs: Vec<Multiaddr> = addrs
            .iter()
            .map(|a| a.parse().expect("valid multiaddr"))
            .collect();
        let got: Vec<String> = filter
            .groups(&addrs)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got, expected,
            "addrs {addrs:?}, local_network {local_network}"
        );
    }

    #[test]
    fn groups_of_addresses() {
        check_groups(&[], false, &[]);
        check_groups(&["/dns4/example.com/tcp/4001"], false, &[]);
        check_groups(&["/ip4/1.2.3.4/tcp/1"], false, &["1.2.3.0/24"]);
        check_groups(
            &["/ip4/1.2.3.4/tcp/1", "/ip4/1.2.3.9/udp/1/quic-v1"],
            false,
            &["1.2.3.0/24"],
        );
        check_groups(
            &["/ip4/1.2.3.4/tcp/1", "/ip4/1.2.4.4/tcp/1"],
            false,
            &["1.2.3.0/24", "1.2.4.0/24"],
        );
        check_groups(
            &["/ip6/2001:db8:aa:bb::1/tcp/1"],
            false,
            &["2001:db8:aa::/48"],
        );
        check_groups(&["/ip6/::ffff:1.2.3.4/tcp/1"], false, &["1.2.3.0/24"]);
        check_groups(&["/ip4/127.0.0.1/tcp/1"], false, &["127.0.0.0/24"]);
        check_groups(&["/ip4/127.0.0.1/tcp/1"], true, &[]);
        check_groups(
            &["/ip4/192.168.1.1/tcp/1", "/ip4/8.8.8.8/tcp/1"],
            true,
            &["8.8.8.0/24"],
        );
        check_groups(&["/ip4/10.1.1.1/tcp/1", "/ip4/172.16.0.1/tcp/1"], true, &[]);
        check_groups(
            &["/ip4/100.64.1.1/tcp/1", "/ip4/169.254.1.1/tcp/1"],
            true,
            &[],
        );
        check_groups(
            &["/ip6/::1/tcp/1", "/ip6/fd00::1/tcp/1", "/ip6/fe80::1/tcp/1"],
            true,
            &[],
        );
        // A relayed address counts against the relay's group.
        check_groups(
            &[
                "/ip4/5.6.7.8/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
            ],
            false,
            &["5.6.7.0/24"],
        );
    }

    #[test]
    fn limits_and_removal() {
        let mut f = DiversityFilter::new(DiversityConfig::default());
        let g = vec![IpGroup::of("1.2.3.4".parse().expect("ip"))];
        f.add(0, &g);
        f.add(0, &g);
        assert_eq!(
            f.check(0, &g),
            Err(RejectReason::BucketDiversity {
                group: g[0],
                bucket: 0
            })
        );
        f.add(1, &g);
        assert_eq!(
            f.check(2, &g),
            Err(RejectReason::TableDiversity { group: g[0] })
        );
        f.remove(0, &g);
        assert_eq!(f.check(0, &g), Ok(()));
        assert_eq!((f.bucket_count(0, g[0]), f.table_count(g[0])), (1, 2));
        // Removing what is not there does not underflow.
        f.remove(7, &g);
        assert_eq!(f.bucket_count(7, g[0]), 0);
    }
}
