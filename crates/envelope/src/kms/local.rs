//! An offline keyring file: the default backend for demos and tests.
//!
//! The file holds versioned keys under Cloud KMS resource names, of Cloud KMS's two
//! purposes: 256-bit key encryption keys (`ENCRYPT_DECRYPT`, the default) and P-256
//! signing keys (`ASYMMETRIC_SIGN`, algorithm `EC_SIGN_P256_SHA256`). Like Cloud KMS,
//! wrapping uses a key's primary version, and every older version can still unwrap, so
//! rotating a key never strands data keys already in flight; signing names its version.
//!
//! Versions have Cloud KMS's (and Tink's) states: `ENABLED`, `DISABLED` (kept, but it
//! neither wraps, unwraps nor signs until enabled again) and `DESTROYED` (its material
//! erased for good). The primary version is enabled, and it alone wraps; promoting
//! another makes it the one new wraps use. Every change is made under an exclusive lock
//! on `PATH.lock` ([`Keyring::edit`]) and written atomically, so that two admins never
//! lose each other's change and a reader never sees half a file.
//!
//! File layout (JSON, written with mode 0600):
//!
//! ```json
//! { "format": "pubsub-envelope-keyring/1",
//!   "keys": [ { "name": "projects/P/locations/L/keyRings/R/cryptoKeys/K",
//!               "purpose": "ENCRYPT_DECRYPT",
//!               "primary": 2,
//!               "versions": [ { "version": 1, "state": "DISABLED", "material": "<base64>" },
//!                             { "version": 2, "material": "<base64>" }, ... ] } ] }
//! ```
//!
//! `material` is the 32-byte key (encrypt) or the PKCS#8 document (sign), absent for a
//! destroyed version; `state` is `ENABLED` when absent (files written before states). A wrapped key
//! is `u32 version (big-endian) || 12-byte nonce || AES-256-GCM(KEK, DEK)`, with the
//! tenant id as associated data: 64 bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{KeySign, KeyWrap, KmsError};
use crate::format::{decode_base64, encode_base64};
use crate::key_name::{KeyName, KeyVersionName};
use crate::secret::{KEY_LEN, SecretKey};

const FORMAT: &str = "pubsub-envelope-keyring/1";
const VERSION_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const WRAPPED_LEN: usize = VERSION_LEN + NONCE_LEN + KEY_LEN + 16;

/// Why a keyring file could not be read, changed or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// Reading or writing the file failed.
    #[error("keyring {path}: {source}")]
    Io {
        /// The keyring file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a keyring of this format.
    #[error("keyring {path} is malformed: {why}")]
    Malformed {
        /// The keyring file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `create` named a key that exists already.
    #[error("key {0} already exists in the keyring")]
    KeyExists(KeyName),
    /// The keyring does not hold this key.
    #[error("key {0} is not in the keyring")]
    KeyNotFound(KeyName),
    /// The key has no such version.
    #[error("key {0} has no version {1}")]
    VersionNotFound(KeyName, u32),
    /// The change would leave the key unusable or is not possible in the version's
    /// state (disabling the primary, enabling a destroyed version, ...).
    #[error("key {key} version {version}: {why}")]
    Refused {
        /// The key.
        key: KeyName,
        /// The version.
        version: u32,
        /// Why, and what to do instead.
        why: &'static str,
    },
}

/// A key version's state, in Cloud KMS's words.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionState {
    /// Wraps (if primary), unwraps and signs.
    #[default]
    Enabled,
    /// Kept, but unusable until enabled again.
    Disabled,
    /// Its material erased: unusable for good.
    Destroyed,
}

impl VersionState {
    fn is_enabled(&self) -> bool {
        *self == VersionState::Enabled
    }
}

impl std::fmt::Display for VersionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VersionState::Enabled => "enabled",
            VersionState::Disabled => "disabled",
            VersionState::Destroyed => "destroyed",
        })
    }
}

#[derive(Serialize, Deserialize)]
struct FileRepr {
    format: String,
    keys: Vec<KeyRepr>,
}

#[derive(Serialize, Deserialize)]
struct KeyRepr {
    name: String,
    #[serde(default)]
    purpose: Purpose,
    primary: u32,
    versions: Vec<VersionRepr>,
}

/// What a key is for, in Cloud KMS's words.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Purpose {
    /// A key encryption key: wraps and unwraps data keys.
    #[default]
    EncryptDecrypt,
    /// A P-256 signing key (`EC_SIGN_P256_SHA256`): signs attest certificates.
    AsymmetricSign,
}

