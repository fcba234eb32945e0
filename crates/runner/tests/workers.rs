//! The pipeline's core split as `runner::run` splits it: an intake per worker thread,
//! each on a single-thread runtime of its own, sharing the windows with one emitter.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cli::metrics::Metrics;
use envelope::OpenError;
use google_cloud_pubsub::model::Message;
use runner::{Ack, Delivery, Intake, Open, Output, Settings, Text};

/// Opens a message as its own text; its fingerprint is its message id, so that two
/// deliveries with one id are copies of one message.
struct ById;

impl Open for ById {
    async fn open(&self, message: &Message) -> Result<Text, OpenError> {
        let mut fingerprint = [0; 16];
        fingerprint[..message.message_id.len()].copy_from_slice(message.message_id.as_bytes());
        Ok(Text { data: message.data.clone(), fingerprint })
    }
}

/// Acks and nacks, by message id.
#[derive(Clone, Default)]
struct Fates(Arc<Mutex<BTreeMap<String, (u32, u32)>>>);

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
