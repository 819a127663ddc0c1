#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod api;
mod error;
pub mod explore;
pub mod jobs;
pub mod legacy;
pub mod schedule;
pub mod size;
pub mod state;
mod stats;
mod sweep;

pub use api::{DhtProvider, EitherProvider, MAX_LIST_PAGE};
pub use error::ProviderError;
pub use legacy::{LegacyConfig, LegacyProvider};
pub use state::{FileStateStore, MemoryStateStore, StateStore};
pub use stats::{
    Connectivity, MAX_REGION_TIMES, ProviderStats, REGION_TIMES_BITS, RegionTime, RegionTimes,
};
pub use sweep::{BATCH_ANSWER_TIMEOUT, SweepConfig, SweepParts, SweepingProvider};

/// The keys a provider announces: multihashes (of CIDs) of up to 64-byte digests.
pub type Multihash = dht_provider_store::Multihash;
