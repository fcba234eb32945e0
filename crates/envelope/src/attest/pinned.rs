//! Public keys a consumer pins instead of fetching them from the KMS.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};

use crate::format;
use crate::key_name::KeyVersionName;

/// The public key of one KMS signing key version, which a consumer was told to trust
/// instead of asking the KMS for it.
///
/// A pinned key vouches only for messages and certificates that name its own key
/// version: a message naming another version is refused (`untrusted_key`) by an opener
/// that pins keys, never checked against whichever pinned key happens to verify.
#[derive(Clone)]
pub struct TrustedPublicKey {
    pub(super) version: KeyVersionName,
    pub(super) key: ParsedPublicKey,
}

/// A DER `SubjectPublicKeyInfo` as a PEM `PUBLIC KEY` block, as Cloud KMS prints it.
pub fn public_key_pem(der: &[u8]) -> String {
    let text = format::encode_base64(der);
    let lines: Vec<&str> = text.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).expect("ASCII")).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

/// Why a file is not a [`TrustedPublicKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// No PEM `PUBLIC KEY` block.
    #[error("not a PEM public key: {0}")]
    NotPem(String),
    /// A public key of another kind.
    #[error("not an ECDSA P-256 public key")]
    NotP256,
}

impl TrustedPublicKey {
    /// The public key of `version`: a PEM `PUBLIC KEY` block holding an ECDSA P-256
    /// `SubjectPublicKeyInfo`, as Cloud KMS's GetPublicKey and `publisher keyring
    /// public-key` print it.
    pub fn from_pem(version: KeyVersionName, pem: &[u8]) -> Result<Self, PublicKeyError> {
        use rustls_pki_types::SubjectPublicKeyInfoDer;
        use rustls_pki_types::pem::PemObject as _;
        let der =
            SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|error| PublicKeyError::NotPem(error.to_string()))?;
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der.as_ref()).map_err(|_| PublicKeyError::NotP256)?;
        Ok(Self { version, key })
    }

    /// The key version this key belongs to.
    pub fn version(&self) -> &KeyVersionName {
        &self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_public_key_pins_again() {
        use aws_lc_rs::encoding::AsDer as _;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let der = pair.public_key().as_der().unwrap();
        let pem = public_key_pem(der.as_ref());
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|line| line.len() <= 64), "64-character lines, as Cloud KMS prints them");
        let version: KeyVersionName =
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".parse().unwrap();
        let pinned = TrustedPublicKey::from_pem(version.clone(), pem.as_bytes()).unwrap();
        assert_eq!(pinned.version(), &version);
        let signature = pair.sign(&aws_lc_rs::rand::SystemRandom::new(), b"m").unwrap();
        assert!(pinned.key.verify_sig(b"m", signature.as_ref()).is_ok(), "the same key comes back");
    }
}
