//! `pipeline`'s flags, in the article's spelling and kebab case, each also settable
//! from the environment.

use std::path::PathBuf;

use clap::Parser;
use cli::flags::{DataflowFlags, KmsFlags, OpenMode};
use envelope::CacheSettings;

/// Pull the shared topic, open each envelope, count words per window, publish the counts.
#[derive(Parser)]
#[command(name = "pipeline", version, args_override_self = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) common: cli::flags::CommonFlags,

    /// Which envelopes to open: `decrypt` (encrypted only), `verify` (signed only), `attest`
    /// (attested only) or `auto` (each by its own envelope).
    #[arg(long, env = "PUBSUB_ENVELOPE_OPEN_MODE", default_value = "auto")]
    pub(crate) mode: OpenMode,

    /// Project for names given as short ids.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    pub(crate) project: Option<String>,

    /// Service-account key file for Pub/Sub and Cloud KMS (else Application Default Credentials).
    #[arg(long = "service_account", visible_alias = "service-account", env = "PUBSUB_ENVELOPE_SERVICE_ACCOUNT")]
    pub(crate) service_account: Option<PathBuf>,

    /// Subscription on the shared topic.
    #[arg(
        long = "input_subscription",
        visible_alias = "input-subscription",
        env = "PUBSUB_ENVELOPE_BUS_SUBSCRIPTION",
        default_value = "message-bus"
    )]
    pub(crate) input_subscription: String,

    /// The shared topic; only used to create the subscription on the emulator.
    #[arg(
        long = "input_topic",
        visible_alias = "input-topic",
        env = "PUBSUB_ENVELOPE_BUS_TOPIC",
        default_value = "common-topic"
    )]
    pub(crate) input_topic: String,

    /// Topic the counts go to.
    #[arg(
        long = "output_topic",
        visible_alias = "output-topic",
        env = "PUBSUB_ENVELOPE_OUTPUT_TOPIC",
        default_value = "df_out"
    )]
    pub(crate) output_topic: String,

    #[command(flatten)]
    pub(crate) dead_letter: cli::flags::DeadLetterFlags,

    /// Fixed window size in seconds.
    #[arg(long = "window_secs", visible_alias = "window-secs", env = "PUBSUB_ENVELOPE_WINDOW_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) window_secs: u64,

    #[command(flatten)]
    pub(crate) kms: KmsFlags,

    #[command(flatten)]
    pub(crate) trust: cli::flags::TrustFlags,

    #[command(flatten)]
    pub(crate) pipeline_key: cli::flags::PipelineKeyFlags,

    /// Distinct words the open panes may hold (up to 100,000,000) before they are all
    /// published early, a pane more per window: bounds memory, about 170 bytes a word,
    /// whatever the input.
    #[arg(long = "max_pane_words", visible_alias = "max-pane-words", env = "PUBSUB_ENVELOPE_MAX_PANE_WORDS", default_value_t = runner::DEFAULT_MAX_PANE_WORDS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000_000))]
    pub(crate) max_pane_words: usize,

    /// Seconds an unwrapped data key stays cached (at most 86,400).
    #[arg(long = "cache_ttl_secs", visible_alias = "cache-ttl-secs", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=envelope::limits::MAX_CACHE_TTL.as_secs()))]
    pub(crate) cache_ttl_secs: u64,

    /// Data keys cached at most, per mode (a few hundred bytes each): enough that keys
    /// in use are never evicted, even when every producer rotates every few messages.
    #[arg(long = "cache_capacity", visible_alias = "cache-capacity", default_value_t = CacheSettings::default().capacity, value_parser = clap::value_parser!(u64).range(1..=envelope::limits::MAX_CACHE_CAPACITY))]
    pub(crate) cache_capacity: u64,

    /// Messages held unacknowledged at most (up to 1,000,000); must cover a window's input.
    #[arg(long = "max_outstanding_messages", visible_alias = "max-outstanding-messages", default_value_t = 100_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub(crate) max_outstanding_messages: i64,

    /// Streaming-pull streams on the subscription, shared out between the workers (at
    /// least one each); each is fed at a bounded rate (about 2,000 msg/s on the
    /// emulator), so more streams carry more messages.
    #[arg(long, env = "PUBSUB_ENVELOPE_STREAMS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) streams: u16,

    /// Seconds each lease extension reaches (10 to 600); also how soon the messages of a
    /// pipeline that died are redelivered.
    #[arg(long = "lease_extension_secs", visible_alias = "lease-extension-secs", default_value_t = 60, value_parser = clap::value_parser!(u64).range(10..=600))]
    pub(crate) lease_extension_secs: u64,

    /// Threads that open and count messages (default: one per core).
    #[arg(long, env = "PUBSUB_ENVELOPE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) workers: Option<u16>,

    /// On SIGINT or SIGTERM, seconds to publish the open panes and ack their messages
    /// before stopping anyway (what is not acked is redelivered). A second signal stops
    /// at once. Keep it under the platform's own grace (Kubernetes: 30 s by default).
    #[arg(
        long = "shutdown_grace_secs",
        visible_alias = "shutdown-grace-secs",
        env = "PUBSUB_ENVELOPE_SHUTDOWN_GRACE_SECS",
        default_value_t = 25,
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    pub(crate) shutdown_grace_secs: u64,

    #[command(flatten)]
    pub(crate) metrics: cli::flags::MetricsFlags,

    #[command(flatten)]
    pub(crate) dataflow: DataflowFlags,
}
