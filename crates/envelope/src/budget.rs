//! What unknown keys may cost an opener's KMS: each trust entry's budget of failed
//! calls, final failures remembered, and a cap on calls in flight.
//!
//! Everyone on a bus shares the consumer's KMS quota. A data key the opener has not
//! seen costs a KMS call, and only the KMS can tell a genuine wrapped key from random
//! bytes, so whoever may publish could spend that quota with junk under a trusted key
//! name until genuine unwraps get 429 and every tenant stalls. Three bounds:
//!
//! - **A failure budget per trust entry.** A KMS call reserves one of the failures left
//!   to the trust entry that let it through (an exact key, a prefix, or "any key"); a
//!   call that succeeds, or fails transiently, gives it back, and while every failure
//!   left is reserved by calls in flight, the next call waits for one to end rather than
//!   being refused. So genuine traffic costs the budget nothing however fast it rotates,
//!   and only final failures (the KMS refusing the wrapped key, the key or the version)
//!   drain it; junk makes at most the budget's calls, never more. Drained, the entry's further
//!   misses are refused without a call (`kms_budget_exhausted`) until a token comes
//!   back (one per [`KmsBudget::refill`]). Keys already cached keep opening: a flood
//!   under a tenant's key name stops only that name's *new* data keys, and only while it
//!   lasts. A refused message is dead-lettered whole, so it can be redriven.
//! - **Final failures remembered** by what was asked (key name and wrapped key, or key
//!   version), for [`KmsBudget::remember_failures`]: a replayed junk message, or a
//!   genuine wrapped key copied under another trusted name, costs one call, not one per
//!   copy. The opener puts its revocation epoch in each unwrap's question, so once the
//!   KMS's keys change (a version enabled again) nothing refused before is held against
//!   a message.
//! - **At most [`KmsBudget::max_in_flight`] calls at once**, whatever the number of
//!   keys: a burst of new keys queues here rather than at the KMS's quota.
//!
//! The bucket is written here rather than taken from `governor`: a call must hold its
//! reservation while in flight and give it back when it succeeds, and governor's
//! limiters only take cells, never return them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use tokio::sync::{Notify, Semaphore};

use crate::error::{OpenError, Refused};
use crate::kms::KmsError;
use crate::limits::{self, OutOfRange};

/// How much KMS work keys an opener has not seen may cost it (see the module docs of
/// `budget.rs`, and docs/THREATS.md "Cost under hostile load").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KmsBudget {
    /// Final failures one trust entry may cause before its misses are refused
    /// (`kms_budget_exhausted`); 100 by default, at most
    /// [`MAX_KMS_FAILURE_BUDGET`](limits::MAX_KMS_FAILURE_BUDGET).
    pub failures: u64,
    /// How often a drained entry gets one failure back; a second by default, so a
    /// flood costs at most `failures` calls plus one a second.
    pub refill: Duration,
    /// Most KMS calls (unwraps and public-key fetches) in flight at once; 64 by
    /// default, at most [`MAX_KMS_IN_FLIGHT`](limits::MAX_KMS_IN_FLIGHT).
    pub max_in_flight: usize,
    /// How long a final failure is answered from memory; ten minutes by default.
    pub remember_failures: Duration,
}

impl Default for KmsBudget {
    fn default() -> Self {
        Self {
            failures: 100,
            refill: Duration::from_secs(1),
            max_in_flight: 64,
            remember_failures: Duration::from_secs(600),
        }
    }
}

impl KmsBudget {
    /// Checks every setting against [`limits`].
    pub(crate) fn check(&self) -> Result<(), OutOfRange> {
        limits::count("KMS failure budget", self.failures, limits::MAX_KMS_FAILURE_BUDGET)?;
        limits::duration("KMS failure refill", self.refill, limits::MAX_KMS_FAILURE_REFILL)?;
        limits::count("KMS calls in flight", self.max_in_flight as u64, limits::MAX_KMS_IN_FLIGHT as u64)?;
        limits::duration("KMS failure memory", self.remember_failures, limits::MAX_CACHE_TTL)
    }
}

/// What an opener's KMS calls came to, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KmsStats {
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls the KMS refused for good (an unknown, altered or foreign wrapped key; a
    /// missing, disabled or forbidden key or version).
    pub refused: u64,
    /// Calls that failed transiently (unreachable, timed out, rate limited).
    pub failed: u64,
    /// Misses answered from a remembered final failure, with no call.
    pub remembered: u64,
    /// Misses refused because their trust entry's budget was drained, with no call.
    pub over_budget: u64,
}

/// Final failures remembered at most: each is a key name and a wrapped key, a few
/// hundred bytes, so this bounds the memory near 3 MB.
const REMEMBERED_FAILURES: u64 = 10_000;

/// Spends an opener's KMS calls within its [`KmsBudget`].
pub(crate) struct Spender {
    settings: KmsBudget,
    buckets: Mutex<HashMap<String, Bucket>>,
    remembered: Cache<String, KmsError>,
    in_flight: Semaphore,
    /// Told whenever a call ends, for those waiting on [`Spender::reserve`].
    ended: Notify,
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    remembered_hits: AtomicU64,
    over_budget: AtomicU64,
}

