//! Verifying attest-mode messages, with what is fetched cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};
use moka::future::Cache;

use super::session::{Certificate, session_verifier};
use super::{Attestation, TrustedPublicKey, TrustedSigners};
use crate::error::OpenError;
use crate::format::{self, Attributes};
use crate::key_name::{KeyVersionName, TrustedKeys};
use crate::kms::{Kms, KmsError};

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

fn trusted_version(text: &str, trusted: &TrustedKeys) -> Result<KeyVersionName, OpenError> {
    let kms_key: KeyVersionName = text.parse().map_err(|error: crate::KeyVersionNameError| {
        OpenError::GarbledAttribute { name: format::KMS_KEY_ATTR, why: error.to_string() }
    })?;
    if !trusted.allows(kms_key.key()) {
        return Err(OpenError::UntrustedKey(kms_key.to_string()));
    }
    Ok(kms_key)
}
