//! Pub/Sub and KMS glue shared by the four binaries.
//!
//! * [`PubSub`] builds Google's Pub/Sub clients the way Google's own libraries do: against
//!   the emulator (plain HTTP, anonymous credentials) when `PUBSUB_EMULATOR_HOST` is set,
//!   otherwise against the real service with a service-account file or Application
//!   Default Credentials. Against the emulator it creates the topics and subscriptions a
//!   command names; against real Pub/Sub it never creates anything.
//! * [`names`] turns the article's short ids or full resource names into full names.
//! * [`send::Sender`] publishes many messages, paced and with a bounded number in flight.
//! * [`metrics::Metrics`] counts what a consumer does and serves it to Prometheus.
//! * [`flags`] holds the command-line flags every binary shares, in the article's
//!   spelling and in kebab case, each also settable from the environment.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]
#![forbid(unsafe_code)]

pub mod flags;
pub mod metrics;
pub mod names;
mod pubsub;
pub mod send;

pub use pubsub::{MAX_ATTRIBUTES, MAX_MESSAGE_BYTES, PubSub, reject};

/// Sets up logging to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}
