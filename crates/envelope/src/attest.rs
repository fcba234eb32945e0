//! Attest mode: signatures that only the producing tenant could have made.
//!
//! A producer makes an Ed25519 key per session and has its KMS key version (P-256)
//! sign a short [`Certificate`] for it once; each message is then signed locally. A
//! verifier checks the certificate against the KMS key version's public key once, and
//! each message against the certified key. Or, for strict audit, every message is
//! signed by the KMS key version itself.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ED25519, Ed25519KeyPair, KeyPair as _, ParsedPublicKey};
use moka::future::Cache;

use crate::error::OpenError;
use crate::format::{self, Attributes};
use crate::key_name::{KeyVersionName, TrustedKeys};
use crate::kms::{Kms, KmsError};

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

/// A session's signing key and its certificate.
pub(crate) struct SessionKey {
    pair: Ed25519KeyPair,
}

impl SessionKey {
    pub(crate) fn generate() -> Self {
        Self { pair: Ed25519KeyPair::generate().expect("Ed25519 key generation") }
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

/// Who a message in attest mode was proven to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The KMS signing key version that signed the session certificate, or the message.
    pub kms_key: KeyVersionName,
    /// The tenant the certificate names; `None` when the KMS signed the message itself.
    pub tenant_id: Option<String>,
}

impl std::fmt::Display for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tenant_id {
            Some(tenant) => write!(f, "tenant {tenant} by {}", self.kms_key),
            None => write!(f, "signed by {}", self.kms_key),
        }
    }
}

/// The message parts attest verification needs.
pub(crate) struct Signed<'a> {
    pub(crate) kms_key: &'a str,
    /// The certificate attribute's text; empty for a message the KMS signed itself.
    pub(crate) certificate: &'a str,
    pub(crate) sealed_at: u64,
    pub(crate) attributes: &'a Attributes,
    pub(crate) data: &'a [u8],
}

/// A certificate that verified, with its session key ready to use.
struct Certified {
    certificate: Certificate,
    certificate_signature: String,
    session: ParsedPublicKey,
}

/// Verifies attest-mode messages: public keys fetched once per key version (or pinned),
/// certificates verified once per session.
pub(crate) struct Verifier {
    kms: Arc<dyn Kms>,
    pinned: Vec<TrustedPublicKey>,
    public_keys: Cache<String, Arc<ParsedPublicKey>>,
    certificates: Cache<String, Arc<Certified>>,
}

impl Verifier {
    /// `pinned` public keys (DER `SubjectPublicKeyInfo`), when given, are the only ones
    /// trusted, and no public key is fetched from the KMS.
    pub(crate) fn new(kms: Arc<dyn Kms>, pinned: Vec<TrustedPublicKey>, capacity: u64) -> Self {
        Self {
            kms,
            pinned,
            public_keys: Cache::builder().max_capacity(capacity).time_to_live(Duration::from_secs(3600)).build(),
            certificates: Cache::builder().max_capacity(capacity).time_to_live(Duration::from_secs(3600)).build(),
        }
    }

    /// Checks a delegated message: its certificate (once per session), that its seal time
    /// lies within the certificate's validity, then its session signature.
    pub(crate) async fn verify_session(
        &self,
        message: &Signed<'_>,
        certificate_signature: &str,
        signature: &[u8],
        tenant_id: &str,
        trusted: &TrustedKeys,
    ) -> Result<Attestation, OpenError> {
        let kms_key = trusted_version(message.kms_key, trusted)?;
        let certified = match self.certificates.get(message.certificate).await {
            Some(hit) if hit.certificate_signature == certificate_signature && hit.certificate.kms_key == kms_key => {
                hit
            }
            _ => {
                let fresh = Arc::new(self.certify(&kms_key, message.certificate, certificate_signature).await?);
                self.certificates.insert(message.certificate.to_owned(), fresh.clone()).await;
                fresh
            }
        };
        let certificate = &certified.certificate;
        if certificate.tenant_id != tenant_id {
            return Err(OpenError::WrongTenant(certificate.tenant_id.clone()));
        }
        if !(certificate.not_before..=certificate.not_after).contains(&message.sealed_at) {
            return Err(OpenError::CertificateExpired);
        }
        let signed = format::attest_signed_bytes(
            message.kms_key,
            message.certificate,
            message.sealed_at,
            message.attributes,
            message.data,
        );
        certified.session.verify_sig(&signed, signature).map_err(|_| OpenError::Tampered)?;
        Ok(Attestation { kms_key, tenant_id: Some(certificate.tenant_id.clone()) })
    }

