//! A message's fingerprint: its identity for deduplication, bound to who sealed it and
//! the same for every valid encoding of one sealed message (`docs/FORMAT.md`,
//! "Fingerprint").
//!
//! ```text
//! F = SHA-256("pubsub-envelope/v1 fingerprint" || 0x00 || lp(tenant id) || H
//!             || u64(len(data)) || D)
//! ```
//!
//! `H` is the canonical header (flavour, key name, wrapped key or certificate, seal
//! time, producer attributes) and `D` what only the sealer could have made: the AES-GCM
//! tag (encrypt), the HMAC tag (sign), and in attest mode SHA-256 of the data, never
//! the signature, since ECDSA signatures are randomised and malleable (`(r, s)` and
//! `(r, n - s)` both verify) and would give one message many fingerprints.
//!
//! Why not the tag alone, as before: AES-GCM's tag is linear in the ciphertext, so a
//! tenant holding its own data key can steer its tag to equal another tenant's, and
//! a shared set of tags let it suppress that tenant's message as a "copy". Here the
//! tag is hashed with the header, which names the sealer's key, so two tenants'
//! messages never share a fingerprint unless SHA-256 collides.

use sha2::{Digest as _, Sha256};
use smallvec::SmallVec;

use crate::format;

/// Bytes in a fingerprint: a whole SHA-256 digest.
pub const FINGERPRINT_LEN: usize = 32;

/// The fingerprint's domain separation, so that it never equals a hash made for
/// another purpose over the same bytes.
const CONTEXT: &[u8] = b"pubsub-envelope/v1 fingerprint\0";

/// SHA-256 with everything a data key's messages share already absorbed: the context,
/// the tenant id and the header's prefix. Made once per data key (or certificate) and
/// cloned per message, as the HMAC state is.
#[derive(Clone)]
pub(crate) struct FingerprintKey(Sha256);

impl FingerprintKey {
    /// `header_prefix` as [`format::header_prefix`] makes it.
    pub(crate) fn new(tenant_id: &str, header_prefix: &[u8]) -> Self {
        let mut hash = Sha256::new();
        hash.update(CONTEXT);
        hash.update((tenant_id.len() as u32).to_be_bytes());
        hash.update(tenant_id.as_bytes());
        hash.update(header_prefix);
        Self(hash)
    }

    /// The fingerprint of one message: the header's rest (`sorted`: the producer
    /// attributes it covers, by key; none in encrypt mode), the data's length and `proof`.
    pub(crate) fn finish(
        &self,
        sealed_at: u64,
        sorted: &[(&str, &str)],
        data_len: usize,
        proof: &[u8],
    ) -> [u8; FINGERPRINT_LEN] {
        let mut hash = self.0.clone();
        let mut rest = SmallVec::<[u8; 256]>::new();
        format::header_rest_sorted(sealed_at, sorted, |chunk| rest.extend_from_slice(chunk));
        rest.extend_from_slice(&(data_len as u64).to_be_bytes());
        rest.extend_from_slice(proof);
        hash.update(&rest);
        hash.finalize().into()
    }
}

/// Attest mode's `D`: SHA-256 of the data.
pub(crate) fn data_digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Flavour;

    // The fingerprint is SHA-256 over exactly the bytes FORMAT.md lists, in that order.
    #[test]
    fn is_sha256_over_context_tenant_header_length_and_proof() {
        let prefix = format::header_prefix(Flavour::Sign, "k", "w");
        let got = FingerprintKey::new("t1", &prefix).finish(256, &[("a", "vv")], 3, &[7; 32]);
        let mut input = b"pubsub-envelope/v1 fingerprint\0".to_vec();
        input.extend_from_slice(&[0, 0, 0, 2]);
        input.extend_from_slice(b"t1");
        input.extend_from_slice(&prefix);
        input.extend_from_slice(&256u64.to_be_bytes());
        input.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 2, b'v', b'v']);
        input.extend_from_slice(&3u64.to_be_bytes());
        input.extend_from_slice(&[7; 32]);
        assert_eq!(got, <[u8; 32]>::from(Sha256::digest(&input)));
    }

    // Every input moves it: tenant, key name, seal time, attributes, length, proof.
    #[test]
    fn differs_when_any_part_differs() {
        let base =
            |tenant: &str, name: &str| FingerprintKey::new(tenant, &format::header_prefix(Flavour::Encrypt, name, "w"));
        let one = base("t1", "k").finish(1, &[], 64, &[1; 16]);
        assert_ne!(one, base("t2", "k").finish(1, &[], 64, &[1; 16]), "tenant");
        assert_ne!(one, base("t1", "k2").finish(1, &[], 64, &[1; 16]), "key name");
        assert_ne!(one, base("t1", "k").finish(2, &[], 64, &[1; 16]), "seal time");
        assert_ne!(one, base("t1", "k").finish(1, &[("a", "")], 64, &[1; 16]), "attributes");
        assert_ne!(one, base("t1", "k").finish(1, &[], 65, &[1; 16]), "length");
        assert_ne!(one, base("t1", "k").finish(1, &[], 64, &[2; 16]), "proof");
        assert_eq!(one, base("t1", "k").finish(1, &[], 64, &[1; 16]), "and nothing else");
    }
}
