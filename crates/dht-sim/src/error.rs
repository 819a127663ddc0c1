//! The errors of the simulator.

use std::path::PathBuf;

use dht_proto::SharedError;

/// Why a simulation could not be built or an experiment could not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A setting out of range (a share or probability outside `0..=1`).
    #[error("invalid simulation setting: {0}")]
    Config(String),
    /// A setting of a node's handler that cannot work (a zero count).
    #[error(transparent)]
    Setting(#[from] dht_proto::InvalidSetting),
    /// A node identity or address could not be made.
    #[error("could not make a node identity: {0}")]
    Identity(#[source] SharedError),
    /// A provider on a simulated node failed to start, or its keystore failed.
    #[error("provider failed: {0}")]
    Provider(#[source] SharedError),
    /// A plot could not be drawn or written.
    #[error("cannot write the plot {}: {source}", path.display())]
    Plot {
        /// The file (or directory) that could not be written.
        path: PathBuf,
        /// Why.
        source: SharedError,
    },
}
