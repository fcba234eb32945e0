//! The consumer side: authenticate and open messages, unwrapping each data key once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::future::Cache;

use crate::DEFAULT_TENANT_ID;
use crate::attest::{self, Attestation, ServiceAccountSigned, TrustedPublicKey, TrustedSigners, Verifier};
use crate::clock::{Clock, SystemClock};
use crate::crypto::{EncryptionKey, OpenFailure, SigningKey};
use crate::error::OpenError;
use crate::format::{self, Attributes, Mode};
use crate::key_name::{KeyName, TrustedKeys};
use crate::kms::Kms;
use crate::secret::SecretKey;

/// How long unwrapped data keys are kept, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Time to live of an entry from when it was unwrapped; 200 s by default, as the
    /// article's `ExpiringDict(max_len=100, max_age_seconds=200)`.
    pub ttl: Duration,
    /// Most data keys held per mode; 100 by default.
    pub capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(200), capacity: 100 }
    }
}

/// How far ahead of an opener's clock a seal time may be when a maximum message age is
/// set; beyond it the message is refused ([`OpenError::SealedInFuture`]).
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
    /// The first 16 bytes of the message's authentication tag: the same for every copy
    /// of one sealed message (a redelivery, or a replay published again by anyone) and,
    /// since each message of a sealer has its own seal time or nonce, different for any
    /// two messages sealed. What deduplication keys on.
    pub fingerprint: [u8; 16],
    /// In attest mode, who the message was proven to come from.
    pub attestation: Option<Attestation>,
    /// The producer's data.
    pub data: Bytes,
    /// The producer's own attributes, restored; no envelope attribute is left.
    pub attributes: Attributes,
}

/// Configures an [`Opener`].
pub struct OpenerBuilder {
    kms: Arc<dyn Kms>,
    tenant_id: String,
    trusted: TrustedKeys,
    modes: Vec<Mode>,
    cache: CacheSettings,
    max_age: Option<Duration>,
    clock: Arc<dyn Clock>,
    pinned: Vec<TrustedPublicKey>,
    signers: TrustedSigners,
}

