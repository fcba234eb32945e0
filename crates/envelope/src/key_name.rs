//! Cloud KMS key names and key version names, parsed strictly.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The prefix of Tink-style key URIs, accepted from people (flags, trust patterns) but
/// never in a message: see [`KeyName::from_uri_or_name`].
pub(crate) const TINK_PREFIX: &str = "gcp-kms://";

/// A Cloud KMS crypto key: `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
///
/// Parsing (`str::parse`) takes the canonical resource name only, as a message's
/// `kms_key` must carry it: each id 1 to 63 of `A-Z a-z 0-9 _ -` (Cloud KMS's rule
/// for key rings and keys), except that a project id may also hold `.` and `:`
/// (domain-scoped projects such as `example.com:project`).
/// The local keyring backend uses the same names, so a deployment can move between the
/// two without touching its configuration. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(Arc<str>);

/// Why a string is not a [`KeyName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a KMS key name of the form projects/P/locations/L/keyRings/R/cryptoKeys/K")]
pub struct KeyNameError(String);

pub(crate) const LITERALS: [&str; 4] = ["projects", "locations", "keyRings", "cryptoKeys"];

/// Longest id of any segment, in bytes.
const MAX_ID_LEN: usize = 63;

pub(crate) fn is_valid_id(id: &str, literal: &str) -> bool {
    let project = literal == "projects";
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (project && matches!(b, b'.' | b':')))
}

impl KeyName {
    /// Builds a key name from its four ids, as the article's `--kms_*` flags give them.
    pub fn from_parts(project: &str, location: &str, key_ring: &str, key: &str) -> Result<Self, KeyNameError> {
        format!("projects/{project}/locations/{location}/keyRings/{key_ring}/cryptoKeys/{key}").parse()
    }

    /// Parses a name as people write it: the resource name, or the Tink URI form
    /// `gcp-kms://` + resource name (the article's). Messages never carry the prefix.
    pub fn from_uri_or_name(text: &str) -> Result<Self, KeyNameError> {
        text.strip_prefix(TINK_PREFIX).unwrap_or(text).parse().map_err(|_| KeyNameError(text.to_owned()))
    }

    /// The resource name, without any URI prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same name in an allocation of its own. Clones of one `KeyName` share a
    /// reference count, which threads cloning it for every message would pass back and
    /// forth; each thread's copy keeps its clones to itself.
    pub(crate) fn unshared(&self) -> Self {
        Self(Arc::from(&*self.0))
    }
}

impl FromStr for KeyName {
    type Err = KeyNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let segments: Vec<&str> = text.split('/').collect();
        let well_formed = segments.len() == 8
            && segments
                .chunks(2)
                .zip(LITERALS)
                .all(|(pair, literal)| pair[0] == literal && is_valid_id(pair[1], literal));
        if well_formed { Ok(Self(text.into())) } else { Err(KeyNameError(text.to_owned())) }
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One version of a Cloud KMS key:
/// `projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`.
///
/// Asymmetric keys sign with one named version, and verifiers fetch that version's
/// public key, so attest mode names versions where the other modes name keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyVersionName {
    key: KeyName,
    version: u32,
    text: Arc<str>,
}

/// Why a string is not a [`KeyVersionName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a KMS key version name of the form projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V"
)]
pub struct KeyVersionNameError(String);

impl KeyVersionName {
    /// Version `version` (from 1) of `key`.
    pub fn new(key: KeyName, version: u32) -> Result<Self, KeyVersionNameError> {
        let text: Arc<str> = format!("{key}/cryptoKeyVersions/{version}").into();
        if version == 0 {
            return Err(KeyVersionNameError(text.to_string()));
        }
        Ok(Self { key, version, text })
    }

    /// Parses a version name as people write it: the resource name, or the Tink URI
    /// form `gcp-kms://` + resource name. Messages never carry the prefix.
    pub fn from_uri_or_name(text: &str) -> Result<Self, KeyVersionNameError> {
        text.strip_prefix(TINK_PREFIX).unwrap_or(text).parse().map_err(|_| KeyVersionNameError(text.to_owned()))
    }

    /// The key this is a version of.
    pub fn key(&self) -> &KeyName {
        &self.key
    }

    /// The version number.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The resource name, without any URI prefix.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for KeyVersionName {
    type Err = KeyVersionNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || KeyVersionNameError(text.to_owned());
        let (key, version) = text.rsplit_once("/cryptoKeyVersions/").ok_or_else(error)?;
        let canonical = !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) && !version.starts_with('0');
        let version: u32 = canonical.then(|| version.parse().ok()).flatten().ok_or_else(error)?;
        Self::new(key.parse().map_err(|_| error())?, version)
    }
}

impl fmt::Display for KeyVersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/key1";

    #[test]
    fn parses_resource_names_and_tink_uris() {
        let plain: KeyName = KEY.parse().unwrap();
        let tink = KeyName::from_uri_or_name(&format!("gcp-kms://{KEY}")).unwrap();
        assert_eq!(plain, tink);
        assert!(format!("gcp-kms://{KEY}").parse::<KeyName>().is_err(), "a message carries the bare name");
        assert_eq!(tink.as_str(), KEY);
        assert_eq!(KeyName::from_parts("tenant-1", "us-central1", "tenant1-keyring", "key1").unwrap(), plain);
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "projects/p",
            "projects/p/locations/l/keyRings/r/cryptoKeys/",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            "projects/p/locations/l/keyrings/r/cryptoKeys/k",
            "projects/p q/locations/l/keyRings/r/cryptoKeys/k",
            "projects/p/locations/l/keyRings/r.x/cryptoKeys/k",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k:1",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/",
            "/projects/p/locations/l/keyRings/r/cryptoKeys/k",
        ] {
            assert!(bad.parse::<KeyName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_are_1_to_63_of_the_cloud_kms_alphabet() {
        let with_key = |id: &str| format!("projects/p/locations/l/keyRings/r/cryptoKeys/{id}");
        assert!(with_key(&"k".repeat(63)).parse::<KeyName>().is_ok());
        assert!(with_key(&"k".repeat(64)).parse::<KeyName>().is_err());
        assert!(with_key("A-z_09").parse::<KeyName>().is_ok());
        assert!("projects/example.com:p/locations/l/keyRings/r/cryptoKeys/k".parse::<KeyName>().is_ok());
        assert!("projects/p/locations/l.x/keyRings/r/cryptoKeys/k".parse::<KeyName>().is_err());
    }

    #[test]
    fn parses_version_names() {
        let name: KeyVersionName = format!("{KEY}/cryptoKeyVersions/3").parse().unwrap();
        assert_eq!(name.key().as_str(), KEY);
        assert_eq!(name.version(), 3);
        assert_eq!(name.to_string(), format!("{KEY}/cryptoKeyVersions/3"));
        let tink = KeyVersionName::from_uri_or_name(&format!("gcp-kms://{KEY}/cryptoKeyVersions/3")).unwrap();
        assert_eq!(tink, name);
        assert!(format!("gcp-kms://{KEY}/cryptoKeyVersions/3").parse::<KeyVersionName>().is_err());
        for bad in ["0", "01", "", "x", "-1", "4294967296"] {
            assert!(format!("{KEY}/cryptoKeyVersions/{bad}").parse::<KeyVersionName>().is_err(), "{bad:?}");
        }
        assert!(KEY.parse::<KeyVersionName>().is_err());
    }
}
