//! `publisher`: seals messages under a tenant's KMS key and publishes them to the shared
//! topic. Never publishes a message unprotected.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use cli::flags::KmsFlags;
use envelope::kms::KeySign as _;
use envelope::kms::local::{Keyring, LocalKms, Purpose};
use envelope::{AttestBy, Attributes, KeyName, KeyVersionName, RotationPolicy, Sealer};
use google_cloud_pubsub::model::Message;
use indicatif::{ProgressBar, ProgressStyle};

/// Seal messages under a tenant's KMS key and publish them to the shared topic.
///
/// With no `--message` or `--input`, sends the article's run: 10 lorem paragraphs,
/// with a new data key every 5 messages.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    keyring: Option<KeyringCommand>,

    /// `encrypt` (AES-256-GCM, attributes sealed inside), `sign` (HMAC-SHA256) or
    /// `attest` (signatures only this tenant's KMS signing key could have vouched for).
    #[arg(long, env = "PUBLISHER_MODE", default_value = "encrypt")]
    mode: PublishMode,

    /// Attest mode: the KMS signing key version (`EC_SIGN_P256_SHA256`) that certifies
    /// each session key; the key itself is named as for the other modes.
    #[arg(long = "kms_key_version", visible_alias = "kms-key-version", env = "KMS_KEY_VERSION", default_value_t = 1)]
    kms_key_version: u32,

    /// Attest mode: have the KMS sign every message itself (one KMS call per message,
    /// for strict audit) instead of certifying a session key per rotation.
    #[arg(long = "kms_sign_every_message", visible_alias = "kms-sign-every-message")]
    kms_sign_every_message: bool,

    /// Attest mode: sign every message with the `--service_account` key itself
    /// (RSA-SHA256, the article's way), naming the account's public certificates; no KMS.
    #[arg(
        long = "attest_with_service_account",
        visible_alias = "attest-with-service-account",
        requires = "service_account"
    )]
    attest_with_service_account: bool,

    /// Where the account's certificates are published, if not at the key file's
    /// `client_x509_cert_url` (Google's x509 metadata URL).
    #[arg(long = "attest_cert_url", visible_alias = "attest-cert-url", requires = "attest_with_service_account")]
    attest_cert_url: Option<String>,

    #[command(flatten)]
    account: cli::flags::AccountFlags,

    /// The shared topic: an id in `--pubsub_project_id`, or a full name.
    #[arg(long = "pubsub_topic", visible_alias = "pubsub-topic", env = "PUBSUB_TOPIC", default_value = "common-topic")]
    pubsub_topic: String,

    #[command(flatten)]
    key: KeyFlags,

    #[command(flatten)]
    kms: KmsFlags,

    /// A message to send (repeatable).
    #[arg(long, conflicts_with = "input")]
    message: Vec<String>,

    /// Send each line of FILE (or `-` for stdin) as a message.
    #[arg(long)]
    input: Option<PathBuf>,

    /// Send this many messages, cycling through the source.
    #[arg(long)]
    count: Option<u64>,

    /// Messages per second at most (unlimited by default).
    #[arg(long)]
    rate: Option<f64>,

    /// An attribute sent with every message, `key=value` (repeatable).
    #[arg(long = "attribute", value_parser = cli::flags::key_value)]
    attributes: Vec<(String, String)>,

    /// Rotate the data key after this many seconds.
    #[arg(long = "key_max_age_secs", visible_alias = "key-max-age-secs", default_value_t = 100)]
    key_max_age_secs: u64,

    /// Rotate the data key after this many messages (5 for the article's run, 2^20 otherwise).
    #[arg(long = "key_max_messages", visible_alias = "key-max-messages")]
    key_max_messages: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum PublishMode {
    Encrypt,
    Sign,
    Attest,
}

