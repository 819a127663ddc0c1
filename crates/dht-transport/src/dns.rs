//! The DNS resolver configuration of the transport.
//!
//! `/dns`, `/dns4`, `/dns6` and `/dnsaddr` addresses are resolved with the system's resolver
//! configuration, as Kubo does (five of the six Amino bootstrap peers are `/dnsaddr`). Where
//! the system has none that can be read (a container without `/etc/resolv.conf`, or one that
//! names no server), the node does not fail to start: it warns and resolves through public
//! resolvers (Cloudflare's and Google's, over UDP and TCP).

use std::path::Path;

use hickory_resolver::config::{CLOUDFLARE, GOOGLE};
use libp2p::dns::{ResolverConfig, ResolverOpts};

/// Where the system's resolver configuration is read from.
pub(crate) const SYSTEM_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The resolver configuration of `resolv_conf` (a `resolv.conf(5)` file), or the public
/// resolvers ([`public_resolvers`]) where it cannot be read or names no server.
pub(crate) fn resolver_config(resolv_conf: &Path) -> (ResolverConfig, ResolverOpts) {
    let read = std::fs::read(resolv_conf)
        .map_err(|e| e.to_string())
        .and_then(|data| {
            hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|e| e.to_string())
        });
    match read {
        Ok((config, opts)) if !config.name_servers().is_empty() => (config, opts),
        Ok(_) => {
            tracing::warn!(
                path = %resolv_conf.display(),
                "the system's DNS configuration names no server: resolving through Cloudflare's and Google's public resolvers"
            );
            public_resolvers()
        }
        Err(error) => {
            tracing::warn!(
                path = %resolv_conf.display(),
                %error,
                "cannot read the system's DNS configuration: resolving through Cloudflare's and Google's public resolvers"
            );
            public_resolvers()
        }
    }
}

/// Cloudflare's and Google's resolvers, over UDP and TCP, with the default options.
pub(crate) fn public_resolvers() -> (ResolverConfig, ResolverOpts) {
    let mut config = ResolverConfig::udp_and_tcp(&CLOUDFLARE);
    for server in GOOGLE.udp_and_tcp() {
        config.add_name_server(server);
    }
    (config, ResolverOpts::default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn servers(config: &ResolverConfig) -> Vec<IpAddr> {
        config.name_servers().iter().map(|s| s.ip).collect()
    }

    #[test]
    fn the_system_configuration_is_used_where_it_names_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.53\noptions timeout:3\n").unwrap();
        let (config, _) = resolver_config(&path);
        assert_eq!(servers(&config), ["192.0.2.53".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn a_missing_or_empty_configuration_falls_back_to_public_resolvers() {
        let dir = tempfile::tempdir().unwrap();
        let public = servers(&public_resolvers().0);
        assert!(
            public.contains(&"1.1.1.1".parse::<IpAddr>().unwrap()),
            "{public:?}"
        );
        assert!(
            public.contains(&"8.8.8.8".parse::<IpAddr>().unwrap()),
            "{public:?}"
        );
        let missing = dir.path().join("none");
        assert_eq!(servers(&resolver_config(&missing).0), public);
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# no nameserver line\nsearch example.org\n").unwrap();
        assert_eq!(servers(&resolver_config(&empty).0), public);
    }
}
