//! The Cloud KMS backend against a local fake of the REST API.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fake_kms::{Behaviour, FakeKms};
use pubsub_envelope::kms::gcp::{CredentialSource, GcpKms};
use pubsub_envelope::kms::{KeySign, KeyWrap, Kms, KmsError};
use pubsub_envelope::{Attributes, KeyName, Opener, Sealer, SecretKey, TrustedKeys};

const KEY: &str = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/key1";

async fn backend(fake: &FakeKms, timeout: Duration) -> GcpKms {
    GcpKms::builder()
        .credentials(CredentialSource::Anonymous)
        .endpoint(fake.endpoint())
        .timeout(timeout)
        .build()
        .await
        .unwrap()
}

fn trusted() -> TrustedKeys {
    TrustedKeys::from_patterns([KEY]).unwrap()
}

fn key() -> KeyName {
    KEY.parse().unwrap()
}

#[tokio::test]
async fn wraps_and_unwraps_binding_the_tenant() {
    let fake = FakeKms::start().await.unwrap();
    let kms = backend(&fake, Duration::from_secs(5)).await;
    let dek = SecretKey::generate();
    let wrapped = kms.wrap(&key(), &dek, b"tenantKey").await.unwrap();
    assert_eq!(kms.unwrap(&key(), &wrapped, b"tenantKey").await.unwrap().expose(), dek.expose());
    let error = kms.unwrap(&key(), &wrapped, b"another-tenant").await.unwrap_err();
    assert_eq!(error, KmsError::UnwrapRejected(KEY.into()));
    assert!(!error.is_transient());
}

#[tokio::test]
async fn envelope_round_trip_through_cloud_kms() {
    let fake = FakeKms::start().await.unwrap();
    let kms: Arc<dyn Kms> = Arc::new(backend(&fake, Duration::from_secs(5)).await);
    let mut sealer = Sealer::encrypt(kms.clone(), key(), "tenant-1");
    let opener = Opener::builder("tenant-1", trusted()).kms(kms).build().unwrap();
    for i in 0..10 {
        let sealed = sealer.seal(Bytes::from(format!("message {i}")), Attributes::new()).await.unwrap();
        let opened = opener.open(&sealed.data, &sealed.attributes).await.unwrap();
        assert_eq!(opened.data, format!("message {i}").as_bytes());
    }
    assert_eq!(fake.calls(), 2, "one encrypt for the data key, one decrypt for the consumer");
}

#[tokio::test]
async fn server_errors_are_transient_and_permission_denied_is_permanent() {
    let fake = FakeKms::start().await.unwrap();
    let kms = backend(&fake, Duration::from_secs(5)).await;
    let wrapped = kms.wrap(&key(), &SecretKey::generate(), b"t").await.unwrap();
    let cases = [
        (503, "kms_unavailable", true),
        (500, "kms_unavailable", true),
        (429, "kms_rate_limited", true),
        (403, "kms_permission_denied", false),
        (404, "kms_key_not_found", false),
    ];
    for (status, reason, transient) in cases {
        fake.set_behaviour(Behaviour::Fail(status));
        for error in [
            kms.wrap(&key(), &SecretKey::generate(), b"t").await.unwrap_err(),
            kms.unwrap(&key(), &wrapped, b"t").await.unwrap_err(),
        ] {
            assert_eq!(error.reason(), reason, "HTTP {status}: {error}");
            assert_eq!(error.is_transient(), transient, "HTTP {status}");
        }
    }
    fake.set_behaviour(Behaviour::Normal);
    assert!(kms.unwrap(&key(), &wrapped, b"t").await.is_ok(), "recovers when KMS does");
}

#[tokio::test]
async fn responses_corrupted_in_transit_fail_their_checksum() {
    let fake = FakeKms::start().await.unwrap();
    let kms = backend(&fake, Duration::from_secs(5)).await;
    let wrapped = kms.wrap(&key(), &SecretKey::generate(), b"t").await.unwrap();
    fake.set_behaviour(Behaviour::Corrupt);
    for error in [
        kms.wrap(&key(), &SecretKey::generate(), b"t").await.unwrap_err(),
        kms.unwrap(&key(), &wrapped, b"t").await.unwrap_err(),
    ] {
        assert_eq!(error.reason(), "kms_integrity", "{error}");
        assert!(error.is_transient());
    }
}

#[tokio::test]
async fn a_hanging_kms_times_out_as_transient() {
    let fake = FakeKms::start().await.unwrap();
    let kms = backend(&fake, Duration::from_millis(300)).await;
    fake.set_behaviour(Behaviour::Hang);
    let started = std::time::Instant::now();
    let error = kms.wrap(&key(), &SecretKey::generate(), b"t").await.unwrap_err();
    assert_eq!(error, KmsError::Timeout(Duration::from_millis(300)));
    assert!(error.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5), "gave up at the deadline");
}

