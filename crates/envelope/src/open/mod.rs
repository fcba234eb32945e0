//! The consumer side: authenticate and open messages, unwrapping each data key once.

mod envelope;
mod keys;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use envelope::{AttestProof, Envelope, Proof};
use keys::{KeyCache, Striped};
use moka::future::Cache;

use crate::attest::{self, Attestation, TrustedPublicKey, TrustedSigners, Verifier};
use crate::budget::{KmsBudget, KmsStats, Spender};
use crate::clock::{Clock, SystemClock};
use crate::crypto::{EncryptionKey, OpenFailure, SigningKey};
use crate::error::{Forged, Malformed, OpenError, Refused};
use crate::fingerprint::{self, FINGERPRINT_LEN, FingerprintKey};
use crate::format::{self, Attributes, Mode};
use crate::key_name::{KeyName, KeyVersionName};
use crate::kms::{KeySign, KeyWrap, Kms};
use crate::limits::{self, OutOfRange};
use crate::trust::TrustedKeys;

/// How long unwrapped data keys are kept, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Time to live of an entry from when it was unwrapped; 200 s by default, as the
    /// article's `ExpiringDict(max_len=100, max_age_seconds=200)`; at most
    /// [`MAX_CACHE_TTL`](limits::MAX_CACHE_TTL).
    pub ttl: Duration,
    /// Most data keys held per mode; 100,000 by default. The article's 100 was a proof
    /// of concept's number: a consumer that reads several streams sees keys out of
    /// order, and producers that rotate every few messages bring thousands of keys a
    /// second, so a small cache evicted keys still in use and unwrapped them again. An
    /// entry is a few hundred bytes, so the default bounds the cache near 50 MB. At most
    /// [`MAX_CACHE_CAPACITY`](limits::MAX_CACHE_CAPACITY).
    pub capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(200), capacity: 100_000 }
    }
}

/// How far ahead of an opener's clock a seal time may be when a maximum message age is
/// set; beyond it the message is refused ([`Refused::SealedInFuture`](crate::Refused::SealedInFuture)).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A message that opened: authenticated and, in encrypt mode, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// How the message was protected.
    pub mode: Mode,
    /// The KMS key its data key was wrapped under, or (attest mode) whose version signed;
    /// `None` for a message a service account signed.
    pub kms_key: Option<KeyName>,
    /// When the producer sealed it (authenticated).
    pub sealed_at: SystemTime,
    /// The message's identity (`docs/FORMAT.md`, "Fingerprint"): SHA-256 over the
    /// tenant id, the canonical header (which names the sealer's key) and what only the
    /// sealer could have made. The same for every copy and every valid encoding of one
    /// sealed message (a redelivery, a replay, a malleated attest signature), and
    /// different for any two messages sealed, whoever sealed them. What deduplication
    /// keys on.
    pub fingerprint: [u8; FINGERPRINT_LEN],
    /// In attest mode, who the message was proven to come from.
    pub attestation: Option<Attestation>,
    /// The producer's data.
    pub data: Bytes,
    /// The producer's own attributes, restored; no envelope attribute is left.
    pub attributes: Attributes,
}

/// Configures an [`Opener`]; made by [`Opener::builder`].
pub struct OpenerBuilder {
    tenant_id: String,
    trusted: TrustedKeys,
    unwrapper: Option<Arc<dyn KeyWrap>>,
    public_keys: Option<Arc<dyn KeySign>>,
    modes: Vec<Mode>,
    cache: CacheSettings,
    budget: KmsBudget,
    max_age: Option<Duration>,
    max_certificate_lifetime: Duration,
    clock: Arc<dyn Clock>,
    pinned: Vec<TrustedPublicKey>,
    signers: TrustedSigners,
}

/// Why an [`OpenerBuilder`] cannot make an opener.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The opener would accept encrypt or sign messages with nothing to unwrap their
    /// data keys: give it a [`KeyWrap`] ([`OpenerBuilder::kms`] or
    /// [`OpenerBuilder::unwrap_with`]), or accept only attest mode.
    #[error("{0} messages need a KMS to unwrap their data keys (OpenerBuilder::kms or unwrap_with)")]
    NoUnwrapper(Mode),
    /// Neither a KMS key nor a service account is trusted: every message would be
    /// refused.
    #[error("nothing is trusted: name trusted KMS keys or service accounts")]
    NothingTrusted,
    /// A duration or size outside its range ([`limits`](crate::limits)).
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
}

impl OpenerBuilder {
    /// Unwraps data keys and fetches attest public keys through `kms`: a backend that
    /// does both, as Cloud KMS and the local keyring do.
    pub fn kms(self, kms: Arc<dyn Kms>) -> Self {
        self.unwrap_with(kms.clone()).public_keys_from(kms)
    }

