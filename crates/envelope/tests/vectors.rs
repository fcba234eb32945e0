//! The published test vectors (`tests/vectors/*.json`) hold: every valid vector seals to
//! exactly its bytes and opens to exactly its input, and every invalid one is refused
//! with exactly its reason code. A change to the format or to a reason code fails here.
//!
//! The files are made by `WRITE_VECTORS=1 cargo test -p pubsub-envelope --test vectors
//! -- --ignored write_vectors`; `docs/FORMAT.md` ("Test vectors") describes them.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use bytes::Bytes;
use pubsub_envelope::format::{
    self, ATTEST_CERT_ATTR, ATTEST_CERT_SIGNATURE_ATTR, DEK_WRAPPED_ATTR, KMS_KEY_ATTR, KMS_SIGNATURE_ATTR,
    SEALED_AT_ATTR, SIGN_KEY_WRAPPED_ATTR, SIGNATURE_ATTR, VERSION_ATTR,
};
use pubsub_envelope::internals::{Certificate, FixedKey, local_wrap_with, seal};
use pubsub_envelope::kms::{KeySign, KeyWrap, KmsError};
use pubsub_envelope::{
    AttestBy, Attributes, KeyName, KeyVersionName, ManualClock, Mode, Opener, Sealed, Sealer, SecretKey, TrustedKeys,
};
use serde::{Deserialize, Serialize};

const TENANT: &str = "tenant-1";
const KMS_KEY: &str = "projects/tenant-1/locations/global/keyRings/bus/cryptoKeys/key-1";
const SIGNER: &str = "projects/tenant-1/locations/global/keyRings/bus/cryptoKeys/signer-1/cryptoKeyVersions/1";
const TRUSTED: &str = "projects/tenant-1/*";
const SEALED_AT: u64 = 1_764_338_830_123_456;

