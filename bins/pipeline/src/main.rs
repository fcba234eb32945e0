//! `pipeline`: streaming-pulls the shared topic, opens each envelope, counts words per
//! fixed window and publishes `word: count` to the output topic. See the `pipeline`
//! crate for the guarantees.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

mod args;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use args::Cli;
use clap::Parser;
use envelope::CacheSettings;

/// How often the pipeline asks whether Pub/Sub answers (one admin call each): an
/// outage shows as not ready within this plus the probe's 10 s.
const WATCH_EVERY: Duration = Duration::from_secs(10);

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
    let mut signals = cli::signals::StopSignals::listen()?;
    cli.dataflow.warn_if_given();
    let project = cli.project.as_deref();
    let (input_subscription, project) = bus::names::subscription_and_project(project, &cli.input_subscription)?;
    let project = project.as_deref();
    let account = cli::flags::Account::new(cli.service_account.clone());
    let kms = cli.kms.backend(&account).await?;
    let output_topic = bus::names::topic(project, &cli.output_topic)?;
    let dead_letter_topic = bus::names::topic(project, &cli.dead_letter.dead_letter_topic)?;
    let config = runner::Config {
        window: Duration::from_secs(cli.window_secs),
        replica: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis()
        ),
        max_in_flight: runner::MAX_IN_FLIGHT,
        own_key: cli.pipeline_key.key().map(|key| Arc::new(runner::own_key::OwnKey::new(kms.clone(), key))),
        max_pane_words: cli.max_pane_words,
    };
    cli.pipeline_key.warn_if_absent(&output_topic);

    let opener = Arc::new(
        cli.trust
            .opener(kms.clone(), &cli.kms.tenant_id, cli.mode.accepts())?
            .cache(CacheSettings { ttl: Duration::from_secs(cli.cache_ttl_secs), capacity: cli.cache_capacity })
            .build()?,
    );
    let metrics = Arc::new(runner::metrics::Metrics::new(Some((opener.clone(), kms.clone()))));
    cli.metrics.serve(&metrics).await?;

    let pubsub = bus::PubSub::from_env(&account)?;
    signals
        .or_exit(async {
            pubsub.probe_subscription(&input_subscription).await?;
            pubsub.probe_topic(&output_topic).await?;
            pubsub.probe_topic(&dead_letter_topic).await
        })
        .await?;
    let input_topic = bus::names::topic(project, &cli.input_topic)?;
    let lease_extension = Duration::from_secs(cli.lease_extension_secs);
    pubsub.ensure_subscription(&input_subscription, &input_topic, lease_extension).await?;
    pubsub.ensure_topic(&output_topic).await?;
    // On the emulator a topic without a subscription drops what is published to it: the
    // one `debug-subscriber --dead_letters` reads is made with the topic, so that no dead
    // letter is lost before the first read (on Google Cloud, scripts/gcp-setup.sh).
    let dead_letter_reader = bus::names::subscription(project, cli::flags::DEAD_LETTER_SUBSCRIPTION)?;
    pubsub.ensure_subscription(&dead_letter_reader, &dead_letter_topic, Duration::from_secs(60)).await?;
    let (output, dead_letter) = (pubsub.publisher(&output_topic).await?, pubsub.publisher(&dead_letter_topic).await?);
    let sources = runner::PubSubSource::per_worker(
        &pubsub,
        &input_subscription,
        workers,
        cli.streams.into(),
        cli.max_outstanding_messages,
        lease_extension,
    );
    tracing::info!(subscription = %input_subscription, output = %output_topic, streams = cli.streams, "pulling");
    // Not ready while Pub/Sub does not answer (`/readyz` 503, the `ready` gauge 0).
    let watcher = {
        let (pubsub, subscription, metrics) = (pubsub.clone(), input_subscription.clone(), metrics.clone());
        tokio::spawn(async move {
            pubsub.watch_subscription(&subscription, WATCH_EVERY, |answering| metrics.set_answering(answering)).await;
        })
    };
    let drain = signals.drain(Duration::from_secs(cli.shutdown_grace_secs));
    let summary = runner::run(sources, opener, output, dead_letter, config, metrics, drain).await;
    watcher.abort();
    let summary = summary?;
    tracing::info!(kms_calls = kms.calls(), "KMS calls made");
    anyhow::ensure!(
        summary.unpublished == 0,
        "{} panes or dead letters could not be published; their messages were nacked and Pub/Sub will redeliver them",
        summary.unpublished
    );
    Ok(ExitCode::SUCCESS)
}
