//! Attest mode: signatures that only the producing tenant could have made.
//!
//! A producer makes an Ed25519 key per session and has its KMS key version (P-256)
//! sign a short [`Certificate`] for it once; each message is then signed locally. A
//! verifier checks the certificate against the KMS key version's public key once, and
//! each message against the certified key. Or, for strict audit, every message is
//! signed by the KMS key version itself. Or, as the article sketches, a service account
//! signs each message with its own private key (RSA-SHA256), and verifiers check it
//! against the certificates Google publishes for the account.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

impl std::fmt::Display for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attestation::Session { kms_key, tenant_id } => write!(f, "tenant {tenant_id} by {kms_key}"),
            Attestation::Kms(kms_key) => write!(f, "signed by {kms_key}"),
            Attestation::ServiceAccount { signer, key_id } => write!(f, "service account {signer} key {key_id}"),
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

/// What a service-account signature names.
pub(crate) struct ServiceAccountSigned<'a> {
    pub(crate) signer: &'a str,
    pub(crate) key_id: &'a str,
    pub(crate) cert_url: &'a str,
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
    signers: TrustedSigners,
    /// Each trusted signer's published certificates, by URL.
    published: Cache<String, Arc<Published>>,
    http: reqwest::Client,
}

/// A service account's certificates as last fetched: key id to DER.
struct Published {
    by_key_id: HashMap<String, Vec<u8>>,
    fetched: Instant,
}

/// How often a signer's certificates may be fetched again for a key id they lacked
/// (Google rotates account keys; a forger should not make us fetch per message).
const REFETCH_AFTER: Duration = Duration::from_secs(60);