/// One trust entry's failures left, as of `at`, and how many of them calls in flight
/// have reserved.
struct Bucket {
    tokens: u64,
    pending: u64,
    at: Instant,
    /// Whether the drain was logged.
    warned: bool,
}

impl Spender {
    pub(crate) fn new(settings: KmsBudget) -> Self {
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
            remembered: Cache::builder()
                .max_capacity(REMEMBERED_FAILURES)
                .time_to_live(settings.remember_failures)
                .build(),
            in_flight: Semaphore::new(settings.max_in_flight),
            ended: Notify::new(),
            ok: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            remembered_hits: AtomicU64::new(0),
            over_budget: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> KmsStats {
        KmsStats {
            ok: self.ok.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            remembered: self.remembered_hits.load(Ordering::Relaxed),
            over_budget: self.over_budget.load(Ordering::Relaxed),
        }
    }

    /// Runs `call`, which asks the KMS `question` on behalf of trust entry `entry`,
    /// unless the answer is remembered as a final failure or the entry's budget is
    /// drained; at most `max_in_flight` at once.
    pub(crate) async fn spend<T>(
        &self,
        entry: &str,
        question: String,
        call: impl Future<Output = Result<T, KmsError>>,
    ) -> Result<T, OpenError> {
        if let Some(error) = self.remembered.get(&question) {
            self.remembered_hits.fetch_add(1, Ordering::Relaxed);
            return Err(error.into());
        }
        let Some(mut reservation) = self.reserve(entry).await else {
            self.over_budget.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::KmsBudgetExhausted(entry.to_owned()).into());
        };
        let outcome = {
            // Never closed, so acquiring only waits.
            let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
            call.await
        };
        match &outcome {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) if error.is_transient() => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.remembered.insert(question, error.clone());
                reservation.failed = true;
            }
        }
        drop(reservation);
        outcome.map_err(OpenError::from)
    }

    /// Reserves one of `entry`'s failures for a call about to be made: `None` if it has
    /// none left. While every failure left is reserved by calls in flight, waits for one
    /// of them to end rather than refusing: a burst of genuine new keys (each call
    /// gives its reservation back) is never refused, only an entry whose failures are
    /// truly spent.
    async fn reserve<'a>(&'a self, entry: &str) -> Option<Reservation<'a>> {
        loop {
            // Made before looking, so that a call ending in between still wakes this one.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            {
                let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let bucket = buckets.entry(entry.to_owned()).or_insert_with(|| Bucket {
                    tokens: self.settings.failures,
                    pending: 0,
                    at: Instant::now(),
                    warned: false,
                });
                self.refill(bucket);
                if bucket.tokens == 0 {
                    // Once per drain, not once per message of a flood.
                    if !bucket.warned {
                        bucket.warned = true;
                        tracing::warn!(
                            trust_entry = %entry,
                            refused_calls = self.settings.failures,
                            "the KMS refused this many calls for this trust entry's messages: its data keys not yet \
                             cached are dead-lettered without asking (kms_budget_exhausted) until the refusals stop; \
                             someone may be publishing junk under its keys"
                        );
                    }
                    return None;
                }
                bucket.warned = false;
                if bucket.pending < bucket.tokens {
                    bucket.pending += 1;
                    return Some(Reservation { spender: self, entry: entry.to_owned(), failed: false });
                }
            }
            ended.await;
        }
    }

    /// Adds the failures `bucket` earned back since it was last looked at.
    fn refill(&self, bucket: &mut Bucket) {
        let now = Instant::now();
        let refill = self.settings.refill.as_nanos();
        let earned = now.saturating_duration_since(bucket.at).as_nanos() / refill;
        if earned > 0 {
            bucket.tokens =
                (bucket.tokens.saturating_add(earned.min(u128::from(u64::MAX)) as u64)).min(self.settings.failures);
            // Keep the part of a refill period already under way.
            let spent = Duration::from_nanos((earned * refill).min(u128::from(u64::MAX)) as u64);
            bucket.at = if bucket.tokens == self.settings.failures { now } else { bucket.at + spent };
        }
    }
}

