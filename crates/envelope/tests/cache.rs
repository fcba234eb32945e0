//! Consumers unwrap each data key once, however many messages share it.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Fixture, TENANT_1_KEY, TENANT_2_KEY};
use pubsub_envelope::kms::{KeyWrap, KmsError};
use pubsub_envelope::{Attributes, CacheSettings, CacheStats, KeyName, KmsBudget, Mode, Opener, SecretKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_opens_of_a_new_key_make_one_kms_call() {
    for mode in [Mode::Encrypt, Mode::Sign] {
        let fixture = Fixture::new();
        let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", mode);
        let mut messages = Vec::new();
        for i in 0..100 {
            let sealed = sealer.seal(Bytes::from(format!("message {i}")), Attributes::new()).await.unwrap();
            messages.push(sealed);
        }
        let opener = Arc::new(fixture.opener("tenant-1"));
        let tasks: Vec<_> = messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| {
                let opener = opener.clone();
                tokio::spawn(async move {
                    let opened = opener.open(&message.data, &message.attributes).await.unwrap();
                    assert_eq!(opened.data, format!("message {i}").as_bytes());
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(fixture.kms.unwraps(), 1, "{mode}");
    }
}

#[tokio::test]
async fn expired_entries_are_unwrapped_again() {
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Sign);
    let message = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    let data = message.data.clone();
    let opener = fixture
        .opener_builder("tenant-1")
        .cache(CacheSettings { ttl: Duration::from_millis(200), capacity: 10 })
        .build()
        .unwrap();
    opener.open(&data, &message.attributes).await.unwrap();
    opener.open(&data, &message.attributes).await.unwrap();
    assert_eq!(fixture.kms.unwraps(), 1);
    assert_eq!(opener.cache_stats(), CacheStats { hits: 1, misses: 1 });
    tokio::time::sleep(Duration::from_millis(400)).await;
    opener.open(&data, &message.attributes).await.unwrap();
    assert_eq!(fixture.kms.unwraps(), 2, "after the time to live, the key is unwrapped again");
    assert_eq!(opener.cache_stats(), CacheStats { hits: 1, misses: 2 });
}

#[tokio::test]
async fn interleaved_keys_each_expire_after_the_time_to_live() {
    // A thread remembers several recent keys, so that messages under interleaved keys
    // skip the shared cache. Each remembered key still expires: after the time to live,
    // a message under either key, the older one too, is unwrapped again.
    let fixture = Fixture::new();
    let mut sealers = [Mode::Sign, Mode::Sign].map(|mode| fixture.sealer(TENANT_1_KEY, "tenant-1", mode));
    let mut messages = Vec::new();
    for sealer in &mut sealers {
        messages.push(sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap());
    }
    let opener = fixture
        .opener_builder("tenant-1")
        .cache(CacheSettings { ttl: Duration::from_millis(200), capacity: 10 })
        .build()
        .unwrap();
    for _ in 0..3 {
        for message in &messages {
            opener.open(&message.data, &message.attributes).await.unwrap();
        }
    }
    assert_eq!(fixture.kms.unwraps(), 2);
    assert_eq!(opener.cache_stats(), CacheStats { hits: 4, misses: 2 });
    tokio::time::sleep(Duration::from_millis(400)).await;
    for message in &messages {
        opener.open(&message.data, &message.attributes).await.unwrap();
    }
    assert_eq!(fixture.kms.unwraps(), 4, "after the time to live, both keys are unwrapped again");
}

#[tokio::test]
async fn a_refused_unwrap_is_remembered_not_asked_again() {
    // Property: the KMS is asked once about a wrapped key it refuses, however often the
    // message comes back; every copy gets the same reason.
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-2", Mode::Sign);
    let message = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    let data = message.data.clone();
    let opener = fixture.opener("tenant-1");
    for _ in 0..3 {
        assert_eq!(opener.open(&data, &message.attributes).await.unwrap_err().reason(), "unwrap_rejected");
    }
    assert_eq!(fixture.kms.unwraps(), 1);
    let stats = opener.kms_stats();
    assert_eq!((stats.refused, stats.remembered), (1, 2));
}

/// A KMS that is down: every unwrap fails transiently.
struct Down(AtomicU64);

#[async_trait::async_trait]
impl KeyWrap for Down {
    async fn wrap(&self, _: &KeyName, _: &SecretKey, _: &[u8]) -> Result<Vec<u8>, KmsError> {
        Err(KmsError::Unavailable("down".into()))
    }

    async fn unwrap(&self, _: &KeyName, _: &[u8], _: &[u8]) -> Result<SecretKey, KmsError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(KmsError::Unavailable("down".into()))
    }
}

#[tokio::test]
async fn a_transient_failure_is_asked_again_and_costs_no_budget() {
    // Property: an unwrap that failed transiently is retried on the next open, even
    // beyond the failure budget, since a KMS outage is no tenant's junk.
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Sign);
    let message = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    let down = Arc::new(Down(AtomicU64::new(0)));
    let opener = Opener::builder("tenant-1", common::both_tenants())
        .unwrap_with(down.clone())
        .kms_budget(KmsBudget { failures: 2, ..KmsBudget::default() })
        .build()
        .unwrap();
    for _ in 0..5 {
        let error = opener.open(&message.data, &message.attributes).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert_eq!(error.reason(), "kms_unavailable");
    }
    assert_eq!(down.0.load(Ordering::Relaxed), 5);
}

/// `message` with its wrapped key replaced by `n`'s random-looking bytes: what someone
/// with publish rights only can make under any trusted key name.
fn junk(message: &pubsub_envelope::Sealed, n: u32) -> Attributes {
    use base64::Engine as _;
    let mut attributes = message.attributes.clone();
    let bytes: Vec<u8> = (0..60u32).map(|i| (n.wrapping_mul(2_654_435_761).wrapping_add(i * 97) >> 3) as u8).collect();
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    attributes.insert(pubsub_envelope::format::SIGN_KEY_WRAPPED_ATTR.into(), text);
    attributes
}

#[tokio::test]
async fn a_junk_flood_under_one_tenants_key_costs_its_budget_and_stops_no_one_else() {
    // Property: junk under one trust entry makes at most `failures` KMS calls, the rest
    // refused as `kms_budget_exhausted` without a call; that tenant's cached data keys
    // and another tenant's new ones still open.
    let fixture = Fixture::new();
    let opener = fixture
        .opener_builder("tenant-1")
        .kms_budget(KmsBudget { failures: 10, ..KmsBudget::default() })
        .build()
        .unwrap();
    let mut victim = fixture.sealer(TENANT_2_KEY, "tenant-1", Mode::Sign);
    let cached = victim.seal(Bytes::from_static(b"before"), Attributes::new()).await.unwrap();
    opener.open(&cached.data, &cached.attributes).await.unwrap();
    let before = fixture.kms.unwraps();

    let mut reasons = std::collections::BTreeMap::<&str, u32>::new();
    for n in 0..500 {
        let error = opener.open(&cached.data, &junk(&cached, n)).await.unwrap_err();
        *reasons.entry(error.reason()).or_default() += 1;
    }
    assert_eq!(reasons, [("kms_budget_exhausted", 490), ("unwrap_rejected", 10)].into());
    assert_eq!(fixture.kms.unwraps() - before, 10, "the flood cost the budget, no more");

    opener.open(&cached.data, &cached.attributes).await.expect("a data key cached before the flood still opens");
    for n in 0..20 {
        let mut other = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Sign);
        let fresh = other.seal(Bytes::from(format!("m{n}")), Attributes::new()).await.unwrap();
        opener.open(&fresh.data, &fresh.attributes).await.expect("another tenant's new data keys open");
    }
    let stats = opener.kms_stats();
    assert_eq!((stats.ok, stats.refused, stats.over_budget), (21, 10, 490));
}