impl OpenerBuilder {
    /// The tenant id bound into every KMS unwrap; [`DEFAULT_TENANT_ID`] by default.
    pub fn tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = tenant_id.into();
        self
    }

    /// Only messages under these KMS keys open; every key by default.
    pub fn trusted_keys(mut self, trusted: TrustedKeys) -> Self {
        self.trusted = trusted;
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

    /// Refuses messages sealed longer ago than `max_age` ([`OpenError::TooOld`]), or
    /// more than [`MAX_CLOCK_SKEW`] in the future. No limit by default.
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Verifies attest certificates (and KMS-signed messages) only against these public
    /// keys, never asking the KMS for one. By default each key version's public key is
    /// fetched once.
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

    /// Builds the opener.
    pub fn build(self) -> Opener {
        Opener {
            kms: self.kms.clone(),
            tenant_id: self.tenant_id,
            trusted: self.trusted,
            modes: self.modes,
            max_age: self.max_age,
            clock: self.clock,
            attest: Verifier::new(self.kms.clone(), self.pinned, self.signers, self.cache.capacity),
            encryption_keys: new_cache(self.cache),
            signing_keys: new_cache(self.cache),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

fn new_cache<V: Clone + Send + Sync + 'static>(settings: CacheSettings) -> Cache<String, V> {
    Cache::builder().max_capacity(settings.capacity).time_to_live(settings.ttl).build()
}

/// Opens messages sealed by any [`Sealer`](crate::Sealer) of the tenant.
///
/// Unwrapped data keys are cached under their wrapped-key attribute text. Everything
/// that follows from the `kms_key` and wrapped-key texts alone (the key name's shape,
/// trust, base64, the unwrap itself) is checked once, when an entry is made; a hit skips
/// it. Concurrent opens that miss on the same wrapped key share one KMS call (moka's
/// `try_get_with` coalesces them), so a burst of messages under a new data key costs one
/// unwrap, not one per message as in the original.
pub struct Opener {
    kms: Arc<dyn Kms>,
    tenant_id: String,
    trusted: TrustedKeys,
    modes: Vec<Mode>,
    max_age: Option<Duration>,
    clock: Arc<dyn Clock>,
    attest: Verifier,
    encryption_keys: KeyCache<EncryptionKey>,
    signing_keys: KeyCache<SigningKey>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How often opens found their data key in the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Opens that found their data key cached.
    pub hits: u64,
    /// Opens that had to unwrap (or wait for another open's unwrap of the same key).
    pub misses: u64,
}

type KeyCache<T> = Cache<String, Arc<CachedKey<T>>>;

/// A data key ready for use, with what was learnt while unwrapping it.
struct CachedKey<T> {
    key: T,
    kms_key: KeyName,
    /// The canonical header's prefix in encrypt mode; empty in sign mode, where the
    /// signing key has absorbed it.
    prefix: Vec<u8>,
}

impl Opener {
    /// Cache hits and misses so far.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed) }
    }

    /// Starts configuring an opener that unwraps through `kms`.
    pub fn builder(kms: Arc<dyn Kms>) -> OpenerBuilder {
        OpenerBuilder {
            kms,
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            trusted: TrustedKeys::any(),
            modes: vec![Mode::Encrypt, Mode::Sign, Mode::Attest],
            cache: CacheSettings::default(),
            max_age: None,
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
        let mode = envelope.proof.mode();
        if !self.modes.contains(&mode) {
            return Err(OpenError::ModeNotAccepted(mode));
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
                if data.len() < format::ENCRYPT_OVERHEAD + 4 {
                    return Err(OpenError::Truncated(data.len()));
                }
                let cached = self
                    .data_key(&self.encryption_keys, envelope, |secret| {
                        let prefix = format::header_prefix(Mode::Encrypt, envelope.kms_key, envelope.wrapped);
                        (EncryptionKey::derive(secret), prefix)
                    })
                    .await?;
                let header = format::encrypt_header(&cached.prefix, envelope.sealed_at);
                let plaintext = cached.key.open(&header, data).map_err(|failure| match failure {
                    OpenFailure::Truncated => OpenError::Truncated(data.len()),
                    OpenFailure::Forged => OpenError::Tampered,
                })?;
                let (restored, offset) = format::decode_sealed_plaintext(&plaintext)?;
                let tag = &data[data.len() - format::TAG_LEN..];
                Ok(Opened {
                    mode: Mode::Encrypt,
                    kms_key: Some(cached.kms_key.clone()),
                    sealed_at,
                    fingerprint: tag.try_into().expect("a 16-byte tag"),
                    attestation: None,
                    data: Bytes::from(plaintext).slice(offset..),
                    attributes: restored,
                })
            }
            Proof::Hmac(signature) => {
                let cached = self
                    .data_key(&self.signing_keys, envelope, |secret| {
                        let prefix = format::header_prefix(Mode::Sign, envelope.kms_key, envelope.wrapped);
                        (SigningKey::new(secret, &prefix), Vec::new())
                    })
                    .await?;
                cached.key.verify(envelope.sealed_at, attributes, data, signature).map_err(|_| OpenError::Tampered)?;
                Ok(Opened {
                    mode: Mode::Sign,
                    kms_key: Some(cached.kms_key.clone()),
                    sealed_at,
                    fingerprint: signature[..16].try_into().expect("a 32-byte signature"),
                    data: data.clone(),
                    attributes: producer_attributes(attributes),
                    attestation: None,
                })
            }
            Proof::Attest(proof) => {
                let message = attest::Signed {
                    kms_key: envelope.kms_key,
                    certificate: envelope.wrapped,
                    sealed_at: envelope.sealed_at,
                    attributes,
                    data,
                };
                let (attestation, signature) = match proof {
                    AttestProof::Session { certificate_signature, signature } => {
                        let attestation = self
                            .attest
                            .verify_session(&message, certificate_signature, signature, &self.tenant_id, &self.trusted)
                            .await?;
                        (attestation, &signature[..])
                    }
                    AttestProof::Kms(signature) => {
                        (self.attest.verify_kms_signed(&message, signature, &self.trusted).await?, &signature[..])
                    }
                    AttestProof::ServiceAccount { named, signature } => {
                        (self.attest.verify_service_account(named, &message, signature).await?, &signature[..])
                    }
                };
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signature);
                Ok(Opened {
                    mode: Mode::Attest,
                    kms_key: attestation.kms_key().map(|version| version.key().clone()),
                    sealed_at,
                    fingerprint: digest.as_ref()[..16].try_into().expect("a 32-byte digest"),
                    data: data.clone(),
                    attributes: producer_attributes(attributes),
                    attestation: Some(attestation),
                })
            }
        }
    }

    /// The data key `envelope` names: from the cache, or checked and unwrapped once.
    async fn data_key<T>(
        &self,
        cache: &KeyCache<T>,
        envelope: &Envelope<'_>,
        prepare: impl FnOnce(&SecretKey) -> (T, Vec<u8>),
    ) -> Result<Arc<CachedKey<T>>, OpenError>
    where
        T: Send + Sync + 'static,
    {
        let hit = cache.get(envelope.wrapped).await;
        let counter = if hit.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        match hit {
            Some(cached) if cached.kms_key.as_str() == envelope.kms_key => Ok(cached),
            // A wrapped key seen before under another key name: only a forger copies one,
            // and the KMS will refuse it. Check it without touching the good entry.
            Some(_) => self.unwrap_checked(envelope, prepare).await,
            None => cache
                .try_get_with(envelope.wrapped.to_owned(), self.unwrap_checked(envelope, prepare))
                .await
                .map_err(|error: Arc<OpenError>| (*error).clone()),
        }
    }

    /// Checks what the key name and wrapped key say, then unwraps through the KMS.
    async fn unwrap_checked<T>(
        &self,
        envelope: &Envelope<'_>,
        prepare: impl FnOnce(&SecretKey) -> (T, Vec<u8>),
    ) -> Result<Arc<CachedKey<T>>, OpenError> {
        let kms_key: KeyName = envelope.kms_key.parse().map_err(|error: crate::KeyNameError| {
            OpenError::GarbledAttribute { name: format::KMS_KEY_ATTR, why: error.to_string() }
        })?;
        if !self.trusted.allows(&kms_key) {
            return Err(OpenError::UntrustedKey(kms_key.to_string()));
        }
        let wrapped_attr = if envelope.proof.mode() == Mode::Encrypt {
            format::DEK_WRAPPED_ATTR
        } else {
            format::SIGN_KEY_WRAPPED_ATTR
        };
        let wrapped = format::decode_base64(envelope.wrapped).ok_or(OpenError::BadBase64(wrapped_attr))?;
        if wrapped.is_empty() {
            return Err(OpenError::GarbledAttribute { name: wrapped_attr, why: "empty".into() });
        }
        let secret = self.kms.unwrap(&kms_key, &wrapped, self.tenant_id.as_bytes()).await?;
        tracing::debug!(%kms_key, mode = %envelope.proof.mode(), "unwrapped a data key");
        let (key, prefix) = prepare(&secret);
        Ok(Arc::new(CachedKey { key, kms_key, prefix }))
    }
}

