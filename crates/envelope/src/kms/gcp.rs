//! Cloud KMS through the official `google-cloud-kms-v1` crate (REST).
//!
//! Every request carries CRC32C checksums of what it sends, and every response is
//! checked against the checksums Cloud KMS returns, as Google's data-integrity guide
//! asks. A mismatch is reported as [`KmsError::Integrity`], which is transient.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_auth::credentials::{self, Credentials, anonymous, service_account};
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_kms_v1::client::KeyManagementService;
use zeroize::Zeroize as _;

use super::{KeySign, KeyWrap, KmsError};
use crate::key_name::{KeyName, KeyVersionName};
use crate::secret::SecretKey;

/// Where the backend's credentials come from.
#[derive(Debug, Clone, Default)]
pub enum CredentialSource {
    /// Application Default Credentials.
    #[default]
    ApplicationDefault,
    /// A service-account key file, as the article's `--service_account`.
    ServiceAccountFile(PathBuf),
    /// No credentials, for a local fake of the API.
    Anonymous,
    /// Credentials already built, shared with the process's other Google clients.
    Credentials(Credentials),
}

/// Why the Cloud KMS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GcpKmsBuildError {
    /// The service-account file could not be read or parsed.
    #[error("service account file {path}: {why}")]
    ServiceAccount {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The credentials or client could not be constructed.
    #[error("cannot build the Cloud KMS client: {0}")]
    Client(String),
}

/// The Cloud KMS backend.
pub struct GcpKms {
    client: KeyManagementService,
    timeout: Duration,
}

/// Configures a [`GcpKms`].
#[derive(Debug, Clone)]
pub struct GcpKmsBuilder {
    credentials: CredentialSource,
    endpoint: Option<String>,
    timeout: Duration,
}

impl GcpKms {
    /// Starts configuring a Cloud KMS backend with Application Default Credentials, the
    /// public endpoint and a 10 s deadline per call.
    pub fn builder() -> GcpKmsBuilder {
        GcpKmsBuilder { credentials: CredentialSource::default(), endpoint: None, timeout: Duration::from_secs(10) }
    }
}

impl GcpKmsBuilder {
    /// Where credentials come from.
    pub fn credentials(mut self, source: CredentialSource) -> Self {
        self.credentials = source;
        self
    }

    /// Another endpoint than `https://cloudkms.googleapis.com`, such as a local fake.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The deadline for each call; past it the call fails with [`KmsError::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the client.
    ///
    /// The client does not retry by itself: callers decide, knowing which errors are
    /// transient (the pipeline nacks for redelivery; the publisher backs off).
    pub async fn build(self) -> Result<GcpKms, GcpKmsBuildError> {
        let credentials = load_credentials(&self.credentials)?;
        let mut builder = KeyManagementService::builder().with_credentials(credentials).with_retry_policy(NeverRetry);
        if let Some(endpoint) = self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let client = builder.build().await.map_err(|e| GcpKmsBuildError::Client(e.to_string()))?;
        Ok(GcpKms { client, timeout: self.timeout })
    }
}

fn load_credentials(source: &CredentialSource) -> Result<Credentials, GcpKmsBuildError> {
    match source {
        CredentialSource::ApplicationDefault => {
            credentials::Builder::default().build().map_err(|e| GcpKmsBuildError::Client(e.to_string()))
        }
        CredentialSource::ServiceAccountFile(path) => {
            let failed = |why: String| GcpKmsBuildError::ServiceAccount { path: path.clone(), why };
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?);
            let json = serde_json::from_str(&text).map_err(|e| failed(e.to_string()))?;
            service_account::Builder::new(json).build().map_err(|e| failed(e.to_string()))
        }
        CredentialSource::Anonymous => Ok(anonymous::Builder::new().build()),
        CredentialSource::Credentials(credentials) => Ok(credentials.clone()),
    }
}

fn crc32c(bytes: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(bytes))
}

/// Maps a client error to a [`KmsError`], deciding what is worth retrying.
fn classify(error: &GaxError, key: &dyn std::fmt::Display, unwrapping: bool, timeout: Duration) -> KmsError {
    let detail = error.to_string();
    if error.is_timeout() {
        return KmsError::Timeout(timeout);
    }
    let code = error.status().map(|status| status.code);
    match (code, error.http_status_code()) {
        (Some(Code::PermissionDenied), _) | (_, Some(403)) => KmsError::PermissionDenied(key.to_string()),
        (Some(Code::NotFound), _) | (_, Some(404)) => KmsError::KeyNotFound(key.to_string()),
        // A disabled or destroyed key version: the key refuses, whatever the wrapped key.
        (Some(Code::FailedPrecondition), _) => KmsError::Rejected(detail),
        (Some(Code::InvalidArgument), _) | (_, Some(400)) if unwrapping => KmsError::UnwrapRejected(key.to_string()),
        (Some(Code::ResourceExhausted), _) | (_, Some(429)) => KmsError::RateLimited(detail),
        (Some(Code::Unavailable | Code::Internal | Code::DeadlineExceeded | Code::Unknown | Code::Aborted), _) => {
            KmsError::Unavailable(detail)
        }
        (_, Some(status)) if status >= 500 => KmsError::Unavailable(detail),
        // Unauthenticated means our own credentials are broken or could not be refreshed:
        // every message is affected alike, so retrying (after the operator fixes it)
        // beats dead-lettering them all.
        (Some(Code::Unauthenticated), _) | (_, Some(401)) => KmsError::Unavailable(detail),
        _ if error.is_io() || error.is_connect() || error.is_transport() || error.is_authentication() => {
            KmsError::Unavailable(detail)
        }
        _ => KmsError::Rejected(detail),
    }
}

