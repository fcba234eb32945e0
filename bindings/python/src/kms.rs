//! The KMS backends: a local keyring file (offline) and Cloud KMS, each counting its
//! calls and pickling as the settings that build it again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envelope::kms::gcp::{CredentialSource, GcpKms};
use envelope::kms::local::{Keyring, Purpose};
use envelope::kms::{Counted, KeySign as _};
use envelope::{KeyName, KeyVersionName};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::config_error;

/// The backend every sealer and opener holds, with its call counts.
pub(crate) type Backend = Arc<Counted<Arc<dyn envelope::kms::Kms>>>;

/// Base of the KMS backends: what they share is their call counts.
///
/// A backend is shared by every sealer and opener given it, and is safe to use from
/// many threads.
#[pyclass(module = "pubsub_envelope", subclass, frozen)]
pub(crate) struct Kms {
    pub(crate) backend: Backend,
    /// Whether a call crosses a network (or stands in for one): what makes keys made
    /// ahead worth their hand-over.
    pub(crate) remote: bool,
}

#[pymethods]
impl Kms {
    /// Data keys wrapped so far (one per rotation of a sealer).
    #[getter]
    fn wraps(&self) -> u64 {
        self.backend.wraps()
    }

    /// Data keys unwrapped so far (one per new data key an opener met, unless evicted).
    #[getter]
    fn unwraps(&self) -> u64 {
        self.backend.unwraps()
    }

    /// Every call made so far: wraps, unwraps, signatures and public-key fetches.
    #[getter]
    fn calls(&self) -> u64 {
        self.backend.calls()
    }
}

fn counted(kms: impl envelope::kms::Kms + 'static, remote: bool) -> Kms {
    let kms: Arc<dyn envelope::kms::Kms> = Arc::new(kms);
    Kms { backend: Arc::new(Counted::new(kms)), remote }
}

/// A local keyring file standing in for Cloud KMS: offline work, tests and benchmarks.
///
/// `LocalKms(path, latency_ms=0)`. The file is what `publisher keyring create` (or
/// [`create_local_key`]) writes; it holds key material in the clear, so it is for
/// development only. `latency_ms` delays every call, to stand in for a remote KMS.
#[pyclass(module = "pubsub_envelope", extends = Kms, frozen)]
pub(crate) struct LocalKms {
    path: PathBuf,
    latency_ms: u64,
}

#[pymethods]
impl LocalKms {
    #[new]
    #[pyo3(signature = (path, latency_ms = 0))]
    fn new(path: PathBuf, latency_ms: u64) -> PyResult<PyClassInitializer<Self>> {
        let max = envelope::limits::MAX_LOCAL_KMS_LATENCY;
        if u128::from(latency_ms) > max.as_millis() {
            return Err(config_error(format!("latency_ms must be at most {}, not {latency_ms}", max.as_millis())));
        }
        let kms = envelope::kms::local::LocalKms::open(&path)
            .map_err(|error| {
                config_error(format!("{error} (make one with create_local_key, or `publisher keyring create`)"))
            })?
            .with_latency(Duration::from_millis(latency_ms));
        Ok(PyClassInitializer::from(counted(kms, latency_ms > 0)).add_subclass(Self { path, latency_ms }))
    }

    /// Pickles as a call of the constructor with the same settings.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let this = slf.get();
        let settings = PyDict::new(slf.py());
        settings.set_item("latency_ms", this.latency_ms)?;
        crate::reduce_to_call(slf.as_any(), &[this.path.clone().into_pyobject(slf.py())?.into_any()], &settings)
    }

    fn __repr__(&self) -> String {
        format!("LocalKms({:?}, latency_ms={})", self.path.display().to_string(), self.latency_ms)
    }
}

/// Cloud KMS, through Google's official client (REST).
///
/// `CloudKms(*, credentials_file=None, endpoint=None, timeout_secs=10.0)`. Credentials
/// are Application Default Credentials (on Dataflow: the worker's service account)
/// unless `credentials_file` names a service-account key file. `endpoint` replaces
/// `https://cloudkms.googleapis.com`, for a local fake; with it and no file, calls are
/// anonymous. Every call has the `timeout_secs` deadline and is never retried here:
/// a timeout is a transient error, for the caller to retry.
#[pyclass(module = "pubsub_envelope", extends = Kms, frozen)]
pub(crate) struct CloudKms {
    credentials_file: Option<PathBuf>,
    endpoint: Option<String>,
    timeout_secs: f64,
}

