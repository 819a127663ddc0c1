#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod config;
mod error;
mod lookup;
pub mod memory;
mod network;
mod node;
pub mod plot;
pub mod provide;
mod sim;

pub use config::{Churn, Latency, Misbehaviour, ProviderRecords, SimConfig, TableBuild};
pub use error::SimError;
pub use lookup::{LookupReport, LookupSample, quantile};
pub use network::{NetStats, NodeNetwork};
pub use node::{Behaviour, PROVIDE_BATCH, RpcCounts, SimHandler, SimNode};
pub use sim::{ChurnReport, Sim, SimClient, TableQuality};
// The clock and the validator are the test kit's, shared with every crate's tests.
pub use dht_test_kit::{SIM_NAMESPACE, SeqValidator, SimClock};

/// The runtime a simulation runs on: tokio's current-thread scheduler with its clock paused.
///
/// Time jumps to the next timer whenever every task waits, so simulated hours take seconds
/// of wall time; one thread and seeded draws make runs reproducible.
///
/// # Errors
/// If tokio cannot build the runtime (an I/O error).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
}
