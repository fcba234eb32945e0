//! The producer side: a sealer per mode, with the rotation settings of `publisher`.

use std::time::Duration;

use bytes::Bytes;
use envelope::{AttestBy, KeyName, KeyVersionName, RotationPolicy, ServiceAccountSigner};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::errors::{config_error, seal_error};
use crate::kms::Kms;
use crate::reuse::EnvelopeValues;

/// Seals messages for one tenant under one KMS key, in one mode: build one with
/// `Sealer.encrypt`, `Sealer.sign`, `Sealer.attest` or `Sealer.service_account`.
///
/// A sealer makes a data key, wraps it once with the tenant's KMS key and reuses it
/// until the rotation settings retire it (`max_age_secs`, `max_messages`, `max_bytes`,
/// as `publisher`'s `--key_max_age_secs` and `--key_max_messages`), so the KMS is
/// called once per rotation, not per message. With `keys_ahead` (as
/// `publisher --keys_ahead`; by default 16 for `CloudKms` or a `LocalKms` with latency,
/// none for a plain local keyring) keys are made ahead of need while rotation is by message
/// count, so a KMS that answers in 20 ms does not stall each rotation.
///
/// `seal(data, attributes)` returns `(data, attributes)` to publish. It is safe to
/// call from several threads (calls take turns: one sealer is one stream of seal
/// times) and releases the GIL whenever it waits (a KMS call, a key being made ahead,
/// another thread's seal).
#[pyclass(module = "pubsub_envelope", frozen)]
pub(crate) struct Sealer {
    inner: tokio::sync::Mutex<envelope::Sealer>,
    /// The envelope attributes' values as Python strings, reused while they repeat.
    values: EnvelopeValues,
}

/// Keys made ahead by default for a remote KMS: `publisher --keys_ahead`'s default.
const KEYS_AHEAD: usize = 16;

/// The rotation settings every constructor takes.
struct Rotation {
    policy: RotationPolicy,
    keys_ahead: usize,
}

impl Rotation {
    /// `keys_ahead` defaults to what suits `kms`: [`KEYS_AHEAD`] for a KMS across a
    /// network, none for a local keyring, which wraps in microseconds: handing each key
    /// over from the runtime's threads cost more (3.5 µs a message at a new key every 5)
    /// than making it in place.
    fn new(
        kms: &Kms,
        max_age_secs: f64,
        max_messages: u64,
        max_bytes: u64,
        keys_ahead: Option<usize>,
    ) -> PyResult<Self> {
        let keys_ahead = keys_ahead.unwrap_or(if kms.remote { KEYS_AHEAD } else { 0 });
        let max_age = Duration::try_from_secs_f64(max_age_secs).map_err(|_| {
            config_error(format!("max_age_secs must be a positive number of seconds, not {max_age_secs}"))
        })?;
        let policy = RotationPolicy { max_age, max_messages, max_bytes };
        policy.check().map_err(config_error)?;
        if keys_ahead > envelope::limits::MAX_KEYS_AHEAD {
            return Err(config_error(format!(
                "keys_ahead must be at most {}, not {keys_ahead}",
                envelope::limits::MAX_KEYS_AHEAD
            )));
        }
        Ok(Self { policy, keys_ahead })
    }

    fn apply(self, sealer: envelope::Sealer) -> Sealer {
        Sealer::new(sealer.with_policy(self.policy).with_keys_ahead(self.keys_ahead))
    }
}

fn key_name(key: &str) -> PyResult<KeyName> {
    KeyName::from_uri_or_name(key).map_err(config_error)
}

#[pymethods]
impl Sealer {
    /// A sealer in encrypt mode (AES-256-GCM; the producer's attributes travel sealed
    /// inside) for `tenant_id`, under the KMS key encryption key `key`
    /// (`projects/P/locations/L/keyRings/R/cryptoKeys/K`).
    #[staticmethod]
    #[pyo3(signature = (kms, key, tenant_id, *, max_age_secs = 100.0, max_messages = 1048576, max_bytes = 17179869184, keys_ahead = None))]
    fn encrypt(
        kms: PyRef<'_, Kms>,
        key: &str,
        tenant_id: &str,
        max_age_secs: f64,
        max_messages: u64,
        max_bytes: u64,
        keys_ahead: Option<usize>,
    ) -> PyResult<Self> {
        let rotation = Rotation::new(&kms, max_age_secs, max_messages, max_bytes, keys_ahead)?;
        Ok(rotation.apply(envelope::Sealer::encrypt(kms.backend.clone(), key_name(key)?, tenant_id)))
    }

