//! Verifying attest-mode messages, with what is fetched cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};
use moka::future::Cache;

use crate::budget::Spender;

use super::session::{Certificate, session_verifier};
use super::{Attestation, TrustedPublicKey, TrustedSigners};
use crate::clock::Clock;
use crate::error::{Forged, Infrastructure, Malformed, OpenError, Refused};
use crate::format::{self, Attributes, Flavour};
use crate::key_name::KeyVersionName;
use crate::kms::{KeySign, KmsError};
use crate::trust::TrustedKeys;

/// The message parts attest verification needs.
pub(crate) struct Signed<'a> {
    pub(crate) kms_key: &'a str,
    /// The certificate attribute's text (session flavour); unused otherwise.
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
    /// Where key versions' public keys come from when none is pinned.
    kms: Option<Arc<dyn KeySign>>,
    /// Pinned public keys, by the key version each belongs to.
    pinned: HashMap<KeyVersionName, ParsedPublicKey>,
    public_keys: Cache<String, Arc<ParsedPublicKey>>,
    certificates: Cache<String, Arc<Certified>>,
    signers: TrustedSigners,
    /// Each trusted signer's published certificates, by URL.
    published: Cache<String, Arc<Published>>,
    /// Fetches that failed, by URL: not tried again before their backoff has passed, so
    /// that a certificate server that is down is not asked once per message. Bounded by
    /// the trust list: only trusted signers' URLs are ever fetched.
    failed: std::sync::Mutex<HashMap<String, Failed>>,
    http: reqwest::Client,
    /// Longest validity of a session certificate this opener takes.
    max_certificate_lifetime: Duration,
    /// Measures when certificates were fetched, for [`REFETCH_AFTER`].
    clock: Arc<dyn Clock>,
    /// The opener's KMS budget, which public-key fetches spend too.
    spender: Arc<Spender>,
    /// Session certificates found verified in the cache, and verified afresh.
    pub(crate) certificate_hits: AtomicU64,
    pub(crate) certificate_misses: AtomicU64,
}

/// A service account's certificates as last fetched: key id to DER.
struct Published {
    by_key_id: HashMap<String, Vec<u8>>,
    fetched: Instant,
}

/// How often a signer's certificates may be fetched again for a key id they lacked
/// (Google rotates account keys; a forger should not make us fetch per message).
const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// A fetch that failed, and when to try again.
struct Failed {
    error: OpenError,
    retry_at: Instant,
    /// The wait after this failure; doubled after the next, up to [`MAX_BACKOFF`].
    backoff: Duration,
}

