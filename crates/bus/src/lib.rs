//! Pub/Sub for the binaries: clients, resource names and publishing; nothing else.
//!
//! * [`PubSub`] builds Google's Pub/Sub clients the way Google's own libraries do: against
//!   the emulator (plain HTTP, anonymous credentials) when `PUBSUB_EMULATOR_HOST` is set,
//!   otherwise against the real service with a service-account file or Application
//!   Default Credentials. Against the emulator it creates the topics and subscriptions a
//!   command names; against real Pub/Sub it never creates anything. Credentials come
//!   from the caller, loaded once for every client of a process.
//! * [`names`] turns the article's short ids or full resource names into full names.
//! * [`send::Sender`] publishes many messages, paced and with a bounded number in flight.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]
#![forbid(unsafe_code)]

pub mod credentials;
pub mod names;
mod pubsub;
pub mod send;

pub use credentials::NO_CREDENTIALS;
pub use pubsub::{MAX_ATTRIBUTES, MAX_MESSAGE_BYTES, PROBE_DEADLINE, PROBE_RETRY, PubSub, unless_idle};