    /// A sealer in sign mode (HMAC-SHA256; data and attributes stay readable) for
    /// `tenant_id`, under the KMS key encryption key `key`.
    #[staticmethod]
    #[pyo3(signature = (kms, key, tenant_id, *, max_age_secs = 100.0, max_messages = 1048576, max_bytes = 17179869184, keys_ahead = None))]
    fn sign(
        kms: PyRef<'_, Kms>,
        key: &str,
        tenant_id: &str,
        max_age_secs: f64,
        max_messages: u64,
        max_bytes: u64,
        keys_ahead: Option<usize>,
    ) -> PyResult<Self> {
        let rotation = Rotation::new(&kms, max_age_secs, max_messages, max_bytes, keys_ahead)?;
        Ok(rotation.apply(envelope::Sealer::sign(kms.backend.clone(), key_name(key)?, tenant_id)))
    }

    /// A sealer in attest mode for `tenant_id`, under the `EC_SIGN_P256_SHA256` KMS key
    /// version `key_version` (`.../cryptoKeys/K/cryptoKeyVersions/N`).
    ///
    /// `by="session"` (default): the KMS key certifies an Ed25519 session key once per
    /// rotation, and the session key signs each message. `by="kms_each_message"`: the
    /// KMS signs every message itself (strict audit; one KMS call per message).
    #[staticmethod]
    #[pyo3(signature = (kms, key_version, tenant_id, *, by = "session", max_age_secs = 100.0, max_messages = 1048576, max_bytes = 17179869184, keys_ahead = None))]
    #[allow(clippy::too_many_arguments, reason = "Python keywords, each with a default")]
    fn attest(
        kms: PyRef<'_, Kms>,
        key_version: &str,
        tenant_id: &str,
        by: &str,
        max_age_secs: f64,
        max_messages: u64,
        max_bytes: u64,
        keys_ahead: Option<usize>,
    ) -> PyResult<Self> {
        let by = match by {
            "session" => AttestBy::SessionKey,
            "kms_each_message" => AttestBy::KmsEachMessage,
            other => return Err(config_error(format!("by must be `session` or `kms_each_message`, not `{other}`"))),
        };
        let version = KeyVersionName::from_uri_or_name(key_version).map_err(config_error)?;
        let rotation = Rotation::new(&kms, max_age_secs, max_messages, max_bytes, keys_ahead)?;
        Ok(rotation.apply(envelope::Sealer::attest(kms.backend.clone(), version, tenant_id, by)))
    }

    /// A sealer in attest mode that signs every message with a service account's own
    /// key (RSA-SHA256), given as the text of its JSON key file; no KMS and no tenant id
    /// are involved. `cert_url` replaces Google's x509 metadata URL for the account's
    /// certificates.
    #[staticmethod]
    #[pyo3(signature = (key_file_json, *, cert_url = None))]
    fn service_account(key_file_json: &str, cert_url: Option<String>) -> PyResult<Self> {
        let mut signer = ServiceAccountSigner::from_json(key_file_json).map_err(config_error)?;
        if let Some(url) = cert_url {
            signer = signer.with_cert_url(url);
        }
        Ok(Sealer::new(envelope::Sealer::service_account(signer)))
    }

