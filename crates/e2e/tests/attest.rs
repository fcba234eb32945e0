//! Attest mode through the real binaries: who sent each message is proven and shown,
//! mixed modes share one bus, and every kind of bad attestation is dead-lettered.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use bytes::Bytes;
use e2e::{
    Harness, TENANT_1_KEY, TENANT_1_SIGNER, TENANT_2_SIGNER, assert_dead_lettered, expected_counts, message, receive,
    summed_counts, total,
};
use envelope::format::{self, ATTEST_CERT_ATTR, ATTEST_CERT_SIGNATURE_ATTR};
use envelope::internals::Certificate;
use envelope::kms::KeySign as _;
use envelope::{KeyVersionName, Sealed};

fn signer_1() -> KeyVersionName {
    KeyVersionName::new(TENANT_1_SIGNER.parse().unwrap(), 1).unwrap()
}

/// Writes tenant 1's signing key as a PEM file, as `publisher keyring public-key` prints it.
fn pinned_key_file(harness: &Harness) -> String {
    let output = harness
        .command("publisher")
        .args(["keyring", "--keyring", harness.keyring().to_str().unwrap(), "public-key", signer_1().as_str()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let path = harness.dir().join("signer-1.pem");
    std::fs::write(&path, &output.stdout).unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("-----BEGIN PUBLIC KEY-----"));
    path.to_str().unwrap().to_owned()
}

#[test]
fn attested_messages_show_who_sent_them() {
    let harness = Harness::new();
    let mut command = harness.command("debug-subscriber");
    command.args(["--pubsub_project_id", &harness.project, "--json", "--mode", "attest"]);
    let debug = e2e::Running::spawn(command, "reading");
    harness.publish(&["--mode", "attest", "--kms_key", TENANT_1_SIGNER, "--message", "certified"]);
    harness.publish(&[
        "--mode",
        "attest",
        "--kms_key",
        TENANT_1_SIGNER,
        "--kms_sign_every_message",
        "--message",
        "audited",
    ]);
    harness.publish(&["--mode", "encrypt", "--kms_key", TENANT_1_KEY, "--message", "not attested"]);
    let lines = debug.lines_until(Duration::from_secs(30), |lines| lines.len() >= 3);
    let records: HashMap<String, serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|record| (record["data"].as_str().unwrap_or("-").to_owned(), record))
        .collect();
    let by = |data: &str| records[data]["attested_by"].as_str().unwrap().to_owned();
    assert_eq!(by("certified"), format!("tenant tenantKey by {}", signer_1()));
    assert_eq!(by("audited"), format!("signed by {}", signer_1()));
    let refused = lines.iter().find(|line| line.contains("mode_not_accepted"));
    assert!(refused.is_some(), "--mode attest refuses an encrypted message: {lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_sign_and_attest_share_one_bus_and_all_count() {
    let harness = Harness::new();
    let pinned = pinned_key_file(&harness);
    let pinned = format!("{}={pinned}", signer_1());
    let pipeline = harness.pipeline(&["--trusted_public_key", &pinned]);
    let subscriber = harness.subscriber();
    let texts = ["sealed words here", "signed words there", "certified words", "audited words everywhere"];
    harness.publish(&["--mode", "encrypt", "--kms_key", TENANT_1_KEY, "--message", texts[0], "--count", "3"]);
    harness.publish(&["--mode", "sign", "--kms_key", TENANT_1_KEY, "--message", texts[1], "--count", "3"]);
    harness.publish(&["--mode", "attest", "--kms_key", TENANT_1_SIGNER, "--message", texts[2], "--count", "3"]);
    let strict = ["--mode", "attest", "--kms_key", TENANT_1_SIGNER, "--kms_sign_every_message"];
    harness.publish(&[&strict[..], &["--message", texts[3], "--count", "3"]].concat());

    let expected = expected_counts(texts.iter().flat_map(|text| [*text; 3]));
    let want: u64 = expected.values().sum();
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= want);
    assert_eq!(summed_counts(&lines), expected);
    let log = pipeline.terminate();
    // One unwrap per data key (encrypt, sign); with the key pinned, no public-key fetch.
    assert!(log.contains("kms_calls=2"), "{log}");
}

