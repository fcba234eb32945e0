//! Which KMS keys a consumer trusts, and for which tenant id: entries that cannot
//! surprise, since any two that disagree are refused when the set is made.

use crate::key_name::{KeyName, LITERALS, TINK_PREFIX, is_valid_id};

/// The KMS keys a consumer accepts messages from.
///
/// Each entry is an exact key name or a prefix ending in `/*` (for example
/// `projects/tenant-1/*`), optionally with the tenant id its producers bind into their
/// wraps and certificates (`projects/tenant-1/*=tenant-1`); an entry without one uses
/// the opener's tenant id. So one opener serves tenants that each use an id of their
/// own. The rules, which [`from_patterns`](Self::from_patterns) enforces:
///
/// * A prefix ends after an id (`projects/P/*`, `projects/P/locations/L/*`,
///   `projects/P/locations/L/keyRings/R/*`) or is `projects/*` (every project); `*`
///   appears nowhere else.
/// * The most specific entry decides: an exact name, else the longest prefix.
/// * Two entries with one pattern and different tenant ids are refused, whichever
///   comes first.
/// * An entry without a tenant id may not lie under a prefix that names one: it
///   would silently bring back the opener's id for keys the prefix binds to another.
///
/// The set is what it says: an empty one trusts no key (an opener of service-account
/// messages only needs none). Trusting every key the opener's KMS credentials can use
/// is possible, but only by name: [`dangerous_any_key`](Self::dangerous_any_key).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    exact: Vec<Entry<KeyName>>,
    prefixes: Vec<Entry<String>>,
    any: bool,
}

/// One entry: what it matches, the tenant id it binds, and how it was written (for
/// errors that quote it).
#[derive(Debug, Clone)]
struct Entry<P> {
    pattern: P,
    tenant: Option<String>,
    text: String,
}

/// Why a trust configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// An entry that is neither a key name nor a prefix of key names ending in `/*`.
    #[error("`{entry}` is not a trusted key entry (KEY_NAME or PREFIX/*, then optionally =TENANT_ID): {why}")]
    BadEntry {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two entries for the same keys that bind different tenant ids (or one binds an
    /// id and the other does not).
    #[error("`{first}` and `{second}` trust the same keys for different tenant ids: keep one")]
    Contradicting {
        /// The first entry.
        first: String,
        /// The later one.
        second: String,
    },
    /// An entry without a tenant id under a prefix that names one.
    #[error(
        "`{entry}` names no tenant id but lies under `{broader}`, which binds `{tenant}`: write `{entry}={tenant}` \
         (or the id its producers bind)"
    )]
    TenantNotInherited {
        /// The entry without a tenant id.
        entry: String,
        /// The broader entry.
        broader: String,
        /// The tenant id the broader entry binds.
        tenant: String,
    },
    /// A service account trusted twice with different certificate URLs.
    #[error("service account {signer} is trusted with two certificate URLs: `{first}` and `{second}`")]
    ContradictingSigner {
        /// The account.
        signer: String,
        /// The first URL.
        first: String,
        /// The later one.
        second: String,
    },
    /// A service account entry that is not `EMAIL` or `EMAIL=CERT_URL`.
    #[error("`{0}` is not a trusted signer entry (EMAIL or EMAIL=CERT_URL)")]
    BadSigner(String),
    /// A certificate URL that is not `https` (plain `http` is allowed on loopback
    /// only): on the way, anyone could swap the certificates that messages are
    /// checked against.
    #[error("the certificate URL `{url}` of {signer} must be https (plain http only to a loopback address)")]
    InsecureCertUrl {
        /// The account.
        signer: String,
        /// The URL given.
        url: String,
    },
}

impl TrustedKeys {
    /// Trusts no KMS key.
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts exactly `key`, for the opener's tenant id.
    pub fn only(key: KeyName) -> Self {
        let text = key.to_string();
        Self { exact: vec![Entry { pattern: key, tenant: None, text }], ..Self::default() }
    }

