//! Wire format v1: attribute names, the canonical bytes that are authenticated, and the
//! layout of sealed payloads. `docs/FORMAT.md` is the normative description; this module
//! is its implementation.

use std::collections::HashMap;

mod attributes;
mod encoding;
mod payload;

use attributes::attribute_list;
pub use attributes::{
    AttributeError, SortedPairs, check_producer_attributes, has_reserved_prefix, is_reserved, sort_pairs, sorted_pairs,
};
pub use encoding::{decode_base64, decode_base64_into, encode_base64};
pub use payload::{PayloadError, decode_sealed_plaintext, put_sealed_plaintext, sealed_plaintext_len};

/// A message's attributes, as Pub/Sub carries them.
pub type Attributes = HashMap<String, String>;

/// The only format version this crate writes and reads.
pub const VERSION: &str = "1";

/// Declares the envelope's own attributes once: each one's name on the wire, what it
/// holds, and its slot in a parsed envelope. Everything else (the reserved-name check,
/// the one-pass parse, the constants below) is generated from this table.
macro_rules! envelope_attributes {
    ($($variant:ident = $name:literal, $constant:ident: $doc:literal;)*) => {
        /// One of the envelope's own attributes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Attr {
            $(#[doc = $doc] $variant,)*
        }

        impl Attr {
            /// Every envelope attribute, in table order.
            pub const ALL: &'static [Attr] = &[$(Attr::$variant),*];
            /// How many there are.
            pub const COUNT: usize = Attr::ALL.len();

            /// The attribute's name on the wire.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Attr::$variant => $name,)*
                }
            }

            /// The envelope attribute called `name`, if it is one.
            pub fn from_name(name: &str) -> Option<Attr> {
                match name {
                    $($name => Some(Attr::$variant),)*
                    _ => None,
                }
            }
        }

        $(
            #[doc = $doc]
            #[allow(dead_code, reason = "the crate names some through `Attr`; tests and fuzzers use every one")]
            pub const $constant: &str = $name;
        )*
    };
}

envelope_attributes! {
    Version = "envelope_version", VERSION_ATTR: "Names the format version; its value is [`VERSION`].";
    KmsKey = "kms_key", KMS_KEY_ATTR: "The KMS key that wrapped the data key (or, attest mode, the key version that signed), as a Cloud KMS resource name.";
    SealedAt = "envelope_sealed_at", SEALED_AT_ATTR: "When the message was sealed: decimal microseconds since the Unix epoch, strictly increasing under one data key.";
    DekWrapped = "dek_wrapped", DEK_WRAPPED_ATTR: "The wrapped AES-256-GCM data key (encrypt mode), standard base64.";
    SignKeyWrapped = "sign_key_wrapped", SIGN_KEY_WRAPPED_ATTR: "The wrapped HMAC-SHA256 key (sign mode), standard base64.";
    Signature = "signature", SIGNATURE_ATTR: "The message's tag or signature (sign mode, attest session and service-account flavours), standard base64.";
    AttestCert = "attest_cert", ATTEST_CERT_ATTR: "Attest mode, session flavour: the session certificate, standard base64.";
    AttestCertSignature = "attest_cert_signature", ATTEST_CERT_SIGNATURE_ATTR: "Attest mode, session flavour: the KMS key version's signature of the certificate, base64.";
    KmsSignature = "kms_signature", KMS_SIGNATURE_ATTR: "Attest mode, strict flavour: the KMS key version's signature of the message, base64.";
    AttestSigner = "attest_signer", ATTEST_SIGNER_ATTR: "Attest mode, service-account flavour: the signing account's email.";
    AttestKeyId = "attest_key_id", ATTEST_KEY_ID_ATTR: "Attest mode, service-account flavour: the id of the account key that signed.";
    AttestCertUrl = "attest_cert_url", ATTEST_CERT_URL_ATTR: "Attest mode, service-account flavour: where the account's public certificates are published.";
}

/// The five kinds of message: a mode, and in attest mode how it is attested. Each is
/// told by one marker attribute and carries exactly its own envelope attributes (the
/// table in `docs/FORMAT.md`, "Attributes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Encrypt mode.
    Encrypt,
    /// Sign mode.
    Sign,
    /// Attest mode, a session key certified by a KMS key version.
    AttestSession,
    /// Attest mode, the KMS key version signing each message (strict).
    AttestKms,
    /// Attest mode, a service account's own key.
    AttestServiceAccount,
}

impl Flavour {
    /// Every flavour, in the order of their header bytes' first use.
    pub const ALL: [Flavour; 5] =
        [Flavour::Encrypt, Flavour::Sign, Flavour::AttestSession, Flavour::AttestKms, Flavour::AttestServiceAccount];