/// A message signed by a session key whose certificate was valid an hour ago: what a
/// thief of an old session key could make.
async fn signed_under_an_expired_certificate(harness: &Harness) -> Sealed {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
    let hour = 3_600_000_000;
    let session = Ed25519KeyPair::generate().unwrap();
    let certificate = Certificate {
        kms_key: signer_1(),
        tenant_id: "tenantKey".into(),
        public_key: session.public_key().as_ref().try_into().unwrap(),
        not_before: now - 2 * hour,
        not_after: now - hour,
    }
    .encode();
    let certificate_signature = harness.kms().sign(&signer_1(), &certificate).await.unwrap();
    let certificate = format::encode_base64(&certificate);
    let data = b"words signed too late";
    let signed = format::signed_bytes(
        format::Flavour::AttestSession,
        signer_1().as_str(),
        &certificate,
        now,
        &Default::default(),
        data,
    );
    let attributes = [
        (format::VERSION_ATTR, format::VERSION.to_owned()),
        (format::KMS_KEY_ATTR, signer_1().to_string()),
        (format::SEALED_AT_ATTR, now.to_string()),
        (ATTEST_CERT_ATTR, certificate),
        (ATTEST_CERT_SIGNATURE_ATTR, format::encode_base64(&certificate_signature)),
        (format::SIGNATURE_ATTR, format::encode_base64(session.sign(&signed).as_ref())),
    ];
    Sealed { data: Bytes::from_static(data), attributes: attributes.map(|(k, v)| (k.to_owned(), v)).into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_attestations_are_dead_lettered_with_their_reason() {
    let harness = Harness::new();
    let pubsub = harness.pubsub();
    let dead_letters = harness.subscribe("dead-letter-reader", "dead-letter").await;
    let pipeline = harness.pipeline(&["--trusted_kms_key", "projects/tenant-1/*"]);
    let subscriber = harness.subscriber();

    let good = || harness.attest(TENANT_1_SIGNER, "tenantKey", b"attested hostile words");
    let forged = {
        let mut sealed = good().await;
        let certificate = format::decode_base64(&sealed.attributes[ATTEST_CERT_ATTR]).unwrap();
        let other = KeyVersionName::new(TENANT_2_SIGNER.parse().unwrap(), 1).unwrap();
        let signature = harness.kms().sign(&other, &certificate).await.unwrap();
        sealed.attributes.insert(ATTEST_CERT_SIGNATURE_ATTR.into(), format::encode_base64(&signature));
        sealed
    };
    let mut altered_data = good().await;
    altered_data.data = Bytes::from_static(b"attested hostile wordz");
    let mut altered_attribute = good().await;
    altered_attribute.attributes.insert("added".into(), "later".into());
    let catalogue = vec![
        ("signed by another tenant's key", "untrusted_key", harness.attest(TENANT_2_SIGNER, "tenantKey", b"x").await),
        ("certificate forged with another key", "forged_certificate", forged),
        ("certificate for another tenant", "wrong_tenant", harness.attest(TENANT_1_SIGNER, "tenant-2", b"x").await),
        ("certificate expired", "certificate_expired", signed_under_an_expired_certificate(&harness).await),
        ("altered data", "tampered", altered_data),
        ("altered attributes", "tampered", altered_attribute),
    ];

    let bus = pubsub.publisher(&harness.topic("common-topic")).await.unwrap();
    assert_dead_lettered(&pubsub, &bus, &dead_letters, catalogue).await;
    bus.publish(message(harness.attest(TENANT_1_SIGNER, "tenantKey", b"only proven words count").await)).await.unwrap();
    let lines = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= 4);
    assert_eq!(summed_counts(&lines), expected_counts(["only proven words count"]));
    pipeline.terminate();
}

const PUBLISHER_ACCOUNT: &str = "publisher@test-project.iam.gserviceaccount.com";
const OTHER_ACCOUNT: &str = "other@test-project.iam.gserviceaccount.com";

fn fixture(file: &str) -> String {
    format!("{}/../envelope/tests/data/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// Publishes both accounts' certificates as Google's x509 metadata endpoint does; returns
/// the base URL.
async fn certificate_server() -> String {
    let app = axum::Router::new().route(
        "/{account}",
        axum::routing::get(|axum::extract::Path(account): axum::extract::Path<String>| async move {
            match account.as_str() {
                PUBLISHER_ACCOUNT => Ok(std::fs::read_to_string(fixture("publisher-certs.json")).unwrap()),
                OTHER_ACCOUNT => Ok(std::fs::read_to_string(fixture("other-certs.json")).unwrap()),
                _ => Err(axum::http::StatusCode::NOT_FOUND),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_trusted_service_account_signed_count_and_others_are_dead_lettered() {
    let harness = Harness::new();
    let certificates = certificate_server().await;
    let pubsub = harness.pubsub();
    let dead_letters = harness.subscribe("dead-letter-reader", "dead-letter").await;
    let trusted = format!("{PUBLISHER_ACCOUNT}={certificates}/{PUBLISHER_ACCOUNT}");
    let pipeline = harness.pipeline(&["--mode", "attest", "--trusted_signer", &trusted]);
    let subscriber = harness.subscriber();

    let publish_as = |key_file: &str, account: &str, text: &str| {
        let url = format!("{certificates}/{account}");
        let args = ["--mode", "attest", "--attest_with_service_account", "--attest_cert_url", &url];
        harness.publish(&[&args[..], &["--service_account", &fixture(key_file), "--message", text]].concat())
    };
    publish_as("service-account.json", PUBLISHER_ACCOUNT, "words the publisher account vouches for");
    publish_as("other-service-account.json", OTHER_ACCOUNT, "words nobody trusts");

    let dead = receive(&pubsub, &dead_letters, 1, Duration::from_secs(60)).await;
    assert_eq!(dead[0].attributes["reject_reason"], "untrusted_signer");
    assert_eq!(dead[0].data, "words nobody trusts".as_bytes());
    let expected = expected_counts(["words the publisher account vouches for"]);
    let lines = subscriber.lines_until(Duration::from_secs(30), |lines| total(lines) >= expected.values().sum());
    assert_eq!(summed_counts(&lines), expected);
    let log = pipeline.terminate();
    assert!(log.contains("fetched a service account's certificates"), "{log}");
}
