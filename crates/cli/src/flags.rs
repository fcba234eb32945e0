//! Flags shared by the binaries.
//!
//! Each flag takes the article's spelling (`--tenant_id`) and kebab case
//! (`--tenant-id`), and an environment variable, as `--help` shows.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::Extensions;
use bus::credentials::Origin;
use envelope::kms::gcp::{CredentialSource, GcpKms};
use envelope::kms::local::LocalKms;
use envelope::kms::{Counted, Kms};
use google_cloud_auth::credentials::{self, Credentials, service_account};
use zeroize::Zeroizing;

/// What every binary takes: `--log_format` and `--generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonFlags {
    #[command(flatten)]
    pub log: crate::logging::LogFlags,
    #[command(flatten)]
    pub generate: crate::generate::GenerateFlags,
}

impl CommonFlags {
    /// Handles `--generate` for `C`'s command (returning `false`: the caller exits),
    /// else sets up logging (returning `true`: run).
    pub fn start<C: clap::CommandFactory>(&self) -> anyhow::Result<bool> {
        if self.generate.write_if_asked::<C>()? {
            return Ok(false);
        }
        self.log.init();
        Ok(true)
    }
}

/// Credentials, and the project of names given as short ids, in the article's spelling.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountFlags {
    /// Service-account key file for Pub/Sub and Cloud KMS (else Application Default Credentials).
    #[arg(long = "service_account", visible_alias = "service-account", env = "PUBSUB_ENVELOPE_SERVICE_ACCOUNT")]
    pub service_account: Option<PathBuf>,

    /// Project of the topic or subscription when given as a short id.
    #[arg(long = "pubsub_project_id", visible_alias = "pubsub-project-id", env = "GOOGLE_CLOUD_PROJECT")]
    pub pubsub_project_id: Option<String>,
}

impl AccountFlags {
    /// The account these flags name, its key file not read yet.
    pub fn account(&self) -> Account {
        Account::new(self.service_account.clone())
    }
}

/// Who a process is to Google: a service-account key file, or Application Default
/// Credentials. The key file is read once, and its credentials built once, for every
/// client of the process (Pub/Sub, Cloud KMS) and for attest signing.
pub struct Account {
    path: Option<PathBuf>,
    key_file: OnceLock<Zeroizing<String>>,
    credentials: OnceLock<Credentials>,
}

impl Account {
    /// The account of `service_account` (a key file), or Application Default Credentials.
    pub fn new(service_account: Option<PathBuf>) -> Self {
        Self { path: service_account, key_file: OnceLock::new(), credentials: OnceLock::new() }
    }

    /// Where the credentials come from.
    pub fn origin(&self) -> Origin {
        match &self.path {
            Some(path) => Origin::KeyFile(path.clone()),
            None => Origin::ApplicationDefault,
        }
    }

    /// The key file's path, if one was given.
    pub fn key_file_path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The key file's text (zeroized when dropped), read on first use.
    pub fn key_file(&self) -> anyhow::Result<Option<&str>> {
        let Some(path) = &self.path else { return Ok(None) };
        if self.key_file.get().is_none() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read service account file {}", path.display()))?;
            _ = self.key_file.set(Zeroizing::new(text));
        }
        Ok(self.key_file.get().map(|text| text.as_str()))
    }

    /// Credentials for Google's clients: the key file's, else Application Default
    /// Credentials; built on first use.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        if let Some(credentials) = self.credentials.get() {
            return Ok(credentials.clone());
        }
        let built = match self.key_file()? {
            Some(text) => {
                let path = self.path.as_ref().expect("a key file has a path").display();
                let json = serde_json::from_str(text).with_context(|| format!("{path} is not JSON"))?;
                service_account::Builder::new(json)
                    .build()
                    .with_context(|| format!("{path} is not a service account key"))?
            }
            None => credentials::Builder::default().build().context(bus::NO_CREDENTIALS)?,
        };
        Ok(self.credentials.get_or_init(|| built).clone())
    }
}

