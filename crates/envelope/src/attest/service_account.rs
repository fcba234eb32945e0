//! The article's second way: a service account signs with its own key.

use std::collections::HashMap;

use crate::format::{self, Attributes};
use crate::trust::{TrustError, check_cert_url};

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
    /// [`google_cert_url`]). The URL must be `https` (plain `http` only to a loopback
    /// address, for tests): certificates fetched in the clear could be swapped on the
    /// way. Trusting one account at two URLs is refused.
    pub fn trust(mut self, email: impl Into<String>, cert_url: Option<String>) -> Result<Self, TrustError> {
        let email = email.into();
        if email.is_empty() || !email.contains('@') {
            return Err(TrustError::BadSigner(email));
        }
        let url = cert_url.unwrap_or_else(|| google_cert_url(&email));
        check_cert_url(&email, &url)?;
        match self.0.get(&email) {
            Some(first) if *first != url => {
                Err(TrustError::ContradictingSigner { signer: email, first: first.clone(), second: url })
            }
            _ => {
                self.0.insert(email, url);
                Ok(self)
            }
        }
    }

    /// Trusts each entry, written `EMAIL` (Google's certificate URL) or
    /// `EMAIL=CERT_URL`, as the binaries' `--trusted_signer` and the Python package's
    /// `trusted_signers` take them; with [`trust`](Self::trust)'s rules.
    pub fn from_entries<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Result<Self, TrustError> {
        entries.into_iter().try_fold(Self::default(), |signers, entry| match entry.as_ref().split_once('=') {
            Some((email, url)) => signers.trust(email, Some(url.to_owned())),
            None => signers.trust(entry.as_ref(), None),
        })
    }

    /// Whether no account is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn cert_url(&self, email: &str) -> Option<&str> {
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
        let signed = format::signed_bytes(
            format::Flavour::AttestServiceAccount,
            &self.email,
            &self.key_id,
            sealed_at,
            attributes,
            data,
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_publishes_an_accounts_certificates_at_its_x509_metadata_url() {
        assert_eq!(
            google_cert_url("publisher@p.iam.gserviceaccount.com"),
            "https://www.googleapis.com/robot/v1/metadata/x509/publisher%40p.iam.gserviceaccount.com"
        );
        let trusted = TrustedSigners::default().trust("a@p.iam.gserviceaccount.com", None).unwrap();
        assert_eq!(
            trusted.cert_url("a@p.iam.gserviceaccount.com"),
            Some(google_cert_url("a@p.iam.gserviceaccount.com").as_str())
        );
        assert!(!trusted.is_empty() && TrustedSigners::default().is_empty());
    }

    #[test]
    fn entries_name_an_account_and_optionally_where_its_certificates_are() {
        // `EMAIL` takes Google's URL; `EMAIL=URL` its own, split at the first `=`.
        let trusted =
            TrustedSigners::from_entries(["a@p.iam.gserviceaccount.com", "b@example.com=https://x/certs?k=v"]).unwrap();
        assert_eq!(
            trusted.cert_url("a@p.iam.gserviceaccount.com"),
            Some(google_cert_url("a@p.iam.gserviceaccount.com").as_str())
        );
        assert_eq!(trusted.cert_url("b@example.com"), Some("https://x/certs?k=v"));
        assert_eq!(trusted.cert_url("b@example.com=https://x/certs?k=v"), None);
        assert!(TrustedSigners::from_entries(Vec::<String>::new()).unwrap().is_empty());
    }

    #[test]
    fn a_signer_is_trusted_at_one_https_url() {
        // Plain http let anyone on the way swap the certificates (issue: trust that
        // cannot surprise); loopback stays for tests' servers.
        let plain = TrustedSigners::from_entries(["b@example.com=http://certs.example.com/b"]);
        assert!(matches!(plain, Err(TrustError::InsecureCertUrl { .. })), "{plain:?}");
        assert!(TrustedSigners::from_entries(["b@example.com=http://127.0.0.1:9/b"]).is_ok());
        let twice = TrustedSigners::from_entries(["b@example.com=https://one/b", "b@example.com=https://two/b"]);
        assert!(matches!(twice, Err(TrustError::ContradictingSigner { .. })), "{twice:?}");
        assert!(TrustedSigners::from_entries(["b@example.com", "b@example.com"]).is_ok(), "a repeat");
        assert!(matches!(TrustedSigners::from_entries(["https://x/certs"]), Err(TrustError::BadSigner(_))));
    }
}
