//! Time, made replaceable so that key rotation and message age can be tested without
//! sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// A source of time: monotonic for measuring key age, wall-clock for seal times.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
    /// The current wall-clock time.
    fn wall(&self) -> SystemTime;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; for tests of time-dependent behaviour.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_wall: SystemTime,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at the moment it was made.
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// A clock whose wall time stands at `wall`: in the past or the future, to make
    /// messages sealed then.
    pub fn at(wall: SystemTime) -> Self {
        Self { start: Instant::now(), start_wall: wall, elapsed: Mutex::new(Duration::ZERO) }
    }

    fn elapsed(&self) -> Duration {
        *self.elapsed.lock().expect("clock lock poisoned")
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().expect("clock lock poisoned") += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn wall(&self) -> SystemTime {
        self.start_wall + self.elapsed()
    }
}