/// One file: the opener's settings, what its KMS knows, and the vectors.
#[derive(Debug, Serialize, Deserialize)]
struct File {
    description: String,
    mode: String,
    /// The opener these vectors are checked with.
    tenant_id: String,
    trusted_kms_keys: Vec<String>,
    /// What the KMS answers: the data key behind each (kms_key, wrapped key, tenant id),
    /// and each signing key version's public key (DER SubjectPublicKeyInfo, base64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    wrapped_keys: Vec<WrappedKey>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    public_keys: BTreeMap<String, String>,
    valid: Vec<Valid>,
    invalid: Vec<Invalid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WrappedKey {
    kms_key: String,
    tenant_id: String,
    /// Base64 of the wrapped key's bytes (what the message carries, base64 again).
    wrapped: String,
    /// Base64 of the 32-byte data key.
    data_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Valid {
    name: String,
    /// What the producer gave: data (base64) and attributes.
    data: String,
    attributes: BTreeMap<String, String>,
    sealed_at: u64,
    /// Encrypt mode: the AES-GCM nonce (base64). Attest session flavour: the session
    /// key's Ed25519 seed (base64), and the certificate and its signature are in the
    /// sealed attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_seed: Option<String>,
    /// The canonical header `H` (base64), for implementers to compare with theirs.
    header: String,
    /// What goes on the wire.
    sealed: Message,
    /// The first 16 bytes of the authentication tag, base64.
    fingerprint: String,
    /// Whether the sealed bytes are reproducible (ECDSA signatures are not: the strict
    /// flavour's vectors are verify-only).
    deterministic: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Message {
    data: String,
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Invalid {
    name: String,
    sealed: Message,
    reason: String,
}

fn b64(bytes: &[u8]) -> String {
    format::encode_base64(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    format::decode_base64(text).unwrap_or_else(|| panic!("{text:?} is not base64"))
}

fn counting(from: u8) -> [u8; 32] {
    std::array::from_fn(|i| from.wrapping_add(i as u8))
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// A KMS that knows exactly what a vector file says.
struct VectorKms {
    wrapped: Vec<WrappedKey>,
    public_keys: BTreeMap<String, String>,
}

#[async_trait]
impl KeyWrap for VectorKms {
    async fn wrap(&self, _: &KeyName, _: &SecretKey, _: &[u8]) -> Result<Vec<u8>, KmsError> {
        Err(KmsError::Rejected("the vector KMS only unwraps".into()))
    }

    async fn unwrap(&self, name: &KeyName, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, KmsError> {
        let known = self.wrapped.iter().find(|key| {
            key.kms_key == name.as_str() && unb64(&key.wrapped) == wrapped && key.tenant_id.as_bytes() == aad
        });
        let key = known.ok_or_else(|| KmsError::UnwrapRejected(name.to_string()))?;
        Ok(SecretKey::from_slice(&unb64(&key.data_key)).expect("32 bytes"))
    }
}

#[async_trait]
impl KeySign for VectorKms {
    async fn sign(&self, _: &KeyVersionName, _: &[u8]) -> Result<Vec<u8>, KmsError> {
        Err(KmsError::Rejected("the vector KMS only verifies".into()))
    }

    async fn public_key(&self, name: &KeyVersionName) -> Result<Vec<u8>, KmsError> {
        self.public_keys.get(name.as_str()).map(|der| unb64(der)).ok_or_else(|| KmsError::KeyNotFound(name.to_string()))
    }
}

fn opener(file: &File) -> Opener {
    let kms = Arc::new(VectorKms { wrapped: file.wrapped_keys.clone(), public_keys: file.public_keys.clone() });
    let trusted = TrustedKeys::from_patterns(&file.trusted_kms_keys).unwrap();
    Opener::builder(file.tenant_id.clone(), trusted).kms(kms).build().unwrap()
}

fn to_attributes(map: &BTreeMap<String, String>) -> Attributes {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_map(attributes: &Attributes) -> BTreeMap<String, String> {
    attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn read(name: &str) -> File {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Re-seals a deterministic vector through the crate's own sealing code.
fn reseal(file: &File, vector: &Valid) -> Sealed {
    let data = Bytes::from(unb64(&vector.data));
    let attributes = to_attributes(&vector.attributes);
    let key = &file.wrapped_keys.first();
    let data_key = key.map(|key| SecretKey::from_slice(&unb64(&key.data_key)).unwrap());
    let wrapped = key.map(|key| unb64(&key.wrapped)).unwrap_or_default();
    let fixed = match file.mode.as_str() {
        "encrypt" => FixedKey::Encrypt {
            data_key: data_key.as_ref().unwrap(),
            kms_key: KMS_KEY,
            wrapped: &wrapped,
            nonce: unb64(vector.nonce.as_ref().unwrap()).try_into().unwrap(),
        },
        "sign" => FixedKey::Sign { data_key: data_key.as_ref().unwrap(), kms_key: KMS_KEY, wrapped: &wrapped },
        "attest" => {
            let seed: [u8; 32] = unb64(vector.session_seed.as_ref().unwrap()).try_into().unwrap();
            let certificate = unb64(&vector.sealed.attributes[ATTEST_CERT_ATTR]);
            let certificate_signature = unb64(&vector.sealed.attributes[ATTEST_CERT_SIGNATURE_ATTR]);
            return seal(
                FixedKey::AttestSession {
                    seed: &seed,
                    kms_key: SIGNER,
                    certificate: &certificate,
                    certificate_signature: &certificate_signature,
                },
                vector.sealed_at,
                data,
                attributes,
            );
        }
        other => panic!("no deterministic sealing in {other}"),
    };
    seal(fixed, vector.sealed_at, data, attributes)
}

async fn check(name: &str, mode: Mode) {
    let file = read(name);
    let opener = opener(&file);
    assert!(!file.valid.is_empty() && !file.invalid.is_empty(), "{name}: vectors of both kinds");
    for vector in &file.valid {
        let what = format!("{name} {}", vector.name);
        if vector.deterministic {
            let sealed = reseal(&file, vector);
            assert_eq!(b64(&sealed.data), vector.sealed.data, "{what}: sealed data");
            assert_eq!(to_map(&sealed.attributes), vector.sealed.attributes, "{what}: sealed attributes");
        }
        let data = Bytes::from(unb64(&vector.sealed.data));
        let opened = opener.open(&data, &to_attributes(&vector.sealed.attributes)).await;
        let opened = opened.unwrap_or_else(|error| panic!("{what}: {error}"));
        assert_eq!(opened.mode, mode, "{what}");
        assert_eq!(b64(&opened.data), vector.data, "{what}: data");
        assert_eq!(to_map(&opened.attributes), vector.attributes, "{what}: attributes");
        assert_eq!(opened.sealed_at, UNIX_EPOCH + Duration::from_micros(vector.sealed_at), "{what}");
        assert_eq!(b64(&opened.fingerprint), vector.fingerprint, "{what}: fingerprint");
        assert_eq!(b64(&header(&file, vector)), vector.header, "{what}: header");
    }
    for vector in &file.invalid {
        let data = Bytes::from(unb64(&vector.sealed.data));
        let error = opener.open(&data, &to_attributes(&vector.sealed.attributes)).await.err();
        let reason = error.as_ref().map(pubsub_envelope::OpenError::reason);
        assert_eq!(reason, Some(vector.reason.as_str()), "{name} {}: {error:?}", vector.name);
    }
}

/// The canonical header `H` of a valid vector, from its sealed attributes.
fn header(file: &File, vector: &Valid) -> Vec<u8> {
    let attributes = to_attributes(&vector.sealed.attributes);
    let (flavour, key) = match file.mode.as_str() {
        "encrypt" => (format::Flavour::Encrypt, attributes[DEK_WRAPPED_ATTR].as_str()),
        "sign" => (format::Flavour::Sign, attributes[SIGN_KEY_WRAPPED_ATTR].as_str()),
        "attest" => (format::Flavour::AttestSession, attributes[ATTEST_CERT_ATTR].as_str()),
        _ => (format::Flavour::AttestKms, file.tenant_id.as_str()),
    };
    let mut out = format::header_prefix(flavour, &attributes[KMS_KEY_ATTR], key);
    let covered = if flavour == format::Flavour::Encrypt { Attributes::new() } else { attributes };
    format::header_rest(vector.sealed_at, &covered, |chunk| out.extend_from_slice(chunk));
    out
}

#[tokio::test]
async fn encrypt_vectors_hold() {
    check("encrypt.json", Mode::Encrypt).await;
}

#[tokio::test]
async fn sign_vectors_hold() {
    check("sign.json", Mode::Sign).await;
}

#[tokio::test]
async fn attest_session_vectors_hold() {
    check("attest_session.json", Mode::Attest).await;
}

#[tokio::test]
async fn attest_strict_vectors_hold() {
    check("attest_kms.json", Mode::Attest).await;
}

/// The local keyring's wrapped keys, from a fixed key encryption key and nonce.
#[derive(Debug, Serialize, Deserialize)]
struct KeyringFile {
    description: String,
    kek: String,
    version: u32,
    nonce: String,
    tenant_id: String,
    data_key: String,
    wrapped: String,
}

#[test]
fn keyring_wrap_vector_holds() {
    let path = vectors_dir().join("keyring_wrap.json");
    let file: KeyringFile = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let data_key = SecretKey::from_slice(&unb64(&file.data_key)).unwrap();
    let wrapped = local_wrap_with(
        &unb64(&file.kek).try_into().unwrap(),
        file.version,
        unb64(&file.nonce).try_into().unwrap(),
        &data_key,
        file.tenant_id.as_bytes(),
    );
    assert_eq!(b64(&wrapped), file.wrapped);
}

// ---- Making the files ----------------------------------------------------------------

fn producer_inputs() -> Vec<(&'static str, Vec<u8>, BTreeMap<String, String>)> {
    let attributes = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    vec![
        ("empty data, no attributes", Vec::new(), BTreeMap::new()),
        (
            "the article's message with attributes",
            b"the quick brown fox jumps over the lazy dog".to_vec(),
            attributes(&[("epoch_time", "1541340000"), ("lang", "en")]),
        ),
        (
            "binary data, non-ASCII attributes, keys sorted by bytes",
            (0..=255).collect(),
            attributes(&[("Z", ""), ("a", "\u{e9}t\u{e9}"), ("\u{e9}", "\u{1f511}")]),
        ),
    ]
}

fn message(sealed: &Sealed) -> Message {
    Message { data: b64(&sealed.data), attributes: to_map(&sealed.attributes) }
}

fn altered(base: &Message, edit: impl FnOnce(&mut Vec<u8>, &mut BTreeMap<String, String>)) -> Message {
    let mut data = unb64(&base.data);
    let mut attributes = base.attributes.clone();
    edit(&mut data, &mut attributes);
    Message { data: b64(&data), attributes }
}

/// `base` with the attribute `name` set to what `value` makes of its current value.
fn replaced(base: &Message, name: &str, value: impl FnOnce(&str) -> String) -> Message {
    altered(base, |_, a| {
        let new = value(a.get(name).map_or("", String::as_str));
        a.insert(name.into(), new);
    })
}

fn invalid(name: &str, sealed: Message, reason: &str) -> Invalid {
    Invalid { name: name.into(), sealed, reason: reason.into() }
}

/// Cases every mode shares, made from a valid message.
fn common_invalid(base: &Message) -> Vec<Invalid> {
    vec![
        invalid(
            "envelope_version 2",
            altered(base, |_, a| _ = a.insert(VERSION_ATTR.into(), "2".into())),
            "unknown_version",
        ),
        invalid("no envelope_version", altered(base, |_, a| _ = a.remove(VERSION_ATTR)), "missing_attribute"),
        invalid("no envelope_sealed_at", altered(base, |_, a| _ = a.remove(SEALED_AT_ATTR)), "missing_attribute"),
        invalid(
            "seal time with a leading zero",
            replaced(base, SEALED_AT_ATTR, |old| format!("0{}", old)),
            "garbled_attribute",
        ),
        invalid(
            "seal time one microsecond later",
            altered(base, |_, a| {
                let later = a[SEALED_AT_ATTR].parse::<u64>().unwrap() + 1;
                a.insert(SEALED_AT_ATTR.into(), later.to_string());
            }),
            "tampered",
        ),
        invalid(
            "kms_key as a Tink URI (gcp-kms:// is never written into a message)",
            replaced(base, KMS_KEY_ATTR, |old| format!("gcp-kms://{}", old)),
            "garbled_attribute",
        ),
        invalid(
            "kms_key of an untrusted project",
            replaced(base, KMS_KEY_ATTR, |old| old.replacen("tenant-1", "tenant-2", 1)),
            "untrusted_key",
        ),
        invalid(
            "a reserved name that is not the mode's own",
            altered(base, |_, a| _ = a.insert("envelope_extra".into(), "x".into())),
            "unexpected_attribute",
        ),
    ]
}

fn encrypt_file(wrapped_key: &WrappedKey) -> File {
    let data_key = SecretKey::from_slice(&unb64(&wrapped_key.data_key)).unwrap();
    let wrapped = unb64(&wrapped_key.wrapped);
    let mut valid = Vec::new();
    for (i, (name, data, attributes)) in producer_inputs().into_iter().enumerate() {
        let nonce: [u8; 12] = std::array::from_fn(|j| 0xa0 + (i * 12 + j) as u8);
        let sealed_at = SEALED_AT + i as u64;
        let fixed = FixedKey::Encrypt { data_key: &data_key, kms_key: KMS_KEY, wrapped: &wrapped, nonce };
        let sealed = seal(fixed, sealed_at, Bytes::from(data.clone()), to_attributes(&attributes));
        valid.push(Valid {
            name: name.into(),
            data: b64(&data),
            attributes,
            sealed_at,
            nonce: Some(b64(&nonce)),
            session_seed: None,
            header: String::new(),
            fingerprint: b64(&sealed.data[sealed.data.len() - 16..]),
            sealed: message(&sealed),
            deterministic: true,
        });
    }
    let base = valid[1].sealed.clone();
    let mut invalid_cases = common_invalid(&base);
    // A plaintext the producer should never have sealed, encrypted properly: the spec's
    // key derivation written out independently of the crate.
    let crafted = |plaintext: &[u8]| {
        let derive = |info: &[u8]| {
            let prk = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[]).extract(&counting(0));
            let mut out = [0u8; 32];
            prk.expand(&[info], aws_lc_rs::hkdf::HKDF_SHA256).unwrap().fill(&mut out).unwrap();
            out
        };
        let aead =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &derive(b"pubsub-envelope/v1 aes-256-gcm key")).unwrap());
        let nonce = [0xee; 12];
        let mut header = format::header_prefix(format::Flavour::Encrypt, KMS_KEY, &base.attributes[DEK_WRAPPED_ATTR]);
        format::header_rest(SEALED_AT + 1, &Attributes::new(), |chunk| header.extend_from_slice(chunk));
        let mut body = plaintext.to_vec();
        aead.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&header), &mut body).unwrap();
        let mut data = derive(b"pubsub-envelope/v1 key commitment").to_vec();
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&body);
        Message { data: b64(&data), attributes: base.attributes.clone() }
    };
    let list = |pairs: &[(&[u8], &[u8])]| {
        let mut out = (pairs.len() as u32).to_be_bytes().to_vec();
        for (k, v) in pairs {
            for text in [k, v] {
                out.extend_from_slice(&(text.len() as u32).to_be_bytes());
                out.extend_from_slice(text);
            }
        }
        out.extend_from_slice(b"data");
        out
    };
    invalid_cases.extend([
        invalid("one ciphertext bit flipped", altered(&base, |d, _| d[70] ^= 1), "tampered"),
        invalid("commitment altered", altered(&base, |d, _| d[0] ^= 1), "tampered"),
        invalid("63 bytes of data", altered(&base, |d, _| d.truncate(63)), "truncated"),
        invalid(
            "a visible producer attribute",
            altered(&base, |_, a| _ = a.insert("lang".into(), "en".into())),
            "unexpected_attribute",
        ),
        invalid(
            "dek_wrapped not base64",
            altered(&base, |_, a| _ = a.insert(DEK_WRAPPED_ATTR.into(), "not base64!".into())),
            "bad_base64",
        ),
        invalid(
            "dek_wrapped altered (the KMS refuses it)",
            altered(&base, |_, a| {
                let mut wrapped = unb64(&a[DEK_WRAPPED_ATTR]);
                wrapped[20] ^= 1;
                a.insert(DEK_WRAPPED_ATTR.into(), b64(&wrapped));
            }),
            "unwrap_rejected",
        ),
        invalid(
            "both dek_wrapped and sign_key_wrapped",
            altered(&base, |_, a| _ = a.insert(SIGN_KEY_WRAPPED_ATTR.into(), a[DEK_WRAPPED_ATTR].clone())),
            "garbled_attribute",
        ),
        invalid("sealed attributes out of order", crafted(&list(&[(b"b", b"1"), (b"a", b"2")])), "malformed_payload"),
        invalid("a sealed attribute twice", crafted(&list(&[(b"a", b"1"), (b"a", b"2")])), "malformed_payload"),
        invalid("a sealed reserved name", crafted(&list(&[(b"kms_key", b"x")])), "malformed_payload"),
        invalid("a sealed attribute value not UTF-8", crafted(&list(&[(b"a", b"\xff")])), "not_utf8"),
        invalid("a sealed attribute list cut short", crafted(&[0, 0, 0, 2, 0, 0, 0, 1, b'a']), "malformed_payload"),
    ]);
    File {
        description: "Encrypt mode (docs/FORMAT.md, \"Encrypt mode\"): the data key, nonce and seal time are fixed, \
                      so each valid vector's sealed data is exact."
            .into(),
        mode: "encrypt".into(),
        tenant_id: TENANT.into(),
        trusted_kms_keys: vec![TRUSTED.into()],
        wrapped_keys: vec![wrapped_key.clone()],
        public_keys: BTreeMap::new(),
        valid,
        invalid: invalid_cases,
    }
}

fn sign_file(wrapped_key: &WrappedKey) -> File {
    let data_key = SecretKey::from_slice(&unb64(&wrapped_key.data_key)).unwrap();
    let wrapped = unb64(&wrapped_key.wrapped);
    let mut valid = Vec::new();
    for (i, (name, data, attributes)) in producer_inputs().into_iter().enumerate() {
        let sealed_at = SEALED_AT + i as u64;
        let fixed = FixedKey::Sign { data_key: &data_key, kms_key: KMS_KEY, wrapped: &wrapped };
        let sealed = seal(fixed, sealed_at, Bytes::from(data.clone()), to_attributes(&attributes));
        let fingerprint = b64(&unb64(&sealed.attributes[SIGNATURE_ATTR])[..16]);
        valid.push(Valid {
            name: name.into(),
            data: b64(&data),
            attributes,
            sealed_at,
            nonce: None,
            session_seed: None,
            header: String::new(),
            fingerprint,
            sealed: message(&sealed),
            deterministic: true,
        });
    }
    let base = valid[1].sealed.clone();
    let mut invalid_cases = common_invalid(&base);
    invalid_cases.extend([
        invalid("data altered", altered(&base, |d, _| d[0] ^= 1), "tampered"),
        invalid("attribute value altered", altered(&base, |_, a| _ = a.insert("lang".into(), "fr".into())), "tampered"),
        invalid("attribute added", altered(&base, |_, a| _ = a.insert("added".into(), "".into())), "tampered"),
        invalid("attribute dropped", altered(&base, |_, a| _ = a.remove("lang")), "tampered"),
        invalid(
            "signature of 31 bytes",
            altered(&base, |_, a| {
                let short = unb64(&a[SIGNATURE_ATTR])[..31].to_vec();
                a.insert(SIGNATURE_ATTR.into(), b64(&short));
            }),
            "garbled_attribute",
        ),
        invalid("no signature", altered(&base, |_, a| _ = a.remove(SIGNATURE_ATTR)), "missing_attribute"),
        invalid(
            "signature in URL-safe base64",
            altered(&base, |_, a| {
                let text = a[SIGNATURE_ATTR].replace('+', "-").replace('/', "_");
                a.insert(SIGNATURE_ATTR.into(), if text == a[SIGNATURE_ATTR] { "-".repeat(44) } else { text });
            }),
            "bad_base64",
        ),
    ]);
    File {
        description: "Sign mode (docs/FORMAT.md, \"Sign mode\"): data and producer attributes visible, HMAC-SHA256 \
                      over the canonical header and the data."
            .into(),
        mode: "sign".into(),
        tenant_id: TENANT.into(),
        trusted_kms_keys: vec![TRUSTED.into()],
        wrapped_keys: vec![wrapped_key.clone()],
        public_keys: BTreeMap::new(),
        valid,
        invalid: invalid_cases,
    }
}

/// A KMS signing key version held in memory, for making the attest vectors.
struct SigningKms(EcdsaKeyPair);

#[async_trait]
impl KeySign for SigningKms {
    async fn sign(&self, _: &KeyVersionName, message: &[u8]) -> Result<Vec<u8>, KmsError> {
        Ok(self.0.sign(&aws_lc_rs::rand::SystemRandom::new(), message).unwrap().as_ref().to_vec())
    }

    async fn public_key(&self, _: &KeyVersionName) -> Result<Vec<u8>, KmsError> {
        Ok(self.0.public_key().as_der().unwrap().as_ref().to_vec())
    }
}

fn p256() -> EcdsaKeyPair {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &aws_lc_rs::rand::SystemRandom::new());
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.unwrap().as_ref()).unwrap()
}

fn certificate(tenant_id: &str, seed: &[u8; 32], not_before: u64, not_after: u64) -> Vec<u8> {
    let session = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed).unwrap();
    Certificate {
        kms_key: SIGNER.parse().unwrap(),
        tenant_id: tenant_id.into(),
        public_key: session.public_key().as_ref().try_into().unwrap(),
        not_before,
        not_after,
    }
    .encode()
}

async fn attest_session_file(signing: &SigningKms, other: &SigningKms) -> File {
    let version: KeyVersionName = SIGNER.parse().unwrap();
    let seed = counting(0x60);
    let not_after = SEALED_AT + 160_000_000;
    let cert = certificate(TENANT, &seed, SEALED_AT, not_after);
    let cert_signature = signing.sign(&version, &cert).await.unwrap();
    let mut valid = Vec::new();
    for (i, (name, data, attributes)) in producer_inputs().into_iter().enumerate() {
        let sealed_at = SEALED_AT + i as u64;
        let fixed = FixedKey::AttestSession {
            seed: &seed,
            kms_key: SIGNER,
            certificate: &cert,
            certificate_signature: &cert_signature,
        };
        let sealed = seal(fixed, sealed_at, Bytes::from(data.clone()), to_attributes(&attributes));
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &unb64(&sealed.attributes[SIGNATURE_ATTR]));
        valid.push(Valid {
            name: name.into(),
            data: b64(&data),
            attributes,
            sealed_at,
            nonce: None,
            session_seed: Some(b64(&seed)),
            header: String::new(),
            fingerprint: b64(&digest.as_ref()[..16]),
            sealed: message(&sealed),
            deterministic: true,
        });
    }
    let base = valid[1].sealed.clone();
    let fixed_seal = |cert: &[u8], cert_signature: &[u8], sealed_at: u64| {
        let fixed = FixedKey::AttestSession {
            seed: &seed,
            kms_key: SIGNER,
            certificate: cert,
            certificate_signature: cert_signature,
        };
        message(&seal(fixed, sealed_at, Bytes::from_static(b"words"), Attributes::new()))
    };
    let other_tenant_cert = certificate("tenant-2", &seed, SEALED_AT, not_after);
    let other_tenant_signature = signing.sign(&version, &other_tenant_cert).await.unwrap();
    let forged_signature = other.sign(&version, &cert).await.unwrap();
    let mut invalid_cases = common_invalid(&base);
    invalid_cases.extend([
        invalid("data altered", altered(&base, |d, _| d[0] ^= 1), "tampered"),
        invalid("attribute added", altered(&base, |_, a| _ = a.insert("added".into(), "".into())), "tampered"),
        invalid(
            "certificate signed by another key",
            fixed_seal(&cert, &forged_signature, SEALED_AT + 5),
            "forged_certificate",
        ),
        invalid(
            "certificate for another tenant",
            fixed_seal(&other_tenant_cert, &other_tenant_signature, SEALED_AT + 5),
            "wrong_tenant",
        ),
        invalid(
            "sealed after the certificate's not_after",
            fixed_seal(&cert, &cert_signature, not_after + 1),
            "certificate_expired",
        ),
        invalid(
            "kms_key names another version than the certificate",
            replaced(&base, KMS_KEY_ATTR, |old| old.replace("cryptoKeyVersions/1", "cryptoKeyVersions/2")),
            "garbled_attribute",
        ),
        invalid(
            "certificate signature of 73 bytes",
            altered(&base, |_, a| _ = a.insert(ATTEST_CERT_SIGNATURE_ATTR.into(), b64(&[0x30; 73]))),
            "garbled_attribute",
        ),
        invalid(
            "session signature of 63 bytes",
            altered(&base, |_, a| {
                let short = unb64(&a[SIGNATURE_ATTR])[..63].to_vec();
                a.insert(SIGNATURE_ATTR.into(), b64(&short));
            }),
            "garbled_attribute",
        ),
        invalid(
            "certificate not a certificate",
            altered(&base, |_, a| _ = a.insert(ATTEST_CERT_ATTR.into(), b64(b"not a certificate"))),
            "garbled_attribute",
        ),
    ]);
    File {
        description: "Attest mode, session flavour (docs/FORMAT.md, \"Attest mode\"): an Ed25519 session key from a \
                      fixed seed, certified by an ECDSA P-256 key version whose public key is given. Ed25519 is \
                      deterministic, so sealed bytes are exact given the certificate and its signature."
            .into(),
        mode: "attest".into(),
        tenant_id: TENANT.into(),
        trusted_kms_keys: vec![TRUSTED.into()],
        wrapped_keys: Vec::new(),
        public_keys: BTreeMap::from([(SIGNER.into(), b64(&signing.public_key(&version).await.unwrap()))]),
        valid,
        invalid: invalid_cases,
    }
}

