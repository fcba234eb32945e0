//! Seal a message for a shared Pub/Sub topic under a tenant's KMS key, and open it again.
//!
//! This crate is the heart of pubsub-envelope and knows nothing of Pub/Sub: it turns
//! `(data, attributes)` into `(data, attributes)` and back, following the wire format
//! v1 described in `docs/FORMAT.md`, with test vectors in `tests/vectors/`.
//!
//! * [`Sealer`] is the producer side, one constructor per mode:
//!   [`Sealer::encrypt`] (AES-256-GCM, attributes sealed inside), [`Sealer::sign`]
//!   (HMAC-SHA256), [`Sealer::attest`] (signatures only the tenant's KMS signing key
//!   could have vouched for) and [`Sealer::service_account`]. It makes a data key,
//!   wraps it once with the tenant's KMS key, and reuses it until the
//!   [`RotationPolicy`] retires it.
//! * [`Opener`] is the consumer side. It is built for one tenant id and a set of
//!   [`TrustedKeys`], both required; it unwraps each data key once, keeps it in an
//!   expiring cache, and authenticates every message against the key it names.
//! * [`kms`] holds the two one-job KMS traits ([`kms::KeyWrap`], [`kms::KeySign`]) and
//!   their backends: Cloud KMS and a local keyring file for offline use.
//!
//! Every failure to open is an [`OpenError`] of one of four kinds (malformed, refused
//! by policy, forged, infrastructure) with a stable [`reason`](OpenError::reason) code
//! and a [`transient`](OpenError::is_transient) flag, so that callers can dead-letter
//! what will never open and retry what might. The reason codes and the wire format
//! follow the semver policy in this crate's README.
//!
//! ```
//! # use std::sync::Arc;
//! # use bytes::Bytes;
//! use pubsub_envelope::kms::local::{Keyring, LocalKms};
//! use pubsub_envelope::{Attributes, KeyName, Opener, Sealer, TrustedKeys};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("keyring.json");
//! let key: KeyName = "projects/p/locations/global/keyRings/r/cryptoKeys/tenant-1".parse()?;
//! let mut keyring = Keyring::load_or_new(&path)?;
//! keyring.create(&key)?;
//! keyring.save()?;
//! let kms = Arc::new(LocalKms::open(&path)?);
//!
//! // The producer: one KMS call per data key, not per message.
//! let mut sealer = Sealer::encrypt(kms.clone(), key.clone(), "tenant-1");
//! let attributes = Attributes::from([("lang".to_owned(), "en".to_owned())]);
//! let sealed = sealer.seal(Bytes::from_static(b"hello"), attributes).await?;
//! assert!(!sealed.attributes.contains_key("lang"), "attributes travel sealed");
//!
//! // The consumer: a tenant id and the keys it trusts, both required.
//! let opener = Opener::builder("tenant-1", TrustedKeys::from_patterns([key.as_str()])?).kms(kms).build()?;
//! let opened = opener.open(&sealed.data, &sealed.attributes).await?;
//! assert_eq!(&opened.data[..], b"hello");
//! assert_eq!(opened.attributes["lang"], "en");
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attest;
mod budget;
mod clock;
mod crypto;
mod error;
mod fingerprint;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod format;
#[cfg(not(feature = "internals"))]
mod format;
mod key_name;
pub mod kms;
pub mod limits;
mod open;
mod seal;
mod secret;
mod trust;

#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;

pub use attest::{
    Attestation, PublicKeyError, ServiceAccountError, ServiceAccountSigner, TrustedPublicKey, TrustedSigners,
    google_cert_url, public_key_pem,
};
pub use budget::{KmsBudget, KmsStats};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Forged, Infrastructure, Malformed, OpenError, Refused, SealError};
pub use fingerprint::FINGERPRINT_LEN;
pub use format::{
    AttributeError, Attributes, MAX_ATTRIBUTE_KEY_LEN, MAX_ATTRIBUTE_VALUE_LEN, MAX_ATTRIBUTES, Mode, PayloadError,
    is_reserved,
};
pub use key_name::{KeyName, KeyNameError, KeyVersionName, KeyVersionNameError};
pub use open::{BuildError, CacheSettings, CacheStats, MAX_CLOCK_SKEW, Opened, Opener, OpenerBuilder};
pub use seal::{AttestBy, RotationPolicy, Sealed, Sealer};
pub use secret::SecretKey;
pub use trust::{TrustError, TrustedKeys};

/// The additional authenticated data the original proof of concept bound into every KMS
/// wrap: the tenant id of deployments that never chose one.
pub const DEFAULT_TENANT_ID: &str = "tenantKey";
