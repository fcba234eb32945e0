//! Tenants against tenants, through the real binaries on the emulator: what a tenant
//! holding its own keys, or anyone with publish rights, could do to another tenant's
//! counts or to an operator's screen, and does not (issue: tenant integrity).
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::time::Duration;

use bytes::Bytes;
use e2e::{
    Harness, PIPELINE_KEY, TENANT_1_KEY, TENANT_1_SIGNER, TENANT_2_KEY, TRUSTED_KMS_KEYS_ENV, assert_dead_lettered,
    expected_counts, message, summed_counts, total,
};
use envelope::format::{decode_base64, encode_base64};
use envelope::{AttestBy, Attributes, KeyVersionName, Mode, Sealed, Sealer};

/// The encrypt test vectors: tenant-1's article message, and tenant-3's genuine message
/// whose AES-GCM tag was steered onto it (crates/envelope/tests/vectors/encrypt.json).
fn steered_pair(harness: &Harness) -> (std::path::PathBuf, Vec<String>, [(Sealed, String); 2]) {
    let dir = e2e::workspace().join("crates/envelope/tests/vectors");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let (vectors, kek) = (read("encrypt.json"), read("keyring_wrap.json"));
    // The vectors' data keys were wrapped by the local keyring under keyring_wrap.json's
    // key encryption key: a keyring holding it under each key name unwraps them.
    let keys: Vec<_> = vectors["wrapped_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|wrapped| {
            serde_json::json!({"name": wrapped["kms_key"], "purpose": "ENCRYPT_DECRYPT", "primary": kek["version"],
                "versions": [{"version": kek["version"], "material": kek["kek"]}]})
        })
        .collect();
    let keyring = harness.dir().join("vectors-keyring.json");
    let file = serde_json::json!({"format": "pubsub-envelope-keyring/1", "keys": keys});
    std::fs::write(&keyring, file.to_string()).unwrap();
    let valid = vectors["valid"].as_array().unwrap();
    let pick = |name: &dyn Fn(&str) -> bool| {
        let case = valid.iter().find(|case| name(case["name"].as_str().unwrap())).unwrap();
        let sealed = Sealed {
            data: Bytes::from(decode_base64(case["sealed"]["data"].as_str().unwrap()).unwrap()),
            attributes: serde_json::from_value(case["sealed"]["attributes"].clone()).unwrap(),
        };
        let text = String::from_utf8(decode_base64(case["data"].as_str().unwrap()).unwrap()).unwrap();
        (sealed, text)
    };
    let victim = pick(&|name| name == "the article's message with attributes");
    let steered = pick(&|name| name.starts_with("tenant-3"));
    let trust = serde_json::from_value(vectors["trusted_kms_keys"].clone()).unwrap();
    (keyring, trust, [victim, steered])
}

// Tenant-3 seals a genuine message under its own key whose AES-GCM tag equals
// tenant-1's message's, and both arrive together: each is counted (before, the one
// counted second was acked as a "copy" of the first, never counted, never dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_steers_its_tag_onto_another_tenants_message_suppresses_nothing() {
    let harness = Harness::new();
    let (keyring, trust, [(victim, victim_text), (steered, steered_text)]) = steered_pair(&harness);
    let tag = |sealed: &Sealed| sealed.data.slice(sealed.data.len() - 16..);
    assert_eq!(tag(&victim), tag(&steered), "the two messages share a tag");
    let trust = trust.join(",");
    let mut command =
        harness.pipeline_command(&["--tenant_id", "tenant-1", "--trusted_kms_key", &trust, "--window_secs", "5"]);
    command.env("PUBSUB_ENVELOPE_KMS", format!("local:{}", keyring.display()));
    let pipeline = e2e::Running::spawn(command, "pipeline started");
    let subscriber = harness.subscriber();
    let bus = harness.pubsub().publisher(&harness.topic("common-topic")).await.unwrap();
    let (first, second) = tokio::join!(bus.publish(message(victim)), bus.publish(message(steered)));
    first.unwrap();
    second.unwrap();
    let want = expected_counts([victim_text.as_str(), steered_text.as_str()]);
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= want.values().sum());
    assert_eq!(summed_counts(&lines), want, "both tenants' words, each once");
    pipeline.terminate();
}

