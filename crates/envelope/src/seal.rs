//! The producer side: data keys that rotate, wrapped once per rotation.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::attest::{Certificate, ServiceAccountSigner, SessionKey};
use crate::clock::{Clock, SystemClock};
use crate::crypto::{self, EncryptionKey, SigningKey};
use crate::error::SealError;
use crate::format::{self, Attributes, Mode};
use crate::key_name::{KeyName, KeyVersionName};
use crate::kms::Kms;
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

enum DataKeyUse {
    /// The AEAD key and the canonical header's prefix, the same for every message under
    /// the key.
    Encrypt(EncryptionKey, Vec<u8>),
    Sign(SigningKey),
    /// The session's signing key and the text of its certificate attribute.
    Attest(SessionKey, String),
}

/// The current data key (or attest session key) and how much it has been used.
struct DataKey {
    usage: DataKeyUse,
    /// Version, key name and wrapped key or certificate, added to every message.
    envelope: Vec<(&'static str, String)>,
    created: Instant,
    messages: u64,
    bytes: u64,
}

/// What a sealer protects messages under.
enum Root {
    /// Data keys wrapped by this KMS key (encrypt and sign).
    Wrapping(Arc<dyn Kms>, KeyName),
    /// Session keys certified by this KMS signing key version (attest).
    Certifying(Arc<dyn Kms>, KeyVersionName),
    /// This KMS signing key version itself, one KMS call per message (strict attest).
    SigningEach(Arc<dyn Kms>, KeyVersionName),
    /// A service account's own key, per message (attest, no KMS).
    ServiceAccount(ServiceAccountSigner),
}

/// Seals messages for one tenant under one KMS key, in one mode.
///
/// Holds one data key (or attest session key) at a time and calls KMS only to wrap or
/// certify a new one, when the [`RotationPolicy`] retires the current key; the strict
/// attest flavour alone calls KMS for every message.
pub struct Sealer {
    root: Root,
    tenant_id: String,
    mode: Mode,
    policy: RotationPolicy,
    clock: Arc<dyn Clock>,
    current: Option<DataKey>,
    rotations: u64,
    /// The seal time of the last message, which the next one must exceed.
    last_sealed_at: u64,
}

impl Sealer {
    /// A sealer that wraps its data keys under `key_name`, binding `tenant_id`, in
    /// [`Mode::Encrypt`] or [`Mode::Sign`]. Attest mode signs with a key version:
    /// [`Sealer::attest`].
    pub fn new(kms: Arc<dyn Kms>, key_name: KeyName, tenant_id: impl Into<String>, mode: Mode) -> Self {
        Self::with_root(Root::Wrapping(kms, key_name), tenant_id.into(), mode)
    }

    /// A sealer in [`Mode::Attest`] for `tenant_id`, under the `EC_SIGN_P256_SHA256` KMS
    /// key version `signing_key`: by default it certifies a session key per rotation;
    /// with `kms_signs_each` the KMS signs every message itself (one call per message).
    pub fn attest(
        kms: Arc<dyn Kms>,
        signing_key: KeyVersionName,
        tenant_id: impl Into<String>,
        kms_signs_each: bool,
    ) -> Self {
        let root =
            if kms_signs_each { Root::SigningEach(kms, signing_key) } else { Root::Certifying(kms, signing_key) };
        Self::with_root(root, tenant_id.into(), Mode::Attest)
    }

    /// A sealer in [`Mode::Attest`] that signs every message with a service account's
    /// own key (RSA-SHA256), as the article sketches; no KMS is involved.
    pub fn service_account(signer: ServiceAccountSigner) -> Self {
        Self::with_root(Root::ServiceAccount(signer), String::new(), Mode::Attest)
    }

    fn with_root(root: Root, tenant_id: String, mode: Mode) -> Self {
        Self {
            root,
            tenant_id,
            mode,
            policy: RotationPolicy::default(),
            clock: Arc::new(SystemClock),
            current: None,
            rotations: 0,
            last_sealed_at: 0,
        }
    }