    /// Trusts every KMS key, so that any producer whose key the opener's credentials
    /// can use is accepted: for trials and debugging only. Every binary that makes this
    /// choice warns about it at start-up.
    pub fn dangerous_any_key() -> Self {
        Self { any: true, ..Self::default() }
    }

    /// Parses entries as the `--trusted_kms_key` flag takes them: `NAME`, `PREFIX/*`,
    /// either followed by `=TENANT_ID` (a Tink `gcp-kms://` prefix is taken off), and
    /// refuses a set whose entries contradict each other (see the type's rules).
    pub fn from_patterns<I, S>(patterns: I) -> Result<Self, TrustError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut trusted = Self::default();
        for entry in patterns {
            let text = entry.as_ref();
            let bad = |why| TrustError::BadEntry { entry: text.to_owned(), why };
            let (pattern, tenant) = match text.split_once('=') {
                Some((_, "")) => return Err(bad("the tenant id after `=` is empty")),
                Some((pattern, tenant)) => (pattern, Some(tenant.to_owned())),
                None => (text, None),
            };
            let bare = pattern.strip_prefix(TINK_PREFIX).unwrap_or(pattern);
            match bare.strip_suffix("/*") {
                Some(prefix) => {
                    check_prefix(prefix).map_err(bad)?;
                    let entry = Entry { pattern: format!("{prefix}/"), tenant, text: text.to_owned() };
                    add(&mut trusted.prefixes, entry)?;
                }
                None if bare.contains('*') => return Err(bad("`*` may only end a prefix, as `/*`")),
                None => {
                    let name = bare
                        .parse()
                        .map_err(|_| bad("not a key name (projects/P/locations/L/keyRings/R/cryptoKeys/K)"))?;
                    add(&mut trusted.exact, Entry { pattern: name, tenant, text: text.to_owned() })?;
                }
            }
        }
        trusted.check_tenants_inherited()?;
        Ok(trusted)
    }

    /// Refuses an entry without a tenant id under a prefix that names one.
    fn check_tenants_inherited(&self) -> Result<(), TrustError> {
        let unnamed = self
            .exact
            .iter()
            .filter(|entry| entry.tenant.is_none())
            .map(|entry| (entry.pattern.as_str(), &entry.text))
            .chain(self.prefixes.iter().filter(|entry| entry.tenant.is_none()).map(|e| (e.pattern.as_str(), &e.text)));
        for (pattern, text) in unnamed {
            let broader = self.prefixes.iter().find_map(|prefix| {
                let tenant = prefix.tenant.as_ref()?;
                (pattern != prefix.pattern && pattern.starts_with(prefix.pattern.as_str())).then_some((prefix, tenant))
            });
            if let Some((broader, tenant)) = broader {
                return Err(TrustError::TenantNotInherited {
                    entry: text.clone(),
                    broader: broader.text.clone(),
                    tenant: tenant.clone(),
                });
            }
        }
        Ok(())
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
        self.trust(key).map(|(_, tenant)| tenant.unwrap_or(default))
    }

    /// The entry trusting `key`, as written (`*` for [`dangerous_any_key`](Self::dangerous_any_key)),
    /// and the tenant id producers under it bind: what a KMS budget is kept by, so that
    /// key names made up under a trusted prefix share one.
    pub(crate) fn entry_of<'a>(&'a self, key: &KeyName, default: &'a str) -> Option<(&'a str, &'a str)> {
        self.trust(key).map(|(entry, tenant)| (entry, tenant.unwrap_or(default)))
    }

    /// The most specific entry trusting `key` (its text), and its tenant id if it names
    /// one.
    fn trust(&self, key: &KeyName) -> Option<(&str, Option<&str>)> {
        if let Some(entry) = self.exact.iter().find(|entry| entry.pattern == *key) {
            return Some((&entry.text, entry.tenant.as_deref()));
        }
        let prefix = self
            .prefixes
            .iter()
            .filter(|entry| key.as_str().starts_with(entry.pattern.as_str()))
            .max_by_key(|entry| entry.pattern.len());
        match prefix {
            Some(entry) => Some((&entry.text, entry.tenant.as_deref())),
            None if self.any => Some(("*", None)),
            None => None,
        }
    }
}