async fn attest_kms_file(signing: Arc<SigningKms>) -> File {
    let version: KeyVersionName = SIGNER.parse().unwrap();
    let sealer = |tenant: &str, at: u64| {
        let clock = Arc::new(ManualClock::at(UNIX_EPOCH + Duration::from_micros(at)));
        Sealer::attest(signing.clone(), version.clone(), tenant, AttestBy::KmsEachMessage).with_clock(clock)
    };
    let mut valid = Vec::new();
    for (i, (name, data, attributes)) in producer_inputs().into_iter().enumerate() {
        let sealed_at = SEALED_AT + i as u64;
        let sealed =
            sealer(TENANT, sealed_at).seal(Bytes::from(data.clone()), to_attributes(&attributes)).await.unwrap();
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &unb64(&sealed.attributes[KMS_SIGNATURE_ATTR]));
        valid.push(Valid {
            name: name.into(),
            data: b64(&data),
            attributes,
            sealed_at,
            nonce: None,
            session_seed: None,
            header: String::new(),
            fingerprint: b64(&digest.as_ref()[..16]),
            sealed: message(&sealed),
            deterministic: false,
        });
    }
    let base = valid[1].sealed.clone();
    let for_other_tenant = sealer("tenant-2", SEALED_AT).seal(Bytes::from_static(b"words"), Attributes::new()).await;
    let mut invalid_cases = common_invalid(&base);
    invalid_cases.extend([
        invalid("data altered", altered(&base, |d, _| d[0] ^= 1), "tampered"),
        invalid("attribute dropped", altered(&base, |_, a| _ = a.remove("lang")), "tampered"),
        invalid("signed for another tenant (the tenant id is bound)", message(&for_other_tenant.unwrap()), "tampered"),
        invalid(
            "empty kms_signature",
            altered(&base, |_, a| _ = a.insert(KMS_SIGNATURE_ATTR.into(), String::new())),
            "garbled_attribute",
        ),
        invalid(
            "kms_signature of 73 bytes",
            altered(&base, |_, a| _ = a.insert(KMS_SIGNATURE_ATTR.into(), b64(&[0x30; 73]))),
            "garbled_attribute",
        ),
        invalid(
            "kms_key a key, not a key version",
            altered(&base, |_, a| _ = a.insert(KMS_KEY_ATTR.into(), KMS_KEY.into())),
            "garbled_attribute",
        ),
        invalid(
            "kms_key names a version whose public key the KMS lacks",
            replaced(&base, KMS_KEY_ATTR, |old| old.replace("cryptoKeyVersions/1", "cryptoKeyVersions/2")),
            "kms_key_not_found",
        ),
    ]);
    File {
        description: "Attest mode, strict flavour (docs/FORMAT.md, \"Strict flavour\"): the KMS key version signs \
                      each message (ECDSA P-256, randomised), so these vectors are verify-only."
            .into(),
        mode: "attest_kms".into(),
        tenant_id: TENANT.into(),
        trusted_kms_keys: vec![TRUSTED.into()],
        wrapped_keys: Vec::new(),
        public_keys: BTreeMap::from([(SIGNER.into(), b64(&signing.public_key(&version).await.unwrap()))]),
        valid,
        invalid: invalid_cases,
    }
}