impl Purpose {
    /// New key material for this purpose.
    fn generate(self) -> Zeroizing<Vec<u8>> {
        match self {
            Purpose::EncryptDecrypt => Zeroizing::new(SecretKey::generate().expose().to_vec()),
            Purpose::AsymmetricSign => {
                let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                    .expect("P-256 key generation");
                Zeroizing::new(document.as_ref().to_vec())
            }
        }
    }

    fn is_valid(self, material: &[u8]) -> bool {
        match self {
            Purpose::EncryptDecrypt => material.len() == KEY_LEN,
            Purpose::AsymmetricSign => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, material).is_ok(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct VersionRepr {
    version: u32,
    #[serde(default, skip_serializing_if = "VersionState::is_enabled")]
    state: VersionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    material: Option<Zeroizing<String>>,
}

/// One version: its state, and its material unless destroyed.
struct Version {
    state: VersionState,
    material: Option<Zeroizing<Vec<u8>>>,
}

impl Version {
    /// The material of an enabled version.
    fn usable(&self) -> Option<&[u8]> {
        self.material.as_deref().map(Vec::as_slice).filter(|_| self.state.is_enabled())
    }
}

/// One key's versions, and which is primary.
struct KeyVersions {
    purpose: Purpose,
    primary: u32,
    versions: BTreeMap<u32, Version>,
}

/// What [`Keyring::list`] reports of a key: never its material.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The key's resource name.
    pub name: KeyName,
    /// What it is for.
    pub purpose: Purpose,
    /// The version new wraps use.
    pub primary: u32,
    /// Every version, oldest first, with its state.
    pub versions: Vec<(u32, VersionState)>,
}

/// A keyring file loaded for inspection or change: `create`, `rotate`, `list`.
pub struct Keyring {
    path: PathBuf,
    keys: BTreeMap<KeyName, KeyVersions>,
}

impl Keyring {
    /// Loads the keyring at `path`, or starts an empty one if the file does not exist.
    pub fn load_or_new(path: impl Into<PathBuf>) -> Result<Self, KeyringError> {
        let path = path.into();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(path, &Zeroizing::new(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self { path, keys: BTreeMap::new() }),
            Err(source) => Err(KeyringError::Io { path, source }),
        }
    }

    /// Loads the keyring at `path`, which must exist.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, KeyringError> {
        let path = path.into();
        let text = std::fs::read_to_string(&path).map_err(|source| KeyringError::Io { path: path.clone(), source })?;
        Self::parse(path, &Zeroizing::new(text))
    }

    fn parse(path: PathBuf, text: &str) -> Result<Self, KeyringError> {
        let malformed = |why: String| KeyringError::Malformed { path: path.clone(), why };
        let repr: FileRepr = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        if repr.format != FORMAT {
            return Err(malformed(format!("format {:?}, expected {FORMAT:?}", repr.format)));
        }
        let mut keys = BTreeMap::new();
        for key in repr.keys {
            let name: KeyName = key.name.parse().map_err(|e: crate::KeyNameError| malformed(e.to_string()))?;
            let mut versions = BTreeMap::new();
            for version in key.versions {
                let number = version.version;
                let material = match (version.state, version.material) {
                    (VersionState::Destroyed, None) => None,
                    (VersionState::Destroyed, Some(_)) => {
                        return Err(malformed(format!("{name} version {number} is destroyed but holds material")));
                    }
                    (_, material) => Some(
                        material
                            .and_then(|text| decode_base64(&text))
                            .map(Zeroizing::new)
                            .filter(|bytes| key.purpose.is_valid(bytes))
                            .ok_or_else(|| {
                                malformed(format!("{name} version {number} is not a base64 {:?} key", key.purpose))
                            })?,
                    ),
                };
                versions.insert(number, Version { state: version.state, material });
            }
            if !versions.get(&key.primary).is_some_and(|version| version.state.is_enabled()) {
                return Err(malformed(format!(
                    "{name} names primary version {} that it lacks or is not enabled",
                    key.primary
                )));
            }
            keys.insert(name, KeyVersions { purpose: key.purpose, primary: key.primary, versions });
        }
        Ok(Self { path, keys })
    }

    /// Adds a new key encryption key with a fresh version 1.
    pub fn create(&mut self, name: &KeyName) -> Result<(), KeyringError> {
        self.create_for(name, Purpose::EncryptDecrypt)
    }

    /// Adds a new key for `purpose` with a fresh version 1.
    pub fn create_for(&mut self, name: &KeyName, purpose: Purpose) -> Result<(), KeyringError> {
        if self.keys.contains_key(name) {
            return Err(KeyringError::KeyExists(name.clone()));
        }
        let versions =
            BTreeMap::from([(1, Version { state: VersionState::Enabled, material: Some(purpose.generate()) })]);
        self.keys.insert(name.clone(), KeyVersions { purpose, primary: 1, versions });
        Ok(())
    }

    /// Adds a fresh version to `name` and makes it primary; returns its number.
    pub fn rotate(&mut self, name: &KeyName) -> Result<u32, KeyringError> {
        let next = self.add_version(name)?;
        self.promote(name, next)?;
        Ok(next)
    }

    /// Adds a fresh, enabled version to `name` without making it primary (Tink's
    /// `add-key`: producers switch to it only once it is promoted, after every consumer
    /// has it); returns its number.
    pub fn add_version(&mut self, name: &KeyName) -> Result<u32, KeyringError> {
        let key = self.key_mut(name)?;
        let next = key.versions.keys().next_back().copied().unwrap_or(0) + 1;
        key.versions.insert(next, Version { state: VersionState::Enabled, material: Some(key.purpose.generate()) });
        Ok(next)
    }

    /// Makes enabled version `version` the one new wraps use.
    pub fn promote(&mut self, name: &KeyName, version: u32) -> Result<(), KeyringError> {
        let key = self.key_mut(name)?;
        let state =
            key.versions.get(&version).ok_or_else(|| KeyringError::VersionNotFound(name.clone(), version))?.state;
        if !state.is_enabled() {
            return Err(refused(name, version, "only an enabled version can be primary: enable it first"));
        }
        key.primary = version;
        Ok(())
    }

    /// Disables `version`: kept, but it neither unwraps nor signs until enabled again
    /// (messages under it are refused, `unwrap_rejected`). Not the primary.
    pub fn disable(&mut self, name: &KeyName, version: u32) -> Result<(), KeyringError> {
        self.set_state(name, version, VersionState::Disabled)
    }

    /// Enables a disabled `version` again.
    pub fn enable(&mut self, name: &KeyName, version: u32) -> Result<(), KeyringError> {
        self.set_state(name, version, VersionState::Enabled)
    }

    /// Destroys `version`: its material is erased (zeroized) and can never be used
    /// again. Not the primary.
    pub fn destroy(&mut self, name: &KeyName, version: u32) -> Result<(), KeyringError> {
        self.set_state(name, version, VersionState::Destroyed)
    }

    fn set_state(&mut self, name: &KeyName, version: u32, state: VersionState) -> Result<(), KeyringError> {
        let key = self.key_mut(name)?;
        let primary = key.primary;
        let entry =
            key.versions.get_mut(&version).ok_or_else(|| KeyringError::VersionNotFound(name.clone(), version))?;
        match (entry.state, state) {
            (VersionState::Destroyed, VersionState::Destroyed) => return Ok(()),
            (VersionState::Destroyed, _) => return Err(refused(name, version, "a destroyed version cannot come back")),
            (_, VersionState::Disabled | VersionState::Destroyed) if version == primary => {
                return Err(refused(name, version, "the primary version must stay enabled: promote another first"));
            }
            _ => {}
        }
        entry.state = state;
        if state == VersionState::Destroyed {
            entry.material = None; // zeroized as it drops
        }
        Ok(())
    }

    fn key_mut(&mut self, name: &KeyName) -> Result<&mut KeyVersions, KeyringError> {
        self.keys.get_mut(name).ok_or_else(|| KeyringError::KeyNotFound(name.clone()))
    }

    /// Every key with its versions.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|(name, key)| KeyInfo {
                name: name.clone(),
                purpose: key.purpose,
                primary: key.primary,
                versions: key.versions.iter().map(|(&number, version)| (number, version.state)).collect(),
            })
            .collect()
    }

    /// Changes the keyring at `path` (made if missing) under an exclusive lock on
    /// `PATH.lock`, held from reading the file to writing it back: two admins editing at
    /// once never lose each other's change. `change` returning an error writes nothing.
    pub fn edit<T>(
        path: impl Into<PathBuf>,
        change: impl FnOnce(&mut Keyring) -> Result<T, KeyringError>,
    ) -> Result<T, KeyringError> {
        let path = path.into();
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let io = |source| KeyringError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Owner only: a lock file others can open is one any local user can hold forever,
        // blocking every change (a lock file made before this rule is tightened).
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io)?;
        if lock.metadata().map_err(io)?.permissions().mode() & 0o077 != 0 {
            lock.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        lock.lock().map_err(io)?;
        let mut keyring = Keyring::load_or_new(&path)?;
        let result = change(&mut keyring)?;
        keyring.save()?;
        Ok(result)
    }

    /// Writes the keyring back atomically (a temporary file renamed over the old one),
    /// readable and writable by its owner only.
    pub fn save(&self) -> Result<(), KeyringError> {
        let io = |source| KeyringError::Io { path: self.path.clone(), source };
        let repr = FileRepr {
            format: FORMAT.to_owned(),
            keys: self
                .keys
                .iter()
                .map(|(name, key)| KeyRepr {
                    name: name.to_string(),
                    purpose: key.purpose,
                    primary: key.primary,
                    versions: key
                        .versions
                        .iter()
                        .map(|(&number, version)| VersionRepr {
                            version: number,
                            state: version.state,
                            material: version.material.as_ref().map(|material| Zeroizing::new(encode_base64(material))),
                        })
                        .collect(),
                })
                .collect(),
        };
        let text = Zeroizing::new(serde_json::to_string_pretty(&repr).expect("keyring serializes"));
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut temp = tempfile_in(dir).map_err(io)?;
        temp.1.write_all(text.as_bytes()).and_then(|()| temp.1.sync_all()).map_err(io)?;
        std::fs::rename(&temp.0, &self.path).map_err(io)
    }
}

