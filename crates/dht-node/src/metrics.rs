//! Prometheus metrics of a node (prometheus-client), served at `/metrics` by the HTTP API.
//!
//! Counters are bumped as things happen (inbound requests by type, lookups by kind and the
//! requests they sent, HTTP API requests by endpoint); gauges (routing table, keystore,
//! provider progress, transport) are read from the node when the metrics are scraped
//! ([`Metrics::encode`]).

use dht_proto::MessageType;
use dht_provider::{Connectivity, ProviderStats};
use dht_routing::OpStats;
use dht_routing_table::{Clock, SystemClock};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{health::Health, transport::TransportStats};

/// The kinds of [`Warning`](crate::health::Warning), as the `dht_provider_warning` gauge
/// labels them.
pub const WARNING_KINDS: [&str; 4] = ["behind_schedule", "offline", "queue_growing", "store_error"];

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
    health: Health,
}

#[derive(Debug, Default)]
struct Gauges {
    table_peers: Gauge,
    keystore_keys: Gauge,
    provider: Family<Labels, Gauge>,
    provider_ratios: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    warnings: Family<Labels, Gauge>,
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
            "provider_ratio",
            "The provider's means and shares, by field",
            gauges.provider_ratios.clone(),
        );
        registry.register(
            "provider_warning",
            "1 while the provider's warning of this kind holds (behind_schedule, offline, queue_growing, store_error)",
            gauges.warnings.clone(),
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
            health: Health::default(),
        }
    }

    /// The provider's warnings and their short history.
    pub fn health(&self) -> &Health {
        &self.health
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
        let now = SystemClock.now();
        let warnings = self.health.observe(now, p);
        for kind in WARNING_KINDS {
            let on = warnings.iter().any(|w| w.kind() == kind);
            g.warnings
                .get_or_create(&vec![("kind", kind.into())])
                .set(i64::from(on));
        }
        for (field, value) in [
            ("mean_region_prefix_len", p.average_region_prefix_len),
            ("keys_per_minute", p.keys_per_minute(now)),
            ("mean_region_secs", p.mean_region_secs()),
            ("mean_servers_per_region", p.mean_servers_per_region()),
            ("mean_holders_per_key", p.mean_holders_per_key()),
            ("reachable_share", p.reachable_share().unwrap_or(0.0)),
        ] {
            g.provider_ratios
                .get_or_create(&vec![("field", field.into())])
                .set(value);
        }
        for (field, value) in [
            ("keys_queued_in_memory", p.keys_queued_in_memory),
            ("oldest_queued_secs", p.oldest_queued_secs),
            ("oldest_retry_secs", p.oldest_retry_secs),
            ("regions_queued_provide", p.regions_queued_provide),
            ("regions_queued_retry", p.regions_queued_retry),
            ("regions_due", p.regions_due),
            ("slices", p.slices),
            ("workers_reserved", p.workers_reserved as u64),
            ("uptime_secs", p.uptime_secs(now)),
            (
                "connectivity_online",
                u64::from(p.connectivity == Connectivity::Online),
            ),
            ("connectivity_since", p.connectivity_since),
            ("last_cycle_secs", p.last_cycle_secs.unwrap_or(0)),
            ("peers_failed_last_cycle", p.peers_failed_last_cycle),
            ("peers_tried_last_cycle", p.peers_tried_last_cycle),
            ("region_jobs", p.region_jobs),
            ("keystore_scan_errors", p.keystore_scan_errors),
            ("state_save_errors", p.state_save_errors),
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
            ("outbound_writes", t.outbound_writes),
            ("inbound_streams_accepted", t.inbound_streams_accepted),
            ("inbound_streams_refused", t.inbound_streams_refused),
            ("inbound_shed", t.inbound_shed),
            ("inbound_requests", t.inbound_requests),
            ("inbound_stream_errors", t.inbound_stream_errors),
            ("outbound_batches", t.outbound_batches),
            ("outbound_batch_records", t.outbound_batch_records),
            ("outbound_batch_stored", t.outbound_batch_stored),
            ("outbound_batches_failed", t.outbound_batches_failed),
            ("outbound_batches_refused", t.outbound_batches_refused),
            ("inbound_batches", t.inbound_batches),
            ("inbound_batch_records", t.inbound_batch_records),
            ("inbound_batch_stored", t.inbound_batch_stored),
            ("inbound_batches_refused", t.inbound_batches_refused),
            ("bytes_sent", t.bytes_sent),
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
