//! Seal times: authenticated, unique per message, and checked against a maximum age.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{Fixture, TENANT_1_KEY, attrs};
use pubsub_envelope::format::SEALED_AT_ATTR;
use pubsub_envelope::{Clock, MAX_CLOCK_SKEW, ManualClock, Mode, Opener, Sealed};

const MAX_AGE: Duration = Duration::from_secs(300);

async fn sealed_at(fixture: &Fixture, mode: Mode, clock: Arc<ManualClock>) -> Sealed {
    let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", mode).with_clock(clock);
    sealer.seal(Bytes::from_static(b"words"), attrs(&[("a", "1")])).await.unwrap()
}

fn opener(fixture: &Fixture, clock: Arc<ManualClock>) -> Opener {
    fixture.opener_builder("tenant-1").max_age(Some(MAX_AGE)).clock(clock).build().unwrap()
}

#[tokio::test]
async fn the_seal_time_is_carried_and_authenticated() {
    let fixture = Fixture::new();
    let then = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_338_830_123_456);
    for mode in [Mode::Encrypt, Mode::Sign] {
        let message = sealed_at(&fixture, mode, Arc::new(ManualClock::at(then))).await;
        assert_eq!(message.attributes[SEALED_AT_ATTR], "1764338830123456");
        let opened = fixture.opener("tenant-1").open(&message.data, &message.attributes).await.unwrap();
        assert_eq!(opened.sealed_at, then);
        // Moving the seal time forward to dodge a maximum age breaks authentication.
        let mut younger = message.attributes.clone();
        younger.insert(SEALED_AT_ATTR.into(), "1764338930123456".into());
        let error = fixture.opener("tenant-1").open(&message.data, &younger).await.unwrap_err();
        assert_eq!(error.reason(), "tampered", "{mode}");
    }
}

#[tokio::test]
async fn identical_messages_sealed_in_the_same_instant_differ() {
    let fixture = Fixture::new();
    let clock = Arc::new(ManualClock::new());
    for mode in [Mode::Encrypt, Mode::Sign] {
        let mut sealer = fixture.sealer(TENANT_1_KEY, "tenant-1", mode).with_clock(clock.clone());
        let opener = fixture.opener("tenant-1");
        let mut previous: Option<pubsub_envelope::Opened> = None;
        for _ in 0..3 {
            let message = sealer.seal(Bytes::from_static(b"same"), attrs(&[("a", "1")])).await.unwrap();
            let opened = opener.open(&message.data, &message.attributes).await.unwrap();
            let again = opener.open(&message.data, &message.attributes).await.unwrap();
            assert_eq!(opened.fingerprint, again.fingerprint, "a copy keeps its fingerprint");
            if let Some(previous) = previous {
                assert!(opened.sealed_at > previous.sealed_at, "{mode}: seal times strictly increase");
                assert_ne!(opened.fingerprint, previous.fingerprint, "{mode}");
            }
            previous = Some(opened);
        }
    }
}

#[tokio::test]
async fn messages_older_than_the_maximum_age_are_refused() {
    let fixture = Fixture::new();
    for mode in [Mode::Encrypt, Mode::Sign] {
        // A whole second, so that the seal time (in microseconds) is the clock's exactly.
        let clock = Arc::new(ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_338_830)));
        let message = sealed_at(&fixture, mode, clock.clone()).await;
        let opener = opener(&fixture, clock.clone());
        clock.advance(MAX_AGE);
        assert!(opener.open(&message.data, &message.attributes).await.is_ok(), "{mode}: exactly the maximum age");
        clock.advance(Duration::from_secs(1));
        let error = opener.open(&message.data, &message.attributes).await.unwrap_err();
        assert_eq!(error.reason(), "too_old", "{mode}: {error}");
        assert!(!error.is_transient());
        assert!(error.to_string().contains("301 s ago"), "{error}");
        let unlimited = fixture.opener("tenant-1");
        assert!(unlimited.open(&message.data, &message.attributes).await.is_ok(), "{mode}: no limit by default");
    }
}

#[tokio::test]
async fn messages_from_the_future_are_refused_beyond_the_clock_skew() {
    let fixture = Fixture::new();
    // A whole second, so that a seal time exactly MAX_CLOCK_SKEW ahead is exactly that.
    let now = Arc::new(ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_338_830)));
    let opener = opener(&fixture, now.clone());
    for mode in [Mode::Encrypt, Mode::Sign] {
        let skewed = Arc::new(ManualClock::at(now.wall() + MAX_CLOCK_SKEW));
        let message = sealed_at(&fixture, mode, skewed).await;
        assert!(opener.open(&message.data, &message.attributes).await.is_ok(), "{mode}: within the skew");
        let ahead = Arc::new(ManualClock::at(now.wall() + MAX_CLOCK_SKEW + Duration::from_secs(1)));
        let message = sealed_at(&fixture, mode, ahead).await;
        let error = opener.open(&message.data, &message.attributes).await.unwrap_err();
        assert_eq!(error.reason(), "sealed_in_future", "{mode}: {error}");
    }
}
