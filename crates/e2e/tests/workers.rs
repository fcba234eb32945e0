//! Concurrency and totals: a slow KMS key holds back only its own messages, late panes
//! update the subscriber's totals, and the subscriber forgets quiet windows.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use e2e::{Harness, TENANT_1_KEY, TENANT_2_KEY, expected_counts, message, summed_counts, total, window_totals};
use envelope::kms::gcp::{CredentialSource, GcpKms};
use envelope::{Attributes, Sealer};
use fake_kms::FakeKms;

/// How long tenant 2's KMS calls take.
const SLOW: Duration = Duration::from_secs(4);

async fn sealed(kms: &FakeKms, key: &str, texts: &[String]) -> Vec<google_cloud_pubsub::model::Message> {
    let backend =
        GcpKms::builder().credentials(CredentialSource::Anonymous).endpoint(kms.endpoint()).build().await.unwrap();
    let mut sealer = Sealer::encrypt(std::sync::Arc::new(backend), key.parse().unwrap(), "tenantKey");
    let mut messages = Vec::new();
    for text in texts {
        messages.push(message(sealer.seal(text.clone().into(), Attributes::new()).await.unwrap()));
    }
    messages
}

fn rfc3339_to_time(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_key_holds_back_only_its_own_messages_and_their_late_pane_updates_the_total() {
    // Tenant 2's KMS calls take 4 s. Its messages and tenant 1's are published in one
    // burst (tenant 2's first), into one 2 s window: tenant 1's pane still comes out
    // right after the window ends, tenant 2's words follow in a later pane of the same
    // window, and the subscriber's total for the window ends exact, from both panes.
    let harness = Harness::new();
    let kms = FakeKms::start().await.unwrap();
    let fast: Vec<String> = (0..10).map(|i| format!("fast tenant one alpha {i}")).collect();
    let slow: Vec<String> = (0..10).map(|i| format!("slow tenant two omega {i}")).collect();
    // Sealed before the slow latency is set: only the pipeline's unwraps are slow.
    let mut burst = sealed(&kms, TENANT_2_KEY, &slow).await;
    burst.extend(sealed(&kms, TENANT_1_KEY, &fast).await);
    kms.set_key_latency("projects/tenant-2/", SLOW);

    let outputs = harness.subscribe("out-reader", "df_out").await;
    let subscriber = harness.subscriber();
    let mut command = harness.pipeline_command(&[]);
    command
        .env("PUBSUB_ENVELOPE_KMS", "gcp")
        .env("PUBSUB_ENVELOPE_KMS_ENDPOINT", kms.endpoint())
        .env("PUBSUB_ENVELOPE_KMS_TIMEOUT_SECS", "30");
    let pipeline = e2e::Running::spawn(command, "pipeline started");

    let publisher = harness.pubsub().publisher(&harness.topic("common-topic")).await.unwrap();
    let published: Vec<_> = burst.into_iter().map(|message| publisher.publish(message)).collect();
    for id in published {
        id.await.unwrap();
    }

    // The first pane of each window, with when it arrived.
    let client = harness.pubsub().subscriber(1).await.unwrap();
    let mut stream = client.subscribe(&outputs).build();
    let mut first_panes: HashMap<String, (SystemTime, SystemTime, Vec<String>)> = HashMap::new();
    let mut slow_words_seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while slow_words_seen < 1 {
        let (output, handler) = tokio::time::timeout_at(deadline, stream.next()).await.unwrap().unwrap().unwrap();
        handler.ack();
        let text = String::from_utf8(output.data.to_vec()).unwrap();
        if text.starts_with("omega:") {
            slow_words_seen += 1;
            assert_ne!(output.attributes["pane"], "0", "tenant 2's words come in a later pane");
        }
        if output.attributes["pane"] == "0" {
            let end = rfc3339_to_time(&output.attributes["window_end"]);
            let entry = first_panes.entry(output.attributes["window_start"].clone()).or_insert((
                end,
                SystemTime::now(),
                vec![],
            ));
            entry.2.push(text);
        }
    }
    for (start, (end, arrived, words)) in &first_panes {
        let late_by = arrived.duration_since(*end).unwrap_or_default();
        assert!(late_by < SLOW / 2, "window {start}'s first pane waited for the slow key: {late_by:?} after its end");
        assert!(words.iter().all(|word| !word.starts_with("omega:")), "tenant 2 was not in the first pane: {words:?}");
    }

    let expected = expected_counts(fast.iter().chain(&slow).map(String::as_str));
    let want: u64 = expected.values().sum();
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= want);
    assert_eq!(summed_counts(&lines), expected, "both panes summed, each once");
    let panes: u64 = window_totals(&lines).values().map(|record| record["panes"].as_u64().unwrap()).sum();
    assert!(panes >= 2, "a late pane updated a window's total: {lines:?}");
    pipeline.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_forgets_quiet_windows_and_skips_what_is_not_pipeline_output() {
    // With --forget_after_secs 1, a window that got no part for a second is dropped
    // (and said so), so a part arriving after that starts it afresh; a message that is
    // not pipeline output is warned about once and never printed.
    let harness = Harness::new();
    let mut command = harness.command("subscriber");
    command.args(["--pubsub_project_id", &harness.project, "--json", "--forget_after_secs", "1"]);
    let subscriber = e2e::Running::spawn(command, "listening for messages");
    let publisher = harness.pubsub().publisher(&harness.topic("df_out")).await.unwrap();
    let part = |replica: &str, pane: &str, data: &str| {
        let attributes: HashMap<String, String> = [
            ("window_start", "2026-01-01T00:00:00Z"),
            ("window_end", "2026-01-01T00:00:15Z"),
            ("replica", replica),
            ("pane", pane),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        google_cloud_pubsub::model::Message::new().set_data(data.to_owned()).set_attributes(attributes)
    };
    publisher.publish(part("r1", "0", "alpha: 600")).await.unwrap();
    publisher.publish(part("r2", "0", "alpha: 400")).await.unwrap();
    publisher
        .publish(google_cloud_pubsub::model::Message::new().set_data("ciphertext-looking bytes: 1"))
        .await
        .unwrap();
    let first = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= 1000);
    assert_eq!(summed_counts(&first)["alpha"], 1000, "two replicas' partials summed: {first:?}");
    subscriber.wait_for_log("forgot windows", Duration::from_secs(30));

    publisher.publish(part("r1", "1", "alpha: 5")).await.unwrap();
    let after = subscriber.lines_until(Duration::from_secs(30), |lines| !lines.is_empty());
    let record: serde_json::Value = serde_json::from_str(after.last().unwrap()).unwrap();
    assert_eq!((record["total"].as_u64(), record["panes"].as_u64()), (Some(5), Some(1)), "started afresh: {record}");
    let log = subscriber.terminate();
    assert_eq!(log.matches("not pipeline output").count(), 1, "one warning: {log}");
    assert!(!log.contains("ciphertext-looking") && !after.iter().chain(&first).any(|l| l.contains("ciphertext")));
    assert!(["forgotten_windows=1", "forgotten_windows=2"].iter().any(|n| log.contains(n)), "{log}");
}
