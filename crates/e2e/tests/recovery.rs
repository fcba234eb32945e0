//! Nothing is lost when the pipeline dies or is away.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{Harness, TENANT_1_KEY, expected_counts, summed_counts, total};

/// Kills `pipeline` (SIGKILL) at a moment when no pane is between being published and
/// being acked. A kill inside that gap leaves published counts whose messages were
/// never acked: they are counted again (at-least-once output, which no kill -9 can
/// avoid). Windows are 2 s and a pane is published 0.25 s after its window ends, its
/// acks on the client's next flush (every 100 ms). So: wait for a pane to be logged,
/// give its acks 700 ms, and kill only if the clock is then well before the next
/// pane is due and no other pane was logged meanwhile. On a loaded machine a pane can
/// be published a second late (the first publish to a cold emulator): then wait for
/// the next one. Wall-clock timing alone (the first version) lost this race in CI.
fn kill_between_panes(pipeline: e2e::Running) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let panes = pipeline.log().matches("published pane").count();
        while pipeline.log().matches("published pane").count() == panes {
            assert!(Instant::now() < deadline, "no pane was published:\n{}", pipeline.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(700));
        let into_window = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() % 2000;
        let quiet = pipeline.log().matches("published pane").count() == panes + 1;
        if quiet && (600..1700).contains(&into_window) {
            pipeline.kill();
            return;
        }
    }
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
    let texts = lines(400);
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
    kill_between_panes(first);
    let second = harness.pipeline(&["--streams", "1"]);
    kill_between_panes(second);
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