#[async_trait]
impl KeyWrap for GcpKms {
    async fn wrap(&self, name: &KeyName, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        let plaintext = Bytes::copy_from_slice(key.expose());
        let request = self
            .client
            .encrypt()
            .set_name(name.as_str())
            .set_plaintext_crc32c(crc32c(key.expose()))
            .set_plaintext(plaintext)
            .set_additional_authenticated_data(Bytes::copy_from_slice(aad))
            .set_additional_authenticated_data_crc32c(crc32c(aad))
            .send();
        let response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| KmsError::Timeout(self.timeout))?
            .map_err(|error| classify(&error, name, false, self.timeout))?;
        if !response.verified_plaintext_crc32c || !response.verified_additional_authenticated_data_crc32c {
            return Err(KmsError::Integrity("Cloud KMS did not verify the request checksums".into()));
        }
        if response.ciphertext_crc32c != Some(crc32c(&response.ciphertext)) {
            return Err(KmsError::Integrity("ciphertext checksum mismatch".into()));
        }
        if !response.name.starts_with(name.as_str()) {
            return Err(KmsError::Integrity(format!("answered for key {}, asked {name}", response.name)));
        }
        Ok(response.ciphertext.to_vec())
    }

    async fn unwrap(&self, name: &KeyName, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, KmsError> {
        let request = self
            .client
            .decrypt()
            .set_name(name.as_str())
            .set_ciphertext(Bytes::copy_from_slice(wrapped))
            .set_ciphertext_crc32c(crc32c(wrapped))
            .set_additional_authenticated_data(Bytes::copy_from_slice(aad))
            .set_additional_authenticated_data_crc32c(crc32c(aad))
            .send();
        let response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| KmsError::Timeout(self.timeout))?
            .map_err(|error| classify(&error, name, true, self.timeout))?;
        let checksum_ok = response.plaintext_crc32c == Some(crc32c(&response.plaintext));
        let key = SecretKey::from_slice(&response.plaintext);
        if let Ok(mut buffer) = response.plaintext.try_into_mut() {
            buffer.zeroize();
        }
        if !checksum_ok {
            return Err(KmsError::Integrity("plaintext checksum mismatch".into()));
        }
        key.ok_or_else(|| KmsError::Rejected(format!("{name} unwrapped something that is not a 256-bit key")))
    }
}

#[async_trait]
impl KeySign for GcpKms {
    async fn sign(&self, name: &KeyVersionName, message: &[u8]) -> Result<Vec<u8>, KmsError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let request = self
            .client
            .asymmetric_sign()
            .set_name(name.as_str())
            .set_digest(google_cloud_kms_v1::model::Digest::new().set_sha256(Bytes::copy_from_slice(digest.as_ref())))
            .set_digest_crc32c(crc32c(digest.as_ref()))
            .send();
        let response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| KmsError::Timeout(self.timeout))?
            .map_err(|error| classify(&error, name, false, self.timeout))?;
        if !response.verified_digest_crc32c {
            return Err(KmsError::Integrity("Cloud KMS did not verify the digest checksum".into()));
        }
        if response.signature_crc32c != Some(crc32c(&response.signature)) {
            return Err(KmsError::Integrity("signature checksum mismatch".into()));
        }
        if response.name != name.as_str() {
            return Err(KmsError::Integrity(format!("signed with {}, asked {name}", response.name)));
        }
        Ok(response.signature.to_vec())
    }

    async fn public_key(&self, name: &KeyVersionName) -> Result<Vec<u8>, KmsError> {
        use rustls_pki_types::SubjectPublicKeyInfoDer;
        use rustls_pki_types::pem::PemObject as _;
        let request = self.client.get_public_key().set_name(name.as_str()).send();
        let response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| KmsError::Timeout(self.timeout))?
            .map_err(|error| classify(&error, name, false, self.timeout))?;
        if response.pem_crc32c != Some(crc32c(response.pem.as_bytes())) {
            return Err(KmsError::Integrity("public key checksum mismatch".into()));
        }
        if response.name != name.as_str() {
            return Err(KmsError::Integrity(format!("answered for {}, asked {name}", response.name)));
        }
        let der = SubjectPublicKeyInfoDer::from_pem_slice(response.pem.as_bytes())
            .map_err(|error| KmsError::Rejected(format!("public key of {name} is not PEM: {error}")))?;
        Ok(der.as_ref().to_vec())
    }
}
