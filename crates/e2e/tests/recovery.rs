//! Nothing is lost when the pipeline dies or is away.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::{Harness, TENANT_1_KEY, expected_counts, summed_counts, total};

/// Sleeps until the middle of a 2 s window, far from the moment a pane is published
/// and acked (250 ms after the window ends). A kill inside that moment would leave
/// published counts whose messages were not yet acked: they would be counted again.
fn sleep_to_mid_window() {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 % 2000;
    std::thread::sleep(Duration::from_millis((3000 - ms) % 2000));
}

fn lines(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("message number {i} alpha beta")).collect()
}

/// The emulator (Cloud SDK 528) never forgets the streaming-pull streams of a killed
/// client (its gRPC server fails with NoSuchMethodError when a stream breaks) and
/// goes on sending redeliveries to them, each to wait out another lease. Killed
/// pipelines therefore get one stream and the survivor many, so that most redeliveries
/// reach a live stream; real Pub/Sub drops dead streams at once.
#[test]
fn a_pipeline_killed_twice_mid_stream_and_restarted_loses_nothing() {
    let harness = Harness::new();
    let subscriber = harness.subscriber();
    let first = harness.pipeline(&["--streams", "1"]);
    let texts = lines(300);
    let input = harness.dir().join("input.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    let mut publisher = harness
        .command("publisher")
        .args(["--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY, "--input"])
        .arg(&input)
        .args(["--rate", "50", "--mode", "sign"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    sleep_to_mid_window();
    first.kill();
    let second = harness.pipeline(&["--streams", "1"]);
    sleep_to_mid_window();
    second.kill();
    let third = harness.pipeline(&["--streams", "16"]);
    assert!(publisher.wait().unwrap().success());

    let expected = expected_counts(texts.iter().map(String::as_str));
    let want: u64 = expected.values().sum();
    // Redelivery waits for the dead pipelines' 10 s leases to run out, at least once.
    let lines = subscriber.lines_until(Duration::from_secs(180), |lines| total(lines) >= want);
    assert_eq!(summed_counts(&lines), expected);
    third.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_spanning_windows_is_counted_exactly() {
    let harness = Harness::new();
    let subscriber = harness.subscriber();
    // Create the subscription with no pipeline: what follows is published while none
    // runs. (Not by starting and stopping one: the emulator keeps the streams of a
    // stopped client too, and would hand half the backlog to them.)
    harness.subscribe("message-bus", "common-topic").await;
    let texts = lines(60);
    let input = harness.dir().join("input.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    harness.publish(&["--kms_key", TENANT_1_KEY, "--input", input.to_str().unwrap(), "--rate", "12"]);

    let pipeline = harness.pipeline(&[]);
    let expected = expected_counts(texts.iter().map(String::as_str));
    let want: u64 = expected.values().sum();
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= want);
    assert_eq!(summed_counts(&lines), expected);
    let windows = e2e::window_totals(&lines);
    assert!(windows.len() >= 2, "the backlog spans several windows: {:?}", windows.keys());
    pipeline.terminate();
}
