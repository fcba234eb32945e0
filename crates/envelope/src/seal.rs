//! The producer side: data keys that rotate, wrapped once per rotation.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::attest::{Certificate, ServiceAccountSigner, SessionKey};
use crate::clock::{Clock, SystemClock};
use crate::crypto::{self, EncryptionKey, SigningKey};
use crate::error::SealError;
use crate::format::{self, Attributes, Flavour, Mode};
use crate::key_name::{KeyName, KeyVersionName};
use crate::kms::{KeySign, KeyWrap};
use crate::secret::SecretKey;

/// When a producer replaces its data key.
///
/// A key is replaced once it is older than `max_age`, or has sealed `max_messages`
/// messages or `max_bytes` bytes, whichever comes first. The defaults keep AES-GCM with
/// random 96-bit nonces far inside its safety margin: at 2^20 messages per key the
/// chance of a nonce collision is below 2^-57 (NIST SP 800-38D allows 2^32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Oldest a data key may be; the article's 100 s by default.
    pub max_age: Duration,
    /// Most messages one data key may seal; 2^20 by default.
    pub max_messages: u64,
    /// Most plaintext bytes one data key may seal; 2^34 (16 GiB) by default.
    pub max_bytes: u64,
}

impl RotationPolicy {
    /// Checks each setting against its range ([`limits`](crate::limits)): an age more
    /// than 0 and at most [`MAX_KEY_AGE`](crate::limits::MAX_KEY_AGE), 1 to
    /// [`MAX_KEY_MESSAGES`](crate::limits::MAX_KEY_MESSAGES) messages, at least one
    /// byte. A sealer takes any policy; the binaries and the Python package check
    /// theirs at the door, since an attest certificate lives as long as its key and
    /// consumers refuse long-lived ones.
    pub fn check(&self) -> Result<(), crate::limits::OutOfRange> {
        use crate::limits;
        limits::duration("key max age", self.max_age, limits::MAX_KEY_AGE)?;
        limits::count("key max messages", self.max_messages, limits::MAX_KEY_MESSAGES)?;
        limits::count("key max bytes", self.max_bytes, u64::MAX)
    }
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(100), max_messages: 1 << 20, max_bytes: 1 << 34 }
    }
}

/// A sealed message, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The payload: ciphertext in encrypt mode, the original data (shared, not copied)
    /// in sign mode.
    pub data: Bytes,
    /// The envelope attributes, plus the producer's own in sign mode.
    pub attributes: Attributes,
}

/// How an attest-mode sealer has its tenant's KMS signing key vouch for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestBy {
    /// The KMS key version certifies an Ed25519 session key once per rotation, and the
    /// session key signs each message: one KMS call per rotation.
    SessionKey,
    /// The KMS key version signs every message itself (strict audit): one KMS call per
    /// message, so a sealer's rate is bounded by the KMS's latency.
    KmsEachMessage,
}

/// The key that seals messages until the next rotation.
enum KeyMaterial {
    /// The AEAD key and the canonical header's prefix, the same for every message under
    /// the key.
    Encrypt(EncryptionKey, Vec<u8>),
    /// The HMAC key, with the header's prefix absorbed.
    Sign(SigningKey),
    /// The session's signing key and the text of its certificate attribute.
    Attest(SessionKey, String),
}

