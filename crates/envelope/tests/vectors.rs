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
    /// Settings of the opener this vector needs beyond the file's, when it is refused
    /// by policy rather than by the format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    opener: Option<OpenerSettings>,
}

/// An opener's policy settings: the modes it accepts (all by default), its maximum
/// message age, and the time it opens at (µs since the Unix epoch). Each vector that
/// names `now` also holds at any real time between 2026 and 2100, for implementations
/// without a settable clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OpenerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accept: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_age_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    now: Option<u64>,
    /// The longest validity of a session certificate the opener takes, if not the
    /// default (3,660 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_certificate_lifetime_secs: Option<u64>,
    /// Public keys pinned, by key version (DER `SubjectPublicKeyInfo`, base64): once
    /// any is, only pinned versions verify and none is fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pinned: Option<BTreeMap<String, String>>,
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
    opener_with(file, &OpenerSettings::default())
}

fn parse_mode(text: &str) -> Mode {
    [Mode::Encrypt, Mode::Sign, Mode::Attest].into_iter().find(|mode| mode.as_str() == text).expect("a mode")
}

/// The file's opener with `settings` applied.
fn opener_with(file: &File, settings: &OpenerSettings) -> Opener {
    let kms = Arc::new(VectorKms { wrapped: file.wrapped_keys.clone(), public_keys: file.public_keys.clone() });
    let trusted = TrustedKeys::from_patterns(&file.trusted_kms_keys).unwrap();
    let mut builder = Opener::builder(file.tenant_id.clone(), trusted).kms(kms);
    if let Some(accept) = &settings.accept {
        let modes: Vec<Mode> = accept.iter().map(|mode| parse_mode(mode)).collect();
        builder = builder.accept(&modes);
    }
    builder = builder.max_age(settings.max_age_secs.map(Duration::from_secs));
    if let Some(lifetime) = settings.max_certificate_lifetime_secs {
        builder = builder.max_certificate_lifetime(Duration::from_secs(lifetime));
    }
    if let Some(pinned) = &settings.pinned {
        let keys = pinned.iter().map(|(version, der)| {
            let pem = pubsub_envelope::public_key_pem(&unb64(der));
            pubsub_envelope::TrustedPublicKey::from_pem(version.parse().unwrap(), pem.as_bytes()).unwrap()
        });
        builder = builder.pinned_public_keys(keys.collect());
    }
    if let Some(now) = settings.now {
        builder = builder.clock(Arc::new(ManualClock::at(UNIX_EPOCH + Duration::from_micros(now))));
    }
    builder.build().unwrap()
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
    let kms_key = vector.sealed.attributes.get(KMS_KEY_ATTR).map_or(KMS_KEY, String::as_str);
    let key = file.wrapped_keys.iter().find(|key| key.kms_key == kms_key);
    let data_key = key.map(|key| SecretKey::from_slice(&unb64(&key.data_key)).unwrap());
    let wrapped = key.map(|key| unb64(&key.wrapped)).unwrap_or_default();
    let fixed = match file.mode.as_str() {
        "encrypt" => FixedKey::Encrypt {
            data_key: data_key.as_ref().unwrap(),
            kms_key,
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
        assert_eq!(spec_fingerprint(&file, vector), vector.fingerprint, "{what}: fingerprint as FORMAT.md defines it");
        assert_eq!(b64(&header(&file, vector)), vector.header, "{what}: header");
    }
    for vector in &file.invalid {
        let data = Bytes::from(unb64(&vector.sealed.data));
        let with_settings = vector.opener.as_ref().map(|settings| opener_with(&file, settings));
        let opener = with_settings.as_ref().unwrap_or(&opener);
        let error = opener.open(&data, &to_attributes(&vector.sealed.attributes)).await.err();
        let reason = error.as_ref().map(pubsub_envelope::OpenError::reason);
        assert_eq!(reason, Some(vector.reason.as_str()), "{name} {}: {error:?}", vector.name);
    }
}

/// A valid vector's fingerprint as FORMAT.md ("Fingerprint") defines it, computed here
/// apart from the library: SHA-256 over the context, the tenant id, `H`, the sealed
/// data's length and `D` (the AES-GCM tag, the HMAC tag, or in attest mode SHA-256 of
/// the data).
fn spec_fingerprint(file: &File, vector: &Valid) -> String {
    use aws_lc_rs::digest::{Context, SHA256, digest};
    let data = unb64(&vector.sealed.data);
    let proof = match file.mode.as_str() {
        "encrypt" => data[data.len() - 16..].to_vec(),
        "sign" => unb64(&vector.sealed.attributes[SIGNATURE_ATTR]),
        _ => digest(&SHA256, &data).as_ref().to_vec(),
    };
    // The tenant id the message's key binds: its wrapped key's (encrypt, sign), else the
    // opener's (the attest vectors' trust entries name none).
    let kms_key = vector.sealed.attributes.get(KMS_KEY_ATTR);
    let wrapped = file.wrapped_keys.iter().find(|key| Some(&key.kms_key) == kms_key);
    let tenant_id = wrapped.map_or(&file.tenant_id, |key| &key.tenant_id);
    let mut hash = Context::new(&SHA256);
    hash.update(b"pubsub-envelope/v1 fingerprint\0");
    hash.update(&(tenant_id.len() as u32).to_be_bytes());
    hash.update(tenant_id.as_bytes());
    hash.update(&header(file, vector));
    hash.update(&(data.len() as u64).to_be_bytes());
    hash.update(&proof);
    b64(hash.finish().as_ref())
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

/// Two tenants' messages with one AES-GCM tag (one steered onto the other's, as any
/// tenant can with its own data key) have two fingerprints: neither can pass for a copy
/// of the other and be dropped.
#[test]
fn a_tag_steered_onto_another_tenants_does_not_share_its_fingerprint() {
    let file = read("encrypt.json");
    let tag = |vector: &Valid| unb64(&vector.sealed.data).split_off(unb64(&vector.sealed.data).len() - 16);
    let steered = file.valid.iter().find(|vector| vector.name.starts_with("tenant-3")).expect("the steered vector");
    let victim = file.valid.iter().find(|vector| vector.name == "the article's message with attributes").unwrap();
    assert_eq!(tag(steered), tag(victim), "the tags are equal");
    assert_ne!(steered.sealed.attributes[KMS_KEY_ATTR], victim.sealed.attributes[KMS_KEY_ATTR]);
    assert_ne!(steered.fingerprint, victim.fingerprint, "the fingerprints are not");
}

/// Valid vectors share a fingerprint exactly when they are one message: the same
/// header and data (a malleated signature is another encoding of its original).
#[test]
fn fingerprints_are_shared_only_by_encodings_of_one_message() {
    for name in ["encrypt.json", "sign.json", "attest_session.json", "attest_kms.json"] {
        let file = read(name);
        for a in &file.valid {
            for b in &file.valid {
                let same_message = a.header == b.header && a.sealed.data == b.sealed.data;
                assert_eq!(a.fingerprint == b.fingerprint, same_message, "{name}: {} / {}", a.name, b.name);
            }
        }
    }
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
    Invalid { name: name.into(), sealed, reason: reason.into(), opener: None }
}

/// An invalid vector that the opener refuses by policy: its `settings`.
fn refused(name: &str, sealed: Message, reason: &str, settings: OpenerSettings) -> Invalid {
    Invalid { opener: Some(settings), ..invalid(name, sealed, reason) }
}

/// A seal time in 2100: ahead of any real clock these vectors will meet.
const FUTURE: u64 = 4_102_444_800_000_000;

/// `base` refused by an opener that does not accept its mode, and by one whose maximum
/// age it exceeds; `sealed_in_future`, a message sealed at [`FUTURE`] (where the file
/// can make one), refused by an opener with a maximum age.
fn policy_invalid(base: &Message, mode: Mode, future: Option<Message>) -> Vec<Invalid> {
    let other = if mode == Mode::Encrypt { Mode::Sign } else { Mode::Encrypt };
    let sealed_at: u64 = base.attributes[SEALED_AT_ATTR].parse().unwrap();
    let mut cases = vec![
        refused(
            &format!("{mode} not among the modes the opener accepts"),
            base.clone(),
            "mode_not_accepted",
            OpenerSettings { accept: Some(vec![other.to_string()]), ..OpenerSettings::default() },
        ),
        refused(
            "sealed two hours before the opener's now, maximum age one hour",
            base.clone(),
            "too_old",
            OpenerSettings {
                max_age_secs: Some(3600),
                now: Some(sealed_at + 7_200_000_000),
                ..OpenerSettings::default()
            },
        ),
    ];
    if let Some(future) = future {
        cases.push(refused(
            "sealed two hours after the opener's now (more than 60 s ahead), with a maximum age",
            future,
            "sealed_in_future",
            OpenerSettings { max_age_secs: Some(3600), now: Some(FUTURE - 7_200_000_000), ..OpenerSettings::default() },
        ));
    }
    cases
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

/// A deterministic encrypt vector; its header and fingerprint are filled in when the
/// files are written.
fn encrypt_valid(
    name: &str,
    data: &[u8],
    attributes: BTreeMap<String, String>,
    sealed_at: u64,
    nonce: [u8; 12],
    sealed: &Sealed,
) -> Valid {
    Valid {
        name: name.into(),
        data: b64(data),
        attributes,
        sealed_at,
        nonce: Some(b64(&nonce)),
        session_seed: None,
        header: String::new(),
        fingerprint: String::new(),
        sealed: message(sealed),
        deterministic: true,
    }
}

/// `x · y` in GCM's field GF(2^128), blocks read big-endian (NIST SP 800-38D, 6.3).
fn gf_mul(x: u128, y: u128) -> u128 {
    let (mut z, mut v) = (0, y);
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 1 { (v >> 1) ^ (0xe1 << 120) } else { v >> 1 };
    }
    z
}

/// `x^-n` in GF(2^128): `x^(2^128 - 2)` is `x^-1`.
fn gf_inverse_power(x: u128, n: u32) -> u128 {
    let one = 1 << 127;
    let mut inverse = one;
    for _ in 0..127 {
        inverse = gf_mul(gf_mul(inverse, inverse), x);
    }
    inverse = gf_mul(inverse, inverse);
    (0..n).fold(one, |acc, _| gf_mul(acc, inverse))
}

/// What a tenant can do with its own data key, and why fingerprints are not tags: it
/// seals `data` (through the crate's sealing, under its own key name, wrapped key and
/// tenant id) after changing its 16 bytes at `at` (in the sealed plaintext, `u32(0) ||
/// data`, on a block boundary) so that the AES-GCM tag comes out equal to `target`.
///
/// GHASH is linear: changing ciphertext block `k` of `T` (associated data, ciphertext
/// and length blocks together) by `d` changes the tag by `d · H^(T - k)`, so
/// `d = (tag ^ target) · H^-(T - k)`. The new plaintext block is whatever that makes
/// it; the nonce is tried until it is ASCII, so that the message is also text.
fn steer_tag(key: FixedKeyParts<'_>, sealed_at: u64, data: &[u8], at: usize, target: [u8; 16]) -> (Vec<u8>, [u8; 12]) {
    let ak = {
        let prk = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[]).extract(key.data_key);
        let mut out = [0u8; 32];
        prk.expand(&[b"pubsub-envelope/v1 aes-256-gcm key"], aws_lc_rs::hkdf::HKDF_SHA256)
            .unwrap()
            .fill(&mut out)
            .unwrap();
        out
    };
    let mut h = [0u8; 16];
    let ecb = aws_lc_rs::cipher::EncryptingKey::ecb(
        aws_lc_rs::cipher::UnboundCipherKey::new(&aws_lc_rs::cipher::AES_256, &ak).unwrap(),
    )
    .unwrap();
    ecb.less_safe_encrypt(&mut h, aws_lc_rs::cipher::EncryptionContext::None).unwrap();
    let secret = SecretKey::from_slice(key.data_key).unwrap();
    let mut header = format::header_prefix(format::Flavour::Encrypt, key.kms_key, &b64(key.wrapped));
    format::header_rest(sealed_at, &Attributes::new(), |chunk| header.extend_from_slice(chunk));
    let plaintext_len = 4 + data.len();
    assert!(at.is_multiple_of(16) && at + 16 <= plaintext_len && at >= 4);
    let blocks = header.len().div_ceil(16) + plaintext_len.div_ceil(16) + 1;
    let k = header.len().div_ceil(16) + at / 16;
    let power = gf_inverse_power(u128::from_be_bytes(h), (blocks - k) as u32);
    for attempt in 0u64.. {
        let nonce: [u8; 12] = std::array::from_fn(|i| if i < 8 { attempt.to_be_bytes()[i] } else { 0x5c });
        let fixed = FixedKey::Encrypt { data_key: &secret, kms_key: key.kms_key, wrapped: key.wrapped, nonce };
        let sealed = seal(fixed, sealed_at, Bytes::from(data.to_vec()), Attributes::new());
        let tag: [u8; 16] = sealed.data[sealed.data.len() - 16..].try_into().unwrap();
        let delta = gf_mul(u128::from_be_bytes(tag) ^ u128::from_be_bytes(target), power).to_be_bytes();
        let mut steered = data.to_vec();
        let block = &mut steered[at - 4..at + 12];
        block.iter_mut().zip(delta).for_each(|(byte, d)| *byte ^= d);
        if block.is_ascii() {
            return (steered, nonce);
        }
    }
    unreachable!()
}

/// A data key, its KMS key's name and its wrapped key.
#[derive(Clone, Copy)]
struct FixedKeyParts<'a> {
    data_key: &'a [u8],
    kms_key: &'a str,
    wrapped: &'a [u8],
}

