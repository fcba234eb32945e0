//! Stopping like a service: the first SIGINT or SIGTERM asks for a drain; a second one,
//! or a drain that outlasts its grace, ends the process at once.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// A stop signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, systemd, Kubernetes).
    Terminate,
}

impl Signal {
    /// The shell's exit status for a process this signal stopped: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// SIGINT and SIGTERM, listened for from the moment this is made, so that none sent
/// during start-up is missed.
pub struct StopSignals {
    received: tokio::sync::mpsc::UnboundedReceiver<Signal>,
}

impl StopSignals {
    /// Starts listening. Needs a Tokio runtime.
    pub fn listen() -> std::io::Result<Self> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (sender, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    Some(()) = interrupt.recv() => Signal::Interrupt,
                    Some(()) = terminate.recv() => Signal::Terminate,
                    else => break,
                };
                if sender.send(signal).is_err() {
                    break;
                }
            }
        });
        Ok(Self { received })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        match self.received.recv().await {
            Some(signal) => signal,
            // The listener only ends when the receiver is gone.
            None => std::future::pending().await,
        }
    }

    /// Runs `start` (start-up: probing Pub/Sub, which may wait 10 s for an emulator
    /// that is not there) unless a signal comes first: then the process ends at once
    /// with the signal's status, since nothing was received yet that a drain would
    /// settle. Ctrl-C during start-up used to wait the probe out.
    pub async fn or_exit<T>(&mut self, start: impl std::future::Future<Output = T>) -> T {
        tokio::select! {
            biased;
            signal = self.next() => {
                tracing::warn!("{signal} during start-up: stopping");
                std::process::exit(signal.exit_code().into());
            }
            result = start => result,
        }
    }

    /// Resolves on the first signal, which asks the caller to drain. From then on a
    /// second signal ends the process at once (exit 130 or 143), and so does a drain
    /// still running after `grace` (exit 1): what was not acked is redelivered by
    /// Pub/Sub, so stopping early loses nothing but time.
    pub async fn drain(mut self, grace: Duration) {
        let first = self.next().await;
        tracing::info!(
            "{first}: draining (at most {}; a second signal stops at once)",
            humantime::format_duration(grace)
        );
        tokio::spawn(async move {
            tokio::select! {
                second = self.next() => {
                    tracing::warn!("{second} again: stopping at once; what was not acked will be redelivered");
                    std::process::exit(second.exit_code().into());
                }
                () = tokio::time::sleep(grace) => {
                    tracing::error!(
                        "the drain took longer than its grace ({}): stopping; what was not acked will be redelivered",
                        humantime::format_duration(grace)
                    );
                    std::process::exit(1);
                }
            }
        });
    }
}