/// The current data key (or attest session key) and how much it has been used.
struct DataKey {
    material: KeyMaterial,
    /// The `kms_key` attribute's text.
    kms_key: String,
    /// The envelope attributes every message under this key carries (all but the seal
    /// time and the signature).
    attributes: Vec<(&'static str, String)>,
    created: Instant,
    messages: u64,
    bytes: u64,
    /// The wrapping KMS's [`KeyWrap::generation`] when it was made: a key made before
    /// the KMS's keys changed (a version disabled or destroyed) is not used again.
    generation: u64,
}

/// Who vouches for a sealer's messages, and so what it calls to rotate or to sign.
enum Authority {
    /// Data keys wrapped by this KMS key (encrypt and sign).
    Wrapping(Arc<dyn KeyWrap>, KeyName),
    /// Session keys certified by this KMS signing key version (attest).
    Certifying(Arc<dyn KeySign>, KeyVersionName),
    /// This KMS signing key version itself, one KMS call per message (strict attest).
    SigningEach(Arc<dyn KeySign>, KeyVersionName),
    /// A service account's own key, per message (attest, no KMS).
    ServiceAccount(ServiceAccountSigner),
}

/// Seals messages for one tenant under one KMS key, in one mode.
///
/// Each mode has its own constructor, taking the kind of key that mode needs, so that
/// a sealer cannot be built for a mode its key cannot serve. A sealer holds one data
/// key (or attest session key) at a time and calls the KMS only to wrap or certify a
/// new one, when the [`RotationPolicy`] retires the current key; the strict attest
/// flavour ([`AttestBy::KmsEachMessage`]) alone calls the KMS for every message.
pub struct Sealer {
    authority: Authority,
    tenant_id: String,
    mode: Mode,
    policy: RotationPolicy,
    clock: Arc<dyn Clock>,
    current: Option<DataKey>,
    data_keys_made: u64,
    /// The seal time of the last message, which the next one must exceed.
    last_sealed_at: u64,
    /// Most keys made ahead of need ([`Sealer::with_keys_ahead`]); 0: none.
    keys_ahead: usize,
    /// Keys being made, or made, ahead of need, oldest first.
    ahead: VecDeque<tokio::task::JoinHandle<Result<DataKey, SealError>>>,
    /// The wrapping KMS's generation as last looked at, and when to look again.
    generation: u64,
    next_look: Option<Instant>,
}

/// How often a sealer asks its wrapping KMS whether keys changed.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Sealer {
    /// A sealer in [`Mode::Encrypt`]: AES-256-GCM data keys wrapped under `key`,
    /// binding `tenant_id`.
    pub fn encrypt(kms: Arc<dyn KeyWrap>, key: KeyName, tenant_id: impl Into<String>) -> Self {
        Self::with_authority(Authority::Wrapping(kms, key), tenant_id.into(), Mode::Encrypt)
    }

    /// A sealer in [`Mode::Sign`]: HMAC-SHA256 data keys wrapped under `key`, binding
    /// `tenant_id`.
    pub fn sign(kms: Arc<dyn KeyWrap>, key: KeyName, tenant_id: impl Into<String>) -> Self {
        Self::with_authority(Authority::Wrapping(kms, key), tenant_id.into(), Mode::Sign)
    }

    /// A sealer in [`Mode::Attest`] for `tenant_id`, under the `EC_SIGN_P256_SHA256`
    /// KMS key version `signing_key`, which vouches for messages as `by` says.
    pub fn attest(
        kms: Arc<dyn KeySign>,
        signing_key: KeyVersionName,
        tenant_id: impl Into<String>,
        by: AttestBy,
    ) -> Self {
        let authority = match by {
            AttestBy::SessionKey => Authority::Certifying(kms, signing_key),
            AttestBy::KmsEachMessage => Authority::SigningEach(kms, signing_key),
        };
        Self::with_authority(authority, tenant_id.into(), Mode::Attest)
    }

    /// A sealer in [`Mode::Attest`] that signs every message with a service account's
    /// own key (RSA-SHA256), as the article sketches; no KMS and no tenant id are
    /// involved: the account is the identity.
    pub fn service_account(signer: ServiceAccountSigner) -> Self {
        Self::with_authority(Authority::ServiceAccount(signer), String::new(), Mode::Attest)
    }

    fn with_authority(authority: Authority, tenant_id: String, mode: Mode) -> Self {
        Self {
            authority,
            tenant_id,
            mode,
            policy: RotationPolicy::default(),
            clock: Arc::new(SystemClock),
            current: None,
            data_keys_made: 0,
            last_sealed_at: 0,
            keys_ahead: 0,
            ahead: VecDeque::new(),
            generation: 0,
            next_look: None,
        }
    }