    /// Unwraps the data keys of encrypt and sign messages through `kms`.
    pub fn unwrap_with(mut self, kms: Arc<dyn KeyWrap>) -> Self {
        self.unwrapper = Some(kms);
        self
    }

    /// Fetches each attest key version's public key from `kms` (once per version),
    /// unless keys are [pinned](Self::pinned_public_keys). Without either, attest
    /// messages that name a KMS key version are refused (`untrusted_key`).
    pub fn public_keys_from(mut self, kms: Arc<dyn KeySign>) -> Self {
        self.public_keys = Some(kms);
        self
    }

    /// Only messages in these modes open; all three by default.
    pub fn accept(mut self, modes: &[Mode]) -> Self {
        self.modes = modes.to_vec();
        self
    }

    /// Replaces the default [`CacheSettings`].
    pub fn cache(mut self, cache: CacheSettings) -> Self {
        self.cache = cache;
        self
    }

    /// Replaces the default [`KmsBudget`]: what data keys and key versions this opener
    /// has not seen may cost its KMS.
    pub fn kms_budget(mut self, budget: KmsBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Refuses messages sealed longer ago than `max_age` (`too_old`), or more than
    /// [`MAX_CLOCK_SKEW`] in the future. No limit by default; at most
    /// [`MAX_MESSAGE_AGE`](limits::MAX_MESSAGE_AGE).
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Refuses attest session certificates valid for longer than `lifetime`
    /// (`certificate_lifetime_too_long`), whatever rotation age their producer chose;
    /// [`DEFAULT_MAX_CERTIFICATE_LIFETIME`](limits::DEFAULT_MAX_CERTIFICATE_LIFETIME)
    /// by default, at most [`MAX_CERTIFICATE_LIFETIME`](limits::MAX_CERTIFICATE_LIFETIME).
    pub fn max_certificate_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_certificate_lifetime = lifetime;
        self
    }

    /// Verifies attest certificates (and KMS-signed messages) only against these public
    /// keys, each for its own key version, never asking the KMS for one. By default
    /// each key version's public key is fetched once.
    pub fn pinned_public_keys(mut self, keys: Vec<TrustedPublicKey>) -> Self {
        self.pinned = keys;
        self
    }

    /// Accepts attest messages signed by these service accounts; none by default.
    pub fn trusted_signers(mut self, signers: TrustedSigners) -> Self {
        self.signers = signers;
        self
    }

    /// Replaces the system clock that message ages are measured by, for tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the opener, refusing a configuration that could open nothing it accepts,
    /// or a duration or size outside its range ([`limits`]).
    pub fn build(self) -> Result<Opener, BuildError> {
        limits::duration("cache ttl", self.cache.ttl, limits::MAX_CACHE_TTL)?;
        limits::count("cache capacity", self.cache.capacity, limits::MAX_CACHE_CAPACITY)?;
        self.budget.check()?;
        if let Some(max_age) = self.max_age {
            limits::duration("maximum message age", max_age, limits::MAX_MESSAGE_AGE)?;
        }
        limits::duration(
            "maximum certificate lifetime",
            self.max_certificate_lifetime,
            limits::MAX_CERTIFICATE_LIFETIME,
        )?;
        if let Some(mode) = self.modes.iter().find(|mode| **mode != Mode::Attest)
            && self.unwrapper.is_none()
        {
            return Err(BuildError::NoUnwrapper(*mode));
        }
        if self.trusted.is_empty() && self.signers.is_empty() {
            return Err(BuildError::NothingTrusted);
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let spender = Arc::new(Spender::new(self.budget));
        Ok(Opener {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ttl: self.cache.ttl,
            unwrapper: self.unwrapper,
            tenant_id: self.tenant_id,
            trusted: self.trusted,
            modes: self.modes,
            max_age: self.max_age,
            clock: self.clock.clone(),
            attest: Verifier::new(
                self.public_keys,
                self.pinned,
                self.signers,
                self.cache.capacity,
                self.max_certificate_lifetime,
                self.clock,
                spender.clone(),
            ),
            encryption_keys: new_cache(self.cache),
            signing_keys: new_cache(self.cache),
            hits: Striped::default(),
            misses: AtomicU64::new(0),
            spender,
            revocations: keys::Revocations::new(),
        })
    }
}

fn new_cache<V: Clone + Send + Sync + 'static>(settings: CacheSettings) -> Cache<String, V> {
    Cache::builder().max_capacity(settings.capacity).time_to_live(settings.ttl).build()
}