impl bus::credentials::Source for Account {
    fn origin(&self) -> Origin {
        Account::origin(self)
    }

    fn credentials(&self) -> anyhow::Result<Credentials> {
        Account::credentials(self)
    }
}

/// Which KMS backend wraps and unwraps data keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsChoice {
    /// Cloud KMS.
    Gcp,
    /// A local keyring file.
    Local(PathBuf),
}

impl FromStr for KmsChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            None if text == "gcp" => Ok(KmsChoice::Gcp),
            Some(("local", path)) if !path.is_empty() => Ok(KmsChoice::Local(path.into())),
            _ => Err(format!("`{text}` is neither `gcp` nor `local:PATH`")),
        }
    }
}

/// How to reach the KMS, and for which tenant.
#[derive(Debug, Clone, clap::Args)]
pub struct KmsFlags {
    /// Key management: `gcp` for Cloud KMS, or `local:PATH` for an offline keyring file.
    #[arg(long = "kms", env = "PUBSUB_ENVELOPE_KMS", default_value = "local:keyring.json")]
    pub kms: KmsChoice,

    /// Another Cloud KMS endpoint, such as a local fake of its REST API.
    #[arg(long = "kms_endpoint", visible_alias = "kms-endpoint", env = "PUBSUB_ENVELOPE_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,

    /// Deadline of each Cloud KMS call, in seconds (1 to 600).
    #[arg(
        long = "kms_timeout_secs",
        visible_alias = "kms-timeout-secs",
        env = "PUBSUB_ENVELOPE_KMS_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=envelope::limits::MAX_KMS_TIMEOUT.as_secs())
    )]
    pub kms_timeout_secs: u64,

    /// Milliseconds added to every call of the local backend, to stand in for a remote
    /// KMS in benchmarks (at most 60,000).
    #[arg(
        long = "local_kms_latency_ms",
        visible_alias = "local-kms-latency-ms",
        env = "PUBSUB_ENVELOPE_LOCAL_KMS_LATENCY_MS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=envelope::limits::MAX_LOCAL_KMS_LATENCY.as_millis() as u64),
        hide_short_help = true
    )]
    pub local_kms_latency_ms: u64,

    /// Tenant id bound into every KMS wrap as additional authenticated data (and named
    /// by attest certificates). Consumers: the id of trusted keys whose
    /// `--trusted_kms_key` entry names none.
    #[arg(long = "tenant_id", visible_aliases = ["tenant-id", "tenantID"], env = "PUBSUB_ENVELOPE_TENANT_ID", default_value = envelope::DEFAULT_TENANT_ID)]
    pub tenant_id: String,
}

impl KmsFlags {
    /// Builds the chosen backend, counting its calls. Cloud KMS uses the `account`'s
    /// credentials; a custom endpoint gets anonymous credentials.
    pub async fn backend(&self, account: &Account) -> anyhow::Result<Arc<Counted<Arc<dyn Kms>>>> {
        Ok(Arc::new(Counted::new(self.uncounted_backend(account).await?)))
    }

    async fn uncounted_backend(&self, account: &Account) -> anyhow::Result<Arc<dyn Kms>> {
        match &self.kms {
            KmsChoice::Local(path) => {
                let kms = LocalKms::open(path).with_context(|| {
                    if path.exists() {
                        format!("cannot use the local keyring {}", path.display())
                    } else {
                        format!(
                            "there is no keyring at {} (make one with `publisher keyring --keyring {} create KEY`, \
                             or name another with --kms local:PATH)",
                            path.display(),
                            path.display()
                        )
                    }
                })?;
                Ok(Arc::new(kms.with_latency(Duration::from_millis(self.local_kms_latency_ms))))
            }
            KmsChoice::Gcp => {
                let mut builder = GcpKms::builder().timeout(Duration::from_secs(self.kms_timeout_secs));
                builder = match &self.kms_endpoint {
                    Some(endpoint) => builder.endpoint(endpoint).credentials(CredentialSource::Anonymous),
                    None => {
                        let credentials = account.credentials()?;
                        first_token(&credentials, &account.origin()).await?;
                        builder.credentials(CredentialSource::Credentials(credentials))
                    }
                };
                Ok(Arc::new(builder.build().await?))
            }
        }
    }
}

