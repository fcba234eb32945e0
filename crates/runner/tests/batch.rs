//! The pipeline's core fed from memory: what is delivered together is handed out
//! together, and a message whose open waits holds up none of the others (`runner::process`);
//! split as `runner::run` splits it, an intake per worker thread on a single-thread
//! runtime of its own, sharing the windows with one emitter, copies still count once
//! and a failed stream loses nothing.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cli::metrics::Metrics;
use envelope::OpenError;
use google_cloud_pubsub::model::Message;
use runner::{Ack, Delivery, Intake, Open, Output, Settings, Text};

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
        let mut fingerprint = [0; 32];
        fingerprint[..message.message_id.len()].copy_from_slice(message.message_id.as_bytes());
        Ok(Text { data: message.data.clone(), fingerprint })
    }
}

/// Acks and nacks, by message id.
#[derive(Clone, Default)]
struct Fates(Arc<Mutex<BTreeMap<String, (u32, u32)>>>);

impl Fates {
    /// `Some(true)` once acked, `Some(false)` if only nacked, `None` if neither yet.
    fn of(&self, id: &str) -> Option<bool> {
        self.0.lock().unwrap().get(id).map(|(acked, _)| *acked > 0)
    }
}

struct Handle(String, Fates);

impl Ack for Handle {
    fn ack(self) {
        self.1.0.lock().unwrap().entry(self.0).or_default().0 += 1;
    }

    fn nack(self) {
        self.1.0.lock().unwrap().entry(self.0).or_default().1 += 1;
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

/// Opens a message as its own text; its fingerprint is its message id, so that two
/// deliveries with one id are copies of one message.
struct ById;

impl Open for ById {
    async fn open(&self, message: &Message) -> Result<Text, OpenError> {
        let mut fingerprint = [0; 32];
        fingerprint[..message.message_id.len()].copy_from_slice(message.message_id.as_bytes());
        Ok(Text { data: message.data.clone(), fingerprint })
    }
}

fn delivery(id: usize, text: &'static str, fates: &Fates) -> Delivery<Handle> {
    let message = Message::new().set_data(Bytes::from_static(text.as_bytes())).set_message_id(format!("m{id}"));
    Ok((message, Handle(format!("m{id}"), fates.clone())))
}

/// Runs `intake` on a thread of its own with a single-thread runtime, as a worker of
/// `runner::run` does, over `deliveries`.
fn worker(
    intake: Intake<ById, Handle>,
    deliveries: Vec<Delivery<Handle>>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let (send, received) = tokio::sync::mpsc::channel(deliveries.len().max(1));
            for delivery in deliveries {
                send.send(delivery).await?;
            }
            drop(send);
            intake.run(received).await
        })
    })
}

fn settings() -> Settings {
    // One window spans the test, so that everything is emitted by the final flush.
    Settings { window: Duration::from_secs(3600), replica: "test".into(), workers: 2, max_in_flight: 64 }
}

#[test]
fn copies_delivered_to_different_workers_count_once_in_one_pane_and_every_copy_is_acked() {
    // Worker A gets m0..m9, worker B m5..m14: m5..m9 reach both. The windows are shared,
    // so each message counts once wherever its copies went, the window comes out as one
    // pane with the workers' counts summed, and every delivery is acked once published.
    let fates = Fates::default();
    let (intake, emitter) = runner::core(Arc::new(ById), &settings(), Arc::new(Metrics::new(None)));
    let a = worker(intake.clone(), (0..10).map(|id| delivery(id, "alpha beta", &fates)).collect());
    let b = worker(intake, (5..15).map(|id| delivery(id, "alpha beta", &fates)).collect());
    let output = Sink::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let summary = runtime.block_on(emitter.run(output.clone(), Sink::default())).unwrap();
    a.join().unwrap().unwrap();
    b.join().unwrap().unwrap();

    assert_eq!((summary.counted, summary.duplicates, summary.panes), (15, 5, 1), "{summary:?}");
    let mut published = output.0.lock().unwrap().clone();
    published.sort();
    assert_eq!(published, ["alpha: 15", "beta: 15"]);
    let fates = fates.0.lock().unwrap();
    assert_eq!(fates.len(), 15);
    for (id, (acked, nacked)) in fates.iter() {
        let copies = if (5..10).any(|n| *id == format!("m{n}")) { 2 } else { 1 };
        assert_eq!((*acked, *nacked), (copies, 0), "{id}");
    }
}

#[test]
fn a_worker_whose_stream_fails_says_so_and_what_every_worker_counted_is_still_published_and_acked() {
    // Worker A takes m0, then its stream fails; worker B takes m1 and m2. A ends with the
    // stream's error, but only after settling m0; the emitter waits for both workers,
    // then publishes all three messages' counts and acks them, losing none.
    let fates = Fates::default();
    let (intake, emitter) = runner::core(Arc::new(ById), &settings(), Arc::new(Metrics::new(None)));
    let a = worker(intake.clone(), vec![delivery(0, "alpha", &fates), Err(anyhow::anyhow!("the stream broke"))]);
    let b = worker(intake, vec![delivery(1, "alpha", &fates), delivery(2, "beta", &fates)]);
    let output = Sink::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let summary = runtime.block_on(emitter.run(output.clone(), Sink::default())).unwrap();
    let failed = a.join().unwrap().expect_err("worker A's stream failed");
    b.join().unwrap().unwrap();

    assert!(failed.to_string().contains("the stream broke"), "{failed:#}");
    assert_eq!(summary.counted, 3, "{summary:?}");
    let mut published = output.0.lock().unwrap().clone();
    published.sort();
    assert_eq!(published, ["alpha: 2", "beta: 1"]);
    let fates = fates.0.lock().unwrap();
    assert!((0..3).all(|n| fates.get(&format!("m{n}")) == Some(&(1, 0))), "{fates:?}");
}