/// Opens messages sealed by any [`Sealer`](crate::Sealer) of the tenant, under the
/// keys it trusts.
///
/// Unwrapped data keys are cached under their wrapped-key attribute text. Everything
/// that follows from the `kms_key` and wrapped-key texts alone (the key name's shape,
/// trust, base64, the unwrap itself) is checked once, when an entry is made; a hit skips
/// it. Concurrent opens that miss on the same wrapped key share one KMS call (moka's
/// `try_get_with` coalesces them), so a burst of messages under a new data key costs one
/// unwrap, not one per message as in the original.
pub struct Opener {
    /// Tells this opener's entries in [`RECENT`] from other openers'.
    id: u64,
    /// How long a data key is used after its unwrap (`CacheSettings::ttl`).
    ttl: Duration,
    unwrapper: Option<Arc<dyn KeyWrap>>,
    tenant_id: String,
    trusted: TrustedKeys,
    modes: Vec<Mode>,
    max_age: Option<Duration>,
    clock: Arc<dyn Clock>,
    attest: Verifier,
    encryption_keys: KeyCache<EncryptionKey>,
    signing_keys: KeyCache<SigningKey>,
    /// Striped: every open that finds its key adds to it, on every thread at once.
    hits: Striped,
    misses: AtomicU64,
    /// Shared with `attest`: one budget and one cap on calls in flight for unwraps and
    /// public-key fetches alike.
    spender: Arc<Spender>,
    /// Revocations: see [`KeyWrap::generation`].
    revocations: keys::Revocations,
}

/// How often opens found their key in the cache: the data key in encrypt and sign
/// mode, the verified session certificate in attest mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Opens that found their key cached.
    pub hits: u64,
    /// Opens that had to unwrap or verify a certificate (or wait for another open's
    /// unwrap of the same key).
    pub misses: u64,
}

