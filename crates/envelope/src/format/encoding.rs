//! Binary attributes as text: strict standard base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Standard base64 with padding, as every binary attribute is written.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Strict standard base64: padding required, no whitespace, canonical trailing bits.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// [`decode_base64`] into `out`, without allocating; `None` also when `out` is too
/// small. Returns how many bytes were written.
pub fn decode_base64_into(text: &str, out: &mut [u8]) -> Option<usize> {
    // The engine refuses a buffer smaller than its estimate (3 bytes per 4 characters),
    // which for a padded encoding of `out.len()` bytes is at most 2 more. Signatures
    // are at most 64 bytes.
    let mut buffer = [0u8; 80];
    let written = STANDARD.decode_slice(text, buffer.get_mut(..out.len() + 2)?).ok()?;
    out.get_mut(..written)?.copy_from_slice(&buffer[..written]);
    Some(written)
}