    /// Checks a message the KMS key version signed itself.
    pub(crate) async fn verify_kms_signed(
        &self,
        message: &Signed<'_>,
        signature: &[u8],
        trusted: &TrustedKeys,
    ) -> Result<Attestation, OpenError> {
        let kms_key = trusted_version(message.kms_key, trusted)?;
        let signed =
            format::attest_signed_bytes(message.kms_key, "", message.sealed_at, message.attributes, message.data);
        if !self.verify_p256(&kms_key, &signed, signature).await? {
            return Err(OpenError::Tampered);
        }
        Ok(Attestation { kms_key, tenant_id: None })
    }

    async fn certify(
        &self,
        kms_key: &KeyVersionName,
        text: &str,
        signature_text: &str,
    ) -> Result<Certified, OpenError> {
        let bytes = format::decode_base64(text).ok_or(OpenError::BadBase64(format::ATTEST_CERT_ATTR))?;
        let garbled = |why: &str| OpenError::GarbledAttribute { name: format::ATTEST_CERT_ATTR, why: why.into() };
        let certificate = Certificate::decode(&bytes).ok_or_else(|| garbled("not a certificate"))?;
        if certificate.kms_key != *kms_key {
            return Err(garbled("certified by another key version than kms_key names"));
        }
        let signature =
            format::decode_base64(signature_text).ok_or(OpenError::BadBase64(format::ATTEST_CERT_SIGNATURE_ATTR))?;
        if !self.verify_p256(kms_key, &bytes, &signature).await? {
            return Err(OpenError::ForgedCertificate(kms_key.to_string()));
        }
        tracing::info!(%kms_key, tenant = %certificate.tenant_id, "verified a producer's session certificate");
        let session = session_verifier(&certificate);
        Ok(Certified { certificate, certificate_signature: signature_text.to_owned(), session })
    }

    /// Whether `signature` (ECDSA P-256, DER) over `message` verifies under `kms_key`'s
    /// public key: a pinned one, or the KMS's, fetched once per key version.
    async fn verify_p256(&self, kms_key: &KeyVersionName, message: &[u8], signature: &[u8]) -> Result<bool, OpenError> {
        if !self.pinned.is_empty() {
            return Ok(self.pinned.iter().any(|key| key.0.verify_sig(message, signature).is_ok()));
        }
        let fetch = async {
            let der = self.kms.public_key(kms_key).await?;
            ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der)
                .map(Arc::new)
                .map_err(|_| KmsError::Rejected(format!("the public key of {kms_key} is not an ECDSA P-256 key")))
        };
        let key = self
            .public_keys
            .try_get_with(kms_key.to_string(), fetch)
            .await
            .map_err(|error: Arc<KmsError>| OpenError::Kms((*error).clone()))?;
        Ok(key.verify_sig(message, signature).is_ok())
    }
}

/// A KMS signing key's public key that a consumer was told to trust, instead of asking
/// the KMS for it.
#[derive(Clone)]
pub struct TrustedPublicKey(ParsedPublicKey);

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
    /// Parses a PEM `PUBLIC KEY` block holding an ECDSA P-256 `SubjectPublicKeyInfo`, as
    /// Cloud KMS's GetPublicKey and `publisher keyring public-key` print it.
    pub fn from_pem(pem: &[u8]) -> Result<Self, PublicKeyError> {
        use rustls_pki_types::SubjectPublicKeyInfoDer;
        use rustls_pki_types::pem::PemObject as _;
        let der =
            SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|error| PublicKeyError::NotPem(error.to_string()))?;
        ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der.as_ref()).map(Self).map_err(|_| PublicKeyError::NotP256)
    }
}

fn trusted_version(text: &str, trusted: &TrustedKeys) -> Result<KeyVersionName, OpenError> {
    let kms_key: KeyVersionName = text.parse().map_err(|error: crate::KeyVersionNameError| {
        OpenError::GarbledAttribute { name: format::KMS_KEY_ATTR, why: error.to_string() }
    })?;
    if !trusted.allows(kms_key.key()) {
        return Err(OpenError::UntrustedKey(kms_key.to_string()));
    }
    Ok(kms_key)
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
