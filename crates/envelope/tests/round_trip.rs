//! Messages come back exactly as they were sealed, in encrypt and sign mode (attest mode: tests/attest.rs), and openers that could open nothing are not built.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

mod common;

use bytes::Bytes;
use common::{Fixture, TENANT_1_KEY, attrs};
use proptest::prelude::*;
use pubsub_envelope::format::{
    DEK_WRAPPED_ATTR, ENCRYPT_OVERHEAD, KMS_KEY_ATTR, SEALED_AT_ATTR, SIGNATURE_ATTR, VERSION_ATTR,
};
use pubsub_envelope::{Attributes, Mode, OpenError, Refused};

async fn round_trip(mode: Mode, data: &[u8], attributes: &Attributes) {
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", mode);
    let sealed = sealer.seal(Bytes::copy_from_slice(data), attributes.clone()).await.unwrap();
    let opened = fixture.opener("tenant-1").open(&sealed.data, &sealed.attributes).await.unwrap();
    assert_eq!(opened.mode, mode);
    assert_eq!(opened.kms_key.as_ref().unwrap().as_str(), TENANT_1_KEY);
    assert_eq!(&opened.data[..], data);
    assert_eq!(&opened.attributes, attributes);
}

#[tokio::test]
async fn both_modes_restore_data_and_attributes() {
    let attributes = attrs(&[("epoch_time", "1541340000"), ("a", "aaa"), ("c", "ccc"), ("b", "bbb")]);
    for mode in [Mode::Encrypt, Mode::Sign] {
        round_trip(mode, b"Lorem ipsum dolor sit amet", &attributes).await;
        round_trip(mode, b"", &Attributes::new()).await;
        round_trip(mode, b"", &attributes).await;
        round_trip(mode, b"no attributes", &Attributes::new()).await;
    }
}

#[tokio::test]
async fn encrypt_hides_data_and_attributes() {
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Encrypt);
    let attributes = attrs(&[("customer", "acme-secret-attribute")]);
    let sealed = sealer.seal(Bytes::from_static(b"plain words here"), attributes).await.unwrap();
    let mut visible: Vec<&str> = sealed.attributes.keys().map(String::as_str).collect();
    visible.sort_unstable();
    assert_eq!(visible, [DEK_WRAPPED_ATTR, SEALED_AT_ATTR, VERSION_ATTR, KMS_KEY_ATTR]);
    let text = String::from_utf8_lossy(&sealed.data);
    assert!(!text.contains("plain words") && !text.contains("acme"), "{text}");
    assert_eq!(sealed.data.len(), ENCRYPT_OVERHEAD + 4 + (8 + 8 + 21) + 16);
}

#[tokio::test]
async fn sign_keeps_data_and_attributes_visible() {
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Sign);
    let sealed = sealer.seal(Bytes::from_static(b"plain words"), attrs(&[("a", "1")])).await.unwrap();
    assert_eq!(sealed.data, &b"plain words"[..]);
    assert_eq!(sealed.attributes["a"], "1");
    assert_eq!(sealed.attributes[SIGNATURE_ATTR].len(), 44, "base64 of 32 bytes");
}

#[tokio::test]
async fn reserved_attribute_names_are_refused_when_sealing() {
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Sign);
    let error = sealer.seal(Bytes::from_static(b"x"), attrs(&[(KMS_KEY_ATTR, "forged")])).await.unwrap_err();
    assert!(error.to_string().contains("reserved"), "{error}");
    assert_eq!(fixture.kms.wraps(), 0, "refused before any KMS call");
}

#[tokio::test]
async fn opener_accepts_only_configured_modes() {
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Sign);
    let sealed = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    let decrypt_only = fixture.opener_builder("tenant-1").accept(&[Mode::Encrypt]).build().unwrap();
    let error = decrypt_only.open(&sealed.data, &sealed.attributes).await.unwrap_err();
    assert!(matches!(error, OpenError::Refused(Refused::ModeNotAccepted(Mode::Sign))));
    assert_eq!(error.reason(), "mode_not_accepted");
}