impl Opener {
    /// Cache hits and misses so far.
    pub fn cache_stats(&self) -> CacheStats {
        let certificates = (&self.attest.certificate_hits, &self.attest.certificate_misses);
        CacheStats {
            hits: self.hits.sum() + certificates.0.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed) + certificates.1.load(Ordering::Relaxed),
        }
    }

    /// What this opener's KMS calls came to: by outcome, and the misses answered
    /// without one.
    pub fn kms_stats(&self) -> KmsStats {
        self.spender.stats()
    }

    /// Starts configuring an opener for `tenant_id` (bound into every unwrap and named
    /// by every attest certificate; the original's was `tenantKey`) that opens messages
    /// under the `trusted` KMS keys only.
    ///
    /// Both are required: an opener that quietly trusted every key, or used a default
    /// tenant, would accept what its operator never meant to.
    pub fn builder(tenant_id: impl Into<String>, trusted: TrustedKeys) -> OpenerBuilder {
        OpenerBuilder {
            tenant_id: tenant_id.into(),
            trusted,
            unwrapper: None,
            public_keys: None,
            modes: vec![Mode::Encrypt, Mode::Sign, Mode::Attest],
            cache: CacheSettings::default(),
            budget: KmsBudget::default(),
            max_age: None,
            max_certificate_lifetime: limits::DEFAULT_MAX_CERTIFICATE_LIFETIME,
            clock: Arc::new(SystemClock),
            pinned: Vec::new(),
            signers: TrustedSigners::default(),
        }
    }

    /// Authenticates and opens one message.
    ///
    /// Every check that needs no key runs before the KMS is asked for one, so malformed
    /// messages cost no KMS call. The age is checked after authentication, since only
    /// then is the seal time known to be the producer's.
    pub async fn open(&self, data: &Bytes, attributes: &Attributes) -> Result<Opened, OpenError> {
        let envelope = Envelope::parse(attributes)?;
        let mode = envelope.flavour.mode();
        if !self.modes.contains(&mode) {
            return Err(Refused::ModeNotAccepted(mode).into());
        }
        let opened = self.authenticate(&envelope, data, attributes).await?;
        if let Some(max_age) = self.max_age {
            check_age(opened.sealed_at, self.clock.wall(), max_age)?;
        }
        Ok(opened)
    }

    async fn authenticate(
        &self,
        envelope: &Envelope<'_>,
        data: &Bytes,
        attributes: &Attributes,
    ) -> Result<Opened, OpenError> {
        let sealed_at = UNIX_EPOCH + Duration::from_micros(envelope.sealed_at);
        match &envelope.proof {
            Proof::Aead => {
                if data.len() < format::MIN_ENCRYPTED_LEN {
                    return Err(Malformed::Truncated(data.len()).into());
                }
                let (cached, kms_key) =
                    self.data_key(&self.encryption_keys, envelope, |secret, _| EncryptionKey::derive(secret)).await?;
                let header = format::encrypt_header(&cached.prefix, envelope.sealed_at);
                let plaintext = cached.key.open(&header, data).map_err(|failure| match failure {
                    OpenFailure::Truncated => OpenError::from(Malformed::Truncated(data.len())),
                    OpenFailure::Forged => OpenError::from(Forged::Tampered),
                })?;
                let (restored, offset) = format::decode_sealed_plaintext(&plaintext)?;
                let tag = &data[data.len() - format::TAG_LEN..];
                Ok(Opened {
                    mode: Mode::Encrypt,
                    kms_key: Some(kms_key),
                    sealed_at,
                    fingerprint: cached.fingerprint.finish(envelope.sealed_at, &[], data.len(), tag),
                    attestation: None,
                    data: Bytes::from(plaintext).slice(offset..),
                    attributes: restored,
                })
            }
            Proof::Hmac(signature) => {
                let (cached, kms_key) = self.data_key(&self.signing_keys, envelope, SigningKey::new).await?;
                cached
                    .key
                    .verify(envelope.sealed_at, &envelope.producer, data, signature)
                    .map_err(|_| Forged::Tampered)?;
                Ok(Opened {
                    mode: Mode::Sign,
                    kms_key: Some(kms_key),
                    sealed_at,
                    fingerprint: cached.fingerprint.finish(
                        envelope.sealed_at,
                        &envelope.producer,
                        data.len(),
                        signature,
                    ),
                    data: data.clone(),
                    attributes: producer_attributes(&envelope.producer),
                    attestation: None,
                })
            }
            Proof::Attest(proof) => {
                let message = attest::Signed {
                    kms_key: envelope.kms_key,
                    certificate: envelope.marker_text,
                    sealed_at: envelope.sealed_at,
                    attributes,
                    data,
                };
                // The signature is left out of the fingerprint: ECDSA's are randomised
                // and malleable, so one message has many valid ones.
                let fingerprint = |tenant_id: &str, name: &str, key: &str| {
                    FingerprintKey::new(tenant_id, &format::header_prefix(envelope.flavour, name, key)).finish(
                        envelope.sealed_at,
                        &envelope.producer,
                        data.len(),
                        &fingerprint::data_digest(data),
                    )
                };
                let (attestation, fingerprint) = match proof {
                    AttestProof::Session { certificate_signature, signature } => {
                        let attestation = Box::pin(self.attest.verify_session(
                            &message,
                            certificate_signature,
                            signature,
                            &self.tenant_id,
                            &self.trusted,
                        ))
                        .await?;
                        let Attestation::Session { tenant_id, .. } = &attestation else {
                            unreachable!("a session certificate attests a session")
                        };
                        let fingerprint = fingerprint(tenant_id, envelope.kms_key, envelope.marker_text);
                        (attestation, fingerprint)
                    }
                    AttestProof::Kms(signature) => {
                        let attestation = Box::pin(self.attest.verify_kms_signed(
                            &message,
                            signature,
                            &self.tenant_id,
                            &self.trusted,
                        ))
                        .await?;
                        // The tenant id the signed header bound: the key's trust entry's.
                        let key = attestation.kms_key().map(KeyVersionName::key);
                        let tenant_id =
                            key.and_then(|key| self.trusted.tenant_of(key, &self.tenant_id)).unwrap_or(&self.tenant_id);
                        let fingerprint = fingerprint(tenant_id, envelope.kms_key, tenant_id);
                        (attestation, fingerprint)
                    }
                    AttestProof::ServiceAccount { named, signature } => {
                        let attestation =
                            Box::pin(self.attest.verify_service_account(named, &message, signature)).await?;
                        (attestation, fingerprint(&self.tenant_id, named.signer, named.key_id))
                    }
                };
                Ok(Opened {
                    mode: Mode::Attest,
                    kms_key: attestation.kms_key().map(|version| version.key().clone()),
                    sealed_at,
                    fingerprint,
                    data: data.clone(),
                    attributes: producer_attributes(&envelope.producer),
                    attestation: Some(attestation),
                })
            }
        }
    }
}

/// The producer's attributes of a visible message, as a map of their own.
fn producer_attributes(producer: &[(&str, &str)]) -> Attributes {
    let mut restored = Attributes::with_capacity(producer.len());
    restored.extend(producer.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    restored
}

/// Refuses a message sealed more than `max_age` before `now`, or more than
/// [`MAX_CLOCK_SKEW`] after it.
fn check_age(sealed_at: SystemTime, now: SystemTime, max_age: Duration) -> Result<(), OpenError> {
    match now.duration_since(sealed_at) {
        Ok(age) if age > max_age => {
            Err(Refused::TooOld { age_secs: age.as_secs(), max_secs: max_age.as_secs() }.into())
        }
        Ok(_) => Ok(()),
        Err(ahead) if ahead.duration() > MAX_CLOCK_SKEW => {
            Err(Refused::SealedInFuture { ahead_secs: ahead.duration().as_secs() }.into())
        }
        Err(_) => Ok(()),
    }
}
