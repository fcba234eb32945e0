//! The consumer side: an opener for one tenant and its trust list, shared by threads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use envelope::{CacheSettings, KeyVersionName, Mode, TrustedKeys, TrustedPublicKey, TrustedSigners};
use pyo3::exceptions::PyRuntimeWarning;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::errors::{config_error, open_error};
use crate::kms::Kms;

/// Opens messages for one tenant, from the KMS keys, public keys and service accounts
/// it trusts.
///
/// * `kms` unwraps data keys (encrypt and sign mode) and fetches attest public keys; it
///   may be `None` for an opener of attest messages with pinned keys only.
/// * `tenant_id` is required: it is bound into every wrap and named by every attest
///   certificate (the binaries' default is `DEFAULT_TENANT_ID`).
/// * `trusted_kms_keys`: key names, or prefixes ending in `/*`, each optionally
///   followed by `=TENANT_ID` (that key's producers' tenant id), as `--trusted_kms_key`.
///   Trusting every key the credentials can use takes `dangerous_trust_any_kms_key=True`
///   and warns (`RuntimeWarning`).
/// * `trusted_public_keys`: `{key_version_name: pem}`; once given, only these versions
///   verify attest messages and no public key is fetched.
/// * `trusted_signers`: service-account emails, or `EMAIL=CERT_URL`.
/// * `mode`: `"auto"` (each message by its envelope), `"decrypt"`, `"verify"` or
///   `"attest"`, as the binaries' `--mode`.
/// * `cache_ttl_secs`, `cache_capacity`: how long and how many unwrapped data keys are
///   kept (each is unwrapped once; concurrent opens of one new key share one KMS call).
/// * `max_message_age_secs`: refuse messages sealed longer ago than this.
/// * `max_certificate_lifetime_secs`: refuse attest session certificates valid for
///   longer (`certificate_lifetime_too_long`); 3660 by default.
/// * `kms_failure_budget`, `kms_max_in_flight`: KMS calls each trust entry's messages may
///   have refused (100; one more a second) before its data keys not yet cached are
///   refused without a call (`kms_budget_exhausted`), and calls in flight at most (64).
///
/// Every duration and size is checked against `pubsub_envelope.LIMITS` (the library's
/// one table) and a value outside it raises `ValueError`, as does a trust list whose
/// entries contradict each other or a certificate URL that is not https.
///
/// `open(data, attributes)` returns an `Opened` or raises an `OpenError` subclass with
/// a stable `reason` and a `transient` flag. It is safe to call from many threads and
/// releases the GIL whenever it waits (a KMS call, another thread's unwrap of the same
/// key) or the message is 16 KiB or more. An opener pickles as its settings (the cache and
/// counts start empty again), so a Beam DoFn may take one as an argument; building it
/// in `DoFn.setup` works as well.
#[pyclass(module = "pubsub_envelope", frozen)]
pub(crate) struct Opener {
    inner: Arc<envelope::Opener>,
    settings: Settings,
}

/// What the opener was built from, kept to pickle it.
struct Settings {
    kms: Option<Py<Kms>>,
    tenant_id: String,
    trusted_kms_keys: Vec<String>,
    trusted_public_keys: HashMap<String, String>,
    trusted_signers: Vec<String>,
    mode: String,
    cache_ttl_secs: f64,
    cache_capacity: u64,
    max_message_age_secs: Option<f64>,
    max_certificate_lifetime_secs: f64,
    kms_failure_budget: u64,
    kms_max_in_flight: u64,
    dangerous_trust_any_kms_key: bool,
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| config_error(format!("{name} must be a positive number of seconds, not {value}")))
}

fn modes(mode: &str) -> PyResult<&'static [Mode]> {
    Ok(match mode {
        "auto" => &[Mode::Encrypt, Mode::Sign, Mode::Attest],
        "decrypt" => &[Mode::Encrypt],
        "verify" => &[Mode::Sign],
        "attest" => &[Mode::Attest],
        other => return Err(config_error(format!("mode must be auto, decrypt, verify or attest, not `{other}`"))),
    })
}