/// The tenant's KMS key, by parts as in the article or whole.
#[derive(clap::Args)]
struct KeyFlags {
    /// Project of the KMS key ring.
    #[arg(long = "kms_project_id", visible_alias = "kms-project-id", env = "KMS_PROJECT_ID")]
    kms_project_id: Option<String>,
    /// Location of the key ring.
    #[arg(long = "kms_location", visible_alias = "kms-location", env = "KMS_LOCATION", default_value = "us-central1")]
    kms_location: String,
    /// Key ring id.
    #[arg(long = "kms_key_ring_id", visible_alias = "kms-key-ring-id", env = "KMS_KEY_RING_ID")]
    kms_key_ring_id: Option<String>,
    /// Key id.
    #[arg(long = "kms_key_id", visible_alias = "kms-key-id", env = "KMS_KEY_ID")]
    kms_key_id: Option<String>,
    /// The whole key name (`projects/.../cryptoKeys/K` or `gcp-kms://...`), instead of the parts.
    #[arg(long = "kms_key", visible_alias = "kms-key", env = "KMS_KEY", conflicts_with_all = ["kms_project_id", "kms_key_ring_id", "kms_key_id"])]
    kms_key: Option<String>,
}

impl KeyFlags {
    fn name(&self) -> anyhow::Result<KeyName> {
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
enum KeyringCommand {
    /// Create a key with a fresh version 1.
    #[command(name = "keyring")]
    Keyring {
        #[command(subcommand)]
        action: KeyringAction,
        /// The keyring file.
        #[arg(long, env = "PUBSUB_ENVELOPE_KEYRING", default_value = "keyring.json", global = true)]
        keyring: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeyringAction {
    /// Create a key (doing nothing if it exists with `--if-missing`).
    Create {
        /// Key name: projects/P/locations/L/keyRings/R/cryptoKeys/K
        key: String,
        /// Succeed without change when the key exists.
        #[arg(long = "if-missing")]
        if_missing: bool,
        /// `encrypt` (a key encryption key, for encrypt and sign modes) or `sign` (a P-256
        /// signing key, for attest mode).
        #[arg(long, default_value = "encrypt")]
        purpose: KeyPurpose,
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
    /// List keys and versions (never their material).
    List,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyPurpose {
    Encrypt,
    Sign,
}

async fn keyring(action: KeyringAction, path: PathBuf) -> anyhow::Result<()> {
    let mut keyring = Keyring::load_or_new(&path)?;
    match action {
        KeyringAction::Create { key, if_missing, purpose } => {
            let name: KeyName = key.parse()?;
            if if_missing && keyring.list().iter().any(|info| info.name == name) {
                println!("{name} exists");
                return Ok(());
            }
            let purpose = match purpose {
                KeyPurpose::Encrypt => Purpose::EncryptDecrypt,
                KeyPurpose::Sign => Purpose::AsymmetricSign,
            };
            keyring.create_for(&name, purpose)?;
            keyring.save()?;
            println!("created {name} (version 1) in {}", path.display());
        }
        KeyringAction::PublicKey { key_version } => {
            let name: KeyVersionName = key_version.parse()?;
            let der = LocalKms::open(&path)?.public_key(&name).await?;
            print!("{}", envelope::public_key_pem(&der));
        }
        KeyringAction::Rotate { key } => {
            let name: KeyName = key.parse()?;
            let version = keyring.rotate(&name)?;
            keyring.save()?;
            println!("rotated {name}: version {version} is primary");
        }
        KeyringAction::List => {
            for info in keyring.list() {
                let versions: Vec<String> = info.versions.iter().map(u32::to_string).collect();
                let purpose = match info.purpose {
                    Purpose::EncryptDecrypt => "encrypt",
                    Purpose::AsymmetricSign => "sign",
                };
                println!("{}  purpose={purpose}  primary={}  versions={}", info.name, info.primary, versions.join(","));
            }
        }
    }
    Ok(())
}

/// Where message texts come from.
enum Texts {
    /// Given lines, cycled until `--count` is reached.
    Cycled(Vec<String>),
    /// Lines of stdin, sent as they arrive, so that `publisher --input -` can sit at the
    /// end of a pipe.
    Stdin(tokio::sync::mpsc::Receiver<std::io::Result<String>>),
}

impl Texts {
    fn from_cli(cli: &Cli) -> anyhow::Result<Self> {
        if !cli.message.is_empty() {
            return Ok(Texts::Cycled(cli.message.clone()));
        }
        let Some(path) = &cli.input else {
            // Ten of the lorem paragraphs in `lorem.txt` (made once with the lipsum crate,
            // kept as data so that no text generator ships in the publisher), drawn
            // afresh each run so that runs differ.
            let corpus: Vec<&str> = include_str!("lorem.txt").lines().collect();
            let paragraphs = rand::seq::index::sample(&mut rand::rng(), corpus.len(), 10).into_iter();
            let paragraphs = paragraphs.map(|i| corpus[i].to_owned());
            return Ok(Texts::Cycled(paragraphs.collect()));
        };
        if path.as_os_str() == "-" {
            return Ok(Texts::Stdin(cli::stdin_lines()));
        }
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let lines: Vec<String> = std::io::BufReader::new(file).lines().collect::<Result<_, _>>()?;
        anyhow::ensure!(!lines.is_empty(), "{} holds no lines to send", path.display());
        Ok(Texts::Cycled(lines))
    }

    /// Messages to send: `--count`, else every given line once; unknown for stdin.
    fn total(&self, count: Option<u64>) -> Option<u64> {
        match self {
            Texts::Cycled(lines) => Some(count.unwrap_or(lines.len() as u64)),
            Texts::Stdin(_) => count,
        }
    }

    async fn get(&mut self, index: u64) -> anyhow::Result<Option<String>> {
        match self {
            Texts::Cycled(lines) => Ok(Some(lines[index as usize % lines.len()].clone())),
            Texts::Stdin(receiver) => Ok(receiver.recv().await.transpose().context("cannot read stdin")?),
        }
    }
}

async fn publish(cli: Cli) -> anyhow::Result<()> {
    let attest = matches!(cli.mode, PublishMode::Attest);
    anyhow::ensure!(!cli.attest_with_service_account || attest, "--attest_with_service_account needs --mode attest");
    anyhow::ensure!(!cli.kms_sign_every_message || attest, "--kms_sign_every_message applies to --mode attest only");
    let topic = bus::names::topic(cli.account.pubsub_project_id.as_deref(), &cli.pubsub_topic)?;
    let mut texts = Texts::from_cli(&cli)?;
    let article_run = cli.message.is_empty() && cli.input.is_none();
    let policy = RotationPolicy {
        max_age: Duration::from_secs(cli.key_max_age_secs),
        max_messages: cli.key_max_messages.unwrap_or(if article_run {
            5
        } else {
            RotationPolicy::default().max_messages
        }),
        ..RotationPolicy::default()
    };
    let account = cli.account.account();
    let kms = cli.kms.backend(&account).await?;
    let tenant_id = cli.kms.tenant_id.clone();
    let (signer, sealer) = match cli.mode {
        PublishMode::Attest if cli.attest_with_service_account => {
            let signer = service_account_signer(&cli, &account)?;
            (signer.email().to_owned(), Sealer::service_account(signer))
        }
        PublishMode::Attest => {
            let version = KeyVersionName::new(cli.key.name()?, cli.kms_key_version)?;
            let by = if cli.kms_sign_every_message { AttestBy::KmsEachMessage } else { AttestBy::SessionKey };
            (version.to_string(), Sealer::attest(kms.clone(), version, tenant_id, by))
        }
        PublishMode::Encrypt => {
            let key = cli.key.name()?;
            (key.to_string(), Sealer::encrypt(kms.clone(), key, tenant_id))
        }
        PublishMode::Sign => {
            let key = cli.key.name()?;
            (key.to_string(), Sealer::sign(kms.clone(), key, tenant_id))
        }
    };
    let mode = sealer.mode();
    let mut sealer = sealer.with_policy(policy);
    let pubsub = bus::PubSub::from_env(|| account.credentials())?;
    pubsub.ensure_topic(&topic).await?;
    let attributes: Attributes = cli.attributes.iter().cloned().collect();

    let total = texts.total(cli.count);
    let progress = match total {
        Some(total) if std::io::stderr().is_terminal() && total >= 100 => {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}");
            bar.set_style(style.expect("valid template"));
            bar
        }
        _ => ProgressBar::hidden(),
    };
    // One line per message id; buffered unless someone is watching, as a write per
    // line cost more than the sealing.
    let interactive = std::io::stdout().is_terminal();
    let mut ids = std::io::BufWriter::new(std::io::stdout());
    let mut sender = bus::send::Sender::new(pubsub.publisher(&topic).await?, cli.rate, |result| {
        progress.inc(1);
        match result {
            Ok(id) if interactive => progress.suspend(|| println!("{id}")),
            Ok(id) => writeln!(ids, "{id}").unwrap_or_else(|error| tracing::warn!(%error, "cannot print a message id")),
            Err(error) => tracing::error!(%error, "publish failed"),
        }
    });
    tracing::info!(%topic, %signer, %mode, total, "publishing");
    let mut sent = 0;
    while total.is_none_or(|total| sent < total) {
        let Some(text) = texts.get(sent).await? else { break };
        // KMS is only called when the data key rotates; a transient failure there is
        // retried with backoff, and past the last try the run fails without publishing.
        let sealed = seal_with_retries(&mut sealer, Bytes::from(text), &attributes)
            .await
            .with_context(|| format!("cannot seal message {sent}"))?;
        sender.send(Message::new().set_data(sealed.data).set_attributes(sealed.attributes)).await;
        sent += 1;
    }
    let failed = sender.finish().await;
    ids.flush()?;
    progress.finish_and_clear();
    tracing::info!(
        data_keys = sealer.data_keys_made(),
        kms_calls = kms.calls(),
        published = sent - failed,
        failed,
        "done"
    );
    anyhow::ensure!(failed == 0, "{failed} of {sent} messages could not be published");
    Ok(())
}

/// The `--service_account` key, to sign with in its own name.
fn service_account_signer(cli: &Cli, account: &cli::flags::Account) -> anyhow::Result<envelope::ServiceAccountSigner> {
    let json = account.key_file()?.context("--attest_with_service_account needs --service_account")?;
    let path = account.key_file_path().expect("a key file has a path").display();
    let signer = envelope::ServiceAccountSigner::from_json(json).with_context(|| path.to_string())?;
    Ok(match &cli.attest_cert_url {
        Some(url) => signer.with_cert_url(url),
        None => signer,
    })
}

/// Seals, retrying transient KMS failures with exponential backoff (200 ms doubling,
/// 5 retries); a permanent failure, or the last transient one, is returned.
async fn seal_with_retries(
    sealer: &mut Sealer,
    data: Bytes,
    attributes: &Attributes,
) -> Result<envelope::Sealed, envelope::SealError> {
    let mut delays = ExponentialBuilder::default().with_min_delay(Duration::from_millis(200)).with_max_times(5).build();
    loop {
        match sealer.seal(data.clone(), attributes.clone()).await {
            Err(error) if error.is_transient() => match delays.next() {
                Some(delay) => {
                    tracing::warn!(%error, ?delay, "KMS failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            },
            result => return result,
        }
    }
}

// Publishing is allocation-heavy (the Google client copies each message into its
// protobuf batch); mimalloc halves what glibc's allocator spent on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let mut cli = Cli::parse();
    match cli.keyring.take() {
        Some(KeyringCommand::Keyring { action, keyring: path }) => keyring(action, path).await,
        None => publish(cli).await,
    }
}