fn write(name: &str, file: &impl Serialize) {
    let text = serde_json::to_string_pretty(file).unwrap() + "\n";
    std::fs::write(vectors_dir().join(name), text).unwrap();
}

/// Writes the vector files; run on purpose, with `WRITE_VECTORS=1` (see the top).
#[tokio::test]
#[ignore = "makes the vector files; run with WRITE_VECTORS=1 and --ignored"]
async fn write_vectors() {
    if std::env::var_os("WRITE_VECTORS").is_none() {
        return;
    }
    std::fs::create_dir_all(vectors_dir()).unwrap();
    let data_key = SecretKey::from_slice(&counting(0)).unwrap();
    let (kek, nonce) = (counting(0x40), [0x5a; 12]);
    let wrapped = local_wrap_with(&kek, 1, nonce, &data_key, TENANT.as_bytes());
    write(
        "keyring_wrap.json",
        &KeyringFile {
            description: "The local keyring backend's wrapped key (docs/FORMAT.md, \"Local keyring\"): \
                          u32(version) || nonce || AES-256-GCM(KEK, nonce, aad = tenant id, data key) || tag."
                .into(),
            kek: b64(&kek),
            version: 1,
            nonce: b64(&nonce),
            tenant_id: TENANT.into(),
            data_key: b64(&counting(0)),
            wrapped: b64(&wrapped),
        },
    );
    let wrapped_key = WrappedKey {
        kms_key: KMS_KEY.into(),
        tenant_id: TENANT.into(),
        wrapped: b64(&wrapped),
        data_key: b64(&counting(0)),
    };
    let mut files = vec![
        ("encrypt.json", encrypt_file(&wrapped_key)),
        ("sign.json", sign_file(&wrapped_key)),
        ("attest_session.json", attest_session_file(&SigningKms(p256()), &SigningKms(p256())).await),
        ("attest_kms.json", attest_kms_file(Arc::new(SigningKms(p256()))).await),
    ];
    for (name, file) in &mut files {
        let headers: Vec<String> = file.valid.iter().map(|vector| b64(&header(file, vector))).collect();
        for (vector, header) in file.valid.iter_mut().zip(headers) {
            vector.header = header;
        }
        write(name, file);
    }
}
