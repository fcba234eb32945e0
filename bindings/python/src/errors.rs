//! The exceptions: one base, a subclass per kind of failure, each with the stable
//! `reason` code and `transient` flag the binaries use to dead-letter or retry.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

create_exception!(
    pubsub_envelope,
    EnvelopeError,
    PyException,
    "Base of every error the envelope raises.\n\n`reason` is a stable code (docs/FORMAT.md lists them) and `transient` says whether trying again later may succeed: route a message that is not transient to the dead-letter output, retry one that is."
);
create_exception!(
    pubsub_envelope,
    OpenError,
    EnvelopeError,
    "A message could not be opened. Catch this for every kind below."
);
create_exception!(pubsub_envelope, MalformedError, OpenError, "The message breaks the wire format. Never transient.");
create_exception!(
    pubsub_envelope,
    RefusedError,
    OpenError,
    "The message is well formed, but this opener's policy refuses it (untrusted key, wrong tenant, mode not accepted, too old). Never transient."
);
create_exception!(pubsub_envelope, ForgedError, OpenError, "The message fails authentication. Never transient.");
create_exception!(
    pubsub_envelope,
    InfrastructureError,
    OpenError,
    "The opener could not tell: a KMS or certificate server failed or refused. `transient` says whether to retry."
);
create_exception!(
    pubsub_envelope,
    SealError,
    EnvelopeError,
    "A message could not be sealed: its attributes break the format's rules (reason `invalid_attributes`), or the KMS failed (its reason; `transient` says whether to retry)."
);

/// An exception of type `T` carrying `reason` and `transient`.
fn raise<T: pyo3::PyTypeInfo>(py: Python<'_>, message: String, reason: &str, transient: bool) -> PyErr {
    let error = PyErr::new::<T, _>(message);
    let value = error.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of memory
    // exhaustion, where the error raised instead is as good a report as any.
    if let Err(failed) = value.setattr("reason", reason).and_then(|()| value.setattr("transient", transient)) {
        return failed;
    }
    error
}

/// The Python exception for a failure to open.
pub(crate) fn open_error(py: Python<'_>, error: &envelope::OpenError) -> PyErr {
    let (reason, transient, message) = (error.reason(), error.is_transient(), error.to_string());
    match error {
        envelope::OpenError::Malformed(_) => raise::<MalformedError>(py, message, reason, transient),
        envelope::OpenError::Refused(_) => raise::<RefusedError>(py, message, reason, transient),
        envelope::OpenError::Forged(_) => raise::<ForgedError>(py, message, reason, transient),
        envelope::OpenError::Infrastructure(_) => raise::<InfrastructureError>(py, message, reason, transient),
        // A kind added by a later version of the crate still arrives as an OpenError.
        _ => raise::<OpenError>(py, message, reason, transient),
    }
}

/// The Python exception for a failure to seal.
pub(crate) fn seal_error(py: Python<'_>, error: &envelope::SealError) -> PyErr {
    let reason = match error {
        envelope::SealError::Kms(kms) => kms.reason(),
        _ => "invalid_attributes",
    };
    raise::<SealError>(py, error.to_string(), reason, error.is_transient())
}

/// A `ValueError` for configuration that cannot work (a malformed key name, nothing
/// trusted): raised at construction, never per message.
pub(crate) fn config_error(what: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(what.to_string())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("EnvelopeError", py.get_type::<EnvelopeError>())?;
    m.add("OpenError", py.get_type::<OpenError>())?;
    m.add("MalformedError", py.get_type::<MalformedError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("ForgedError", py.get_type::<ForgedError>())?;
    m.add("InfrastructureError", py.get_type::<InfrastructureError>())?;
    m.add("SealError", py.get_type::<SealError>())?;
    Ok(())
}
