//! `runner::run` fed from memory, a source per worker thread: what is delivered
//! together is handed out together, and a message whose open waits holds up none of the
//! others; copies delivered to different workers count once; a failed source loses
//! nothing; and no delivery is acked before the pane that counted it is published.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envelope::OpenError;
use google_cloud_pubsub::model::Message;
use runner::metrics::Metrics;
use runner::{Ack, Config, Delivery, Feed, Open, Output, Source, Summary, Text};

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

/// Delivers its deliveries in order, then (if told to) keeps the feed open until the
/// test lets it go, so that the pipeline does not end before the test is done looking.
struct Scripted {
    deliveries: Vec<Delivery<Handle>>,
    hold_open: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Scripted {
    fn new(deliveries: Vec<Delivery<Handle>>) -> Self {
        Self { deliveries, hold_open: None }
    }
}

impl Source for Scripted {
    type Ack = Handle;

    async fn deliver(self, mut feed: Feed<Handle>) -> anyhow::Result<()> {
        feed.started();
        for delivery in self.deliveries {
            if !feed.send(delivery).await {
                break;
            }
        }
        if let Some(hold_open) = self.hold_open {
            let _ = hold_open.await;
        }
        Ok(())
    }
}

fn config(window: Duration) -> Config {
    Config {
        window,
        replica: "test".into(),
        max_in_flight: 64,
        own_key: None,
        max_pane_words: runner::DEFAULT_MAX_PANE_WORDS,
    }
}

/// Runs the pipeline over `sources` to its end, on a runtime of this thread's own.
fn run_to_end<P: Open>(sources: Vec<Scripted>, opener: P, output: impl Output) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let metrics = Arc::new(Metrics::new(None));
    let config = config(Duration::from_secs(3600));
    let run = runner::run(sources, Arc::new(opener), output, Sink::default(), config, metrics, std::future::pending());
    runtime.block_on(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_on_its_key_holds_up_none_delivered_with_it() {
    // One slow message first, then three fast ones, delivered together, so that the
    // worker's first turn takes them as one batch. The fast ones are counted, published
    // and acked while the slow one still waits; once it is let through, it is counted
    // and acked too, and nothing is counted twice.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let fates = Fates::default();
    let texts = ["slow omega", "fast alpha", "fast alpha", "fast alpha"];
    let deliveries = texts.iter().enumerate().map(|(id, text)| delivery(id, text, &fates)).collect();
    let (close, hold_open) = tokio::sync::oneshot::channel();
    let source = Scripted { deliveries, hold_open: Some(hold_open) };
    let output = Sink::default();
    let core = tokio::spawn(runner::run(
        vec![source],
        Arc::new(Gated { gate: gate.clone() }),
        output.clone(),
        Sink::default(),
        config(Duration::from_secs(1)),
        Arc::new(Metrics::new(None)),
        std::future::pending(),
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
    close.send(()).unwrap();
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

#[test]
fn copies_delivered_to_different_workers_count_once_in_one_pane_and_every_copy_is_acked() {
    // Worker A gets m0..m9, worker B m5..m14: m5..m9 reach both. The windows are shared,
    // so each message counts once wherever its copies went, the window comes out as one
    // pane with the workers' counts summed, and every delivery is acked once published.
    let fates = Fates::default();
    let a = Scripted::new((0..10).map(|id| delivery(id, "alpha beta", &fates)).collect());
    let b = Scripted::new((5..15).map(|id| delivery(id, "alpha beta", &fates)).collect());
    let output = Sink::default();
    let summary = run_to_end(vec![a, b], ById, output.clone()).unwrap();

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
fn a_worker_whose_source_fails_says_so_and_what_every_worker_counted_is_still_published_and_acked() {
    // Worker A takes m0, then its source fails; worker B takes m1 and m2. The run ends
    // with the source's error, but only after every message the workers took is
    // counted, published and acked: none is lost.
    let fates = Fates::default();
    let a = Scripted::new(vec![delivery(0, "alpha", &fates), Err(anyhow::anyhow!("the stream broke"))]);
    let b = Scripted::new(vec![delivery(1, "alpha", &fates), delivery(2, "beta", &fates)]);
    let output = Sink::default();
    let failed = run_to_end(vec![a, b], ById, output.clone()).expect_err("worker A's source failed");

    assert!(failed.to_string().contains("the stream broke"), "{failed:#}");
    let mut published = output.0.lock().unwrap().clone();
    published.sort();
    assert_eq!(published, ["alpha: 2", "beta: 1"]);
    let fates = fates.0.lock().unwrap();
    assert!((0..3).all(|n| fates.get(&format!("m{n}")) == Some(&(1, 0))), "{fates:?}");
}

/// An output whose publishes wait until the test opens the gate, recording each.
#[derive(Clone)]
struct GatedSink {
    gate: Arc<tokio::sync::Semaphore>,
    published: Sink,
}

impl Output for GatedSink {
    async fn publish(&self, message: Message) -> Result<(), String> {
        self.gate.acquire().await.expect("never closed").forget();
        self.published.publish(message).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panes_deliveries_are_acked_only_once_its_publish_returned() {
    // The pane is ready a second after its 1 s window ends, and its publish is held at
    // a gate: however long it waits there, nothing it counted is acked; once the gate
    // opens and the publish returns, every delivery is acked.
    let fates = Fates::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let output = GatedSink { gate: gate.clone(), published: Sink::default() };
    let (close, hold_open) = tokio::sync::oneshot::channel();
    let source =
        Scripted { deliveries: (0..3).map(|id| delivery(id, "gamma", &fates)).collect(), hold_open: Some(hold_open) };
    let core = tokio::spawn(runner::run(
        vec![source],
        Arc::new(ById),
        output.clone(),
        Sink::default(),
        config(Duration::from_secs(1)),
        Arc::new(Metrics::new(None)),
        std::future::pending(),
    ));
    // Past the window's end, its grace and the emitter's tick: the publish is waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(output.published.0.lock().unwrap().is_empty(), "the publish is still at the gate");
    assert!((0..3).all(|id| fates.of(&format!("m{id}")).is_none()), "nothing acked before the publish returned");
    gate.add_permits(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (0..3).any(|id| fates.of(&format!("m{id}")).is_none()) {
        assert!(tokio::time::Instant::now() < deadline, "the deliveries were never acked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*output.published.0.lock().unwrap(), ["gamma: 3"]);
    assert!((0..3).all(|id| fates.of(&format!("m{id}")) == Some(true)));
    close.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), core).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_panes_over_their_word_budget_are_published_before_their_window_ends() {
    // Property: with an hour's window and a budget of 5 distinct words, a message of 6
    // distinct words is published, exactly, and acked while its window is still open;
    // the early flush is counted in the metrics.
    let fates = Fates::default();
    let (close, hold_open) = tokio::sync::oneshot::channel();
    let source = Scripted { deliveries: vec![delivery(0, "a b c d e f a", &fates)], hold_open: Some(hold_open) };
    let output = Sink::default();
    let metrics = Arc::new(Metrics::new(None));
    let config = Config { max_pane_words: 5, ..config(Duration::from_secs(3600)) };
    let core = tokio::spawn(runner::run(
        vec![source],
        Arc::new(ById),
        output.clone(),
        Sink::default(),
        config,
        metrics.clone(),
        std::future::pending(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fates.of("m0").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the pane waited for its window: {:?}", output.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fates.of("m0"), Some(true));
    let mut published = output.0.lock().unwrap().clone();
    published.sort();
    assert_eq!(published, ["a: 2", "b: 1", "c: 1", "d: 1", "e: 1", "f: 1"]);
    assert!(metrics.render().contains("pubsub_envelope_early_flushes_total 1"), "{}", metrics.render());
    close.send(()).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), core).await.unwrap().unwrap().unwrap();
    assert_eq!((summary.counted, summary.panes), (1, 1), "{summary:?}");
}
