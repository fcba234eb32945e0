//! Dead letters: the copy of a message that could not be opened, with why.

use std::collections::HashMap;

use bus::{MAX_ATTRIBUTES, MAX_MESSAGE_BYTES};
use google_cloud_pubsub::model::Message;
use sha2::{Digest as _, Sha256};

/// Room left under [`MAX_MESSAGE_BYTES`] for the request's own framing, and for the
/// receipt a pipeline with its own key adds ([`crate::own_key`]; its JSON is a few
/// hundred bytes, and an attribute value is at most 1024).
const FRAMING_BYTES: usize = 4096 + 1024 + crate::own_key::RECEIPT_ATTR.len();
/// Attributes left for the receipt.
const RESERVED_ATTRIBUTES: usize = 1;

/// The attributes a dead letter adds to its original (the receipt only where the
/// pipeline has its own key): what a reader strips to get the original back.
pub const DEAD_LETTER_ATTRS: [&str; 4] =
    ["reject_reason", "reject_detail", "original_message_id", crate::own_key::RECEIPT_ATTR];

/// A copy of a message that could not be opened, for the dead-letter topic: its
/// original data and attributes, plus `reject_reason` (a stable code), `reject_detail`
/// (a sentence) and `original_message_id`.
///
/// A hostile message can sit right at Pub/Sub's limits, so that the copy with three more
/// attributes would not publish, and would be nacked forever. Such a copy keeps the
/// reject attributes and `original_data_bytes`, `original_data_sha256` and
/// `original_attribute_count`, then as many of the original attributes (in key order)
/// and as much of the data as still fit.
pub fn copy(original: &Message, reason: &str, detail: &str) -> Message {
    // Inserted last, so that an original attribute of the same name cannot pose as them.
    let mut ours = vec![
        ("reject_reason".to_owned(), reason.to_owned()),
        ("reject_detail".to_owned(), detail.chars().take(1000).collect()),
        ("original_message_id".to_owned(), original.message_id.clone()),
    ];
    let whole =
        attribute_bytes(ours.iter().map(|(k, v)| (k, v))) + attribute_bytes(&original.attributes) + original.data.len();
    if ours.len() + original.attributes.len() <= MAX_ATTRIBUTES - RESERVED_ATTRIBUTES
        && whole <= MAX_MESSAGE_BYTES - FRAMING_BYTES
    {
        let mut attributes = original.attributes.clone();
        attributes.extend(ours);
        return Message::new().set_data(original.data.clone()).set_attributes(attributes);
    }
    let digest: String = Sha256::digest(&original.data).iter().map(|byte| format!("{byte:02x}")).collect();
    ours.push(("original_data_bytes".to_owned(), original.data.len().to_string()));
    ours.push(("original_data_sha256".to_owned(), digest));
    ours.push(("original_attribute_count".to_owned(), original.attributes.len().to_string()));
    let mut kept: Vec<_> = original.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    kept.sort_unstable();
    kept.truncate(MAX_ATTRIBUTES - RESERVED_ATTRIBUTES - ours.len());
    let mut attributes: HashMap<String, String> = kept.into_iter().collect();
    attributes.extend(ours);
    let room = (MAX_MESSAGE_BYTES - FRAMING_BYTES).saturating_sub(attribute_bytes(&attributes));
    let data = original.data.slice(..original.data.len().min(room));
    Message::new().set_data(data).set_attributes(attributes)
}

/// What a dead letter says about its original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The stable reason code.
    pub reason: String,
    /// The sentence that explains it.
    pub detail: String,
    /// The original's Pub/Sub message id.
    pub original_message_id: String,
}

/// A dead letter read back: why its original was rejected, and the original itself
/// when the copy holds all of it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub rejection: Rejection,
    /// The original message (data and attributes), to publish again once its cause is
    /// fixed; `None` when the copy was cut to fit Pub/Sub's limits.
    pub original: Option<Message>,
    /// Put there by Pub/Sub's own dead-letter policy (see [`restore_undeliverable`]),
    /// not by a pipeline: it carries no receipt.
    pub undeliverable: bool,
}

