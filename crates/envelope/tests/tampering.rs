//! Every alteration, omission or splice is a permanent error with the right reason.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

mod common;

use bytes::Bytes;
use common::{Fixture, TENANT_1_KEY, TENANT_2_KEY, attrs};
use pubsub_envelope::format::{
    DEK_WRAPPED_ATTR, KMS_KEY_ATTR, SEALED_AT_ATTR, SIGN_KEY_WRAPPED_ATTR, SIGNATURE_ATTR, VERSION_ATTR,
};
use pubsub_envelope::{Attributes, Mode, OpenError, Sealed};

const WORDS: &[u8] = b"the quick brown fox jumps over the lazy dog";

async fn sealed(fixture: &Fixture, key: &str, tenant: &str, mode: Mode) -> Sealed {
    let mut sealer = fixture.sealer(key, tenant, mode);
    sealer.seal(Bytes::from_static(WORDS), attrs(&[("origin", "test"), ("seq", "7")])).await.unwrap()
}

async fn open_error(fixture: &Fixture, data: impl Into<Bytes>, attributes: &Attributes) -> OpenError {
    let error = fixture.opener("tenant-1").open(&data.into(), attributes).await.unwrap_err();
    assert!(!error.is_transient(), "{error} must be permanent");
    error
}

#[tokio::test]
async fn flipping_any_data_byte_is_tampering() {
    let fixture = Fixture::new();
    for mode in [Mode::Encrypt, Mode::Sign] {
        let message = sealed(&fixture, TENANT_1_KEY, "tenant-1", mode).await;
        for index in 0..message.data.len() {
            let mut data = message.data.to_vec();
            data[index] ^= 0x01;
            let error = open_error(&fixture, data, &message.attributes).await;
            assert_eq!(error.reason(), "tampered", "{mode} byte {index}: {error}");
        }
    }
}

#[tokio::test]
async fn truncated_ciphertext_is_refused_before_kms() {
    let fixture = Fixture::new();
    let message = sealed(&fixture, TENANT_1_KEY, "tenant-1", Mode::Encrypt).await;
    let unwraps_before = fixture.kms.unwraps();
    for len in [0, 10, 63] {
        let error = open_error(&fixture, message.data.slice(..len), &message.attributes).await;
        assert_eq!(error.reason(), "truncated");
    }
    assert_eq!(fixture.kms.unwraps(), unwraps_before);
    let shortened = message.data.slice(..message.data.len() - 1);
    assert_eq!(open_error(&fixture, shortened, &message.attributes).await.reason(), "tampered");
}

/// Flips one byte of each attribute value, in its decoded form for base64 values so
/// that the change survives decoding.
#[tokio::test]
async fn flipping_any_byte_of_any_envelope_attribute_fails() {
    let fixture = Fixture::new();
    for mode in [Mode::Encrypt, Mode::Sign] {
        let message = sealed(&fixture, TENANT_1_KEY, "tenant-1", mode).await;
        for (name, value) in &message.attributes {
            let is_binary = [DEK_WRAPPED_ATTR, SIGN_KEY_WRAPPED_ATTR, SIGNATURE_ATTR].contains(&name.as_str());
            let raw = if is_binary {
                pubsub_envelope::format::decode_base64(value).unwrap()
            } else {
                value.clone().into_bytes()
            };
            for index in 0..raw.len() {
                let mut altered = raw.clone();
                altered[index] ^= 0x01;
                let text = if is_binary {
                    pubsub_envelope::format::encode_base64(&altered)
                } else {
                    String::from_utf8(altered).unwrap()
                };
                let mut attributes = message.attributes.clone();
                attributes.insert(name.clone(), text);
                let error = open_error(&fixture, message.data.clone(), &attributes).await;
                let expected: &[&str] = match name.as_str() {
                    VERSION_ATTR => &["unknown_version"],
                    // A changed key name is either malformed, untrusted, or a key
                    // this keyring does not hold.
                    KMS_KEY_ATTR => &["garbled_attribute", "untrusted_key", "kms_key_not_found"],
                    DEK_WRAPPED_ATTR | SIGN_KEY_WRAPPED_ATTR => &["unwrap_rejected"],
                    // A first digit of 1 becomes a leading 0.
                    SEALED_AT_ATTR if index == 0 => &["garbled_attribute"],
                    _ => &["tampered"],
                };
                assert!(expected.contains(&error.reason()), "{mode} {name}[{index}]: {error}");
            }
        }
    }
}

#[tokio::test]
async fn dropping_any_attribute_fails_with_its_reason() {
    let fixture = Fixture::new();
    for mode in [Mode::Encrypt, Mode::Sign] {
        let message = sealed(&fixture, TENANT_1_KEY, "tenant-1", mode).await;
        for name in message.attributes.keys() {
            let mut attributes = message.attributes.clone();
            attributes.remove(name);
            let error = open_error(&fixture, message.data.clone(), &attributes).await;
            let expected = match name.as_str() {
                VERSION_ATTR
                | KMS_KEY_ATTR
                | DEK_WRAPPED_ATTR
                | SIGN_KEY_WRAPPED_ATTR
                | SIGNATURE_ATTR
                | SEALED_AT_ATTR => "missing_attribute",
                _ => "tampered",
            };
            assert_eq!(error.reason(), expected, "{mode} without {name}: {error}");
        }
    }
}

