//! Key management: the trait every backend implements, and the backends.
//!
//! Two one-job traits, so that a backend (or a test double) implements what it can:
//! [`KeyWrap`] wraps (encrypts) and unwraps (decrypts) 256-bit data keys under a named
//! key encryption key, binding additional authenticated data, the tenant id (encrypt
//! and sign mode); [`KeySign`] signs with an asymmetric P-256 key version and hands out
//! its public key (attest mode). [`Kms`] is both. A backend is called once per data key
//! or signing session, never per message (unless a publisher asks for a KMS signature
//! on every message).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::key_name::{KeyName, KeyVersionName};
use crate::secret::SecretKey;

pub mod gcp;
pub mod local;

/// Wraps and unwraps data keys under a named key encryption key: what encrypt and
/// sign mode need of a KMS (as Tink's `KmsAead`).
#[async_trait]
pub trait KeyWrap: Send + Sync {
    /// Encrypts `key` under the key encryption key `name`, binding `aad`.
    async fn wrap(&self, name: &KeyName, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, KmsError>;

    /// Decrypts a key produced by [`wrap`](Self::wrap) under the same `name` and `aad`.
    async fn unwrap(&self, name: &KeyName, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, KmsError>;

    /// A number that changes when keys or versions this backend holds may have been
    /// disabled or destroyed, for a backend that can tell (the local keyring: each time
    /// it reads its file again). An [`Opener`](crate::Opener) looks at it about once a
    /// second and, when it changed, unwraps every cached data key again, so that a
    /// revoked version stops opening messages within seconds rather than at the cache's
    /// time to live. Cheap: called on the opening path. `0`, never changing, by default
    /// (Cloud KMS cannot be asked cheaply; its revocations take effect as cached keys
    /// expire).
    fn generation(&self) -> u64 {
        0
    }
}

/// Signs with an asymmetric key version and hands out its public key: what attest mode
/// needs of a KMS.
#[async_trait]
pub trait KeySign: Send + Sync {
    /// Signs `message` with the `EC_SIGN_P256_SHA256` key version `name`: ECDSA P-256
    /// over SHA-256(`message`), ASN.1 DER encoded.
    async fn sign(&self, name: &KeyVersionName, message: &[u8]) -> Result<Vec<u8>, KmsError>;

    /// The public key of the key version `name`, as a DER `SubjectPublicKeyInfo`.
    async fn public_key(&self, name: &KeyVersionName) -> Result<Vec<u8>, KmsError>;
}

/// A backend that does both, as Cloud KMS and the local keyring do. Implemented for
/// every type that implements [`KeyWrap`] and [`KeySign`]; an `Arc<dyn Kms>` converts
/// to either half.
pub trait Kms: KeyWrap + KeySign {}

impl<K: KeyWrap + KeySign + ?Sized> Kms for K {}

#[async_trait]
impl<K: KeyWrap + ?Sized> KeyWrap for Arc<K> {
    async fn wrap(&self, name: &KeyName, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        (**self).wrap(name, key, aad).await
    }

    async fn unwrap(&self, name: &KeyName, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, KmsError> {
        (**self).unwrap(name, wrapped, aad).await
    }

    fn generation(&self) -> u64 {
        (**self).generation()
    }
}

#[async_trait]
impl<K: KeySign + ?Sized> KeySign for Arc<K> {
    async fn sign(&self, name: &KeyVersionName, message: &[u8]) -> Result<Vec<u8>, KmsError> {
        (**self).sign(name, message).await
    }

    async fn public_key(&self, name: &KeyVersionName) -> Result<Vec<u8>, KmsError> {
        (**self).public_key(name).await
    }
}

/// Why a KMS call failed. Permanent and transient failures are separate variants so that
/// callers can dead-letter the first and retry the second.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// The caller may not use this key (HTTP 403).
    #[error("permission denied on KMS key {0}")]
    PermissionDenied(String),
    /// The key does not exist (HTTP 404), or the local keyring does not hold it.
    #[error("KMS key {0} not found")]
    KeyNotFound(String),
    /// The KMS refused to unwrap: the wrapped key was made under another KMS key or
    /// another tenant id, or was altered.
    #[error("KMS refused to unwrap the key under {0}: wrong tenant id, another key's wrapped key, or altered")]
    UnwrapRejected(String),
    /// The request was malformed or refused for a reason that retrying will not change.
    #[error("KMS rejected the request: {0}")]
    Rejected(String),
    /// The service could not be reached, or answered with a server error.
    #[error("KMS unavailable: {0}")]
    Unavailable(String),
    /// No answer within the deadline.
    #[error("KMS call timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Too many requests (HTTP 429 / RESOURCE_EXHAUSTED).
    #[error("KMS rate limited: {0}")]
    RateLimited(String),
    /// A CRC32C integrity field did not match: the request or response was corrupted in
    /// transit. Google recommends retrying.
    #[error("KMS integrity check failed: {0}")]
    Integrity(String),
}

impl KmsError {
    /// A stable code for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            KmsError::PermissionDenied(_) => "kms_permission_denied",
            KmsError::KeyNotFound(_) => "kms_key_not_found",
            KmsError::UnwrapRejected(_) => "unwrap_rejected",
            KmsError::Rejected(_) => "kms_rejected",
            KmsError::Unavailable(_) => "kms_unavailable",
            KmsError::Timeout(_) => "kms_timeout",
            KmsError::RateLimited(_) => "kms_rate_limited",
            KmsError::Integrity(_) => "kms_integrity",
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KmsError::Unavailable(_) | KmsError::Timeout(_) | KmsError::RateLimited(_) | KmsError::Integrity(_)
        )
    }
}

