//! The producer side: data keys that rotate, wrapped once per rotation.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::clock::{Clock, SystemClock};
use crate::crypto::{self, EncryptionKey, SigningKey};
use crate::error::SealError;
use crate::format::{self, Attributes, Mode};
use crate::key_name::KeyName;
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
}

/// The current data key and how much it has been used.
struct DataKey {
    usage: DataKeyUse,
    /// Version, key name and wrapped key, added to every message.
    envelope: [(&'static str, String); 3],
    created: Instant,
    messages: u64,
    bytes: u64,
    /// The seal time of the last message, which the next one must exceed.
    last_sealed_at: u64,
}

/// Seals messages for one tenant under one KMS key, in one mode.
///
/// Holds one data key at a time and calls KMS only to wrap a new one, when the
/// [`RotationPolicy`] retires the current key.
pub struct Sealer {
    kms: Arc<dyn Kms>,
    key_name: KeyName,
    tenant_id: String,
    mode: Mode,
    policy: RotationPolicy,
    clock: Arc<dyn Clock>,
    current: Option<DataKey>,
    rotations: u64,
}

impl Sealer {
    /// A sealer that wraps its data keys under `key_name`, binding `tenant_id`.
    pub fn new(kms: Arc<dyn Kms>, key_name: KeyName, tenant_id: impl Into<String>, mode: Mode) -> Self {
        Self {
            kms,
            key_name,
            tenant_id: tenant_id.into(),
            mode,
            policy: RotationPolicy::default(),
            clock: Arc::new(SystemClock),
            current: None,
            rotations: 0,
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

    /// How many data keys this sealer has made (and so how many KMS wrap calls succeeded).
    pub fn data_keys_made(&self) -> u64 {
        self.rotations
    }

    /// Seals `data` with the producer's `attributes`.
    ///
    /// Calls KMS only when the current data key must be replaced; a KMS failure leaves
    /// the sealer unchanged, so the call can be retried.
    pub async fn seal(&mut self, data: Bytes, attributes: Attributes) -> Result<Sealed, SealError> {
        format::check_producer_attributes(&attributes, self.mode)?;
        let now = self.clock.now();
        let size = data.len() as u64;
        if self.current.as_ref().is_none_or(|key| self.is_spent(key, now, size)) {
            self.current = Some(self.new_data_key(now).await?);
            self.rotations += 1;
        }
        let key = self.current.as_mut().expect("a data key was just ensured");
        key.messages += 1;
        key.bytes += size;
        // Strictly increasing even if the wall clock stalls or steps back, so that every
        // message under one key is unique and an opener can tell a copy from a new one.
        key.last_sealed_at = micros_since_epoch(self.clock.wall()).max(key.last_sealed_at + 1);
        Ok(seal_with(key, data, attributes))
    }

    fn is_spent(&self, key: &DataKey, now: Instant, next_size: u64) -> bool {
        now.duration_since(key.created) >= self.policy.max_age
            || key.messages >= self.policy.max_messages
            || (key.messages > 0 && key.bytes + next_size > self.policy.max_bytes)
    }

    async fn new_data_key(&self, now: Instant) -> Result<DataKey, SealError> {
        let secret = SecretKey::generate();
        let wrapped = self.kms.wrap(&self.key_name, &secret, self.tenant_id.as_bytes()).await?;
        let kms_key = self.key_name.to_string();
        let wrapped = format::encode_base64(&wrapped);
        let prefix = format::header_prefix(self.mode, &kms_key, &wrapped);
        let usage = match self.mode {
            Mode::Encrypt => DataKeyUse::Encrypt(EncryptionKey::derive(&secret), prefix),
            Mode::Sign => DataKeyUse::Sign(SigningKey::new(&secret, &prefix)),
        };
        tracing::debug!(%kms_key, mode = %self.mode, "made a new data key");
        let envelope = [
            (format::VERSION_ATTR, format::VERSION.to_owned()),
            (format::KMS_KEY_ATTR, kms_key),
            (self.mode.wrapped_key_attr(), wrapped),
        ];
        Ok(DataKey { usage, envelope, created: now, messages: 0, bytes: 0, last_sealed_at: 0 })
    }
}

fn micros_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

fn seal_with(key: &DataKey, data: Bytes, producer_attributes: Attributes) -> Sealed {
    let sealed_at = key.last_sealed_at;
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
    }
}
