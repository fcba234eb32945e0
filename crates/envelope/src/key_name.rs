//! Cloud KMS key names, and which of them a consumer trusts.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The prefix of Tink-style key URIs, accepted from people (flags, trust patterns) but
/// never in a message: see [`KeyName::from_uri_or_name`].
const TINK_PREFIX: &str = "gcp-kms://";

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

const LITERALS: [&str; 4] = ["projects", "locations", "keyRings", "cryptoKeys"];

/// Longest id of any segment, in bytes.
const MAX_ID_LEN: usize = 63;

fn is_valid_id(id: &str, literal: &str) -> bool {
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

/// The KMS keys a consumer accepts messages from.
///
/// Each entry is an exact key name or a prefix ending in `/*` (for example
/// `projects/tenant-1/*`), optionally with the tenant id its producers bind into their
/// wraps and certificates (`projects/tenant-1/*=tenant-1`); an entry without one uses
/// the opener's tenant id. So one opener serves tenants that each use an id of their
/// own. The most specific entry decides: an exact name, else the longest prefix.
/// The set is what it says: an empty one trusts no key (an
/// opener of service-account messages only needs none). Trusting every key the
/// opener's KMS credentials can use is possible, but only by name:
/// [`dangerous_any_key`](Self::dangerous_any_key).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    exact: Vec<(KeyName, Option<String>)>,
    prefixes: Vec<(String, Option<String>)>,
    any: bool,
}

impl TrustedKeys {
    /// Trusts no KMS key.
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts every KMS key, so that any producer whose key the opener's credentials
    /// can use is accepted: for trials and debugging only. Every binary that makes this
    /// choice warns about it at start-up.
    pub fn dangerous_any_key() -> Self {
        Self { any: true, ..Self::default() }
    }

    /// Parses entries as the `--trusted_kms_key` flag takes them: `NAME`, `PREFIX/*`,
    /// either followed by `=TENANT_ID`.
    pub fn from_patterns<I, S>(patterns: I) -> Result<Self, KeyNameError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut trusted = Self::default();
        for entry in patterns {
            let entry = entry.as_ref();
            let (pattern, tenant) = match entry.split_once('=') {
                Some((_, "")) => return Err(KeyNameError(entry.to_owned())),
                Some((pattern, tenant)) => (pattern, Some(tenant.to_owned())),
                None => (entry, None),
            };
            let bare = pattern.strip_prefix(TINK_PREFIX).unwrap_or(pattern);
            match bare.strip_suffix('*') {
                Some(prefix) if prefix.ends_with('/') && prefix.starts_with("projects/") => {
                    trusted.prefixes.push((prefix.to_owned(), tenant));
                }
                Some(_) => return Err(KeyNameError(entry.to_owned())),
                None => trusted.exact.push((bare.parse()?, tenant)),
            }
        }
        Ok(trusted)
    }

    /// Whether this was made by [`dangerous_any_key`](Self::dangerous_any_key).
    pub fn trusts_any_key(&self) -> bool {
        self.any
    }

    /// Whether no key at all is trusted.
    pub fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Whether messages wrapped under `key` may be opened.
    pub fn allows(&self, key: &KeyName) -> bool {
        self.trust(key).is_some()
    }

    /// The tenant id that producers under `key` bind, if `key` is trusted: its entry's,
    /// else `default` (the opener's).
    pub fn tenant_of<'a>(&'a self, key: &KeyName, default: &'a str) -> Option<&'a str> {
        self.trust(key).map(|tenant| tenant.unwrap_or(default))
    }

    /// The most specific entry trusting `key`, and its tenant id if it names one.
    fn trust(&self, key: &KeyName) -> Option<Option<&str>> {
        if let Some((_, tenant)) = self.exact.iter().find(|(name, _)| name == key) {
            return Some(tenant.as_deref());
        }
        let prefix = self
            .prefixes
            .iter()
            .filter(|(prefix, _)| key.as_str().starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len());
        match prefix {
            Some((_, tenant)) => Some(tenant.as_deref()),
            None if self.any => Some(None),
            None => None,
        }
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
    fn each_trusted_key_may_name_its_tenant_and_the_most_specific_entry_decides() {
        // One opener serves tenants that bind ids of their own: the tenant of a key is
        // its exact entry's, else its longest matching prefix's, else the opener's.
        let trusted = TrustedKeys::from_patterns([
            "projects/tenant-1/*=tenant-a",
            "projects/tenant-1/locations/eu/*=tenant-eu",
            &format!("{KEY}=tenant-exact"),
            "projects/tenant-2/*",
        ])
        .unwrap();
        let key = |name: &str| name.parse::<KeyName>().unwrap();
        assert_eq!(trusted.tenant_of(&key(KEY), "default"), Some("tenant-exact"));
        let other = "projects/tenant-1/locations/us-central1/keyRings/r/cryptoKeys/k2";
        assert_eq!(trusted.tenant_of(&key(other), "default"), Some("tenant-a"));
        let eu = "projects/tenant-1/locations/eu/keyRings/r/cryptoKeys/k";
        assert_eq!(trusted.tenant_of(&key(eu), "default"), Some("tenant-eu"));
        let two = "projects/tenant-2/locations/l/keyRings/r/cryptoKeys/k";
        assert_eq!(trusted.tenant_of(&key(two), "default"), Some("default"));
        let three = "projects/tenant-3/locations/l/keyRings/r/cryptoKeys/k";
        assert_eq!(trusted.tenant_of(&key(three), "default"), None);
        assert!(!trusted.allows(&key(three)));
        assert!(TrustedKeys::from_patterns(["projects/tenant-1/*="]).is_err(), "an empty tenant id");
        assert!(TrustedKeys::from_patterns(["projects/t*=x"]).is_err());
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

    #[test]
    fn trust_by_exact_name_and_prefix() {
        let key: KeyName = KEY.parse().unwrap();
        let other: KeyName = "projects/tenant-2/locations/l/keyRings/r/cryptoKeys/k".parse().unwrap();
        assert!(TrustedKeys::dangerous_any_key().allows(&other));
        assert!(!TrustedKeys::none().allows(&other) && TrustedKeys::none().is_empty());
        assert!(TrustedKeys::from_patterns(Vec::<String>::new()).unwrap().is_empty(), "no pattern trusts no key");
        let exact = TrustedKeys::from_patterns([KEY]).unwrap();
        assert!(exact.allows(&key) && !exact.allows(&other));
        let prefix = TrustedKeys::from_patterns(["projects/tenant-1/*"]).unwrap();
        assert!(prefix.allows(&key) && !prefix.allows(&other));
        let no_slash = TrustedKeys::from_patterns(["projects/tenant-*"]);
        assert!(no_slash.is_err(), "a prefix must end at a segment boundary");
    }
}
