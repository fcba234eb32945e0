//! Reading a message's envelope attributes: which flavour, which key, the seal time and
//! the proof, each checked for presence and shape before any key is looked up.

use crate::attest::ServiceAccountSigned;
use crate::error::{Malformed, OpenError};
use crate::format::{self, Attr, Attributes, Flavour};

/// The envelope attributes of one message, checked for presence and shape.
pub(super) struct Envelope<'a> {
    pub(super) flavour: Flavour,
    pub(super) kms_key: &'a str,
    /// The marker attribute's text where the header's key field carries it: the
    /// wrapped key (encrypt, sign) or the certificate (attest session); empty otherwise.
    pub(super) marker_text: &'a str,
    /// Microseconds since the Unix epoch.
    pub(super) sealed_at: u64,
    pub(super) proof: Proof<'a>,
    /// The attributes that are not the envelope's, sorted by name: what the header
    /// covers in sign and attest mode (none in encrypt mode).
    pub(super) producer: format::SortedPairs<'a>,
}

/// What authenticates the message, decoded.
pub(super) enum Proof<'a> {
    /// Encrypt mode: the AEAD tag, inside the payload.
    Aead,
    /// Sign mode: the HMAC tag.
    Hmac([u8; format::SIGNATURE_LEN]),
    /// Attest mode.
    Attest(AttestProof<'a>),
}

