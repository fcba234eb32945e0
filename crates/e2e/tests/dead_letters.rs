//! Dead letters as a workflow: `debug-subscriber --dead_letters` lists them with their
//! reason and original attributes; once the cause is fixed, `--redrive` sends each back
//! to the bus exactly once, and the pipeline counts it.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::time::Duration;

use e2e::{Harness, PIPELINE_KEY, TENANT_1_KEY, TENANT_2_KEY, expected_counts, summed_counts, total};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_once_their_cause_is_fixed() {
    let harness = Harness::new();
    // On real Pub/Sub a topic without a subscription drops what is published to it:
    // the dead-letter subscriptions exist before anything is dead-lettered. The listing
    // and the redrive read subscriptions of their own, each streamed from once: the
    // emulator hands a subscription's messages to streams closed before (see
    // `Harness::pull_attributes`), so a second streaming read of one would wait on it.
    harness.subscribe("dead-letter-list", "dead-letter").await;
    harness.subscribe("dead-letter-debug", "dead-letter").await;
    let subscriber = harness.subscriber_with(&["--pipeline_kms_key", PIPELINE_KEY]);
    let only_tenant_1 = ["--trusted_kms_key", "projects/tenant-1/*", "--pipeline_kms_key", PIPELINE_KEY];
    let pipeline = harness.pipeline(&only_tenant_1);
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", "trusted words"]);
    harness.publish(&["--kms_key", TENANT_2_KEY, "--message", "late trust", "--attribute", "origin=tenant-2"]);
    let first = expected_counts(["trusted words"]);
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= 2);
    assert_eq!(summed_counts(&lines), first);

    // Listed, with its reason and the envelope's attributes; it does not open with the
    // same trust; and the listing acks nothing: the dead letter is still there after it.
    let trust_both = [
        "--trusted_kms_key",
        "projects/tenant-1/*",
        "--trusted_kms_key",
        "projects/tenant-2/*",
        "--pipeline_kms_key",
        PIPELINE_KEY,
    ];
    let list = [&only_tenant_1[..], &["--pubsub_subscription", "dead-letter-list"]].concat();
    let listed = harness.dead_letter_records(&list);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["reason"], "untrusted_key", "{listed:?}");
    assert_eq!(listed[0]["attributes"]["kms_key"], TENANT_2_KEY, "{listed:?}");
    assert!(listed[0]["status"].as_str().unwrap().starts_with("still rejected: untrusted_key"), "{listed:?}");
    assert!(listed[0]["redriven_as"].is_null());
    assert_eq!(listed[0]["receipt"], "verified", "the pipeline signed it: {listed:?}");
    let kept = harness.pull_attributes("dead-letter-list", Duration::from_secs(120));
    assert_eq!(kept.len(), 1, "the listing acked nothing: {kept:?}");
    assert_eq!(kept[0]["reject_reason"], "untrusted_key", "{kept:?}");

    // The cause fixed (tenant 2 trusted), the pipeline restarted with it: redriven once,
    // and counted. The restarted pipeline reads a subscription of its own, made when it
    // starts, for the reason above: the emulator would hand the redriven message to the
    // first pipeline's closed streams as often as to the new one's.
    pipeline.terminate();
    let pipeline = harness.pipeline(&[&trust_both[..], &["--input_subscription", "message-bus-restarted"]].concat());
    let redriven = harness.dead_letter_records(&[&trust_both[..], &["--redrive"]].concat());
    assert_eq!(redriven.len(), 1, "{redriven:?}");
    assert_eq!(redriven[0]["status"], "redriven (opens now as encrypt)", "{redriven:?}");
    assert!(redriven[0]["redriven_as"].is_string());
    let both = expected_counts(["trusted words", "late trust"]);
    let lines = [lines, subscriber.lines_until(Duration::from_secs(60), |more| total(more) >= 2)].concat();
    assert_eq!(summed_counts(&lines), both);
    // Acked once redriven: a pull finds nothing. (A weak check on the emulator, which may
    // first hand an unacked letter to the redrive's closed stream; on real Pub/Sub the
    // pull would get it.)
    assert!(harness.pull_attributes("dead-letter-debug", Duration::from_secs(12)).is_empty(), "acked once redriven");
    pipeline.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_emulator_no_dead_letter_is_lost_before_the_first_read() {
    // The pipeline made the dead-letter topic but no subscription on it, so whatever it
    // dead-lettered before the first `debug-subscriber --dead_letters` was dropped (the
    // pipeline said "1 dead-lettered", the reader read 0). It now makes the reader's
    // subscription with the topic: a dead letter published before anyone reads is there.
    let harness = Harness::new();
    let pipeline = harness.pipeline(&["--trusted_kms_key", "projects/tenant-1/*"]);
    harness.publish(&["--kms_key", TENANT_2_KEY, "--message", "untrusted words"]);
    pipeline.wait_for_log("rejected", Duration::from_secs(60));
    let records = harness.dead_letter_records(&["--trusted_kms_key", "projects/tenant-1/*"]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["reason"], "untrusted_key", "{records:?}");
    pipeline.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_pub_sub_itself_dead_lettered_is_listed_and_redriven_and_counted() {
    // Pub/Sub's own dead-letter policy (scripts/gcp-setup.sh sets it on the bus
    // subscription) forwards a message no pipeline acked in 100 deliveries to
    // `undeliverable`, with its `CloudPubSubDeadLetter*` attributes and no receipt.
    // debug-subscriber lists it (reason `undeliverable`) and redrives it as it was
    // published, and the pipeline counts it. The emulator has no dead-letter policies:
    // the test forwards the message as Pub/Sub does.
    let harness = Harness::new();
    harness.subscribe("undeliverable-debug", "undeliverable").await;
    let subscriber = harness.subscriber_with(&["--pipeline_kms_key", PIPELINE_KEY]);
    let pipeline = harness.pipeline(&["--trusted_kms_key", "projects/tenant-1/*", "--pipeline_kms_key", PIPELINE_KEY]);
    let sealed = harness.seal(TENANT_1_KEY, "tenantKey", envelope::Mode::Encrypt, b"parked words").await;
    let mut forwarded = e2e::message(sealed);
    for (key, value) in [
        ("CloudPubSubDeadLetterSourceSubscription", "message-bus"),
        ("CloudPubSubDeadLetterSourceDeliveryCount", "100"),
        ("CloudPubSubDeadLetterSourceSubscriptionProject", harness.project.as_str()),
    ] {
        forwarded.attributes.insert(key.to_owned(), value.to_owned());
    }
    harness.pubsub().publisher(&harness.topic("undeliverable")).await.unwrap().publish(forwarded).await.unwrap();

    let records = harness.dead_letter_records(&[
        "--pubsub_subscription",
        "undeliverable-debug",
        "--dead_letter_topic",
        "undeliverable",
        "--trusted_kms_key",
        "projects/tenant-1/*",
        "--pipeline_kms_key",
        PIPELINE_KEY,
        "--redrive",
    ]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["reason"], "undeliverable", "{records:?}");
    assert!(records[0]["detail"].as_str().unwrap().contains("100 deliveries"), "{records:?}");
    assert_eq!(records[0]["status"], "redriven (opens now as encrypt)", "{records:?}");
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= 2);
    assert_eq!(summed_counts(&lines), expected_counts(["parked words"]));
    pipeline.terminate();
}
