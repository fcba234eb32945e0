//! What can go wrong when sealing or opening, grouped by kind, with stable reason codes.
//!
//! An [`OpenError`] is one of four kinds, as a dead-letter handler needs them: the
//! message is [`Malformed`] (it breaks the format), [`Refused`] by this opener's policy
//! (it may be genuine, but is not for here), [`Forged`] (it fails authentication), or
//! the opener could not tell because of its [`Infrastructure`] (a KMS or a certificate
//! server). Each variant has a reason code that never changes between releases
//! (`docs/FORMAT.md` lists them with the step that gives each) and only
//! infrastructure failures can be transient.

use crate::format::{AttributeError, Mode, PayloadError};
use crate::key_name::KeyName;
use crate::kms::KmsError;

/// Why a message could not be opened.
///
/// [`reason`](Self::reason) is a short code that never changes between releases, for
/// logs, metrics and the dead-letter topic's `reject_reason` attribute.
/// [`is_transient`](Self::is_transient) separates failures worth retrying (KMS
/// unreachable) from messages that will never open.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The message breaks the wire format.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The message is well formed but this opener's policy refuses it.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The message fails authentication.
    #[error(transparent)]
    Forged(#[from] Forged),
    /// A service the opener depends on failed or refused.
    #[error(transparent)]
    Infrastructure(#[from] Infrastructure),
}

impl OpenError {
    /// A stable code for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::Malformed(error) => error.reason(),
            OpenError::Refused(error) => error.reason(),
            OpenError::Forged(error) => error.reason(),
            OpenError::Infrastructure(error) => error.reason(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            OpenError::Infrastructure(error) => error.is_transient(),
            OpenError::Malformed(_) | OpenError::Refused(_) | OpenError::Forged(_) => false,
        }
    }
}

impl From<KmsError> for OpenError {
    fn from(error: KmsError) -> Self {
        OpenError::Infrastructure(Infrastructure::Kms(error))
    }
}

impl From<PayloadError> for OpenError {
    fn from(error: PayloadError) -> Self {
        OpenError::Malformed(Malformed::Payload(error))
    }
}

/// The message breaks the wire format: its producer is broken, or someone altered it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
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
    /// An attribute that this message's mode does not carry: any visible producer
    /// attribute in encrypt mode, or a reserved name that is not the mode's own.
    #[error("unexpected attribute `{0}`")]
    UnexpectedAttribute(String),
    /// The payload is shorter than the envelope's fixed overhead.
    #[error("encrypted payload of {0} bytes is shorter than the envelope overhead")]
    Truncated(usize),
    /// The authenticated plaintext does not parse: the producer is broken.
    #[error("sealed payload is malformed: {0}")]
    Payload(PayloadError),
}

impl Malformed {
    /// A stable code for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::MissingAttribute(_) => "missing_attribute",
            Malformed::UnknownVersion(_) => "unknown_version",
            Malformed::BadBase64(_) => "bad_base64",
            Malformed::GarbledAttribute { .. } => "garbled_attribute",
            Malformed::UnexpectedAttribute(_) => "unexpected_attribute",
            Malformed::Truncated(_) => "truncated",
            Malformed::Payload(PayloadError::NotUtf8) => "not_utf8",
            Malformed::Payload(_) => "malformed_payload",
        }
    }
}

