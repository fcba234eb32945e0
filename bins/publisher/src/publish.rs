//! The publish loop: seal each text, publish it, print its id, and say what was done.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use bytes::Bytes;
use envelope::{AttestBy, Attributes, KeyVersionName, Mode, RotationPolicy, Sealer};
use google_cloud_pubsub::model::Message;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::Cli;
use crate::texts::Texts;

pub async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    // Listening from the start: a Ctrl-C during start-up is not lost.
    let mut signals = cli::signals::StopSignals::listen()?;
    let attest = cli.mode == Mode::Attest;
    anyhow::ensure!(!cli.attest_with_service_account || attest, "--attest_with_service_account needs --mode attest");
    anyhow::ensure!(!cli.kms_sign_every_message || attest, "--kms_sign_every_message applies to --mode attest only");
    let topic = bus::names::topic(cli.account.pubsub_project_id.as_deref(), &cli.pubsub_topic)?;
    let attributes: Attributes = cli.attributes.iter().cloned().collect();
    let attribute_bytes = attributes.iter().map(|(key, value)| key.len() + value.len()).sum();
    // Every given line is checked against Pub/Sub's limit before anything is sent.
    let mut texts = Texts::from_cli(cli, attribute_bytes)?;
    let article_run = cli.message.is_empty() && cli.input.is_none();
    let policy = RotationPolicy {
        max_age: Duration::from_secs(cli.key_max_age_secs),
        max_messages: cli.key_max_messages.unwrap_or(if article_run {
            5
        } else {
            RotationPolicy::default().max_messages
        }),
        ..RotationPolicy::default()
    };
    let account = cli.account.account();
    let kms = cli.kms.backend(&account).await?;
    let tenant_id = cli.kms.tenant_id.clone();
    let (signer, sealer) = match cli.mode {
        Mode::Attest if cli.attest_with_service_account => {
            let signer = service_account_signer(cli, &account)?;
            (signer.email().to_owned(), Sealer::service_account(signer))
        }
        Mode::Attest => {
            let version = KeyVersionName::new(cli.key.name()?, cli.kms_key_version)?;
            let by = if cli.kms_sign_every_message { AttestBy::KmsEachMessage } else { AttestBy::SessionKey };
            let lifetime = policy.max_age + envelope::limits::CERTIFICATE_SLACK;
            if by == AttestBy::SessionKey && lifetime > envelope::limits::DEFAULT_MAX_CERTIFICATE_LIFETIME {
                tracing::warn!(
                    lifetime_secs = lifetime.as_secs(),
                    "--key_max_age_secs makes session certificates that consumers refuse by default \
                     (certificate_lifetime_too_long, over {} s): rotate more often, or have them raise \
                     --max_certificate_lifetime_secs",
                    envelope::limits::DEFAULT_MAX_CERTIFICATE_LIFETIME.as_secs()
                );
            }
            (version.to_string(), Sealer::attest(kms.clone(), version, tenant_id, by))
        }
        Mode::Encrypt => {
            let key = cli.key.name()?;
            (key.to_string(), Sealer::encrypt(kms.clone(), key, tenant_id))
        }
        Mode::Sign => {
            let key = cli.key.name()?;
            (key.to_string(), Sealer::sign(kms.clone(), key, tenant_id))
        }
    };
    let mode = sealer.mode();
    let mut sealer = sealer.with_policy(policy).with_keys_ahead(cli.keys_ahead.into());
    let pubsub = bus::PubSub::from_env(&account)?;
    signals.or_exit(pubsub.probe_topic(&topic)).await?;
    pubsub.ensure_topic(&topic).await?;
    // A project typo on the emulator makes a topic of its own, which nobody reads.
    if pubsub.topic_has_subscription(&topic).await == Some(false) {
        tracing::warn!(
            %topic,
            "the topic has no subscription on the emulator, so what is published to it is dropped: is \
             --pubsub_project_id right, and is the pipeline (which subscribes) started?"
        );
    }

    let total = texts.total(cli.count);
    let progress = match total {
        Some(total) if std::io::stderr().is_terminal() && total >= 100 => {
            let bar = ProgressBar::new(total);
            // No `eta`: the first rate, measured across the first wrap, is far too low
            // and showed hours for a run of seconds.
            let style = ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} {elapsed}");
            bar.set_style(style.expect("valid template"));
            bar
        }
        _ => ProgressBar::hidden(),
    };
    // One line per message id; buffered unless someone is watching, as a write per
    // line cost more than the sealing.
    let interactive = std::io::stdout().is_terminal();
    let mut ids = std::io::BufWriter::new(std::io::stdout());
    let bar = progress.clone();
    // Called as each publish is acknowledged (the sender logs failures, once per run of
    // one error): ids and progress move while input is still coming.
    let mut sender = bus::send::Sender::new(pubsub.publisher(&topic).await?, cli.rate, move |reported| {
        // Flushed when no more results wait: every id of a slow run at once, those of a
        // fast one in batches (a write per line cost more than the sealing).
        let written = match reported {
            None => ids.flush(),
            Some(result) => {
                bar.inc(1);
                match result {
                    Ok(id) if interactive => {
                        bar.suspend(|| println!("{id}"));
                        Ok(())
                    }
                    Ok(id) => writeln!(ids, "{id}"),
                    Err(_) => Ok(()),
                }
            }
        };
        written.unwrap_or_else(|error| tracing::warn!(%error, "cannot print a message id"));
    });
    tracing::info!(%topic, %signer, %mode, total, "publishing");
    let mut stopped_by = None;
    let mut failure = None;
    loop {
        let sent = sender.queued();
        if total.is_some_and(|total| sent >= total) {
            break;
        }
        let next = async {
            let Some(text) = texts.get(sent).await? else { return Ok(false) };
            // KMS is only called when the data key rotates; a transient failure there is
            // retried with backoff, and past the last try the run fails without publishing.
            let sealed = seal_with_retries(&mut sealer, Bytes::from(text), &attributes)
                .await
                .with_context(|| format!("cannot seal message {sent}"))?;
            check_size(&sealed, sent)?;
            sender.send(Message::new().set_data(sealed.data).set_attributes(sealed.attributes)).await;
            anyhow::Ok(true)
        };
        // Cancelling `next` loses nothing that was sent: a message is counted as queued
        // once it is handed to the publisher, and then awaited below.
        tokio::select! {
            biased;
            signal = signals.next() => {
                stopped_by = Some(signal);
                break;
            }
            more = next => match more {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            },
        }
    }
    if let Some(signal) = stopped_by {
        progress.suspend(|| {
            tracing::warn!(
                in_flight = sender.in_flight(),
                "{signal}: reading no more input; waiting for the messages in flight (a second signal stops at once)"
            );
        });
        tokio::spawn(async move {
            let second = signals.next().await;
            tracing::warn!(
                "{second} again: stopping without waiting; unconfirmed messages may or may not be published"
            );
            std::process::exit(second.exit_code().into());
        });
    }
    let queued = sender.queued();
    let failed = sender.finish().await;
    progress.finish_and_clear();
    let published = queued - failed;
    let keys = sealer.data_keys_made();
    let calls = kms.calls();
    let stopped = stopped_by.map(|signal| format!(", stopped by {signal}")).unwrap_or_default();
    // The fields repeat the sentence for machines: `scripts/bench.sh` and JSON logs read them.
    tracing::info!(
        data_keys = keys,
        kms_calls = calls,
        "published {published} of {queued} messages ({failed} failed) under {keys} data keys, {calls} KMS calls{stopped}"
    );
    if let Some(error) = failure {
        return Err(error);
    }
    anyhow::ensure!(failed == 0, "{failed} of {queued} messages could not be published");
    Ok(stopped_by.map_or(ExitCode::SUCCESS, |signal| ExitCode::from(signal.exit_code())))
}

