//! `pipeline`: streaming-pulls the shared topic, opens each envelope, counts words per
//! fixed window and publishes `word: count` to the output topic. See the `pipeline`
//! crate for the guarantees.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cli::flags::{DataflowFlags, KmsFlags, OpenMode};
use envelope::CacheSettings;

/// Pull the shared topic, open each envelope, count words per window, publish the counts.
#[derive(Parser)]
#[command(name = "pipeline", version, args_override_self = true)]
struct Cli {
    #[command(flatten)]
    common: cli::flags::CommonFlags,

    /// Which envelopes to open: `decrypt` (encrypted only), `verify` (signed only), `attest`
    /// (attested only) or `auto` (each by its own envelope).
    #[arg(long, env = "PUBSUB_ENVELOPE_OPEN_MODE", default_value = "auto")]
    mode: OpenMode,

    /// Project for names given as short ids.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    project: Option<String>,

    /// Service-account key file for Pub/Sub and Cloud KMS (else Application Default Credentials).
    #[arg(long = "service_account", visible_alias = "service-account", env = "PUBSUB_ENVELOPE_SERVICE_ACCOUNT")]
    service_account: Option<PathBuf>,

    /// Subscription on the shared topic.
    #[arg(
        long = "input_subscription",
        visible_alias = "input-subscription",
        env = "PUBSUB_ENVELOPE_BUS_SUBSCRIPTION",
        default_value = "message-bus"
    )]
    input_subscription: String,

    /// The shared topic; only used to create the subscription on the emulator.
    #[arg(
        long = "input_topic",
        visible_alias = "input-topic",
        env = "PUBSUB_ENVELOPE_BUS_TOPIC",
        default_value = "common-topic"
    )]
    input_topic: String,

    /// Topic the counts go to.
    #[arg(
        long = "output_topic",
        visible_alias = "output-topic",
        env = "PUBSUB_ENVELOPE_OUTPUT_TOPIC",
        default_value = "df_out"
    )]
    output_topic: String,

    #[command(flatten)]
    dead_letter: cli::flags::DeadLetterFlags,

    /// Fixed window size in seconds.
    #[arg(long = "window_secs", visible_alias = "window-secs", env = "PUBSUB_ENVELOPE_WINDOW_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    window_secs: u64,

    #[command(flatten)]
    kms: KmsFlags,

    #[command(flatten)]
    trust: cli::flags::TrustFlags,

    #[command(flatten)]
    pipeline_key: cli::flags::PipelineKeyFlags,

    /// Seconds an unwrapped data key stays cached (at most 86,400).
    #[arg(long = "cache_ttl_secs", visible_alias = "cache-ttl-secs", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=envelope::limits::MAX_CACHE_TTL.as_secs()))]
    cache_ttl_secs: u64,

    /// Data keys cached at most, per mode (a few hundred bytes each): enough that keys
    /// in use are never evicted, even when every producer rotates every few messages.
    #[arg(long = "cache_capacity", visible_alias = "cache-capacity", default_value_t = CacheSettings::default().capacity, value_parser = clap::value_parser!(u64).range(1..=envelope::limits::MAX_CACHE_CAPACITY))]
    cache_capacity: u64,

    /// Messages held unacknowledged at most (up to 1,000,000); must cover a window's input.
    #[arg(long = "max_outstanding_messages", visible_alias = "max-outstanding-messages", default_value_t = 100_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    max_outstanding_messages: i64,

    /// Streaming-pull streams on the subscription, shared out between the workers (at
    /// least one each); each is fed at a bounded rate (about 2,000 msg/s on the
    /// emulator), so more streams carry more messages.
    #[arg(long, env = "PUBSUB_ENVELOPE_STREAMS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    streams: u16,

    /// Seconds each lease extension reaches (10 to 600); also how soon the messages of a
    /// pipeline that died are redelivered.
    #[arg(long = "lease_extension_secs", visible_alias = "lease-extension-secs", default_value_t = 60, value_parser = clap::value_parser!(u64).range(10..=600))]
    lease_extension_secs: u64,

    /// Threads that open and count messages (default: one per core).
    #[arg(long, env = "PUBSUB_ENVELOPE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,

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
    shutdown_grace_secs: u64,

    #[command(flatten)]
    metrics: cli::flags::MetricsFlags,

    #[command(flatten)]
    dataflow: DataflowFlags,
}

// The pipeline allocates per message (the Google client decodes each into owned
// buffers); mimalloc costs less per allocation than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::report::exit(start(cli))
}

fn start(cli: Cli) -> anyhow::Result<ExitCode> {
    if !cli.common.start::<Cli>()? {
        return Ok(ExitCode::SUCCESS);
    }
    cli.trust.require::<Cli>();
    let workers = match cli.workers {
        Some(workers) => workers.into(),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    // This thread publishes, acks and serves metrics; the workers run runtimes of their
    // own (see `runner::run`).
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(cli, workers))
}

async fn run(cli: Cli, workers: usize) -> anyhow::Result<ExitCode> {
    // Listening from the start: a signal during start-up is not lost.
    let signals = cli::signals::StopSignals::listen()?;
    cli.dataflow.warn_if_given();
    let project = cli.project.as_deref();
    let (input_subscription, project) = bus::names::subscription_and_project(project, &cli.input_subscription)?;
    let project = project.as_deref();
    let account = cli::flags::Account::new(cli.service_account.clone());
    let kms = cli.kms.backend(&account).await?;
    let config = runner::Config {
        output_topic: bus::names::topic(project, &cli.output_topic)?,
        dead_letter_topic: bus::names::topic(project, &cli.dead_letter.dead_letter_topic)?,
        window: Duration::from_secs(cli.window_secs),
        max_outstanding_messages: cli.max_outstanding_messages,
        streams: cli.streams.into(),
        lease_extension: Duration::from_secs(cli.lease_extension_secs),
        workers,
        replica: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis()
        ),
        input_subscription,
        own_key: cli.pipeline_key.key().map(|key| Arc::new(runner::own_key::OwnKey::new(kms.clone(), key))),
    };
    cli.pipeline_key.warn_if_absent(&config.output_topic);

    let opener = Arc::new(
        cli.trust
            .opener(kms.clone(), &cli.kms.tenant_id, cli.mode.accepts())?
            .cache(CacheSettings { ttl: Duration::from_secs(cli.cache_ttl_secs), capacity: cli.cache_capacity })
            .build()?,
    );
    let metrics = Arc::new(cli::metrics::Metrics::new(Some((opener.clone(), kms.clone()))));
    cli.metrics.serve(&metrics).await?;

    let pubsub = bus::PubSub::from_env(|| account.credentials())?;
    pubsub.probe_subscription(&config.input_subscription).await?;
    pubsub.probe_topic(&config.output_topic).await?;
    pubsub.probe_topic(&config.dead_letter_topic).await?;
    let input_topic = bus::names::topic(project, &cli.input_topic)?;
    pubsub.ensure_subscription(&config.input_subscription, &input_topic, config.lease_extension).await?;
    pubsub.ensure_topic(&config.output_topic).await?;
    pubsub.ensure_topic(&config.dead_letter_topic).await?;
    let drain = signals.drain(Duration::from_secs(cli.shutdown_grace_secs));
    let summary = runner::run(&pubsub, opener, config, metrics, drain).await?;
    tracing::info!(kms_calls = kms.calls(), "KMS calls made");
    anyhow::ensure!(
        summary.unpublished == 0,
        "{} panes or dead letters could not be published; their messages were nacked and Pub/Sub will redeliver them",
        summary.unpublished
    );
    Ok(ExitCode::SUCCESS)
}