#[tokio::test]
async fn a_cached_wrapped_key_under_another_key_name_is_checked_again() {
    let fixture = Fixture::new();
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Sign);
    let message = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    let data = message.data.clone();
    let opener = fixture.opener("tenant-1");
    opener.open(&data, &message.attributes).await.unwrap();

    let mut renamed = message.attributes.clone();
    renamed.insert(pubsub_envelope::format::KMS_KEY_ATTR.into(), common::TENANT_2_KEY.into());
    let error = opener.open(&data, &renamed).await.unwrap_err();
    assert_eq!(error.reason(), "unwrap_rejected", "{error}");
    assert_eq!(fixture.kms.unwraps(), 2, "the renamed key went to KMS, not to the cache");
    let opened = opener.open(&data, &message.attributes).await.unwrap();
    assert_eq!(opened.kms_key.unwrap().as_str(), TENANT_1_KEY, "the good entry is untouched");
}

#[tokio::test]
async fn a_key_one_opener_unwrapped_is_never_used_by_another_on_the_same_thread() {
    // Each thread remembers the last data key it used; that memory belongs to one
    // opener. An opener for another tenant, on the same thread and right after, must ask
    // the KMS itself (which refuses it: the data key is bound to tenant-1).
    for mode in [Mode::Encrypt, Mode::Sign] {
        let fixture = Fixture::new();
        let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", mode);
        let message = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
        let (right, wrong) = (fixture.opener("tenant-1"), fixture.opener("tenant-2"));
        right.open(&message.data, &message.attributes).await.unwrap();
        right.open(&message.data, &message.attributes).await.unwrap();
        assert_eq!(right.cache_stats(), CacheStats { hits: 1, misses: 1 }, "{mode}");
        let error = wrong.open(&message.data, &message.attributes).await.unwrap_err();
        assert_eq!(error.reason(), "unwrap_rejected", "{mode}: {error}");
        assert_eq!(fixture.kms.unwraps(), 2, "{mode}");
        // And the first opener still has its key.
        right.open(&message.data, &message.attributes).await.unwrap();
        assert_eq!(fixture.kms.unwraps(), 2, "{mode}");
        assert_eq!(right.cache_stats(), CacheStats { hits: 2, misses: 1 }, "{mode}");
    }
}

