//! What the devnet and Go benches start with: logs on standard error (`RUST_LOG`, errors
//! only by default), and a multi-threaded runtime that runs the bench to its end.

use std::future::Future;

use anyhow::{Context, Result};

/// Logs go to standard error as `RUST_LOG` says (errors only when it is unset).
pub(crate) fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Runs `bench` on a new multi-threaded runtime.
pub(crate) fn block_on(bench: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(bench)
}
