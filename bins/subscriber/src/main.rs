//! `subscriber` (the article's df_subscriber): tails the pipeline's output topic and
//! prints each `word: count` as it arrives.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

use std::collections::HashSet;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use clap::Parser;

/// Tail the pipeline's output topic and print the word counts.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    account: cli::flags::AccountFlags,

    /// Subscription on the pipeline's output topic.
    #[arg(
        long = "pubsub_subscription",
        visible_alias = "pubsub-subscription",
        env = "PUBSUB_SUBSCRIPTION",
        default_value = "df_subscribe"
    )]
    pubsub_subscription: String,

    /// The output topic; only used to create the subscription on the emulator.
    #[arg(long = "pubsub_topic", visible_alias = "pubsub-topic", env = "PUBSUB_TOPIC", default_value = "df_out")]
    pubsub_topic: String,

    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let cli = Cli::parse();
    let project = cli.account.pubsub_project_id.as_deref();
    let (subscription, project) = bus::names::subscription_and_project(project, &cli.pubsub_subscription)?;
    let project = project.as_deref();
    let account = cli.account.account();
    let pubsub = bus::PubSub::from_env(|| account.credentials())?;
    pubsub
        .ensure_subscription(&subscription, &bus::names::topic(project, &cli.pubsub_topic)?, Duration::from_secs(10))
        .await?;
    tracing::info!("listening for messages on {subscription}");

    // Pub/Sub delivers at least once: a count already printed is acked and skipped.
    let mut seen = HashSet::new();
    let mut out = std::io::stdout().lock();
    pubsub
        .tail(&subscription, cli::shutdown_signal(), async |message, handler| {
            let attribute = |name: &str| message.attributes.get(name).cloned().unwrap_or_default();
            let text = String::from_utf8_lossy(&message.data);
            let (word, count) = text.rsplit_once(": ").unwrap_or((&text, ""));
            let window_start = attribute(runner::WINDOW_START_ATTR);
            let identity =
                (attribute(runner::REPLICA_ATTR), window_start.clone(), attribute(runner::PANE_ATTR), word.to_owned());
            if seen.insert(identity) {
                if cli.json {
                    let record = serde_json::json!({
                        "word": word,
                        "count": count.parse::<u64>().ok(),
                        "window_start": window_start,
                        "window_end": attribute(runner::WINDOW_END_ATTR),
                        "pane": attribute(runner::PANE_ATTR).parse::<u32>().ok(),
                        "replica": attribute(runner::REPLICA_ATTR),
                    });
                    writeln!(out, "{record}")?;
                } else {
                    let now = humantime::format_rfc3339_millis(SystemTime::now());
                    writeln!(out, "{now} INFO {word}: {count}  [window {window_start}]")?;
                }
                out.flush()?;
            }
            handler.ack();
            Ok(())
        })
        .await
}
