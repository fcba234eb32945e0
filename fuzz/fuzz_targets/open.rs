//! Opens envelopes altered in every way the fuzzer can think of.
//!
//! Each case seals a real message (fresh data key, real local KMS), applies the
//! fuzzer's edits to its data and attributes, and opens the result. Properties: opening
//! never panics, and an open that succeeds returns exactly what was sealed: no edit can
//! make the opener accept anything else (no forgery, no attribute smuggling).
#![no_main]

use std::sync::{Arc, LazyLock};

use arbitrary::Arbitrary;
use bytes::Bytes;
use envelope::kms::Kms;
use envelope::kms::local::{Keyring, LocalKms, Purpose};
use envelope::{AttestBy, Attributes, KeyName, KeyVersionName, Mode, Opener, Sealer, TrustedKeys};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "projects/fuzz/locations/global/keyRings/fuzz/cryptoKeys/tenant";
const OTHER_KEY: &str = "projects/fuzz/locations/global/keyRings/fuzz/cryptoKeys/other";
const SIGNING_KEY: &str = "projects/fuzz/locations/global/keyRings/fuzz/cryptoKeys/signer";

#[derive(Arbitrary, Debug)]
struct Case {
    /// Encrypt, sign, attest with a session key, attest signed by the KMS.
    mode: u8,
    data: Vec<u8>,
    attributes: Vec<(String, String)>,
    edits: Vec<Edit>,
}

#[derive(Arbitrary, Debug)]
enum Edit {
    FlipBit {
        at: u16,
        bit: u8,
    },
    Truncate(u16),
    Append(Vec<u8>),
    /// Removes the attribute at this index (in name order).
    Remove(u8),
    /// Sets an attribute, new or existing.
    Set(String, String),
    /// Sets the attribute at this index (in name order) to a new value.
    Replace(u8, String),
    /// Re-points `kms_key` at another key the KMS holds.
    OtherKey,
}

struct World {
    kms: Arc<dyn Kms>,
    opener: Opener,
    _dir: tempfile::TempDir,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let mut keyring = Keyring::load_or_new(&path).unwrap();
    keyring.create(&KEY.parse().unwrap()).unwrap();
    keyring.create(&OTHER_KEY.parse().unwrap()).unwrap();
    keyring.create_for(&SIGNING_KEY.parse().unwrap(), Purpose::AsymmetricSign).unwrap();
    keyring.save().unwrap();
    let kms: Arc<dyn Kms> = Arc::new(LocalKms::open(&path).unwrap());
    let opener = Opener::builder("tenantKey", TrustedKeys::dangerous_any_key()).kms(kms.clone()).build().unwrap();
    World { kms, opener, _dir: dir }
});

fn sorted_names(attributes: &Attributes) -> Vec<String> {
    let mut names: Vec<String> = attributes.keys().cloned().collect();
    names.sort();
    names
}

fuzz_target!(|case: Case| {
    let world = &*WORLD;
    let attributes: Attributes = case.attributes.into_iter().collect();
    let key: KeyName = KEY.parse().unwrap();
    let signing_key = || KeyVersionName::new(SIGNING_KEY.parse().unwrap(), 1).unwrap();
    let (mode, mut sealer) = match case.mode % 4 {
        0 => (Mode::Encrypt, Sealer::encrypt(world.kms.clone(), key, "tenantKey")),
        1 => (Mode::Sign, Sealer::sign(world.kms.clone(), key, "tenantKey")),
        flavour => {
            let by = if flavour == 3 { AttestBy::KmsEachMessage } else { AttestBy::SessionKey };
            (Mode::Attest, Sealer::attest(world.kms.clone(), signing_key(), "tenantKey", by))
        }
    };
    let data = Bytes::from(case.data);
    // Producer attributes that break the format's rules are refused at sealing.
    let Ok(sealed) = futures::executor::block_on(sealer.seal(data.clone(), attributes.clone())) else { return };

    let mut out_data = sealed.data.to_vec();
    let mut out_attributes = sealed.attributes.clone();
    for edit in case.edits {
        match edit {
            Edit::FlipBit { at, bit } if !out_data.is_empty() => {
                let at = at as usize % out_data.len();
                out_data[at] ^= 1 << (bit % 8);
            }
            Edit::FlipBit { .. } => {}
            Edit::Truncate(len) => out_data.truncate(len as usize),
            Edit::Append(more) => out_data.extend_from_slice(&more),
            Edit::Remove(index) => {
                let names = sorted_names(&out_attributes);
                if !names.is_empty() {
                    out_attributes.remove(&names[index as usize % names.len()]);
                }
            }
            Edit::Set(name, value) => drop(out_attributes.insert(name, value)),
            Edit::Replace(index, value) => {
                let names = sorted_names(&out_attributes);
                if !names.is_empty() {
                    out_attributes.insert(names[index as usize % names.len()].clone(), value);
                }
            }
            Edit::OtherKey => drop(out_attributes.insert("kms_key".into(), OTHER_KEY.into())),
        }
    }

    let opened = futures::executor::block_on(world.opener.open(&Bytes::from(out_data), &out_attributes));
    if let Ok(opened) = opened {
        assert_eq!(opened.data, data, "an altered envelope opened to other data");
        assert_eq!(opened.attributes, attributes, "an altered envelope opened to other attributes");
        assert_eq!(opened.mode, mode);
    }
});
