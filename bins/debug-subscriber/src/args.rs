//! `debug-subscriber`'s flags, in the article's spelling and kebab case.

use clap::Parser;
use cli::flags::{KmsFlags, OpenMode};

/// Read the shared topic and show each message opened, or why it was rejected.
#[derive(Parser)]
#[command(name = "debug-subscriber", version, args_override_self = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) common: cli::flags::CommonFlags,

    /// Which envelopes to open: `decrypt`, `verify`, `attest` or `auto`.
    #[arg(long, env = "PUBSUB_ENVELOPE_OPEN_MODE", default_value = "auto")]
    pub(crate) mode: OpenMode,

    #[command(flatten)]
    pub(crate) account: cli::flags::AccountFlags,

    /// A subscription of this tool's own: on the shared topic (default
    /// `message-bus-debug`), or with `--dead_letters` on the dead-letter topic (default
    /// `dead-letter-debug`).
    #[arg(
        long = "pubsub_subscription",
        visible_alias = "pubsub-subscription",
        env = "PUBSUB_ENVELOPE_DEBUG_SUBSCRIPTION"
    )]
    pub(crate) pubsub_subscription: Option<String>,

    /// Read the dead-letter topic: each dead letter's reason, detail and original
    /// attributes, and whether it opens now with the trust flags given. Reads what is
    /// there and stops once nothing arrives for `--idle_exit_secs`; acks nothing unless
    /// `--redrive`.
    #[arg(long = "dead_letters", visible_alias = "dead-letters")]
    pub(crate) dead_letters: bool,

    /// With `--dead_letters`: publish each original that opens now back to the shared
    /// topic, then ack its dead letter (once the cause is fixed: a trust list, a
    /// restored key). Only dead letters whose receipt holds under --pipeline_kms_key
    /// are redriven (anyone who can publish to the dead-letter topic could otherwise
    /// replay a message through it); the rest are kept.
    #[arg(long, requires_all = ["dead_letters", "pipeline_kms_key"])]
    pub(crate) redrive: bool,

    #[command(flatten)]
    pub(crate) pipeline_key: cli::flags::PipelineKeyFlags,

    #[command(flatten)]
    pub(crate) dead_letter: cli::flags::DeadLetterFlags,

    /// Stop once nothing has arrived for this many seconds: read what is there, then
    /// exit. With `--dead_letters` 5 by default; on the shared topic it reads until
    /// stopped unless given.
    #[arg(long = "idle_exit_secs", visible_alias = "idle-exit-secs", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) idle_exit_secs: Option<u64>,

    /// The shared topic; only used to create the subscription on the emulator.
    #[arg(
        long = "pubsub_topic",
        visible_alias = "pubsub-topic",
        env = "PUBSUB_ENVELOPE_BUS_TOPIC",
        default_value = "common-topic"
    )]
    pub(crate) pubsub_topic: String,

    #[command(flatten)]
    pub(crate) kms: KmsFlags,

    #[command(flatten)]
    pub(crate) trust: cli::flags::TrustFlags,

    /// One JSON object per line instead of text.
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) metrics: cli::flags::MetricsFlags,
}