impl Verifier {
    /// `pinned` public keys (DER `SubjectPublicKeyInfo`), when given, are the only ones
    /// trusted, and no public key is fetched from the KMS.
    pub(crate) fn new(
        kms: Arc<dyn Kms>,
        pinned: Vec<TrustedPublicKey>,
        signers: TrustedSigners,
        capacity: u64,
    ) -> Self {
        let hour = Duration::from_secs(3600);
        Self {
            kms,
            pinned,
            public_keys: Cache::builder().max_capacity(capacity).time_to_live(hour).build(),
            certificates: Cache::builder().max_capacity(capacity).time_to_live(hour).build(),
            signers,
            published: Cache::builder().max_capacity(capacity).time_to_live(hour).build(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client"),
        }
    }

    /// Checks a message a service account signed: the signer is trusted and names the
    /// certificate URL it was trusted with; the key id is among its certificates; the
    /// RSA-SHA256 signature verifies under that certificate's key.
    pub(crate) async fn verify_service_account(
        &self,
        named: &ServiceAccountSigned<'_>,
        message: &Signed<'_>,
        signature: &[u8],
    ) -> Result<Attestation, OpenError> {
        if self.signers.cert_url(named.signer) != Some(named.cert_url) {
            return Err(OpenError::UntrustedSigner(named.signer.to_owned()));
        }
        let mut published = self.published(named.cert_url, false).await?;
        if !published.by_key_id.contains_key(named.key_id) && published.fetched.elapsed() >= REFETCH_AFTER {
            published = self.published(named.cert_url, true).await?;
        }
        let der = published.by_key_id.get(named.key_id).ok_or_else(|| OpenError::UnknownSigningKey {
            signer: named.signer.to_owned(),
            key_id: named.key_id.to_owned(),
        })?;
        let certificate = rustls_pki_types::CertificateDer::from(der.as_slice());
        let certificate = webpki::EndEntityCert::try_from(&certificate)
            .map_err(|error| OpenError::CertificatesUnavailable(format!("{}: {error}", named.cert_url)))?;
        let signed = format::service_account_signed_bytes(
            named.signer,
            named.key_id,
            message.sealed_at,
            message.attributes,
            message.data,
        );
        certificate
            .verify_signature(webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256, &signed, signature)
            .map_err(|_| OpenError::Tampered)?;
        Ok(Attestation::ServiceAccount { signer: named.signer.to_owned(), key_id: named.key_id.to_owned() })
    }

    /// The certificates published at `url`: cached, or fetched (again, if `refresh`).
    async fn published(&self, url: &str, refresh: bool) -> Result<Arc<Published>, OpenError> {
        if refresh {
            self.published.invalidate(url).await;
        }
        let fetch = async {
            let unavailable = |why: String| OpenError::CertificatesUnavailable(format!("{url}: {why}"));
            let response = self.http.get(url).send().await.map_err(|error| unavailable(error.to_string()))?;
            let response = response.error_for_status().map_err(|error| unavailable(error.to_string()))?;
            let text = response.text().await.map_err(|error| unavailable(error.to_string()))?;
            let pems: HashMap<String, String> = serde_json::from_str(&text)
                .map_err(|error| unavailable(format!("not a JSON map of certificates: {error}")))?;
            let mut by_key_id = HashMap::new();
            for (key_id, pem) in pems {
                use rustls_pki_types::pem::PemObject as _;
                let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|error| unavailable(format!("certificate {key_id}: {error}")))?;
                by_key_id.insert(key_id, der.to_vec());
            }
            tracing::info!(%url, keys = by_key_id.len(), "fetched a service account's certificates");
            Ok(Arc::new(Published { by_key_id, fetched: Instant::now() }))
        };
        self.published.try_get_with(url.to_owned(), fetch).await.map_err(|error: Arc<OpenError>| (*error).clone())
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
        Ok(Attestation::Session { kms_key, tenant_id: certificate.tenant_id.clone() })
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
        Ok(Attestation::Kms(kms_key))
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

/// The service accounts a consumer accepts attest signatures from, each with the URL of
/// its published certificates.
#[derive(Debug, Clone, Default)]
pub struct TrustedSigners(HashMap<String, String>);

/// Where Google publishes a service account's X.509 certificates.
pub fn google_cert_url(email: &str) -> String {
    format!("https://www.googleapis.com/robot/v1/metadata/x509/{}", email.replace('@', "%40"))
}

impl TrustedSigners {
    /// Trusts `email`, whose certificates are at `cert_url` (Google's, by default:
    /// [`google_cert_url`]).
    pub fn trust(mut self, email: impl Into<String>, cert_url: Option<String>) -> Self {
        let email = email.into();
        let url = cert_url.unwrap_or_else(|| google_cert_url(&email));
        self.0.insert(email, url);
        self
    }

    fn cert_url(&self, email: &str) -> Option<&str> {
        self.0.get(email).map(String::as_str)
    }
}

/// A service account's own key, signing attest messages in its name.
pub struct ServiceAccountSigner {
    email: String,
    key_id: String,
    cert_url: String,
    key: aws_lc_rs::signature::RsaKeyPair,
}

/// Why a service-account key file cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a usable service-account key: {0}")]
pub struct ServiceAccountError(String);

impl ServiceAccountSigner {
    /// Reads a service-account key file's JSON (`client_email`, `private_key_id`,
    /// `private_key` as PKCS#8 PEM, and `client_x509_cert_url` if present).
    pub fn from_json(json: &str) -> Result<Self, ServiceAccountError> {
        use rustls_pki_types::PrivatePkcs8KeyDer;
        use rustls_pki_types::pem::PemObject as _;
        #[derive(serde::Deserialize)]
        struct File {
            client_email: String,
            private_key_id: String,
            private_key: zeroize::Zeroizing<String>,
            client_x509_cert_url: Option<String>,
        }
        let file: File = serde_json::from_str(json).map_err(|error| ServiceAccountError(error.to_string()))?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(file.private_key.as_bytes())
            .map_err(|error| ServiceAccountError(format!("private_key: {error}")))?;
        let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|error| ServiceAccountError(format!("private_key is not an RSA key: {error}")))?;
        let cert_url = file.client_x509_cert_url.unwrap_or_else(|| google_cert_url(&file.client_email));
        Ok(Self { email: file.client_email, key_id: file.private_key_id, cert_url, key })
    }

    /// Names `url` as where the account's certificates are published, instead of the
    /// key file's `client_x509_cert_url` (Google's).
    pub fn with_cert_url(mut self, url: impl Into<String>) -> Self {
        self.cert_url = url.into();
        self
    }

    /// The account's email.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The signature attributes of a message, and its RSA-SHA256 signature.
    pub(crate) fn sign(&self, sealed_at: u64, attributes: &Attributes, data: &[u8]) -> [(&'static str, String); 4] {
        let signed = format::service_account_signed_bytes(&self.email, &self.key_id, sealed_at, attributes, data);
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                &signed,
                &mut signature,
            )
            .expect("RSA signs");
        [
            (format::ATTEST_SIGNER_ATTR, self.email.clone()),
            (format::ATTEST_KEY_ID_ATTR, self.key_id.clone()),
            (format::ATTEST_CERT_URL_ATTR, self.cert_url.clone()),
            (format::SIGNATURE_ATTR, format::encode_base64(&signature)),
        ]
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
