//! `subscriber` (the article's df_subscriber): tails the pipeline's output topic and
//! prints each window's word counts, summed over the replicas and panes that counted
//! parts of it, updated as late panes arrive.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

mod totals;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use totals::{Added, Totals};

/// How long acks may take to reach Pub/Sub after SIGINT or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Tail the pipeline's output topic and print each window's word counts, summed over
/// replicas and panes.
#[derive(Parser)]
#[command(name = "subscriber", version)]
struct Cli {
    #[command(flatten)]
    common: cli::flags::CommonFlags,

    #[command(flatten)]
    account: cli::flags::AccountFlags,

    /// Subscription on the pipeline's output topic.
    #[arg(
        long = "pubsub_subscription",
        visible_alias = "pubsub-subscription",
        env = "PUBSUB_ENVELOPE_OUTPUT_SUBSCRIPTION",
        default_value = "df_subscribe"
    )]
    pubsub_subscription: String,

    /// The output topic; only used to create the subscription on the emulator.
    #[arg(
        long = "pubsub_topic",
        visible_alias = "pubsub-topic",
        env = "PUBSUB_ENVELOPE_OUTPUT_TOPIC",
        default_value = "df_out"
    )]
    pubsub_topic: String,

    /// One JSON record per window update (`window_start`, `window_end`, `total`,
    /// `replicas`, `panes`, `partial`, `counts`, every word) instead of text.
    #[arg(long)]
    json: bool,

    /// Text output: the most frequent words shown per window, then how many more
    /// (0: every word).
    #[arg(long, default_value_t = 10)]
    top: usize,

    /// Forget a window once no part of it has arrived for this many seconds (at most a
    /// week), so that memory stays flat however long the subscriber runs.
    #[arg(long = "forget_after_secs", visible_alias = "forget-after-secs", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    forget_after_secs: u64,

    #[command(flatten)]
    pipeline_key: cli::flags::PipelineKeyFlags,

    /// How to reach the KMS that holds --pipeline_kms_key (unused without it).
    #[command(flatten)]
    kms: cli::flags::KmsFlags,

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
    let mut signals = cli::signals::StopSignals::listen()?;
    let project = cli.account.pubsub_project_id.as_deref();
    let (subscription, project) = bus::names::subscription_and_project(project, &cli.pubsub_subscription)?;
    let project = project.as_deref();
    let account = cli.account.account();
    // With the pipeline's key, only output sealed under it is counted: whoever else can
    // publish to the output topic cannot pass counts off as the pipeline's.
    cli.pipeline_key.warn_if_absent(&cli.pubsub_topic);
    let opener = match cli.pipeline_key.key() {
        Some(key) => Some(runner::own_key::output_opener(cli.kms.backend(&account).await?, &key)?),
        None => None,
    };
    // Parts by outcome (`counted`, `duplicate`, `skipped` with why, `retry`), and health:
    // ready while it listens.
    let metrics = Arc::new(runner::metrics::Metrics::new(None));
    cli.metrics.serve(&metrics).await?;
    let pubsub = bus::PubSub::from_env(&account)?;
    signals.or_exit(pubsub.probe_subscription(&subscription)).await?;
    pubsub
        .ensure_subscription(&subscription, &bus::names::topic(project, &cli.pubsub_topic)?, Duration::from_secs(10))
        .await?;
    tracing::info!("listening for messages on {subscription}");
    metrics.set_ready(true);
    let stop = async {
        signals.drain(SHUTDOWN_GRACE).await;
        metrics.set_ready(false);
    };

    // A little before the subscription was made or found: a window that ended before
    // may have had parts published before this subscriber could see them.
    let listening_since = std::time::SystemTime::now();
    let totals = Arc::new(Mutex::new(Totals::new(Duration::from_secs(cli.forget_after_secs), listening_since)));
    // Parts of a pane arrive one word at a time: a window is printed when its sum
    // changed and no part has come for PRINT_EVERY, rather than once per word.
    let format = Format { json: cli.json, top: cli.top };
    let printer = tokio::spawn(print_changes(totals.clone(), format));
    let mut skipped = 0u64;
    let tailed = pubsub
        .tail(&subscription, stop, None, async |message, handler| {
            let mut refused = "";
            let added = match &opener {
                Some(opener) => match opener.open(&message.data, &message.attributes).await {
                    Ok(opened) => lock(&totals).add(&opened.attributes, &opened.data, Instant::now()),
                    // The KMS did not answer: the part is the pipeline's for all we know,
                    // so it comes back rather than being lost.
                    Err(error) if error.is_transient() => {
                        tracing::warn!(message_id = %message.message_id, reason = error.reason(), %error, "could not open a part now; it will be redelivered");
                        handler.nack();
                        metrics.message("retry", error.reason());
                        return Ok(());
                    }
                    Err(error) => {
                        tracing::warn!(
                            message_id = %message.message_id, reason = error.reason(), %error,
                            "skipping a message not sealed under --pipeline_kms_key: not the pipeline's output"
                        );
                        refused = error.reason();
                        Added::Unauthenticated
                    }
                },
                None => lock(&totals).add(&message.attributes, &message.data, Instant::now()),
            };
            match added {
                Added::Counted => metrics.message("counted", ""),
                Added::Repeat => metrics.message("duplicate", ""),
                Added::NotPipelineOutput => metrics.message("skipped", "not_pipeline_output"),
                Added::Unauthenticated => metrics.message("skipped", refused),
            }
            if added == Added::NotPipelineOutput {
                if skipped == 0 {
                    let sealed = message.attributes.contains_key("envelope_version");
                    tracing::warn!(
                        message_id = %message.message_id,
                        "skipping messages that are not pipeline output (no window attributes, or not `word: count`): {}",
                        if sealed {
                            "they are sealed: give the pipeline's --pipeline_kms_key"
                        } else {
                            "is --pubsub_subscription on the pipeline's output topic?"
                        }
                    );
                }
                skipped += 1;
            } else if added == Added::Unauthenticated {
                skipped += 1;
            }
            handler.ack();
            Ok(())
        })
        .await;
    printer.abort();
    print(&mut lock(&totals), format, Duration::ZERO)?;
    let forgotten = lock(&totals).forgotten;
    tracing::info!(skipped, forgotten_windows = forgotten, "stopped");
    tailed
}

/// How often changed windows are looked for, and how long one must have been quiet to
/// be printed.
const PRINT_EVERY: Duration = Duration::from_millis(500);

/// How windows are printed.
#[derive(Clone, Copy)]
struct Format {
    json: bool,
    top: usize,
}

async fn print_changes(totals: Arc<Mutex<Totals>>, format: Format) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(PRINT_EVERY);
    loop {
        tick.tick().await;
        let mut totals = lock(&totals);
        print(&mut totals, format, PRINT_EVERY)?;
        let forgotten = totals.forget_quiet(Instant::now());
        if forgotten > 0 {
            tracing::info!(forgotten, held = totals.len(), "forgot windows no part reached for --forget_after_secs");
        }
    }
}

/// Prints the windows that changed and have been quiet for `quiet`.
fn print(totals: &mut Totals, format: Format, quiet: Duration) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for snapshot in totals.take_changed(Instant::now(), quiet) {
        if format.json {
            writeln!(out, "{}", snapshot.json())?;
        } else {
            write!(out, "{}", snapshot.text(format.top))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn lock(totals: &Mutex<Totals>) -> std::sync::MutexGuard<'_, Totals> {
    totals.lock().expect("the printer does not panic holding the lock")
}