    /// The attribute whose presence tells this flavour.
    pub fn marker(self) -> Attr {
        match self {
            Flavour::Encrypt => Attr::DekWrapped,
            Flavour::Sign => Attr::SignKeyWrapped,
            Flavour::AttestSession => Attr::AttestCert,
            Flavour::AttestKms => Attr::KmsSignature,
            Flavour::AttestServiceAccount => Attr::AttestSigner,
        }
    }

    /// The envelope attributes a message of this flavour carries, all required.
    pub fn attributes(self) -> &'static [Attr] {
        use Attr::*;
        match self {
            Flavour::Encrypt => &[Version, KmsKey, SealedAt, DekWrapped],
            Flavour::Sign => &[Version, KmsKey, SealedAt, SignKeyWrapped, Signature],
            Flavour::AttestSession => &[Version, KmsKey, SealedAt, AttestCert, AttestCertSignature, Signature],
            Flavour::AttestKms => &[Version, KmsKey, SealedAt, KmsSignature],
            Flavour::AttestServiceAccount => &[Version, SealedAt, AttestSigner, AttestKeyId, AttestCertUrl, Signature],
        }
    }

    /// The mode of this flavour.
    pub fn mode(self) -> Mode {
        match self {
            Flavour::Encrypt => Mode::Encrypt,
            Flavour::Sign => Mode::Sign,
            Flavour::AttestSession | Flavour::AttestKms | Flavour::AttestServiceAccount => Mode::Attest,
        }
    }

    /// The flavour's byte in the canonical header.
    pub fn header_byte(self) -> u8 {
        match self {
            Flavour::Encrypt => 0x01,
            Flavour::Sign => 0x02,
            Flavour::AttestSession => 0x03,
            Flavour::AttestServiceAccount => 0x04,
            Flavour::AttestKms => 0x05,
        }
    }
}

/// Prefix reserved for future envelope attributes.
const RESERVED_PREFIX: &str = "envelope_";
/// Prefix Pub/Sub reserves for its own client libraries.
const PUBSUB_RESERVED_PREFIX: &str = "googclient_";

/// Pub/Sub's own limits on attributes, which sealed attributes obey too.
pub const MAX_ATTRIBUTES: usize = 100;
/// Ed25519 signature length, as the delegated attest mode signs messages.
pub const ED25519_SIGNATURE_LEN: usize = 64;
/// Longest attribute key, in bytes.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 256;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 1024;

/// Domain separation for everything authenticated under format v1.
const CONTEXT: &[u8] = b"pubsub-envelope/v1\0";

/// Bytes of the key commitment at the head of an encrypted payload.
pub const COMMITMENT_LEN: usize = 32;
/// Bytes of the AES-GCM nonce that follows the commitment.
pub const NONCE_LEN: usize = 12;
/// Bytes of the AES-GCM tag at the end of an encrypted payload.
pub const TAG_LEN: usize = 16;
/// Bytes an encrypted payload adds to the sealed plaintext.
pub const ENCRYPT_OVERHEAD: usize = COMMITMENT_LEN + NONCE_LEN + TAG_LEN;
/// The shortest encrypted payload: the overhead plus the 4-byte attribute count that
/// every sealed plaintext starts with (an empty message with no attributes).
pub const MIN_ENCRYPTED_LEN: usize = ENCRYPT_OVERHEAD + 4;
/// Bytes of an HMAC-SHA256 signature.
pub const SIGNATURE_LEN: usize = 32;

/// How a message is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Confidentiality and integrity: AES-256-GCM, attributes sealed inside.
    Encrypt,
    /// Integrity only: HMAC-SHA256 over visible data and attributes.
    Sign,
    /// Integrity and proof of origin: an asymmetric signature that only the tenant's KMS
    /// key (or a session key it certified) could have made.
    Attest,
}

impl Mode {
    /// How many attributes of its own a producer may seal in this mode: Pub/Sub's
    /// [`MAX_ATTRIBUTES`], less the envelope's own where they travel side by side
    /// (5 in sign mode, at most 6 in attest mode).
    pub fn max_producer_attributes(self) -> usize {
        match self {
            Mode::Encrypt => MAX_ATTRIBUTES,
            Mode::Sign => MAX_ATTRIBUTES - Flavour::Sign.attributes().len(),
            Mode::Attest => MAX_ATTRIBUTES - Flavour::AttestSession.attributes().len(),
        }
    }