    /// Seals `data` with the producer's own `attributes`; returns the `(data,
    /// attributes)` to publish. Raises `SealError` (with `reason` and `transient`) if
    /// the attributes break the format's rules or the KMS fails; after a KMS failure
    /// the sealer is unchanged and the call can be retried.
    #[pyo3(signature = (data, attributes = None))]
    fn seal<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        attributes: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
        let given = attributes.map(crate::attributes_of).transpose()?;
        // The Python bytes object itself, shared, not copied.
        let shared = Bytes::from_owner(data.extract::<PyBackedBytes>()?);
        let release_now = shared.len() >= crate::RELEASE_GIL_FROM;
        let sealed = crate::run(py, release_now, async {
            // Seals take turns, which one sealer's increasing seal times need anyway. An
            // async lock: a caller that finds it taken waits with the GIL released.
            let mut sealer = self.inner.lock().await;
            sealer.seal(shared, given.unwrap_or_default()).await
        })
        .map_err(|error| seal_error(py, &error))?;
        self.result(data, attributes, sealed)
    }

    /// Seals a batch: `messages` is an iterable of `data` or `(data, attributes)`.
    /// Returns a list in the same order: each message's `(data, attributes)` to publish,
    /// or the `SealError` it would have raised (returned, not raised), so one bad
    /// message loses or reorders nothing. The batch crosses into Rust once, is sealed in
    /// order with the GIL released, and holds the sealer for its length.
    fn seal_many<'py>(&self, py: Python<'py>, messages: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let mut given = Vec::with_capacity(messages.len().unwrap_or(0));
        let mut batch = Vec::with_capacity(given.capacity());
        for message in messages.try_iter()? {
            let message = message?;
            let (data, attributes) = match message.extract::<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)>() {
                Ok(pair) => pair,
                Err(_) => (message, None),
            };
            let shared = Bytes::from_owner(data.extract::<PyBackedBytes>()?);
            let map = attributes.as_ref().map(crate::attributes_of).transpose()?;
            batch.push((shared, map.unwrap_or_default()));
            given.push((data, attributes));
        }
        let sealed = py.detach(|| {
            crate::runtime().block_on(async {
                let mut sealer = self.inner.lock().await;
                let mut sealed = Vec::with_capacity(batch.len());
                for (data, attributes) in batch {
                    sealed.push(sealer.seal(data, attributes).await);
                }
                sealed
            })
        });
        let results = PyList::empty(py);
        for (result, (data, attributes)) in sealed.into_iter().zip(&given) {
            match result {
                Ok(sealed) => results.append(self.result(data, attributes.as_ref(), sealed)?)?,
                Err(error) => results.append(seal_error(py, &error).into_value(py))?,
            }
        }
        Ok(results)
    }

    /// The mode this sealer seals in: `"encrypt"`, `"sign"` or `"attest"`.
    #[getter]
    fn mode(&self, py: Python<'_>) -> String {
        self.with(py, |sealer| sealer.mode().to_string())
    }

    /// How many data keys (or attest session keys) it has sealed with so far.
    #[getter]
    fn data_keys_made(&self, py: Python<'_>) -> u64 {
        self.with(py, envelope::Sealer::data_keys_made)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.with(py, |sealer| format!("<Sealer mode={} data_keys_made={}>", sealer.mode(), sealer.data_keys_made()))
    }
}

impl Sealer {
    fn new(sealer: envelope::Sealer) -> Self {
        Sealer { inner: tokio::sync::Mutex::new(sealer), values: EnvelopeValues::default() }
    }

    /// A seal's `(data, attributes)` for Python: in sign mode the producer's own
    /// `data` object and attribute strings, handed back rather than copied.
    fn result<'py>(
        &self,
        data: &Bound<'py, PyAny>,
        attributes: Option<&Bound<'py, PyAny>>,
        sealed: envelope::Sealed,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
        let py = data.py();
        let given = attributes.and_then(|attributes| attributes.cast_exact::<PyDict>().ok());
        Ok((
            crate::reuse::bytes(data, &sealed.data),
            crate::reuse::dict(py, given, &sealed.attributes, Some(&self.values))?,
        ))
    }

    /// The sealer, waited for with the GIL released: a seal in progress may be waiting
    /// on the KMS.
    fn with<R: Send>(&self, py: Python<'_>, read: impl FnOnce(&envelope::Sealer) -> R + Send) -> R {
        py.detach(|| read(&self.inner.blocking_lock()))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Sealer>()?;
    Ok(())
}
