//! KMS faults: nothing is lost while KMS is down, and nothing goes out unprotected.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Harness, TENANT_1_KEY, assert_nothing_arrives, expected_counts, summed_counts, total};
use fake_kms::{Behaviour, FakeKms};

/// Points a harness command at the fake Cloud KMS instead of the local keyring.
fn use_fake_kms(command: &mut Command, kms: &FakeKms) {
    command
        .env("PUBSUB_ENVELOPE_KMS", "gcp")
        .env("PUBSUB_ENVELOPE_KMS_ENDPOINT", kms.endpoint())
        .env("PUBSUB_ENVELOPE_KMS_TIMEOUT_SECS", "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_facing_a_kms_outage_retries_with_backoff_then_fails_and_publishes_nothing() {
    let harness = Harness::new();
    let pubsub = harness.pubsub();
    let bus_reader = harness.subscribe("bus-reader", "common-topic").await;
    let kms = FakeKms::start().await.unwrap();
    kms.set_behaviour(Behaviour::Fail(503));

    let mut command = harness.command("publisher");
    use_fake_kms(&mut command, &kms);
    command.args(["--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY, "--message", "secret words"]);
    let started = Instant::now();
    // The test thread blocks on the process; the fake KMS answers from the runtime's workers.
    let output = command.output().unwrap();
    let elapsed = started.elapsed();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the publisher must fail: {stderr}");
    assert!(stderr.contains("cannot seal message 0"), "a clear error: {stderr}");
    assert_eq!(kms.calls(), 6, "one call and five retries: {stderr}");
    // Backoff of 200 ms doubling: 200 + 400 + 800 + 1600 + 3200 ms between the calls.
    assert!(elapsed >= Duration::from_millis(6200), "retries were spaced out: {elapsed:?}");
    assert_nothing_arrives(&pubsub, &bus_reader, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_outage_holds_counting_back_then_everything_is_counted_and_nothing_dead_lettered() {
    let harness = Harness::new();
    let pubsub = harness.pubsub();
    let dead_letters = harness.subscribe("dead-letter-reader", "dead-letter").await;
    // The pipeline's subscription exists before anything is published to the bus.
    harness.subscribe("message-bus", "common-topic").await;
    // The test thread blocks on processes; the fake KMS answers from the runtime's workers.
    let kms = FakeKms::start().await.unwrap();
    let texts: Vec<String> = (0..12).map(|i| format!("outage message {i} alpha beta")).collect();
    let input = harness.dir().join("input.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    let mut publisher = harness.command("publisher");
    use_fake_kms(&mut publisher, &kms);
    publisher.args(["--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY, "--key_max_messages", "4"]);
    let output = publisher.arg("--input").arg(&input).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // KMS fails (503, then hangs past the client's deadline) as the pipeline starts.
    kms.set_behaviour(Behaviour::Fail(503));
    let calls_before = kms.calls();
    let subscriber = harness.subscriber();
    let mut command = harness.pipeline_command(&[]);
    use_fake_kms(&mut command, &kms);
    let pipeline = e2e::Running::spawn(command, "pipeline started");
    let early = subscriber.lines_for(Duration::from_secs(4));
    kms.set_behaviour(Behaviour::Hang);
    let early = [early, subscriber.lines_for(Duration::from_secs(5))].concat();
    assert!(early.is_empty(), "nothing can be counted while KMS is down: {early:?}");
    assert!(pipeline.log().contains("transient failure"), "{}", pipeline.log());
    let outage_calls = kms.calls() - calls_before;
    // Each failed message waits a second before it is nacked and comes back; nacking at
    // once would have made thousands of calls.
    assert!(outage_calls < 250, "{outage_calls} KMS calls during 9 s of outage for 12 messages");

    kms.set_behaviour(Behaviour::Normal);
    let expected = expected_counts(texts.iter().map(String::as_str));
    let want: u64 = expected.values().sum();
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= want);
    assert_eq!(summed_counts(&lines), expected);
    assert_nothing_arrives(&pubsub, &dead_letters, Duration::from_secs(2)).await;
    pipeline.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_permission_denied_is_dead_lettered_with_its_reason() {
    let harness = Harness::new();
    let pubsub = harness.pubsub();
    let dead_letters = harness.subscribe("dead-letter-reader", "dead-letter").await;
    harness.subscribe("message-bus", "common-topic").await;
    let kms = FakeKms::start().await.unwrap();
    let mut publisher = harness.command("publisher");
    use_fake_kms(&mut publisher, &kms);
    publisher.args(["--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY, "--message", "denied words"]);
    assert!(publisher.output().unwrap().status.success());

    // The pipeline's account lost its decrypt permission on the tenant's key.
    kms.set_behaviour(Behaviour::Fail(403));
    let mut command = harness.pipeline_command(&[]);
    use_fake_kms(&mut command, &kms);
    let pipeline = e2e::Running::spawn(command, "pipeline started");
    let rejected = e2e::receive(&pubsub, &dead_letters, 1, Duration::from_secs(30)).await;
    assert_eq!(rejected[0].attributes["reject_reason"], "kms_permission_denied");
    assert_eq!(rejected[0].attributes["kms_key"], TENANT_1_KEY, "the envelope travels with it, for a later retry");
    pipeline.terminate();
}

// A subscriber that cannot reach the KMS to open the pipeline's sealed output loses none
// of it: each part is nacked and comes back, and once the KMS answers every word is
// counted (had it skipped them as not the pipeline's, they would be gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_facing_a_kms_outage_loses_no_sealed_output() {
    let harness = Harness::new();
    // The output's subscription exists before the pipeline publishes to it.
    harness.subscribe("df_subscribe", "df_out").await;
    let kms = FakeKms::start().await.unwrap();
    let own = ["--pipeline_kms_key", e2e::PIPELINE_KEY];
    let mut pipeline = harness.pipeline_command(&own);
    use_fake_kms(&mut pipeline, &kms);
    let pipeline = e2e::Running::spawn(pipeline, "pipeline started");
    let mut publisher = harness.command("publisher");
    use_fake_kms(&mut publisher, &kms);
    let text = "sealed parts survive an outage";
    publisher.args(["--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY, "--message", text]);
    assert!(publisher.output().unwrap().status.success());
    pipeline.wait_for_log("published pane", Duration::from_secs(30));

    kms.set_behaviour(Behaviour::Fail(503));
    let mut subscriber = harness.command("subscriber");
    use_fake_kms(&mut subscriber, &kms);
    subscriber.args(["--pubsub_project_id", &harness.project, "--json"]).args(own);
    let subscriber = e2e::Running::spawn(subscriber, "listening for messages");
    subscriber.wait_for_log("will be redelivered", Duration::from_secs(30));
    assert!(subscriber.lines_for(Duration::from_secs(2)).is_empty(), "nothing opened during the outage");
    kms.set_behaviour(Behaviour::Normal);
    let lines = subscriber.lines_until(Duration::from_secs(90), |lines| total(lines) >= 5);
    assert_eq!(summed_counts(&lines), expected_counts([text]));
    pipeline.terminate();
}
