//! Finding a message's data key: this thread's recent keys, then the shared cache,
//! then the KMS (checked first, and once per key however many opens wait for it).

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use moka::future::Cache;

use super::Opener;
use super::envelope::Envelope;
use crate::error::{Malformed, OpenError, Refused};
use crate::fingerprint::FingerprintKey;
use crate::format;
use crate::key_name::KeyName;
use crate::kms::KeyWrap;
use crate::secret::SecretKey;

/// A counter that threads add to without sharing a cache line: each adds to its own
/// stripe (threads take stripes in turn), and reading sums them. One shared atomic that
/// every open added to moved its cache line between cores with every message.
#[derive(Default)]
pub(super) struct Striped([crossbeam_utils::CachePadded<AtomicU64>; STRIPES]);

/// Stripes of a [`Striped`] counter: threads beyond this many share stripes, which
/// stays correct and is merely slower.
const STRIPES: usize = 16;

impl Striped {
    pub(super) fn add(&self, n: u64) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        }
        STRIPE.with(|&stripe| self.0[stripe].fetch_add(n, Ordering::Relaxed));
    }

    pub(super) fn sum(&self) -> u64 {
        self.0.iter().map(|stripe| stripe.load(Ordering::Relaxed)).sum()
    }
}

pub(super) type KeyCache<T> = Cache<String, Arc<CachedKey<T>>>;

/// A data key ready for use, with what was learnt while unwrapping it.
pub(super) struct CachedKey<T> {
    pub(super) key: T,
    pub(super) kms_key: KeyName,
    /// The canonical header's prefix: encrypt mode's associated data starts with it
    /// (sign mode's HMAC state has absorbed it too).
    pub(super) prefix: Vec<u8>,
    /// The fingerprint's hash with the tenant id and the prefix absorbed.
    pub(super) fingerprint: FingerprintKey,
    /// When the KMS unwrapped it: the cache's time to live counts from here.
    pub(super) unwrapped_at: Instant,
    /// The opener's [`Revocations::epoch`] when it was unwrapped: a key from an earlier
    /// epoch is unwrapped again before use.
    pub(super) epoch: u64,
}

/// What an opener knows of its KMS's revocations ([`KeyWrap::generation`]): the
/// generation it last saw, and an epoch that moves each time it changed, retiring every
/// data key unwrapped before.
pub(super) struct Revocations {
    started: Instant,
    /// When to look at the generation next, in nanoseconds from `started`.
    next_look: AtomicU64,
    generation: AtomicU64,
    epoch: AtomicU64,
}