/// The reason code of a message Pub/Sub's dead-letter policy moved off the bus
/// subscription ([`restore_undeliverable`]).
pub const UNDELIVERABLE: &str = "undeliverable";

/// What Pub/Sub adds to a message its dead-letter policy forwards.
const PUBSUB_DEAD_LETTER_PREFIX: &str = "CloudPubSubDeadLetter";

/// Reads a message that Pub/Sub's own dead-letter policy forwarded (to `undeliverable`,
/// as `scripts/gcp-setup.sh` sets it on the bus subscription): one no pipeline
/// acknowledged in the deliveries allowed (it crashed, stalled, or the KMS was out that
/// long). `None` if it lacks Pub/Sub's `CloudPubSubDeadLetter*` attributes. The
/// original is the message without them.
pub fn restore_undeliverable(forwarded: &Message) -> Option<DeadLetter> {
    let source = forwarded.attributes.get("CloudPubSubDeadLetterSourceSubscription")?;
    let deliveries = forwarded.attributes.get("CloudPubSubDeadLetterSourceDeliveryCount").map_or("?", String::as_str);
    let rejection = Rejection {
        reason: UNDELIVERABLE.to_owned(),
        detail: format!("not acknowledged on {source} in {deliveries} deliveries (Pub/Sub's dead-letter policy)"),
        original_message_id: String::new(),
    };
    let mut attributes = forwarded.attributes.clone();
    attributes.retain(|key, _| !key.starts_with(PUBSUB_DEAD_LETTER_PREFIX));
    let original = Message::new().set_data(forwarded.data.clone()).set_attributes(attributes);
    Some(DeadLetter { rejection, original: Some(original), undeliverable: true })
}

/// Reads a message of the dead-letter topic, as [`copy`] wrote it; `None` if it lacks
/// the reject attributes (it is not a dead letter).
pub fn restore(dead: &Message) -> Option<DeadLetter> {
    let attribute = |name: &str| dead.attributes.get(name).cloned();
    let rejection = Rejection {
        reason: attribute("reject_reason")?,
        detail: attribute("reject_detail").unwrap_or_default(),
        original_message_id: attribute("original_message_id")?,
    };
    let cut = dead.attributes.contains_key("original_data_bytes");
    let original = (!cut).then(|| {
        let mut attributes = dead.attributes.clone();
        for ours in DEAD_LETTER_ATTRS {
            attributes.remove(ours);
        }
        Message::new().set_data(dead.data.clone()).set_attributes(attributes)
    });
    Some(DeadLetter { rejection, original, undeliverable: false })
}

