#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
// `HandlerError` names peers (80-byte ids) for clear diagnostics; errors are the rare path
// (bad input), so their size costs nothing that matters.
#![allow(clippy::result_large_err)]

mod cbor;
mod config;
mod error;
mod handler;
mod ipns;
mod rate;
mod time;
mod validator;

pub use config::{HandlerConfig, RateLimit};
pub use error::HandlerError;
pub use handler::{BatchAnswer, Handler, Sender, is_public_addr};
pub use ipns::{IpnsValidator, MAX_IPNS_RECORD_SIZE};
pub use rate::ip_bucket;
pub use time::format_rfc3339;
// The record validator trait is dht-proto's, so that the client (dht-routing) and the server
// name one trait; re-exported here beside the validators that implement it.
pub use dht_proto::{ValidationError, Validator, split_key};
pub use validator::{NamespacedValidator, PublicKeyValidator};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handler_is_send_and_sync() {
        assert_send_sync::<
            Handler<
                dht_routing_table::KBucketTable,
                dht_provider_store::MemoryStore,
                std::sync::Arc<dht_provider_store::MemoryStore>,
            >,
        >();
        assert_send_sync::<NamespacedValidator>();
        assert_send_sync::<HandlerError>();
    }
}
