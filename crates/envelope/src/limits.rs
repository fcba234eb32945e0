//! The range of every duration and size a sealer or opener is configured with, in one
//! table: what the binaries' flags and the Python package's keywords are checked
//! against at the door, so that no value reaches a cache or a clock that would panic on
//! it, and no producer chooses a limit that consumers cannot cap.

use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

/// Longest an opener keeps an unwrapped data key (`CacheSettings::ttl`): a day. Longer
/// only lengthens how long a data key outlives a revocation (docs/THREATS.md).
pub const MAX_CACHE_TTL: Duration = DAY;

/// Most data keys an opener caches per mode (`CacheSettings::capacity`): ten million,
/// a few GB at the most.
pub const MAX_CACHE_CAPACITY: u64 = 10_000_000;

/// Longest maximum message age an opener takes: 31 days, the longest Pub/Sub keeps a
/// message, so anything older is a replay whatever the setting.
pub const MAX_MESSAGE_AGE: Duration = Duration::from_secs(31 * 86_400);

/// Longest a data key or attest session key may be used (`RotationPolicy::max_age`,
/// `publisher --key_max_age_secs`): a day.
pub const MAX_KEY_AGE: Duration = DAY;

/// Most messages one data key may seal (`RotationPolicy::max_messages`): 2^32, what
/// NIST SP 800-38D allows AES-GCM with random nonces.
pub const MAX_KEY_MESSAGES: u64 = 1 << 32;

/// Most keys a sealer makes ahead of need (`Sealer::with_keys_ahead`): each is a KMS
/// call in flight and, at the end, perhaps one made for nothing.
pub const MAX_KEYS_AHEAD: usize = 1024;

/// How long a session certificate outlives its key's rotation age: a certificate is
/// valid for the sealer's `RotationPolicy::max_age` plus this, so that a message sealed
/// just before a rotation still verifies after a short delay.
pub const CERTIFICATE_SLACK: Duration = Duration::from_secs(60);

/// How long a session certificate may be valid (`not_after − not_before`) for an opener
/// that sets no limit of its own: an hour and a minute, what a producer rotating at most
/// hourly makes (its rotation age plus the 60 s a certificate outlives it). The
/// producer's `--key_max_age_secs` sets a certificate's lifetime; this caps the window
/// in which a stolen session key signs, whatever the producer chose. Longer
/// certificates are refused (`certificate_lifetime_too_long`).
pub const DEFAULT_MAX_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(3_660);

/// The longest maximum certificate lifetime an opener takes: what a producer rotating
/// at [`MAX_KEY_AGE`] makes.
pub const MAX_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(86_400 + 60);

/// Longest deadline of one Cloud KMS call: ten minutes.
pub const MAX_KMS_TIMEOUT: Duration = Duration::from_secs(600);

/// Most latency the local keyring backend adds to each call (to stand in for a remote
/// KMS in benchmarks): a minute.
pub const MAX_LOCAL_KMS_LATENCY: Duration = Duration::from_secs(60);

/// Largest KMS failure budget of one trust entry (`KmsBudget::failures`): a million.
pub const MAX_KMS_FAILURE_BUDGET: u64 = 1_000_000;

/// Longest time a drained trust entry waits for a KMS failure back
/// (`KmsBudget::refill`): an hour.
pub const MAX_KMS_FAILURE_REFILL: Duration = Duration::from_secs(3600);

/// Most KMS calls an opener has in flight (`KmsBudget::max_in_flight`): ten thousand.
pub const MAX_KMS_IN_FLIGHT: usize = 10_000;

/// A setting outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} must be {range}, not {value}")]
pub struct OutOfRange {
    /// The setting, as the API names it.
    pub setting: &'static str,
    /// The value given.
    pub value: String,
    /// What it may be.
    pub range: String,
}

/// Checks that `value` lies in `(0, max]`.
pub(crate) fn duration(setting: &'static str, value: Duration, max: Duration) -> Result<(), OutOfRange> {
    if value.is_zero() || value > max {
        return Err(OutOfRange {
            setting,
            value: format!("{} s", value.as_secs_f64()),
            range: format!("more than 0 s and at most {} s", max.as_secs()),
        });
    }
    Ok(())
}

/// Checks that `value` lies in `1..=max`.
pub(crate) fn count(setting: &'static str, value: u64, max: u64) -> Result<(), OutOfRange> {
    if !(1..=max).contains(&value) {
        return Err(OutOfRange { setting, value: value.to_string(), range: format!("from 1 to {max}") });
    }
    Ok(())
}