fn refused(key: &KeyName, version: u32, why: &'static str) -> KeyringError {
    KeyringError::Refused { key: key.clone(), version, why }
}

/// Creates a new, owner-only file beside the keyring for an atomic replace.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(format!(".keyring.{}.{}.tmp", std::process::id(), rand::rng().next_u64()));
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    Ok((path, file))
}

/// The keys a [`LocalKms`] holds, ready to use.
struct Loaded {
    keys: HashMap<KeyName, (u32, HashMap<u32, LessSafeKey>)>,
    signing_keys: HashMap<KeyName, HashMap<u32, EcdsaKeyPair>>,
    /// Every encryption key version's state, to tell a wrapped key under a disabled or
    /// destroyed version from junk.
    states: HashMap<KeyName, HashMap<u32, VersionState>>,
}

impl Loaded {
    fn from_keyring(keyring: &Keyring) -> Self {
        let mut loaded = Self { keys: HashMap::new(), signing_keys: HashMap::new(), states: HashMap::new() };
        for (name, key) in &keyring.keys {
            match key.purpose {
                Purpose::EncryptDecrypt => {
                    // Only enabled versions are loaded: a disabled or destroyed one
                    // unwraps nothing, as in Cloud KMS.
                    let versions = key
                        .versions
                        .iter()
                        .filter_map(|(&number, version)| {
                            let unbound = UnboundKey::new(&AES_256_GCM, version.usable()?).expect("32-byte key");
                            Some((number, LessSafeKey::new(unbound)))
                        })
                        .collect();
                    loaded.keys.insert(name.clone(), (key.primary, versions));
                    let states = key.versions.iter().map(|(&number, version)| (number, version.state)).collect();
                    loaded.states.insert(name.clone(), states);
                }
                Purpose::AsymmetricSign => {
                    let versions = key
                        .versions
                        .iter()
                        .filter_map(|(&number, version)| {
                            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, version.usable()?)
                                .expect("checked when the keyring was read");
                            Some((number, pair))
                        })
                        .collect();
                    loaded.signing_keys.insert(name.clone(), versions);
                }
            }
        }
        loaded
    }

    /// The signing key version `name`, if held; `Err` for a key held for another purpose.
    fn signing_key(&self, name: &KeyVersionName) -> Option<Result<&EcdsaKeyPair, KmsError>> {
        if self.keys.contains_key(name.key()) {
            return Some(Err(KmsError::Rejected(format!("{} is an encryption key, not a signing key", name.key()))));
        }
        self.signing_keys.get(name.key())?.get(&name.version()).map(Ok)
    }
}

