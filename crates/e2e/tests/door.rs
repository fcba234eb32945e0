//! Bad input is refused at the door with a clear error, an unreachable Pub/Sub is named
//! within seconds with its fix, and the binaries stop on signals like services.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Harness, TENANT_1_KEY, assert_nothing_arrives, binary, expected_counts, summed_counts, total};

/// The pipeline's count of messages counted, from its metrics.
const COUNTED: &str = r#"pubsub_envelope_messages_total{outcome="counted",reason=""}"#;

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn rates_and_windows_that_mean_nothing_are_refused_by_the_flags() {
    // `--rate inf` panicked, `--rate 0` hung, `--rate nan` ran at full speed, and
    // `--window_secs 0` became 1 s: each is now a usage error (exit 2) naming the flag.
    for rate in ["inf", "0", "nan", "-5", "0.0001"] {
        let rate = &format!("--rate={rate}");
        let output = Command::new(binary("publisher")).args(["--message", "x", rate]).output().unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "--rate {rate}: {stderr}");
        assert!(stderr.contains("--rate") && stderr.contains("at least 0.001"), "--rate {rate}: {stderr}");
    }
    for (tool, args) in [
        ("pipeline", ["--window_secs", "0"]),
        ("pipeline", ["--lease_extension_secs", "5"]),
        ("pipeline", ["--shutdown_grace_secs", "0"]),
        ("publisher", ["--keys_ahead", "100000"]),
        ("publisher", ["--key_max_messages", "0"]),
        ("subscriber", ["--forget_after_secs", "0"]),
    ] {
        let output = Command::new(binary(tool)).args(args).output().unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{tool} {args:?}: {stderr}");
        assert!(stderr.contains(args[0]), "{tool} {args:?} names the flag: {stderr}");
    }
}

#[test]
fn every_duration_and_size_flag_out_of_range_is_a_usage_error_not_a_panic() {
    // `pipeline --cache_ttl_secs 40000000000` panicked inside moka (exit 101). Every
    // duration and size flag is bounded by the library's limits table, at the door.
    let cases: &[(&str, &[&str])] = &[
        ("pipeline", &["--cache_ttl_secs", "40000000000"]),
        ("pipeline", &["--cache_ttl_secs", "86401"]),
        ("pipeline", &["--cache_capacity", "18446744073709551615"]),
        ("pipeline", &["--max_outstanding_messages", "9223372036854775807"]),
        ("pipeline", &["--shutdown_grace_secs", "99999999999"]),
        ("pipeline", &["--kms_timeout_secs", "0"]),
        ("pipeline", &["--kms_timeout_secs", "18446744073709551615"]),
        ("pipeline", &["--local_kms_latency_ms", "18446744073709551615"]),
        ("pipeline", &["--max_message_age", "100years"]),
        ("pipeline", &["--max_message_age", "0s"]),
        ("pipeline", &["--max_certificate_lifetime_secs", "0"]),
        ("pipeline", &["--max_certificate_lifetime_secs", "86461"]),
        ("debug-subscriber", &["--idle_exit_secs", "18446744073709551615"]),
        ("debug-subscriber", &["--max_message_age", "32d"]),
        ("publisher", &["--key_max_age_secs", "86401"]),
        ("publisher", &["--key_max_messages", "4294967297"]),
        ("publisher", &["--kms_timeout_secs", "601"]),
        ("subscriber", &["--forget_after_secs", "604801"]),
    ];
    for (tool, args) in cases {
        let output = Command::new(binary(tool)).args(*args).output().unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{tool} {args:?}: {stderr}");
        assert!(stderr.contains(args[0]), "{tool} {args:?} names the flag: {stderr}");
        assert!(!stderr.contains("panicked"), "{tool} {args:?}: {stderr}");
    }
}