impl Settings {
    fn build(&self, py: Python<'_>) -> PyResult<envelope::Opener> {
        let trusted = match (self.dangerous_trust_any_kms_key, self.trusted_kms_keys.is_empty()) {
            (true, true) => {
                PyErr::warn(
                    py,
                    &py.get_type::<PyRuntimeWarning>(),
                    c"dangerous_trust_any_kms_key: messages under ANY KMS key these credentials can use will be accepted",
                    1,
                )?;
                TrustedKeys::dangerous_any_key()
            }
            (true, false) => {
                return Err(config_error("give trusted_kms_keys or dangerous_trust_any_kms_key, not both"));
            }
            (false, _) => TrustedKeys::from_patterns(&self.trusted_kms_keys).map_err(config_error)?,
        };
        let pinned = self
            .trusted_public_keys
            .iter()
            .map(|(version, pem)| {
                let version = KeyVersionName::from_uri_or_name(version).map_err(config_error)?;
                TrustedPublicKey::from_pem(version, pem.as_bytes()).map_err(config_error)
            })
            .collect::<PyResult<Vec<_>>>()?;
        let signers = TrustedSigners::from_entries(&self.trusted_signers).map_err(config_error)?;
        let cache =
            CacheSettings { ttl: seconds("cache_ttl_secs", self.cache_ttl_secs)?, capacity: self.cache_capacity };
        let max_age = self.max_message_age_secs.map(|age| seconds("max_message_age_secs", age)).transpose()?;
        let lifetime = seconds("max_certificate_lifetime_secs", self.max_certificate_lifetime_secs)?;
        let mut builder = envelope::Opener::builder(self.tenant_id.clone(), trusted)
            .accept(modes(&self.mode)?)
            .cache(cache)
            .max_age(max_age)
            .max_certificate_lifetime(lifetime)
            .kms_budget(envelope::KmsBudget {
                failures: self.kms_failure_budget,
                max_in_flight: usize::try_from(self.kms_max_in_flight).unwrap_or(usize::MAX),
                ..envelope::KmsBudget::default()
            })
            .pinned_public_keys(pinned)
            .trusted_signers(signers);
        if let Some(kms) = &self.kms {
            builder = builder.kms(kms.get().backend.clone());
        }
        builder.build().map_err(config_error)
    }
}

