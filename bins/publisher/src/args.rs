//! The publisher's command line, in the article's spelling; `main` only dispatches on it.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};
use cli::flags::KmsFlags;
use envelope::kms::local::Purpose;
use envelope::{KeyName, Mode};

/// Seal messages under a tenant's KMS key and publish them to the shared topic.
///
/// With no `--message` or `--input`, sends the article's run: 10 lorem paragraphs,
/// with a new data key every 5 messages.
#[derive(Parser)]
#[command(name = "publisher", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) keyring: Option<KeyringCommand>,

    #[command(flatten)]
    pub(crate) common: cli::flags::CommonFlags,

    /// `encrypt` (AES-256-GCM, attributes sealed inside), `sign` (HMAC-SHA256) or
    /// `attest` (signatures only this tenant's KMS signing key could have vouched for).
    #[arg(long, env = "PUBSUB_ENVELOPE_SEAL_MODE", default_value = "encrypt", value_parser = mode_parser())]
    pub(crate) mode: Mode,

    /// Attest mode: the KMS signing key version (`EC_SIGN_P256_SHA256`) that certifies
    /// each session key; the key itself is named as for the other modes.
    #[arg(
        long = "kms_key_version",
        visible_alias = "kms-key-version",
        env = "PUBSUB_ENVELOPE_KMS_KEY_VERSION",
        default_value_t = 1
    )]
    pub(crate) kms_key_version: u32,

    /// Attest mode: have the KMS sign every message itself (one KMS call per message,
    /// for strict audit) instead of certifying a session key per rotation.
    #[arg(long = "kms_sign_every_message", visible_alias = "kms-sign-every-message")]
    pub(crate) kms_sign_every_message: bool,

    /// Attest mode: sign every message with the `--service_account` key itself
    /// (RSA-SHA256, the article's way), naming the account's public certificates; no KMS.
    #[arg(
        long = "attest_with_service_account",
        visible_alias = "attest-with-service-account",
        requires = "service_account"
    )]
    pub(crate) attest_with_service_account: bool,

    /// Where the account's certificates are published, if not at the key file's
    /// `client_x509_cert_url` (Google's x509 metadata URL).
    #[arg(long = "attest_cert_url", visible_alias = "attest-cert-url", requires = "attest_with_service_account")]
    pub(crate) attest_cert_url: Option<String>,

    #[command(flatten)]
    pub(crate) account: cli::flags::AccountFlags,

    /// The shared topic: an id in `--pubsub_project_id`, or a full name.
    #[arg(
        long = "pubsub_topic",
        visible_alias = "pubsub-topic",
        env = "PUBSUB_ENVELOPE_BUS_TOPIC",
        default_value = "common-topic"
    )]
    pub(crate) pubsub_topic: String,

    #[command(flatten)]
    pub(crate) key: KeyFlags,

    #[command(flatten)]
    pub(crate) kms: KmsFlags,

    /// A message to send (repeatable).
    #[arg(long, conflicts_with = "input")]
    pub(crate) message: Vec<String>,

    /// Send each line of FILE (or `-` for stdin) as a message.
    #[arg(long)]
    pub(crate) input: Option<PathBuf>,

    /// Send this many messages, cycling through the source.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,

    /// Messages per second at most, at least 0.001 (unlimited by default).
    #[arg(long, value_parser = cli::flags::rate)]
    pub(crate) rate: Option<f64>,

    /// An attribute sent with every message, `key=value` (repeatable).
    #[arg(long = "attribute", value_parser = cli::flags::key_value)]
    pub(crate) attributes: Vec<(String, String)>,

    /// Rotate the data key after this many seconds (at most 86,400). In attest mode a
    /// session certificate lives this long plus 60 s, and consumers refuse certificates
    /// longer than 3,660 s unless told otherwise (--max_certificate_lifetime_secs).
    #[arg(long = "key_max_age_secs", visible_alias = "key-max-age-secs", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=envelope::limits::MAX_KEY_AGE.as_secs()))]
    pub(crate) key_max_age_secs: u64,

    /// Rotate the data key after this many messages (5 for the article's run, 2^20
    /// otherwise; at most 2^32, what AES-GCM with random nonces allows).
    #[arg(long = "key_max_messages", visible_alias = "key-max-messages", value_parser = clap::value_parser!(u64).range(1..=envelope::limits::MAX_KEY_MESSAGES))]
    pub(crate) key_max_messages: Option<u64>,

    /// Data keys (or attest session keys) wrapped ahead of need, at most: that many KMS
    /// calls in flight, so that a rotation never waits on the KMS while it keeps up.
    /// Only while keys are used up by message count; at most this many go unused when
    /// the run ends. `0`: wrap each key when it is needed.
    /// At most 1,024: each is a KMS call in flight, and Cloud KMS's default quota is
    /// about 1,000 calls a second.
    #[arg(long = "keys_ahead", visible_alias = "keys-ahead", default_value_t = 16, value_parser = clap::value_parser!(u16).range(0..=envelope::limits::MAX_KEYS_AHEAD as i64))]
    pub(crate) keys_ahead: u16,
}