fn attribute_bytes<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> usize {
    pairs.into_iter().map(|(key, value)| key.len() + value.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_pub_sub_dead_lettered_itself_gives_back_its_original_without_pub_subs_attributes() {
        // What Pub/Sub's dead-letter policy forwards is the original plus its own
        // `CloudPubSubDeadLetter*` attributes: redriven, it is the original again.
        let original = message(b"sealed bytes".to_vec(), 3);
        let mut forwarded = original.clone();
        for (key, value) in [
            ("CloudPubSubDeadLetterSourceSubscription", "message-bus"),
            ("CloudPubSubDeadLetterSourceDeliveryCount", "100"),
            ("CloudPubSubDeadLetterSourceSubscriptionProject", "bus"),
        ] {
            forwarded.attributes.insert(key.to_owned(), value.to_owned());
        }
        let dead = restore_undeliverable(&forwarded).unwrap();
        assert!(dead.undeliverable);
        assert_eq!(dead.rejection.reason, UNDELIVERABLE);
        assert!(dead.rejection.detail.contains("message-bus in 100 deliveries"), "{}", dead.rejection.detail);
        let restored = dead.original.unwrap();
        assert_eq!((restored.data, restored.attributes), (original.data.clone(), original.attributes.clone()));
        assert!(restore_undeliverable(&original).is_none(), "not forwarded by Pub/Sub");
        assert!(restore(&forwarded).is_none(), "not one of the pipeline's dead letters");
    }

    #[test]
    fn a_dead_letter_gives_back_its_original_whole_unless_it_was_cut() {
        // Redriving publishes the original again: its data and attributes exactly, none
        // of the reject attributes; a copy cut to fit Pub/Sub cannot be redriven.
        let original = message(b"sealed bytes".to_vec(), 3);
        let mut written = copy(&original, "untrusted_key", "not trusted");
        written.attributes.insert(crate::own_key::RECEIPT_ATTR.into(), "{}".into());
        let dead = restore(&written).unwrap();
        assert_eq!(dead.rejection.reason, "untrusted_key");
        assert_eq!(dead.rejection.detail, "not trusted");
        assert_eq!(dead.rejection.original_message_id, "42");
        let back = dead.original.unwrap();
        assert_eq!((&back.data, &back.attributes), (&original.data, &original.attributes));
        let huge = message(vec![0; MAX_MESSAGE_BYTES], 3);
        let dead = restore(&copy(&huge, "tampered", "x")).unwrap();
        assert!(dead.original.is_none(), "a cut copy is not the original");
        assert!(restore(&original).is_none(), "not a dead letter");
    }

    fn message(data: Vec<u8>, attributes: usize) -> Message {
        let attributes: HashMap<_, _> = (0..attributes).map(|i| (format!("k{i:03}"), "v".to_owned())).collect();
        Message::new().set_data(data).set_attributes(attributes).set_message_id("42")
    }

    fn bytes_of(message: &Message) -> usize {
        message.data.len() + attribute_bytes(&message.attributes)
    }

    #[test]
    fn a_dead_letter_is_the_whole_message_with_the_reason() {
        let mut original = message(b"payload".to_vec(), 3);
        original.attributes.insert("reject_reason".into(), "forged by the sender".into());
        let dead = copy(&original, "tampered", "message failed authentication");
        assert_eq!(dead.data, original.data);
        assert_eq!(dead.attributes["reject_reason"], "tampered", "the sender cannot choose the reason");
        assert_eq!(dead.attributes["original_message_id"], "42");
        assert_eq!(dead.attributes["k002"], "v");
        assert!(!dead.attributes.contains_key("original_data_sha256"), "nothing was cut");
    }

    #[test]
    fn a_dead_letter_of_a_message_at_the_size_limit_still_fits() {
        let original = message(vec![7; MAX_MESSAGE_BYTES - 100], 2);
        let dead = copy(&original, "tampered", "detail");
        assert!(bytes_of(&dead) <= MAX_MESSAGE_BYTES - FRAMING_BYTES, "{}", bytes_of(&dead));
        assert_eq!(dead.attributes["original_data_bytes"], (MAX_MESSAGE_BYTES - 100).to_string());
        let digest: String = Sha256::digest(&original.data).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(dead.attributes["original_data_sha256"], digest);
        assert_eq!(dead.attributes["k001"], "v", "the attributes are kept");
        assert_eq!(&dead.data[..], &original.data[..dead.data.len()], "a prefix of the data");
    }

    #[test]
    fn a_dead_letter_of_a_message_with_every_attribute_pubsub_allows_still_fits() {
        let original = message(b"payload".to_vec(), MAX_ATTRIBUTES);
        let dead = copy(&original, "tampered", "detail");
        assert_eq!(dead.attributes.len(), MAX_ATTRIBUTES - RESERVED_ATTRIBUTES, "room for a receipt");
        assert_eq!(dead.attributes["original_attribute_count"], "100");
        assert_eq!(dead.attributes["reject_reason"], "tampered");
        assert_eq!(dead.data, original.data, "the data fits whole");
        assert!(dead.attributes.contains_key("k000") && !dead.attributes.contains_key("k099"), "kept in key order");
    }
}
