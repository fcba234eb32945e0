//! `debug-subscriber --dead_letters`: lists what the pipeline dead-lettered, with its
//! reason, detail and original attributes, and whether it opens now; with `--redrive`,
//! publishes each that opens now back to the bus and only then acks its dead letter.
//!
//! It reads the backlog and stops once nothing has arrived for `--idle_exit_secs`.
//! Dead letters it does not redrive are held while it runs (so that each is shown once)
//! and released (nacked) at the end, for the next run.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use cli::escape::{Escaped, escaped};
use envelope::Opener;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;

/// What to do with each dead letter.
pub struct Settings<'a> {
    /// Checks receipts made with the pipeline's key; `None` checks none (and then
    /// nothing is redriven: `--redrive` requires the key).
    pub receipts: Option<&'a Opener>,
    pub subscription: &'a str,
    /// The bus, to publish redriven originals to; `None` lists only.
    pub redrive_to: Option<&'a str>,
    pub idle_exit: Duration,
    pub json: bool,
}

/// Tallies of a run, printed at the end.
#[derive(Default, Debug)]
struct Tally {
    read: u64,
    opens_now: u64,
    redriven: u64,
}

pub async fn run(
    pubsub: &bus::PubSub,
    opener: &Opener,
    settings: Settings<'_>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let publisher = match settings.redrive_to {
        Some(topic) => Some(pubsub.publisher(topic).await?),
        None => None,
    };
    let client = pubsub.subscriber(1).await?;
    // Leases of 10 s (Pub/Sub's least), extended while this runs: should a release at the
    // end not reach Pub/Sub (the emulator loses some), a held dead letter is back for
    // the next run within 10 s rather than a minute.
    let mut stream = client.subscribe(settings.subscription).set_max_lease_extension(Duration::from_secs(10)).build();
    let stop = stream.shutdown_token();
    tokio::pin!(shutdown);
    let mut held = Vec::new();
    let mut tally = Tally::default();
    let mut out = std::io::stdout().lock();
    loop {
        let next = tokio::select! {
            () = &mut shutdown => break,
            next = bus::unless_idle(Some(settings.idle_exit), stream.next()) => next,
        };
        let Some(Some(delivery)) = next else { break }; // idle, or the stream ended
        let (message, handler) =
            delivery.with_context(|| format!("streaming pull from {} failed", settings.subscription))?;
        tally.read += 1;
        tracing::debug!(message_id = %message.message_id, "dead letter received");
        let dead =
            runner::dead_letter::restore(&message).or_else(|| runner::dead_letter::restore_undeliverable(&message));
        let line = match dead {
            None => {
                held.push(handler);
                record(&message, None, "not a dead letter (no reject_reason)", None, None, settings.json)
            }
            Some(dead) => {
                // Pub/Sub's own dead letters carry no receipt: only its service agent may
                // publish to their topic (scripts/gcp-setup.sh grants nobody else), and
                // what they hold is a message of the bus as it was published.
                let receipt = match settings.receipts {
                    Some(opener) if !dead.undeliverable => {
                        Some(runner::own_key::verify_receipt(opener, &message).await)
                    }
                    _ => None,
                };
                let now = match &dead.original {
                    None => Err("cut to fit Pub/Sub's limits: cannot be redriven".to_owned()),
                    Some(original) => opener
                        .open(&original.data, &original.attributes)
                        .await
                        .map(|opened| opened.mode.as_str().to_owned())
                        .map_err(|error| format!("{}: {error}", error.reason())),
                };
                tally.opens_now += u64::from(now.is_ok());
                let redriven = match (&publisher, &now, dead.original) {
                    // The pipeline's receipt is what makes a dead letter its own: a
                    // message someone else published here is never sent to the bus.
                    (Some(_), Ok(_), Some(_)) if !dead.undeliverable && !matches!(receipt, Some(Ok(()))) => {
                        held.push(handler);
                        None
                    }
                    (Some(publisher), Ok(_), Some(original)) => {
                        let republished = Message::new().set_data(original.data).set_attributes(original.attributes);
                        match publisher.publish(republished).await {
                            // Acked only once the original is back on the bus: a crash in
                            // between redrives it again (at least once), never loses it.
                            Ok(id) => {
                                handler.ack();
                                tally.redriven += 1;
                                Some(id)
                            }
                            Err(error) => {
                                tracing::error!(%error, "could not publish the original again; keeping its dead letter");
                                held.push(handler);
                                None
                            }
                        }
                    }
                    _ => {
                        held.push(handler);
                        None
                    }
                };
                let status = match (&now, &redriven) {
                    (Ok(mode), Some(_)) => format!("redriven (opens now as {mode})"),
                    (Ok(mode), None) => format!("opens now as {mode}"),
                    (Err(why), _) => format!("still rejected: {why}"),
                };
                let status = match &receipt {
                    Some(Err(error)) => format!("{status}; not redriven: {error}"),
                    _ => status,
                };
                let receipt = receipt.map(|receipt| match receipt {
                    Ok(()) => "verified".to_owned(),
                    Err(error) => error.to_string(),
                });
                let (redriven, receipt) = (redriven.as_deref(), receipt.as_deref());
                record(&message, Some(&dead.rejection), &status, redriven, receipt, settings.json)
            }
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    // Released for the next run at once, rather than when their leases run out.
    held.into_iter().for_each(Handler::nack);
    stop.shutdown().await;
    tracing::info!(read = tally.read, opens_now = tally.opens_now, redriven = tally.redriven, "dead letters done");
    Ok(())
}

/// One dead letter, as a line of text or JSON, with what its receipt check found if
/// one was made.
fn record(
    message: &Message,
    rejection: Option<&runner::dead_letter::Rejection>,
    status: &str,
    redriven_as: Option<&str>,
    receipt: Option<&str>,
    json: bool,
) -> String {
    let mut attributes: Vec<(&String, &String)> = message
        .attributes
        .iter()
        .filter(|(key, _)| !runner::dead_letter::DEAD_LETTER_ATTRS.contains(&key.as_str()))
        .collect();
    attributes.sort();
    let (reason, detail, original) =
        rejection.map_or(("", "", ""), |r| (r.reason.as_str(), r.detail.as_str(), r.original_message_id.as_str()));
    if json {
        let attributes: serde_json::Map<String, serde_json::Value> =
            attributes.into_iter().map(|(key, value)| (key.clone(), value.clone().into())).collect();
        let mut record = serde_json::json!({
            "message_id": message.message_id, "original_message_id": original, "reason": reason,
            "detail": detail, "attributes": attributes, "status": status, "redriven_as": redriven_as,
        });
        if let Some(receipt) = receipt {
            record["receipt"] = receipt.into();
        }
        record.to_string()
    } else {
        // Wrapped keys and signatures run to hundreds of characters: shortened for a person.
        let short = |value: &str| match value.char_indices().nth(48) {
            Some((end, _)) => format!("{}…({} bytes)", &value[..end], value.len()),
            None => value.to_owned(),
        };
        // Everything here but the status's own words came with the message: escaped,
        // so that none of it can start a line that looks like this tool's own.
        let attributes: Vec<String> =
            attributes.into_iter().map(|(key, value)| format!("{}={}", Escaped(key), short(&escaped(value)))).collect();
        let receipt = receipt.map(|receipt| format!("\n  receipt: {}", Escaped(receipt))).unwrap_or_default();
        format!(
            "DEAD {} reason={}: {}\n  attributes={{{}}}\n  {}{receipt}",
            Escaped(original),
            Escaped(reason),
            Escaped(detail),
            attributes.join(", "),
            Escaped(status)
        )
    }
}
