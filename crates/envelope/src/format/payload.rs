//! The plaintext sealed in encrypt mode: the producer's attribute list, then the data.

use super::attributes::{AttributeError, attribute_list, check_producer_attributes, sorted_pairs};
use super::{Attributes, MAX_ATTRIBUTES, Mode};

/// The length of the plaintext sealed in encrypt mode.
pub fn sealed_plaintext_len(data: &[u8], attributes: &Attributes) -> usize {
    let attr_bytes: usize = attributes.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    4 + attr_bytes + data.len()
}

/// Appends the plaintext sealed in encrypt mode: the producer's attribute list, then
/// the data.
pub fn put_sealed_plaintext(out: &mut Vec<u8>, data: &[u8], attributes: &Attributes) {
    let sorted = sorted_pairs(attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    attribute_list(&sorted, |chunk| out.extend_from_slice(chunk));
    out.extend_from_slice(data);
}

/// Why a sealed plaintext could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The attribute list ran past the end of the plaintext.
    #[error("sealed attribute list is truncated")]
    Truncated,
    /// A sealed attribute key or value is not UTF-8.
    #[error("sealed attribute is not UTF-8")]
    NotUtf8,
    /// The same key appears twice.
    #[error("sealed attribute `{0}` appears twice")]
    Duplicate(String),
    /// A key that does not sort after the one before it (by bytes).
    #[error("sealed attribute `{0}` is out of order")]
    Unsorted(String),
    /// The attributes break the format's rules.
    #[error(transparent)]
    Attribute(#[from] AttributeError),
}

/// Splits a sealed plaintext into its attributes and the offset where the data starts.
pub fn decode_sealed_plaintext(plaintext: &[u8]) -> Result<(Attributes, usize), PayloadError> {
    let mut reader = Reader { bytes: plaintext, pos: 0 };
    let count = reader.u32()? as usize;
    if count > MAX_ATTRIBUTES {
        return Err(AttributeError::TooMany { count, max: MAX_ATTRIBUTES, mode: Mode::Encrypt }.into());
    }
    let mut attributes = Attributes::with_capacity(count);
    let mut previous: Option<String> = None;
    for _ in 0..count {
        let key = reader.string()?;
        let value = reader.string()?;
        // The list is canonical: strictly ascending by key bytes, so each set of
        // attributes has exactly one encoding (and no key appears twice).
        if let Some(previous) = &previous {
            match previous.as_bytes().cmp(key.as_bytes()) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(PayloadError::Duplicate(key)),
                std::cmp::Ordering::Greater => return Err(PayloadError::Unsorted(key)),
            }
        }
        previous = Some(key.clone());
        attributes.insert(key, value);
    }
    check_producer_attributes(&attributes, Mode::Encrypt)?;
    Ok((attributes, reader.pos))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8], PayloadError> {
        let end = self.pos.checked_add(len).ok_or(PayloadError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(PayloadError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, PayloadError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes(bytes.try_into().expect("took 4 bytes")))
    }

    fn string(&mut self) -> Result<String, PayloadError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| PayloadError::NotUtf8)
    }
}
