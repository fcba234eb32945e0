//! The plaintext floor: the product's Pub/Sub code paths with the envelope taken out.
//! Not a mode of the product; it exists to show what the envelope costs.

use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envelope::OpenError;
use google_cloud_pubsub::model::Message;

/// Flags of `bench plain-publish`.
#[derive(clap::Args)]
pub struct PublishOptions {
    /// Full topic name.
    #[arg(long)]
    topic: String,
    /// Messages per second at most.
    #[arg(long)]
    rate: Option<f64>,
}

/// Publishes each stdin line unprotected, through the publisher's own [`bus::send::Sender`].
pub async fn publish(options: PublishOptions) -> anyhow::Result<()> {
    let pubsub = bus::PubSub::from_env(&bus::credentials::EmulatorOnly)?;
    pubsub.ensure_topic(&options.topic).await?;
    let mut sender = bus::send::Sender::new(pubsub.publisher(&options.topic).await?, options.rate, |_| {});
    let mut received = cli::stdin_lines();
    let mut sent = 0u64;
    while let Some(line) = received.recv().await {
        sender.send(Message::new().set_data(Bytes::from(line?))).await;
        sent += 1;
    }
    let failed = sender.finish().await;
    anyhow::ensure!(failed == 0, "{failed} of {sent} messages could not be published");
    tracing::info!(published = sent, "done");
    Ok(())
}

/// Flags of `bench plain-pipeline`, named as the pipeline's.
#[derive(clap::Args)]
pub struct PipelineOptions {
    #[arg(long = "input_subscription")]
    input_subscription: String,
    #[arg(long = "output_topic")]
    output_topic: String,
    #[arg(long = "dead_letter_topic")]
    dead_letter_topic: String,
    #[arg(long = "window_secs")]
    window_secs: u64,
    #[arg(long)]
    streams: usize,
    #[arg(long = "max_outstanding_messages")]
    max_outstanding_messages: i64,
}

/// Takes a message's data as its text, fingerprinted by its message id.
struct Plaintext;

impl runner::Open for Plaintext {
    async fn open(&self, message: &Message) -> Result<runner::Text, OpenError> {
        let hash = |seed| foldhash::fast::FixedState::with_seed(seed).hash_one(&message.message_id);
        let mut fingerprint = [0; 32];
        for (seed, chunk) in fingerprint.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&hash(seed as u64).to_le_bytes());
        }
        Ok(runner::Text { data: message.data.clone(), fingerprint })
    }
}

/// Runs `runner::run` with no envelope until SIGTERM.
pub async fn pipeline(options: PipelineOptions) -> anyhow::Result<()> {
    let pubsub = bus::PubSub::from_env(&bus::credentials::EmulatorOnly)?;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let config = runner::Config {
        window: Duration::from_secs(options.window_secs),
        replica: std::process::id().to_string(),
        max_in_flight: runner::MAX_IN_FLIGHT,
        own_key: None,
        max_pane_words: runner::DEFAULT_MAX_PANE_WORDS,
    };
    pubsub.ensure_topic(&options.output_topic).await?;
    pubsub.ensure_topic(&options.dead_letter_topic).await?;
    let (output, dead_letter) =
        (pubsub.publisher(&options.output_topic).await?, pubsub.publisher(&options.dead_letter_topic).await?);
    let sources = runner::PubSubSource::per_worker(
        &pubsub,
        &options.input_subscription,
        workers,
        options.streams,
        options.max_outstanding_messages,
        Duration::from_secs(60),
    );
    let metrics = Arc::new(runner::metrics::Metrics::new(None));
    runner::run(sources, Arc::new(Plaintext), output, dead_letter, config, metrics, cli::shutdown_signal()).await?;
    Ok(())
}
