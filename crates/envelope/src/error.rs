//! What can go wrong when sealing or opening, with stable reason codes.

use crate::format::{AttributeError, Mode, PayloadError};
use crate::key_name::KeyNameError;
use crate::kms::KmsError;

/// Why a message could not be opened.
///
/// [`reason`](Self::reason) is a short code that never changes between releases, for logs,
/// metrics and the dead-letter topic's `reject_reason` attribute.
/// [`is_transient`](Self::is_transient) separates failures worth retrying (KMS
/// unreachable) from messages that will never open.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenError {
    /// A required attribute is absent.
    #[error("missing attribute `{0}`")]
    MissingAttribute(&'static str),
    /// `envelope_version` names a version this build does not read.
    #[error("unknown envelope version {0:?}")]
    UnknownVersion(String),
    /// A binary attribute is not strict standard base64.
    #[error("attribute `{0}` is not valid standard base64")]
    BadBase64(&'static str),
    /// An attribute is present but its value is malformed.
    #[error("attribute `{name}` is malformed: {why}")]
    GarbledAttribute {
        /// The attribute.
        name: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// An encrypted message carries a visible attribute that is not part of the envelope.
    #[error("encrypted message carries an unexpected visible attribute `{0}`")]
    UnexpectedAttribute(String),
    /// The message's mode is not one this opener was told to accept.
    #[error("{0} messages are not accepted here")]
    ModeNotAccepted(Mode),
    /// The message names a KMS key outside the trusted set.
    #[error("KMS key {0} is not trusted")]
    UntrustedKey(String),
    /// The payload is shorter than the envelope's fixed overhead.
    #[error("encrypted payload of {0} bytes is shorter than the envelope overhead")]
    Truncated(usize),
    /// Authentication failed: data, attributes or wrapped key were altered, or spliced
    /// from another message.
    #[error("message failed authentication (altered, or spliced from another message)")]
    Tampered,
    /// Sealed longer ago than the opener's maximum message age: stale, or an old message
    /// published again.
    #[error("sealed {age_secs} s ago, more than the {max_secs} s allowed")]
    TooOld {
        /// Whole seconds since the message was sealed.
        age_secs: u64,
        /// The opener's maximum age, in whole seconds.
        max_secs: u64,
    },
    /// Sealed further ahead of this opener's clock than [`MAX_CLOCK_SKEW`]: the producer's
    /// clock is wrong, and the message would otherwise outlive the maximum age.
    ///
    /// [`MAX_CLOCK_SKEW`]: crate::MAX_CLOCK_SKEW
    #[error("sealed {ahead_secs} s in the future")]
    SealedInFuture {
        /// Whole seconds between this opener's clock and the seal time.
        ahead_secs: u64,
    },
    /// An attest certificate whose signature does not verify under the KMS key version
    /// it names: forged, or signed by another key.
    #[error("attest certificate is not signed by {0}")]
    ForgedCertificate(String),
    /// An attest certificate for another tenant than this consumer's.
    #[error("attest certificate is for tenant {0:?}, not this consumer's")]
    WrongTenant(String),
    /// A service account this consumer was not told to trust, or one naming another
    /// certificate URL than it was trusted with.
    #[error("service account {0} is not a trusted signer (or names another certificate URL)")]
    UntrustedSigner(String),
    /// The service account's published certificates lack the key that signed.
    #[error("service account {signer} publishes no certificate for key {key_id}")]
    UnknownSigningKey {
        /// The account.
        signer: String,
        /// The key id the message names.
        key_id: String,
    },
    /// A service account's certificates could not be fetched or read.
    #[error("cannot get the signer's certificates: {0}")]
    CertificatesUnavailable(String),
    /// A message sealed outside its attest certificate's validity.
    #[error("message sealed outside its attest certificate's validity")]
    CertificateExpired,
    /// The authenticated plaintext does not parse: the producer is broken.
    #[error("sealed payload is malformed: {0}")]
    MalformedPayload(#[from] PayloadError),
    /// Unwrapping the data key failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
}

impl OpenError {
    /// A stable code for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::MissingAttribute(_) => "missing_attribute",
            OpenError::UnknownVersion(_) => "unknown_version",
            OpenError::BadBase64(_) => "bad_base64",
            OpenError::GarbledAttribute { .. } => "garbled_attribute",
            OpenError::UnexpectedAttribute(_) => "unexpected_attribute",
            OpenError::ModeNotAccepted(_) => "mode_not_accepted",
            OpenError::UntrustedKey(_) => "untrusted_key",
            OpenError::Truncated(_) => "truncated",
            OpenError::Tampered => "tampered",
            OpenError::MalformedPayload(_) => "malformed_payload",
            OpenError::TooOld { .. } => "too_old",
            OpenError::ForgedCertificate(_) => "forged_certificate",
            OpenError::WrongTenant(_) => "wrong_tenant",
            OpenError::CertificateExpired => "certificate_expired",
            OpenError::UntrustedSigner(_) => "untrusted_signer",
            OpenError::UnknownSigningKey { .. } => "unknown_signing_key",
            OpenError::CertificatesUnavailable(_) => "certificates_unavailable",
            OpenError::SealedInFuture { .. } => "sealed_in_future",
            OpenError::Kms(error) => error.reason(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            OpenError::Kms(error) => error.is_transient(),
            OpenError::CertificatesUnavailable(_) => true,
            _ => false,
        }
    }
}

/// Why a message could not be sealed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SealError {
    /// The producer's attributes break the format's rules.
    #[error("cannot seal these attributes: {0}")]
    Attributes(#[from] AttributeError),
    /// The KMS key name is malformed.
    #[error(transparent)]
    KeyName(#[from] KeyNameError),
    /// Wrapping a new data key failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The sealer was built with the wrong kind of key for its mode: attest mode signs
    /// with a key version ([`Sealer::attest`](crate::Sealer::attest)), the others wrap.
    #[error("{0} mode needs {kind}", kind = if *.0 == Mode::Attest { "a KMS signing key version (Sealer::attest)" } else { "a KMS key encryption key (Sealer::new)" })]
    KeyKind(Mode),
}

impl SealError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SealError::Kms(error) if error.is_transient())
    }
}
