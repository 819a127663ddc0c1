//! The errors of this crate.

use crate::Multihash;

/// What can go wrong providing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The keystore failed (disk full, corrupt data, …); nothing was acknowledged.
    #[error("keystore: {0}")]
    Keystore(#[from] dht_provider_store::StoreError),
    /// The sweep's persisted state does not decode: what did not.
    #[error("sweep state is corrupt: {0}")]
    CorruptState(&'static str),
    /// A keystore write on the blocking pool did not finish (it panicked, or the runtime
    /// is shutting down); what it was to write is not acknowledged.
    #[error("the keystore write did not finish: {0}")]
    WriteAborted(#[source] tokio::task::JoinError),
    /// The sweep's state file could not be read or written.
    #[error("sweep state: {action} {}: {source}", path.display())]
    StateIo {
        /// What was being done (`reading`, `writing`, …).
        action: &'static str,
        /// The state file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The first provide of some keys did not reach enough servers; they stay in the keystore
    /// and are retried and reprovided.
    #[error("{} of the keys could not be provided", failed.len())]
    ProvideFailed {
        /// The keys that failed.
        failed: Vec<Multihash>,
    },
    /// A setting that cannot work (a zero count, a zero timeout); nothing was started.
    #[error("invalid setting {setting}: {reason}")]
    InvalidConfig {
        /// The setting, as its field is named.
        setting: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// The provider was closed.
    #[error("the provider is closed")]
    Closed,
}

/// Runs `write`, a keystore write that waits for the disk, on the blocking pool
/// ([`tokio::task::spawn_blocking`]) rather than on the caller's async thread.
pub(crate) async fn off_async<T: Send + 'static>(
    write: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(write)
        .await
        .map_err(ProviderError::WriteAborted)?
}

/// Refuses `value` of `setting` when it is zero.
pub(crate) fn at_least_one(setting: &'static str, value: u64) -> Result<(), ProviderError> {
    Ok(dht_proto::InvalidSetting::at_least_one(setting, value)?)
}

impl From<dht_proto::InvalidSetting> for ProviderError {
    fn from(e: dht_proto::InvalidSetting) -> Self {
        ProviderError::InvalidConfig {
            setting: e.setting,
            reason: e.reason,
        }
    }
}

/// Generates one `with_<field>` setter per line: `doc, with_name => field: Type;`.
macro_rules! setters {
    ($($(#[$doc:meta])* $with:ident => $field:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $with(mut self, value: $ty) -> Self {
            self.$field = value;
            self
        }
    )*};
}
pub(crate) use setters;