/// The wait after a first failed fetch.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between fetches of a signer's certificates that keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Verifier {
    /// `pinned` public keys, when given, are the only ones trusted, each for its own
    /// key version, and no public key is fetched from `kms`.
    pub(crate) fn new(
        kms: Option<Arc<dyn KeySign>>,
        pinned: Vec<TrustedPublicKey>,
        signers: TrustedSigners,
        capacity: u64,
        max_certificate_lifetime: Duration,
        clock: Arc<dyn Clock>,
        spender: Arc<Spender>,
    ) -> Self {
        let hour = Duration::from_secs(3600);
        Self {
            kms,
            pinned: pinned.into_iter().map(|pinned| (pinned.version, pinned.key)).collect(),
            public_keys: Cache::builder().max_capacity(capacity).time_to_live(hour).build(),
            certificates: Cache::builder().max_capacity(capacity).time_to_live(hour).build(),
            signers,
            published: Cache::builder().max_capacity(capacity).time_to_live(hour).build(),
            failed: std::sync::Mutex::new(HashMap::new()),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client"),
            max_certificate_lifetime,
            clock,
            spender,
            certificate_hits: AtomicU64::new(0),
            certificate_misses: AtomicU64::new(0),
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
            return Err(Refused::UntrustedSigner(named.signer.to_owned()).into());
        }
        let mut published = self.published(named.cert_url, false).await?;
        let age = self.clock.now().saturating_duration_since(published.fetched);
        if !published.by_key_id.contains_key(named.key_id) && age >= REFETCH_AFTER {
            published = self.published(named.cert_url, true).await?;
        }
        let der = published.by_key_id.get(named.key_id).ok_or_else(|| Forged::UnknownSigningKey {
            signer: named.signer.to_owned(),
            key_id: named.key_id.to_owned(),
        })?;
        let certificate = rustls_pki_types::CertificateDer::from(der.as_slice());
        let certificate = webpki::EndEntityCert::try_from(&certificate)
            .map_err(|error| Infrastructure::CertificatesUnavailable(format!("{}: {error}", named.cert_url)))?;
        let signed = format::signed_bytes(
            Flavour::AttestServiceAccount,
            named.signer,
            named.key_id,
            message.sealed_at,
            message.attributes,
            message.data,
        );
        certificate
            .verify_signature(webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256, &signed, signature)
            .map_err(|_| Forged::Tampered)?;
        Ok(Attestation::ServiceAccount { signer: named.signer.to_owned(), key_id: named.key_id.to_owned() })
    }

    /// The certificates published at `url`: cached, or fetched (again, if `refresh`). A
    /// fetch that failed is not tried again before its backoff (1 s, doubling to 60 s)
    /// has passed: until then its error is given back at once.
    async fn published(&self, url: &str, refresh: bool) -> Result<Arc<Published>, OpenError> {
        let now = self.clock.now();
        if let Some(failed) = self.lock_failed().get(url).filter(|failed| now < failed.retry_at) {
            return Err(failed.error.clone());
        }
        if refresh {
            self.published.invalidate(url).await;
        }
        let fetch = async {
            let unavailable =
                |why: String| OpenError::from(Infrastructure::CertificatesUnavailable(format!("{url}: {why}")));
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
            Ok(Arc::new(Published { by_key_id, fetched: self.clock.now() }))
        };
        let fetched: Result<_, Arc<OpenError>> = self.published.try_get_with(url.to_owned(), fetch).await;
        let mut failed = self.lock_failed();
        match fetched {
            Ok(published) => {
                failed.remove(url);
                Ok(published)
            }
            Err(error) => {
                let backoff = failed.get(url).map_or(FIRST_BACKOFF, |last| (last.backoff * 2).min(MAX_BACKOFF));
                let error = (*error).clone();
                tracing::warn!(%url, %error, backoff_secs = backoff.as_secs(), "fetching certificates failed; not again before the backoff");
                failed.insert(
                    url.to_owned(),
                    Failed { error: error.clone(), retry_at: self.clock.now() + backoff, backoff },
                );
                Err(error)
            }
        }
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failed>> {
        self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a delegated message: its certificate (once per session), its tenant, that
    /// it is valid no longer than this opener allows, that the seal time lies within its
    /// validity, then the session signature.
    pub(crate) async fn verify_session(
        &self,
        message: &Signed<'_>,
        certificate_signature: &str,
        signature: &[u8],
        tenant_id: &str,
        trusted: &TrustedKeys,
    ) -> Result<Attestation, OpenError> {
        let (kms_key, entry, tenant_id) = trusted_version(message.kms_key, trusted, tenant_id)?;
        // A certificate verified before vouches only for messages that name the same
        // key version and carry the same signature of it: a tenant's own certificate must
        // not vouch for a message that names another tenant's trusted key.
        let certified = match self.certificates.get(message.certificate).await {
            Some(hit) if hit.certificate_signature == certificate_signature && hit.certificate.kms_key == kms_key => {
                self.certificate_hits.fetch_add(1, Ordering::Relaxed);
                hit
            }
            _ => {
                self.certificate_misses.fetch_add(1, Ordering::Relaxed);
                let fresh = Arc::new(self.certify(&kms_key, entry, message.certificate, certificate_signature).await?);
                self.certificates.insert(message.certificate.to_owned(), fresh.clone()).await;
                fresh
            }
        };
        let certificate = &certified.certificate;
        if certificate.tenant_id != tenant_id {
            return Err(Refused::WrongTenant(certificate.tenant_id.clone()).into());
        }
        let lifetime = Duration::from_micros(certificate.not_after.saturating_sub(certificate.not_before));
        if lifetime > self.max_certificate_lifetime {
            return Err(Refused::CertificateLifetimeTooLong {
                lifetime_secs: lifetime.as_secs(),
                max_secs: self.max_certificate_lifetime.as_secs(),
            }
            .into());
        }
        if !(certificate.not_before..=certificate.not_after).contains(&message.sealed_at) {
            return Err(Refused::CertificateExpired.into());
        }
        let signed = format::signed_bytes(
            Flavour::AttestSession,
            message.kms_key,
            message.certificate,
            message.sealed_at,
            message.attributes,
            message.data,
        );
        certified.session.verify_sig(&signed, signature).map_err(|_| Forged::Tampered)?;
        Ok(Attestation::Session { kms_key, tenant_id: certificate.tenant_id.clone() })
    }

    /// Checks a message the KMS key version signed itself, for `tenant_id` (bound into
    /// the signed header, so that a message signed for one tenant opens for no other).
    pub(crate) async fn verify_kms_signed(
        &self,
        message: &Signed<'_>,
        signature: &[u8],
        tenant_id: &str,
        trusted: &TrustedKeys,
    ) -> Result<Attestation, OpenError> {
        let (kms_key, entry, tenant_id) = trusted_version(message.kms_key, trusted, tenant_id)?;
        let signed = format::signed_bytes(
            Flavour::AttestKms,
            message.kms_key,
            tenant_id,
            message.sealed_at,
            message.attributes,
            message.data,
        );
        if !self.verify_p256(&kms_key, entry, &signed, signature).await? {
            return Err(Forged::Tampered.into());
        }
        Ok(Attestation::Kms(kms_key))
    }

    async fn certify(
        &self,
        kms_key: &KeyVersionName,
        entry: &str,
        text: &str,
        signature_text: &str,
    ) -> Result<Certified, OpenError> {
        let bytes = format::decode_base64(text).ok_or(Malformed::BadBase64(format::ATTEST_CERT_ATTR))?;
        let garbled = |why: &str| Malformed::GarbledAttribute { name: format::ATTEST_CERT_ATTR, why: why.into() };
        let certificate = Certificate::decode(&bytes).ok_or_else(|| garbled("not a certificate"))?;
        if certificate.kms_key != *kms_key {
            return Err(garbled("certified by another key version than kms_key names").into());
        }
        let signature =
            format::decode_base64(signature_text).ok_or(Malformed::BadBase64(format::ATTEST_CERT_SIGNATURE_ATTR))?;
        if !self.verify_p256(kms_key, entry, &bytes, &signature).await? {
            return Err(Forged::ForgedCertificate(kms_key.to_string()).into());
        }
        tracing::info!(%kms_key, tenant = %certificate.tenant_id, "verified a producer's session certificate");
        let session = session_verifier(&certificate);
        Ok(Certified { certificate, certificate_signature: signature_text.to_owned(), session })
    }

    /// Whether `signature` (ECDSA P-256, DER) over `message` verifies under `kms_key`'s
    /// public key: the one pinned for that version, or the KMS's, fetched once per key
    /// version. Where keys are pinned, a version without one is not trusted; so is every
    /// version when there is neither a pinned key nor a KMS to ask.
    /// Each fetch spends `entry`'s KMS budget (the trust entry `kms_key` falls under),
    /// so that made-up versions under a trusted key cost at most its budget.
    async fn verify_p256(
        &self,
        kms_key: &KeyVersionName,
        entry: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, OpenError> {
        let untrusted = || Refused::UntrustedKey(kms_key.key().clone());
        if !self.pinned.is_empty() {
            let pinned = self.pinned.get(kms_key).ok_or_else(untrusted)?;
            return Ok(pinned.verify_sig(message, signature).is_ok());
        }
        let Some(kms) = &self.kms else { return Err(untrusted().into()) };
        let fetch = self.spender.spend(entry, kms_key.to_string(), async {
            let der = kms.public_key(kms_key).await?;
            ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der)
                .map(Arc::new)
                .map_err(|_| KmsError::Rejected(format!("the public key of {kms_key} is not an ECDSA P-256 key")))
        });
        let key = self
            .public_keys
            .try_get_with(kms_key.to_string(), fetch)
            .await
            .map_err(|error: Arc<OpenError>| (*error).clone())?;
        Ok(key.verify_sig(message, signature).is_ok())
    }
}

/// The key version `text` names, if its key is trusted, the trust entry that trusts it,
/// and the tenant id its producers bind: the trust entry's, else `default` (the
/// opener's).
fn trusted_version<'a>(
    text: &str,
    trusted: &'a TrustedKeys,
    default: &'a str,
) -> Result<(KeyVersionName, &'a str, &'a str), OpenError> {
    let kms_key: KeyVersionName = text.parse().map_err(|error: crate::KeyVersionNameError| {
        Malformed::GarbledAttribute { name: format::KMS_KEY_ATTR, why: error.to_string() }
    })?;
    match trusted.entry_of(kms_key.key(), default) {
        Some((entry, tenant_id)) => Ok((kms_key, entry, tenant_id)),
        None => Err(Refused::UntrustedKey(kms_key.key().clone()).into()),
    }
}
