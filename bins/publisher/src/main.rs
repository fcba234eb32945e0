//! `publisher`: seals messages under a tenant's KMS key and publishes them to the shared
//! topic. Never publishes a message unprotected.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use bus::flags::KmsFlags;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use envelope::kms::local::Keyring;
use envelope::{Attributes, KeyName, Mode, RotationPolicy, Sealer};
use google_cloud_pubsub::model::Message;
use indicatif::{ProgressBar, ProgressStyle};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng as _;
use tokio::task::JoinSet;

/// Seal messages under a tenant's KMS key and publish them to the shared topic.
///
/// With no `--message` or `--input`, sends the article's run: 10 lorem paragraphs,
/// with a new data key every 5 messages.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    keyring: Option<KeyringCommand>,

    /// `encrypt` (AES-256-GCM, attributes sealed inside) or `sign` (HMAC-SHA256).
    #[arg(long, env = "PUBLISHER_MODE", default_value = "encrypt")]
    mode: PublishMode,

    #[command(flatten)]
    account: bus::flags::AccountFlags,

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
    #[arg(long = "attribute", value_parser = bus::flags::key_value)]
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
            return Ok(name.parse()?);
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
    },
    /// Add a new primary version; older versions still unwrap.
    Rotate {
        /// Key name.
        key: String,
    },
    /// List keys and versions (never their material).
    List,
}

fn keyring(action: KeyringAction, path: PathBuf) -> anyhow::Result<()> {
    let mut keyring = Keyring::load_or_new(&path)?;
    match action {
        KeyringAction::Create { key, if_missing } => {
            let name: KeyName = key.parse()?;
            if if_missing && keyring.list().iter().any(|info| info.name == name) {
                println!("{name} exists");
                return Ok(());
            }
            keyring.create(&name)?;
            keyring.save()?;
            println!("created {name} (version 1) in {}", path.display());
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
                println!("{}  primary={}  versions={}", info.name, info.primary, versions.join(","));
            }
        }
    }
    Ok(())
}

/// What to send.
fn source(cli: &Cli) -> anyhow::Result<Vec<String>> {
    if !cli.message.is_empty() {
        return Ok(cli.message.clone());
    }
    let Some(path) = &cli.input else {
        // A fresh seed per run, so runs differ; lipsum wants rand 0.8's traits, which
        // its own rand_chacha provides.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
        return Ok((0..10).map(|i| lipsum::lipsum_words_with_rng(ChaCha8Rng::seed_from_u64(seed + i), 60)).collect());
    };
    let lines: Vec<String> = if path.as_os_str() == "-" {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()?
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        std::io::BufReader::new(file).lines().collect::<Result<_, _>>()?
    };
    anyhow::ensure!(!lines.is_empty(), "{} holds no lines to send", path.display());
    Ok(lines)
}

async fn publish(cli: Cli) -> anyhow::Result<()> {
    let key_name = cli.key.name()?;
    let topic = bus::names::topic(cli.account.pubsub_project_id.as_deref(), &cli.pubsub_topic)?;
    let messages = source(&cli)?;
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
    let mode = match cli.mode {
        PublishMode::Encrypt => Mode::Encrypt,
        PublishMode::Sign => Mode::Sign,
    };
    let kms = cli.kms.backend(cli.account.service_account.as_deref()).await?;
    let mut sealer = Sealer::new(kms, key_name.clone(), cli.kms.tenant_id.clone(), mode).with_policy(policy);
    let pubsub = bus::PubSub::from_env(cli.account.service_account.as_deref())?;
    pubsub.ensure_topic(&topic).await?;
    let publisher = pubsub.publisher(&topic).await?;
    let attributes: Attributes = cli.attributes.iter().cloned().collect();

    let total = cli.count.unwrap_or(messages.len() as u64);
    let progress = if std::io::stderr().is_terminal() && total >= 100 {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}").expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    tracing::info!(%topic, kms_key = %key_name, %mode, total, "publishing");
    let mut pacing = cli.rate.map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3))));
    let mut in_flight = JoinSet::new();
    let mut failed = 0u64;
    for (index, text) in messages.iter().cycle().take(total as usize).enumerate() {
        if let Some(pacing) = &mut pacing {
            pacing.tick().await;
        }
        let data = Bytes::from(text.clone());
        // KMS is only called when the data key rotates; a transient failure there is
        // retried with backoff, and past the last try the run fails without publishing.
        let sealed = seal_with_retries(&mut sealer, data, &attributes)
            .await
            .with_context(|| format!("cannot seal message {index}"))?;
        let future = publisher.publish(Message::new().set_data(sealed.data).set_attributes(sealed.attributes));
        in_flight.spawn(future);
        while in_flight.len() >= 10_000 {
            failed += report(in_flight.join_next().await, &progress);
        }
    }
    while let Some(result) = in_flight.join_next().await {
        failed += report(Some(result), &progress);
    }
    progress.finish_and_clear();
    tracing::info!(data_keys = sealer.data_keys_made(), published = total - failed, failed, "done");
    anyhow::ensure!(failed == 0, "{failed} of {total} messages could not be published");
    Ok(())
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

/// Prints a message id or the failure; returns 1 for a failure.
fn report(
    result: Option<Result<Result<String, google_cloud_pubsub::error::PublishError>, tokio::task::JoinError>>,
    progress: &ProgressBar,
) -> u64 {
    progress.inc(1);
    match result {
        Some(Ok(Ok(id))) => {
            progress.suspend(|| println!("{id}"));
            0
        }
        Some(Ok(Err(error))) => {
            tracing::error!(%error, "publish failed");
            1
        }
        Some(Err(error)) => {
            tracing::error!(%error, "publish task failed");
            1
        }
        None => 0,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bus::init_logging();
    let mut cli = Cli::parse();
    match cli.keyring.take() {
        Some(KeyringCommand::Keyring { action, keyring: path }) => keyring(action, path),
        None => publish(cli).await,
    }
}
