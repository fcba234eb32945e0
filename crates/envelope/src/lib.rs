//! Seal a message for a shared Pub/Sub topic under a tenant's KMS key, and open it again.
//!
//! This crate is the heart of pubsub-envelope and knows nothing of Pub/Sub: it turns
//! `(data, attributes)` into `(data, attributes)` and back, following the wire format
//! v1 described in `docs/FORMAT.md`.
//!
//! * [`Sealer`] is the producer side. It makes a fresh data key (AES-256-GCM for
//!   [`Mode::Encrypt`], HMAC-SHA256 for [`Mode::Sign`]), wraps it once with the tenant's
//!   KMS key, and reuses it until the [`RotationPolicy`] says it is too old or too used.
//! * [`Opener`] is the consumer side. It unwraps each data key once, keeps it in an
//!   expiring cache, and authenticates every message against the key it names.
//! * [`kms`] holds the KMS abstraction and its two backends: Cloud KMS and a local
//!   keyring file for offline use.
//!
//! Every failure to open is an [`OpenError`] with a stable [`reason`](OpenError::reason)
//! code and a [`transient`](OpenError::is_transient) flag, so that callers can dead-letter
//! what will never open and retry what might.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attest;
mod clock;
mod crypto;
mod error;
pub mod format;
mod key_name;
pub mod kms;
mod open;
mod seal;
mod secret;

pub use attest::{
    Attestation, Certificate, PublicKeyError, ServiceAccountError, ServiceAccountSigner, TrustedPublicKey,
    TrustedSigners, google_cert_url, public_key_pem,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{OpenError, SealError};
pub use format::{Attributes, Mode};
pub use key_name::{KeyName, KeyNameError, KeyVersionName, KeyVersionNameError, TrustedKeys};
pub use open::{CacheSettings, CacheStats, MAX_CLOCK_SKEW, Opened, Opener, OpenerBuilder};
pub use seal::{RotationPolicy, Sealed, Sealer};
pub use secret::SecretKey;

/// The additional authenticated data the original proof of concept bound into every KMS
/// wrap. Used when no tenant id is configured.
pub const DEFAULT_TENANT_ID: &str = "tenantKey";
