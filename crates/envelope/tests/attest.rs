//! Attest mode: messages only the producing tenant's KMS signing key could have vouched
//! for, checked through the library and against a hand-built message per FORMAT.md.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use common::{Fixture, attrs, key};
use pubsub_envelope::format::{
    ATTEST_CERT_ATTR, ATTEST_CERT_SIGNATURE_ATTR, KMS_SIGNATURE_ATTR, SEALED_AT_ATTR, SIGNATURE_ATTR,
};
use pubsub_envelope::internals::Certificate;
use pubsub_envelope::kms::KeySign;
use pubsub_envelope::kms::local::Purpose;
use pubsub_envelope::{AttestBy, Attestation, Attributes, KeyVersionName, Mode, Opener, Sealer};

const SIGNER_1: &str = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/signer";
const SIGNER_2: &str = "projects/tenant-2/locations/us-central1/keyRings/tenant2-keyring/cryptoKeys/signer";

fn version(name: &str) -> KeyVersionName {
    KeyVersionName::new(key(name), 1).unwrap()
}

fn fixture() -> Fixture {
    let fixture = Fixture::new();
    fixture.add_key(SIGNER_1, Purpose::AsymmetricSign);
    fixture.add_key(SIGNER_2, Purpose::AsymmetricSign);
    fixture
}

fn opener(fixture: &Fixture, tenant: &str) -> Opener {
    let trusted = pubsub_envelope::TrustedKeys::from_patterns(["projects/tenant-1/*"]).unwrap();
    Opener::builder(tenant, trusted).kms(fixture.kms.clone()).build().unwrap()
}

async fn open_error(opener: &Opener, data: &Bytes, attributes: &Attributes) -> String {
    opener.open(data, attributes).await.unwrap_err().reason().to_owned()
}

#[tokio::test]
async fn a_certified_session_signs_every_message_with_one_kms_call() {
    let fixture = fixture();
    let mut sealer = Sealer::attest(fixture.kms.clone(), version(SIGNER_1), "tenant-1", AttestBy::SessionKey);
    let opener = opener(&fixture, "tenant-1");
    for i in 0..20 {
        let text = format!("message {i}");
        let sealed = sealer.seal(Bytes::from(text.clone()), attrs(&[("seq", &i.to_string())])).await.unwrap();
        let opened = opener.open(&sealed.data, &sealed.attributes).await.unwrap();
        assert_eq!(opened.data, text.as_bytes());
        assert_eq!(opened.attributes, attrs(&[("seq", &i.to_string())]));
        assert_eq!(opened.mode, Mode::Attest);
        let attestation = opened.attestation.unwrap();
        assert_eq!(attestation, Attestation::Session { kms_key: version(SIGNER_1), tenant_id: "tenant-1".into() });
    }
    assert_eq!(fixture.kms.signs(), 1, "one certificate for the session");
    assert_eq!(fixture.kms.public_keys(), 1, "one public-key fetch for the key version");
    let certificates = opener.cache_stats();
    assert_eq!((certificates.hits, certificates.misses), (19, 1), "the certificate is verified once, then cached");
}

/// Tenant B's own session, presented under tenant A's key name, where both keys are
/// trusted and both tenants use one tenant id: the certificate names B's key version, so
/// it must not vouch for a message naming A's, whether or not it was verified before.
#[tokio::test]
async fn a_certificate_never_vouches_for_another_key_version_cold_or_warm() {
    use pubsub_envelope::internals::{FixedKey, seal};
    let fixture = fixture();
    let both = pubsub_envelope::TrustedKeys::from_patterns(["projects/tenant-1/*", "projects/tenant-2/*"]).unwrap();
    let opener = || Opener::builder("shared", both.clone()).kms(fixture.kms.clone()).build().unwrap();
    // Tenant B certifies a session key it holds, with its own KMS key version.
    let seed = [9u8; 32];
    let session = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let certificate = Certificate {
        kms_key: version(SIGNER_2),
        tenant_id: "shared".into(),
        public_key: aws_lc_rs::signature::KeyPair::public_key(&session).as_ref().try_into().unwrap(),
        not_before: now - 1_000_000,
        not_after: now + 100_000_000,
    }
    .encode();
    let certificate_signature = fixture.kms.sign(&version(SIGNER_2), &certificate).await.unwrap();
    let sealed_by_b = |name: &str, at: u64| {
        let key = FixedKey::AttestSession {
            seed: &seed,
            kms_key: name,
            certificate: &certificate,
            certificate_signature: &certificate_signature,
        };
        seal(key, at, Bytes::from_static(b"pay mallory"), Attributes::new())
    };
    let a_name = version(SIGNER_1).to_string();
    let b_name = version(SIGNER_2).to_string();

    let cold = opener();
    let impersonation = sealed_by_b(&a_name, now);
    assert_eq!(open_error(&cold, &impersonation.data, &impersonation.attributes).await, "garbled_attribute");

    let warm = opener();
    let honest = sealed_by_b(&b_name, now);
    let opened = warm.open(&honest.data, &honest.attributes).await.unwrap();
    assert_eq!(opened.attestation.unwrap().kms_key(), Some(&version(SIGNER_2)), "B's own message opens as B's");
    let impersonation = sealed_by_b(&a_name, now + 1);
    assert_eq!(open_error(&warm, &impersonation.data, &impersonation.attributes).await, "garbled_attribute");
}