/// The tenant's KMS key, by parts as in the article or whole.
#[derive(clap::Args)]
pub(crate) struct KeyFlags {
    /// Project of the KMS key ring.
    #[arg(long = "kms_project_id", visible_alias = "kms-project-id", env = "PUBSUB_ENVELOPE_KMS_PROJECT_ID")]
    pub(crate) kms_project_id: Option<String>,
    /// Location of the key ring.
    #[arg(
        long = "kms_location",
        visible_alias = "kms-location",
        env = "PUBSUB_ENVELOPE_KMS_LOCATION",
        default_value = "us-central1"
    )]
    pub(crate) kms_location: String,
    /// Key ring id.
    #[arg(long = "kms_key_ring_id", visible_alias = "kms-key-ring-id", env = "PUBSUB_ENVELOPE_KMS_KEY_RING_ID")]
    pub(crate) kms_key_ring_id: Option<String>,
    /// Key id.
    #[arg(long = "kms_key_id", visible_alias = "kms-key-id", env = "PUBSUB_ENVELOPE_KMS_KEY_ID")]
    pub(crate) kms_key_id: Option<String>,
    /// The whole key name (`projects/.../cryptoKeys/K` or `gcp-kms://...`), instead of the parts.
    #[arg(long = "kms_key", visible_alias = "kms-key", env = "PUBSUB_ENVELOPE_KMS_KEY", conflicts_with_all = ["kms_project_id", "kms_key_ring_id", "kms_key_id"])]
    pub(crate) kms_key: Option<String>,
}

impl KeyFlags {
    pub(crate) fn name(&self) -> anyhow::Result<KeyName> {
        if let Some(name) = &self.kms_key {
            return Ok(KeyName::from_uri_or_name(name)?);
        }
        match (&self.kms_project_id, &self.kms_key_ring_id, &self.kms_key_id) {
            (Some(project), Some(ring), Some(key)) => Ok(KeyName::from_parts(project, &self.kms_location, ring, key)?),
            _ => anyhow::bail!("name the KMS key: --kms_key, or --kms_project_id, --kms_key_ring_id and --kms_key_id"),
        }
    }
}

/// Manage a local keyring file (`--kms local:PATH`).
#[derive(Subcommand)]
pub(crate) enum KeyringCommand {
    /// Manage the offline keyring file that `--kms local:PATH` reads: create, rotate and
    /// list keys, print a signing key's public key.
    #[command(name = "keyring")]
    Keyring {
        #[command(subcommand)]
        action: KeyringAction,
        /// The keyring file, as the other commands name it: `local:PATH`
        /// (`keyring.json` by default).
        #[arg(long = "kms", env = "PUBSUB_ENVELOPE_KMS", global = true)]
        kms: Option<cli::flags::KmsChoice>,
        /// The keyring file (the older spelling; wins over `--kms`).
        #[arg(long, env = "PUBSUB_ENVELOPE_KEYRING", global = true)]
        keyring: Option<PathBuf>,
    },
}