/// The signatures of attest mode's three flavours.
pub(super) enum AttestProof<'a> {
    /// The certificate's signature (base64 text) and the session key's.
    Session { certificate_signature: &'a str, signature: [u8; format::ED25519_SIGNATURE_LEN] },
    /// The KMS key version's own signature of the message.
    Kms(Vec<u8>),
    /// A service account's: who signed, and the RSA signature.
    ServiceAccount { named: ServiceAccountSigned<'a>, signature: Vec<u8> },
}

impl<'a> Envelope<'a> {
    pub(super) fn parse(attributes: &'a Attributes) -> Result<Self, OpenError> {
        // One pass over the attributes instead of a hash lookup per envelope name: on
        // the hot path this parse cost more than the lookups' worth of decryption.
        let mut fields: [Option<&'a str>; Attr::COUNT] = [None; Attr::COUNT];
        // Bit `attr as usize` set for each envelope attribute present.
        let mut present_bits = 0u32;
        let mut stray: Option<&'a String> = None;
        let mut producer = format::SortedPairs::new();
        for (name, value) in attributes {
            match Attr::from_name(name) {
                Some(attr) => {
                    fields[attr as usize] = Some(value.as_str());
                    present_bits |= 1 << attr as u32;
                }
                None if format::has_reserved_prefix(name) => _ = stray.get_or_insert(name),
                None => producer.push((name.as_str(), value.as_str())),
            }
        }
        format::sort_pairs(&mut producer);
        let field = |attr: Attr| fields[attr as usize];
        let required = |attr: Attr| field(attr).ok_or(Malformed::MissingAttribute(attr.name()));
        let version = required(Attr::Version)?;
        if version != format::VERSION {
            return Err(Malformed::UnknownVersion(version.to_owned()).into());
        }
        // Each flavour is told by one marker attribute, and carries exactly its own
        // envelope attributes.
        let mut present = Flavour::ALL.into_iter().filter(|flavour| field(flavour.marker()).is_some());
        let flavour = match (present.next(), present.next()) {
            (Some(flavour), None) => flavour,
            (Some(first), Some(second)) => {
                return Err(Malformed::GarbledAttribute {
                    name: first.marker().name(),
                    why: format!("a message carries one of {}, not also {}", MARKERS, second.marker().name()),
                }
                .into());
            }
            (None, _) => return Err(Malformed::MissingAttribute(MARKERS).into()),
        };
        let own = flavour.attributes();
        // A service account signs in its own name; every other kind names a KMS key.
        let kms_key = if own.contains(&Attr::KmsKey) { required(Attr::KmsKey)? } else { "" };
        let sealed_at =
            format::parse_sealed_at(required(Attr::SealedAt)?).ok_or_else(|| Malformed::GarbledAttribute {
                name: format::SEALED_AT_ATTR,
                why: "not a decimal count of microseconds".into(),
            })?;
        // Encrypted messages carry nothing visible but the envelope; the others carry no
        // reserved name that is not their own.
        let own_bits = own.iter().fold(0u32, |bits, attr| bits | 1 << *attr as u32);
        let misplaced = present_bits & !own_bits;
        let misplaced = (misplaced != 0).then(|| Attr::ALL[misplaced.trailing_zeros() as usize]);
        let extra = misplaced.map(|attr| attr.name().to_owned()).or(stray.cloned());
        let extra = extra.or_else(|| match (flavour, producer.first()) {
            (Flavour::Encrypt, Some((name, _))) => Some((*name).to_owned()),
            _ => None,
        });
        if let Some(extra) = extra {
            return Err(Malformed::UnexpectedAttribute(extra).into());
        }
        let (marker_text, proof) = match flavour {
            Flavour::Encrypt => (required(Attr::DekWrapped)?, Proof::Aead),
            Flavour::Sign => (
                required(Attr::SignKeyWrapped)?,
                Proof::Hmac(decode_exact(required(Attr::Signature)?, Attr::Signature)?),
            ),
            Flavour::AttestSession => {
                let certificate_signature = required(Attr::AttestCertSignature)?;
                decode_bounded(certificate_signature, Attr::AttestCertSignature, MAX_ECDSA_SIGNATURE_LEN)?;
                let signature = decode_exact(required(Attr::Signature)?, Attr::Signature)?;
                (required(Attr::AttestCert)?, Proof::Attest(AttestProof::Session { certificate_signature, signature }))
            }
            Flavour::AttestKms => {
                let signature =
                    decode_bounded(required(Attr::KmsSignature)?, Attr::KmsSignature, MAX_ECDSA_SIGNATURE_LEN)?;
                ("", Proof::Attest(AttestProof::Kms(signature)))
            }
            Flavour::AttestServiceAccount => {
                let named = ServiceAccountSigned {
                    signer: required(Attr::AttestSigner)?,
                    key_id: required(Attr::AttestKeyId)?,
                    cert_url: required(Attr::AttestCertUrl)?,
                };
                let signature = decode_bounded(required(Attr::Signature)?, Attr::Signature, MAX_RSA_SIGNATURE_LEN)?;
                ("", Proof::Attest(AttestProof::ServiceAccount { named, signature }))
            }
        };
        Ok(Self { flavour, kms_key, marker_text, sealed_at, proof, producer })
    }
}

// `Envelope::parse` keeps one bit per envelope attribute in a `u32`.
const _: () = assert!(Attr::COUNT <= 32, "one bit per envelope attribute");

/// The marker attributes, as error messages name them.
const MARKERS: &str = "dek_wrapped, sign_key_wrapped, attest_cert, kms_signature or attest_signer";

/// The longest ASN.1 DER ECDSA P-256 signature.
const MAX_ECDSA_SIGNATURE_LEN: usize = 72;
/// The longest RSA signature accepted (8192-bit keys).
const MAX_RSA_SIGNATURE_LEN: usize = 1024;

/// Decodes the base64 attribute `attr` into exactly `N` bytes.
fn decode_exact<const N: usize>(text: &str, attr: Attr) -> Result<[u8; N], OpenError> {
    let mut out = [0; N];
    let len = format::decode_base64_into(text, &mut out).ok_or(Malformed::BadBase64(attr.name()))?;
    if len != N {
        return Err(Malformed::GarbledAttribute { name: attr.name(), why: format!("not {N} bytes") }.into());
    }
    Ok(out)
}

/// Decodes the base64 attribute `attr`, of 1 to `max` bytes.
fn decode_bounded(text: &str, attr: Attr, max: usize) -> Result<Vec<u8>, OpenError> {
    let bytes = format::decode_base64(text).ok_or(Malformed::BadBase64(attr.name()))?;
    if bytes.is_empty() || bytes.len() > max {
        let why = format!("a signature of {} bytes (must be 1 to {max})", bytes.len());
        return Err(Malformed::GarbledAttribute { name: attr.name(), why }.into());
    }
    Ok(bytes)
}