/// `u32(version) || nonce || AES-256-GCM(kek, nonce, aad, key) || tag`.
fn seal_wrapped(kek: &LessSafeKey, version: u32, nonce: [u8; NONCE_LEN], key: &SecretKey, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(key.expose());
    let tag = kek
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[VERSION_LEN + NONCE_LEN..],
        )
        .expect("AES-GCM seals 32 bytes");
    out.extend_from_slice(tag.as_ref());
    out
}

/// The wrapped key the local backend makes of `key` under version `version` of a key
/// whose material is `kek`, with a given nonce: for the test vectors.
#[cfg(feature = "internals")]
pub fn wrap_with(kek: &[u8; KEY_LEN], version: u32, nonce: [u8; NONCE_LEN], key: &SecretKey, aad: &[u8]) -> Vec<u8> {
    let kek = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).expect("a 32-byte key"));
    seal_wrapped(&kek, version, nonce, key, aad)
}

/// The local keyring as a KMS backend: it wraps ([`KeyWrap`]) and signs ([`KeySign`]).
///
/// The keys are held in memory and read again only when the file changed (every save
/// writes a new file): looked at once a second at most while calls come, and at once
/// when a call names a key or version not held, so a key created, rotated, disabled or
/// destroyed reaches a running process within about a second of its next call. A
/// flood of calls under unknown keys costs a look at the file's metadata each, never a
/// read of the whole file.
pub struct LocalKms {
    path: PathBuf,
    loaded: RwLock<Loaded>,
    seen: Mutex<Seen>,
    /// Times the file was read (the first included).
    loads: AtomicU64,
    latency: Duration,
}

