//! A delivery's life as a type: held from its arrival until its result is safe, then
//! settled exactly once, acked or nacked; dropped unsettled, it is nacked.
//!
//! As vector's finalizers report on `Drop`, so no call site has to remember to settle a
//! message or to count it out of the in-flight gauge: a message lost on an error path
//! or in a task that panicked comes back from Pub/Sub instead of waiting out its lease.

use std::sync::Arc;

use google_cloud_pubsub::subscriber::handler::Handler;

use crate::metrics::InFlight;

/// Acknowledgement of one delivery: Pub/Sub's [`Handler`] in the product, a counter in
/// the benchmark and tests.
pub trait Ack: Send + 'static {
    /// The message is done with: never deliver it again.
    fn ack(self);
    /// The message was not dealt with: deliver it again.
    fn nack(self);
}

impl Ack for Handler {
    fn ack(self) {
        Handler::ack(self);
    }

    fn nack(self) {
        Handler::nack(self);
    }
}

/// A delivery held until its result is safe: its ack handle, and its place in its
/// worker's count of messages in flight.
///
/// Settled exactly once: [`ack`](Self::ack) and [`nack`](Self::nack) take it by value,
/// and dropping it unsettled nacks it. So "nothing is acked before its result is
/// published" needs only that the holder of a result holds its deliveries.
#[must_use = "a held delivery is nacked when dropped: ack it once its result is safe"]
pub struct Held<A: Ack> {
    /// `Some` until settled.
    ack: Option<A>,
    in_flight: Arc<InFlight>,
}

impl<A: Ack> Held<A> {
    /// Holds `ack`, counting it in `in_flight` until it is settled.
    pub fn new(ack: A, in_flight: Arc<InFlight>) -> Self {
        in_flight.add(1);
        Self { ack: Some(ack), in_flight }
    }

    /// Acks the delivery: its result is safe.
    pub fn ack(mut self) {
        if let Some(ack) = self.ack.take() {
            ack.ack();
            self.in_flight.add(-1);
        }
    }

    /// Nacks the delivery: Pub/Sub delivers it again.
    pub fn nack(mut self) {
        self.settle_by_nack();
    }

    fn settle_by_nack(&mut self) {
        if let Some(ack) = self.ack.take() {
            ack.nack();
            self.in_flight.add(-1);
        }
    }
}

impl<A: Ack> Drop for Held<A> {
    fn drop(&mut self) {
        if self.ack.is_some() {
            tracing::debug!("a delivery was dropped unsettled: nacked for redelivery");
            self.settle_by_nack();
        }
    }
}

impl<A: Ack> std::fmt::Debug for Held<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("settled", &self.ack.is_none()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records how each delivery was settled.
    #[derive(Clone, Default)]
    struct Record(Arc<Mutex<Vec<&'static str>>>);

    struct Handle(Record);

    impl Ack for Handle {
        fn ack(self) {
            self.0.0.lock().unwrap().push("ack");
        }

        fn nack(self) {
            self.0.0.lock().unwrap().push("nack");
        }
    }

    #[test]
    fn a_held_delivery_is_settled_once_and_nacked_when_dropped_unsettled() {
        // Acked, nacked, and dropped (as on an error path, or in a task that panicked):
        // each is settled once, the dropped one by a nack, and the gauge ends at zero.
        let (record, in_flight) = (Record::default(), Arc::new(InFlight::default()));
        let held = || Held::new(Handle(record.clone()), in_flight.clone());
        let (acked, nacked, dropped) = (held(), held(), held());
        assert_eq!(in_flight.get(), 3);
        acked.ack();
        nacked.nack();
        assert!(record.0.lock().unwrap().len() == 2, "the third is still held");
        drop(dropped);
        assert_eq!(*record.0.lock().unwrap(), ["ack", "nack", "nack"]);
        assert_eq!(in_flight.get(), 0);
    }

    #[test]
    fn a_held_delivery_in_a_task_that_panics_is_nacked() {
        let (record, in_flight) = (Record::default(), Arc::new(InFlight::default()));
        let held = Held::new(Handle(record.clone()), in_flight.clone());
        let panicked = std::thread::spawn(move || {
            let _held = held;
            panic!("a bug between receipt and publish");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(*record.0.lock().unwrap(), ["nack"]);
        assert_eq!(in_flight.get(), 0);
    }
}
