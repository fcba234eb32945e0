//! Shared set-up: a local keyring with two tenants' keys, wrapped in a call counter.

#![allow(dead_code)] // each test file uses its own share of these helpers

use std::sync::Arc;

use pubsub_envelope::kms::Counted;
use pubsub_envelope::kms::local::{Keyring, LocalKms, Purpose};
use pubsub_envelope::{Attributes, KeyName, Mode, Opener, OpenerBuilder, Sealer, TrustedKeys};

pub const TENANT_1_KEY: &str = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/key1";
pub const TENANT_2_KEY: &str = "projects/tenant-2/locations/us-central1/keyRings/tenant2-keyring/cryptoKeys/key1";

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub kms: Arc<Counted<LocalKms>>,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let mut keyring = Keyring::load_or_new(&path).unwrap();
        keyring.create(&key(TENANT_1_KEY)).unwrap();
        keyring.create(&key(TENANT_2_KEY)).unwrap();
        keyring.save().unwrap();
        Self { kms: Arc::new(Counted::new(LocalKms::open(&path).unwrap())), _dir: dir }
    }

    /// Another backend on the same keyring, answering each call after `latency`.
    pub fn slow_kms(&self, latency: std::time::Duration) -> Arc<Counted<LocalKms>> {
        let path = self._dir.path().join("keyring.json");
        Arc::new(Counted::new(LocalKms::open(&path).unwrap().with_latency(latency)))
    }

    /// Where the keyring file is.
    pub fn keyring_path(&self) -> std::path::PathBuf {
        self._dir.path().join("keyring.json")
    }

    /// Adds a key to the keyring; the backend reads it on first use.
    pub fn add_key(&self, name: &str, purpose: Purpose) {
        let path = self._dir.path().join("keyring.json");
        let mut keyring = Keyring::load(&path).unwrap();
        keyring.create_for(&key(name), purpose).unwrap();
        keyring.save().unwrap();
    }

    /// A sealer in encrypt or sign mode.
    pub fn sealer(&self, key_name: &str, tenant: &str, mode: Mode) -> Sealer {
        match mode {
            Mode::Encrypt => Sealer::encrypt(self.kms.clone(), key(key_name), tenant),
            Mode::Sign => Sealer::sign(self.kms.clone(), key(key_name), tenant),
            _ => panic!("attest sealers take a key version: Sealer::attest"),
        }
    }

    /// An opener for `tenant` that trusts both tenants' keys.
    pub fn opener(&self, tenant: &str) -> Opener {
        self.opener_builder(tenant).build().unwrap()
    }

    pub fn opener_builder(&self, tenant: &str) -> OpenerBuilder {
        Opener::builder(tenant, both_tenants()).kms(self.kms.clone())
    }
}

pub fn both_tenants() -> TrustedKeys {
    TrustedKeys::from_patterns(["projects/tenant-1/*", "projects/tenant-2/*"]).unwrap()
}

pub fn key(name: &str) -> KeyName {
    name.parse().unwrap()
}

pub fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
