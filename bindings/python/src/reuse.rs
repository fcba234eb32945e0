//! Python objects handed back rather than made again: what a seal or open returns is
//! mostly what went in, or what the previous message returned.
//!
//! Under one data key a sealed message's attributes repeat but for two (the seal time
//! and the tag): the format version, the KMS key, the wrapped data key. Making each of
//! them a new `str` per message, and hashing it again in the result's dict, was most of
//! what a sign-mode seal cost beyond the MAC (issue 27's profile: CPython making
//! objects, 39 % of a 1 KiB seal). So a sealer keeps the envelope attributes' names and
//! last values as Python strings, and the producer's own attributes, which
//! sign mode passes through unchanged, are the very objects the producer handed in.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

/// `original` itself when it is a `bytes` whose buffer `shared` is (sign mode hands the
/// data back untouched, and `Bytes::from_owner` shared it rather than copying), else a
/// new `bytes` of `shared`.
pub(crate) fn bytes<'py>(original: &Bound<'py, PyAny>, shared: &Bytes) -> Bound<'py, PyBytes> {
    if let Ok(original) = original.cast_exact::<PyBytes>() {
        let buffer = original.as_bytes();
        if buffer.as_ptr() == shared.as_ptr() && buffer.len() == shared.len() {
            return original.clone();
        }
    }
    PyBytes::new(original.py(), shared)
}

/// At most this many envelope attributes are kept: the format has twelve, and a sealer
/// writes five or six of them.
const KEPT: usize = 16;

/// One sealer's envelope attributes as Python strings: each name, made once (its hash
/// computed once with it), and its last value, reused while the next message's is
/// equal (the version, the KMS key and the wrapped data key repeat under one key; the
/// seal time and the tag are replaced each message).
#[derive(Default)]
pub(crate) struct EnvelopeValues {
    kept: Mutex<Vec<Kept>>,
}

/// An envelope attribute as Python strings, with their text on the Rust side too:
/// comparing there is a `memcmp`, where reading a Python string's text is a call into
/// the interpreter (the stable ABI inlines nothing).
struct Kept {
    name: String,
    name_object: Py<PyString>,
    value: String,
    value_object: Py<PyString>,
}

impl EnvelopeValues {
    /// The Python strings for the envelope attribute `name` and its `value`.
    fn pair<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        value: &str,
    ) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyString>)> {
        // Held with the GIL, never across a call that could release it.
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(kept) = kept.iter_mut().find(|kept| kept.name == name) {
            if kept.value != value {
                value.clone_into(&mut kept.value);
                kept.value_object = PyString::new(py, value).unbind();
            }
            return Ok((kept.name_object.bind(py).clone(), kept.value_object.bind(py).clone()));
        }
        let pair = (PyString::intern(py, name), PyString::new(py, value));
        if kept.len() < KEPT {
            kept.push(Kept {
                name: name.to_owned(),
                name_object: pair.0.clone().unbind(),
                value: value.to_owned(),
                value_object: pair.1.clone().unbind(),
            });
        }
        Ok(pair)
    }
}

/// The dict of `attributes`, a seal's or an open's result. Those equal to one of the
/// producer's (`given`, when it was a dict: sign mode passes them through) are the
/// producer's own key and value objects; an envelope attribute's strings come from
/// `envelope`, which keeps them (a seal's; an open restores none).
pub(crate) fn dict<'py>(
    py: Python<'py>,
    given: Option<&Bound<'py, PyDict>>,
    attributes: &HashMap<String, String>,
    envelope: Option<&EnvelopeValues>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let mut reused = 0;
    if let Some(given) = given {
        for (name, value) in given.iter() {
            let (Ok(name_str), Ok(value_str)) = (name.cast_exact::<PyString>(), value.cast_exact::<PyString>()) else {
                continue;
            };
            let name_str = name_str.to_str()?;
            // An open's `given` holds the envelope's attributes too, never among the result's.
            if envelope::is_reserved(name_str) {
                continue;
            }
            if attributes.get(name_str).is_some_and(|sealed| value_str.to_str().is_ok_and(|given| given == sealed)) {
                dict.set_item(name, value)?;
                reused += 1;
            }
        }
    }
    let mut producer = 0;
    for (name, value) in attributes {
        match envelope {
            Some(envelope) if envelope::is_reserved(name) => {
                let (name, value) = envelope.pair(py, name, value)?;
                dict.set_item(name, value)?;
            }
            None if envelope::is_reserved(name) => dict.set_item(name, value)?,
            _ => producer += 1,
        }
    }
    // The producer's attributes are never reserved names, so when as many were reused
    // as there are producer attributes, every one of them is in already.
    if reused != producer {
        for (name, value) in attributes {
            if !envelope::is_reserved(name) && !dict.contains(name)? {
                dict.set_item(name, value)?;
            }
        }
    }
    Ok(dict)
}
