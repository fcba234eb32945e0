//! Key material that cleans up after itself.

use std::fmt;

use rand::TryRng as _;
use rand::rngs::SysRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length in bytes of every symmetric key this crate makes or unwraps.
pub const KEY_LEN: usize = 32;

/// 256 bits of secret key material.
///
/// Zeroized on drop, and deliberately without a `Display` and with a `Debug` that
/// prints nothing of the key, so that it cannot end up in a log line by accident.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_LEN];
        SysRng.try_fill_bytes(&mut key).expect("the operating system's random number generator failed");
        Self(key)
    }

    /// Copies exactly 32 bytes into a new key; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let key: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(key))
    }

    /// The raw key bytes, for the few places that must hand them to a primitive.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Mutable key bytes, for a derivation to write into.
    pub(crate) fn expose_mut(&mut self) -> &mut [u8; KEY_LEN] {
        &mut self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = SecretKey::from_slice(&[0xAB; KEY_LEN]).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(SecretKey::generate().expose(), SecretKey::generate().expose());
    }

    #[test]
    fn from_slice_requires_exact_length() {
        assert!(SecretKey::from_slice(&[1; 31]).is_none());
        assert!(SecretKey::from_slice(&[1; 33]).is_none());
        assert!(SecretKey::from_slice(&[1; 32]).is_some());
    }
}