/// The tenant whose encrypt vector steers its tag onto tenant-1's (`steer_tag`).
const STEERING_KEY: &str = "projects/tenant-3/locations/global/keyRings/bus/cryptoKeys/key-1";
const STEERING_TENANT: &str = "tenant-3";

fn encrypt_file(wrapped_key: &WrappedKey, steering: &WrappedKey) -> File {
    let data_key = SecretKey::from_slice(&unb64(&wrapped_key.data_key)).unwrap();
    let wrapped = unb64(&wrapped_key.wrapped);
    let mut valid = Vec::new();
    for (i, (name, data, attributes)) in producer_inputs().into_iter().enumerate() {
        let nonce: [u8; 12] = std::array::from_fn(|j| 0xa0 + (i * 12 + j) as u8);
        let sealed_at = SEALED_AT + i as u64;
        let fixed = FixedKey::Encrypt { data_key: &data_key, kms_key: KMS_KEY, wrapped: &wrapped, nonce };
        let sealed = seal(fixed, sealed_at, Bytes::from(data.clone()), to_attributes(&attributes));
        valid.push(encrypt_valid(name, &data, attributes, sealed_at, nonce, &sealed));
    }
    // Another tenant's genuine message whose AES-GCM tag equals tenant-1's article
    // message's: it opens, and has a fingerprint of its own.
    let target: [u8; 16] = {
        let sealed = unb64(&valid[1].sealed.data);
        sealed[sealed.len() - 16..].try_into().unwrap()
    };
    let steering_parts = FixedKeyParts {
        data_key: &unb64(&steering.data_key),
        kms_key: STEERING_KEY,
        wrapped: &unb64(&steering.wrapped),
    };
    let text = b"another tenant's words, with its tag steered: ????????????????.";
    let sealed_at = SEALED_AT + 10;
    let (steered, nonce) = steer_tag(steering_parts, sealed_at, text, 48, target);
    let secret = SecretKey::from_slice(steering_parts.data_key).unwrap();
    let fixed = FixedKey::Encrypt { data_key: &secret, kms_key: STEERING_KEY, wrapped: steering_parts.wrapped, nonce };
    let sealed = seal(fixed, sealed_at, Bytes::from(steered.clone()), Attributes::new());
    assert_eq!(sealed.data[sealed.data.len() - 16..], target, "the tag was steered");
    let name = "tenant-3's message whose AES-GCM tag equals the article's message's: another fingerprint";
    valid.push(encrypt_valid(name, &steered, BTreeMap::new(), sealed_at, nonce, &sealed));
    let base = valid[1].sealed.clone();
    let future = FixedKey::Encrypt { data_key: &data_key, kms_key: KMS_KEY, wrapped: &wrapped, nonce: [0xf0; 12] };
    let future = message(&seal(future, FUTURE, Bytes::from_static(b"words"), Attributes::new()));
    let mut invalid_cases = common_invalid(&base);
    invalid_cases.extend(policy_invalid(&base, Mode::Encrypt, Some(future)));
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
        trusted_kms_keys: vec![TRUSTED.into(), format!("projects/{STEERING_TENANT}/*={STEERING_TENANT}")],
        wrapped_keys: vec![wrapped_key.clone(), steering.clone()],
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
        valid.push(Valid {
            name: name.into(),
            data: b64(&data),
            attributes,
            sealed_at,
            nonce: None,
            session_seed: None,
            header: String::new(),
            fingerprint: String::new(),
            sealed: message(&sealed),
            deterministic: true,
        });
    }
    let base = valid[1].sealed.clone();
    let future = FixedKey::Sign { data_key: &data_key, kms_key: KMS_KEY, wrapped: &wrapped };
    let future = message(&seal(future, FUTURE, Bytes::from_static(b"words"), Attributes::new()));
    let mut invalid_cases = common_invalid(&base);
    invalid_cases.extend(policy_invalid(&base, Mode::Sign, Some(future)));
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
        valid.push(Valid {
            name: name.into(),
            data: b64(&data),
            attributes,
            sealed_at,
            nonce: None,
            session_seed: Some(b64(&seed)),
            header: String::new(),
            fingerprint: String::new(),
            sealed: message(&sealed),
            deterministic: true,
        });
    }
    // The same message with its certificate's signature malleated: it verifies too,
    // and keeps its original's fingerprint.
    let mut malleated = valid[1].clone();
    malleated.name =
        "the article's message again, its certificate signature (r, s) made (r, n - s): same fingerprint".into();
    let signature = unb64(&malleated.sealed.attributes[ATTEST_CERT_SIGNATURE_ATTR]);
    malleated.sealed.attributes.insert(ATTEST_CERT_SIGNATURE_ATTR.into(), b64(&ecdsa_negated(&signature)));
    valid.push(malleated);
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
    // A producer that rotates daily makes certificates a consumer refuses by default.
    let day_cert = certificate(TENANT, &seed, SEALED_AT, SEALED_AT + 86_400_000_000);
    let day_signature = signing.sign(&version, &day_cert).await.unwrap();
    let other_tenant_signature = signing.sign(&version, &other_tenant_cert).await.unwrap();
    let forged_signature = other.sign(&version, &cert).await.unwrap();
    let mut invalid_cases = common_invalid(&base);
    // No sealed_in_future here: a message sealed outside its certificate's validity is
    // refused for that first (the age is checked after authentication).
    invalid_cases.extend(policy_invalid(&base, Mode::Attest, None));
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
            "certificate valid for a day, longer than the default maximum (3,660 s)",
            fixed_seal(&day_cert, &day_signature, SEALED_AT + 5),
            "certificate_lifetime_too_long",
        ),
        refused(
            "certificate valid for 160 s, where the opener takes at most 100 s",
            base.clone(),
            "certificate_lifetime_too_long",
            OpenerSettings { max_certificate_lifetime_secs: Some(100), ..OpenerSettings::default() },
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
        valid.push(Valid {
            name: name.into(),
            data: b64(&data),
            attributes,
            sealed_at,
            nonce: None,
            session_seed: None,
            header: String::new(),
            fingerprint: String::new(),
            sealed: message(&sealed),
            deterministic: false,
        });
    }
    // The same message with its signature malleated, (r, s) -> (r, n - s): it verifies
    // too, and must have its original's fingerprint, or a copy would count twice.
    let mut malleated = valid[1].clone();
    malleated.name = "the article's message again, its signature (r, s) made (r, n - s): same fingerprint".into();
    let signature = unb64(&malleated.sealed.attributes[KMS_SIGNATURE_ATTR]);
    malleated.sealed.attributes.insert(KMS_SIGNATURE_ATTR.into(), b64(&ecdsa_negated(&signature)));
    valid.push(malleated);
    let base = valid[1].sealed.clone();
    let for_other_tenant = sealer("tenant-2", SEALED_AT).seal(Bytes::from_static(b"words"), Attributes::new()).await;
    // A message whose DER signature is at most 71 bytes, so that one more byte of BER
    // stays within the 72 allowed.
    let short = loop {
        let sealed = sealer(TENANT, SEALED_AT).seal(Bytes::from_static(b"words"), Attributes::new()).await.unwrap();
        if unb64(&sealed.attributes[KMS_SIGNATURE_ATTR]).len() <= 71 {
            break message(&sealed);
        }
    };
    let future = sealer(TENANT, FUTURE).seal(Bytes::from_static(b"words"), Attributes::new()).await.unwrap();
    let mut invalid_cases = common_invalid(&base);
    invalid_cases.extend(policy_invalid(&base, Mode::Attest, Some(message(&future))));
    // Pinning a key for version 2 alone: version 1 is then not trusted, and its public
    // key is not fetched.
    let version_2 = SIGNER.replace("cryptoKeyVersions/1", "cryptoKeyVersions/2");
    let other_key = b64(&SigningKms(p256()).public_key(&version).await.unwrap());
    invalid_cases.push(refused(
        "a key pinned for another version only (version 1 has none)",
        base.clone(),
        "untrusted_key",
        OpenerSettings { pinned: Some(BTreeMap::from([(version_2, other_key)])), ..OpenerSettings::default() },
    ));
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
            "kms_signature in BER, not DER (r with a needless leading zero byte)",
            altered(&short, |_, a| {
                let der = unb64(&a[KMS_SIGNATURE_ATTR]);
                a.insert(KMS_SIGNATURE_ATTR.into(), b64(&ecdsa_ber(&der)));
            }),
            "tampered",
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