    /// Replaces the default [`RotationPolicy`].
    pub fn with_policy(mut self, policy: RotationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Makes up to `keys` data keys (or attest session keys) ahead of need, each on a
    /// Tokio task of its own, so that a rotation finds its key ready instead of waiting
    /// out a KMS call: with keys that rotate every few messages and a KMS 20 ms away,
    /// waiting capped a sealer near 250 messages a second.
    ///
    /// Keys are made ahead only while they are used up by their message or byte budget
    /// (a key retired by age is rare enough that one KMS call is nothing, and a key
    /// made early would age waiting), and no more of them than a quarter of the keys
    /// made so far, so that a short run wastes few calls. A key's age counts from when
    /// it was made. At most `keys` calls are in flight, and at most `keys` keys made
    /// ahead go unused when the sealer is dropped. Needs a Tokio runtime; `0` (the
    /// default) makes every key when it is needed.
    pub fn with_keys_ahead(mut self, keys: usize) -> Self {
        self.keys_ahead = keys;
        self
    }

    /// Replaces the system clock, for tests.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The mode this sealer seals in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How many data keys (or attest session keys) this sealer has sealed with: one KMS
    /// wrap or certify call each (keys made ahead and never used are not counted).
    pub fn data_keys_made(&self) -> u64 {
        self.data_keys_made
    }

    /// Seals `data` with the producer's `attributes`.
    ///
    /// Calls KMS only when the current data key must be replaced; a KMS failure leaves
    /// the sealer unchanged, so the call can be retried.
    pub async fn seal(&mut self, data: Bytes, attributes: Attributes) -> Result<Sealed, SealError> {
        format::check_producer_attributes(&attributes, self.mode)?;
        let (kms, signing_key) = match &self.authority {
            Authority::ServiceAccount(signer) => {
                let sealed_at = next_seal_time(&mut self.last_sealed_at, self.clock.as_ref());
                let envelope = [
                    (format::VERSION_ATTR, format::VERSION.to_owned()),
                    (format::SEALED_AT_ATTR, format::encode_sealed_at(sealed_at)),
                ];
                let signature = signer.sign(sealed_at, &attributes, &data);
                return Ok(Sealed {
                    attributes: with_envelope(attributes, envelope.into_iter().chain(signature)),
                    data,
                });
            }
            Authority::SigningEach(kms, signing_key) => (kms, signing_key),
            Authority::Wrapping(..) | Authority::Certifying(..) => {
                return self.seal_under_data_key(data, attributes).await;
            }
        };
        let sealed_at = next_seal_time(&mut self.last_sealed_at, self.clock.as_ref());
        let signed = format::signed_bytes(
            Flavour::AttestKms,
            signing_key.as_str(),
            &self.tenant_id,
            sealed_at,
            &attributes,
            &data,
        );
        let signature = kms.sign(signing_key, &signed).await?;
        let envelope = [
            (format::VERSION_ATTR, format::VERSION.to_owned()),
            (format::KMS_KEY_ATTR, signing_key.to_string()),
            (format::SEALED_AT_ATTR, format::encode_sealed_at(sealed_at)),
            (format::KMS_SIGNATURE_ATTR, format::encode_base64(&signature)),
        ];
        Ok(Sealed { attributes: with_envelope(attributes, envelope), data })
    }

    /// Seals under the current data key or session key, replacing it first if spent.
    async fn seal_under_data_key(&mut self, data: Bytes, attributes: Attributes) -> Result<Sealed, SealError> {
        let now = self.clock.now();
        let size = data.len() as u64;
        let generation = self.kms_generation(now);
        let stale = self.current.as_ref().is_some_and(|key| key.generation != generation);
        if stale {
            tracing::info!("the KMS's keys changed: making a new data key before the next message");
        }
        if stale || self.current.as_ref().is_none_or(|key| self.is_spent(key, now, size)) {
            let used_up =
                self.current.as_ref().is_some_and(|key| now.duration_since(key.created) < self.policy.max_age);
            self.current = Some(self.next_data_key(now, size).await?);
            self.data_keys_made += 1;
            if used_up {
                self.make_keys_ahead();
            }
        }
        let sealed_at = next_seal_time(&mut self.last_sealed_at, self.clock.as_ref());
        let key = self.current.as_mut().expect("a data key was just ensured");
        key.messages += 1;
        key.bytes += size;
        Ok(seal_with(key, sealed_at, data, attributes, None))
    }

    /// The oldest key made ahead if one is (waiting for it if it is still being made)
    /// and still fresh, else a new one.
    async fn next_data_key(&mut self, now: Instant, size: u64) -> Result<DataKey, SealError> {
        while let Some(making) = self.ahead.pop_front() {
            let key = match making.await {
                Ok(made) => made?,
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(_) => continue,
            };
            if !self.is_spent(&key, now, size) && key.generation == self.generation {
                return Ok(key);
            }
        }
        self.maker().make(now).await
    }

    /// The wrapping KMS's [`KeyWrap::generation`], looked at once a [`LOOK_EVERY`] (it
    /// may read a file's metadata); 0 for attest sealers, whose KMS cannot tell.
    fn kms_generation(&mut self, now: Instant) -> u64 {
        if let Authority::Wrapping(kms, _) = &self.authority
            && self.next_look.is_none_or(|next| now >= next)
        {
            self.generation = kms.generation();
            self.next_look = Some(now + LOOK_EVERY);
        }
        self.generation
    }

    /// Tops the keys being made ahead up to what [`Sealer::with_keys_ahead`] allows.
    fn make_keys_ahead(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let want = self.keys_ahead.min(usize::try_from(self.data_keys_made / 4).unwrap_or(usize::MAX));
        while self.ahead.len() < want {
            let maker = self.maker();
            self.ahead.push_back(runtime.spawn(async move {
                let now = maker.clock.now();
                maker.make(now).await
            }));
        }
    }

    /// What makes a key, apart from the sealer, so that it can run on a task of its own.
    fn maker(&self) -> KeyMaker {
        let authority = match &self.authority {
            Authority::Wrapping(kms, key_name) => MakerAuthority::Wrapping(kms.clone(), key_name.clone()),
            Authority::Certifying(kms, signing_key) => MakerAuthority::Certifying(kms.clone(), signing_key.clone()),
            Authority::SigningEach(..) | Authority::ServiceAccount(_) => {
                unreachable!("seal only asks for data keys of wrapping and certifying sealers")
            }
        };
        KeyMaker {
            authority,
            tenant_id: self.tenant_id.clone(),
            mode: self.mode,
            max_age: self.policy.max_age,
            clock: self.clock.clone(),
            last_sealed_at: self.last_sealed_at,
        }
    }

    fn is_spent(&self, key: &DataKey, now: Instant, next_size: u64) -> bool {
        now.duration_since(key.created) >= self.policy.max_age
            || key.messages >= self.policy.max_messages
            || (key.messages > 0 && key.bytes + next_size > self.policy.max_bytes)
    }
}

impl Drop for Sealer {
    /// Keys still being made ahead are not wanted any more.
    fn drop(&mut self) {
        self.ahead.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// Who vouches for a key made apart from its sealer: the wrapping and certifying
/// halves of [`Authority`].
enum MakerAuthority {
    Wrapping(Arc<dyn KeyWrap>, KeyName),
    Certifying(Arc<dyn KeySign>, KeyVersionName),
}

/// Makes data keys (or session keys) as its sealer would, on any task.
struct KeyMaker {
    authority: MakerAuthority,
    tenant_id: String,
    mode: Mode,
    max_age: Duration,
    clock: Arc<dyn Clock>,
    /// The sealer's last seal time when the maker was taken: a certificate starts after it.
    last_sealed_at: u64,
}

impl KeyMaker {
    /// A new key, made at `now`.
    async fn make(&self, now: Instant) -> Result<DataKey, SealError> {
        let (generation, (material, kms_key, attributes)) = match &self.authority {
            MakerAuthority::Wrapping(kms, key_name) => {
                (kms.generation(), self.wrap_new_key(kms.as_ref(), key_name).await?)
            }
            MakerAuthority::Certifying(kms, signing_key) => (0, self.certify_new_key(kms.as_ref(), signing_key).await?),
        };
        Ok(DataKey { material, kms_key, attributes, created: now, messages: 0, bytes: 0, generation })
    }

    async fn wrap_new_key(&self, kms: &dyn KeyWrap, key_name: &KeyName) -> Result<NewKey, SealError> {
        let secret = SecretKey::generate();
        let wrapped = kms.wrap(key_name, &secret, self.tenant_id.as_bytes()).await?;
        let kms_key = key_name.to_string();
        let wrapped = format::encode_base64(&wrapped);
        let (material, flavour) = match self.mode {
            Mode::Encrypt => {
                let prefix = format::header_prefix(Flavour::Encrypt, &kms_key, &wrapped);
                (KeyMaterial::Encrypt(EncryptionKey::derive(&secret), prefix), Flavour::Encrypt)
            }
            _ => {
                let prefix = format::header_prefix(Flavour::Sign, &kms_key, &wrapped);
                (KeyMaterial::Sign(SigningKey::new(&secret, &prefix)), Flavour::Sign)
            }
        };
        tracing::debug!(%kms_key, mode = %self.mode, "made a new data key");
        let attributes = vec![
            (format::VERSION_ATTR, format::VERSION.to_owned()),
            (format::KMS_KEY_ATTR, kms_key.clone()),
            (flavour.marker().name(), wrapped),
        ];
        Ok((material, kms_key, attributes))
    }

    /// A fresh session key and its certificate, valid for the key's whole life under the
    /// rotation policy plus a minute for the wall clock to drift from the monotonic one.
    async fn certify_new_key(&self, kms: &dyn KeySign, signing_key: &KeyVersionName) -> Result<NewKey, SealError> {
        let session = SessionKey::generate();
        let not_before = micros_since_epoch(self.clock.wall()).max(self.last_sealed_at + 1);
        let lifetime = u64::try_from((self.max_age + crate::limits::CERTIFICATE_SLACK).as_micros()).unwrap_or(u64::MAX);
        let certificate = Certificate {
            kms_key: signing_key.clone(),
            tenant_id: self.tenant_id.clone(),
            public_key: session.public_key(),
            not_before,
            not_after: not_before.saturating_add(lifetime),
        }
        .encode();
        let certificate_signature = kms.sign(signing_key, &certificate).await?;
        tracing::debug!(kms_key = %signing_key, "certified a new session key");
        let certificate = format::encode_base64(&certificate);
        let kms_key = signing_key.to_string();
        let attributes = vec![
            (format::VERSION_ATTR, format::VERSION.to_owned()),
            (format::KMS_KEY_ATTR, kms_key.clone()),
            (format::ATTEST_CERT_ATTR, certificate.clone()),
            (format::ATTEST_CERT_SIGNATURE_ATTR, format::encode_base64(&certificate_signature)),
        ];
        Ok((KeyMaterial::Attest(session, certificate), kms_key, attributes))
    }
}

/// A new key: what seals, the `kms_key` text, and the envelope attributes it adds.
type NewKey = (KeyMaterial, String, Vec<(&'static str, String)>);

/// The producer's attributes with the envelope's added.
fn with_envelope(mut attributes: Attributes, envelope: impl IntoIterator<Item = (&'static str, String)>) -> Attributes {
    attributes.extend(envelope.into_iter().map(|(name, value)| (name.to_owned(), value)));
    attributes
}

/// The next seal time after `last`: now, but strictly after the previous one even if the
/// wall clock stalls or steps back, so that every message is unique and an opener can
/// tell a copy from a new one.
fn next_seal_time(last: &mut u64, clock: &dyn Clock) -> u64 {
    *last = micros_since_epoch(clock.wall()).max(*last + 1);
    *last
}

fn micros_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// Seals one message under `key`; `nonce` is fixed only by the test vectors (else a
/// fresh random one is drawn).
fn seal_with(
    key: &DataKey,
    sealed_at: u64,
    data: Bytes,
    producer_attributes: Attributes,
    nonce: Option<[u8; format::NONCE_LEN]>,
) -> Sealed {
    let envelope = || {
        let sealed_at = (format::SEALED_AT_ATTR, format::encode_sealed_at(sealed_at));
        key.attributes.iter().map(|(name, value)| (*name, value.clone())).chain([sealed_at])
    };
    match &key.material {
        KeyMaterial::Encrypt(aead, prefix) => {
            let plaintext_len = format::sealed_plaintext_len(&data, &producer_attributes);
            let mut payload = Vec::with_capacity(crypto::PREFIX + plaintext_len + format::TAG_LEN);
            payload.resize(crypto::PREFIX, 0);
            format::put_sealed_plaintext(&mut payload, &data, &producer_attributes);
            let header = format::encrypt_header(prefix, sealed_at);
            match nonce {
                Some(nonce) => aead.seal_in_place_with(nonce, &header, &mut payload),
                None => aead.seal_in_place(&header, &mut payload),
            }
            Sealed { data: payload.into(), attributes: with_envelope(Attributes::new(), envelope()) }
        }
        KeyMaterial::Sign(mac) => {
            let signature = format::encode_base64(&mac.sign(sealed_at, &producer_attributes, &data));
            let signature = (format::SIGNATURE_ATTR, signature);
            Sealed { attributes: with_envelope(producer_attributes, envelope().chain([signature])), data }
        }
        KeyMaterial::Attest(session, certificate) => {
            let signed = format::signed_bytes(
                Flavour::AttestSession,
                &key.kms_key,
                certificate,
                sealed_at,
                &producer_attributes,
                &data,
            );
            let signature = (format::SIGNATURE_ATTR, format::encode_base64(&session.sign(&signed)));
            Sealed { attributes: with_envelope(producer_attributes, envelope().chain([signature])), data }
        }
    }
}

/// Deterministic sealing from given keys, nonce and seal time, through the same code as
/// [`Sealer::seal`]: what the test vectors are made and checked with.
#[cfg(feature = "internals")]
#[allow(missing_docs, reason = "test-vector hooks; each variant says what its fields are")]
pub(crate) mod fixed {
    use super::*;

    /// What a fixed seal is made from.
    pub enum FixedKey<'a> {
        /// Encrypt mode: the data key, the `kms_key` text and the wrapped key's bytes.
        Encrypt { data_key: &'a SecretKey, kms_key: &'a str, wrapped: &'a [u8], nonce: [u8; format::NONCE_LEN] },
        /// Sign mode: the data key, the `kms_key` text and the wrapped key's bytes.
        Sign { data_key: &'a SecretKey, kms_key: &'a str, wrapped: &'a [u8] },
        /// Attest session flavour: the session's Ed25519 seed, the key version, the
        /// certificate and its signature, as bytes.
        AttestSession { seed: &'a [u8; 32], kms_key: &'a str, certificate: &'a [u8], certificate_signature: &'a [u8] },
    }

    /// Seals `data` and `attributes` at `sealed_at` under `key`.
    pub fn seal(key: FixedKey<'_>, sealed_at: u64, data: Bytes, attributes: Attributes) -> Sealed {
        let envelope = |kms_key: &str, marker: &'static str, text: String| {
            vec![
                (format::VERSION_ATTR, format::VERSION.to_owned()),
                (format::KMS_KEY_ATTR, kms_key.to_owned()),
                (marker, text),
            ]
        };
        let (material, kms_key, attributes_of_key, nonce) = match key {
            FixedKey::Encrypt { data_key, kms_key, wrapped, nonce } => {
                let wrapped = format::encode_base64(wrapped);
                let prefix = format::header_prefix(Flavour::Encrypt, kms_key, &wrapped);
                let material = KeyMaterial::Encrypt(EncryptionKey::derive(data_key), prefix);
                (material, kms_key, envelope(kms_key, format::DEK_WRAPPED_ATTR, wrapped), Some(nonce))
            }
            FixedKey::Sign { data_key, kms_key, wrapped } => {
                let wrapped = format::encode_base64(wrapped);
                let prefix = format::header_prefix(Flavour::Sign, kms_key, &wrapped);
                let material = KeyMaterial::Sign(SigningKey::new(data_key, &prefix));
                (material, kms_key, envelope(kms_key, format::SIGN_KEY_WRAPPED_ATTR, wrapped), None)
            }
            FixedKey::AttestSession { seed, kms_key, certificate, certificate_signature } => {
                let certificate = format::encode_base64(certificate);
                let mut attributes = envelope(kms_key, format::ATTEST_CERT_ATTR, certificate.clone());
                attributes.push((format::ATTEST_CERT_SIGNATURE_ATTR, format::encode_base64(certificate_signature)));
                (KeyMaterial::Attest(SessionKey::from_seed(seed), certificate), kms_key, attributes, None)
            }
        };
        let key = DataKey {
            material,
            kms_key: kms_key.to_owned(),
            attributes: attributes_of_key,
            created: Instant::now(),
            messages: 0,
            bytes: 0,
            generation: 0,
        };
        seal_with(&key, sealed_at, data, attributes, nonce)
    }
}