#[tokio::test]
async fn a_version_disabled_in_the_keyring_stops_its_cached_data_keys_within_seconds() {
    // Property: once the version a cached data key was wrapped under is disabled, the
    // opener refuses messages under that key (`kms_rejected`: the key refused, not the
    // message) within a few seconds, not at the cache's 200 s time to live; messages
    // under the new primary version still open.
    for mode in [Mode::Encrypt, Mode::Sign] {
        let fixture = Fixture::new();
        let mut old = fixture.sealer(TENANT_1_KEY, "tenant-1", mode);
        let message = old.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
        let opener = fixture.opener("tenant-1");
        opener.open(&message.data, &message.attributes).await.unwrap();
        let name = common::key(TENANT_1_KEY);
        pubsub_envelope::kms::local::Keyring::edit(fixture.keyring_path(), |keyring| {
            keyring.rotate(&name)?;
            keyring.disable(&name, 1)
        })
        .unwrap();
        let disabled = std::time::Instant::now();
        let error = loop {
            match opener.open(&message.data, &message.attributes).await {
                Ok(_) => assert!(disabled.elapsed() < Duration::from_secs(10), "{mode}: still opening"),
                Err(error) => break error,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("{mode}: disabled -> refused in {} ms (the cache's ttl is 200 s)", disabled.elapsed().as_millis());
        assert_eq!(error.reason(), "kms_rejected", "{mode}: {error}");
        assert!(error.to_string().contains("version 1"), "{error}");
        let mut new = fixture.sealer(TENANT_1_KEY, "tenant-1", mode);
        let fresh = new.seal(Bytes::from_static(b"y"), Attributes::new()).await.unwrap();
        opener.open(&fresh.data, &fresh.attributes).await.expect("the new primary version opens");

        // Enabled again (a mistake undone), the same message opens within seconds: the
        // refusal is not held against it for the 10 minutes refusals are remembered,
        // so its dead letter can be redriven at once.
        pubsub_envelope::kms::local::Keyring::edit(fixture.keyring_path(), |keyring| keyring.enable(&name, 1)).unwrap();
        let enabled = std::time::Instant::now();
        while let Err(error) = opener.open(&message.data, &message.attributes).await {
            assert_eq!(error.reason(), "kms_rejected", "{mode}: {error}");
            assert!(enabled.elapsed() < Duration::from_secs(10), "{mode}: still refused after it was enabled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