/// P-256's group order `n`, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The two integers of a DER ECDSA signature `SEQUENCE { INTEGER r, INTEGER s }`, as
/// 32-byte big-endian numbers (short-form lengths: P-256's are at most 72 bytes).
fn ecdsa_integers(der: &[u8]) -> ([u8; 32], [u8; 32]) {
    assert_eq!(der[0], 0x30);
    let mut at = 2;
    let mut next = || {
        assert_eq!(der[at], 0x02);
        let len = der[at + 1] as usize;
        let bytes = &der[at + 2..at + 2 + len];
        at += 2 + len;
        let bytes = &bytes[bytes.len().saturating_sub(32)..];
        let mut out = [0; 32];
        out[32 - bytes.len()..].copy_from_slice(bytes);
        out
    };
    (next(), next())
}

/// `SEQUENCE { INTEGER r, INTEGER s }` in DER, each integer minimal, with `pad` extra
/// leading zero bytes on `r` (0 for DER; more makes a BER encoding).
fn ecdsa_der(r: &[u8; 32], s: &[u8; 32], pad: usize) -> Vec<u8> {
    let integer = |n: &[u8; 32], pad: usize| {
        let first = n.iter().position(|&b| b != 0).unwrap_or(31);
        let mut body = vec![0; pad + usize::from(n[first] & 0x80 != 0)];
        body.extend_from_slice(&n[first..]);
        let mut out = vec![0x02, body.len() as u8];
        out.extend(body);
        out
    };
    let body = [integer(r, pad), integer(s, 0)].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

/// The other valid signature of the same message: `(r, n - s)`.
fn ecdsa_negated(der: &[u8]) -> Vec<u8> {
    let (r, s) = ecdsa_integers(der);
    let mut negated = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut digit = i16::from(P256_ORDER[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(digit < 0);
        digit += 256 * borrow;
        negated[i] = digit as u8;
    }
    ecdsa_der(&r, &negated, 0)
}

/// The same signature encoded in BER: `r` with a leading zero byte DER forbids.
fn ecdsa_ber(der: &[u8]) -> Vec<u8> {
    let (r, s) = ecdsa_integers(der);
    ecdsa_der(&r, &s, 1)
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
    // Tenant-3's data key, wrapped under the same keyring KEK for its own tenant id.
    let steering_key = SecretKey::from_slice(&counting(0x20)).unwrap();
    let steering = WrappedKey {
        kms_key: STEERING_KEY.into(),
        tenant_id: STEERING_TENANT.into(),
        wrapped: b64(&local_wrap_with(&kek, 1, [0x5b; 12], &steering_key, STEERING_TENANT.as_bytes())),
        data_key: b64(&counting(0x20)),
    };
    let mut files = vec![
        ("encrypt.json", encrypt_file(&wrapped_key, &steering)),
        ("sign.json", sign_file(&wrapped_key)),
        ("attest_session.json", attest_session_file(&SigningKms(p256()), &SigningKms(p256())).await),
        ("attest_kms.json", attest_kms_file(Arc::new(SigningKms(p256()))).await),
    ];
    for (name, file) in &mut files {
        let headers: Vec<String> = file.valid.iter().map(|vector| b64(&header(file, vector))).collect();
        for (vector, header) in file.valid.iter_mut().zip(headers) {
            vector.header = header;
        }
        let fingerprints: Vec<String> = file.valid.iter().map(|vector| spec_fingerprint(file, vector)).collect();
        for (vector, fingerprint) in file.valid.iter_mut().zip(fingerprints) {
            vector.fingerprint = fingerprint;
        }
        write(name, file);
    }
}
