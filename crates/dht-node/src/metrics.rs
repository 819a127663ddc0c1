//! Prometheus metrics of a node (prometheus-client), served at `/metrics` by the HTTP API.
//!
//! Counters are bumped as things happen (inbound requests by type, lookups by kind and the
//! requests they sent, HTTP API requests by endpoint); gauges (routing table, keystore,
//! provider progress, transport) are read from the node when the metrics are scraped
//! ([`Metrics::encode`]).

use dht_proto::MessageType;
use dht_provider::ProviderStats;
use dht_routing::OpStats;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::transport::TransportStats;

type Labels = Vec<(&'static str, String)>;

/// The metrics of one node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    inbound: Family<Labels, Counter>,
    lookups: Family<Labels, Counter>,
    lookup_requests: Family<Labels, Counter>,
    api_requests: Family<Labels, Counter>,
    gauges: Gauges,
}

#[derive(Debug, Default)]
struct Gauges {
    table_peers: Gauge,
    keystore_keys: Gauge,
    provider: Family<Labels, Gauge>,
    transport: Family<Labels, Gauge>,
}

/// What [`Metrics::encode`] reads from the node at scrape time.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Snapshot {
    /// Peers in the routing table.
    pub table_peers: usize,
    /// Keys in the keystore (provided by this node).
    pub keystore_keys: u64,
    /// The provider's counters.
    pub provider: ProviderStats,
    /// The transport's counters.
    pub transport: TransportStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `dht` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dht");
        let inbound = Family::<Labels, Counter>::default();
        let lookups = Family::<Labels, Counter>::default();
        let lookup_requests = Family::<Labels, Counter>::default();
        let api_requests = Family::<Labels, Counter>::default();
        let gauges = Gauges::default();
        registry.register(
            "inbound_requests",
            "Kademlia requests received, by message type",
            inbound.clone(),
        );
        registry.register(
            "lookups",
            "DHT operations run by the node, by kind",
            lookups.clone(),
        );
        registry.register(
            "lookup_requests",
            "Requests sent by the node's DHT operations, by message type",
            lookup_requests.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP API requests, by endpoint",
            api_requests.clone(),
        );
        registry.register(
            "routing_table_peers",
            "Peers in the routing table",
            gauges.table_peers.clone(),
        );
        registry.register(
            "keystore_keys",
            "Keys this node provides (held in the keystore)",
            gauges.keystore_keys.clone(),
        );
        registry.register(
            "provider",
            "The provider's progress and counters, by field",
            gauges.provider.clone(),
        );
        registry.register(
            "transport",
            "The transport's counters, by field",
            gauges.transport.clone(),
        );
        Metrics {
            registry,
            inbound,
            lookups,
            lookup_requests,
            api_requests,
            gauges,
        }
    }

    /// Counts an inbound request of type `ty`.
    pub fn inbound(&self, ty: MessageType) {
        self.inbound
            .get_or_create(&vec![("type", ty.to_string())])
            .inc();
    }

    /// Counts a DHT operation of kind `kind` and the requests it sent.
    pub fn lookup(&self, kind: &'static str, stats: &OpStats) {
        self.lookups
            .get_or_create(&vec![("kind", kind.into())])
            .inc();
        for (ty, n) in &stats.requests {
            self.lookup_requests
                .get_or_create(&vec![("type", ty.to_string())])
                .inc_by(*n);
        }
    }

    /// Counts an HTTP API request to `endpoint`.
    pub fn api_request(&self, endpoint: &'static str) {
        self.api_requests
            .get_or_create(&vec![("endpoint", endpoint.into())])
            .inc();
    }

    /// Sets the gauges from `snapshot` and encodes every metric in the Prometheus text
    /// format.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let g = &self.gauges;
        g.table_peers.set(to_i64(snapshot.table_peers as u64));
        g.keystore_keys.set(to_i64(snapshot.keystore_keys));
        let p = &snapshot.provider;
        for (field, value) in [
            ("keys_queued", p.keys_queued),
            ("regions_queued", p.regions_queued),
            ("workers", p.workers as u64),
            ("workers_busy", p.workers_busy as u64),
            ("regions_explored", p.regions_explored),
            ("records_sent_this_cycle", p.records_sent_this_cycle),
            ("records_sent_last_cycle", p.records_sent_last_cycle),
            ("peers_failed_this_cycle", p.peers_failed_this_cycle),
            ("behind_schedule_secs", p.behind_schedule_secs),
            ("find_node_sent", p.find_node_sent),
            ("add_provider_sent", p.add_provider_sent),
            ("add_provider_failed", p.add_provider_failed),
            ("keys_provided", p.keys_provided),
            ("keys_failed", p.keys_failed),
            ("cycle", p.cycle),
        ] {
            g.provider
                .get_or_create(&vec![("field", field.into())])
                .set(to_i64(value));
        }
        let t = &snapshot.transport;
        for (field, value) in [
            ("outbound_streams_opened", t.outbound_streams_opened),
            ("outbound_streams_reused", t.outbound_streams_reused),
            ("outbound_requests_ok", t.outbound_requests_ok),
            ("outbound_requests_failed", t.outbound_requests_failed),
            ("inbound_streams_accepted", t.inbound_streams_accepted),
            ("inbound_streams_refused", t.inbound_streams_refused),
            ("inbound_shed", t.inbound_shed),
            ("inbound_requests", t.inbound_requests),
            ("inbound_stream_errors", t.inbound_stream_errors),
        ] {
            g.transport
                .get_or_create(&vec![("field", field.into())])
                .set(to_i64(value));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_gauges() {
        let metrics = Metrics::new();
        metrics.inbound(MessageType::FindNode);
        metrics.inbound(MessageType::FindNode);
        metrics.api_request("providers");
        let mut stats = OpStats::default();
        stats.requests.insert(MessageType::GetProviders, 7);
        metrics.lookup("find_providers", &stats);
        let snapshot = Snapshot {
            table_peers: 12,
            keystore_keys: 345,
            ..Snapshot::default()
        };
        let text = metrics.encode(&snapshot);
        assert!(
            text.contains("dht_inbound_requests_total{type=\"FIND_NODE\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("dht_lookups_total{kind=\"find_providers\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("dht_lookup_requests_total{type=\"GET_PROVIDERS\"} 7"),
            "{text}"
        );
        assert!(text.contains("dht_routing_table_peers 12"), "{text}");
        assert!(text.contains("dht_keystore_keys 345"), "{text}");
        assert!(
            text.contains("dht_http_requests_total{endpoint=\"providers\"} 1"),
            "{text}"
        );
    }
}