#[test]
fn trust_flags_that_contradict_or_could_never_match_are_usage_errors() {
    // Each started before: the last prefix entry won (a tenant-x wrap opened, a
    // tenant-2 one was refused), an inner `*` matched nothing, an exact entry without
    // a tenant id brought back `tenantKey` for a key the prefix bound to tenant-1, and
    // certificates were fetched over plain http.
    let key = "projects/tenant-1/locations/global/keyRings/r/cryptoKeys/k";
    let cases: &[(&[&str], &str)] = &[
        (
            &["--trusted_kms_key", "projects/tenant-2/*=tenant-2", "--trusted_kms_key", "projects/tenant-2/*=tenant-x"],
            "trust the same keys for different tenant ids",
        ),
        (&["--trusted_kms_key", "projects/*/locations/global/*"], "`*` may only end it"),
        (&["--trusted_kms_key", "projects/tenant-1/*=tenant-1", "--trusted_kms_key", key], "names no tenant id"),
        (&["--trusted_signer", "a@p.iam.gserviceaccount.com=http://certs.example.com/a"], "must be https"),
    ];
    for tool in ["pipeline", "debug-subscriber"] {
        for (args, why) in cases {
            let output = Command::new(binary(tool)).args(*args).output().unwrap();
            let stderr = stderr_of(&output);
            assert_eq!(output.status.code(), Some(2), "{tool} {args:?}: {stderr}");
            assert!(stderr.contains(why), "{tool} {args:?}: {stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_over_pub_subs_limit_is_refused_before_anything_is_sent() {
    // An 11 MB line made the publisher wait forever; now the whole file is checked
    // first, and the error names the line.
    let harness = Harness::new();
    let probe = harness.subscribe("door-probe", "common-topic").await;
    let input = harness.dir().join("input.txt");
    std::fs::write(&input, format!("a first line\n{}\na third\n", "x".repeat(11_000_000))).unwrap();
    let output = harness
        .command("publisher")
        .args(["--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY, "--input"])
        .arg(&input)
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("line 2 of {}", input.display())), "{stderr}");
    assert!(stderr.contains("over Pub/Sub's limit"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_nothing_arrives(&harness.pubsub(), &probe, Duration::from_secs(3)).await;
}

/// Each binary, with flags that take it as far as its start-up probe of Pub/Sub.
const PROBING: [(&str, &[&str]); 4] = [
    ("publisher", &["--pubsub_project_id", "door", "--kms_key", TENANT_1_KEY, "--message", "x"]),
    ("pipeline", &["--project", "door"]),
    ("subscriber", &["--pubsub_project_id", "door"]),
    ("debug-subscriber", &["--pubsub_project_id", "door"]),
];

#[test]
fn an_emulator_that_is_not_running_is_named_within_seconds() {
    // With PUBSUB_EMULATOR_HOST pointing at nothing, the publisher was silent for close
    // to a minute; every binary now gives up within ~10 s and says how to start it.
    let harness = Harness::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for (tool, args) in PROBING {
        let started = Instant::now();
        let output = harness
            .command(tool)
            .env("PUBSUB_EMULATOR_HOST", closed.to_string())
            .args(args)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{tool}: {stderr}");
        let headline = stderr.lines().find(|line| line.starts_with("error: ")).unwrap_or_default();
        assert!(headline.contains("did not answer within 10 s"), "{tool}: {stderr}");
        assert!(headline.contains("scripts/emulator.sh start"), "{tool}: {stderr}");
        // 10 s of probing, and start-up; far below the ~55 s the client's retries took.
        assert!(started.elapsed() < Duration::from_secs(30), "{tool} took {:?}", started.elapsed());
    }
}

#[test]
fn missing_credentials_are_named_once_with_the_login_for_pub_sub_and_for_cloud_kms() {
    // Without credentials the error repeated "but future attempts may succeed" three
    // times, and `--kms gcp` on the emulator retried the KMS for 6.5 s and then named no
    // login. Now every binary stops on one line naming the login and where it looked,
    // and `--kms gcp` asks for a token at start-up instead of retrying a KMS call.
    let harness = Harness::new();
    let home = tempfile::tempdir().unwrap();
    let without_credentials = |tool: &str| {
        let mut command = harness.command(tool);
        command
            .env("HOME", home.path())
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("GCE_METADATA_HOST")
            .stdout(Stdio::null());
        command
    };
    // Pub/Sub on Google Cloud, for every binary; Cloud KMS with the emulator's Pub/Sub,
    // for those that use a KMS.
    let mut cases: Vec<(Command, &str)> = Vec::new();
    for (tool, args) in PROBING {
        let mut command = without_credentials(tool);
        command.env_remove("PUBSUB_EMULATOR_HOST").args(args);
        cases.push((command, "PUBSUB_EMULATOR_HOST"));
    }
    for (tool, args) in PROBING.iter().filter(|(tool, _)| *tool != "subscriber") {
        let mut command = without_credentials(tool);
        command.args(["--kms", "gcp"]).args(*args);
        cases.push((command, "--kms local:PATH"));
    }
    for (mut command, offline) in cases {
        let output = command.output().unwrap();
        let stderr = stderr_of(&output);
        let tool = command.get_program().to_string_lossy().into_owned();
        assert_eq!(output.status.code(), Some(1), "{tool}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{tool}: {stderr}");
        let headline = errors[0];
        assert!(headline.contains("gcloud auth application-default login"), "{tool}: {stderr}");
        assert!(headline.contains(offline), "{tool}: {stderr}");
        assert!(headline.contains(&home.path().display().to_string()), "{tool} names where it looked: {stderr}");
        assert!(!stderr.contains("because:") && !stderr.contains("future attempts"), "{tool}: {stderr}");
        assert!(!stderr.contains("retrying"), "{tool} retried instead of naming the login: {stderr}");
    }
}

#[test]
fn ctrl_c_stops_the_publisher_with_every_id_printed_and_a_summary() {
    // Ctrl-C during a long publish with stdout redirected wrote no ids and no summary;
    // now the publisher stops reading, waits for what is in flight, prints an id for
    // each message published, says how many, and exits 130.
    let harness = Harness::new();
    let publisher = harness
        .command("publisher")
        .args(["--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY, "--message", "m"])
        .args(["--count", "100000", "--rate", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    Command::new("kill").args(["-INT", &publisher.id().to_string()]).status().unwrap();
    let output = publisher.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let ids = String::from_utf8_lossy(&output.stdout).lines().count();
    let summary = stderr.lines().find(|line| line.contains("messages (0 failed)")).expect(&stderr);
    assert!(summary.contains(&format!("published {ids} of {ids} messages")), "{ids} ids; {summary}");
    assert!(summary.contains("stopped by SIGINT"), "{summary}");
    assert!(ids > 50, "it was publishing for 3 s at 200/s: {ids}");
}

/// A pipeline whose KMS answers in `latency_ms`, holding one message it is still
/// opening: its drain cannot end before that unwrap does.
fn pipeline_mid_unwrap(harness: &Harness, latency_ms: &str, extra: &[&str]) -> e2e::Running {
    let pipeline =
        harness.pipeline(&[&["--metrics_addr", "127.0.0.1:0", "--local_kms_latency_ms", latency_ms], extra].concat());
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", "opened slowly"]);
    pipeline.wait_for_metric("pubsub_envelope_messages_in_flight", 1.0, Duration::from_secs(30));
    pipeline
}

#[test]
fn a_second_signal_stops_the_pipeline_at_once() {
    // The pipeline drains on the first SIGTERM; a second one, sent while it drains (an
    // unwrap of 20 s holds it), ends it at once with the signal's status.
    let harness = Harness::new();
    let mut pipeline = pipeline_mid_unwrap(&harness, "20000", &[]);
    let pid = pipeline.pid().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    pipeline.wait_for_log("draining", Duration::from_secs(10));
    let started = Instant::now();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = pipeline.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(143), "{}", pipeline.log());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(pipeline.log().contains("SIGTERM again: stopping at once"), "{}", pipeline.log());
}

#[test]
fn a_drain_longer_than_its_grace_is_cut_short() {
    // `--shutdown_grace_secs` bounds the drain: past it the pipeline stops with status
    // 1 and says why (what it held is redelivered).
    let harness = Harness::new();
    let pipeline = pipeline_mid_unwrap(&harness, "20000", &["--shutdown_grace_secs", "2"]);
    let log = pipeline.terminate_expecting(1);
    assert!(log.contains("the drain took longer than its grace (2s)"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_that_cannot_publish_its_last_panes_exits_non_zero() {
    // A drain whose panes cannot be published (here: the output topic deleted under the
    // pipeline) nacks their messages for another replica and exits 1, not 0.
    let harness = Harness::new();
    let pipeline = harness.pipeline(&["--window_secs", "600", "--metrics_addr", "127.0.0.1:0"]);
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", "held in an open window"]);
    pipeline.wait_for_metric(COUNTED, 1.0, Duration::from_secs(30));
    harness.pubsub().delete_topic(&harness.topic("df_out")).await.unwrap();
    let log = pipeline.terminate_expecting(1);
    assert!(log.contains("could not be published"), "{log}");
}

#[tokio::test]
async fn a_subscription_deleted_under_the_pipeline_ends_it_with_that_error_after_publishing_what_it_counted() {
    // The streams of both workers fail (here: the subscription deleted): the pipeline
    // ends within seconds rather than when its 600 s window would close, what was
    // already counted is published all the same, and it exits 1 naming the subscription.
    let harness = Harness::new();
    let subscriber = harness.subscriber();
    let mut pipeline = harness.pipeline(&["--window_secs", "600", "--metrics_addr", "127.0.0.1:0", "--workers", "2"]);
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", "counted before the fall"]);
    pipeline.wait_for_metric(COUNTED, 1.0, Duration::from_secs(30));
    harness.pubsub().delete_subscription(&harness.subscription("message-bus")).await.unwrap();
    let status = pipeline.wait(Duration::from_secs(60));
    let log = pipeline.log();
    assert_eq!(status.code(), Some(1), "{log}");
    let error = log.lines().rev().find(|line| line.starts_with("error:")).expect(&log);
    assert!(error.contains("streaming pull from") && error.contains("message-bus"), "{error}");
    let expected = expected_counts(["counted before the fall"]);
    let lines = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= 4);
    assert_eq!(summed_counts(&lines), expected);
}

#[test]
fn every_binary_writes_its_man_page_and_completions_and_names_itself() {
    // `subscriber --help` opened with "How to reach the KMS, and for which tenant" and
    // `debug-subscriber --help` with "Where a consumer serves its Prometheus metrics":
    // a flattened struct's doc, where the binary's own was misplaced. Each now names
    // its own purpose, in its help and its man page.
    for (tool, purpose) in [
        ("publisher", "Seal messages"),
        ("pipeline", "Pull the shared topic, open each envelope"),
        ("subscriber", "Tail the pipeline"),
        ("debug-subscriber", "Read the shared topic and show each message opened"),
    ] {
        let version = Command::new(binary(tool)).arg("--version").output().unwrap();
        assert!(String::from_utf8_lossy(&version.stdout).starts_with(&format!("{tool} ")), "{tool} --version");
        let help = Command::new(binary(tool)).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.lines().next().is_some_and(|first| first.starts_with(purpose)), "{tool} --help: {help}");
        let man = Command::new(binary(tool)).args(["--generate", "man"]).output().unwrap();
        let man = String::from_utf8_lossy(&man.stdout);
        assert!(man.contains(".TH") && man.contains("log_format"), "{tool} man page: {man}");
        let name_line = man.lines().skip_while(|line| *line != ".SH NAME").nth(1).unwrap_or_default();
        assert!(name_line.contains(purpose), "{tool} man page NAME: {name_line}");
        let bash = Command::new(binary(tool)).args(["--generate", "complete-bash"]).output().unwrap();
        let bash = String::from_utf8_lossy(&bash.stdout);
        assert!(bash.contains(&format!("complete -F _{}", tool.replace('-', "__"))), "{tool}: {bash}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_cloud_logging_severity() {
    let output = Command::new(binary("publisher"))
        .args(["keyring", "--log_format", "json", "--keyring"])
        .arg(std::env::temp_dir().join(format!("door-{}.json", std::process::id())))
        .arg("list")
        .output()
        .unwrap();
    // A missing keyring is an error (`list` on a typo printed nothing and exited 0),
    // and with JSON logs it is one JSON entry too, severity ERROR: it was plain lines,
    // which Cloud Logging took for several unstructured entries.
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<serde_json::Value> =
        stderr_of(&output).lines().map(|line| serde_json::from_str(line).expect(line)).collect();
    let last = lines.last().expect("an error");
    assert_eq!(last["severity"], "ERROR", "{lines:?}");
    assert!(last["message"].as_str().unwrap().contains("there is no keyring at"), "{lines:?}");
    let harness = Harness::new();
    // A reader, so that the run is an ordinary one: a topic nobody reads would warn.
    harness.subscribe("door-json", "common-topic").await;
    let output = harness
        .command("publisher")
        .args(["--log_format", "json", "--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY])
        .args(["--message", "a json-logged run"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let entries: Vec<serde_json::Value> =
        stderr_of(&output).lines().map(|line| serde_json::from_str(line).expect(line)).collect();
    assert!(entries.iter().all(|entry| entry["severity"] == "INFO"), "{entries:?}");
    assert!(entries.iter().any(|entry| entry["message"].as_str().unwrap().starts_with("published 1 of 1")));
}

#[test]
fn the_pipeline_counts_what_it_was_given_before_a_clean_stop() {
    // SIGTERM once: the open window is published and acked, the summary is one line a
    // person reads, and the exit status is 0.
    let harness = Harness::new();
    let subscriber = harness.subscriber();
    let pipeline = harness.pipeline(&["--window_secs", "600", "--metrics_addr", "127.0.0.1:0"]);
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", "drained on stop"]);
    pipeline.wait_for_metric(COUNTED, 1.0, Duration::from_secs(30));
    assert!(pipeline.http_get("/readyz").0.ends_with("200 OK"));
    let log = pipeline.terminate();
    let expected = expected_counts(["drained on stop"]);
    let lines = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= 3);
    assert_eq!(summed_counts(&lines), expected);
    let summary = log.lines().find(|line| line.contains("pipeline stopped")).expect(&log);
    assert!(summary.contains("counted 1 message in 1 pane, 0 dead-lettered"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_a_topic_nobody_reads_on_the_emulator_says_so() {
    // `--pubsub_project_id bsu` (a typo) made a topic of its own on the emulator and
    // exited 0 with the message dropped, silently. It still sends (the topic is real),
    // but warns, naming the topic; where the topic has a subscription, it does not.
    let harness = Harness::new();
    let typo = format!("{}-typo", harness.project);
    let lost = harness
        .command("publisher")
        .args(["--pubsub_project_id", &typo, "--kms_key", TENANT_1_KEY, "--message", "x"])
        .output()
        .unwrap();
    let stderr = stderr_of(&lost);
    assert!(lost.status.success(), "{stderr}");
    assert!(
        stderr.contains("has no subscription") && stderr.contains(&format!("projects/{typo}/topics/common-topic")),
        "{stderr}"
    );
    harness.subscribe("door-reader", "common-topic").await;
    let read = harness.publish(&["--kms_key", TENANT_1_KEY, "--message", "x"]);
    let stderr = stderr_of(&read);
    assert!(read.status.success() && !stderr.contains("has no subscription"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyring_commands_take_the_same_kms_flag_as_publishing() {
    // Property: `publisher keyring create` writes the keyring that `--kms local:PATH`
    // (or PUBSUB_ENVELOPE_KMS) names, so the next publish with the same flag finds it;
    // `--keyring` still works and wins; `--kms gcp` is a usage error naming the fix.
    let dir = tempfile::tempdir().unwrap();
    let by_env = dir.path().join("by-env.json");
    let create = Command::new(binary("publisher"))
        .env("PUBSUB_ENVELOPE_KMS", format!("local:{}", by_env.display()))
        .current_dir(dir.path())
        .args(["keyring", "create", TENANT_1_KEY])
        .output()
        .unwrap();
    assert!(create.status.success(), "{}", stderr_of(&create));
    assert!(by_env.exists() && !dir.path().join("keyring.json").exists());

    let by_flag = dir.path().join("by-flag.json");
    let kms = format!("local:{}", by_flag.display());
    let create = Command::new(binary("publisher")).args(["keyring", "--kms", &kms, "create", TENANT_1_KEY]).output();
    assert!(create.unwrap().status.success());
    let harness = Harness::new();
    harness.subscribe("door-keyring", "common-topic").await;
    let publish = harness
        .command("publisher")
        .args(["--kms", &kms, "--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY])
        .args(["--message", "sealed under the created key"])
        .output()
        .unwrap();
    assert!(publish.status.success(), "{}", stderr_of(&publish));

    let old = dir.path().join("old.json");
    let create = Command::new(binary("publisher"))
        .env("PUBSUB_ENVELOPE_KMS", format!("local:{}", by_env.display()))
        .args(["keyring", "--keyring"])
        .arg(&old)
        .args(["create", TENANT_1_KEY])
        .output()
        .unwrap();
    assert!(create.status.success() && old.exists(), "{}", stderr_of(&create));

    let gcp = Command::new(binary("publisher")).args(["keyring", "--kms", "gcp", "list"]).output().unwrap();
    assert_eq!(gcp.status.code(), Some(2), "{}", stderr_of(&gcp));
    assert!(stderr_of(&gcp).contains("gcloud kms"), "{}", stderr_of(&gcp));
}

/// Lines of a child's pipe as they come, on a thread of their own.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_prints_each_id_as_its_publish_is_acknowledged() {
    // Property: with input still open, each line's message id appears on stdout once
    // Pub/Sub acknowledged it, not at the end of input.
    let harness = Harness::new();
    harness.subscribe("door-ids", "common-topic").await;
    let mut publisher = harness
        .command("publisher")
        .args(["--pubsub_project_id", &harness.project, "--kms_key", TENANT_1_KEY, "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    let ids = lines_of(publisher.stdout.take().unwrap());
    for line in ["first line", "second line"] {
        use std::io::Write as _;
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let id = ids.recv_timeout(Duration::from_secs(20)).expect("an id while the input is still open");
        assert!(!id.is_empty() && id.chars().all(|c| c.is_ascii_digit()), "{id:?}");
    }
    drop(stdin);
    assert!(publisher.wait().unwrap().success());
}

#[test]
fn a_pubsub_that_stops_answering_is_named_once_within_seconds() {
    // Property: when the emulator dies mid-run, the publisher says so once, naming the
    // emulator and how to start it, within QUIET_WARNING (10 s) of the first unanswered
    // publish, however many messages wait.
    let state = tempfile::tempdir().unwrap();
    let emulator = |action: &str| {
        Command::new(e2e::workspace().join("scripts/emulator.sh"))
            .arg(action)
            .env("EMULATOR_STATE_DIR", state.path())
            .output()
            .unwrap()
    };
    let started = emulator("start");
    assert!(started.status.success(), "{}", stderr_of(&started));
    let host = String::from_utf8(started.stdout).unwrap().trim().rsplit('=').next().unwrap().to_owned();
    let harness = Harness::new();
    let mut publisher = harness
        .command("publisher")
        .env("PUBSUB_EMULATOR_HOST", &host)
        .args(["--pubsub_project_id", "door-lost", "--kms_key", TENANT_1_KEY, "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    let ids = lines_of(publisher.stdout.take().unwrap());
    let log = lines_of(publisher.stderr.take().unwrap());
    use std::io::Write as _;
    writeln!(stdin, "before the emulator stops").unwrap();
    stdin.flush().unwrap();
    ids.recv_timeout(Duration::from_secs(20)).expect("the first message is published");
    let stopped = emulator("stop");
    assert!(stopped.status.success(), "{}", stderr_of(&stopped));
    let lost = Instant::now();
    for n in 0..20 {
        writeln!(stdin, "after the emulator stopped {n}").unwrap();
    }
    stdin.flush().unwrap();
    let mut said = Vec::new();
    while lost.elapsed() < Duration::from_secs(18) {
        if let Ok(line) = log.recv_timeout(Duration::from_millis(200))
            && line.contains("has not acknowledged a publish")
        {
            said.push((lost.elapsed(), line));
        }
    }
    publisher.kill().unwrap();
    publisher.wait().unwrap();
    assert_eq!(said.len(), 1, "{said:#?}");
    let (after, line) = &said[0];
    assert!(*after < Duration::from_secs(16), "named after {after:?}");
    assert!(line.contains(&host) && line.contains("scripts/emulator.sh start"), "{line}");
}

#[test]
fn ctrl_c_during_the_start_up_probe_stops_every_binary_at_once() {
    // Property: SIGINT while a binary waits for a Pub/Sub that is not there ends it
    // within seconds with status 130, instead of after the 10 s probe with status 1.
    let harness = Harness::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for (tool, args) in PROBING {
        let child = harness
            .command(tool)
            .env("PUBSUB_EMULATOR_HOST", closed.to_string())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Well after start-up (signals are listened for from the first lines of `main`),
        // well before the 10 s probe gives up.
        std::thread::sleep(Duration::from_secs(3));
        let interrupted = Instant::now();
        Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(130), "{tool}: {}", stderr_of(&output));
        assert!(interrupted.elapsed() < Duration::from_secs(5), "{tool} took {:?}", interrupted.elapsed());
    }
}
