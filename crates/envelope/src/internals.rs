//! The wire format's building blocks and deterministic sealing, for the test vectors
//! and the fuzzers: enabled by the `internals` feature, never part of the public API
//! and outside its semver promise.

pub use crate::attest::Certificate;
pub use crate::kms::local::wrap_with as local_wrap_with;
pub use crate::seal::fixed::{FixedKey, seal};