/// P-256's group order, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The other valid ECDSA signature of the same message: DER `(r, s)` made `(r, n - s)`.
fn malleated(der: &[u8]) -> Vec<u8> {
    let integer = |at: usize| {
        let len = der[at + 1] as usize;
        (&der[at + 2..at + 2 + len], at + 2 + len)
    };
    let (r, next) = integer(2);
    let (s, _) = integer(next);
    let mut s32 = [0u8; 32];
    let s = &s[s.len().saturating_sub(32)..];
    s32[32 - s.len()..].copy_from_slice(s);
    let mut negated = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let digit = i16::from(P256_ORDER[i]) - i16::from(s32[i]) - borrow;
        borrow = i16::from(digit < 0);
        negated[i] = (digit + 256 * borrow) as u8;
    }
    let first = negated.iter().position(|&b| b != 0).unwrap();
    let mut s_der = vec![0u8; usize::from(negated[first] & 0x80 != 0)];
    s_der.extend_from_slice(&negated[first..]);
    let body = [&[0x02, r.len() as u8][..], r, &[0x02, s_der.len() as u8], &s_der].concat();
    [&[0x30, body.len() as u8][..], &body].concat()
}

// Anyone who sees a strict attest message (the KMS signs each one, ECDSA) can make its
// other valid signature (r, n - s) and publish that: it is the same message, counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malleated_signature_is_the_same_message_and_counts_once() {
    let harness = Harness::new();
    let pipeline = harness.pipeline(&["--window_secs", "5"]);
    let subscriber = harness.subscriber();
    let version = KeyVersionName::new(TENANT_1_SIGNER.parse().unwrap(), 1).unwrap();
    let mut sealer = Sealer::attest(harness.kms(), version, "tenantKey", AttestBy::KmsEachMessage);
    let text = "strictly attested words";
    let original = sealer.seal(Bytes::from(text), Attributes::new()).await.unwrap();
    let mut copy = original.clone();
    let signature = decode_base64(&original.attributes["kms_signature"]).unwrap();
    copy.attributes.insert("kms_signature".into(), encode_base64(&malleated(&signature)));
    assert_ne!(copy.attributes["kms_signature"], original.attributes["kms_signature"]);
    let bus = harness.pubsub().publisher(&harness.topic("common-topic")).await.unwrap();
    let (first, second) = tokio::join!(bus.publish(message(original)), bus.publish(message(copy)));
    first.unwrap();
    second.unwrap();
    let lines = subscriber.lines_for(Duration::from_secs(12));
    assert_eq!(summed_counts(&lines), expected_counts([text]), "counted once");
    let log = pipeline.terminate();
    assert!(!log.contains("rejected"), "the malleated copy opens too (it is valid): {log}");
}

// Trusting a service account says nothing about KMS keys: a message under a key nobody
// named is dead-lettered `untrusted_key` (before, with no --trusted_kms_key, every key
// the credentials could use was trusted, and it was counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_trusts_only_a_service_account_trusts_no_kms_key() {
    let harness = Harness::new();
    let pubsub = harness.pubsub();
    let dead_letters = harness.subscribe("dead-letter-reader", "dead-letter").await;
    let mut command = harness.pipeline_command(&["--trusted_signer", "robot@tenant-9.iam.gserviceaccount.com"]);
    command.env_remove(TRUSTED_KMS_KEYS_ENV);
    let pipeline = e2e::Running::spawn(command, "pipeline started");
    let outsider = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Encrypt, b"an outsider's words").await;
    let bus = pubsub.publisher(&harness.topic("common-topic")).await.unwrap();
    assert_dead_lettered(&pubsub, &bus, &dead_letters, vec![("under a key nobody named", "untrusted_key", outsider)])
        .await;
    let log = pipeline.terminate();
    assert!(!log.contains("ANY KMS key"), "no warning about trusting every key, since none is: {log}");
}