/// Asks `credentials` for a token once, at start-up, within [`bus::PROBE_DEADLINE`].
/// Without it, missing credentials first show at the first KMS call, as a transient
/// failure retried for seconds (or, in the pipeline, for ever) that names no login.
async fn first_token(credentials: &Credentials, origin: &Origin) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + bus::PROBE_DEADLINE;
    loop {
        let error = match tokio::time::timeout_at(deadline, credentials.headers(Extensions::new())).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => anyhow::bail!(
                "Cloud KMS: no credentials within {} s: check the network (and HTTPS_PROXY), and the credentials \
                 (`gcloud auth application-default login`, or --service_account KEY.json)",
                bus::PROBE_DEADLINE.as_secs()
            ),
        };
        // A metadata server that is starting (GKE's, as a pod starts) may answer if asked
        // again; off Google Cloud with nothing set up, nothing will.
        let hopeless = !error.is_transient()
            || (*origin == Origin::ApplicationDefault
                && bus::credentials::only_metadata_server()
                && !on_google_cloud().await);
        if hopeless || tokio::time::Instant::now() + bus::PROBE_RETRY >= deadline {
            return Err(bus::credentials::refused(origin, bus::credentials::OFFLINE_KMS, &error));
        }
        tracing::debug!(%error, "no token yet; asking again");
        tokio::time::sleep(bus::PROBE_RETRY).await;
    }
}

/// Whether this machine has a Google Cloud metadata server: `GCE_METADATA_HOST` names
/// one, or `metadata.google.internal` resolves (within a second).
async fn on_google_cloud() -> bool {
    if std::env::var_os("GCE_METADATA_HOST").is_some() {
        return true;
    }
    let lookup = tokio::net::lookup_host("metadata.google.internal:80");
    match tokio::time::timeout(Duration::from_secs(1), lookup).await {
        Ok(Ok(mut addresses)) => addresses.next().is_some(),
        _ => false,
    }
}