/// The file as last loaded, and when it was last looked at.
struct Seen {
    stamp: Option<FileStamp>,
    checked: Instant,
}

/// What tells one version of the keyring file from another: saving writes a new file
/// and renames it over the old, so the inode alone changes each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self { inode: metadata.ino(), len: metadata.len(), modified: metadata.modified().ok() })
    }
}

/// How often a running backend looks at whether the file changed.
pub const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);

impl LocalKms {
    /// Opens the keyring file at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, KeyringError> {
        let path = path.into();
        let stamp = FileStamp::of(&path);
        let keyring = Keyring::load(path)?;
        Ok(Self {
            loaded: RwLock::new(Loaded::from_keyring(&keyring)),
            seen: Mutex::new(Seen { stamp, checked: Instant::now() }),
            loads: AtomicU64::new(1),
            path: keyring.path,
            latency: Duration::ZERO,
        })
    }

    /// How many times the file has been read, the first included.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Adds `latency` to every call, to stand in for a remote KMS in benchmarks.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Reads the file again if it changed since it was loaded. Looks at it only if
    /// `now` (a call named a key or version not held) or once [`RELOAD_CHECK_EVERY`]
    /// has passed since the last look.
    fn reload_if_changed(&self, now: bool) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !now && seen.checked.elapsed() < RELOAD_CHECK_EVERY {
            return;
        }
        seen.checked = Instant::now();
        let stamp = FileStamp::of(&self.path);
        if stamp == seen.stamp {
            return;
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        match Keyring::load(&self.path) {
            Ok(keyring) => {
                *self.loaded.write().expect("keyring lock poisoned") = Loaded::from_keyring(&keyring);
                seen.stamp = stamp;
                tracing::debug!(path = %self.path.display(), "reloaded the local keyring");
            }
            Err(error) => tracing::warn!(%error, "could not reload the local keyring"),
        }
    }

    /// The simulated latency, then a look at whether the file changed.
    async fn begin_call(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.reload_if_changed(false);
    }

    /// Runs `use_key` on the signing key version `name`, reading the file again once if
    /// it is not held.
    async fn with_signing_key<T>(
        &self,
        name: &KeyVersionName,
        use_key: impl Fn(&EcdsaKeyPair) -> T,
    ) -> Result<T, KmsError> {
        self.begin_call().await;
        for attempt in 0..2 {
            if attempt == 1 {
                self.reload_if_changed(true);
            }
            let loaded = self.loaded.read().expect("keyring lock poisoned");
            if let Some(key) = loaded.signing_key(name) {
                return key.map(&use_key);
            }
        }
        Err(KmsError::KeyNotFound(name.to_string()))
    }

    fn try_unwrap(&self, name: &KeyName, wrapped: &[u8], aad: &[u8]) -> Option<Result<SecretKey, KmsError>> {
        let rejected = || KmsError::UnwrapRejected(name.to_string());
        if wrapped.len() != WRAPPED_LEN {
            return Some(Err(rejected()));
        }
        let (version, rest) = wrapped.split_at(VERSION_LEN);
        let version = u32::from_be_bytes(version.try_into().expect("4 bytes"));
        let loaded = self.loaded.read().expect("keyring lock poisoned");
        let kek = loaded.keys.get(name)?.1.get(&version)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12 bytes");
        let mut buffer = Zeroizing::new(sealed.to_vec());
        Some(match kek.open_in_place(nonce, Aad::from(aad), &mut buffer) {
            Ok(plaintext) => Ok(SecretKey::from_slice(plaintext).expect("wrapped keys are 32 bytes")),
            Err(_) => Err(rejected()),
        })
    }
}