// The article's command line (no trust flag) is a usage error that names both ways out;
// the dangerous one warns; an entry trusting every project warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_trust_nothing_unless_told_and_say_how_to_tell_them() {
    let harness = Harness::new();
    for tool in ["pipeline", "debug-subscriber"] {
        let mut command = harness.command(tool);
        let project = if tool == "pipeline" { "--project" } else { "--pubsub_project_id" };
        command.env_remove(TRUSTED_KMS_KEYS_ENV).args([project, &harness.project]);
        let output = output_within(command, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{tool}: {stderr}");
        assert!(stderr.contains("--trusted_kms_key") && stderr.contains("--dangerous_trust_any_kms_key"), "{stderr}");
    }
    let mut any = harness.pipeline_command(&["--dangerous_trust_any_kms_key"]);
    any.env_remove(TRUSTED_KMS_KEYS_ENV);
    let log = e2e::Running::spawn(any, "pipeline started").terminate();
    assert!(log.contains("ANY KMS key"), "{log}");
    let log = harness.pipeline(&["--trusted_kms_key", "projects/*"]).terminate();
    assert!(log.contains("trusts every project"), "{log}");
}

/// Runs `command` to its end, or panics if it is still running after `timeout` (a
/// consumer that trusted every key would start and never stop).
fn output_within(mut command: std::process::Command, timeout: Duration) -> std::process::Output {
    let mut child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("still running after {timeout:?}: it started without being told what to trust");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// What an attacker puts in a field to start a line of its own in an operator's view.
const FORGED: &str = "\nOPENED 999 mode=encrypt kms_key=forged";

// Newlines and escape codes in what a publisher chooses (attribute names and values,
// data, a reject's detail) are shown escaped by debug-subscriber, its dead-letter
// listing and the pipeline's text log: no line the attacker wrote appears as a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_messages_never_start_a_line_of_their_own() {
    let harness = Harness::new();
    harness.subscribe("dead-letter-debug", "dead-letter").await;
    let pipeline = harness.pipeline(&[]);
    let mut command = harness.command("debug-subscriber");
    command.args(["--pubsub_project_id", &harness.project]);
    let debug = e2e::Running::spawn(command, "reading");

    let mut sealer = Sealer::sign(harness.kms(), TENANT_1_KEY.parse().unwrap(), "tenantKey");
    let attributes = Attributes::from([("note".to_owned(), format!("x{FORGED}\u{1b}[2J"))]);
    let opened = sealer.seal(Bytes::from(format!("words{FORGED}")), attributes).await.unwrap();
    let mut rejected = sealer.seal(Bytes::from_static(b"words"), Attributes::new()).await.unwrap();
    rejected.attributes.insert(format!("envelope_x{FORGED}"), "1".into());
    let bus = harness.pubsub().publisher(&harness.topic("common-topic")).await.unwrap();
    bus.publish(message(opened)).await.unwrap();
    bus.publish(message(rejected)).await.unwrap();

    let lines = debug.lines_until(Duration::from_secs(30), |lines| {
        lines.iter().filter(|line| line.starts_with("OPENED") || line.starts_with("REJECTED")).count() >= 2
    });
    let forged = |line: &str| line.starts_with("OPENED 999") || line.contains('\u{1b}');
    assert!(!lines.iter().any(|line| forged(line)), "{lines:#?}");
    assert!(lines.iter().any(|line| line.contains(r"note=x\nOPENED 999")), "{lines:#?}");
    assert!(
        lines.iter().any(|line| line.starts_with("REJECTED") && line.contains(r"envelope_x\nOPENED 999")),
        "{lines:#?}"
    );

    let listing = harness
        .command("debug-subscriber")
        .args(["--pubsub_project_id", &harness.project, "--dead_letters", "--idle_exit_secs", "10"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains(r"envelope_x\nOPENED 999"), "{listing}");
    assert!(!listing.lines().any(forged), "{listing}");
    let log = pipeline.terminate();
    assert!(log.contains(r"envelope_x\nOPENED 999"), "the rejection is logged: {log}");
    assert!(!log.lines().any(forged), "{log}");
}

// Anyone who can publish to the dead-letter topic could replay a genuine, already
// counted message through `--redrive`. Redrive sends back only dead letters whose
// receipt (made with the pipeline's key over that very dead letter) holds: not one
// without a receipt, nor one wearing a receipt taken from another dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_dead_letter_is_not_redriven() {
    let harness = Harness::new();
    let pubsub = harness.pubsub();
    harness.subscribe("dead-letter-debug", "dead-letter").await;
    let peek = harness.subscribe("dead-letter-peek", "dead-letter").await;
    harness.subscribe("bus-watch", "common-topic").await;
    let own = ["--pipeline_kms_key", PIPELINE_KEY];
    let pipeline = harness.pipeline(&[&own[..], &["--trusted_kms_key", "projects/tenant-1/*"]].concat());
    // A genuine dead letter: tenant 2 is not trusted yet.
    let late = harness.seal(TENANT_2_KEY, "tenantKey", Mode::Encrypt, b"late trust").await;
    let bus = pubsub.publisher(&harness.topic("common-topic")).await.unwrap();
    let late_id = bus.publish(message(late.clone())).await.unwrap();
    let genuine = e2e::receive(&pubsub, &peek, 1, Duration::from_secs(60)).await.remove(0);
    assert!(genuine.attributes.contains_key("reject_receipt"), "{genuine:?}");
    // A replay of tenant 1's counted message dressed as a dead letter, with no receipt,
    // and again wearing the genuine one's receipt.
    let counted = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Encrypt, b"counted once").await;
    let forged = |receipt: Option<&String>| {
        let mut forged = message(counted.clone());
        forged.attributes.insert("reject_reason".into(), "untrusted_key".into());
        forged.attributes.insert("original_message_id".into(), "forged".into());
        if let Some(receipt) = receipt {
            forged.attributes.insert("reject_receipt".into(), receipt.clone());
        }
        forged
    };
    let dead_letter_topic = pubsub.publisher(&harness.topic("dead-letter")).await.unwrap();
    dead_letter_topic.publish(forged(None)).await.unwrap();
    dead_letter_topic.publish(forged(Some(&genuine.attributes["reject_receipt"]))).await.unwrap();
    pipeline.terminate();

    let trust_both = ["--trusted_kms_key", "projects/tenant-1/*,projects/tenant-2/*"];
    let records = harness.dead_letter_records(&[&own[..], &trust_both[..], &["--redrive"]].concat());
    assert_eq!(records.len(), 3, "{records:#?}");
    for record in &records {
        let genuine = record["original_message_id"] == late_id.as_str();
        assert_eq!(record["redriven_as"].is_string(), genuine, "{record}");
        let receipt = record["receipt"].as_str().unwrap();
        assert_eq!(receipt == "verified", genuine, "{record}");
        if !genuine {
            assert!(record["status"].as_str().unwrap().contains("not redriven"), "{record}");
        }
    }
    // On the bus: the late message as first published, and its redriven copy; neither
    // forged one. (Pulled, not streamed: see `Harness::pull_attributes`.)
    let mut on_bus = harness.pull_attributes("bus-watch", Duration::from_secs(30));
    if on_bus.len() < 2 {
        on_bus.extend(harness.pull_attributes("bus-watch", Duration::from_secs(5)));
    }
    let late: serde_json::Map<String, serde_json::Value> =
        late.attributes.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    assert_eq!(on_bus, [late.clone(), late], "the genuine original and its redriven copy, nothing else");
    // Redrive needs the key: without one, nothing could be told apart.
    let output = harness
        .command("debug-subscriber")
        .args(["--pubsub_project_id", &harness.project, "--dead_letters", "--redrive"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--pipeline_kms_key"));
}

// With the pipeline's own key, its output is sealed: nothing of the counts is in the
// clear on the output topic, the subscriber with the key reads them, and counts that
// someone else publishes to the output topic are not taken for the pipeline's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_output_is_read_only_with_the_pipelines_key_and_forged_counts_are_skipped() {
    let harness = Harness::new();
    let mut misnamed = harness.command("subscriber");
    misnamed.args(["--pubsub_project_id", &harness.project, "--pipeline_kms_key", "projects/ops/keys/own"]);
    let misnamed = output_within(misnamed, Duration::from_secs(30));
    assert_eq!(misnamed.status.code(), Some(2), "a usage error: {}", String::from_utf8_lossy(&misnamed.stderr));
    let pubsub = harness.pubsub();
    let raw = harness.subscribe("output-raw", "df_out").await;
    let own = ["--pipeline_kms_key", PIPELINE_KEY];
    let pipeline = harness.pipeline(&own);
    let subscriber = harness.subscriber_with(&own);
    let text = "sealed output words";
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", text]);
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= 3);
    assert_eq!(summed_counts(&lines), expected_counts([text]));
    let sealed = e2e::receive(&pubsub, &raw, 3, Duration::from_secs(30)).await;
    for part in &sealed {
        assert!(
            part.attributes.contains_key("dek_wrapped") && !part.attributes.contains_key("window_start"),
            "{part:?}"
        );
        assert!(!String::from_utf8_lossy(&part.data).contains("words"), "sealed: {part:?}");
    }
    // Counts in the clear, as the pipeline without a key writes them: skipped.
    let window = lines.last().map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()).unwrap();
    let forged = google_cloud_pubsub::model::Message::new().set_data("words: 1000").set_attributes([
        ("window_start", window["window_start"].as_str().unwrap()),
        ("window_end", window["window_end"].as_str().unwrap()),
        ("replica", "forger"),
        ("pane", "0"),
    ]);
    let output = pubsub.publisher(&harness.topic("df_out")).await.unwrap();
    output.publish(forged).await.unwrap();
    // Counts sealed as the pipeline seals them, output tenant id and all, but under a
    // tenant's own key: the subscriber trusts the pipeline's key alone.
    let attributes: Attributes = [
        ("window_start", window["window_start"].as_str().unwrap()),
        ("window_end", window["window_end"].as_str().unwrap()),
        ("replica", "forger"),
        ("pane", "1"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    let mut forger = Sealer::encrypt(harness.kms(), TENANT_2_KEY.parse().unwrap(), runner::own_key::OUTPUT_TENANT);
    let sealed = forger.seal(Bytes::from_static(b"words: 1000"), attributes).await.unwrap();
    output.publish(e2e::message(sealed)).await.unwrap();
    let more = subscriber.lines_for(Duration::from_secs(4));
    assert!(more.is_empty(), "nothing changed: {more:?}");
    let log = subscriber.terminate();
    assert!(log.contains("not sealed under --pipeline_kms_key"), "{log}");
    assert!(log.contains("untrusted_key"), "the tenant-sealed counts were skipped as such: {log}");
    assert!(!log.contains("no --pipeline_kms_key"), "{log}");
    pipeline.terminate();
}

// Where the output is not sealed, anyone who may publish to the output topic can forge
// the totals: both ends say so at start-up, with the two fixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_pipelines_key_both_ends_warn_that_the_counts_can_be_forged() {
    let harness = Harness::new();
    let pipeline = harness.pipeline(&[]);
    let subscriber = harness.subscriber();
    for (name, log) in [("pipeline", pipeline.terminate()), ("subscriber", subscriber.terminate())] {
        assert!(log.contains("no --pipeline_kms_key"), "{name}: {log}");
        assert!(log.contains("can forge") && log.contains("scripts/gcp-setup.sh"), "{name}: {log}");
    }
}