/// Which KMS keys a consumer accepts messages from.
///
/// Nothing is trusted unless named: at least one of `--trusted_kms_key`,
/// `--trusted_signer` or `--dangerous_trust_any_kms_key` is required
/// ([`require`](Self::require)), and a service account alone trusts no KMS key.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustFlags {
    /// A KMS key to accept, or a prefix ending in `/*` (repeatable), optionally followed
    /// by `=TENANT_ID`, the tenant id that key's producers bind (else `--tenant_id`): one
    /// pipeline serves tenants with ids of their own. No KMS key is trusted unless named
    /// here (or by --dangerous_trust_any_kms_key).
    #[arg(
        long = "trusted_kms_key",
        visible_alias = "trusted-kms-key",
        env = "PUBSUB_ENVELOPE_TRUSTED_KMS_KEYS",
        value_delimiter = ','
    )]
    pub trusted_kms_key: Vec<String>,

    /// Accept messages under ANY KMS key these credentials can use: for trials only.
    /// Every tenant on the bus (and anyone with publish rights whose key the
    /// credentials can use) is then counted.
    #[arg(
        long = "dangerous_trust_any_kms_key",
        visible_alias = "dangerous-trust-any-kms-key",
        env = "PUBSUB_ENVELOPE_DANGEROUS_TRUST_ANY_KMS_KEY",
        conflicts_with = "trusted_kms_key"
    )]
    pub dangerous_trust_any_kms_key: bool,

    /// Refuse messages sealed longer ago than this (e.g. `5m`, `1h`; at most 31 days):
    /// stale messages and old ones published again. Off by default.
    #[arg(
        long = "max_message_age",
        visible_alias = "max-message-age",
        env = "PUBSUB_ENVELOPE_MAX_MESSAGE_AGE",
        value_parser = max_message_age
    )]
    pub max_message_age: Option<Duration>,

    /// Attest mode: refuse session certificates valid for longer than this many seconds
    /// (`certificate_lifetime_too_long`). A certificate lives as long as its producer's
    /// `--key_max_age_secs` plus 60 s; this caps how long a stolen session key signs,
    /// whatever the producer chose.
    #[arg(
        long = "max_certificate_lifetime_secs",
        visible_alias = "max-certificate-lifetime-secs",
        env = "PUBSUB_ENVELOPE_MAX_CERTIFICATE_LIFETIME_SECS",
        default_value_t = envelope::limits::DEFAULT_MAX_CERTIFICATE_LIFETIME.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=envelope::limits::MAX_CERTIFICATE_LIFETIME.as_secs())
    )]
    pub max_certificate_lifetime_secs: u64,

    /// KMS calls that each trust entry's messages may have refused (junk wrapped keys,
    /// made-up key versions) before its data keys not yet cached are refused without a
    /// call (`kms_budget_exhausted`, dead-lettered); one more each second. Genuine
    /// unwraps cost nothing, however fast producers rotate.
    #[arg(
        long = "kms_failure_budget",
        visible_alias = "kms-failure-budget",
        env = "PUBSUB_ENVELOPE_KMS_FAILURE_BUDGET",
        default_value_t = envelope::KmsBudget::default().failures,
        value_parser = clap::value_parser!(u64).range(1..=envelope::limits::MAX_KMS_FAILURE_BUDGET)
    )]
    pub kms_failure_budget: u64,

    /// KMS calls (unwraps, public-key fetches) in flight at most: a burst of new keys
    /// waits here rather than spending the project's KMS quota at once.
    #[arg(
        long = "kms_max_in_flight",
        visible_alias = "kms-max-in-flight",
        env = "PUBSUB_ENVELOPE_KMS_MAX_IN_FLIGHT",
        default_value_t = envelope::KmsBudget::default().max_in_flight,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=envelope::limits::MAX_KMS_IN_FLIGHT as u64)
    )]
    pub kms_max_in_flight: usize,

    /// Attest mode: `KEY_VERSION=FILE.pem`, the public key of that KMS key version (as
    /// `publisher keyring public-key` or Cloud KMS prints it; repeatable). Once any is
    /// given, only the pinned versions verify and no public key is fetched from the KMS.
    #[arg(
        long = "trusted_public_key",
        visible_alias = "trusted-public-key",
        env = "PUBSUB_ENVELOPE_TRUSTED_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    pub trusted_public_key: Vec<String>,

    /// Attest mode: accept messages signed by this service account (`EMAIL`, its
    /// certificates at Google's x509 metadata URL, or `EMAIL=CERT_URL`; repeatable).
    #[arg(
        long = "trusted_signer",
        visible_alias = "trusted-signer",
        env = "PUBSUB_ENVELOPE_TRUSTED_SIGNERS",
        value_delimiter = ','
    )]
    pub trusted_signer: Vec<String>,
}

impl TrustFlags {
    /// Ends the process with a usage error (exit 2) when nothing is trusted, naming both
    /// choices: the article's command lines had no trust flag and trusted every key,
    /// which on a shared bus counts any tenant, or anyone whose key the credentials can
    /// use. Not a required clap group, so that `--generate` and `--help` need none. A
    /// trust entry that contradicts another, or a certificate URL that is not https, is
    /// a usage error too, with the library's reason.
    pub fn require<C: clap::CommandFactory>(&self) {
        let usage = |kind, message: String| C::command().error(kind, message).exit();
        if self.trusted_kms_key.is_empty() && self.trusted_signer.is_empty() && !self.dangerous_trust_any_kms_key {
            usage(
                clap::error::ErrorKind::MissingRequiredArgument,
                "no KMS key is trusted: name the keys whose messages to accept with --trusted_kms_key KEY \
                 (or a prefix, projects/TENANT_PROJECT/*), or accept every key these credentials can use with \
                 --dangerous_trust_any_kms_key (for trials only)"
                    .to_owned(),
            );
        }
        if let Err(error) = envelope::TrustedKeys::from_patterns(&self.trusted_kms_key) {
            usage(clap::error::ErrorKind::ValueValidation, format!("--trusted_kms_key: {error}"));
        }
        if let Err(error) = self.trusted_signers() {
            usage(clap::error::ErrorKind::ValueValidation, format!("--trusted_signer: {error}"));
        }
    }