#[async_trait]
impl KeyWrap for LocalKms {
    async fn wrap(&self, name: &KeyName, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.begin_call().await;
        let mut nonce = [0; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        for attempt in 0..2 {
            if attempt == 1 {
                self.reload_if_changed(true);
            }
            let loaded = self.loaded.read().expect("keyring lock poisoned");
            if loaded.signing_keys.contains_key(name) {
                return Err(KmsError::Rejected(format!("{name} is a signing key, not an encryption key")));
            }
            if let Some((primary, versions)) = loaded.keys.get(name) {
                return Ok(seal_wrapped(&versions[primary], *primary, nonce, key, aad));
            }
        }
        Err(KmsError::KeyNotFound(name.to_string()))
    }

    async fn unwrap(&self, name: &KeyName, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, KmsError> {
        self.begin_call().await;
        if let Some(result) = self.try_unwrap(name, wrapped, aad) {
            return result;
        }
        self.reload_if_changed(true);
        self.try_unwrap(name, wrapped, aad).unwrap_or_else(|| {
            let loaded = self.loaded.read().expect("keyring lock poisoned");
            if !loaded.keys.contains_key(name) {
                return Err(KmsError::KeyNotFound(name.to_string()));
            }
            // As Cloud KMS answers FAILED_PRECONDITION: the key refuses, not the wrapped
            // key, so the dead letter says which (`kms_rejected`, not `unwrap_rejected`).
            match wrapped_version(wrapped).and_then(|version| Some((version, *loaded.states.get(name)?.get(&version)?)))
            {
                Some((version, state)) if !state.is_enabled() => {
                    Err(KmsError::Rejected(format!("version {version} of {name} is {state}")))
                }
                _ => Err(KmsError::UnwrapRejected(name.to_string())),
            }
        })
    }

    fn generation(&self) -> u64 {
        self.reload_if_changed(false);
        self.loads()
    }
}

/// The key version a wrapped key of the local format names, if it has the format's
/// length.
fn wrapped_version(wrapped: &[u8]) -> Option<u32> {
    (wrapped.len() == WRAPPED_LEN).then(|| u32::from_be_bytes(wrapped[..VERSION_LEN].try_into().expect("4 bytes")))
}

#[async_trait]
impl KeySign for LocalKms {
    async fn sign(&self, name: &KeyVersionName, message: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.with_signing_key(name, |pair| {
            let signature = pair.sign(&SystemRandom::new(), message).expect("ECDSA P-256 signs");
            signature.as_ref().to_vec()
        })
        .await
    }

    async fn public_key(&self, name: &KeyVersionName) -> Result<Vec<u8>, KmsError> {
        self.with_signing_key(name, |pair| {
            pair.public_key().as_der().expect("a P-256 public key encodes").as_ref().to_vec()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(key: &str) -> KeyName {
        format!("projects/p/locations/l/keyRings/r/cryptoKeys/{key}").parse().unwrap()
    }

    fn keyring_with(dir: &Path, keys: &[&str]) -> PathBuf {
        let path = dir.join("keyring.json");
        let mut keyring = Keyring::load_or_new(&path).unwrap();
        for key in keys {
            keyring.create(&name(key)).unwrap();
        }
        keyring.save().unwrap();
        path
    }

    #[tokio::test]
    async fn a_flood_under_unknown_keys_and_versions_never_rereads_an_unchanged_file() {
        // Each unwrap under a key or version not held read and parsed the whole file
        // under its lock (300 junk messages: 10.3 s instead of 0.8 s with 305 keys). Now
        // a miss looks at the file's metadata, and reads it only if it changed.
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let path = keyring_with(dir.path(), &names.iter().map(String::as_str).collect::<Vec<_>>());
        let kms = LocalKms::open(&path).unwrap();
        let wrapped = kms.wrap(&name("k0"), &SecretKey::generate(), b"t").await.unwrap();
        for junk in 0..300u32 {
            let mut other_version = wrapped.clone();
            other_version[..VERSION_LEN].copy_from_slice(&(junk + 2).to_be_bytes());
            assert!(kms.unwrap(&name("k0"), &other_version, b"t").await.is_err());
            assert!(kms.unwrap(&name(&format!("unknown{junk}")), &wrapped, b"t").await.is_err());
        }
        assert_eq!(kms.loads(), 1, "the file was read once, when opened");
    }

    #[tokio::test]
    async fn a_key_created_or_disabled_reaches_a_running_backend() {
        // A key made after the backend opened is found at its first use; a version
        // disabled (or destroyed) stops unwrapping within a second of the change.
        let dir = tempfile::tempdir().unwrap();
        let path = keyring_with(dir.path(), &["a"]);
        let kms = LocalKms::open(&path).unwrap();
        let secret = SecretKey::generate();
        let old = kms.wrap(&name("a"), &secret, b"t").await.unwrap();
        Keyring::edit(&path, |keyring| keyring.create(&name("b"))).unwrap();
        let fresh = kms.wrap(&name("b"), &secret, b"t").await;
        assert!(fresh.is_ok(), "a new key is found at once: {fresh:?}");
        Keyring::edit(&path, |keyring| {
            let new = keyring.add_version(&name("a"))?;
            keyring.promote(&name("a"), new)?;
            keyring.disable(&name("a"), 1)
        })
        .unwrap();
        std::thread::sleep(RELOAD_CHECK_EVERY + Duration::from_millis(200));
        let refused = kms.unwrap(&name("a"), &old, b"t").await;
        assert!(matches!(&refused, Err(KmsError::Rejected(why)) if why.contains("disabled")), "{refused:?}");
        let rewrapped = kms.wrap(&name("a"), &secret, b"t").await.unwrap();
        assert_eq!(u32::from_be_bytes(rewrapped[..VERSION_LEN].try_into().unwrap()), 2, "wraps under the new primary");
        assert_eq!(kms.loads(), 3, "read when opened and after each of the two changes");
    }

    #[test]
    fn the_lock_file_is_its_owners_alone() {
        // A lock file others could open let any local user hold the lock forever and
        // block every change; one made before the rule is tightened.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let lock = dir.path().join("keyring.json.lock");
        Keyring::edit(&path, |keyring| keyring.create(&name("a"))).unwrap();
        assert_eq!(std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
        Keyring::edit(&path, |keyring| keyring.create(&name("b"))).unwrap();
        assert_eq!(std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn wraps_and_unwraps_with_tenant_binding() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open(keyring_with(dir.path(), &["a", "b"])).unwrap();
        let dek = SecretKey::generate();
        let wrapped = kms.wrap(&name("a"), &dek, b"tenant-1").await.unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        let back = kms.unwrap(&name("a"), &wrapped, b"tenant-1").await.unwrap();
        assert_eq!(back.expose(), dek.expose());
        let wrong_tenant = kms.unwrap(&name("a"), &wrapped, b"tenant-2").await.unwrap_err();
        assert_eq!(wrong_tenant.reason(), "unwrap_rejected");
        let wrong_key = kms.unwrap(&name("b"), &wrapped, b"tenant-1").await.unwrap_err();
        assert_eq!(wrong_key.reason(), "unwrap_rejected");
        let missing = kms.unwrap(&name("zzz"), &wrapped, b"tenant-1").await.unwrap_err();
        assert_eq!(missing, KmsError::KeyNotFound(name("zzz").to_string()));
    }

    #[tokio::test]
    async fn rotation_keeps_old_versions_and_running_backends_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = keyring_with(dir.path(), &["a"]);
        let consumer = LocalKms::open(&path).unwrap();
        let old = consumer.wrap(&name("a"), &SecretKey::generate(), b"t").await.unwrap();

        let mut keyring = Keyring::load(&path).unwrap();
        assert_eq!(keyring.rotate(&name("a")).unwrap(), 2);
        keyring.save().unwrap();
        let enabled = VersionState::Enabled;
        assert_eq!(Keyring::load(&path).unwrap().list()[0].versions, vec![(1, enabled), (2, enabled)]);

        let producer = LocalKms::open(&path).unwrap();
        let new = producer.wrap(&name("a"), &SecretKey::generate(), b"t").await.unwrap();
        assert_eq!(&new[..4], &2u32.to_be_bytes());
        assert!(producer.unwrap(&name("a"), &old, b"t").await.is_ok(), "old version still unwraps");
        assert!(consumer.unwrap(&name("a"), &new, b"t").await.is_ok(), "consumer reloads for version 2");
    }

    #[tokio::test]
    async fn versions_are_enabled_disabled_or_destroyed_as_in_cloud_kms() {
        // A disabled version unwraps nothing until enabled again; a destroyed one never
        // again, its material gone from the file; the primary must stay enabled; a
        // version added is used for new wraps only once promoted.
        let dir = tempfile::tempdir().unwrap();
        let path = keyring_with(dir.path(), &["a"]);
        let old = LocalKms::open(&path).unwrap().wrap(&name("a"), &SecretKey::generate(), b"t").await.unwrap();
        let added = Keyring::edit(&path, |keyring| keyring.add_version(&name("a"))).unwrap();
        assert_eq!(added, 2);
        let still_1 = LocalKms::open(&path).unwrap().wrap(&name("a"), &SecretKey::generate(), b"t").await.unwrap();
        assert_eq!(&still_1[..4], &1u32.to_be_bytes(), "not primary until promoted");
        let refused = Keyring::edit(&path, |keyring| keyring.disable(&name("a"), 1)).unwrap_err();
        assert!(refused.to_string().contains("promote another first"), "{refused}");
        Keyring::edit(&path, |keyring| {
            keyring.promote(&name("a"), 2)?;
            keyring.disable(&name("a"), 1)
        })
        .unwrap();
        let unwrap_old = || async { LocalKms::open(&path).unwrap().unwrap(&name("a"), &old, b"t").await };
        assert_eq!(unwrap_old().await.unwrap_err().reason(), "kms_rejected", "disabled");
        Keyring::edit(&path, |keyring| keyring.enable(&name("a"), 1)).unwrap();
        assert!(unwrap_old().await.is_ok(), "enabled again");
        let before = std::fs::read_to_string(&path).unwrap();
        Keyring::edit(&path, |keyring| keyring.destroy(&name("a"), 1)).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(
            after.contains("DESTROYED") && after.matches("material").count() + 1 == before.matches("material").count()
        );
        assert_eq!(unwrap_old().await.unwrap_err().reason(), "kms_rejected", "destroyed");
        let back = Keyring::edit(&path, |keyring| keyring.enable(&name("a"), 1)).unwrap_err();
        assert!(back.to_string().contains("cannot come back"), "{back}");
        let info = &Keyring::load(&path).unwrap().list()[0];
        assert_eq!(
            (info.primary, info.versions.clone()),
            (2, vec![(1, VersionState::Destroyed), (2, VersionState::Enabled)])
        );
        assert!(matches!(
            Keyring::edit(&path, |keyring| keyring.promote(&name("a"), 7)),
            Err(KeyringError::VersionNotFound(_, 7))
        ));
    }

    #[test]
    fn concurrent_edits_under_the_lock_lose_nothing() {
        // Eight threads each add a version at once: with the lock held from read to
        // write, all eight land (without it, last writer wins and versions vanish).
        let dir = tempfile::tempdir().unwrap();
        let path = keyring_with(dir.path(), &["a"]);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| Keyring::edit(&path, |keyring| keyring.add_version(&name("a"))).unwrap());
            }
        });
        assert_eq!(Keyring::load(&path).unwrap().list()[0].versions.len(), 9);
    }

    #[test]
    fn file_is_owner_only_and_create_refuses_duplicates() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = keyring_with(dir.path(), &["a"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut keyring = Keyring::load(&path).unwrap();
        assert!(matches!(keyring.create(&name("a")), Err(KeyringError::KeyExists(_))));
        assert!(matches!(keyring.rotate(&name("b")), Err(KeyringError::KeyNotFound(_))));
    }

    #[tokio::test]
    async fn signing_keys_sign_and_publish_their_public_key() {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
        let dir = tempfile::tempdir().unwrap();
        let path = keyring_with(dir.path(), &["enc"]);
        let mut keyring = Keyring::load(&path).unwrap();
        keyring.create_for(&name("sig"), Purpose::AsymmetricSign).unwrap();
        keyring.save().unwrap();
        let kms = LocalKms::open(&path).unwrap();
        let v1 = KeyVersionName::new(name("sig"), 1).unwrap();
        let signature = kms.sign(&v1, b"certificate").await.unwrap();
        let public = kms.public_key(&v1).await.unwrap();
        let verifier = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public);
        assert!(verifier.verify(b"certificate", &signature).is_ok());
        assert!(verifier.verify(b"certificatf", &signature).is_err());

        let mut keyring = Keyring::load(&path).unwrap();
        assert_eq!(keyring.rotate(&name("sig")).unwrap(), 2);
        keyring.save().unwrap();
        let v2 = KeyVersionName::new(name("sig"), 2).unwrap();
        let public2 = kms.public_key(&v2).await.expect("a running backend picks up the new version");
        assert_ne!(public, public2);
        assert_eq!(kms.public_key(&v1).await.unwrap(), public, "old versions keep their key");

        let encrypt_key = KeyVersionName::new(name("enc"), 1).unwrap();
        assert_eq!(kms.sign(&encrypt_key, b"x").await.unwrap_err().reason(), "kms_rejected");
        let missing = KeyVersionName::new(name("sig"), 9).unwrap();
        assert_eq!(kms.sign(&missing, b"x").await.unwrap_err().reason(), "kms_key_not_found");
        assert_eq!(kms.wrap(&name("sig"), &SecretKey::generate(), b"t").await.unwrap_err().reason(), "kms_rejected");
        assert_eq!(Keyring::load(&path).unwrap().list()[1].purpose, Purpose::AsymmetricSign);
    }

    #[test]
    fn malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"{"format":"other","keys":[]}"#).unwrap();
        let error = Keyring::load(&path).err().unwrap().to_string();
        assert!(error.contains("bad.json") && error.contains("format"), "{error}");
    }
}
