//! The pipeline's core (`runner::process`) fed from memory: what is delivered together
//! is handed out together, and a message whose open waits holds up none of the others.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cli::metrics::Metrics;
use envelope::OpenError;
use google_cloud_pubsub::model::Message;
use runner::{Ack, Delivery, Open, Output, Settings, Text};

/// Opens a message as its own text, except that one whose text starts with `slow`
/// waits until the test opens the gate: a KMS call that takes as long as the test likes.
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
}

impl Open for Gated {
    async fn open(&self, message: &Message) -> Result<Text, OpenError> {
        if message.data.starts_with(b"slow") {
            self.gate.acquire().await.expect("never closed").forget();
        }
        let mut fingerprint = [0; 16];
        fingerprint[..message.message_id.len()].copy_from_slice(message.message_id.as_bytes());
        Ok(Text { data: message.data.clone(), fingerprint })
    }
}

/// Each message's fate, by message id: `Some(true)` acked, `Some(false)` nacked.
#[derive(Clone, Default)]
struct Fates(Arc<Mutex<BTreeMap<String, bool>>>);

impl Fates {
    fn of(&self, id: &str) -> Option<bool> {
        self.0.lock().unwrap().get(id).copied()
    }
}

struct Handle(String, Fates);

impl Ack for Handle {
    fn ack(self) {
        self.1.0.lock().unwrap().insert(self.0, true);
    }

    fn nack(self) {
        self.1.0.lock().unwrap().insert(self.0, false);
    }
}

/// Keeps the text of everything published to it.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<String>>>);

impl Output for Sink {
    async fn publish(&self, message: Message) -> Result<(), String> {
        self.0.lock().unwrap().push(String::from_utf8(message.data.to_vec()).unwrap());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_on_its_key_holds_up_none_delivered_with_it() {
    // One slow message first, then three fast ones, all already delivered when the core
    // starts, so that its first turn takes them as one batch. The fast ones are counted,
    // published and acked while the slow one still waits; once it is let through, it is
    // counted and acked too, and nothing is counted twice.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let fates = Fates::default();
    let (deliveries, received) = tokio::sync::mpsc::channel::<Delivery<Handle>>(16);
    let texts = ["slow omega", "fast alpha", "fast alpha", "fast alpha"];
    for (id, text) in texts.iter().enumerate() {
        let message = Message::new().set_data(Bytes::from_static(text.as_bytes())).set_message_id(format!("m{id}"));
        deliveries.send(Ok((message, Handle(format!("m{id}"), fates.clone())))).await.unwrap();
    }
    let output = Sink::default();
    let settings = Settings { window: Duration::from_secs(1), replica: "test".into(), workers: 2, max_in_flight: 64 };
    let core = tokio::spawn(runner::process(
        received,
        output.clone(),
        Sink::default(),
        Arc::new(Gated { gate: gate.clone() }),
        settings,
        Arc::new(Metrics::new(None)),
    ));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (1..4).any(|id| fates.of(&format!("m{id}")).is_none()) {
        assert!(tokio::time::Instant::now() < deadline, "the fast messages were held up: {:?}", output.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!((1..4).all(|id| fates.of(&format!("m{id}")) == Some(true)), "the fast messages were acked");
    assert_eq!(fates.of("m0"), None, "the slow message is still waiting on its key");
    assert!(output.0.lock().unwrap().contains(&"alpha: 3".to_owned()), "published: {:?}", output.0);
    assert!(!output.0.lock().unwrap().iter().any(|text| text.starts_with("omega")), "published: {:?}", output.0);

    gate.add_permits(1);
    drop(deliveries);
    let summary = tokio::time::timeout(Duration::from_secs(30), core).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.counted, 4);
    assert_eq!(fates.of("m0"), Some(true), "the slow message was acked once counted");
    let published = output.0.lock().unwrap().clone();
    assert_eq!(published.iter().filter(|text| text.starts_with("omega: ")).collect::<Vec<_>>(), ["omega: 1"]);
    assert_eq!(published.iter().filter(|text| text.starts_with("alpha: ")).collect::<Vec<_>>(), ["alpha: 3"]);
}