#[tokio::test]
async fn strict_mode_has_the_kms_sign_every_message() {
    let fixture = fixture();
    let mut sealer = Sealer::attest(fixture.kms.clone(), version(SIGNER_1), "tenant-1", AttestBy::KmsEachMessage);
    let opener = opener(&fixture, "tenant-1");
    for i in 0..5 {
        let sealed = sealer.seal(Bytes::from(format!("audited {i}")), Attributes::new()).await.unwrap();
        assert!(!sealed.attributes.contains_key(ATTEST_CERT_ATTR));
        let opened = opener.open(&sealed.data, &sealed.attributes).await.unwrap();
        assert_eq!(opened.attestation, Some(Attestation::Kms(version(SIGNER_1))), "the KMS key itself vouches");
        let mut altered = sealed.attributes.clone();
        altered.insert("added".into(), "x".into());
        assert_eq!(open_error(&opener, &sealed.data, &altered).await, "tampered");
    }
    assert_eq!(fixture.kms.signs(), 5);
    // ECDSA P-256 DER signatures are 1 to 72 bytes: within, a wrong one is tampered;
    // outside, the message is malformed.
    let sealed = sealer.seal(Bytes::from_static(b"bounds"), Attributes::new()).await.unwrap();
    for (len, reason) in [(0, "garbled_attribute"), (1, "tampered"), (72, "tampered"), (73, "garbled_attribute")] {
        let mut bad = sealed.attributes.clone();
        bad.insert(KMS_SIGNATURE_ATTR.into(), pubsub_envelope::format::encode_base64(&vec![0x30; len]));
        assert_eq!(open_error(&opener, &sealed.data, &bad).await, reason, "{len} bytes");
    }
}

#[tokio::test]
async fn altered_messages_and_foreign_certificates_are_refused() {
    let fixture = fixture();
    let mut sealer = Sealer::attest(fixture.kms.clone(), version(SIGNER_1), "tenant-1", AttestBy::SessionKey);
    let sealed = sealer.seal(Bytes::from_static(b"pay 10"), attrs(&[("to", "alice")])).await.unwrap();
    let opener = opener(&fixture, "tenant-1");
    assert!(opener.open(&sealed.data, &sealed.attributes).await.is_ok());

    assert_eq!(open_error(&opener, &Bytes::from_static(b"pay 99"), &sealed.attributes).await, "tampered");
    let with = |name: &str, value: String| {
        let mut attributes = sealed.attributes.clone();
        attributes.insert(name.into(), value);
        attributes
    };
    assert_eq!(open_error(&opener, &sealed.data, &with("to", "mallory".into())).await, "tampered");
    assert_eq!(open_error(&opener, &sealed.data, &with("extra", "x".into())).await, "tampered");
    let stray = with(pubsub_envelope::format::DEK_WRAPPED_ATTR, "AAAA".into());
    assert_eq!(open_error(&opener, &sealed.data, &stray).await, "garbled_attribute");
    let smuggled = with(pubsub_envelope::format::KMS_SIGNATURE_ATTR, "AAAA".into());
    assert_eq!(open_error(&opener, &sealed.data, &smuggled).await, "garbled_attribute");

    // The same certificate with another key version's signature.
    let certificate = STANDARD.decode(&sealed.attributes[ATTEST_CERT_ATTR]).unwrap();
    let other = fixture.kms.sign(&version(SIGNER_2), &certificate).await.unwrap();
    let forged = with(ATTEST_CERT_SIGNATURE_ATTR, STANDARD.encode(other));
    assert_eq!(open_error(&opener, &sealed.data, &forged).await, "forged_certificate");
    assert!(opener.open(&sealed.data, &sealed.attributes).await.is_ok(), "the good one still opens");

    // A tenant-2 session, and a tenant-1 key certifying a session for another tenant.
    let mut tenant_2 = Sealer::attest(fixture.kms.clone(), version(SIGNER_2), "tenant-2", AttestBy::SessionKey);
    let theirs = tenant_2.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    assert_eq!(open_error(&opener, &theirs.data, &theirs.attributes).await, "untrusted_key");
    let mut other_tenant = Sealer::attest(fixture.kms.clone(), version(SIGNER_1), "tenant-2", AttestBy::SessionKey);
    let for_other = other_tenant.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    assert_eq!(open_error(&opener, &for_other.data, &for_other.attributes).await, "wrong_tenant");
}