    /// The trusted set the flags describe: the keys `--trusted_kms_key` names (none
    /// without it), or every key with `--dangerous_trust_any_kms_key`, which is logged
    /// as a warning. An entry that trusts every project (`projects/*`) warns too.
    pub fn trusted_keys(&self) -> anyhow::Result<envelope::TrustedKeys> {
        if self.dangerous_trust_any_kms_key {
            tracing::warn!(
                "--dangerous_trust_any_kms_key: messages under ANY KMS key these credentials can use will be accepted"
            );
            return Ok(envelope::TrustedKeys::dangerous_any_key());
        }
        for entry in self.trusted_kms_key.iter().filter(|entry| trusts_every_project(entry)) {
            tracing::warn!(
                entry = %crate::escape::Escaped(entry),
                "--trusted_kms_key trusts every project's keys: any tenant whose key these credentials can use \
                 will be accepted; name each tenant's project instead (projects/TENANT_PROJECT/*)"
            );
        }
        Ok(envelope::TrustedKeys::from_patterns(&self.trusted_kms_key)?)
    }

    /// The public keys given with `--trusted_public_key`, read and parsed.
    pub fn pinned_public_keys(&self) -> anyhow::Result<Vec<envelope::TrustedPublicKey>> {
        self.trusted_public_key
            .iter()
            .map(|entry| {
                let (version, path) = entry
                    .split_once('=')
                    .with_context(|| format!("--trusted_public_key `{entry}` is not KEY_VERSION=FILE.pem"))?;
                let version = envelope::KeyVersionName::from_uri_or_name(version)?;
                let pem = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
                envelope::TrustedPublicKey::from_pem(version, &pem).with_context(|| path.to_owned())
            })
            .collect()
    }

    /// An opener builder for `tenant_id` with everything these flags say, accepting
    /// `modes`, unwrapping and fetching public keys through `kms`.
    pub fn opener(
        &self,
        kms: Arc<dyn Kms>,
        tenant_id: &str,
        modes: &[envelope::Mode],
    ) -> anyhow::Result<envelope::OpenerBuilder> {
        Ok(envelope::Opener::builder(tenant_id, self.trusted_keys()?)
            .kms(kms)
            .max_age(self.max_message_age)
            .max_certificate_lifetime(Duration::from_secs(self.max_certificate_lifetime_secs))
            .kms_budget(envelope::KmsBudget {
                failures: self.kms_failure_budget,
                max_in_flight: self.kms_max_in_flight,
                ..envelope::KmsBudget::default()
            })
            .pinned_public_keys(self.pinned_public_keys()?)
            .trusted_signers(self.trusted_signers()?)
            .accept(modes))
    }

    /// The service accounts given with `--trusted_signer`.
    pub fn trusted_signers(&self) -> Result<envelope::TrustedSigners, envelope::TrustError> {
        envelope::TrustedSigners::from_entries(&self.trusted_signer)
    }
}