#[tokio::test]
async fn adding_an_attribute_fails() {
    let fixture = Fixture::new();
    for (mode, expected) in [(Mode::Encrypt, "unexpected_attribute"), (Mode::Sign, "tampered")] {
        let message = sealed(&fixture, TENANT_1_KEY, "tenant-1", mode).await;
        let mut attributes = message.attributes.clone();
        attributes.insert("injected".into(), "value".into());
        assert_eq!(open_error(&fixture, message.data.clone(), &attributes).await.reason(), expected);
    }
}

#[tokio::test]
async fn wrapped_key_from_another_kms_key_is_rejected() {
    let fixture = Fixture::new();
    for mode in [Mode::Encrypt, Mode::Sign] {
        let victim = sealed(&fixture, TENANT_1_KEY, "tenant-1", mode).await;
        let other = sealed(&fixture, TENANT_2_KEY, "tenant-1", mode).await;
        let wrapped = if mode == Mode::Encrypt { DEK_WRAPPED_ATTR } else { SIGN_KEY_WRAPPED_ATTR };
        let mut attributes = victim.attributes.clone();
        attributes.insert(wrapped.into(), other.attributes[wrapped].clone());
        let error = open_error(&fixture, victim.data.clone(), &attributes).await;
        assert_eq!(error.reason(), "unwrap_rejected", "{mode}: {error}");
    }
}

#[tokio::test]
async fn wrapped_key_from_another_tenant_is_rejected() {
    let fixture = Fixture::new();
    for mode in [Mode::Encrypt, Mode::Sign] {
        // Same KMS key, but the data key was wrapped for tenant-2.
        let foreign = sealed(&fixture, TENANT_1_KEY, "tenant-2", mode).await;
        let error = open_error(&fixture, foreign.data.clone(), &foreign.attributes).await;
        assert_eq!(error.reason(), "unwrap_rejected", "{mode}: {error}");
    }
}

#[tokio::test]
async fn ciphertext_or_signature_spliced_under_other_attributes_fails() {
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Encrypt);
    let first = sealer.seal(Bytes::from_static(b"first"), Attributes::new()).await.unwrap();
    let second = sealer.seal(Bytes::from_static(b"second"), Attributes::new()).await.unwrap();
    // Same data key, but every message has its own seal time, which the ciphertext is
    // bound to: a ciphertext moves neither to another message nor to another key.
    assert_eq!(first.attributes[DEK_WRAPPED_ATTR], second.attributes[DEK_WRAPPED_ATTR]);
    let error = open_error(&fixture, first.data.clone(), &second.attributes).await;
    assert_eq!(error.reason(), "tampered");
    let other_key = sealed(&fixture, TENANT_1_KEY, "tenant-1", Mode::Encrypt).await;
    let error = open_error(&fixture, first.data.clone(), &other_key.attributes).await;
    assert_eq!(error.reason(), "tampered");

    let mut signer = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Sign);
    let a = signer.seal(Bytes::from_static(b"pay 10"), attrs(&[("to", "alice")])).await.unwrap();
    let b = signer.seal(Bytes::from_static(b"pay 10"), attrs(&[("to", "mallory")])).await.unwrap();
    let mut spliced = b.attributes.clone();
    spliced.insert(SIGNATURE_ATTR.into(), a.attributes[SIGNATURE_ATTR].clone());
    assert_eq!(open_error(&fixture, b.data.clone(), &spliced).await.reason(), "tampered");
    let error = open_error(&fixture, Bytes::from_static(b"pay 99"), &a.attributes).await;
    assert_eq!(error.reason(), "tampered", "altered data under a kept signature (the original accepted this)");
}

#[tokio::test]
async fn garbled_envelopes_name_what_is_wrong() {
    let fixture = Fixture::new();
    let message = sealed(&fixture, TENANT_1_KEY, "tenant-1", Mode::Sign).await;
    let with = |name: &str, value: &str| {
        let mut attributes = message.attributes.clone();
        attributes.insert(name.into(), value.into());
        attributes
    };
    let cases = [
        (with(VERSION_ATTR, "2"), "unknown_version"),
        (with(SIGN_KEY_WRAPPED_ATTR, "not base64!"), "bad_base64"),
        (with(SIGNATURE_ATTR, "AAAA"), "garbled_attribute"),
        (with(KMS_KEY_ATTR, "projects/x"), "garbled_attribute"),
        (with(DEK_WRAPPED_ATTR, "AAAA"), "garbled_attribute"),
        (with(SEALED_AT_ATTR, "-5"), "garbled_attribute"),
        (with(SEALED_AT_ATTR, "99999999999999999999"), "garbled_attribute"),
        (with("envelope_extra", "x"), "unexpected_attribute"),
        (with("googclient_x", "x"), "unexpected_attribute"),
    ];
    for (attributes, reason) in cases {
        let error = open_error(&fixture, message.data.clone(), &attributes).await;
        assert_eq!(error.reason(), reason, "{error}");
    }
}

#[tokio::test]
async fn untrusted_keys_are_refused_without_a_kms_call() {
    let fixture = Fixture::new();
    let message = sealed(&fixture, TENANT_2_KEY, "tenant-1", Mode::Encrypt).await;
    let trusted = pubsub_envelope::TrustedKeys::from_patterns(["projects/tenant-1/*"]).unwrap();
    let opener = pubsub_envelope::Opener::builder("tenant-1", trusted).kms(fixture.kms.clone()).build().unwrap();
    let error = opener.open(&message.data, &message.attributes).await.unwrap_err();
    assert_eq!(error.reason(), "untrusted_key");
    assert_eq!(fixture.kms.unwraps(), 0);
}
