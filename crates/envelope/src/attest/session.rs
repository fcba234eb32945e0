//! Session keys and the certificates a KMS key version signs for them.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, ParsedPublicKey};

use crate::format;
use crate::key_name::KeyVersionName;

/// Domain separation for certificates, apart from every message header.
const CERT_CONTEXT: &[u8] = b"pubsub-envelope/v1 attest-cert\0";
/// Bytes of an Ed25519 public key.
const PUBLIC_KEY_LEN: usize = 32;

/// A KMS key version's statement that a session key may sign for a tenant, for a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The KMS key version that signs the certificate.
    pub kms_key: KeyVersionName,
    /// The tenant the session key signs for.
    pub tenant_id: String,
    /// The session's Ed25519 public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Seal times (µs since the Unix epoch) from which messages may be signed, inclusive.
    pub not_before: u64,
    /// Seal times until which messages may be signed, inclusive.
    pub not_after: u64,
}

impl Certificate {
    /// `CERT_CONTEXT || lp(kms_key) || lp(tenant_id) || lp(public_key) || u64(not_before) || u64(not_after)`
    pub fn encode(&self) -> Vec<u8> {
        let mut out = CERT_CONTEXT.to_vec();
        for field in [self.kms_key.as_str().as_bytes(), self.tenant_id.as_bytes(), &self.public_key] {
            out.extend_from_slice(&u32::try_from(field.len()).expect("short fields").to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out
    }

    /// Parses what [`encode`](Self::encode) writes, and nothing else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes.strip_prefix(CERT_CONTEXT)?;
        let mut field = || -> Option<&[u8]> {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let value = rest.get(4..4 + len)?;
            rest = &rest[4 + len..];
            Some(value)
        };
        let kms_key = std::str::from_utf8(field()?).ok()?.parse().ok()?;
        let tenant_id = String::from_utf8(field()?.to_vec()).ok()?;
        let public_key = field()?.try_into().ok()?;
        let [before, after] = [rest.get(..8)?, rest.get(8..16)?].map(|b| u64::from_be_bytes(b.try_into().unwrap()));
        (rest.len() == 16).then_some(Self { kms_key, tenant_id, public_key, not_before: before, not_after: after })
    }
}

/// A session's Ed25519 signing key.
pub(crate) struct SessionKey {
    pair: Ed25519KeyPair,
}

impl SessionKey {
    pub(crate) fn generate() -> Self {
        Self { pair: Ed25519KeyPair::generate().expect("Ed25519 key generation") }
    }

    /// The session key of a fixed 32-byte seed (RFC 8032), for the test vectors.
    #[cfg(feature = "internals")]
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        Self { pair: Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes seed a key") }
    }

    pub(crate) fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.pair.public_key().as_ref().try_into().expect("32-byte Ed25519 public key")
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; format::ED25519_SIGNATURE_LEN] {
        self.pair.sign(message).as_ref().try_into().expect("64-byte Ed25519 signature")
    }
}

/// A certified session key, ready to verify messages.
pub(crate) fn session_verifier(certificate: &Certificate) -> ParsedPublicKey {
    ParsedPublicKey::new(&ED25519, certificate.public_key).expect("any 32 bytes parse as an Ed25519 key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate() -> Certificate {
        Certificate {
            kms_key: "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/2".parse().unwrap(),
            tenant_id: "tenant-1".into(),
            public_key: [7; 32],
            not_before: 1,
            not_after: 2,
        }
    }

    #[test]
    fn certificates_round_trip_and_parse_strictly() {
        let encoded = certificate().encode();
        assert_eq!(Certificate::decode(&encoded), Some(certificate()));
        for cut in 0..encoded.len() {
            assert_eq!(Certificate::decode(&encoded[..cut]), None, "cut at {cut}");
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(Certificate::decode(&longer), None);
        let mut other_context = encoded;
        other_context[0] ^= 1;
        assert_eq!(Certificate::decode(&other_context), None);
    }

    #[test]
    fn session_signatures_verify_under_the_certified_key_only() {
        let key = SessionKey::generate();
        let mut certificate = certificate();
        certificate.public_key = key.public_key();
        let signature = key.sign(b"message");
        assert!(session_verifier(&certificate).verify_sig(b"message", &signature).is_ok());
        assert!(session_verifier(&certificate).verify_sig(b"messagf", &signature).is_err());
        certificate.public_key = SessionKey::generate().public_key();
        assert!(session_verifier(&certificate).verify_sig(b"message", &signature).is_err());
    }
}