#[pymethods]
impl Opener {
    #[new]
    #[pyo3(signature = (
        kms = None, *, tenant_id, trusted_kms_keys = Vec::new(), trusted_public_keys = None, trusted_signers = Vec::new(),
        mode = "auto".to_owned(), cache_ttl_secs = 200.0, cache_capacity = 100_000, max_message_age_secs = None,
        max_certificate_lifetime_secs = envelope::limits::DEFAULT_MAX_CERTIFICATE_LIFETIME.as_secs_f64(),
        kms_failure_budget = 100, kms_max_in_flight = 64, dangerous_trust_any_kms_key = false,
    ))]
    #[pyo3(text_signature = "(kms=None, *, tenant_id, trusted_kms_keys=(), trusted_public_keys=None, \
        trusted_signers=(), mode='auto', cache_ttl_secs=200.0, cache_capacity=100000, max_message_age_secs=None, \
        max_certificate_lifetime_secs=3660.0, kms_failure_budget=100, kms_max_in_flight=64, \
        dangerous_trust_any_kms_key=False)")]
    #[allow(clippy::too_many_arguments, reason = "Python keywords, each with a default")]
    fn new(
        py: Python<'_>,
        kms: Option<Py<Kms>>,
        tenant_id: String,
        trusted_kms_keys: Vec<String>,
        trusted_public_keys: Option<HashMap<String, String>>,
        trusted_signers: Vec<String>,
        mode: String,
        cache_ttl_secs: f64,
        cache_capacity: u64,
        max_message_age_secs: Option<f64>,
        max_certificate_lifetime_secs: f64,
        kms_failure_budget: u64,
        kms_max_in_flight: u64,
        dangerous_trust_any_kms_key: bool,
    ) -> PyResult<Self> {
        let settings = Settings {
            kms,
            tenant_id,
            trusted_kms_keys,
            trusted_public_keys: trusted_public_keys.unwrap_or_default(),
            trusted_signers,
            mode,
            cache_ttl_secs,
            cache_capacity,
            max_message_age_secs,
            max_certificate_lifetime_secs,
            kms_failure_budget,
            kms_max_in_flight,
            dangerous_trust_any_kms_key,
        };
        Ok(Self { inner: Arc::new(settings.build(py)?), settings })
    }

    /// Authenticates (and in encrypt mode decrypts) one message, given as Pub/Sub
    /// delivered it: its `data` and `attributes`. Returns an `Opened`; raises an
    /// `OpenError` subclass (`MalformedError`, `RefusedError`, `ForgedError`,
    /// `InfrastructureError`) whose `reason` is the stable code and whose `transient`
    /// says whether to retry rather than dead-letter.
    fn open(&self, py: Python<'_>, data: &Bound<'_, PyAny>, attributes: &Bound<'_, PyAny>) -> PyResult<Opened> {
        let attributes_given = attributes;
        let attributes = crate::attributes_of(attributes)?;
        // The Python bytes object itself, shared, not copied.
        let shared = Bytes::from_owner(data.extract::<PyBackedBytes>()?);
        let release_now = shared.len() >= crate::RELEASE_GIL_FROM;
        let opened = crate::run(py, release_now, self.inner.open(&shared, &attributes))
            .map_err(|error| open_error(py, &error))?;
        Opened::new(data, attributes_given, opened)
    }

    /// Opens a batch: `messages` is an iterable of `(data, attributes)` pairs. Returns a
    /// list in the same order, one item per message: its `Opened`, or the `OpenError`
    /// it would have raised (returned, not raised; `reason` and `transient` as ever),
    /// so one bad message loses or reorders nothing. The batch crosses into Rust once
    /// and is opened with the GIL released, so other threads run meanwhile (each
    /// thread's batches open in parallel with the others').
    fn open_many<'py>(&self, py: Python<'py>, messages: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let mut given = Vec::with_capacity(messages.len().unwrap_or(0));
        let mut batch = Vec::with_capacity(given.capacity());
        for message in messages.try_iter()? {
            let (data, attributes): (Bound<'py, PyAny>, Bound<'py, PyAny>) = message?.extract()?;
            batch.push((Bytes::from_owner(data.extract::<PyBackedBytes>()?), crate::attributes_of(&attributes)?));
            given.push((data, attributes));
        }
        let opener = &self.inner;
        let opened = py.detach(|| {
            crate::runtime().block_on(async {
                let mut opened = Vec::with_capacity(batch.len());
                for (data, attributes) in &batch {
                    opened.push(opener.open(data, attributes).await);
                }
                opened
            })
        });
        let results = PyList::empty(py);
        for (result, (data, attributes)) in opened.into_iter().zip(&given) {
            match result {
                Ok(opened) => results.append(Opened::new(data, attributes, opened)?)?,
                Err(error) => results.append(open_error(py, &error).into_value(py))?,
            }
        }
        Ok(results)
    }

    /// `(hits, misses)` of the data-key cache so far (attest certificates included).
    fn cache_stats(&self) -> (u64, u64) {
        let stats = self.inner.cache_stats();
        (stats.hits, stats.misses)
    }

    /// What opening cost the KMS: `{"ok", "refused", "failed"}` calls by outcome, and
    /// `{"remembered", "over_budget"}` opens answered without the call they needed.
    fn kms_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.inner.kms_stats();
        let dict = PyDict::new(py);
        dict.set_item("ok", stats.ok)?;
        dict.set_item("refused", stats.refused)?;
        dict.set_item("failed", stats.failed)?;
        dict.set_item("remembered", stats.remembered)?;
        dict.set_item("over_budget", stats.over_budget)?;
        Ok(dict)
    }

    /// The tenant this opener opens for.
    #[getter]
    fn tenant_id(&self) -> &str {
        &self.settings.tenant_id
    }

    /// Pickles as a call of the constructor with the same settings.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let s = &slf.get().settings;
        let settings = PyDict::new(py);
        settings.set_item("tenant_id", &s.tenant_id)?;
        settings.set_item("trusted_kms_keys", &s.trusted_kms_keys)?;
        settings.set_item("trusted_public_keys", &s.trusted_public_keys)?;
        settings.set_item("trusted_signers", &s.trusted_signers)?;
        settings.set_item("mode", &s.mode)?;
        settings.set_item("cache_ttl_secs", s.cache_ttl_secs)?;
        settings.set_item("cache_capacity", s.cache_capacity)?;
        settings.set_item("max_message_age_secs", s.max_message_age_secs)?;
        settings.set_item("max_certificate_lifetime_secs", s.max_certificate_lifetime_secs)?;
        settings.set_item("kms_failure_budget", s.kms_failure_budget)?;
        settings.set_item("kms_max_in_flight", s.kms_max_in_flight)?;
        settings.set_item("dangerous_trust_any_kms_key", s.dangerous_trust_any_kms_key)?;
        let kms = s.kms.as_ref().map(|kms| kms.clone_ref(py)).into_pyobject(py)?;
        crate::reduce_to_call(slf.as_any(), &[kms], &settings)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Opener tenant_id={:?} mode={} trusted_kms_keys={:?}>",
            self.settings.tenant_id, self.settings.mode, self.settings.trusted_kms_keys
        )
    }
}

