//! Reads the pipeline's counts back, as `subscriber` does, and turns stamps into
//! publish-to-count latencies.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::texts::stamp_millis;

/// Counts received so far, merged over replicas and panes, each partial once.
#[derive(Default)]
pub struct Tally {
    pub counts: HashMap<String, u64>,
    pub total: u64,
    /// Latency in milliseconds, and how many messages had it.
    latencies: Vec<(u64, u64)>,
    merged: HashSet<(String, String, String, String)>,
}

impl Tally {
    fn add(&mut self, replica: &str, window: &str, pane: &str, word: &str, count: u64, now_millis: u64) {
        let partial = (replica.to_owned(), window.to_owned(), pane.to_owned(), word.to_owned());
        if !self.merged.insert(partial) {
            return; // Pub/Sub delivered this partial twice.
        }
        *self.counts.entry(word.to_owned()).or_default() += count;
        self.total += count;
        if let Some(stamped) = stamp_millis(word) {
            self.latencies.push((now_millis.saturating_sub(stamped), count));
        }
    }

    /// The latency (ms) below which `quantile` of the stamped messages were counted.
    pub fn latency_quantile(&self, quantile: f64) -> u64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let all: u64 = sorted.iter().map(|(_, n)| n).sum();
        let rank = (quantile * all as f64).ceil() as u64;
        let mut seen = 0;
        for (latency, n) in sorted {
            seen += n;
            if seen >= rank {
                return latency;
            }
        }
        0
    }
}

/// Tails `subscription` into `tally` until the stream ends.
pub async fn tail(pubsub: bus::PubSub, subscription: String, tally: Arc<Mutex<Tally>>) -> anyhow::Result<()> {
    let client = pubsub.subscriber(1).await?;
    let mut stream = client.subscribe(&subscription).set_max_outstanding_messages(100_000).build();
    while let Some((message, handler)) = stream.next().await.transpose()? {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        let text = std::str::from_utf8(&message.data)?;
        let (word, count) = text.rsplit_once(": ").ok_or_else(|| anyhow::anyhow!("not `word: count`: {text}"))?;
        let attribute = |name: &str| message.attributes.get(name).map(String::as_str).unwrap_or_default();
        tally.lock().expect("tally lock").add(
            attribute(runner::REPLICA_ATTR),
            attribute(runner::WINDOW_START_ATTR),
            attribute(runner::PANE_ATTR),
            word,
            count.parse()?,
            now,
        );
        handler.ack();
    }
    Ok(())
}
