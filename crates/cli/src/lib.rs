//! What the four binaries share, so that each `main` only dispatches (as ripgrep's
//! `crates/cli` and `hiargs.rs`).
//!
//! * [`flags`] holds the command-line flags several binaries take, in the article's
//!   spelling and in kebab case, each also settable from the environment, and turns
//!   them into ready objects: credentials, a KMS backend, an opener.
//! * [`serve`] serves a consumer's metrics (`runner::metrics`) and health over HTTP.
//! * A process's edges: [`logging`] (text or Cloud Logging JSON), [`signals`] (drain on
//!   the first, stop at the second), [`report`] (an error as one headline with its
//!   cause), [`generate`] (man pages and completions) and [`stdin_lines`].
//! * [`escape`] shows message-derived text to a person with its control characters
//!   escaped.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

pub mod escape;
pub mod flags;
pub mod generate;
pub mod logging;
pub mod report;
pub mod serve;
pub mod signals;

/// Sets up text logging to stderr, filtered by `RUST_LOG` (default `info`), for tools
/// without a `--log_format` flag (the benchmark).
pub fn init_logging() {
    logging::init(logging::LogFormat::Text);
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

/// The lines of stdin as they arrive, read on a thread of their own so that a caller
/// can await them (`publisher --input -`, the benchmark's floor).
pub fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    use std::io::BufRead as _;
    let (lines, receiver) = tokio::sync::mpsc::channel(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    receiver
}
