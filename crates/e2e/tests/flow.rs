//! The article's flow through the four real binaries on a real emulator.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use e2e::{Harness, TENANT_1_KEY, TENANT_2_KEY, expected_counts, message, receive, summed_counts, total};
use envelope::Mode;

const TEXT: &[&str] = &[
    "Lorem ipsum dolor sit amet, consectetur adipisci velit.",
    "Quiquia non numquam eius modi tempora incidunt ut labore et dolore magnam aliquam.",
    "Neque porro quisquam est, qui dolorem ipsum quia dolor sit amet.",
    "Ut enim ad minima veniam, quis nostrum exercitationem; dolor's ipsum.",
];

fn write_input(harness: &Harness, lines: &[&str]) -> String {
    let path = harness.dir().join("input.txt");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

#[test]
fn counts_are_exact_in_encrypt_and_sign_mode() {
    let harness = Harness::new();
    let pipeline = harness.pipeline(&[]);
    let subscriber = harness.subscriber();
    let input = write_input(&harness, TEXT);
    let encrypted = harness.publish(&[
        "--mode",
        "encrypt",
        "--kms_key",
        TENANT_1_KEY,
        "--input",
        &input,
        "--key_max_messages",
        "2",
    ]);
    harness.publish(&["--mode", "sign", "--kms_key", TENANT_1_KEY, "--input", &input]);

    let expected = expected_counts(TEXT.iter().chain(TEXT).copied());
    let want: u64 = expected.values().sum();
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= want);
    assert_eq!(summed_counts(&lines), expected);
    let log = pipeline.terminate();
    // The closing lines carry the fields `scripts/bench.sh` reads: 4 lines at 2 a key
    // are 2 data keys; the pipeline unwrapped those 2 and the sign run's 1.
    let published = String::from_utf8_lossy(&encrypted.stderr);
    assert!(published.contains("data_keys=2") && published.contains("kms_calls="), "{published}");
    assert!(log.contains("messages_per_sec=") && log.contains("kms_calls=3"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_and_seal_times_come_back_through_the_debug_subscriber() {
    let harness = Harness::new();
    let mut command = harness.command("debug-subscriber");
    command.args(["--pubsub_project_id", &harness.project, "--json", "--max_message_age", "10m"]);
    let debug = e2e::Running::spawn(command, "reading");
    for mode in ["encrypt", "sign"] {
        harness.publish(&[
            "--mode",
            mode,
            "--kms_key",
            TENANT_1_KEY,
            "--message",
            "hello",
            "--attribute",
            "origin=tenant-1",
            "--attribute",
            "seq=7",
        ]);
    }
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let old = harness.seal_at(an_hour_ago, TENANT_1_KEY, "tenantKey", Mode::Sign, b"stale").await;
    let bus = harness.pubsub().publisher(&harness.topic("common-topic")).await.unwrap();
    let old_id = bus.publish(message(old)).await.unwrap();

    let lines = debug.lines_until(Duration::from_secs(30), |lines| lines.len() >= 3);
    let mut modes = Vec::new();
    for line in &lines {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if record["message_id"] == old_id.as_str() {
            assert_eq!(record["status"], "rejected", "{line}");
            assert_eq!(record["reason"], "too_old", "{line}");
            continue;
        }
        assert_eq!(record["status"], "opened", "{line}");
        assert_eq!(record["data"], "hello");
        assert_eq!(record["attributes"], serde_json::json!({"origin": "tenant-1", "seq": "7"}), "{line}");
        let sealed_at = humantime::parse_rfc3339(record["sealed_at"].as_str().unwrap()).unwrap();
        let age = SystemTime::now().duration_since(sealed_at).unwrap();
        assert!(age < Duration::from_secs(60), "{line}");
        modes.push(record["mode"].as_str().unwrap().to_owned());
    }
    modes.sort();
    assert_eq!(modes, ["encrypt", "sign"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_go_to_the_dead_letter_topic_and_the_pipeline_goes_on() {
    let harness = Harness::new();
    let e2e::AtWork { pubsub, dead_letters, pipeline, subscriber, bus } = harness.at_work(&[]).await;

    // One data byte flipped in an encrypted message.
    let mut flipped = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Encrypt, b"flipped words").await;
    let mut data = flipped.data.to_vec();
    data[70] ^= 1;
    flipped.data = data.into();
    // Signed data altered, signature kept (the original accepted this).
    let mut altered = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Sign, b"pay alice").await;
    altered.data = Bytes::from_static(b"pay mallory");
    // The wrapped key swapped for another tenant's.
    let mut swapped = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Encrypt, b"swapped words").await;
    let other = harness.seal(TENANT_2_KEY, "tenantKey", Mode::Encrypt, b"x").await;
    swapped.attributes.insert("dek_wrapped".into(), other.attributes["dek_wrapped"].clone());

    for bad in [flipped, altered, swapped] {
        bus.publish(message(bad)).await.unwrap();
    }
    let good = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Sign, b"good words only").await;
    bus.publish(message(good)).await.unwrap();

    let rejected = receive(&pubsub, &dead_letters, 3, Duration::from_secs(60)).await;
    let mut reasons: Vec<(String, String)> = rejected
        .iter()
        .map(|m| (String::from_utf8_lossy(&m.data[..]).into_owned(), m.attributes["reject_reason"].clone()))
        .collect();
    reasons.sort();
    assert!(reasons.iter().any(|(data, reason)| data == "pay mallory" && reason == "tampered"), "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| r.1 == "unwrap_rejected").count(), 1, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| r.1 == "tampered").count(), 2, "{reasons:?}");

    let lines = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= 3);
    assert_eq!(summed_counts(&lines), expected_counts(["good words only"]), "nothing of the bad messages is counted");
    pipeline.terminate();
}