/// Parses `--max_message_age`: a human duration (`90s`, `5m`, `1h`) more than 0 and at
/// most [`MAX_MESSAGE_AGE`](envelope::limits::MAX_MESSAGE_AGE) (31 days).
fn max_message_age(text: &str) -> Result<Duration, String> {
    let age: Duration = text.parse::<humantime::Duration>().map_err(|error| format!("`{text}`: {error}"))?.into();
    let max = envelope::limits::MAX_MESSAGE_AGE;
    if age.is_zero() || age > max {
        return Err(format!("`{text}` is not more than 0 and at most {}", humantime::format_duration(max)));
    }
    Ok(age)
}

/// Whether a `--trusted_kms_key` entry names no project: `projects/*`, however spelt.
fn trusts_every_project(entry: &str) -> bool {
    let pattern = entry.split_once('=').map_or(entry, |(pattern, _)| pattern);
    let pattern = pattern.strip_prefix("gcp-kms://").unwrap_or(pattern);
    pattern == "projects/*"
}

/// The pipeline's own KMS key, which the pipeline, `subscriber` and `debug-subscriber`
/// must agree on.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineKeyFlags {
    /// The pipeline's own KMS key (not a tenant's): the pipeline seals its output under
    /// it and puts a receipt made with it on each dead letter; `subscriber` then opens
    /// only output sealed under it, and `debug-subscriber --redrive` republishes only
    /// dead letters whose receipt holds. Without it the output is published in the
    /// clear (docs/THREATS.md says who can then read and write it).
    #[arg(
        long = "pipeline_kms_key",
        visible_alias = "pipeline-kms-key",
        env = "PUBSUB_ENVELOPE_PIPELINE_KMS_KEY",
        value_parser = |text: &str| envelope::KeyName::from_uri_or_name(text)
    )]
    pub pipeline_kms_key: Option<envelope::KeyName>,
}

impl PipelineKeyFlags {
    /// The key named (a `gcp-kms://` prefix taken off; a name that is not a key's is a
    /// usage error).
    pub fn key(&self) -> Option<envelope::KeyName> {
        self.pipeline_kms_key.clone()
    }

    /// Without a key, warns at start-up who can then read and forge the counts on
    /// `output_topic`: the pipeline and `subscriber` both say it, since either end may
    /// be the one an operator watches.
    pub fn warn_if_absent(&self, output_topic: &str) {
        if self.pipeline_kms_key.is_none() {
            tracing::warn!(
                topic = %crate::escape::Escaped(output_topic),
                "no --pipeline_kms_key: the counts travel in the clear and unauthenticated, so whoever may \
                 subscribe to the output topic reads every tenant's words, and whoever may publish to it can forge \
                 the totals subscriber prints; give pipeline and subscriber the same --pipeline_kms_key, or let only \
                 the pipeline's account publish to the topic (scripts/gcp-setup.sh does; docs/THREATS.md, \"The output\")"
            );
        }
    }
}

/// The subscription on the dead-letter topic that `debug-subscriber --dead_letters`
/// reads by default; on the emulator the pipeline makes it with the topic.
pub const DEAD_LETTER_SUBSCRIPTION: &str = "dead-letter-debug";

/// The dead-letter topic, which the pipeline writes and `debug-subscriber
/// --dead_letters` reads.
#[derive(Debug, Clone, clap::Args)]
pub struct DeadLetterFlags {
    /// The dead-letter topic: where the pipeline sends messages that can never be
    /// opened, with their reason (`debug-subscriber --dead_letters` reads it).
    #[arg(
        long = "dead_letter_topic",
        visible_alias = "dead-letter-topic",
        env = "PUBSUB_ENVELOPE_DEAD_LETTER_TOPIC",
        default_value = "dead-letter"
    )]
    pub dead_letter_topic: String,
}

/// Where a consumer serves its Prometheus metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsFlags {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. `127.0.0.1:9464`; port 0 picks a free one).
    #[arg(long = "metrics_addr", visible_alias = "metrics-addr", env = "PUBSUB_ENVELOPE_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl MetricsFlags {
    /// Starts serving `metrics` when an address was given; an address that cannot be
    /// bound is an error.
    pub async fn serve(&self, metrics: &Arc<runner::metrics::Metrics>) -> anyhow::Result<()> {
        if let Some(addr) = self.metrics_addr {
            crate::serve::serve(metrics.clone(), addr).await.with_context(|| {
                format!("cannot serve metrics on {addr} (is another process using the port? choose another with --metrics_addr)")
            })?;
        }
        Ok(())
    }
}