impl KeyringCommand {
    /// The keyring file the flags name: `--keyring`, else `--kms local:PATH`, else
    /// `keyring.json`; an error for `--kms gcp`, which is no file.
    pub(crate) fn path(keyring: Option<PathBuf>, kms: Option<cli::flags::KmsChoice>) -> anyhow::Result<PathBuf> {
        match (keyring, kms) {
            (Some(path), _) => Ok(path),
            (None, Some(cli::flags::KmsChoice::Local(path))) => Ok(path),
            (None, None) => Ok(PathBuf::from("keyring.json")),
            (None, Some(cli::flags::KmsChoice::Gcp)) => anyhow::bail!(
                "`publisher keyring` manages a local keyring file, and --kms (or PUBSUB_ENVELOPE_KMS) names Cloud \
                 KMS: manage Cloud KMS keys with `gcloud kms` (scripts/gcp-setup.sh), or give --kms local:PATH"
            ),
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum KeyringAction {
    /// Create a key (doing nothing if it exists with `--if-missing`).
    Create {
        /// Key name: projects/P/locations/L/keyRings/R/cryptoKeys/K
        key: String,
        /// Succeed without change when the key exists.
        #[arg(long = "if-missing")]
        if_missing: bool,
        /// `encrypt` (a key encryption key, for encrypt and sign modes) or `sign` (a P-256
        /// signing key, for attest mode).
        #[arg(long, default_value = "encrypt", value_parser = purpose_parser())]
        purpose: Purpose,
    },
    /// Print a signing key version's public key (PEM), for `--trusted_public_key`.
    PublicKey {
        /// Key version name: projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V
        key_version: String,
    },
    /// Add a new primary version; older versions still unwrap.
    Rotate {
        /// Key name.
        key: String,
    },
    /// Add a new version without making it primary (Tink's `add-key`): promote it once
    /// every consumer runs with a keyring that has it.
    AddVersion {
        /// Key name.
        key: String,
    },
    /// Make an enabled version the primary, the one new wraps use.
    Promote {
        /// Key name.
        key: String,
        /// The version.
        #[arg(long)]
        version: u32,
    },
    /// Disable a version: messages under it are refused until it is enabled again.
    Disable {
        /// Key name.
        key: String,
        /// The version (not the primary).
        #[arg(long)]
        version: u32,
    },
    /// Enable a disabled version again.
    Enable {
        /// Key name.
        key: String,
        /// The version.
        #[arg(long)]
        version: u32,
    },
    /// Destroy a version: its material is erased, and messages under it can never be
    /// opened again.
    Destroy {
        /// Key name.
        key: String,
        /// The version (not the primary).
        #[arg(long)]
        version: u32,
        /// Confirm: destroying cannot be undone.
        #[arg(long, required = true)]
        yes: bool,
    },
    /// List keys and versions with their states (never their material).
    List,
}

/// `--mode`: the envelope's own modes, by their names.
fn mode_parser() -> impl clap::builder::TypedValueParser<Value = Mode> {
    let modes = [Mode::Encrypt, Mode::Sign, Mode::Attest];
    clap::builder::PossibleValuesParser::new(modes.map(Mode::as_str))
        .map(move |name| modes.into_iter().find(|mode| mode.as_str() == name).expect("a possible value"))
}

/// `--purpose`: the keyring's two purposes, by the mode names they serve.
fn purpose_parser() -> impl clap::builder::TypedValueParser<Value = Purpose> {
    clap::builder::PossibleValuesParser::new(["encrypt", "sign"])
        .map(|name| if name == "sign" { Purpose::AsymmetricSign } else { Purpose::EncryptDecrypt })
}
