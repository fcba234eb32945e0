//! `--metrics_addr`: the counters move as the pipeline works.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::time::Duration;

use bytes::Bytes;
use e2e::{Harness, TENANT_1_KEY, expected_counts, message, summed_counts, total};
use envelope::Mode;

/// `GET /metrics`, which must answer 200.
fn scrape(pipeline: &e2e::Running) -> String {
    let (status, body) = pipeline.http_get("/metrics");
    assert!(status.ends_with("200 OK"), "{status}\n{body}");
    body
}

/// The value of the sample whose line starts with `series`.
fn sample(metrics: &str, series: &str) -> f64 {
    let line =
        metrics.lines().find(|line| line.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_counts_outcomes_kms_calls_cache_use_and_emit_latency() {
    let harness = Harness::new();
    let pipeline = harness.pipeline(&["--metrics_addr", "127.0.0.1:0"]);
    pipeline.wait_for_log("serving metrics", Duration::from_secs(10));
    // `harness.pipeline` returned once the pipeline pulls: alive and ready.
    assert!(pipeline.http_get("/healthz").0.ends_with("200 OK"));
    assert!(pipeline.http_get("/readyz").0.ends_with("200 OK"));
    let before = scrape(&pipeline);
    assert_eq!(sample(&before, "pubsub_envelope_ready"), 1.0, "{before}");
    assert_eq!(sample(&before, "pubsub_envelope_kms_calls_total"), 0.0);
    let subscriber = harness.subscriber();

    let texts = ["metrics one", "metrics two", "metrics three"];
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", texts[0], "--message", texts[1], "--message", texts[2]]);
    let mut tampered = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Sign, b"tampered").await;
    tampered.data = Bytes::from_static(b"tampered!");
    harness.pubsub().publisher(&harness.topic("common-topic")).await.unwrap().publish(message(tampered)).await.unwrap();

    let expected = expected_counts(texts);
    let want: u64 = expected.values().sum();
    let lines = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= want);
    assert_eq!(summed_counts(&lines), expected);
    // The dead letter and the acks settle right after the pane is published.
    let mut after = scrape(&pipeline);
    for _ in 0..50 {
        if sample(&after, "pubsub_envelope_messages_in_flight") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(&pipeline);
    }
    let counted = r#"pubsub_envelope_messages_total{outcome="counted",reason=""}"#;
    let tampered = r#"pubsub_envelope_messages_total{outcome="dead_lettered",reason="tampered"}"#;
    assert_eq!(sample(&after, counted), 3.0, "{after}");
    assert_eq!(sample(&after, tampered), 1.0, "{after}");
    // Two data keys (the publisher's, the test's): one unwrap each; the three messages
    // under the first share it. They are opened concurrently, so those that arrive
    // while the first is unwrapping count as misses (they wait for that one call):
    // every open is a hit or a miss, at least one miss per key.
    assert_eq!(sample(&after, "pubsub_envelope_kms_calls_total"), 2.0, "{after}");
    assert_eq!(sample(&after, r#"pubsub_envelope_kms_opener_calls_total{outcome="ok"}"#), 2.0, "{after}");
    assert_eq!(sample(&after, r#"pubsub_envelope_kms_opener_calls_total{outcome="refused"}"#), 0.0, "{after}");
    assert_eq!(sample(&after, r#"pubsub_envelope_kms_calls_spared_total{why="over_budget"}"#), 0.0, "{after}");
    let misses = sample(&after, "pubsub_envelope_key_cache_misses_total");
    let hits = sample(&after, "pubsub_envelope_key_cache_hits_total");
    assert_eq!(hits + misses, 4.0, "{after}");
    assert!(misses >= 2.0, "{after}");
    assert!(sample(&after, "pubsub_envelope_window_emit_latency_seconds_count") >= 1.0, "{after}");
    assert_eq!(sample(&after, "pubsub_envelope_messages_in_flight"), 0.0, "{after}");
    pipeline.terminate();
}

/// The metric names a scrape serves: each family's, and its samples' (`_total`,
/// `_bucket`, ...), whether or not a sample exists yet.
fn served_names(metrics: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            names.insert(name.to_owned());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            names.insert(line.split(['{', ' ']).next().unwrap().to_owned());
        }
    }
    names
}

/// The words of `text` that start with `prefix`, as metric names are written.
fn names_in(text: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_dashboard_and_the_alert_rules_use_only_metrics_the_pipeline_serves() {
    // Every pubsub_envelope_* name in the Grafana dashboard and the alert rules is one a
    // running pipeline serves (a renamed metric would leave an empty panel, or an
    // alert that never fires); the only other names are Prometheus's `up` and the one
    // Cloud Monitoring series both files say they read through the Stackdriver exporter.
    let harness = Harness::new();
    let pipeline = harness.pipeline(&["--metrics_addr", "127.0.0.1:0"]);
    pipeline.wait_for_log("serving metrics", Duration::from_secs(10));
    // A family shows once it has a series: one message counted makes `messages`'s.
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", "watched"]);
    pipeline.wait_for_metric(
        r#"pubsub_envelope_messages_total{outcome="counted",reason=""}"#,
        1.0,
        Duration::from_secs(30),
    );
    let served = served_names(&scrape(&pipeline));
    pipeline.terminate();
    let root = e2e::workspace().join("deploy");
    let files = [root.join("grafana/pubsub-envelope.json"), root.join("prometheus/alerts.yaml")];
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let used = names_in(&text, "pubsub_envelope_");
        assert!(used.len() >= 5, "{}: {used:?}", file.display());
        let missing: Vec<&String> = used.iter().filter(|name| !served.contains(*name)).collect();
        assert!(
            missing.is_empty(),
            "{} uses {missing:?}, which the pipeline does not serve: {served:?}",
            file.display()
        );
        let external = names_in(&text, "stackdriver_pubsub_");
        let backlog = "stackdriver_pubsub_subscription_pubsub_googleapis_com_subscription_oldest_unacked_message_age";
        assert_eq!(external.into_iter().collect::<Vec<_>>(), [backlog], "{}", file.display());
    }
}

#[test]
fn the_subscriber_and_debug_subscriber_serve_health_and_metrics_too() {
    // Only the pipeline served /metrics; a subscriber tailing the counts, or a
    // debug-subscriber left running, could not be watched or probed. Both now serve
    // /healthz, /readyz (ready while they read) and their outcomes.
    let harness = Harness::new();
    let subscriber = harness.subscriber_with(&["--metrics_addr", "127.0.0.1:0"]);
    let mut debug = harness.command("debug-subscriber");
    debug.args(["--pubsub_project_id", &harness.project, "--metrics_addr", "127.0.0.1:0"]);
    let debug = e2e::Running::spawn(debug, "reading");
    let pipeline = harness.pipeline(&[]);
    for running in [&subscriber, &debug] {
        assert!(running.http_get("/healthz").0.ends_with("200 OK"));
        assert!(running.http_get("/readyz").0.ends_with("200 OK"));
        assert_eq!(running.metric("pubsub_envelope_ready"), 1.0);
    }
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", "watched words"]);
    // Two words, so two parts of one pane reach the subscriber; the debug view opens
    // the one message.
    subscriber.wait_for_metric(
        r#"pubsub_envelope_messages_total{outcome="counted",reason=""}"#,
        2.0,
        Duration::from_secs(30),
    );
    debug.wait_for_metric(
        r#"pubsub_envelope_messages_total{outcome="opened",reason=""}"#,
        1.0,
        Duration::from_secs(30),
    );
    pipeline.terminate();
    subscriber.terminate();
    debug.terminate();
}

#[test]
fn a_pipeline_is_not_ready_while_pub_sub_does_not_answer_and_ready_again_once_it_does() {
    // The Google client retries a lost streaming pull for ever without a word: with
    // Pub/Sub gone for 30 s, /readyz still said 200. A watcher now asks every 10 s, so
    // /readyz goes 503 (and the `ready` gauge 0) while Pub/Sub does not answer, and 200
    // once it does again. Pub/Sub "goes" by freezing an emulator of the test's own.
    let harness = Harness::on(e2e::Emulator::private());
    let pipeline = harness.pipeline(&["--metrics_addr", "127.0.0.1:0"]);
    pipeline.wait_for_log("serving metrics", Duration::from_secs(10));
    assert!(pipeline.http_get("/readyz").0.ends_with("200 OK"));
    harness.emulator.freeze(true);
    let readyz = |want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _) = pipeline.http_get("/readyz");
            if status.ends_with(want) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "/readyz is still {status}, not {want}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    readyz("503 Service Unavailable");
    assert_eq!(pipeline.metric("pubsub_envelope_ready"), 0.0);
    assert!(pipeline.log().contains("Pub/Sub does not answer"), "{}", pipeline.log());
    harness.emulator.freeze(false);
    readyz("200 OK");
    assert_eq!(pipeline.metric("pubsub_envelope_ready"), 1.0);
    pipeline.terminate();
}

#[test]
fn a_metrics_address_already_in_use_stops_the_pipeline_at_start() {
    // Asked-for metrics that cannot be served are fatal, with the fix in the headline,
    // not a log line while the pipeline runs on unobserved.
    let harness = Harness::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = harness.pipeline_command(&["--metrics_addr", &addr]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("error: cannot serve metrics on {addr}")), "{stderr}");
    assert!(stderr.contains("--metrics_addr"), "{stderr}");
}