/// Refuses a sealed message Pub/Sub would refuse: over 10 MB of data and attributes, or
/// over 100 attributes. (Lines of a file are checked before anything is sent; this
/// catches stdin's, and what sealing added.)
fn check_size(sealed: &envelope::Sealed, index: u64) -> anyhow::Result<()> {
    let size = sealed.data.len() + sealed.attributes.iter().map(|(key, value)| key.len() + value.len()).sum::<usize>();
    anyhow::ensure!(
        size <= bus::MAX_MESSAGE_BYTES,
        "message {index} would be {size} bytes sealed, over Pub/Sub's limit of {} bytes a message; nothing of it was sent",
        bus::MAX_MESSAGE_BYTES
    );
    anyhow::ensure!(
        sealed.attributes.len() <= bus::MAX_ATTRIBUTES,
        "message {index} would carry {} attributes sealed, over Pub/Sub's limit of {}; send fewer --attribute",
        sealed.attributes.len(),
        bus::MAX_ATTRIBUTES
    );
    Ok(())
}

/// The `--service_account` key, to sign with in its own name.
fn service_account_signer(cli: &Cli, account: &cli::flags::Account) -> anyhow::Result<envelope::ServiceAccountSigner> {
    let json = account.key_file()?.context("--attest_with_service_account needs --service_account")?;
    let path = account.key_file_path().expect("a key file has a path").display();
    let signer = envelope::ServiceAccountSigner::from_json(json).with_context(|| path.to_string())?;
    Ok(match &cli.attest_cert_url {
        Some(url) => signer.with_cert_url(url),
        None => signer,
    })
}

/// Seals, retrying transient KMS failures with exponential backoff (200 ms doubling,
/// 5 retries); a permanent failure, or the last transient one, is returned.
async fn seal_with_retries(
    sealer: &mut Sealer,
    data: Bytes,
    attributes: &Attributes,
) -> Result<envelope::Sealed, envelope::SealError> {
    let mut delays = ExponentialBuilder::default().with_min_delay(Duration::from_millis(200)).with_max_times(5).build();
    loop {
        match sealer.seal(data.clone(), attributes.clone()).await {
            Err(error) if error.is_transient() => match delays.next() {
                Some(delay) => {
                    tracing::warn!(%error, ?delay, "KMS failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            },
            result => return result,
        }
    }
}

// Publishing is allocation-heavy (the Google client copies each message into its
// protobuf batch); mimalloc halves what glibc's allocator spent on it.