/// Flags of the article's Dataflow runner that mean nothing here. Accepted so that the
/// article's command lines work, and reported once.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DataflowFlags {
    #[arg(long, hide = true)]
    runner: Option<String>,
    #[arg(long = "setup_file", alias = "setup-file", hide = true)]
    setup_file: Option<String>,
    #[arg(long = "extra_package", alias = "extra-package", hide = true)]
    extra_package: Option<String>,
    #[arg(long = "temp_location", alias = "temp-location", hide = true)]
    temp_location: Option<String>,
    #[arg(long = "staging_location", alias = "staging-location", hide = true)]
    staging_location: Option<String>,
    #[arg(long = "max_num_workers", alias = "max-num-workers", hide = true)]
    max_num_workers: Option<String>,
    #[arg(long, hide = true)]
    region: Option<String>,
}

impl DataflowFlags {
    /// Logs one warning naming the Dataflow-only flags that were given.
    pub fn warn_if_given(&self) {
        let given: Vec<&str> = [
            ("--runner", &self.runner),
            ("--setup_file", &self.setup_file),
            ("--extra_package", &self.extra_package),
            ("--temp_location", &self.temp_location),
            ("--staging_location", &self.staging_location),
            ("--max_num_workers", &self.max_num_workers),
            ("--region", &self.region),
        ]
        .into_iter()
        .filter_map(|(flag, value)| value.as_ref().map(|_| flag))
        .collect();
        if !given.is_empty() {
            tracing::warn!("ignoring Dataflow-only flags (this pipeline runs in-process): {}", given.join(" "));
        }
    }
}

/// Parses `--rate`: messages per second, a finite number of at least 0.001 (one message
/// every 17 minutes). Without the flag there is no limit.
pub fn rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.001 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate: give messages per second, a number of at least 0.001 (leave --rate out for no limit)"
        )),
    }
}

/// Parses `key=value`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not key=value"))
}

/// Opening modes of the consumers: one kind only, or each message by its own envelope
/// (`decrypt`, `verify`, `attest` or `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OpenMode {
    /// Encrypted messages only.
    Decrypt,
    /// Signed messages only.
    Verify,
    /// Attested messages only.
    Attest,
    /// Whatever each message's envelope says.
    Auto,
}

impl OpenMode {
    /// The envelope modes this opening mode accepts.
    pub fn accepts(self) -> &'static [envelope::Mode] {
        match self {
            OpenMode::Decrypt => &[envelope::Mode::Encrypt],
            OpenMode::Verify => &[envelope::Mode::Sign],
            OpenMode::Attest => &[envelope::Mode::Attest],
            OpenMode::Auto => &[envelope::Mode::Encrypt, envelope::Mode::Sign, envelope::Mode::Attest],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_choice_parses() {
        assert_eq!("gcp".parse(), Ok(KmsChoice::Gcp));
        assert_eq!("local:/tmp/k.json".parse(), Ok(KmsChoice::Local("/tmp/k.json".into())));
        assert!("local:".parse::<KmsChoice>().is_err());
        assert!("aws".parse::<KmsChoice>().is_err());
    }

    #[test]
    fn a_rate_is_finite_and_positive() {
        assert_eq!(rate("50"), Ok(50.0));
        assert_eq!(rate("0.5"), Ok(0.5));
        assert_eq!(rate("0.001"), Ok(0.001));
        for bad in ["0", "-1", "inf", "-inf", "nan", "NaN", "0.0009", "1e-300", "fast", ""] {
            assert!(rate(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn key_values_parse() {
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(key_value("=x").is_err());
        assert!(key_value("novalue").is_err());
    }
}