/// A failure reserved for one KMS call: spent if the call was refused for good, given
/// back otherwise, also when the call is dropped half way.
struct Reservation<'a> {
    spender: &'a Spender,
    entry: String,
    failed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut buckets = self.spender.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(&self.entry) {
            bucket.pending -= 1;
            if self.failed {
                bucket.tokens = bucket.tokens.saturating_sub(1);
            }
        }
        drop(buckets);
        self.spender.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spender(failures: u64, refill: Duration) -> Spender {
        Spender::new(KmsBudget { failures, refill, ..KmsBudget::default() })
    }

    async fn junk(spender: &Spender, entry: &str, question: &str) -> Result<(), OpenError> {
        spender.spend(entry, question.to_owned(), async { Err::<(), _>(KmsError::UnwrapRejected("k".into())) }).await
    }

    #[tokio::test]
    async fn final_failures_drain_only_their_own_entry_and_are_then_refused_without_a_call() {
        // Property: after `failures` final failures under one entry, its next miss is
        // refused without calling; another entry still calls.
        let spender = spender(3, Duration::from_secs(3600));
        for n in 0..3 {
            let error = junk(&spender, "a", &format!("q{n}")).await.unwrap_err();
            assert_eq!(error.reason(), "unwrap_rejected");
        }
        let called = std::sync::atomic::AtomicBool::new(false);
        let error = spender
            .spend("a", "q9".into(), async {
                called.store(true, Ordering::Relaxed);
                Ok::<(), KmsError>(())
            })
            .await
            .unwrap_err();
        assert_eq!(error.reason(), "kms_budget_exhausted");
        assert!(!called.load(Ordering::Relaxed));
        assert!(spender.spend("b", "r0".into(), async { Ok::<_, KmsError>(7) }).await.is_ok());
        let stats = spender.stats();
        assert_eq!((stats.ok, stats.refused, stats.over_budget), (1, 3, 1));
    }

    #[tokio::test]
    async fn successes_and_transient_failures_cost_the_budget_nothing() {
        // Property: any number of successful or transiently failing calls leave the
        // budget whole.
        let spender = spender(2, Duration::from_secs(3600));
        for n in 0..1000 {
            let question = format!("q{n}");
            if n % 2 == 0 {
                spender.spend("a", question, async { Ok::<_, KmsError>(()) }).await.unwrap();
            } else {
                let error = spender
                    .spend("a", question, async { Err::<(), _>(KmsError::Unavailable("down".into())) })
                    .await
                    .unwrap_err();
                assert!(error.is_transient());
            }
        }
        assert_eq!(junk(&spender, "a", "x").await.unwrap_err().reason(), "unwrap_rejected");
        assert_eq!(junk(&spender, "a", "y").await.unwrap_err().reason(), "unwrap_rejected");
        assert_eq!(junk(&spender, "a", "z").await.unwrap_err().reason(), "kms_budget_exhausted");
    }

    #[tokio::test]
    async fn a_remembered_failure_is_answered_without_a_call_and_without_cost() {
        // Property: asking again what the KMS refused gives its error, calls nothing and
        // takes no token.
        let spender = spender(1, Duration::from_secs(3600));
        assert_eq!(junk(&spender, "a", "q").await.unwrap_err().reason(), "unwrap_rejected");
        for _ in 0..10 {
            let error = spender.spend("a", "q".into(), async { Ok::<(), KmsError>(()) }).await.unwrap_err();
            assert_eq!(error.reason(), "unwrap_rejected");
        }
        let stats = spender.stats();
        assert_eq!((stats.refused, stats.remembered, stats.over_budget), (1, 10, 0));
    }

    #[tokio::test]
    async fn a_drained_entry_gets_a_failure_back_each_refill() {
        // Property: a drained entry may call once more after one refill period, not
        // before.
        let spender = spender(1, Duration::from_millis(200));
        junk(&spender, "a", "q0").await.unwrap_err();
        assert_eq!(junk(&spender, "a", "q1").await.unwrap_err().reason(), "kms_budget_exhausted");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(junk(&spender, "a", "q2").await.unwrap_err().reason(), "unwrap_rejected");
        assert_eq!(junk(&spender, "a", "q3").await.unwrap_err().reason(), "kms_budget_exhausted");
    }

    #[tokio::test]
    async fn a_burst_of_genuine_calls_larger_than_the_budget_waits_and_is_never_refused() {
        // Property: 50 succeeding calls at once under a budget of 3 all succeed (the
        // later ones wait for reservations to come back).
        let spender = spender(3, Duration::from_secs(3600));
        let calls = (0..50).map(|n| {
            spender.spend("a", format!("q{n}"), async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, KmsError>(())
            })
        });
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().filter(|r| r.is_err()).count());
    }

    #[tokio::test]
    async fn junk_at_once_makes_exactly_the_budgets_calls() {
        // Property: 40 junk calls at once under a budget of 3 make 3 calls; the other
        // 37 are refused without one.
        let spender = spender(3, Duration::from_secs(3600));
        let made = AtomicU64::new(0);
        let calls = (0..40).map(|n| {
            spender.spend("a", format!("q{n}"), async {
                made.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                Err::<(), _>(KmsError::UnwrapRejected("k".into()))
            })
        });
        let results = futures::future::join_all(calls).await;
        assert_eq!(made.load(Ordering::SeqCst), 3);
        let spared = results.iter().filter(|r| r.as_ref().unwrap_err().reason() == "kms_budget_exhausted").count();
        assert_eq!(spared, 37);
    }

    #[tokio::test]
    async fn no_more_than_max_in_flight_calls_run_at_once() {
        // Property: with many misses at once, the number of calls running never
        // exceeds the cap, and all complete.
        let spender = Spender::new(KmsBudget { max_in_flight: 3, ..KmsBudget::default() });
        let running = AtomicU64::new(0);
        let most = AtomicU64::new(0);
        let calls = (0..40).map(|n| {
            spender.spend("a", format!("q{n}"), async {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, KmsError>(())
            })
        });
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }
}
