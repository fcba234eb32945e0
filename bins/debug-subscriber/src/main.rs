//! `debug-subscriber`: reads the shared topic directly and shows each message opened, or
//! why it was rejected. Rejected messages are acked so that they do not loop; transient
//! failures are nacked for another try. With `--dead_letters` it reads the dead-letter
//! topic instead, and with `--redrive` sends back what opens now.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

mod args;
mod dead_letters;
mod show;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use args::Cli;
use clap::Parser;

/// How long acks may take to reach Pub/Sub after SIGINT or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// `--idle_exit_secs` with `--dead_letters` when not given.
const DEAD_LETTERS_IDLE_EXIT_SECS: u64 = 5;
/// How long a message that failed for a transient reason is held before it is nacked.
const RETRY_AFTER: Duration = Duration::from_secs(1);

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
    let mut signals = cli::signals::StopSignals::listen()?;
    let project = cli.account.pubsub_project_id.as_deref();
    let default_subscription =
        if cli.dead_letters { cli::flags::DEAD_LETTER_SUBSCRIPTION } else { "message-bus-debug" };
    let subscription_id = cli.pubsub_subscription.as_deref().unwrap_or(default_subscription);
    let (subscription, project) = bus::names::subscription_and_project(project, subscription_id)?;
    let project = project.as_deref();
    let account = cli.account.account();
    let kms = cli.kms.backend(&account).await?;
    let opener = Arc::new(cli.trust.opener(kms.clone(), &cli.kms.tenant_id, cli.mode.accepts())?.build()?);
    let metrics = Arc::new(runner::metrics::Metrics::new(Some((opener.clone(), kms.clone()))));
    cli.metrics.serve(&metrics).await?;
    let pubsub = bus::PubSub::from_env(&account)?;
    signals.or_exit(pubsub.probe_subscription(&subscription)).await?;
    let bus_topic = bus::names::topic(project, &cli.pubsub_topic)?;
    let idle_exit = cli.idle_exit_secs.map(Duration::from_secs);
    if cli.dead_letters {
        let dead_letter_topic = bus::names::topic(project, &cli.dead_letter.dead_letter_topic)?;
        pubsub.ensure_subscription(&subscription, &dead_letter_topic, Duration::from_secs(60)).await?;
        if cli.redrive {
            signals.or_exit(pubsub.probe_topic(&bus_topic)).await?;
        }
        tracing::info!("reading dead letters from {subscription}");
        metrics.set_ready(true);
        let receipts = match cli.pipeline_key.key() {
            Some(key) => Some(runner::own_key::receipt_opener(kms.clone(), &key)?),
            None => None,
        };
        let settings = dead_letters::Settings {
            receipts: receipts.as_ref(),
            subscription: &subscription,
            redrive_to: cli.redrive.then_some(bus_topic.as_str()),
            idle_exit: idle_exit.unwrap_or(Duration::from_secs(DEAD_LETTERS_IDLE_EXIT_SECS)),
            json: cli.json,
        };
        return dead_letters::run(&pubsub, &opener, settings, signals.drain(SHUTDOWN_GRACE)).await;
    }
    pubsub.ensure_subscription(&subscription, &bus_topic, Duration::from_secs(10)).await?;
    tracing::info!("reading {subscription}");
    metrics.set_ready(true);

    let mut out = std::io::stdout().lock();
    pubsub
        .tail(&subscription, signals.drain(SHUTDOWN_GRACE), idle_exit, async |message, handler| {
            let id = &message.message_id;
            metrics.received(1);
            match opener.open(&message.data, &message.attributes).await {
                Ok(opened) => {
                    writeln!(out, "{}", show::opened(id, &opened, cli.json))?;
                    handler.ack();
                    metrics.message("opened", "");
                }
                Err(error) => {
                    writeln!(out, "{}", show::refused(id, &error, cli.json))?;
                    // A transient failure comes back for another try, after a pause: nacked
                    // at once, a KMS or certificate server that is down would be asked again
                    // as fast as the bus turns. A rejection would only come back again.
                    let status = if error.is_transient() {
                        tokio::spawn(async move {
                            tokio::time::sleep(RETRY_AFTER).await;
                            handler.nack();
                        });
                        "retry"
                    } else {
                        handler.ack();
                        "rejected"
                    };
                    metrics.message(status, error.reason());
                }
            }
            metrics.settled(1);
            out.flush()?;
            Ok(())
        })
        .await
}