    /// Replaces the default [`RotationPolicy`].
    pub fn with_policy(mut self, policy: RotationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the system clock, for tests.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many data keys (or attest session keys) this sealer has made, and so how many
    /// KMS wrap or certify calls succeeded.
    pub fn data_keys_made(&self) -> u64 {
        self.rotations
    }

    /// Seals `data` with the producer's `attributes`.
    ///
    /// Calls KMS only when the current data key must be replaced; a KMS failure leaves
    /// the sealer unchanged, so the call can be retried.
    pub async fn seal(&mut self, data: Bytes, attributes: Attributes) -> Result<Sealed, SealError> {
        format::check_producer_attributes(&attributes, self.mode)?;
        if let Root::ServiceAccount(signer) = &self.root {
            let sealed_at = next_seal_time(&mut self.last_sealed_at, self.clock.as_ref());
            let envelope = [
                (format::VERSION_ATTR, format::VERSION.to_owned()),
                (format::SEALED_AT_ATTR, format::encode_sealed_at(sealed_at)),
            ];
            let signature = signer.sign(sealed_at, &attributes, &data);
            let mut attributes = attributes;
            attributes.extend(envelope.into_iter().chain(signature).map(|(name, value)| (name.to_owned(), value)));
            return Ok(Sealed { data, attributes });
        }
        if let Root::SigningEach(kms, signing_key) = &self.root {
            let sealed_at = next_seal_time(&mut self.last_sealed_at, self.clock.as_ref());
            let signed = format::attest_signed_bytes(signing_key.as_str(), "", sealed_at, &attributes, &data);
            let signature = kms.sign(signing_key, &signed).await?;
            let envelope = [
                (format::VERSION_ATTR, format::VERSION.to_owned()),
                (format::KMS_KEY_ATTR, signing_key.to_string()),
                (format::SEALED_AT_ATTR, format::encode_sealed_at(sealed_at)),
                (format::KMS_SIGNATURE_ATTR, format::encode_base64(&signature)),
            ];
            let mut attributes = attributes;
            attributes.extend(envelope.map(|(name, value)| (name.to_owned(), value)));
            return Ok(Sealed { data, attributes });
        }
        let now = self.clock.now();
        let size = data.len() as u64;
        if self.current.as_ref().is_none_or(|key| self.is_spent(key, now, size)) {
            self.current = Some(self.new_data_key(now).await?);
            self.rotations += 1;
        }
        let sealed_at = next_seal_time(&mut self.last_sealed_at, self.clock.as_ref());
        let key = self.current.as_mut().expect("a data key was just ensured");
        key.messages += 1;
        key.bytes += size;
        Ok(seal_with(key, sealed_at, data, attributes))
    }

    fn is_spent(&self, key: &DataKey, now: Instant, next_size: u64) -> bool {
        now.duration_since(key.created) >= self.policy.max_age
            || key.messages >= self.policy.max_messages
            || (key.messages > 0 && key.bytes + next_size > self.policy.max_bytes)
    }

    async fn new_data_key(&self, now: Instant) -> Result<DataKey, SealError> {
        let (usage, envelope) = match (&self.root, self.mode) {
            (Root::Wrapping(kms, key_name), Mode::Encrypt | Mode::Sign) => self.wrap_new_key(kms, key_name).await?,
            (Root::Certifying(kms, signing_key), Mode::Attest) => self.certify_new_key(kms, signing_key).await?,
            _ => return Err(SealError::KeyKind(self.mode)),
        };
        Ok(DataKey { usage, envelope, created: now, messages: 0, bytes: 0 })
    }

    async fn wrap_new_key(
        &self,
        kms: &Arc<dyn Kms>,
        key_name: &KeyName,
    ) -> Result<(DataKeyUse, Vec<(&'static str, String)>), SealError> {
        let secret = SecretKey::generate();
        let wrapped = kms.wrap(key_name, &secret, self.tenant_id.as_bytes()).await?;
        let kms_key = key_name.to_string();
        let wrapped = format::encode_base64(&wrapped);
        let prefix = format::header_prefix(self.mode, &kms_key, &wrapped);
        let (usage, wrapped_attr) = match self.mode {
            Mode::Encrypt => (DataKeyUse::Encrypt(EncryptionKey::derive(&secret), prefix), format::DEK_WRAPPED_ATTR),
            _ => (DataKeyUse::Sign(SigningKey::new(&secret, &prefix)), format::SIGN_KEY_WRAPPED_ATTR),
        };
        tracing::debug!(%kms_key, mode = %self.mode, "made a new data key");
        let envelope = vec![
            (format::VERSION_ATTR, format::VERSION.to_owned()),
            (format::KMS_KEY_ATTR, kms_key),
            (wrapped_attr, wrapped),
        ];
        Ok((usage, envelope))
    }

    /// A fresh session key and its certificate, valid for the key's whole life under the
    /// rotation policy plus a minute for the wall clock to drift from the monotonic one.
    async fn certify_new_key(
        &self,
        kms: &Arc<dyn Kms>,
        signing_key: &KeyVersionName,
    ) -> Result<(DataKeyUse, Vec<(&'static str, String)>), SealError> {
        let session = SessionKey::generate();
        let not_before = micros_since_epoch(self.clock.wall()).max(self.last_sealed_at + 1);
        let lifetime = u64::try_from((self.policy.max_age + CERTIFICATE_SLACK).as_micros()).unwrap_or(u64::MAX);
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
        let envelope = vec![
            (format::VERSION_ATTR, format::VERSION.to_owned()),
            (format::KMS_KEY_ATTR, signing_key.to_string()),
            (format::ATTEST_CERT_ATTR, certificate.clone()),
            (format::ATTEST_CERT_SIGNATURE_ATTR, format::encode_base64(&certificate_signature)),
        ];
        Ok((DataKeyUse::Attest(session, certificate), envelope))
    }
}

/// How long a session certificate outlives its key's rotation age.
const CERTIFICATE_SLACK: Duration = Duration::from_secs(60);

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

fn seal_with(key: &DataKey, sealed_at: u64, data: Bytes, producer_attributes: Attributes) -> Sealed {
    let envelope = || {
        let sealed_at = (format::SEALED_AT_ATTR.to_owned(), format::encode_sealed_at(sealed_at));
        key.envelope.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).chain([sealed_at])
    };
    match &key.usage {
        DataKeyUse::Encrypt(aead, prefix) => {
            let plaintext_len = format::sealed_plaintext_len(&data, &producer_attributes);
            let mut payload = Vec::with_capacity(crypto::PREFIX + plaintext_len + format::TAG_LEN);
            payload.resize(crypto::PREFIX, 0);
            format::put_sealed_plaintext(&mut payload, &data, &producer_attributes);
            aead.seal_in_place(&format::encrypt_header(prefix, sealed_at), &mut payload);
            Sealed { data: payload.into(), attributes: envelope().collect() }
        }
        DataKeyUse::Sign(mac) => {
            let signature = format::encode_base64(&mac.sign(sealed_at, &producer_attributes, &data));
            let mut attributes = producer_attributes;
            attributes.reserve(key.envelope.len() + 2);
            attributes.extend(envelope());
            attributes.insert(format::SIGNATURE_ATTR.to_owned(), signature);
            Sealed { data, attributes }
        }
        DataKeyUse::Attest(session, certificate) => {
            let kms_key = &key.envelope[1].1;
            let signed = format::attest_signed_bytes(kms_key, certificate, sealed_at, &producer_attributes, &data);
            let signature = format::encode_base64(&session.sign(&signed));
            let mut attributes = producer_attributes;
            attributes.reserve(key.envelope.len() + 2);
            attributes.extend(envelope());
            attributes.insert(format::SIGNATURE_ATTR.to_owned(), signature);
            Sealed { data, attributes }
        }
    }
}
