//! `debug-subscriber`: reads the shared topic directly and shows each message opened, or
//! why it was rejected. Rejected messages are acked so that they do not loop; transient
//! failures are nacked for another try. With `--dead_letters` it reads the dead-letter
//! topic instead, and with `--redrive` sends back what opens now.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

mod dead_letters;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cli::escape::{Escaped, escaped};
use cli::flags::{KmsFlags, OpenMode};

/// Read the shared topic and show each message opened, or why it was rejected.
/// How long acks may take to reach Pub/Sub after SIGINT or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(name = "debug-subscriber", version, args_override_self = true)]
struct Cli {
    #[command(flatten)]
    common: cli::flags::CommonFlags,

    /// Which envelopes to open: `decrypt`, `verify`, `attest` or `auto`.
    #[arg(long, env = "PUBSUB_ENVELOPE_OPEN_MODE", default_value = "auto")]
    mode: OpenMode,

    #[command(flatten)]
    account: cli::flags::AccountFlags,

    /// A subscription of this tool's own: on the shared topic (default
    /// `message-bus-debug`), or with `--dead_letters` on the dead-letter topic (default
    /// `dead-letter-debug`).
    #[arg(
        long = "pubsub_subscription",
        visible_alias = "pubsub-subscription",
        env = "PUBSUB_ENVELOPE_DEBUG_SUBSCRIPTION"
    )]
    pubsub_subscription: Option<String>,

    /// Read the dead-letter topic: each dead letter's reason, detail and original
    /// attributes, and whether it opens now with the trust flags given. Reads what is
    /// there and stops once nothing arrives for `--idle_exit_secs`; acks nothing unless
    /// `--redrive`.
    #[arg(long = "dead_letters", visible_alias = "dead-letters")]
    dead_letters: bool,

    /// With `--dead_letters`: publish each original that opens now back to the shared
    /// topic, then ack its dead letter (once the cause is fixed: a trust list, a
    /// restored key). Only dead letters whose receipt holds under --pipeline_kms_key
    /// are redriven (anyone who can publish to the dead-letter topic could otherwise
    /// replay a message through it); the rest are kept.
    #[arg(long, requires_all = ["dead_letters", "pipeline_kms_key"])]
    redrive: bool,

    #[command(flatten)]
    pipeline_key: cli::flags::PipelineKeyFlags,

    #[command(flatten)]
    dead_letter: cli::flags::DeadLetterFlags,

    /// With `--dead_letters`: stop once no dead letter has arrived for this many seconds.
    #[arg(long = "idle_exit_secs", visible_alias = "idle-exit-secs", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_exit_secs: u64,

    /// The shared topic; only used to create the subscription on the emulator.
    #[arg(
        long = "pubsub_topic",
        visible_alias = "pubsub-topic",
        env = "PUBSUB_ENVELOPE_BUS_TOPIC",
        default_value = "common-topic"
    )]
    pubsub_topic: String,

    #[command(flatten)]
    kms: KmsFlags,

    #[command(flatten)]
    trust: cli::flags::TrustFlags,

    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    metrics: cli::flags::MetricsFlags,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::report::exit(run(cli).await.map(|()| std::process::ExitCode::SUCCESS))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if !cli.common.start::<Cli>()? {
        return Ok(());
    }
    cli.trust.require::<Cli>();
    // Listening from the start: a signal during start-up is not lost.
    let signals = cli::signals::StopSignals::listen()?;
    let project = cli.account.pubsub_project_id.as_deref();
    let default_subscription = if cli.dead_letters { "dead-letter-debug" } else { "message-bus-debug" };
    let subscription_id = cli.pubsub_subscription.as_deref().unwrap_or(default_subscription);
    let (subscription, project) = bus::names::subscription_and_project(project, subscription_id)?;
    let project = project.as_deref();
    let account = cli.account.account();
    let kms = cli.kms.backend(&account).await?;
    let opener = Arc::new(cli.trust.opener(kms.clone(), &cli.kms.tenant_id, cli.mode.accepts())?.build()?);
    let metrics = Arc::new(cli::metrics::Metrics::new(Some((opener.clone(), kms.clone()))));
    cli.metrics.serve(&metrics).await?;
    let pubsub = bus::PubSub::from_env(|| account.credentials())?;
    pubsub.probe_subscription(&subscription).await?;
    let bus_topic = bus::names::topic(project, &cli.pubsub_topic)?;
    if cli.dead_letters {
        let dead_letter_topic = bus::names::topic(project, &cli.dead_letter.dead_letter_topic)?;
        pubsub.ensure_subscription(&subscription, &dead_letter_topic, Duration::from_secs(60)).await?;
        if cli.redrive {
            pubsub.probe_topic(&bus_topic).await?;
        }
        tracing::info!("reading dead letters from {subscription}");
        let receipts = match cli.pipeline_key.key() {
            Some(key) => Some(runner::own_key::receipt_opener(kms.clone(), &key)?),
            None => None,
        };
        let settings = dead_letters::Settings {
            receipts: receipts.as_ref(),
            subscription: &subscription,
            redrive_to: cli.redrive.then_some(bus_topic.as_str()),
            idle_exit: Duration::from_secs(cli.idle_exit_secs),
            json: cli.json,
        };
        return dead_letters::run(&pubsub, &opener, settings, signals.drain(SHUTDOWN_GRACE)).await;
    }
    pubsub.ensure_subscription(&subscription, &bus_topic, Duration::from_secs(10)).await?;
    tracing::info!("reading {subscription}");

    let mut out = std::io::stdout().lock();
    pubsub
        .tail(&subscription, signals.drain(SHUTDOWN_GRACE), async |message, handler| {
            let id = &message.message_id;
            metrics.received(1);
            match opener.open(&message.data, &message.attributes).await {
                Ok(opened) => {
                    let text = String::from_utf8_lossy(&opened.data);
                    let sealed_at = humantime::format_rfc3339_micros(opened.sealed_at).to_string();
                    if cli.json {
                        let record = serde_json::json!({
                            "message_id": id, "status": "opened", "mode": opened.mode.as_str(),
                            "kms_key": opened.kms_key.as_ref().map(|key| key.as_str()), "sealed_at": sealed_at,
                            "attested_by": opened.attestation.as_ref().map(ToString::to_string),
                            "attributes": opened.attributes, "data": text,
                        });
                        writeln!(out, "{record}")?;
                    } else {
                        // Escaped: whoever publishes chooses these, and a newline would
                        // start a line that looks like this tool's own.
                        let mut attributes: Vec<_> =
                            opened.attributes.iter().map(|(k, v)| format!("{}={}", Escaped(k), Escaped(v))).collect();
                        attributes.sort();
                        let attributes = attributes.join(", ");
                        let attested = match &opened.attestation {
                            Some(attestation) => format!(" attested_by=({})", escaped(&attestation.to_string())),
                            None => String::new(),
                        };
                        writeln!(
                            out,
                            "OPENED {} mode={} kms_key={} sealed_at={sealed_at}{attested} attributes={{{attributes}}}\n  {}",
                            Escaped(id),
                            opened.mode,
                            opened.kms_key.as_ref().map_or("-", |key| key.as_str()),
                            Escaped(&text)
                        )?;
                    }
                    handler.ack();
                    metrics.message("opened", "");
                }
                Err(error) => {
                    let status = if error.is_transient() { "retry" } else { "rejected" };
                    if cli.json {
                        let record = serde_json::json!({"message_id": id, "status": status, "reason": error.reason(), "detail": error.to_string()});
                        writeln!(out, "{record}")?;
                    } else {
                        let (id, detail) = (Escaped(id), escaped(&error.to_string()));
                        writeln!(out, "{} {id} reason={}: {detail}", status.to_uppercase(), error.reason())?;
                    }
                    if error.is_transient() { handler.nack() } else { handler.ack() }
                    metrics.message(status, error.reason());
                }
            }
            metrics.settled(1);
            out.flush()?;
            Ok(())
        })
        .await
}
