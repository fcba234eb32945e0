//! `pubsub_envelope._native`: the envelope crate exposed to Python, not reimplemented.
//!
//! Every seal and open runs the Rust library on a Tokio runtime the module starts on
//! first use. A call releases the GIL whenever it must wait (see [`run`]), so that a Beam
//! DoFn's threads share one opener, one cache and one KMS call per wrapped key without
//! a slow KMS call stalling the others. The Python half of the package
//! (`python/pubsub_envelope/`) re-exports these types with its stubs.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

// Rust's allocations only; Python's objects keep CPython's allocator. See Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod errors;
mod kms;
mod open;
mod reuse;
mod seal;

/// The runtime every call runs on: KMS calls (HTTP, timers) need one, and the Rust
/// library is async. Two threads drive I/O and keys made ahead; a seal or open itself
/// runs on the Python thread that called it (`block_on`), so callers add cores by
/// adding threads.
///
/// Started on first use, not at import, so that a process may import the package and
/// then fork (multiprocessing) as long as it seals or opens only after the fork: a
/// child does not inherit a running runtime's threads.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pubsub-envelope")
            .enable_all()
            .build()
            .expect("cannot start the pubsub_envelope runtime")
    })
}

/// Messages at least this large are opened or sealed with the GIL released from the
/// start: their crypto takes long enough for other Python threads to use the time.
/// Smaller ones run with the GIL held unless they must wait (see [`run`]).
pub(crate) const RELEASE_GIL_FROM: usize = 16 * 1024;

/// Runs `future` to completion, releasing the GIL while it waits.
///
/// Most opens and seals never wait: the data key is cached (or unwraps locally) and
/// the crypto over a 1 KiB message takes about a microsecond. Releasing the GIL for
/// that microsecond costs more than it saves: with 8 threads opening 1 KiB messages,
/// handing the GIL back and forth made them together 3x slower than one thread. So the
/// future is first polled with the GIL held, and only if it must wait (a KMS call, a
/// key another thread is unwrapping, a sealer another thread holds) is the GIL
/// released while the runtime drives it to the end. With `release_now` (large
/// messages, see [`RELEASE_GIL_FROM`]) the GIL is released from the start.
pub(crate) fn run<F>(py: Python<'_>, release_now: bool, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    // Pinned where it is made: the open and seal futures are kilobytes (the cache's
    // among them), and handing one to `block_on` by value moved it several times,
    // a sixth of an open's time in memmove.
    let mut future = std::pin::pin!(future);
    if !release_now {
        let _entered = runtime().enter();
        let mut context = Context::from_waker(Waker::noop());
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
    // `block_on` polls again at once with a waker of its own, which a well-behaved
    // future registers in place of the no-op one: no wake-up is lost.
    py.detach(|| runtime().block_on(future))
}

/// Runs the future `make` returns to completion with the GIL released, for the rare
/// calls (building a client, fetching a public key) that always wait.
fn block_on<F, Fut>(py: Python<'_>, make: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send,
    Fut: Future,
    Fut::Output: Send,
{
    py.detach(|| runtime().block_on(make()))
}

/// What `__reduce__` returns to pickle `object` as a call of its own type with `args`
/// and keyword `settings`: `functools.partial(type, *args, **settings)()`. The objects
/// hold Rust state (a KMS client, a cache) that cannot be pickled; their settings can,
/// and build an equal object wherever they are unpickled.
fn reduce_to_call<'py>(
    object: &Bound<'py, PyAny>,
    args: &[Bound<'py, PyAny>],
    settings: &Bound<'py, PyDict>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
    let py = object.py();
    let mut call = vec![object.get_type().into_any()];
    call.extend(args.iter().cloned());
    let partial = py.import("functools")?.getattr("partial")?.call(PyTuple::new(py, call)?, Some(settings))?;
    Ok((partial, PyTuple::empty(py)))
}

/// A message's attributes from a `dict` or any other mapping of `str` to `str` (Google's
/// Pub/Sub client hands them over as a protobuf map, not a `dict`), with room for the
/// envelope's own: a seal adds at most [`ENVELOPE_ROOM`], and a map that must grow to
/// take them is hashed again, all of it.
fn attributes_of(attributes: &Bound<'_, PyAny>) -> PyResult<HashMap<String, String>> {
    let dict = match attributes.cast::<PyDict>() {
        Ok(dict) => dict.clone(),
        Err(_) => attributes.py().get_type::<PyDict>().call1((attributes,))?.cast_into::<PyDict>()?,
    };
    let mut map = HashMap::with_capacity(dict.len() + ENVELOPE_ROOM);
    for (name, value) in dict.iter() {
        map.insert(name.extract()?, value.extract()?);
    }
    Ok(map)
}

/// The most attributes a seal adds (attest mode's session flavour: version, KMS key,
/// seal time, certificate, its signature, the message's signature).
const ENVELOPE_ROOM: usize = 6;

/// `None` or `'text'`, as Python's `repr` shows an optional string.
fn repr_optional(text: Option<&str>) -> String {
    text.map_or_else(|| "None".to_owned(), |text| format!("{text:?}").replace('"', "'"))
}

/// The library's limits table (`envelope::limits`), by the keyword each bounds: what a
/// keyword beyond raises `ValueError` for.
fn limits(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    use envelope::limits;
    let table = PyDict::new(py);
    table.set_item("cache_ttl_secs", limits::MAX_CACHE_TTL.as_secs())?;
    table.set_item("cache_capacity", limits::MAX_CACHE_CAPACITY)?;
    table.set_item("max_message_age_secs", limits::MAX_MESSAGE_AGE.as_secs())?;
    table.set_item("max_certificate_lifetime_secs", limits::MAX_CERTIFICATE_LIFETIME.as_secs())?;
    table.set_item("default_max_certificate_lifetime_secs", limits::DEFAULT_MAX_CERTIFICATE_LIFETIME.as_secs())?;
    table.set_item("max_age_secs", limits::MAX_KEY_AGE.as_secs())?;
    table.set_item("max_messages", limits::MAX_KEY_MESSAGES)?;
    table.set_item("keys_ahead", limits::MAX_KEYS_AHEAD)?;
    table.set_item("timeout_secs", limits::MAX_KMS_TIMEOUT.as_secs())?;
    table.set_item("latency_ms", limits::MAX_LOCAL_KMS_LATENCY.as_millis() as u64)?;
    table.set_item("kms_failure_budget", limits::MAX_KMS_FAILURE_BUDGET)?;
    table.set_item("kms_max_in_flight", limits::MAX_KMS_IN_FLIGHT as u64)?;
    Ok(table)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_TENANT_ID", envelope::DEFAULT_TENANT_ID)?;
    m.add("LIMITS", limits(m.py())?)?;
    errors::register(m)?;
    kms::register(m)?;
    seal::register(m)?;
    open::register(m)?;
    Ok(())
}