/// A visible message's attributes less the envelope's own.
fn producer_attributes(attributes: &Attributes) -> Attributes {
    attributes
        .iter()
        .filter(|(name, _)| !format::is_envelope_attribute(name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Refuses a message sealed more than `max_age` before `now`, or more than
/// [`MAX_CLOCK_SKEW`] after it.
fn check_age(sealed_at: SystemTime, now: SystemTime, max_age: Duration) -> Result<(), OpenError> {
    match now.duration_since(sealed_at) {
        Ok(age) if age > max_age => Err(OpenError::TooOld { age_secs: age.as_secs(), max_secs: max_age.as_secs() }),
        Ok(_) => Ok(()),
        Err(ahead) if ahead.duration() > MAX_CLOCK_SKEW => {
            Err(OpenError::SealedInFuture { ahead_secs: ahead.duration().as_secs() })
        }
        Err(_) => Ok(()),
    }
}

/// The envelope attributes of one message, checked for presence and shape.
struct Envelope<'a> {
    kms_key: &'a str,
    /// The wrapped key (encrypt, sign), the certificate (attest) or empty (strict attest).
    wrapped: &'a str,
    /// Microseconds since the Unix epoch.
    sealed_at: u64,
    proof: Proof<'a>,
}

/// What authenticates the message, decoded; it tells the mode.
enum Proof<'a> {
    /// Encrypt mode: the AEAD tag, inside the payload.
    Aead,
    /// Sign mode: the HMAC tag.
    Hmac([u8; format::SIGNATURE_LEN]),
    /// Attest mode.
    Attest(AttestProof<'a>),
}

/// The signatures of attest mode's three flavours.
enum AttestProof<'a> {
    /// The certificate's signature (base64 text) and the session key's.
    Session { certificate_signature: &'a str, signature: [u8; format::ED25519_SIGNATURE_LEN] },
    /// The KMS key version's own signature of the message.
    Kms(Vec<u8>),
    /// A service account's: who signed, and the RSA signature.
    ServiceAccount { named: ServiceAccountSigned<'a>, signature: Vec<u8> },
}

impl Proof<'_> {
    fn mode(&self) -> Mode {
        match self {
            Proof::Aead => Mode::Encrypt,
            Proof::Hmac(_) => Mode::Sign,
            Proof::Attest(_) => Mode::Attest,
        }
    }
}

/// The longest ASN.1 DER ECDSA P-256 signature.
const MAX_ECDSA_SIGNATURE_LEN: usize = 72;
/// The longest RSA signature accepted (8192-bit keys).
const MAX_RSA_SIGNATURE_LEN: usize = 1024;

impl<'a> Envelope<'a> {
    fn parse(attributes: &'a Attributes) -> Result<Self, OpenError> {
        use format::{
            ATTEST_CERT_ATTR as CERT, ATTEST_CERT_SIGNATURE_ATTR as CERT_SIGNATURE, ATTEST_CERT_URL_ATTR as CERT_URL,
            ATTEST_KEY_ID_ATTR as KEY_ID, ATTEST_SIGNER_ATTR as SIGNER, DEK_WRAPPED_ATTR as DEK,
            KMS_KEY_ATTR as KMS_KEY, KMS_SIGNATURE_ATTR as KMS_SIGNATURE, SEALED_AT_ATTR as SEALED_AT,
            SIGN_KEY_WRAPPED_ATTR as SIGN_KEY, SIGNATURE_ATTR as SIGNATURE, VERSION_ATTR as VERSION,
        };
        // One pass over the attributes instead of a hash lookup per envelope name: on
        // the hot path this parse cost more than the lookups' worth of decryption.
        let mut fields = Fields::default();
        for (name, value) in attributes {
            let slot = match name.as_str() {
                VERSION => &mut fields.version,
                KMS_KEY => &mut fields.kms_key,
                SEALED_AT => &mut fields.sealed_at,
                DEK => &mut fields.dek,
                SIGN_KEY => &mut fields.sign_key,
                SIGNATURE => &mut fields.signature,
                CERT => &mut fields.cert,
                CERT_SIGNATURE => &mut fields.cert_signature,
                KMS_SIGNATURE => &mut fields.kms_signature,
                SIGNER => &mut fields.signer,
                KEY_ID => &mut fields.key_id,
                CERT_URL => &mut fields.cert_url,
                _ if format::is_reserved(name) => {
                    fields.stray.get_or_insert(name);
                    continue;
                }
                _ => {
                    fields.producer.get_or_insert(name);
                    continue;
                }
            };
            *slot = Some(value.as_str());
        }
        let required = |value: Option<&'a str>, name: &'static str| value.ok_or(OpenError::MissingAttribute(name));
        let version = required(fields.version, VERSION)?;
        if version != format::VERSION {
            return Err(OpenError::UnknownVersion(version.to_owned()));
        }
        // Each mode (and attest flavour) is told by one attribute; the envelope
        // attributes it may carry are exactly these.
        let markers: [(&'static str, Option<&str>, &[&str]); 5] = [
            (DEK, fields.dek, &[VERSION, KMS_KEY, SEALED_AT, DEK]),
            (SIGN_KEY, fields.sign_key, &[VERSION, KMS_KEY, SEALED_AT, SIGN_KEY, SIGNATURE]),
            (CERT, fields.cert, &[VERSION, KMS_KEY, SEALED_AT, CERT, CERT_SIGNATURE, SIGNATURE]),
            (KMS_SIGNATURE, fields.kms_signature, &[VERSION, KMS_KEY, SEALED_AT, KMS_SIGNATURE]),
            (SIGNER, fields.signer, &[VERSION, SEALED_AT, SIGNER, KEY_ID, CERT_URL, SIGNATURE]),
        ];
        let mut present = markers.iter().filter(|(_, value, _)| value.is_some());
        let (marker, allowed) = match (present.next(), present.next()) {
            (Some((marker, _, allowed)), None) => (*marker, *allowed),
            (Some(first), Some(second)) => {
                return Err(OpenError::GarbledAttribute {
                    name: first.0,
                    why: format!(
                        "a message carries one of {DEK}, {SIGN_KEY}, {CERT}, {KMS_SIGNATURE} or {SIGNER}, not also {}",
                        second.0
                    ),
                });
            }
            (None, _) => {
                return Err(OpenError::MissingAttribute(
                    "dek_wrapped, sign_key_wrapped, attest_cert, kms_signature or attest_signer",
                ));
            }
        };
        // A service account signs in its own name; every other kind names a KMS key.
        let kms_key = if marker == SIGNER { "" } else { required(fields.kms_key, KMS_KEY)? };
        let sealed_at = format::parse_sealed_at(required(fields.sealed_at, SEALED_AT)?).ok_or_else(|| {
            OpenError::GarbledAttribute { name: SEALED_AT, why: "not a decimal count of microseconds".into() }
        })?;
        // Encrypted messages carry nothing visible but the envelope; the others carry no
        // reserved name that is not their own.
        let misplaced = fields.present().find(|name| !allowed.contains(name));
        let extra = misplaced.map(str::to_owned).or(fields.stray.cloned());
        let extra = extra.or_else(|| if marker == DEK { fields.producer.cloned() } else { None });
        if let Some(extra) = extra {
            return Err(OpenError::UnexpectedAttribute(extra));
        }
        let required = |name: &'static str| required(fields.get(name), name);
        let (wrapped, proof) = match marker {
            DEK => (required(DEK)?, Proof::Aead),
            SIGN_KEY => (required(SIGN_KEY)?, Proof::Hmac(decode_exact(required(SIGNATURE)?, SIGNATURE)?)),
            CERT => {
                let certificate_signature = required(CERT_SIGNATURE)?;
                (
                    required(CERT)?,
                    Proof::Attest(AttestProof::Session {
                        certificate_signature,
                        signature: decode_exact(required(SIGNATURE)?, SIGNATURE)?,
                    }),
                )
            }
            SIGNER => {
                let named = ServiceAccountSigned {
                    signer: required(SIGNER)?,
                    key_id: required(KEY_ID)?,
                    cert_url: required(CERT_URL)?,
                };
                let signature = format::decode_base64(required(SIGNATURE)?).ok_or(OpenError::BadBase64(SIGNATURE))?;
                if signature.is_empty() || signature.len() > MAX_RSA_SIGNATURE_LEN {
                    return Err(OpenError::GarbledAttribute { name: SIGNATURE, why: "not an RSA signature".into() });
                }
                ("", Proof::Attest(AttestProof::ServiceAccount { named, signature }))
            }
            _ => {
                let signature =
                    format::decode_base64(required(KMS_SIGNATURE)?).ok_or(OpenError::BadBase64(KMS_SIGNATURE))?;
                if signature.is_empty() || signature.len() > MAX_ECDSA_SIGNATURE_LEN {
                    return Err(OpenError::GarbledAttribute {
                        name: KMS_SIGNATURE,
                        why: "not an ECDSA P-256 signature".into(),
                    });
                }
                ("", Proof::Attest(AttestProof::Kms(signature)))
            }
        };
        Ok(Self { kms_key, wrapped, sealed_at, proof })
    }
}

/// The envelope attributes of a message, found in one pass, and the first other
/// attribute of each kind.
#[derive(Default)]
struct Fields<'a> {
    version: Option<&'a str>,
    kms_key: Option<&'a str>,
    sealed_at: Option<&'a str>,
    dek: Option<&'a str>,
    sign_key: Option<&'a str>,
    signature: Option<&'a str>,
    cert: Option<&'a str>,
    cert_signature: Option<&'a str>,
    kms_signature: Option<&'a str>,
    signer: Option<&'a str>,
    key_id: Option<&'a str>,
    cert_url: Option<&'a str>,
    /// A reserved name that is no envelope attribute.
    stray: Option<&'a String>,
    /// A producer attribute.
    producer: Option<&'a String>,
}

impl<'a> Fields<'a> {
    fn all(&self) -> [(&'static str, Option<&'a str>); 12] {
        use format::*;
        [
            (VERSION_ATTR, self.version),
            (KMS_KEY_ATTR, self.kms_key),
            (SEALED_AT_ATTR, self.sealed_at),
            (DEK_WRAPPED_ATTR, self.dek),
            (SIGN_KEY_WRAPPED_ATTR, self.sign_key),
            (SIGNATURE_ATTR, self.signature),
            (ATTEST_CERT_ATTR, self.cert),
            (ATTEST_CERT_SIGNATURE_ATTR, self.cert_signature),
            (KMS_SIGNATURE_ATTR, self.kms_signature),
            (ATTEST_SIGNER_ATTR, self.signer),
            (ATTEST_KEY_ID_ATTR, self.key_id),
            (ATTEST_CERT_URL_ATTR, self.cert_url),
        ]
    }

    /// The names of the envelope attributes present.
    fn present(&self) -> impl Iterator<Item = &'static str> {
        self.all().into_iter().filter(|(_, value)| value.is_some()).map(|(name, _)| name)
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.all().into_iter().find(|(field, _)| *field == name).and_then(|(_, value)| value)
    }
}

/// Decodes the base64 attribute `name` into exactly `N` bytes.
fn decode_exact<const N: usize>(text: &str, name: &'static str) -> Result<[u8; N], OpenError> {
    let mut out = [0; N];
    let len = format::decode_base64_into(text, &mut out).ok_or(OpenError::BadBase64(name))?;
    if len != N {
        return Err(OpenError::GarbledAttribute { name, why: format!("not {N} bytes") });
    }
    Ok(out)
}