/// The canonical header and signed bytes of FORMAT.md, written out independently.
fn signed_bytes(kms_key: &str, certificate: &str, sealed_at: u64, attributes: &[(&str, &str)], data: &[u8]) -> Vec<u8> {
    let lp = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    let mut out = b"pubsub-envelope/v1\0\x03".to_vec();
    lp(&mut out, kms_key.as_bytes());
    lp(&mut out, certificate.as_bytes());
    out.extend_from_slice(&sealed_at.to_be_bytes());
    out.extend_from_slice(&(attributes.len() as u32).to_be_bytes());
    let mut sorted = attributes.to_vec();
    sorted.sort();
    for (k, v) in sorted {
        lp(&mut out, k.as_bytes());
        lp(&mut out, v.as_bytes());
    }
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A delegated message built by hand from FORMAT.md: a session key, its certificate
/// signed through the KMS, the message signed by the session key.
async fn hand_built(fixture: &Fixture, tenant: &str, validity: (u64, u64), sealed_at: u64) -> (Bytes, Attributes) {
    let session = Ed25519KeyPair::generate().unwrap();
    let certificate = Certificate {
        kms_key: version(SIGNER_1),
        tenant_id: tenant.into(),
        public_key: session.public_key().as_ref().try_into().unwrap(),
        not_before: validity.0,
        not_after: validity.1,
    }
    .encode();
    let certificate_signature = fixture.kms.sign(&version(SIGNER_1), &certificate).await.unwrap();
    let certificate = STANDARD.encode(certificate);
    let signed = signed_bytes(version(SIGNER_1).as_str(), &certificate, sealed_at, &[("k", "v")], b"hand made");
    let attributes = attrs(&[
        ("envelope_version", "1"),
        ("kms_key", version(SIGNER_1).as_str()),
        (SEALED_AT_ATTR, &sealed_at.to_string()),
        (ATTEST_CERT_ATTR, &certificate),
        (ATTEST_CERT_SIGNATURE_ATTR, &STANDARD.encode(certificate_signature)),
        (SIGNATURE_ATTR, &STANDARD.encode(session.sign(&signed))),
        ("k", "v"),
    ]);
    (Bytes::from_static(b"hand made"), attributes)
}

#[tokio::test]
async fn a_message_built_from_format_md_opens_and_its_certificate_bounds_its_seal_time() {
    let fixture = fixture();
    let opener = opener(&fixture, "tenant-1");
    let (data, attributes) = hand_built(&fixture, "tenant-1", (1_000, 2_000), 1_500).await;
    let opened = opener.open(&data, &attributes).await.unwrap();
    assert_eq!(opened.attributes, attrs(&[("k", "v")]));
    for sealed_at in [999, 2_001] {
        let (data, attributes) = hand_built(&fixture, "tenant-1", (1_000, 2_000), sealed_at).await;
        assert_eq!(open_error(&opener, &data, &attributes).await, "certificate_expired", "{sealed_at}");
    }
    let (data, attributes) = hand_built(&fixture, "tenant-2", (1_000, 2_000), 1_500).await;
    assert_eq!(open_error(&opener, &data, &attributes).await, "wrong_tenant");
}

#[tokio::test]
async fn pinned_public_keys_replace_the_kms_lookup() {
    let fixture = fixture();
    let pem =
        |der: Vec<u8>| format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(der));
    let right = pem(fixture.kms.public_key(&version(SIGNER_1)).await.unwrap());
    let wrong = pem(fixture.kms.public_key(&version(SIGNER_2)).await.unwrap());
    let fetched_before = fixture.kms.public_keys();
    let mut sealer = Sealer::attest(fixture.kms.clone(), version(SIGNER_1), "tenant-1", AttestBy::SessionKey);
    let sealed = sealer.seal(Bytes::from_static(b"pinned"), Attributes::new()).await.unwrap();
    let pinned = |pem: &str| {
        let key = pubsub_envelope::TrustedPublicKey::from_pem(version(SIGNER_1), pem.as_bytes()).unwrap();
        let trusted = pubsub_envelope::TrustedKeys::from_patterns(["projects/tenant-1/*"]).unwrap();
        Opener::builder("tenant-1", trusted).kms(fixture.kms.clone()).pinned_public_keys(vec![key]).build().unwrap()
    };
    assert!(pinned(&right).open(&sealed.data, &sealed.attributes).await.is_ok());
    assert_eq!(open_error(&pinned(&wrong), &sealed.data, &sealed.attributes).await, "forged_certificate");
    assert_eq!(fixture.kms.public_keys(), fetched_before, "no public key fetched");
    assert!(pubsub_envelope::TrustedPublicKey::from_pem(version(SIGNER_1), b"not pem").is_err());
    let encryption_key = pem(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(pubsub_envelope::TrustedPublicKey::from_pem(version(SIGNER_1), encryption_key.as_bytes()).is_err());
}

#[tokio::test]
async fn sessions_rotate_and_every_session_is_certified_once() {
    let fixture = fixture();
    let clock = Arc::new(pubsub_envelope::ManualClock::new());
    let mut sealer = Sealer::attest(fixture.kms.clone(), version(SIGNER_1), "tenant-1", AttestBy::SessionKey)
        .with_clock(clock.clone());
    let opener = opener(&fixture, "tenant-1");
    let mut certificates = std::collections::HashSet::new();
    for _ in 0..3 {
        for _ in 0..4 {
            let sealed = sealer.seal(Bytes::from_static(b"m"), Attributes::new()).await.unwrap();
            assert!(opener.open(&sealed.data, &sealed.attributes).await.is_ok());
            certificates.insert(sealed.attributes[ATTEST_CERT_ATTR].clone());
        }
        clock.advance(Duration::from_secs(100));
    }
    assert_eq!(certificates.len(), 3);
    assert_eq!(fixture.kms.signs(), 3);
    assert_eq!(sealer.data_keys_made(), 3);
}

#[tokio::test]
async fn a_session_certificate_covers_its_key_for_the_keys_whole_life() {
    // A session key is used until it is `max_age` old: its certificate must stay valid
    // that long (plus slack for clock drift), or the key's later messages would be
    // refused as `certificate_expired`.
    let fixture = fixture();
    let clock = Arc::new(pubsub_envelope::ManualClock::new());
    let policy = pubsub_envelope::RotationPolicy { max_age: Duration::from_secs(100), ..Default::default() };
    let mut sealer = Sealer::attest(fixture.kms.clone(), version(SIGNER_1), "tenant-1", AttestBy::SessionKey)
        .with_policy(policy)
        .with_clock(clock.clone());
    let opener = opener(&fixture, "tenant-1");
    let first = sealer.seal(Bytes::from_static(b"at 0 s"), Attributes::new()).await.unwrap();
    clock.advance(Duration::from_secs(99));
    let last = sealer.seal(Bytes::from_static(b"at 99 s"), Attributes::new()).await.unwrap();
    assert_eq!(sealer.data_keys_made(), 1, "one session key for both");
    assert_eq!(first.attributes[ATTEST_CERT_ATTR], last.attributes[ATTEST_CERT_ATTR]);
    for sealed in [first, last] {
        opener.open(&sealed.data, &sealed.attributes).await.unwrap();
    }
}

#[tokio::test]
async fn a_consumer_caps_how_long_a_producers_certificates_may_live() {
    // A certificate lives its producer's rotation age plus 60 s, and the producer picks
    // the age: without a cap a session key could sign for years. By default an opener
    // takes 3,660 s (hourly rotation) and refuses longer with a reason of its own.
    let fixture = fixture();
    let sealed_with_age = async |secs: u64| {
        let policy = pubsub_envelope::RotationPolicy { max_age: Duration::from_secs(secs), ..Default::default() };
        let mut sealer = Sealer::attest(fixture.kms.clone(), version(SIGNER_1), "tenant-1", AttestBy::SessionKey)
            .with_policy(policy);
        sealer.seal(Bytes::from_static(b"m"), Attributes::new()).await.unwrap()
    };
    let opener = opener(&fixture, "tenant-1");
    let hourly = sealed_with_age(3_600).await;
    assert!(opener.open(&hourly.data, &hourly.attributes).await.is_ok(), "3,660 s is the default's edge");
    let longer = sealed_with_age(3_601).await;
    assert_eq!(open_error(&opener, &longer.data, &longer.attributes).await, "certificate_lifetime_too_long");
    let daily = sealed_with_age(86_400).await;
    assert_eq!(open_error(&opener, &daily.data, &daily.attributes).await, "certificate_lifetime_too_long");
    // The consumer chooses: a longer cap takes the daily producer, a shorter one
    // refuses even the default rotation (100 s + 60 s).
    let trusted = || pubsub_envelope::TrustedKeys::from_patterns(["projects/tenant-1/*"]).unwrap();
    let with_cap = |secs| {
        Opener::builder("tenant-1", trusted())
            .kms(fixture.kms.clone())
            .max_certificate_lifetime(Duration::from_secs(secs))
            .build()
            .unwrap()
    };
    assert!(with_cap(86_460).open(&daily.data, &daily.attributes).await.is_ok());
    let default_rotation = sealed_with_age(100).await;
    assert_eq!(
        open_error(&with_cap(120), &default_rotation.data, &default_rotation.attributes).await,
        "certificate_lifetime_too_long"
    );
}