#[tokio::test]
async fn unreachable_kms_is_transient() {
    let fake = FakeKms::start().await.unwrap();
    let endpoint = fake.endpoint();
    drop(fake);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let kms = GcpKms::builder().credentials(CredentialSource::Anonymous).endpoint(endpoint).build().await.unwrap();
    let error = kms.wrap(&key(), &SecretKey::generate(), b"t").await.unwrap_err();
    assert_eq!(error.reason(), "kms_unavailable", "{error}");
    assert!(error.is_transient());
}

#[tokio::test]
async fn pipeline_view_of_a_kms_outage() {
    let fake = FakeKms::start().await.unwrap();
    let kms: Arc<dyn Kms> = Arc::new(backend(&fake, Duration::from_secs(5)).await);
    let mut sealer = Sealer::sign(kms.clone(), key(), "tenant-1");
    let sealed = sealer.seal(Bytes::from_static(b"words"), Attributes::new()).await.unwrap();
    let data = sealed.data.clone();
    let opener = Opener::builder("tenant-1", trusted()).kms(kms).build().unwrap();
    fake.set_behaviour(Behaviour::Fail(503));
    let error = opener.open(&data, &sealed.attributes).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    fake.set_behaviour(Behaviour::Normal);
    assert_eq!(opener.open(&data, &sealed.attributes).await.unwrap().data, &b"words"[..]);
}

#[tokio::test]
async fn signs_with_a_key_version_and_serves_its_public_key_with_checksums() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
    let fake = FakeKms::start().await.unwrap();
    let kms = backend(&fake, Duration::from_secs(5)).await;
    let version: pubsub_envelope::KeyVersionName = format!("{KEY}/cryptoKeyVersions/1").parse().unwrap();
    let signature = kms.sign(&version, b"a certificate").await.unwrap();
    let public = kms.public_key(&version).await.unwrap();
    let verifier = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public);
    assert!(verifier.verify(b"a certificate", &signature).is_ok(), "KMS signs SHA-256 of the message");
    assert!(verifier.verify(b"another", &signature).is_err());
    let other: pubsub_envelope::KeyVersionName = format!("{KEY}/cryptoKeyVersions/2").parse().unwrap();
    assert_ne!(kms.public_key(&other).await.unwrap(), public, "each version has its own key");

    fake.set_behaviour(Behaviour::Corrupt);
    assert_eq!(kms.sign(&version, b"x").await.unwrap_err().reason(), "kms_integrity");
    assert_eq!(kms.public_key(&version).await.unwrap_err().reason(), "kms_integrity");
    fake.set_behaviour(Behaviour::Fail(403));
    assert_eq!(kms.sign(&version, b"x").await.unwrap_err().reason(), "kms_permission_denied");
    fake.set_behaviour(Behaviour::Fail(503));
    assert!(kms.public_key(&version).await.unwrap_err().is_transient());
}

#[tokio::test]
async fn a_disabled_cloud_kms_key_stops_opening_once_its_cached_data_keys_expire_and_is_final() {
    // Property: after the key is disabled, messages under a cached data key open until
    // the cache's time to live, then are refused for good (`kms_rejected`, not
    // transient: dead-lettered, not retried for ever).
    let fake = FakeKms::start().await.unwrap();
    let kms: Arc<dyn Kms> = Arc::new(backend(&fake, Duration::from_secs(5)).await);
    let mut sealer = Sealer::encrypt(kms.clone(), key(), "tenant-1");
    let sealed = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    let ttl = Duration::from_millis(500);
    let opener = Opener::builder("tenant-1", trusted())
        .kms(kms)
        .cache(pubsub_envelope::CacheSettings { ttl, capacity: 100 })
        .build()
        .unwrap();
    opener.open(&sealed.data, &sealed.attributes).await.unwrap();
    fake.disable(KEY);
    let disabled = std::time::Instant::now();
    opener.open(&sealed.data, &sealed.attributes).await.expect("still cached");
    let error = loop {
        match opener.open(&sealed.data, &sealed.attributes).await {
            Ok(_) => assert!(disabled.elapsed() < ttl + Duration::from_secs(5), "opened long after the ttl"),
            Err(error) => break error,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "Cloud KMS key disabled -> refused in {} ms (ttl {} ms)",
        disabled.elapsed().as_millis(),
        ttl.as_millis()
    );
    assert!(disabled.elapsed() <= ttl + Duration::from_secs(3), "{:?}", disabled.elapsed());
    assert_eq!(error.reason(), "kms_rejected", "{error}");
    assert!(!error.is_transient());
    assert!(error.to_string().contains("not enabled"), "{error}");
}
