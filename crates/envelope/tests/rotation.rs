//! Producers rotate data keys by age, count and bytes, calling KMS only then.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

mod common;

use bytes::Bytes;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, TENANT_1_KEY};
use pubsub_envelope::format::DEK_WRAPPED_ATTR;
use pubsub_envelope::{Attributes, ManualClock, Mode, RotationPolicy, Sealer};

fn sealer(fixture: &Fixture, policy: RotationPolicy, clock: Arc<ManualClock>) -> Sealer {
    fixture.sealer(TENANT_1_KEY, "tenant-1", Mode::Encrypt).with_policy(policy).with_clock(clock)
}

async fn wrapped_key(sealer: &mut Sealer, data: &[u8]) -> String {
    sealer.seal(Bytes::copy_from_slice(data), Attributes::new()).await.unwrap().attributes[DEK_WRAPPED_ATTR].clone()
}

const LARGE: RotationPolicy =
    RotationPolicy { max_age: Duration::from_secs(100), max_messages: u64::MAX, max_bytes: u64::MAX };

#[test]
fn defaults_match_the_article_and_stay_far_below_the_nonce_bound() {
    let policy = RotationPolicy::default();
    assert_eq!(policy.max_age, Duration::from_secs(100));
    assert!(policy.max_messages <= 1 << 32);
}

#[tokio::test]
async fn rotates_by_age() {
    let fixture = Fixture::new();
    let clock = Arc::new(ManualClock::new());
    let mut sealer = sealer(&fixture, LARGE, clock.clone());
    let first = wrapped_key(&mut sealer, b"a").await;
    clock.advance(Duration::from_secs(99));
    assert_eq!(wrapped_key(&mut sealer, b"b").await, first, "still young");
    clock.advance(Duration::from_secs(1));
    assert_ne!(wrapped_key(&mut sealer, b"c").await, first, "100 s old");
    assert_eq!(fixture.kms.wraps(), 2);
    assert_eq!(sealer.data_keys_made(), 2);
}

#[tokio::test]
async fn rotates_by_message_count() {
    let fixture = Fixture::new();
    let clock = Arc::new(ManualClock::new());
    let mut sealer = sealer(&fixture, RotationPolicy { max_messages: 5, ..LARGE }, clock);
    let mut keys = Vec::new();
    for _ in 0..12 {
        keys.push(wrapped_key(&mut sealer, b"x").await);
    }
    assert!(keys[..5].iter().all(|k| *k == keys[0]));
    assert!(keys[5..10].iter().all(|k| *k == keys[5]));
    assert_ne!(keys[0], keys[5]);
    assert_ne!(keys[5], keys[10]);
    assert_eq!(fixture.kms.wraps(), 3, "12 messages at 5 per key: KMS called per rotation only");
}

#[tokio::test]
async fn rotates_by_bytes() {
    let fixture = Fixture::new();
    let clock = Arc::new(ManualClock::new());
    let mut sealer = sealer(&fixture, RotationPolicy { max_bytes: 100, ..LARGE }, clock);
    let first = wrapped_key(&mut sealer, &[0; 60]).await;
    assert_eq!(wrapped_key(&mut sealer, &[0; 40]).await, first, "exactly 100 bytes fit");
    let third = wrapped_key(&mut sealer, &[0; 1]).await;
    assert_ne!(third, first, "byte 101 needs a new key");
    let oversized = wrapped_key(&mut sealer, &[0; 500]).await;
    assert_ne!(oversized, third, "a message larger than the budget gets a key of its own");
    assert_ne!(wrapped_key(&mut sealer, &[0; 1]).await, oversized);
}

#[tokio::test]
async fn failed_rotation_leaves_the_sealer_usable() {
    let fixture = Fixture::new();
    let mut broken =
        Sealer::sign(fixture.kms.clone(), common::key("projects/p/locations/l/keyRings/r/cryptoKeys/absent"), "t");
    let error = broken.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert_eq!(broken.data_keys_made(), 0);
}