/// How often an opener asks its KMS whether keys changed.
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl Revocations {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            next_look: AtomicU64::new(0),
            generation: AtomicU64::new(u64::MAX),
            epoch: AtomicU64::new(0),
        }
    }

    /// The current epoch, after looking at `unwrapper`'s generation if a look is due
    /// (one thread looks; the others go on).
    #[inline]
    fn epoch(&self, unwrapper: &dyn KeyWrap, now: Instant) -> u64 {
        let at = now.saturating_duration_since(self.started).as_nanos() as u64;
        let next = self.next_look.load(Ordering::Relaxed);
        if at >= next {
            self.look(unwrapper, next, at);
        }
        self.epoch.load(Ordering::Acquire)
    }

    /// Asks `unwrapper` for its generation, unless another thread just did; out of
    /// line, so that the opening path stays small.
    #[cold]
    #[inline(never)]
    fn look(&self, unwrapper: &dyn KeyWrap, next: u64, at: u64) {
        let then = at + LOOK_EVERY.as_nanos() as u64;
        if self.next_look.compare_exchange(next, then, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let generation = unwrapper.generation();
        let before = self.generation.swap(generation, Ordering::AcqRel);
        if before != u64::MAX && before != generation {
            tracing::info!("the KMS's keys changed: data keys unwrapped before are unwrapped again before use");
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The data keys each thread last opened messages with, and under which wrapped-key
/// texts: consecutive messages under one key (nearly all of them) find it here without
/// the shared cache.
///
/// Every lookup in the cache moves shared state (the entry's reference count and
/// access time, the cache's log of reads), so two threads opening messages under one
/// key passed the same cache lines back and forth for each message. These entries are
/// the thread's own. They hold keys weakly: when the cache lets a key go (evicted,
/// expired, its opener dropped) it is zeroized as before, and its entry finds nothing.
///
/// A few keys, not one: messages from several streams arrive interleaved, and at the
/// article's rotation (a new key every 5 messages) one entry went back and forth between
/// their keys, sending nearly every message to the shared cache.
struct Recent {
    entries: [Option<RecentKey>; RECENT_KEYS],
    /// Where the newest entry is; the next goes after it, over the oldest.
    newest: usize,
}

/// Data keys each thread remembers.
const RECENT_KEYS: usize = 8;

/// One of a thread's [`Recent`] keys.
struct RecentKey {
    opener: u64,
    marker: String,
    expires: Instant,
    /// The key's [`CachedKey::epoch`].
    epoch: u64,
    key: Weak<dyn Any + Send + Sync>,
    /// The key's name, in this thread's own allocation: every open clones it into
    /// `Opened::kms_key`.
    kms_key: KeyName,
}

impl Recent {
    const fn new() -> Self {
        Self { entries: [const { None }; RECENT_KEYS], newest: 0 }
    }

    /// The index of `opener`'s entry for `marker`, looking at the newest first: a run
    /// of messages under one key finds it at the first look.
    fn position(&self, opener: u64, marker: &str) -> Option<usize> {
        (0..RECENT_KEYS)
            .map(|back| (self.newest + RECENT_KEYS - back) % RECENT_KEYS)
            .find(|&at| self.entries[at].as_ref().is_some_and(|entry| entry.opener == opener && entry.marker == marker))
    }
}

thread_local! {
    static RECENT: RefCell<Recent> = const { RefCell::new(Recent::new()) };
}

impl Opener {
    /// The data key `envelope` names: from the cache, or checked and unwrapped once;
    /// with its KMS key's name, this thread's own copy when it has one (see
    /// [`KeyName::unshared`]).
    pub(super) async fn data_key<T>(
        &self,
        cache: &KeyCache<T>,
        envelope: &Envelope<'_>,
        prepare: impl FnOnce(&SecretKey, &[u8]) -> T,
    ) -> Result<(Arc<CachedKey<T>>, KeyName), OpenError>
    where
        T: Send + Sync + 'static,
    {
        let now = Instant::now();
        let epoch = match &self.unwrapper {
            Some(unwrapper) => self.revocations.epoch(unwrapper.as_ref(), now),
            None => 0,
        };
        let hit = match self.recent(envelope.marker_text, now, epoch) {
            Some(recent) => Some(recent),
            None => match cache.get(envelope.marker_text).await {
                Some(cached) if cached.epoch == epoch => {
                    let kms_key = self.remember(envelope.marker_text, &cached);
                    Some((cached, kms_key))
                }
                Some(_) => {
                    // Unwrapped before the KMS's keys changed: ask again. Boxed, as the
                    // misses below: moka's future is large, and would make every open's so.
                    Box::pin(cache.invalidate(envelope.marker_text)).await;
                    None
                }
                None => None,
            },
        };
        if hit.is_some() {
            self.hits.add(1);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        match hit {
            Some((cached, kms_key)) if kms_key.as_str() == envelope.kms_key => Ok((cached, kms_key)),
            // A wrapped key seen before under another key name: only a forger copies one,
            // and the KMS will refuse it. Check it without touching the good entry.
            // The misses are boxed: their futures (moka's insertion, the KMS call) are
            // kilobytes, which would otherwise make every open's future as large, and
            // be copied on every hit for nothing.
            Some(_) => {
                let cached = Box::pin(self.unwrap_checked(envelope, epoch, prepare)).await?;
                let kms_key = cached.kms_key.clone();
                Ok((cached, kms_key))
            }
            None => {
                let cached = Box::pin(
                    cache.try_get_with(envelope.marker_text.to_owned(), self.unwrap_checked(envelope, epoch, prepare)),
                )
                .await
                .map_err(|error: Arc<OpenError>| (*error).clone())?;
                let kms_key = self.remember(envelope.marker_text, &cached);
                Ok((cached, kms_key))
            }
        }
    }

    /// This thread's recent data key of this opener and type under `marker`, if its
    /// time to live has not run out.
    fn recent<T: Send + Sync + 'static>(
        &self,
        marker: &str,
        now: Instant,
        epoch: u64,
    ) -> Option<(Arc<CachedKey<T>>, KeyName)> {
        RECENT.with_borrow(|recent| {
            let entry = recent.entries[recent.position(self.id, marker)?].as_ref()?;
            if now >= entry.expires || entry.epoch != epoch {
                return None;
            }
            let key = entry.key.upgrade()?.downcast::<CachedKey<T>>().ok()?;
            Some((key, entry.kms_key.clone()))
        })
    }

    /// Makes `cached` one of this thread's recent data keys, and gives back the
    /// thread's copy of its key name.
    fn remember<T: Send + Sync + 'static>(&self, marker: &str, cached: &Arc<CachedKey<T>>) -> KeyName {
        let key: Weak<dyn Any + Send + Sync> = Arc::downgrade(cached) as Weak<CachedKey<T>>;
        let expires = cached.unwrapped_at + self.ttl;
        RECENT.with_borrow_mut(|recent| {
            if let Some(at) = recent.position(self.id, marker) {
                let entry = recent.entries[at].as_mut().expect("found");
                entry.expires = expires;
                entry.epoch = cached.epoch;
                entry.key = key;
                if entry.kms_key != cached.kms_key {
                    entry.kms_key = cached.kms_key.unshared();
                }
                return entry.kms_key.clone();
            }
            let kms_key = cached.kms_key.unshared();
            recent.newest = (recent.newest + 1) % RECENT_KEYS;
            recent.entries[recent.newest] = Some(RecentKey {
                opener: self.id,
                marker: marker.to_owned(),
                expires,
                epoch: cached.epoch,
                key,
                kms_key: kms_key.clone(),
            });
            kms_key
        })
    }

    /// Checks what the key name and wrapped key say, then unwraps through the KMS.
    async fn unwrap_checked<T>(
        &self,
        envelope: &Envelope<'_>,
        epoch: u64,
        prepare: impl FnOnce(&SecretKey, &[u8]) -> T,
    ) -> Result<Arc<CachedKey<T>>, OpenError> {
        let kms_key: KeyName = envelope.kms_key.parse().map_err(|error: crate::KeyNameError| {
            Malformed::GarbledAttribute { name: format::KMS_KEY_ATTR, why: error.to_string() }
        })?;
        let Some((entry, tenant_id)) = self.trusted.entry_of(&kms_key, &self.tenant_id) else {
            return Err(Refused::UntrustedKey(kms_key).into());
        };
        let wrapped_attr = envelope.flavour.marker().name();
        let wrapped = format::decode_base64(envelope.marker_text).ok_or(Malformed::BadBase64(wrapped_attr))?;
        if wrapped.is_empty() {
            return Err(Malformed::GarbledAttribute { name: wrapped_attr, why: "empty".into() }.into());
        }
        // `build` refuses an opener that accepts these modes without an unwrapper.
        let unwrapper = self.unwrapper.as_ref().expect("an opener of encrypt or sign messages has an unwrapper");
        // Spent within the budget: what the KMS refused is remembered by key name and
        // wrapped key, so a copy under another trusted name is asked about once too;
        // and by epoch, so a version enabled again is asked again at once, not when the
        // refusal is forgotten (redriven dead letters then open).
        let question = format!("{epoch} {kms_key} {}", envelope.marker_text);
        let secret =
            self.spender.spend(entry, question, unwrapper.unwrap(&kms_key, &wrapped, tenant_id.as_bytes())).await?;
        tracing::debug!(%kms_key, mode = %envelope.flavour.mode(), "unwrapped a data key");
        let prefix = format::header_prefix(envelope.flavour, envelope.kms_key, envelope.marker_text);
        let key = prepare(&secret, &prefix);
        let fingerprint = FingerprintKey::new(tenant_id, &prefix);
        Ok(Arc::new(CachedKey { key, kms_key, prefix, fingerprint, unwrapped_at: Instant::now(), epoch }))
    }
}
