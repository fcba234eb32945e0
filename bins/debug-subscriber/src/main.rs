//! `debug-subscriber`: reads the shared topic directly and shows each message opened, or
//! why it was rejected. Rejected messages are acked so that they do not loop; transient
//! failures are nacked for another try.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cli::flags::{KmsFlags, OpenMode};

/// Read the shared topic and show each message opened, or why it was rejected.
/// How long acks may take to reach Pub/Sub after SIGINT or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(name = "debug-subscriber", version)]
struct Cli {
    #[command(flatten)]
    common: cli::flags::CommonFlags,

    /// Which envelopes to open: `decrypt`, `verify`, `attest` or `auto`.
    #[arg(long, env = "PUBSUB_ENVELOPE_OPEN_MODE", default_value = "auto")]
    mode: OpenMode,

    #[command(flatten)]
    account: cli::flags::AccountFlags,

    /// A subscription on the shared topic of this tool's own.
    #[arg(
        long = "pubsub_subscription",
        visible_alias = "pubsub-subscription",
        env = "PUBSUB_ENVELOPE_DEBUG_SUBSCRIPTION",
        default_value = "message-bus-debug"
    )]
    pubsub_subscription: String,

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
    // Listening from the start: a signal during start-up is not lost.
    let signals = cli::signals::StopSignals::listen()?;
    let project = cli.account.pubsub_project_id.as_deref();
    let (subscription, project) = bus::names::subscription_and_project(project, &cli.pubsub_subscription)?;
    let project = project.as_deref();
    let account = cli.account.account();
    let kms = cli.kms.backend(&account).await?;
    let opener = Arc::new(cli.trust.opener(kms.clone(), &cli.kms.tenant_id, cli.mode.accepts())?.build()?);
    let metrics = Arc::new(cli::metrics::Metrics::new(Some((opener.clone(), kms))));
    cli.metrics.serve(&metrics).await?;
    let pubsub = bus::PubSub::from_env(|| account.credentials())?;
    pubsub.probe_subscription(&subscription).await?;
    pubsub
        .ensure_subscription(&subscription, &bus::names::topic(project, &cli.pubsub_topic)?, Duration::from_secs(10))
        .await?;
    tracing::info!("reading {subscription}");

    let mut out = std::io::stdout().lock();
    pubsub
        .tail(&subscription, signals.drain(SHUTDOWN_GRACE), async |message, handler| {
            let id = &message.message_id;
            metrics.received();
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
                        let mut attributes: Vec<_> = opened.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        attributes.sort();
                        let attributes = attributes.join(", ");
                        let attested = match &opened.attestation {
                            Some(attestation) => format!(" attested_by=({attestation})"),
                            None => String::new(),
                        };
                        writeln!(
                            out,
                            "OPENED {id} mode={} kms_key={} sealed_at={sealed_at}{attested} attributes={{{attributes}}}\n  {text}",
                            opened.mode,
                            opened.kms_key.as_ref().map_or("-", |key| key.as_str())
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
                        writeln!(out, "{} {id} reason={}: {error}", status.to_uppercase(), error.reason())?;
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
