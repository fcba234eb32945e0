//! The rules producer attributes obey (count, lengths, reserved names) and the
//! canonical order they are listed in.

use smallvec::SmallVec;

use super::{
    Attributes, MAX_ATTRIBUTE_KEY_LEN, MAX_ATTRIBUTE_VALUE_LEN, MAX_ATTRIBUTES, Mode, PUBSUB_RESERVED_PREFIX,
    RESERVED_PREFIX, is_envelope_attribute,
};

/// Whether a producer may use `name` for an attribute of its own.
pub fn is_reserved(name: &str) -> bool {
    is_envelope_attribute(name) || has_reserved_prefix(name)
}

/// Whether `name` starts with a prefix the envelope or Pub/Sub reserves; with
/// [`is_envelope_attribute`], what [`is_reserved`] checks.
pub fn has_reserved_prefix(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX) || name.starts_with(PUBSUB_RESERVED_PREFIX)
}

/// Why a set of producer attributes cannot be sealed or was not sealed correctly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// More than the mode allows ([`Mode::max_producer_attributes`]).
    #[error("{count} attributes, more than the {max} a {mode} message can carry within Pub/Sub's {MAX_ATTRIBUTES}")]
    TooMany {
        /// Attributes given.
        count: usize,
        /// The most allowed.
        max: usize,
        /// The mode sealed in.
        mode: Mode,
    },
    /// An empty key, or one longer than [`MAX_ATTRIBUTE_KEY_LEN`].
    #[error("attribute key of {0} bytes (must be 1 to {MAX_ATTRIBUTE_KEY_LEN})")]
    BadKeyLength(usize),
    /// A value longer than [`MAX_ATTRIBUTE_VALUE_LEN`].
    #[error("attribute `{0}` has a value longer than {MAX_ATTRIBUTE_VALUE_LEN} bytes")]
    ValueTooLong(String),
    /// A name the envelope itself uses.
    #[error("attribute `{0}` is reserved by the envelope format")]
    Reserved(String),
}

/// Checks producer attributes against the format's rules before they are sealed in `mode`.
pub fn check_producer_attributes(attributes: &Attributes, mode: Mode) -> Result<(), AttributeError> {
    let max = mode.max_producer_attributes();
    if attributes.len() > max {
        return Err(AttributeError::TooMany { count: attributes.len(), max, mode });
    }
    for (key, value) in attributes {
        if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY_LEN {
            return Err(AttributeError::BadKeyLength(key.len()));
        }
        if value.len() > MAX_ATTRIBUTE_VALUE_LEN {
            return Err(AttributeError::ValueTooLong(key.clone()));
        }
        if is_reserved(key) {
            return Err(AttributeError::Reserved(key.clone()));
        }
    }
    Ok(())
}

/// Attribute pairs sorted by key bytes, as the canonical header and the sealed
/// plaintext list them. On the stack for the few attributes a message usually carries:
/// opening a message allocates no list.
pub type SortedPairs<'a> = SmallVec<[(&'a str, &'a str); 4]>;

/// `pairs`, sorted by key bytes.
pub fn sorted_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> SortedPairs<'a> {
    let mut pairs: SortedPairs<'a> = pairs.collect();
    sort_pairs(&mut pairs);
    pairs
}

/// Sorts attribute pairs by key bytes, the order the format lists them in.
pub fn sort_pairs(pairs: &mut [(&str, &str)]) {
    pairs.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
}

/// Feeds `u32 count` then each `(key, value)` pair of `sorted`, as length-prefixed
/// strings, to `sink`. The attribute list of both the header and the sealed plaintext.
pub(super) fn attribute_list(sorted: &[(&str, &str)], mut sink: impl FnMut(&[u8])) {
    let count = u32::try_from(sorted.len()).expect("more than 4 billion attributes");
    sink(&count.to_be_bytes());
    for (key, value) in sorted {
        for text in [key, value] {
            let len = u32::try_from(text.len()).expect("attribute longer than 4 GiB");
            sink(&len.to_be_bytes());
            sink(text.as_bytes());
        }
    }
}
