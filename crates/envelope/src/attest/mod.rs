//! Attest mode: signatures that only the producing tenant could have made.
//!
//! A producer makes an Ed25519 key per session and has its KMS key version (P-256)
//! sign a short [`Certificate`] for it once; each message is then signed locally. A
//! verifier checks the certificate against the KMS key version's public key once, and
//! each message against the certified key. Or, for strict audit, every message is
//! signed by the KMS key version itself. Or, as the article sketches, a service account
//! signs each message with its own private key (RSA-SHA256), and verifiers check it
//! against the certificates Google publishes for the account.

mod pinned;
mod service_account;
mod session;
mod verify;

pub use pinned::{PublicKeyError, TrustedPublicKey, public_key_pem};
pub use service_account::{ServiceAccountError, ServiceAccountSigner, TrustedSigners, google_cert_url};
pub use session::Certificate;
pub(crate) use session::SessionKey;
pub(crate) use verify::{ServiceAccountSigned, Signed, Verifier};

use crate::key_name::KeyVersionName;

/// Who a message in attest mode was proven to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attestation {
    /// A session key that this KMS signing key version certified for this tenant.
    Session {
        /// The KMS key version that signed the session certificate.
        kms_key: KeyVersionName,
        /// The tenant the certificate names.
        tenant_id: String,
    },
    /// This KMS signing key version signed the message itself.
    Kms(KeyVersionName),
    /// This service account signed the message with its key.
    ServiceAccount {
        /// The account's email.
        signer: String,
        /// The id of the account key that signed.
        key_id: String,
    },
}

impl Attestation {
    /// The KMS key version behind the attestation, if a KMS key made it.
    pub fn kms_key(&self) -> Option<&KeyVersionName> {
        match self {
            Attestation::Session { kms_key, .. } | Attestation::Kms(kms_key) => Some(kms_key),
            Attestation::ServiceAccount { .. } => None,
        }
    }
}

/// How debug-subscriber and the logs name who vouched for a message.
impl std::fmt::Display for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attestation::Session { kms_key, tenant_id } => write!(f, "tenant {tenant_id} by {kms_key}"),
            Attestation::Kms(kms_key) => write!(f, "signed by {kms_key}"),
            Attestation::ServiceAccount { signer, key_id } => write!(f, "service account {signer} key {key_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestations_name_who_vouched() {
        let version: KeyVersionName =
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/2".parse().unwrap();
        let session = Attestation::Session { kms_key: version.clone(), tenant_id: "t".into() };
        assert_eq!(session.to_string(), format!("tenant t by {version}"));
        assert_eq!(session.kms_key(), Some(&version));
        assert_eq!(Attestation::Kms(version.clone()).to_string(), format!("signed by {version}"));
        let account = Attestation::ServiceAccount { signer: "a@p.iam".into(), key_id: "k1".into() };
        assert_eq!(account.to_string(), "service account a@p.iam key k1");
        assert_eq!(account.kms_key(), None);
    }
}