/// A message that opened: authenticated and, in encrypt mode, decrypted.
#[pyclass(module = "pubsub_envelope", frozen)]
pub(crate) struct Opened {
    /// The producer's data (bytes).
    #[pyo3(get)]
    data: Py<PyBytes>,
    /// The producer's own attributes, made a dict on first read: a consumer that never
    /// reads them (the Beam pipeline) does not pay for one per message.
    restored: HashMap<String, String>,
    attributes: PyOnceLock<Py<PyDict>>,
    /// The attributes as they were handed in, when a dict: in sign mode the restored
    /// ones are among them, and their objects are handed back.
    given: Option<Py<PyDict>>,
    /// How it was protected: `"encrypt"`, `"sign"` or `"attest"`.
    #[pyo3(get)]
    mode: &'static str,
    /// The KMS key its data key was wrapped under (or whose version signed, in attest
    /// mode); `None` for a message a service account signed.
    #[pyo3(get)]
    kms_key: Option<String>,
    /// When the producer sealed it, in seconds since the Unix epoch (authenticated).
    #[pyo3(get)]
    sealed_at: f64,
    /// In attest mode, who the message was proven to come from; else `None`.
    #[pyo3(get)]
    attested_by: Option<String>,
    /// 16 bytes, the same for every copy of one sealed message and different for any
    /// two messages sealed: what deduplication keys on.
    #[pyo3(get)]
    fingerprint: Py<PyBytes>,
}

impl Opened {
    /// `data` and `attributes` as they were handed in: in sign mode they are handed back.
    fn new(data: &Bound<'_, PyAny>, attributes: &Bound<'_, PyAny>, opened: envelope::Opened) -> PyResult<Self> {
        let py = data.py();
        let given = match opened.mode {
            Mode::Encrypt => None,
            _ => attributes.cast_exact::<PyDict>().ok().map(|dict| dict.clone().unbind()),
        };
        Ok(Self {
            data: crate::reuse::bytes(data, &opened.data).unbind(),
            restored: opened.attributes,
            attributes: PyOnceLock::new(),
            given,
            mode: opened.mode.as_str(),
            kms_key: opened.kms_key.map(|key| key.to_string()),
            sealed_at: opened.sealed_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
            attested_by: opened.attestation.map(|attestation| attestation.to_string()),
            fingerprint: PyBytes::new(py, &opened.fingerprint).unbind(),
        })
    }
}

#[pymethods]
impl Opened {
    /// The producer's own attributes, restored (dict); no envelope attribute is left.
    #[getter]
    fn attributes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = self.attributes.get_or_try_init(py, || {
            let given = self.given.as_ref().map(|given| given.bind(py));
            PyResult::Ok(crate::reuse::dict(py, given, &self.restored, None)?.unbind())
        })?;
        Ok(dict.bind(py).clone())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<Opened mode={} kms_key={} data={} bytes attributes={}>",
            self.mode,
            crate::repr_optional(self.kms_key.as_deref()),
            self.data.bind(py).as_bytes().len(),
            self.restored.len()
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Opener>()?;
    m.add_class::<Opened>()?;
    Ok(())
}