fn attribute_map() -> impl Strategy<Value = Attributes> {
    proptest::collection::hash_map("[a-z][a-z0-9_.-]{0,20}", "\\PC{0,40}", 0..8)
        .prop_filter("reserved names", |map| map.keys().all(|k| !pubsub_envelope::format::is_reserved(k)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_data_and_attributes_round_trip(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        attributes in attribute_map(),
        encrypt in any::<bool>(),
    ) {
        let mode = if encrypt { Mode::Encrypt } else { Mode::Sign };
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
            .block_on(round_trip(mode, &data, &attributes));
    }
}

#[tokio::test]
async fn the_most_attributes_a_mode_allows_fit_pubsubs_limit() {
    let fixture = Fixture::new();
    for mode in [Mode::Encrypt, Mode::Sign] {
        let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", mode);
        let max = mode.max_producer_attributes();
        let many = |n: usize| -> Attributes { (0..n).map(|i| (format!("k{i}"), "v".to_owned())).collect() };
        let sealed = sealer.seal(Bytes::new(), many(max)).await.unwrap();
        assert!(
            sealed.attributes.len() <= pubsub_envelope::format::MAX_ATTRIBUTES,
            "{mode}: {}",
            sealed.attributes.len()
        );
        let opened = fixture.opener("tenant-1").open(&sealed.data, &sealed.attributes).await.unwrap();
        assert_eq!(opened.attributes, many(max));
        let error = sealer.seal(Bytes::new(), many(max + 1)).await.unwrap_err();
        assert!(error.to_string().contains(&format!("more than the {max}")), "{error}");
    }
    assert_eq!(Mode::Sign.max_producer_attributes(), 95);
}

/// An opener that could open nothing it accepts is refused when built, not discovered
/// one dead letter at a time.
#[test]
fn openers_that_could_open_nothing_are_not_built() {
    use pubsub_envelope::{BuildError, Opener, TrustedKeys, TrustedSigners};
    let fixture = Fixture::new();
    let nothing = Opener::builder("tenant-1", TrustedKeys::none()).kms(fixture.kms.clone()).build();
    assert_eq!(nothing.err(), Some(BuildError::NothingTrusted));
    let no_unwrapper = Opener::builder("tenant-1", common::both_tenants()).build();
    assert_eq!(no_unwrapper.err(), Some(BuildError::NoUnwrapper(Mode::Encrypt)));
    let signers = TrustedSigners::default().trust("a@p.iam.gserviceaccount.com", None).unwrap();
    let attest_only = Opener::builder("tenant-1", TrustedKeys::none()).accept(&[Mode::Attest]).trusted_signers(signers);
    assert!(attest_only.build().is_ok(), "service accounts alone, attest only: no KMS needed");
}

#[test]
fn settings_out_of_range_are_refused_at_build_not_left_to_panic_later() {
    use std::time::Duration;

    use pubsub_envelope::Opener;
    // A cache ttl of 4e10 s panicked inside moka when the first key was cached (exit
    // 101 in the pipeline, PanicException in Python); every setting is checked against
    // the limits table when the opener is built.
    use pubsub_envelope::{BuildError, CacheSettings, limits};
    let trusted = || pubsub_envelope::TrustedKeys::from_patterns(["projects/tenant-1/*"]).unwrap();
    let build = |change: &dyn Fn(pubsub_envelope::OpenerBuilder) -> pubsub_envelope::OpenerBuilder| {
        change(Opener::builder("tenant-1", trusted()).accept(&[pubsub_envelope::Mode::Attest])).build()
    };
    let huge = Duration::from_secs(40_000_000_000);
    let cases: [(&str, &dyn Fn(pubsub_envelope::OpenerBuilder) -> pubsub_envelope::OpenerBuilder); 7] = [
        ("cache ttl", &|b| b.cache(CacheSettings { ttl: huge, ..CacheSettings::default() })),
        ("cache ttl", &|b| b.cache(CacheSettings { ttl: Duration::ZERO, ..CacheSettings::default() })),
        ("cache capacity", &|b| b.cache(CacheSettings { capacity: 0, ..CacheSettings::default() })),
        ("cache capacity", &|b| b.cache(CacheSettings { capacity: u64::MAX, ..CacheSettings::default() })),
        ("maximum message age", &|b| b.max_age(Some(huge))),
        ("maximum certificate lifetime", &|b| b.max_certificate_lifetime(Duration::ZERO)),
        ("maximum certificate lifetime", &|b| b.max_certificate_lifetime(limits::MAX_CERTIFICATE_LIFETIME * 2)),
    ];
    for (setting, change) in cases {
        match build(change) {
            Err(BuildError::OutOfRange(error)) => assert_eq!(error.setting, setting, "{error}"),
            other => panic!("{setting}: {:?}", other.map(|_| "built")),
        }
    }
    let edges = build(&|b| {
        b.cache(CacheSettings { ttl: limits::MAX_CACHE_TTL, capacity: limits::MAX_CACHE_CAPACITY })
            .max_age(Some(limits::MAX_MESSAGE_AGE))
            .max_certificate_lifetime(limits::MAX_CERTIFICATE_LIFETIME)
    });
    assert!(edges.is_ok(), "each limit itself is allowed");
    let policy =
        pubsub_envelope::RotationPolicy { max_age: limits::MAX_KEY_AGE + Duration::from_secs(1), ..Default::default() };
    assert!(policy.check().is_err());
    assert!(pubsub_envelope::RotationPolicy::default().check().is_ok());
    let policy = pubsub_envelope::RotationPolicy { max_messages: limits::MAX_KEY_MESSAGES + 1, ..Default::default() };
    assert!(policy.check().is_err());
}
