//! The symmetric primitives of format v1 (encrypt and sign mode), keyed from a 256-bit
//! data key; attest mode's signatures are in `attest/`.
//!
//! Each primitive comes from the crate that measured fastest here (`docs/PERFORMANCE.md`):
//! AES-256-GCM from aws-lc-rs (1.7x RustCrypto's aes-gcm at 1 KiB; the Google client
//! crates link it already), HMAC-SHA256 and HKDF-SHA256 from RustCrypto's hmac, hkdf and
//! sha2 (cloning a precomputed keyed state beats aws-lc-rs by 1.3x at 1 KiB; one HKDF
//! extract serves both of a data key's derivations, where aws-lc-rs's ran it again for
//! each). All of them clear their key state when dropped: aws-lc-rs always, RustCrypto's
//! through sha2's `zeroize` feature, which a check below makes sure is on.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::constant_time;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng as _;
use sha2::Sha256;
use smallvec::SmallVec;
use zeroize::Zeroize as _;

use crate::format::{self, Attributes, COMMITMENT_LEN, NONCE_LEN, SIGNATURE_LEN, TAG_LEN};
use crate::secret::{KEY_LEN, SecretKey};

const ENCRYPTION_KEY_INFO: &[u8] = b"pubsub-envelope/v1 aes-256-gcm key";
const COMMITMENT_INFO: &[u8] = b"pubsub-envelope/v1 key commitment";

/// The AEAD key and key commitment derived from one data key.
///
/// Key commitment (as in the AWS Encryption SDK's committing suites): both the AES key
/// and a 32-byte commitment are derived from the data key with HKDF-SHA256, and the
/// commitment travels at the head of every ciphertext. An opener recomputes it from the
/// data key it unwrapped and refuses a mismatch, so no ciphertext opens under two keys.
pub(crate) struct EncryptionKey {
    aead: LessSafeKey,
    commitment: [u8; COMMITMENT_LEN],
}

/// The keyed SHA-256 state inside every HMAC and HKDF here is as secret as its key, and
/// sha2 clears it on drop only with its `zeroize` feature (the workspace turns it on).
/// This names the core behind `Hmac<Sha256>` as `ZeroizeOnDrop`, so a build without the
/// feature fails here rather than leaving key state in freed memory.
const _: fn() = || {
    fn zeroized_on_drop<T: hmac::digest::zeroize::ZeroizeOnDrop>() {}
    zeroized_on_drop::<sha2::block_api::Sha256VarCore>();
};

impl EncryptionKey {
    /// The AES key and the commitment, both HKDF-SHA256 (RFC 5869) of the data key with
    /// an empty salt, each under its own info (FORMAT.md, "Encrypt mode").
    pub(crate) fn derive(data_key: &SecretKey) -> Self {
        let (mut prk, hkdf) = Hkdf::<Sha256>::extract(None, data_key.expose());
        prk.as_mut_slice().zeroize();
        let mut aes_key = SecretKey::from_slice(&[0; KEY_LEN]).expect("fixed length");
        let mut commitment = [0; COMMITMENT_LEN];
        hkdf.expand(ENCRYPTION_KEY_INFO, aes_key.expose_mut()).expect("HKDF-SHA256 expands to 32 bytes");
        hkdf.expand(COMMITMENT_INFO, &mut commitment).expect("HKDF-SHA256 expands to 32 bytes");
        let unbound = UnboundKey::new(&AES_256_GCM, aes_key.expose()).expect("32-byte AES key");
        Self { aead: LessSafeKey::new(unbound), commitment }
    }

    /// Writes the commitment and a fresh random nonce into `out[..PREFIX]`, encrypts
    /// `out[PREFIX..]` in place and appends the tag.
    ///
    /// The caller builds the plaintext directly behind the reserved prefix, so sealing
    /// copies nothing.
    pub(crate) fn seal_in_place(&self, header: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        self.seal_in_place_with(nonce, header, out);
    }

    /// [`seal_in_place`](Self::seal_in_place) with a given nonce: for the test vectors.
    /// A nonce must never be used twice under one key.
    pub(crate) fn seal_in_place_with(&self, nonce: [u8; NONCE_LEN], header: &[u8], out: &mut Vec<u8>) {
        out[..COMMITMENT_LEN].copy_from_slice(&self.commitment);
        out[COMMITMENT_LEN..PREFIX].copy_from_slice(&nonce);
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(header), &mut out[PREFIX..])
            .expect("AES-GCM seals any message Pub/Sub can carry");
        out.extend_from_slice(tag.as_ref());
    }

    /// Checks the commitment, then decrypts `payload` (as laid out by
    /// [`seal_in_place`](Self::seal_in_place)) into a fresh buffer.
    pub(crate) fn open(&self, header: &[u8], payload: &[u8]) -> Result<Vec<u8>, OpenFailure> {
        if payload.len() < PREFIX + TAG_LEN {
            return Err(OpenFailure::Truncated);
        }
        let (commitment, rest) = payload.split_at(COMMITMENT_LEN);
        if constant_time::verify_slices_are_equal(commitment, &self.commitment).is_err() {
            return Err(OpenFailure::Forged);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12-byte nonce");
        let mut buffer = sealed.to_vec();
        let plaintext_len =
            self.aead.open_in_place(nonce, Aad::from(header), &mut buffer).map_err(|_| OpenFailure::Forged)?.len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }
}

/// Bytes before the AES-GCM ciphertext: commitment, then nonce.
pub(crate) const PREFIX: usize = COMMITMENT_LEN + NONCE_LEN;