/// The message is well formed, and may be genuine, but this opener does not take it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The message's mode is not one this opener was told to accept.
    #[error("{0} messages are not accepted here")]
    ModeNotAccepted(Mode),
    /// The message names a KMS key (or, attest mode, a key version of a key) outside
    /// the trusted set, or one with no pinned public key where keys are pinned.
    #[error("KMS key {0} is not trusted")]
    UntrustedKey(KeyName),
    /// A service account this opener was not told to trust, or one naming another
    /// certificate URL than it was trusted with.
    #[error("service account {0} is not a trusted signer (or names another certificate URL)")]
    UntrustedSigner(String),
    /// An attest certificate for another tenant than this opener's.
    #[error("attest certificate is for tenant {0:?}, not this consumer's")]
    WrongTenant(String),
    /// A message sealed outside its attest certificate's validity.
    #[error("message sealed outside its attest certificate's validity")]
    CertificateExpired,
    /// An attest session certificate valid for longer than the opener allows
    /// ([`OpenerBuilder::max_certificate_lifetime`](crate::OpenerBuilder::max_certificate_lifetime)):
    /// its producer chose a rotation age that would let a stolen session key sign for
    /// that long.
    #[error("attest certificate is valid for {lifetime_secs} s, more than the {max_secs} s allowed")]
    CertificateLifetimeTooLong {
        /// Whole seconds from the certificate's `not_before` to its `not_after`.
        lifetime_secs: u64,
        /// The opener's maximum, in whole seconds.
        max_secs: u64,
    },
    /// Sealed longer ago than the opener's maximum message age: stale, or an old
    /// message published again.
    #[error("sealed {age_secs} s ago, more than the {max_secs} s allowed")]
    TooOld {
        /// Whole seconds since the message was sealed.
        age_secs: u64,
        /// The opener's maximum age, in whole seconds.
        max_secs: u64,
    },
    /// Sealed further ahead of this opener's clock than [`MAX_CLOCK_SKEW`]: the
    /// producer's clock is wrong, and the message would otherwise outlive the maximum
    /// age.
    ///
    /// [`MAX_CLOCK_SKEW`]: crate::MAX_CLOCK_SKEW
    #[error("sealed {ahead_secs} s in the future")]
    SealedInFuture {
        /// Whole seconds between this opener's clock and the seal time.
        ahead_secs: u64,
    },
    /// The trust entry this message's key falls under has had so many KMS calls
    /// refused lately that its data keys not yet cached are refused without asking
    /// ([`KmsBudget`](crate::KmsBudget)): someone is publishing junk under its keys.
    /// The message may be genuine: redrive it once the flood is over.
    #[error("KMS failure budget of trust entry `{0}` is spent (junk under its keys?): redrive later")]
    KmsBudgetExhausted(String),
}

impl Refused {
    /// A stable code for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::ModeNotAccepted(_) => "mode_not_accepted",
            Refused::UntrustedKey(_) => "untrusted_key",
            Refused::UntrustedSigner(_) => "untrusted_signer",
            Refused::WrongTenant(_) => "wrong_tenant",
            Refused::CertificateExpired => "certificate_expired",
            Refused::CertificateLifetimeTooLong { .. } => "certificate_lifetime_too_long",
            Refused::TooOld { .. } => "too_old",
            Refused::SealedInFuture { .. } => "sealed_in_future",
            Refused::KmsBudgetExhausted(_) => "kms_budget_exhausted",
        }
    }
}

/// The message fails authentication: altered, spliced from other messages, or made by
/// someone without the key it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Forged {
    /// The tag or signature does not verify: data, attributes or wrapped key were
    /// altered, or spliced from another message.
    #[error("message failed authentication (altered, or spliced from another message)")]
    Tampered,
    /// An attest certificate whose signature does not verify under the KMS key version
    /// it names: forged, or signed by another key.
    #[error("attest certificate is not signed by {0}")]
    ForgedCertificate(String),
    /// The service account's published certificates lack the key that signed.
    #[error("service account {signer} publishes no certificate for key {key_id}")]
    UnknownSigningKey {
        /// The account.
        signer: String,
        /// The key id the message names.
        key_id: String,
    },
}

impl Forged {
    /// A stable code for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Forged::Tampered => "tampered",
            Forged::ForgedCertificate(_) => "forged_certificate",
            Forged::UnknownSigningKey { .. } => "unknown_signing_key",
        }
    }
}

/// A service the opener depends on failed or refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Infrastructure {
    /// Unwrapping a data key, or fetching a public key, failed.
    #[error(transparent)]
    Kms(KmsError),
    /// A service account's certificates could not be fetched or read.
    #[error("cannot get the signer's certificates: {0}")]
    CertificatesUnavailable(String),
}

impl Infrastructure {
    /// A stable code for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Infrastructure::Kms(error) => error.reason(),
            Infrastructure::CertificatesUnavailable(_) => "certificates_unavailable",
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Infrastructure::Kms(error) => error.is_transient(),
            Infrastructure::CertificatesUnavailable(_) => true,
        }
    }
}

/// Why a message could not be sealed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The producer's attributes break the format's rules.
    #[error("cannot seal these attributes: {0}")]
    Attributes(#[from] AttributeError),
    /// Wrapping a new data key, or signing, failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
}

impl SealError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SealError::Kms(error) if error.is_transient())
    }
}