/// Adds `entry` unless an entry with its pattern is there: the same tenant id is a
/// harmless repeat, another one a contradiction.
fn add<P: PartialEq>(entries: &mut Vec<Entry<P>>, entry: Entry<P>) -> Result<(), TrustError> {
    match entries.iter().find(|other| other.pattern == entry.pattern) {
        Some(other) if other.tenant == entry.tenant => Ok(()),
        Some(other) => Err(TrustError::Contradicting { first: other.text.clone(), second: entry.text }),
        None => {
            entries.push(entry);
            Ok(())
        }
    }
}

/// Checks what comes before `/*`: `projects`, or the first one to three
/// `COLLECTION/ID` pairs of a key name.
fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix == LITERALS[0] {
        return Ok(());
    }
    let segments: Vec<&str> = prefix.split('/').collect();
    if !segments.len().is_multiple_of(2) || segments.len() > 6 {
        return Err("a prefix ends after a project, location or key ring id (projects/P/*, projects/P/locations/L/*, \
                    projects/P/locations/L/keyRings/R/*), or is projects/*");
    }
    let ids_valid =
        segments.chunks(2).zip(LITERALS).all(|(pair, literal)| pair[0] == literal && is_valid_id(pair[1], literal));
    if !ids_valid {
        return Err("the prefix is not the start of a key name (`*` may only end it, as `/*`)");
    }
    Ok(())
}