#[pymethods]
impl CloudKms {
    #[new]
    #[pyo3(signature = (*, credentials_file = None, endpoint = None, timeout_secs = 10.0))]
    fn new(
        py: Python<'_>,
        credentials_file: Option<PathBuf>,
        endpoint: Option<String>,
        timeout_secs: f64,
    ) -> PyResult<PyClassInitializer<Self>> {
        let timeout = Duration::try_from_secs_f64(timeout_secs)
            .ok()
            .filter(|timeout| !timeout.is_zero() && *timeout <= envelope::limits::MAX_KMS_TIMEOUT)
            .ok_or_else(|| {
                config_error(format!("timeout_secs must be more than 0 and at most 600 seconds, not {timeout_secs}"))
            })?;
        let credentials = match (&credentials_file, &endpoint) {
            (Some(file), _) => CredentialSource::ServiceAccountFile(file.clone()),
            (None, Some(_)) => CredentialSource::Anonymous,
            (None, None) => CredentialSource::ApplicationDefault,
        };
        let mut builder = GcpKms::builder().timeout(timeout).credentials(credentials);
        if let Some(endpoint) = &endpoint {
            builder = builder.endpoint(endpoint);
        }
        let kms = crate::block_on(py, || builder.build()).map_err(config_error)?;
        Ok(PyClassInitializer::from(counted(kms, true)).add_subclass(Self { credentials_file, endpoint, timeout_secs }))
    }

    /// Pickles as a call of the constructor with the same settings.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let this = slf.get();
        let settings = PyDict::new(slf.py());
        settings.set_item("credentials_file", &this.credentials_file)?;
        settings.set_item("endpoint", &this.endpoint)?;
        settings.set_item("timeout_secs", this.timeout_secs)?;
        crate::reduce_to_call(slf.as_any(), &[], &settings)
    }

    fn __repr__(&self) -> String {
        format!(
            "CloudKms(credentials_file={}, endpoint={}, timeout_secs={})",
            crate::repr_optional(self.credentials_file.as_ref().map(|file| file.display().to_string()).as_deref()),
            crate::repr_optional(self.endpoint.as_deref()),
            self.timeout_secs
        )
    }
}

/// Adds a key to a local keyring file, creating the file if it is missing:
/// `purpose="encrypt"` makes a key encryption key (encrypt and sign modes),
/// `purpose="sign"` a P-256 signing key (attest mode, version 1). Existing keys are
/// left as they are.
#[pyfunction]
#[pyo3(signature = (path, key, purpose = "encrypt"))]
fn create_local_key(py: Python<'_>, path: PathBuf, key: &str, purpose: &str) -> PyResult<()> {
    let purpose = match purpose {
        "encrypt" => Purpose::EncryptDecrypt,
        "sign" => Purpose::AsymmetricSign,
        other => return Err(config_error(format!("purpose must be `encrypt` or `sign`, not `{other}`"))),
    };
    let name = KeyName::from_uri_or_name(key).map_err(config_error)?;
    // Under the keyring's lock, as `publisher keyring` edits it: two writers at once
    // never lose each other's key. Other Python threads run while this one waits for it.
    py.detach(|| {
        Keyring::edit(&path, |keyring| {
            if !keyring.list().iter().any(|info| info.name == name) {
                keyring.create_for(&name, purpose)?;
            }
            Ok(())
        })
    })
    .map_err(config_error)
}

/// The public key (PEM) of a signing key version, fetched from `kms`: what an opener
/// pins with `trusted_public_keys`.
#[pyfunction]
fn public_key_pem(py: Python<'_>, kms: PyRef<'_, Kms>, key_version: &str) -> PyResult<String> {
    let version = KeyVersionName::from_uri_or_name(key_version).map_err(config_error)?;
    let backend = kms.backend.clone();
    let der = crate::block_on(py, || async move { backend.public_key(&version).await })
        .map_err(|error| config_error(format!("cannot fetch the public key of {key_version}: {error}")))?;
    Ok(envelope::public_key_pem(&der))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Kms>()?;
    m.add_class::<LocalKms>()?;
    m.add_class::<CloudKms>()?;
    m.add_function(wrap_pyfunction!(create_local_key, m)?)?;
    m.add_function(wrap_pyfunction!(public_key_pem, m)?)?;
    Ok(())
}