/// Wraps a backend and counts its calls, for metrics and for proving that KMS stays off
/// the per-message path.
#[derive(Debug, Default)]
pub struct Counted<K> {
    inner: K,
    wraps: AtomicU64,
    unwraps: AtomicU64,
    signs: AtomicU64,
    public_keys: AtomicU64,
}

impl<K> Counted<K> {
    /// Counts the calls made to `inner`.
    pub fn new(inner: K) -> Self {
        Self {
            inner,
            wraps: AtomicU64::new(0),
            unwraps: AtomicU64::new(0),
            signs: AtomicU64::new(0),
            public_keys: AtomicU64::new(0),
        }
    }

    /// Sign calls made so far, successful or not.
    pub fn signs(&self) -> u64 {
        self.signs.load(Ordering::Relaxed)
    }

    /// Public-key fetches made so far, successful or not.
    pub fn public_keys(&self) -> u64 {
        self.public_keys.load(Ordering::Relaxed)
    }

    /// Every call made so far.
    pub fn calls(&self) -> u64 {
        self.wraps() + self.unwraps() + self.signs() + self.public_keys()
    }

    /// Wrap calls made so far, successful or not.
    pub fn wraps(&self) -> u64 {
        self.wraps.load(Ordering::Relaxed)
    }

    /// Unwrap calls made so far, successful or not.
    pub fn unwraps(&self) -> u64 {
        self.unwraps.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl<K: KeyWrap> KeyWrap for Counted<K> {
    async fn wrap(&self, name: &KeyName, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.wraps.fetch_add(1, Ordering::Relaxed);
        self.inner.wrap(name, key, aad).await
    }

    async fn unwrap(&self, name: &KeyName, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, KmsError> {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        self.inner.unwrap(name, wrapped, aad).await
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

#[async_trait]
impl<K: KeySign> KeySign for Counted<K> {
    async fn sign(&self, name: &KeyVersionName, message: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.signs.fetch_add(1, Ordering::Relaxed);
        self.inner.sign(name, message).await
    }

    async fn public_key(&self, name: &KeyVersionName) -> Result<Vec<u8>, KmsError> {
        self.public_keys.fetch_add(1, Ordering::Relaxed);
        self.inner.public_key(name).await
    }
}