/// Why authenticated decryption or verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenFailure {
    /// Too short to hold a commitment, nonce and tag.
    Truncated,
    /// The commitment, tag or signature does not match.
    Forged,
}

/// HMAC-SHA256 over the canonical header, the data's length and the data.
///
/// Holds the keyed state with the header's fixed prefix (context, mode, key name and
/// wrapped key) already absorbed, and clones it per message: each message then hashes
/// only its own seal time, attributes and data.
pub(crate) struct SigningKey(Hmac<Sha256>);

impl SigningKey {
    pub(crate) fn new(key: &SecretKey, header_prefix: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose()).expect("HMAC takes any key length");
        mac.update(header_prefix);
        Self(mac)
    }

    /// The keyed state after the header's rest (`sorted`: the producer's attributes by
    /// key) and the data.
    fn keyed(&self, sealed_at: u64, sorted: &[(&str, &str)], data: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        // The header's small pieces (lengths, names, values) gathered first: one update
        // instead of a dozen, each of which pays the hasher's buffering.
        let mut rest = SmallVec::<[u8; 256]>::new();
        format::header_rest_sorted(sealed_at, sorted, |chunk| rest.extend_from_slice(chunk));
        rest.extend_from_slice(&(data.len() as u64).to_be_bytes());
        mac.update(&rest);
        mac.update(data);
        mac
    }

    pub(crate) fn sign(&self, sealed_at: u64, attributes: &Attributes, data: &[u8]) -> [u8; SIGNATURE_LEN] {
        let sorted = format::sorted_pairs(attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.keyed(sealed_at, &sorted, data).finalize().into_bytes().into()
    }

    /// Checks `signature` over the header's rest and `data`, `sorted` being the
    /// message's producer attributes sorted by key. Compares in constant time (through
    /// `Mac::verify_slice`).
    pub(crate) fn verify(
        &self,
        sealed_at: u64,
        sorted: &[(&str, &str)],
        data: &[u8],
        signature: &[u8],
    ) -> Result<(), OpenFailure> {
        self.keyed(sealed_at, sorted, data).verify_slice(signature).map_err(|_| OpenFailure::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(key: &EncryptionKey, header: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = vec![0; PREFIX];
        out.extend_from_slice(plaintext);
        key.seal_in_place(header, &mut out);
        out
    }

    #[test]
    fn encryption_round_trips_and_binds_header() {
        let key = EncryptionKey::derive(&SecretKey::generate());
        let payload = sealed(&key, b"header", b"secret words");
        assert_eq!(payload.len(), PREFIX + 12 + TAG_LEN);
        assert_eq!(key.open(b"header", &payload).unwrap(), b"secret words");
        assert_eq!(key.open(b"other", &payload), Err(OpenFailure::Forged));
    }

    #[test]
    fn payloads_too_short_for_commitment_nonce_and_tag_are_truncated() {
        let key = EncryptionKey::derive(&SecretKey::generate());
        for len in [0, 1, PREFIX, PREFIX + TAG_LEN - 1] {
            assert_eq!(key.open(b"h", &vec![0; len]), Err(OpenFailure::Truncated), "{len} bytes");
        }
        let mut exactly = vec![0; PREFIX + TAG_LEN];
        exactly[..COMMITMENT_LEN].copy_from_slice(&key.commitment);
        assert_eq!(key.open(b"h", &exactly), Err(OpenFailure::Forged), "long enough, then authenticated");
        assert_eq!(sealed(&key, b"h", b"").len(), PREFIX + TAG_LEN);
        assert_eq!(key.open(b"h", &sealed(&key, b"h", b"")).unwrap(), b"");
    }

    #[test]
    fn commitment_differs_per_key_and_is_checked() {
        let a = EncryptionKey::derive(&SecretKey::generate());
        let b = EncryptionKey::derive(&SecretKey::generate());
        assert_ne!(a.commitment, b.commitment);
        let mut payload = sealed(&a, b"h", b"x");
        payload[..COMMITMENT_LEN].copy_from_slice(&b.commitment);
        assert_eq!(a.open(b"h", &payload), Err(OpenFailure::Forged));
    }

    #[test]
    fn nonces_are_fresh() {
        let key = EncryptionKey::derive(&SecretKey::generate());
        let one = sealed(&key, b"h", b"same");
        let two = sealed(&key, b"h", b"same");
        assert_ne!(one[COMMITMENT_LEN..PREFIX], two[COMMITMENT_LEN..PREFIX]);
    }

    #[test]
    fn hmac_binds_prefix_attributes_and_data() {
        let secret = SecretKey::generate();
        let key = SigningKey::new(&secret, b"prefix");
        let attributes = Attributes::from([("a".to_owned(), "b".to_owned())]);
        let tag = key.sign(5, &attributes, b"c");
        let pairs = [("a", "b")];
        assert!(key.verify(5, &pairs, b"c", &tag).is_ok());
        assert_eq!(key.verify(6, &pairs, b"c", &tag), Err(OpenFailure::Forged));
        assert_eq!(key.verify(5, &pairs, b"d", &tag), Err(OpenFailure::Forged));
        assert_eq!(key.verify(5, &[], b"c", &tag), Err(OpenFailure::Forged));
        assert_eq!(key.verify(5, &[("a", "c")], b"c", &tag), Err(OpenFailure::Forged));
        assert_eq!(key.verify(5, &pairs, b"c", &tag[..31]), Err(OpenFailure::Forged));
        let other_prefix = SigningKey::new(&secret, b"prefiy");
        assert_eq!(other_prefix.verify(5, &pairs, b"c", &tag), Err(OpenFailure::Forged));
    }
}