/// Seals `count` messages at a new key every 5 with keys made `ahead`, through a KMS
/// 20 ms away; returns the (virtual) time taken, the wraps made and the sealed messages.
async fn seal_ahead(fixture: &Fixture, ahead: usize, count: usize) -> (Duration, u64, Vec<pubsub_envelope::Sealed>) {
    let kms = fixture.slow_kms(Duration::from_millis(20));
    let mut sealer = Sealer::encrypt(kms.clone(), common::key(TENANT_1_KEY), "tenant-1")
        .with_policy(RotationPolicy { max_messages: 5, ..LARGE })
        .with_keys_ahead(ahead);
    let started = tokio::time::Instant::now();
    let mut sealed = Vec::new();
    for n in 0..count {
        sealed.push(sealer.seal(Bytes::from(format!("message {n}")), Attributes::new()).await.unwrap());
        // The producer's own work between messages (100 us), during which keys made
        // ahead progress.
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    assert_eq!(sealer.data_keys_made(), count as u64 / 5);
    drop(sealer);
    (started.elapsed(), kms.wraps(), sealed)
}

#[tokio::test(start_paused = true)]
async fn keys_made_ahead_take_the_kms_out_of_rotation_and_waste_little() {
    // With a KMS 20 ms away and a new key every 5 messages, waiting for each wrap costs
    // 20 ms per rotation; keys made ahead (16 in flight at most) cut that to a fraction,
    // every message still opens, and the wraps never used stay within the bound.
    // Tokio's paused clock measures: time moves only while every task waits, so the
    // figures are exact and the same on any machine.
    let fixture = Fixture::new();
    let (waiting, waiting_wraps, _) = seal_ahead(&fixture, 0, 2_000).await;
    let (ahead, ahead_wraps, sealed) = seal_ahead(&fixture, 16, 2_000).await;
    assert_eq!(waiting_wraps, 400, "one wrap per key when none are made ahead");
    assert!(waiting >= Duration::from_millis(400 * 20), "{waiting:?}");
    assert!(ahead * 4 < waiting, "keys made ahead: {ahead:?}, waiting for each: {waiting:?}");
    assert!((400..=416).contains(&ahead_wraps), "at most 16 keys made ahead unused: {ahead_wraps}");
    let opener = fixture.opener("tenant-1");
    for (n, message) in sealed.iter().enumerate() {
        let opened = opener.open(&message.data, &message.attributes).await.unwrap();
        assert_eq!(opened.data, format!("message {n}").as_bytes());
    }
}

#[tokio::test(start_paused = true)]
async fn keys_retired_by_age_are_not_made_ahead() {
    // A key retired by age is made when needed: one made early would only age waiting.
    let fixture = Fixture::new();
    let clock = Arc::new(ManualClock::new());
    let mut sealer = sealer(&fixture, LARGE, clock.clone()).with_keys_ahead(16);
    for _ in 0..20 {
        wrapped_key(&mut sealer, b"x").await;
        clock.advance(Duration::from_secs(100));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fixture.kms.wraps(), 20, "one wrap per key, none ahead");
}

#[test]
fn a_key_whose_runtime_stopped_while_it_was_made_ahead_is_made_again() {
    // A sealer can outlive the runtime its keys-ahead tasks ran on (their tasks are
    // cancelled with it): its next rotation makes the key afresh instead of failing.
    let fixture = Fixture::new();
    let kms = fixture.slow_kms(Duration::from_secs(60));
    let mut sealer = Sealer::encrypt(kms.clone(), common::key(TENANT_1_KEY), "tenant-1")
        .with_policy(RotationPolicy { max_messages: 1, ..LARGE })
        .with_keys_ahead(4);
    let paused = || tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    // Eight keys used: the last rotations start keys ahead, still in their 60 s wait
    // (virtual time only moves while every task waits) when the runtime goes away.
    paused().block_on(async {
        for n in 0..8 {
            sealer.seal(Bytes::from(format!("before {n}")), Attributes::new()).await.unwrap();
        }
    });
    let sealed = paused().block_on(async {
        let mut sealed = Vec::new();
        for n in 0..4 {
            sealed.push(sealer.seal(Bytes::from(format!("after {n}")), Attributes::new()).await.unwrap());
        }
        sealed
    });
    assert_eq!(sealer.data_keys_made(), 12);
    let opener = fixture.opener("tenant-1");
    let runtime = paused();
    for (n, message) in sealed.iter().enumerate() {
        let opened = runtime.block_on(opener.open(&message.data, &message.attributes)).unwrap();
        assert_eq!(opened.data, format!("after {n}").as_bytes());
    }
}

/// A KMS whose wrap number `good + 1` panics, once; every other wrap works.
struct PanicsAfter {
    inner: Arc<pubsub_envelope::kms::Counted<pubsub_envelope::kms::local::LocalKms>>,
    good: u64,
}

#[async_trait::async_trait]
impl pubsub_envelope::kms::KeyWrap for PanicsAfter {
    async fn wrap(
        &self,
        name: &pubsub_envelope::KeyName,
        key: &pubsub_envelope::SecretKey,
        aad: &[u8],
    ) -> Result<Vec<u8>, pubsub_envelope::kms::KmsError> {
        let wrapped = self.inner.wrap(name, key, aad).await;
        assert_ne!(self.inner.wraps(), self.good + 1, "the KMS backend broke");
        wrapped
    }

    async fn unwrap(
        &self,
        name: &pubsub_envelope::KeyName,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<pubsub_envelope::SecretKey, pubsub_envelope::kms::KmsError> {
        self.inner.unwrap(name, wrapped, aad).await
    }
}

#[tokio::test]
#[should_panic(expected = "the KMS backend broke")]
async fn a_panic_while_a_key_is_made_ahead_reaches_the_sealer() {
    // A backend that panics on a task making a key ahead is a bug to see, not a key to
    // skip quietly: the panic resumes in the `seal` that wanted the key (skipped, the
    // next key would work and the run would end quietly).
    let fixture = Fixture::new();
    let kms = Arc::new(PanicsAfter { inner: fixture.kms.clone(), good: 8 });
    let mut sealer = Sealer::encrypt(kms, common::key(TENANT_1_KEY), "tenant-1")
        .with_policy(RotationPolicy { max_messages: 1, ..LARGE })
        .with_keys_ahead(4);
    for n in 0..32 {
        sealer.seal(Bytes::from(format!("message {n}")), Attributes::new()).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_short_run_wraps_few_keys_it_does_not_use() {
    // The article's run (20 messages, a new key every 5) with 16 keys allowed ahead: at
    // most a quarter of the keys used so far are made ahead, so it wraps at most one
    // key it never uses.
    let fixture = Fixture::new();
    let (_, wraps, _) = seal_ahead(&fixture, 16, 20).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!((4..=5).contains(&wraps), "{wraps} wraps for 4 keys used");
}

#[tokio::test(start_paused = true)]
async fn a_message_larger_than_the_byte_budget_takes_a_key_made_ahead_without_waiting() {
    // A key made ahead has sealed nothing, so even a message over the byte budget fits
    // it: the sealer takes it at once instead of discarding it and waiting out a wrap.
    let fixture = Fixture::new();
    let kms = fixture.slow_kms(Duration::from_millis(20));
    let mut sealer = Sealer::encrypt(kms.clone(), common::key(TENANT_1_KEY), "tenant-1")
        .with_policy(RotationPolicy { max_messages: 5, max_bytes: 100, ..LARGE })
        .with_keys_ahead(4);
    for n in 0..40 {
        sealer.seal(Bytes::from(format!("message {n}")), Attributes::new()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // the keys made ahead are ready
    let made = sealer.data_keys_made();
    let started = tokio::time::Instant::now();
    let sealed = sealer.seal(Bytes::from(vec![b'x'; 500]), Attributes::new()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO, "the oversized message waited for a wrap");
    assert_eq!(sealer.data_keys_made(), made + 1, "it has a key of its own");
    let opened = fixture.opener("tenant-1").open(&sealed.data, &sealed.attributes).await.unwrap();
    assert_eq!(opened.data.len(), 500);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_sealer_makes_no_more_keys() {
    // Keys still to be made ahead are wanted by no one once the sealer is gone: dropping
    // it cancels them, so no KMS call starts after it (on this single-threaded runtime
    // the top-up the last seal asked for has not started when `seal` returns).
    let fixture = Fixture::new();
    let kms = fixture.slow_kms(Duration::from_millis(20));
    let mut sealer = Sealer::encrypt(kms.clone(), common::key(TENANT_1_KEY), "tenant-1")
        .with_policy(RotationPolicy { max_messages: 1, ..LARGE })
        .with_keys_ahead(16);
    for n in 0..8 {
        sealer.seal(Bytes::from(format!("message {n}")), Attributes::new()).await.unwrap();
    }
    let wraps = kms.wraps();
    drop(sealer);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(kms.wraps(), wraps, "a KMS call started after the sealer was dropped");
}

#[tokio::test]
async fn a_running_sealer_stops_using_a_data_key_whose_version_was_disabled() {
    // Property: within about two seconds of the keyring disabling the version its data
    // key (and the keys it made ahead) were wrapped under, a sealer seals under a new
    // data key that opens, where the old one is refused.
    let fixture = Fixture::new();
    let mut sealer = fixture
        .sealer(TENANT_1_KEY, "tenant-1", Mode::Encrypt)
        .with_keys_ahead(4)
        .with_policy(RotationPolicy { max_messages: 2, ..RotationPolicy::default() });
    let mut before = None;
    for n in 0..20 {
        before = Some(sealer.seal(Bytes::from(format!("m{n}")), Attributes::new()).await.unwrap());
    }
    let before = before.unwrap();
    let name = common::key(TENANT_1_KEY);
    pubsub_envelope::kms::local::Keyring::edit(fixture.keyring_path(), |keyring| {
        keyring.rotate(&name)?;
        keyring.disable(&name, 1)
    })
    .unwrap();
    // The keyring file is looked at once a second, and the sealer asks once a second.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = sealer.seal(Bytes::from_static(b"after"), Attributes::new()).await.unwrap();
    assert_ne!(after.attributes[DEK_WRAPPED_ATTR], before.attributes[DEK_WRAPPED_ATTR]);
    let opener = fixture.opener("tenant-1");
    assert_eq!(opener.open(&after.data, &after.attributes).await.unwrap().data, &b"after"[..]);
    let refused = opener.open(&before.data, &before.attributes).await.unwrap_err();
    assert_eq!(refused.reason(), "kms_rejected", "{refused}");
}
