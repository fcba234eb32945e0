//! The catalogue of bad messages in docs/THREATS.md, through a real pipeline: each lands
//! in the dead-letter topic with its reason, nothing of it is counted, and the pipeline
//! goes on with the next message; a good message published twice counts once.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use e2e::{
    Harness, TENANT_1_KEY, TENANT_2_KEY, assert_dead_lettered, expected_counts, message, receive, summed_counts, total,
};
use envelope::{Mode, Sealed};

/// A key name the pipeline trusts (by prefix) that the keyring does not hold.
const UNKNOWN_KEY: &str = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/missing";

/// A sealed message altered by `change`.
fn altered(mut sealed: Sealed, change: impl FnOnce(&mut Sealed)) -> Sealed {
    change(&mut sealed);
    sealed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogued_bad_message_is_dead_lettered_with_its_reason_and_none_of_it_counted() {
    let harness = Harness::new();
    let pubsub = harness.pubsub();
    let dead_letters = harness.subscribe("dead-letter-reader", "dead-letter").await;
    let pipeline = harness.pipeline(&["--trusted_kms_key", "projects/tenant-1/*", "--max_message_age", "10m"]);
    let subscriber = harness.subscriber();

    let encrypted = || harness.seal(TENANT_1_KEY, "tenantKey", Mode::Encrypt, b"hostile encrypted words");
    let signed = || harness.seal(TENANT_1_KEY, "tenantKey", Mode::Sign, b"hostile signed words");
    let remove = |name: &'static str| move |sealed: &mut Sealed| drop(sealed.attributes.remove(name));
    let set = |name: &'static str, value: String| {
        move |sealed: &mut Sealed| drop(sealed.attributes.insert(name.into(), value))
    };

    let other_encrypted = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Encrypt, b"another message").await;
    let other_signed = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Sign, b"another message").await;
    let other_tenant = harness.seal(TENANT_2_KEY, "tenantKey", Mode::Encrypt, b"x").await;
    let hour = Duration::from_secs(3600);
    let sealed_at = |when| harness.seal_at(when, TENANT_1_KEY, "tenantKey", Mode::Sign, b"old words");
    let catalogue: Vec<(&str, &str, Sealed)> = vec![
        ("kms_key missing", "missing_attribute", altered(encrypted().await, remove("kms_key"))),
        ("dek_wrapped missing", "missing_attribute", altered(encrypted().await, remove("dek_wrapped"))),
        ("sign_key_wrapped missing", "missing_attribute", altered(signed().await, remove("sign_key_wrapped"))),
        ("signature missing", "missing_attribute", altered(signed().await, remove("signature"))),
        ("envelope_version missing", "missing_attribute", altered(encrypted().await, remove("envelope_version"))),
        ("seal time missing", "missing_attribute", altered(signed().await, remove("envelope_sealed_at"))),
        ("unknown format version", "unknown_version", altered(encrypted().await, set("envelope_version", "2".into()))),
        (
            "wrapped key not base64",
            "bad_base64",
            altered(encrypted().await, set("dek_wrapped", "!!not base64!!".into())),
        ),
        ("signature not base64", "bad_base64", altered(signed().await, set("signature", "%%%%".into()))),
        ("empty data", "truncated", altered(encrypted().await, |sealed| sealed.data = Bytes::new())),
        ("truncated data", "truncated", altered(encrypted().await, |sealed| sealed.data.truncate(40))),
        ("over-long key name", "garbled_attribute", altered(encrypted().await, set("kms_key", "x".repeat(1000)))),
        (
            "both wrapped-key attributes",
            "garbled_attribute",
            altered(encrypted().await, set("sign_key_wrapped", other_signed.attributes["sign_key_wrapped"].clone())),
        ),
        (
            "reserved attribute smuggled into a signed message",
            "unexpected_attribute",
            altered(signed().await, set("envelope_extra", "1".into())),
        ),
        (
            "wrapped under another tenant id",
            "unwrap_rejected",
            harness.seal(TENANT_1_KEY, "tenant-2", Mode::Encrypt, b"x").await,
        ),
        (
            "wrapped key made under another KMS key",
            "unwrap_rejected",
            altered(encrypted().await, set("dek_wrapped", other_tenant.attributes["dek_wrapped"].clone())),
        ),
        (
            "ciphertext replayed under another message's attributes",
            "tampered",
            altered(encrypted().await, |sealed| sealed.data = other_encrypted.data.clone()),
        ),
        (
            "signature replayed onto another message's data",
            "tampered",
            altered(signed().await, |sealed| sealed.data = other_signed.data.clone()),
        ),
        ("untrusted KMS key", "untrusted_key", harness.seal(TENANT_2_KEY, "tenantKey", Mode::Encrypt, b"x").await),
        ("replay of an old message", "too_old", sealed_at(SystemTime::now() - hour).await),
        ("sealed in the future", "sealed_in_future", sealed_at(SystemTime::now() + hour).await),
        ("key unknown to the KMS", "kms_key_not_found", altered(encrypted().await, set("kms_key", UNKNOWN_KEY.into()))),
        (
            "data not UTF-8 text",
            "not_utf8",
            harness.seal(TENANT_1_KEY, "tenantKey", Mode::Sign, &[0xff, 0xfe, 0x00]).await,
        ),
    ];

    let bus = pubsub.publisher(&harness.topic("common-topic")).await.unwrap();
    assert_dead_lettered(&pubsub, &bus, &dead_letters, catalogue).await;
    let good = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Encrypt, b"only good words count").await;
    // Published twice (a replay under a new message id), together so that both copies
    // fall in one window.
    let (first, replay) = tokio::join!(bus.publish(message(good.clone())), bus.publish(message(good)));
    assert_ne!(first.unwrap(), replay.unwrap());
    let lines = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= 4);
    let want = expected_counts(["only good words count"]);
    assert_eq!(summed_counts(&lines), want, "nothing of the bad messages, the replayed one once");
    pipeline.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_at_pubsubs_size_limit_are_counted_or_dead_lettered_and_the_pipeline_goes_on() {
    const LIMIT: usize = bus::MAX_MESSAGE_BYTES;
    let harness = Harness::new();
    let e2e::AtWork { pubsub, dead_letters, pipeline, subscriber, bus } = harness.at_work(&[]).await;

    // Just under the limit once sealed: 1.98 million words, counted.
    let big_text = "word ".repeat((LIMIT - 1000) / 5);
    let big = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Encrypt, big_text.as_bytes()).await;
    assert!(big.data.len() + big.attributes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() < LIMIT);
    bus.publish(message(big)).await.unwrap();
    // At the limit and altered: its dead letter, with three more attributes, would not fit
    // whole, so it is cut to fit and says what the whole was.
    let hostile_text = vec![b'x'; LIMIT - 1000];
    let hostile = altered(harness.seal(TENANT_1_KEY, "tenantKey", Mode::Sign, &hostile_text).await, |sealed| {
        sealed.data = Bytes::from(vec![b'y'; LIMIT - 1000]);
    });
    let hostile_id = bus.publish(message(hostile)).await.unwrap();
    bus.publish(message(harness.seal(TENANT_1_KEY, "tenantKey", Mode::Sign, b"small words after").await))
        .await
        .unwrap();

    let dead = receive(&pubsub, &dead_letters, 1, Duration::from_secs(60)).await;
    assert_eq!(dead[0].attributes["original_message_id"], hostile_id);
    assert_eq!(dead[0].attributes["reject_reason"], "tampered");
    assert_eq!(dead[0].attributes["original_data_bytes"], (LIMIT - 1000).to_string());
    assert!(dead[0].data.len() + dead[0].attributes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= LIMIT);
    let want_total = (LIMIT - 1000) as u64 / 5 + 3;
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= want_total);
    let mut want = expected_counts(["small words after"]);
    want.insert("word".into(), (LIMIT - 1000) as u64 / 5);
    assert_eq!(summed_counts(&lines), want);
    pipeline.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_flood_under_one_tenants_key_costs_the_kms_its_budget_and_no_one_else_notices() {
    // Property: junk wrapped keys under tenant-1's key name make at most the failure
    // budget (plus one per second) of KMS calls; every junk message is dead-lettered
    // with a reason; tenant-2's message, under its own new data key, is counted.
    const JUNK: usize = 40;
    const BUDGET: usize = 5;
    let harness = Harness::new();
    let e2e::AtWork { pubsub, dead_letters, pipeline, subscriber, bus } =
        harness.at_work(&["--kms_failure_budget", "5", "--metrics_addr", "127.0.0.1:0"]).await;
    pipeline.wait_for_log("serving metrics", Duration::from_secs(10));

    let template = harness.seal(TENANT_1_KEY, "tenantKey", Mode::Sign, b"junk").await;
    let started = std::time::Instant::now();
    for n in 0..JUNK {
        // Valid base64 that no KMS wrapped: different for each message.
        let wrapped = format!("{n:04}").repeat(15);
        let junk =
            altered(template.clone(), |sealed| drop(sealed.attributes.insert("sign_key_wrapped".into(), wrapped)));
        bus.publish(message(junk)).await.unwrap();
    }
    bus.publish(message(harness.seal(TENANT_2_KEY, "tenantKey", Mode::Encrypt, b"genuine words").await)).await.unwrap();

    let dead = receive(&pubsub, &dead_letters, JUNK, Duration::from_secs(60)).await;
    let elapsed = started.elapsed().as_secs() as usize;
    let reasons: Vec<&str> = dead.iter().map(|dead| dead.attributes["reject_reason"].as_str()).collect();
    let rejected = reasons.iter().filter(|reason| **reason == "unwrap_rejected").count();
    let spared = reasons.iter().filter(|reason| **reason == "kms_budget_exhausted").count();
    assert_eq!(rejected + spared, JUNK, "{reasons:?}");
    assert!((BUDGET..=BUDGET + elapsed + 1).contains(&rejected), "{rejected} KMS refusals in {elapsed} s: {reasons:?}");
    let lines = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= 2);
    assert_eq!(summed_counts(&lines), expected_counts(["genuine words"]));

    let (_, metrics) = pipeline.http_get("/metrics");
    let over_budget = format!(r#"pubsub_envelope_kms_calls_spared_total{{why="over_budget"}} {spared}"#);
    let refused = format!(r#"pubsub_envelope_kms_opener_calls_total{{outcome="refused"}} {rejected}"#);
    assert!(metrics.contains(&over_budget) && metrics.contains(&refused), "{metrics}");
    pipeline.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_keyring_version_stops_the_running_pipeline_opening_its_cached_data_key() {
    // Property: once `keyring destroy` has run, a running pipeline refuses a message
    // under a data key it unwrapped and cached before (`kms_rejected`), within seconds
    // rather than the cache's 200 s, and counts none of it.
    let harness = Harness::new();
    let e2e::AtWork { pubsub, dead_letters, pipeline, subscriber, bus } = harness.at_work(&[]).await;
    let kms = std::sync::Arc::new(envelope::kms::local::LocalKms::open(harness.keyring()).unwrap());
    let mut sealer = envelope::Sealer::encrypt(kms, TENANT_1_KEY.parse().unwrap(), "tenantKey");
    let before = sealer.seal(Bytes::from_static(b"before destroy"), Default::default()).await.unwrap();
    let after = sealer.seal(Bytes::from_static(b"after destroy"), Default::default()).await.unwrap();
    assert_eq!(before.attributes["dek_wrapped"], after.attributes["dek_wrapped"], "one data key");
    bus.publish(message(before)).await.unwrap();
    let lines = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= 2);
    assert_eq!(summed_counts(&lines), expected_counts(["before destroy"]));

    let keyring = harness.keyring();
    let keyring_command = |args: &[&str]| {
        let output = harness.command("publisher").arg("keyring").arg("--keyring").arg(&keyring).args(args).output();
        let output = output.unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    keyring_command(&["rotate", TENANT_1_KEY]);
    keyring_command(&["destroy", TENANT_1_KEY, "--version", "1", "--yes"]);
    // The keyring file is looked at once a second, and the opener asks once a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    bus.publish(message(after)).await.unwrap();
    let dead = receive(&pubsub, &dead_letters, 1, Duration::from_secs(30)).await;
    assert_eq!(dead[0].attributes["reject_reason"], "kms_rejected", "{:?}", dead[0].attributes);
    let summary = pipeline.terminate();
    assert!(summary.contains("counted 1 message"), "{summary}");
}