    /// The mode's name as the command lines spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Encrypt => "encrypt",
            Mode::Sign => "sign",
            Mode::Attest => "attest",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("attribute longer than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Whether `name` is one of the envelope's own attributes.
pub fn is_envelope_attribute(name: &str) -> bool {
    Attr::from_name(name).is_some()
}

/// The text of [`SEALED_AT_ATTR`] for `micros` since the Unix epoch.
pub fn encode_sealed_at(micros: u64) -> String {
    micros.to_string()
}

/// Parses [`SEALED_AT_ATTR`] strictly: 1 to 20 ASCII digits, no sign, no leading zero,
/// within `u64`.
pub fn parse_sealed_at(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 20
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// The first part of the canonical header: the same for every message under one data
/// key, so it is computed once per key (and, in sign mode, absorbed into the HMAC state
/// once).
///
/// `"pubsub-envelope/v1\0" || flavour byte || lp(name) || lp(key)`. `name` is the
/// `kms_key` text (the account's email in the service-account flavour); `key` is the
/// wrapped key's text in encrypt and sign mode, the `attest_cert` text in the session
/// flavour, the tenant id in the strict flavour and `attest_key_id` in the
/// service-account flavour.
pub fn header_prefix(flavour: Flavour, name: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTEXT.len() + 9 + name.len() + key.len());
    out.extend_from_slice(CONTEXT);
    out.push(flavour.header_byte());
    put_len_prefixed(&mut out, name.as_bytes());
    put_len_prefixed(&mut out, key.as_bytes());
    out
}

/// Feeds the rest of the canonical header to `sink`: the seal time, then the list of
/// every attribute that is not the envelope's own. In sign and attest mode these are
/// the producer's attributes; in encrypt mode the list is empty.
///
/// `u64(sealed_at) || u32(n) || lp(key_1) || lp(value_1) || ...`
pub fn header_rest(sealed_at: u64, attributes: &Attributes, sink: impl FnMut(&[u8])) {
    let covered = attributes.iter().filter(|(k, _)| !is_envelope_attribute(k));
    header_rest_sorted(sealed_at, &sorted_pairs(covered.map(|(k, v)| (k.as_str(), v.as_str()))), sink);
}

/// [`header_rest`] from the covered attributes, already sorted by key.
pub fn header_rest_sorted(sealed_at: u64, sorted: &[(&str, &str)], mut sink: impl FnMut(&[u8])) {
    sink(&sealed_at.to_be_bytes());
    attribute_list(sorted, sink);
}

/// The bytes an attest-mode signature covers: the canonical header of `flavour` (see
/// [`header_prefix`] for what `name` and `key` are), then `u64(len(data)) || data`.
pub fn signed_bytes(
    flavour: Flavour,
    name: &str,
    key: &str,
    sealed_at: u64,
    attributes: &Attributes,
    data: &[u8],
) -> Vec<u8> {
    let mut out = header_prefix(flavour, name, key);
    out.reserve(12 + data.len() + 8);
    header_rest(sealed_at, attributes, |chunk| out.extend_from_slice(chunk));
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The whole canonical header of an encrypted message, its AEAD associated data, from
/// the key's [`header_prefix`].
pub fn encrypt_header(prefix: &[u8], sealed_at: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(prefix.len() + 12);
    header.extend_from_slice(prefix);
    header_rest(sealed_at, &Attributes::new(), |chunk| header.extend_from_slice(chunk));
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn attribute_keys_and_values_may_be_as_long_as_pub_sub_allows_and_no_longer() {
        // Pub/Sub's limits, to the byte: a 256-byte key and a 1,024-byte value seal; one
        // byte more of either is refused before sealing.
        let check = |key: usize, value: usize| {
            check_producer_attributes(&Attributes::from([("k".repeat(key), "v".repeat(value))]), Mode::Sign)
        };
        assert_eq!(check(MAX_ATTRIBUTE_KEY_LEN, MAX_ATTRIBUTE_VALUE_LEN), Ok(()));
        assert_eq!(check(1, 0), Ok(()));
        assert_eq!(check(MAX_ATTRIBUTE_KEY_LEN + 1, 1), Err(AttributeError::BadKeyLength(MAX_ATTRIBUTE_KEY_LEN + 1)));
        assert_eq!(check(0, 1), Err(AttributeError::BadKeyLength(0)));
        assert_eq!(check(1, MAX_ATTRIBUTE_VALUE_LEN + 1), Err(AttributeError::ValueTooLong("k".into())));
    }

    #[test]
    fn modes_are_named_as_the_flags_spell_them_and_leave_room_for_the_envelope() {
        // The names are what the command lines accept and the logs print; a producer
        // keeps what Pub/Sub allows less the envelope attributes beside its own.
        let names: Vec<String> = [Mode::Encrypt, Mode::Sign, Mode::Attest].iter().map(ToString::to_string).collect();
        assert_eq!(names, ["encrypt", "sign", "attest"]);
        assert_eq!(Mode::Sign.as_str(), "sign");
        let room: Vec<usize> =
            [Mode::Encrypt, Mode::Sign, Mode::Attest].into_iter().map(Mode::max_producer_attributes).collect();
        assert_eq!(room, [100, 95, 94]);
    }

    fn header(flavour: Flavour, attributes: &Attributes) -> Vec<u8> {
        let mut out = header_prefix(flavour, &attributes[KMS_KEY_ATTR], &attributes[flavour.marker().name()]);
        header_rest(7, attributes, |chunk| out.extend_from_slice(chunk));
        out
    }

    fn envelope(flavour: Flavour, extra: &[(&str, &str)]) -> Attributes {
        let mut all =
            attrs(&[(KMS_KEY_ATTR, "projects/p/locations/l/keyRings/r/cryptoKeys/k"), (VERSION_ATTR, VERSION)]);
        all.insert(flavour.marker().name().into(), "AAAA".into());
        all.extend(attrs(extra));
        all
    }

    #[test]
    fn header_is_independent_of_insertion_order_and_ignores_signature() {
        let a = envelope(Flavour::Sign, &[("b", "2"), ("a", "1")]);
        let b = envelope(Flavour::Sign, &[("a", "1"), ("b", "2"), (SIGNATURE_ATTR, "x"), (SEALED_AT_ATTR, "9")]);
        assert_eq!(header(Flavour::Sign, &a), header(Flavour::Sign, &b));
    }

    #[test]
    fn header_separates_mode_and_boundaries() {
        let a = envelope(Flavour::Sign, &[("ab", "c")]);
        let b = envelope(Flavour::Sign, &[("a", "bc")]);
        assert_ne!(header(Flavour::Sign, &a), header(Flavour::Sign, &b));
        assert_ne!(header_prefix(Flavour::Sign, "k", "w"), header_prefix(Flavour::Encrypt, "k", "w"));
        assert_ne!(header_prefix(Flavour::Sign, "kw", ""), header_prefix(Flavour::Sign, "k", "w"));
    }

    #[test]
    fn header_bytes_are_as_documented() {
        let mut want = b"pubsub-envelope/v1\0".to_vec();
        want.extend_from_slice(&[2, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'w']);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 0]);
        want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 2, b'v', b'v']);
        let mut got = header_prefix(Flavour::Sign, "k", "w");
        header_rest(256, &attrs(&[("a", "vv"), (VERSION_ATTR, "1")]), |chunk| got.extend_from_slice(chunk));
        assert_eq!(got, want);
        let mut encrypt = b"pubsub-envelope/v1\0".to_vec();
        encrypt.extend_from_slice(&[1, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'w', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(encrypt_header(&header_prefix(Flavour::Encrypt, "k", "w"), 1), encrypt);
    }

    #[test]
    fn sealed_plaintext_round_trips() {
        let a = attrs(&[("x", "1"), ("yy", "")]);
        let mut sealed = Vec::new();
        put_sealed_plaintext(&mut sealed, b"hello", &a);
        assert_eq!(sealed.len(), sealed_plaintext_len(b"hello", &a));
        let (back, offset) = decode_sealed_plaintext(&sealed).unwrap();
        assert_eq!(back, a);
        assert_eq!(&sealed[offset..], b"hello");
    }

    #[test]
    fn sealed_plaintext_must_be_canonical() {
        // Strictly ascending by key bytes: one encoding per set of attributes.
        let list = |pairs: &[(&str, &str)]| {
            let mut out = (pairs.len() as u32).to_be_bytes().to_vec();
            for (k, v) in pairs {
                put_len_prefixed(&mut out, k.as_bytes());
                put_len_prefixed(&mut out, v.as_bytes());
            }
            out
        };
        assert!(decode_sealed_plaintext(&list(&[("a", "1"), ("b", "2")])).is_ok());
        assert_eq!(decode_sealed_plaintext(&list(&[("b", "2"), ("a", "1")])), Err(PayloadError::Unsorted("a".into())));
        assert_eq!(decode_sealed_plaintext(&list(&[("a", "1"), ("a", "2")])), Err(PayloadError::Duplicate("a".into())));
        assert_eq!(
            decode_sealed_plaintext(&list(&[("B", "1"), ("a", "2")])).map(|(a, _)| a.len()),
            Ok(2),
            "byte order, not case-folded"
        );
        let mut not_utf8 = list(&[("a", "1")]);
        *not_utf8.last_mut().unwrap() = 0xff;
        assert_eq!(decode_sealed_plaintext(&not_utf8), Err(PayloadError::NotUtf8));
        assert_eq!(
            decode_sealed_plaintext(&list(&[("", "1")])),
            Err(PayloadError::Attribute(AttributeError::BadKeyLength(0)))
        );
        assert_eq!(
            decode_sealed_plaintext(&list(&[(KMS_KEY_ATTR, "1")])),
            Err(PayloadError::Attribute(AttributeError::Reserved(KMS_KEY_ATTR.into())))
        );
    }

    #[test]
    fn one_table_names_every_envelope_attribute() {
        assert_eq!(Attr::COUNT, 12);
        for attr in Attr::ALL {
            assert_eq!(Attr::from_name(attr.name()), Some(*attr));
            assert!(is_reserved(attr.name()));
        }
        assert_eq!(Attr::from_name("envelope_other"), None);
        assert!(is_reserved("envelope_other") && is_reserved("googclient_x") && !is_reserved("kms_keys"));
        let mut bytes: Vec<u8> = Flavour::ALL.iter().map(|f| f.header_byte()).collect();
        bytes.dedup();
        assert_eq!(bytes, [1, 2, 3, 5, 4], "each flavour its own header byte");
        for flavour in Flavour::ALL {
            assert!(flavour.attributes().contains(&flavour.marker()));
            let others = Flavour::ALL.iter().filter(|f| **f != flavour);
            assert!(others.into_iter().all(|other| !flavour.attributes().contains(&other.marker())));
        }
    }

    #[test]
    fn sealed_plaintext_rejects_truncation_everywhere() {
        let mut sealed = Vec::new();
        put_sealed_plaintext(&mut sealed, b"", &attrs(&[("key", "value")]));
        for cut in 0..sealed.len() {
            assert!(decode_sealed_plaintext(&sealed[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn producer_attributes_are_checked() {
        let check = |attributes: &Attributes| check_producer_attributes(attributes, Mode::Encrypt);
        assert_eq!(check(&attrs(&[(KMS_KEY_ATTR, "x")])), Err(AttributeError::Reserved(KMS_KEY_ATTR.into())));
        assert!(check(&attrs(&[("envelope_x", "x")])).is_err());
        assert!(check(&attrs(&[("", "x")])).is_err());
        let long = "v".repeat(MAX_ATTRIBUTE_VALUE_LEN + 1);
        assert!(check(&attrs(&[("k", &long)])).is_err());
        let many = |n: usize| -> Attributes { (0..n).map(|i| (format!("k{i}"), String::new())).collect() };
        assert!(check(&many(MAX_ATTRIBUTES)).is_ok());
        assert_eq!(
            check(&many(MAX_ATTRIBUTES + 1)),
            Err(AttributeError::TooMany { count: 101, max: 100, mode: Mode::Encrypt })
        );
        // Signed, they travel beside the envelope's own and all must fit Pub/Sub's 100.
        assert!(check_producer_attributes(&many(95), Mode::Sign).is_ok());
        assert!(check_producer_attributes(&many(96), Mode::Sign).is_err());
    }

    #[test]
    fn base64_into_a_fixed_buffer() {
        let mut out = [0u8; 32];
        assert_eq!(decode_base64_into(&encode_base64(&[7; 32]), &mut out), Some(32));
        assert_eq!(out, [7; 32]);
        assert_eq!(decode_base64_into(&encode_base64(&[7; 31]), &mut out), Some(31));
        assert_eq!(decode_base64_into(&encode_base64(&[7; 33]), &mut out), None);
        assert_eq!(decode_base64_into("AAF=", &mut out), None);
    }

    #[test]
    fn sealed_at_is_strict() {
        assert_eq!(parse_sealed_at("1764338830123456"), Some(1_764_338_830_123_456));
        assert_eq!(parse_sealed_at("0"), Some(0));
        assert_eq!(parse_sealed_at(&encode_sealed_at(u64::MAX)), Some(u64::MAX));
        for bad in ["", "01", "+1", "-1", " 1", "1.5", "18446744073709551616", "1e6", "\u{0661}"] {
            assert_eq!(parse_sealed_at(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(decode_base64("AAEC").unwrap(), vec![0, 1, 2]);
        assert!(decode_base64("AAE").is_none(), "missing padding");
        assert!(decode_base64("AA EC").is_none(), "whitespace");
        assert!(decode_base64("AAF=").is_none(), "non-canonical trailing bits");
        assert!(decode_base64("AA-_").is_none(), "url-safe alphabet");
    }
}