/// Checks that `url`, where `signer`'s certificates are published, is `https`, or
/// plain `http` to a loopback address (a test's server).
pub(crate) fn check_cert_url(signer: &str, url: &str) -> Result<(), TrustError> {
    let insecure = || TrustError::InsecureCertUrl { signer: signer.to_owned(), url: url.to_owned() };
    let parsed = reqwest::Url::parse(url).map_err(|_| insecure())?;
    let host = parsed.host_str().unwrap_or_default();
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    let loopback = host == "localhost" || ip.is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(insecure()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/key1";

    fn key(name: &str) -> KeyName {
        name.parse().unwrap()
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
    }

    #[test]
    fn trust_by_exact_name_and_prefix() {
        let other = key("projects/tenant-2/locations/l/keyRings/r/cryptoKeys/k");
        assert!(TrustedKeys::dangerous_any_key().allows(&other));
        assert!(!TrustedKeys::none().allows(&other) && TrustedKeys::none().is_empty());
        assert!(TrustedKeys::from_patterns(Vec::<String>::new()).unwrap().is_empty(), "no pattern trusts no key");
        let exact = TrustedKeys::from_patterns([KEY]).unwrap();
        assert!(exact.allows(&key(KEY)) && !exact.allows(&other));
        let only = TrustedKeys::only(key(KEY));
        assert!(only.allows(&key(KEY)) && !only.allows(&other));
        let prefix = TrustedKeys::from_patterns(["projects/tenant-1/*"]).unwrap();
        assert!(prefix.allows(&key(KEY)) && !prefix.allows(&other));
        let tink = TrustedKeys::from_patterns(["gcp-kms://projects/tenant-1/*"]).unwrap();
        assert!(tink.allows(&key(KEY)) && !tink.allows(&other));
        assert!(TrustedKeys::from_patterns(["projects/*"]).unwrap().allows(&other), "every project, by name");
    }

    #[test]
    fn a_pattern_that_could_never_match_is_refused() {
        // Each of these was accepted before and matched nothing (or not what it says).
        for bad in [
            "projects/*/locations/global/*",
            "projects/*/locations/global/keyRings/r/cryptoKeys/k",
            "projects/tenant-*",
            "projects/t*=x",
            "projects/p/locations/*",
            &format!("{KEY}/*"),
            "projects/p/keyRings/r/*",
            "*",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            "projects/tenant-1/*=",
        ] {
            let error = TrustedKeys::from_patterns([bad]).unwrap_err();
            assert!(matches!(error, TrustError::BadEntry { .. }), "{bad}: {error}");
        }
        for good in ["projects/p/*", "projects/p/locations/l/*", "projects/p/locations/l/keyRings/r/*"] {
            assert!(TrustedKeys::from_patterns([good]).is_ok(), "{good}");
        }
    }

    #[test]
    fn entries_for_the_same_keys_with_different_tenant_ids_are_refused_in_either_order() {
        // Before, the last prefix entry won and the first exact one: which tenant a
        // key bound depended on the order of the flags.
        for (first, second) in [
            ("projects/tenant-2/*=tenant-2", "projects/tenant-2/*=tenant-x"),
            ("projects/tenant-2/*", "projects/tenant-2/*=tenant-2"),
            (&*format!("{KEY}=a"), &*format!("{KEY}=b")),
            (&*format!("{KEY}=a"), &*format!("gcp-kms://{KEY}=b")),
        ] {
            for (one, two) in [(first, second), (second, first)] {
                let error = TrustedKeys::from_patterns([one, two]).unwrap_err();
                assert_eq!(error, TrustError::Contradicting { first: one.to_owned(), second: two.to_owned() });
            }
        }
        // The same entry twice is a repeat, not a contradiction.
        assert!(TrustedKeys::from_patterns(["projects/t/*=t", "projects/t/*=t", KEY, KEY]).is_ok());
    }

    #[test]
    fn an_entry_without_a_tenant_id_under_a_prefix_that_names_one_is_refused() {
        // Before, the exact entry won and silently brought back the opener's tenant id
        // (`tenantKey` in the binaries) for a key the prefix bound to tenant-1.
        let error = TrustedKeys::from_patterns(["projects/tenant-1/*=tenant-1", KEY]).unwrap_err();
        assert!(matches!(&error, TrustError::TenantNotInherited { tenant, .. } if tenant == "tenant-1"), "{error}");
        assert!(error.to_string().contains(&format!("{KEY}=tenant-1")), "the fix is named: {error}");
        let nested = TrustedKeys::from_patterns(["projects/tenant-1/locations/eu/*", "projects/tenant-1/*=t"]);
        assert!(matches!(nested, Err(TrustError::TenantNotInherited { .. })));
        // Naming an id, even another one, is a choice made in the open.
        assert!(TrustedKeys::from_patterns(["projects/tenant-1/*=tenant-1", &format!("{KEY}=tenant-9")]).is_ok());
        // A tenant id under a prefix without one is explicit too.
        assert!(TrustedKeys::from_patterns(["projects/tenant-1/*", &format!("{KEY}=tenant-9")]).is_ok());
    }

    #[test]
    fn certificate_urls_are_https_or_loopback_http() {
        let signer = "a@p.iam.gserviceaccount.com";
        for good in [
            "https://www.googleapis.com/robot/v1/metadata/x509/a%40p",
            "http://127.0.0.1:8080/certs",
            "http://localhost/certs",
            "http://[::1]:9/certs",
            "http://127.1.2.3/certs",
        ] {
            assert_eq!(check_cert_url(signer, good), Ok(()), "{good}");
        }
        for bad in [
            "http://certs.example.com/x",
            "http://10.0.0.1/x",
            "http://localhost.example.com/x",
            "ftp://example.com/x",
            "file:///etc/certs.json",
            "certs.example.com",
            "",
        ] {
            assert!(matches!(check_cert_url(signer, bad), Err(TrustError::InsecureCertUrl { .. })), "{bad}");
        }
    }
}
