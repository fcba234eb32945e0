//! `bench run`: every case on one emulator, one after another, then the tables.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use envelope::KeyName;
use envelope::kms::local::Keyring;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::measure::{PeakRss, Rss, reaped_children_cpu, tree_cpu};
use crate::output::{Tally, tail};
use crate::texts::Corpus;

const KMS_KEY: &str = "projects/bench/locations/global/keyRings/bench/cryptoKeys/tenant";
/// The attest cases' signing key, in the fake Cloud KMS.
const SIGNING_KEY: &str = "projects/bench/locations/global/keyRings/bench/cryptoKeys/signer";

/// Flags of `bench run`. A flag given twice takes its last value, so that scripts can
/// pass defaults and their callers override them.
#[derive(clap::Args)]
#[command(args_override_self = true)]
pub struct Options {
    /// Messages per case.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// The pipeline's window, seconds.
    #[arg(long = "window-secs", default_value_t = 15)]
    window_secs: u64,
    /// The pipeline's streaming-pull streams in the side-by-side cases.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Modes side by side (`plaintext` is the floor); `--modes` alone: none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "plaintext,encrypt,sign")]
    modes: Vec<Case>,
    /// Milliseconds of latency for the slowed-KMS run of the protected modes (0: none).
    #[arg(long = "slow-kms-ms", default_value_t = 20)]
    slow_kms_ms: u64,
    /// The publisher makes a new data key after this many messages, so that KMS is
    /// called several times per case.
    #[arg(long = "key-max-messages", default_value_t = 25_000)]
    key_max_messages: u64,
    /// Stream counts for the pipeline's stream sweep, on a backlog (`0`: no sweep).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    sweep: Vec<usize>,
    /// Messages in a backlog of encrypted messages drained by the pipeline with the KMS
    /// at 0 ms and at `--slow-kms-ms` (`0`: none): the pipeline's own rate, apart from
    /// the publisher's, and what a slow KMS costs it.
    #[arg(long = "backlog-messages", default_value_t = 0)]
    backlog_messages: u64,
    /// Messages in each backlog of the sweep.
    #[arg(long = "sweep-messages", default_value_t = 60_000)]
    sweep_messages: u64,
    /// Messages per attest case (`0`: none): a session key certified once against the
    /// KMS signing every message, through a fake Cloud KMS slowed by `--slow-kms-ms`.
    #[arg(long = "attest-messages", default_value_t = 2_000)]
    attest_messages: u64,
    /// Junk messages in the hostile case (`0`: no such case): flooded at full speed under
    /// a second tenant's key name (trusted by an entry of its own) while a genuine
    /// encrypt publisher runs with the KMS at `--slow-kms-ms`; compared with the same
    /// run without the flood.
    #[arg(long = "hostile-junk", default_value_t = 0)]
    hostile_junk: u64,
    /// The genuine publisher's messages in the hostile case.
    #[arg(long = "hostile-messages", default_value_t = 20_000)]
    hostile_messages: u64,
    /// Publish at most this many messages per second (default: as fast as they go), so
    /// that latency is measured at a load the pipeline keeps up with.
    #[arg(long)]
    rate: Option<f64>,
    /// The emulator's process (its launcher; descendants are included), for its CPU time.
    #[arg(long = "emulator-pid")]
    emulator_pid: Option<u32>,
}

/// What is measured: the floor or a product mode.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Case {
    Plaintext,
    Encrypt,
    Sign,
    /// Encrypt and sign publishers at once, half the messages each (the soak).
    Mixed,
    /// Attest mode with a session key, through the fake Cloud KMS.
    Attest,
    /// Attest mode with the KMS signing every message, through the fake Cloud KMS.
    AttestKms,
}

impl Case {
    /// The publishers a case runs.
    fn publishers(self) -> &'static [Case] {
        match self {
            Case::Plaintext => &[Case::Plaintext],
            Case::Encrypt => &[Case::Encrypt],
            Case::Sign => &[Case::Sign],
            Case::Mixed => &[Case::Encrypt, Case::Sign],
            Case::Attest => &[Case::Attest],
            Case::AttestKms => &[Case::AttestKms],
        }
    }

    /// Whether the case uses the fake Cloud KMS rather than the local keyring.
    fn uses_cloud_kms(self) -> bool {
        matches!(self, Case::Attest | Case::AttestKms)
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Case::Plaintext => "plaintext",
            Case::Encrypt => "encrypt",
            Case::Sign => "sign",
            Case::Mixed => "encrypt+sign",
            Case::Attest => "attest (session key)",
            Case::AttestKms => "attest (KMS per message)",
        })
    }
}

/// One case's figures.
struct Row {
    case: Case,
    kms_ms: u64,
    streams: usize,
    publish_per_sec: f64,
    pipeline_per_sec: f64,
    p50_ms: u64,
    p99_ms: u64,
    publisher_us: f64,
    pipeline_us: f64,
    emulator_us: f64,
    publisher_mib: f64,
    pipeline_rss: Rss,
    data_keys: u64,
    publisher_kms: u64,
    pipeline_kms: u64,
    /// The hostile case's junk dead letters, by reason.
    junk_reasons: std::collections::BTreeMap<String, u64>,
    /// From the case's start to the last junk dead letter read.
    case_secs: f64,
}

struct Bench {
    options: Options,
    pubsub: bus::PubSub,
    bins: PathBuf,
    dir: PathBuf,
    keyring: PathBuf,
    corpus: Arc<Corpus>,
    cases_run: u32,
    /// The fake Cloud KMS of the attest cases, in this process, started on first use.
    cloud_kms: Option<fake_kms::FakeKms>,
    /// Junk to flood during the next case (the hostile case).
    junk: u64,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("pubsub-envelope-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let keyring = dir.join("keyring.json");
    let mut ring = Keyring::load_or_new(&keyring)?;
    ring.create(&KMS_KEY.parse::<KeyName>()?)?;
    ring.create(&crate::hostile::VICTIM_KEY.parse::<KeyName>()?)?;
    ring.save()?;
    let mut bench = Bench {
        pubsub: bus::PubSub::from_env(&bus::credentials::EmulatorOnly)?,
        bins: std::env::current_exe()?.parent().context("no binary directory")?.to_owned(),
        dir,
        keyring,
        corpus: Arc::new(Corpus::new()),
        cases_run: 0,
        cloud_kms: None,
        junk: 0,
        options,
    };
    let result = bench.all().await;
    let _ = std::fs::remove_dir_all(&bench.dir);
    result
}

impl Bench {
    async fn all(&mut self) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        let (messages, streams) = (self.options.messages, self.options.streams);
        // The emulator's JVM compiles its hot paths during the first tens of thousands
        // of messages: whichever case ran first on it ran slower, and that was the
        // plaintext floor, which flattered every ratio to it. A fifth of a case, not
        // recorded, warms it first.
        if !self.options.modes.is_empty() || self.options.hostile_junk > 0 {
            eprintln!("bench: warming the emulator up (not recorded)");
            self.case(Case::Plaintext, 0, streams, (messages / 5).max(1_000), false).await?;
        }
        for case in self.options.modes.clone() {
            rows.push(self.case(case, 0, streams, messages, false).await?);
        }
        if self.options.slow_kms_ms > 0 {
            for case in self.options.modes.clone().into_iter().filter(|case| *case != Case::Plaintext) {
                rows.push(self.case(case, self.options.slow_kms_ms, streams, messages, false).await?);
            }
        }
        if !rows.is_empty() {
            println!("\n### Side by side: {messages} messages of 1 KiB per case, published and counted at once\n");
            print_table(&rows);
            print_checks(&rows, self.options.window_secs);
            print_memory(&rows);
        }

        let attest_messages = self.options.attest_messages;
        if attest_messages > 0 {
            let kms_ms = self.options.slow_kms_ms;
            let mut attest = Vec::new();
            for case in [Case::Attest, Case::AttestKms] {
                attest.push(self.case(case, kms_ms, streams, attest_messages, false).await?);
            }
            println!(
                "\n### Attest: {attest_messages} messages of 1 KiB, through a fake Cloud KMS answering in {kms_ms} ms\n"
            );
            print_table(&attest);
            println!(
                "\nSession key vs KMS per message: {:.0}x the publish rate.",
                attest[0].publish_per_sec / attest[1].publish_per_sec.max(1e-9)
            );
        }

        if self.options.hostile_junk > 0 {
            self.hostile().await?;
        }

        let backlog = self.options.backlog_messages;
        if backlog > 0 {
            let slow = self.options.slow_kms_ms;
            let fast = self.case(Case::Encrypt, 0, streams, backlog, true).await?;
            let slowed = self.case(Case::Encrypt, slow, streams, backlog, true).await?;
            println!(
                "\n### Backlog: {backlog} encrypted messages (a new data key every {}) drained by the pipeline\n",
                self.options.key_max_messages
            );
            println!("| KMS latency | pipeline msg/s | vs 0 ms | pipeline µs/msg | KMS calls (pipeline) | data keys |");
            println!("|---:|---:|---:|---:|---:|---:|");
            for row in [&fast, &slowed] {
                println!(
                    "| {} ms | {:.0} | {:.2} | {:.1} | {} | {} |",
                    row.kms_ms,
                    row.pipeline_per_sec,
                    row.pipeline_per_sec / fast.pipeline_per_sec.max(1e-9),
                    row.pipeline_us,
                    row.pipeline_kms,
                    row.data_keys
                );
            }
            verdict(
                &format!("encrypt backlog (KMS +{slow} ms)"),
                "pipeline ≥ 0.8 × its own rate at 0 ms",
                slowed.pipeline_per_sec >= 0.8 * fast.pipeline_per_sec,
            );
        }

        self.options.sweep.retain(|streams| *streams > 0);
        if !self.options.sweep.is_empty() {
            let mut sweep = Vec::new();
            for streams in self.options.sweep.clone() {
                sweep.push(self.case(Case::Encrypt, 0, streams, self.options.sweep_messages, true).await?);
            }
            println!(
                "\n### Streams: a backlog of {} encrypted messages drained by the pipeline\n",
                self.options.sweep_messages
            );
            println!("| streams | pipeline msg/s | pipeline µs/msg | emulator µs/msg |");
            println!("|---:|---:|---:|---:|");
            for row in &sweep {
                println!(
                    "| {} | {:.0} | {:.1} | {:.1} |",
                    row.streams, row.pipeline_per_sec, row.pipeline_us, row.emulator_us
                );
            }
        }
        Ok(())
    }

    /// A genuine encrypt tenant with the KMS at `--slow-kms-ms`, alone and then beside a
    /// flood of junk under another tenant's key name.
    async fn hostile(&mut self) -> anyhow::Result<()> {
        let (kms_ms, streams, messages) =
            (self.options.slow_kms_ms, self.options.streams, self.options.hostile_messages);
        let junk = self.options.hostile_junk;
        let calm = self.case(Case::Encrypt, kms_ms, streams, messages, false).await?;
        self.junk = junk;
        let flooded = self.case(Case::Encrypt, kms_ms, streams, messages, false).await;
        self.junk = 0;
        let flooded = flooded?;
        let rate = |row: &Row| row.pipeline_per_sec.min(row.publish_per_sec);
        let junk_calls = flooded.pipeline_kms.saturating_sub(flooded.data_keys);
        let dead: u64 = flooded.junk_reasons.values().sum();
        println!(
            "\n### Hostile: {junk} junk messages under another tenant's key beside {messages} genuine ones (a new key every {}, KMS +{kms_ms} ms)\n",
            self.options.key_max_messages
        );
        println!(
            "| run | genuine msg/s | vs calm | pipeline RSS | KMS calls (pipeline) | of which junk | junk dead letters |"
        );
        println!("|---|---:|---:|---:|---:|---:|---|");
        for (label, row) in [("calm", &calm), ("flooded", &flooded)] {
            println!(
                "| {label} | {:.0} | {:.2} | {:.0} MiB | {} | {} | {:?} |",
                rate(row),
                rate(row) / rate(&calm).max(1e-9),
                row.pipeline_rss.peak,
                row.pipeline_kms,
                row.pipeline_kms.saturating_sub(row.data_keys),
                row.junk_reasons
            );
        }
        let budget = envelope::KmsBudget::default();
        let allowed = budget.failures + flooded.case_secs.ceil() as u64 / budget.refill.as_secs().max(1);
        println!();
        verdict("hostile", "genuine rate ≥ 0.9 × without the flood", rate(&flooded) >= 0.9 * rate(&calm));
        verdict(
            "hostile",
            &format!(
                "junk KMS calls ≤ budget {} + 1 a second ({allowed} in {:.0} s): {junk_calls}",
                budget.failures, flooded.case_secs
            ),
            junk_calls <= allowed,
        );
        let reasons_ok =
            flooded.junk_reasons.keys().all(|reason| reason == "unwrap_rejected" || reason == "kms_budget_exhausted");
        verdict("hostile", "every junk message dead-lettered with a reason", dead == junk && reasons_ok);

        let big = self.big_message().await?;
        println!(
            "\n### One message of {:.1} MB, {} distinct words, through the pipeline (--max_pane_words {})\n",
            big.bytes as f64 / 1e6,
            big.words,
            runner::DEFAULT_MAX_PANE_WORDS
        );
        println!("| pipeline RSS before | peak | grew by | bytes per word | counted and published in |");
        println!("|---:|---:|---:|---:|---:|");
        println!(
            "| {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} | {:.1} s |",
            big.before_mib,
            big.peak_mib,
            big.peak_mib - big.before_mib,
            (big.peak_mib - big.before_mib) * 1_048_576.0 / big.words as f64,
            big.secs
        );
        println!();
        verdict("big message", "peak RSS ≤ 1 GiB (half the manifest's 2 Gi limit)", big.peak_mib <= 1024.0);
        Ok(())
    }

    /// One message just under Pub/Sub's 10 MB of words that are all different, sealed
    /// genuinely, through a pipeline whose output topic nobody reads (the emulator drops
    /// it): what one message can make the pipeline hold.
    async fn big_message(&mut self) -> anyhow::Result<BigMessage> {
        self.cases_run += 1;
        let project = format!("bench-{}-{}", std::process::id(), self.cases_run);
        let name = |kind: &str, id: &str| format!("projects/{project}/{kind}/{id}");
        let (input, subscription) = (name("topics", "common-topic"), name("subscriptions", "message-bus"));
        self.pubsub.ensure_subscription(&subscription, &input, Duration::from_secs(60)).await?;
        let mut args = vec![
            format!("--input_subscription={subscription}"),
            format!("--input_topic={input}"),
            format!("--output_topic={}", name("topics", "df_out")),
            format!("--dead_letter_topic={}", name("topics", "dead-letter")),
            "--window_secs=2".to_owned(),
            "--trusted_kms_key=projects/bench/*".to_owned(),
        ];
        args.extend(self.kms_args(Case::Encrypt, 0).await?);
        eprintln!("bench: one message of distinct words");
        let Pipeline { child, rss, log } = self.spawn_pipeline(Case::Encrypt, &args)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before_mib = crate::measure::resident_mib(child.id()).unwrap_or(0.0);
        let (text, words) = distinct_words(9_500_000);
        let kms = Arc::new(envelope::kms::local::LocalKms::open(&self.keyring)?);
        let mut sealer = envelope::Sealer::encrypt(kms, KMS_KEY.parse()?, "tenantKey");
        let bytes = text.len() as u64;
        let sealed = sealer.seal(bytes::Bytes::from(text), envelope::Attributes::new()).await?;
        let started = Instant::now();
        let message =
            google_cloud_pubsub::model::Message::new().set_data(sealed.data).set_attributes(sealed.attributes);
        self.pubsub.publisher(&input).await?.publish(message).await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        while !std::fs::read_to_string(&log)?.contains("published pane") {
            anyhow::ensure!(Instant::now() < deadline, "the big message's pane never came: see {}", log.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        let (status, _) = wait(child).await?;
        let peak_mib = rss.stop().peak;
        let text = std::fs::read_to_string(&log)?;
        anyhow::ensure!(status.success() && text.contains("counted 1 message"), "the pipeline failed:\n{text}");
        let published: u64 =
            text.lines().filter(|line| line.contains("published pane")).map(|line| logged(line, "words")).sum();
        anyhow::ensure!(published == words, "published {published} words of {words}");
        Ok(BigMessage { bytes, words, before_mib, peak_mib, secs })
    }

    /// Runs one case on a project of its own. With `backlog`, everything is published
    /// before the pipeline starts, so that its rate is its own, not the publisher's.
    async fn case(
        &mut self,
        case: Case,
        kms_ms: u64,
        streams: usize,
        messages: u64,
        backlog: bool,
    ) -> anyhow::Result<Row> {
        self.cases_run += 1;
        let project = format!("bench-{}-{}", std::process::id(), self.cases_run);
        let name = |kind: &str, id: &str| format!("projects/{project}/{kind}/{id}");
        let (input, subscription) = (name("topics", "common-topic"), name("subscriptions", "message-bus"));
        let (output, output_subscription) = (name("topics", "df_out"), name("subscriptions", "bench-out"));
        let lease = Duration::from_secs(60);
        self.pubsub.ensure_subscription(&subscription, &input, lease).await?;
        self.pubsub.ensure_subscription(&output_subscription, &output, lease).await?;
        let dead_letter_subscription = name("subscriptions", "dead-letter-bench");
        if self.junk > 0 {
            self.pubsub.ensure_subscription(&dead_letter_subscription, &name("topics", "dead-letter"), lease).await?;
        }
        eprintln!(
            "bench: {case}, KMS +{kms_ms} ms, {streams} streams, {messages} messages{}",
            if backlog { ", backlog" } else { "" }
        );

        let tally = Arc::new(Mutex::new(Tally::default()));
        // Several readers, as one emulator stream delivers only ~2,000 msg/s and a pane
        // holds a message per distinct word: one reader would add its queue to latency.
        let readers: Vec<_> = (0..4)
            .map(|_| tokio::spawn(tail(self.pubsub.clone(), output_subscription.clone(), tally.clone())))
            .collect();
        let emulator_before = self.options.emulator_pid.map(tree_cpu);
        let kms_args = self.kms_args(case, kms_ms).await?;
        let pipeline_args = |streams: usize| -> Vec<String> {
            let mut args = vec![
                format!("--input_subscription={subscription}"),
                format!("--output_topic={output}"),
                format!("--dead_letter_topic={}", name("topics", "dead-letter")),
                format!("--window_secs={}", self.options.window_secs),
                format!("--streams={streams}"),
                "--max_outstanding_messages=1000000".to_owned(),
            ];
            if case != Case::Plaintext {
                args.push(format!("--input_topic={input}"));
                args.push("--trusted_kms_key=projects/bench/*".to_owned());
                // An entry of its own: the hostile case's junk spends this entry's KMS
                // budget, not the genuine tenant's.
                args.push(format!("--trusted_kms_key={}", crate::hostile::VICTIM_KEY));
                args.extend(kms_args.clone());
            }
            args
        };
        let mut pipeline = None;
        if !backlog {
            pipeline = Some(self.spawn_pipeline(case, &pipeline_args(streams))?);
        }

        let publishers = case.publishers();
        let started = Instant::now();
        let mut running = Vec::new();
        for (index, &publisher_case) in publishers.iter().enumerate() {
            // The first publisher takes the odd message out.
            let share =
                messages / publishers.len() as u64 + u64::from(index == 0) * (messages % publishers.len() as u64);
            let rate = self.options.rate.map(|rate| rate / publishers.len() as f64);
            running.push(self.start_publisher(
                publisher_case,
                &input,
                &kms_args,
                Share { messages: share, rate, index },
            )?);
        }
        let flood = (self.junk > 0).then(|| {
            tokio::spawn(crate::hostile::flood(self.pubsub.clone(), self.keyring.clone(), input.clone(), self.junk))
        });
        let mut expected: HashMap<String, u64> = HashMap::new();
        let (mut publisher_cpu, mut publisher_mib, mut publisher_logs) = (Duration::ZERO, 0f64, String::new());
        for publisher in running {
            let (status, cpu) = wait(publisher.child).await?;
            let log = std::fs::read_to_string(&publisher.log)?;
            anyhow::ensure!(status.success(), "the publisher failed:\n{log}");
            for (word, count) in publisher.writer.join().expect("writer panicked")? {
                *expected.entry(word).or_default() += count;
            }
            publisher_cpu += cpu;
            publisher_mib = publisher_mib.max(publisher.rss.stop().peak);
            publisher_logs.push_str(&log);
        }
        let publish_secs = started.elapsed().as_secs_f64();

        let pipeline = match pipeline {
            Some(pipeline) => pipeline,
            None => {
                // Every window of the backlog closes before the pipeline starts.
                tokio::time::sleep(Duration::from_secs(self.options.window_secs + 1)).await;
                self.spawn_pipeline(case, &pipeline_args(streams))?
            }
        };
        let want: u64 = expected.values().sum();
        let deadline = Instant::now() + Duration::from_secs(600);
        while tally.lock().expect("tally lock").total < want {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{case}: the counts never added up; see {}",
                pipeline.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut junk_reasons = std::collections::BTreeMap::new();
        if let Some(flood) = flood {
            flood.await??;
            let timeout = Duration::from_secs(300);
            junk_reasons =
                crate::hostile::dead_letters(&self.pubsub, &dead_letter_subscription, self.junk, timeout).await?;
        }
        let case_secs = started.elapsed().as_secs_f64();
        kill(Pid::from_raw(pipeline.child.id() as i32), Signal::SIGTERM)?;
        let (status, pipeline_cpu) = wait(pipeline.child).await?;
        let pipeline_rss = pipeline.rss.stop();
        let pipeline_log = std::fs::read_to_string(&pipeline.log)?;
        anyhow::ensure!(status.success(), "the pipeline failed:\n{pipeline_log}");
        let emulator_cpu = match (self.options.emulator_pid, emulator_before) {
            (Some(pid), Some(before)) => tree_cpu(pid).saturating_sub(before),
            _ => Duration::ZERO,
        };
        readers.iter().for_each(tokio::task::JoinHandle::abort);

        let tally = tally.lock().expect("tally lock");
        check_counts(case, &expected, &tally.counts)?;
        let per_message = |cpu: Duration| cpu.as_secs_f64() * 1e6 / messages as f64;
        Ok(Row {
            case,
            kms_ms,
            streams,
            publish_per_sec: messages as f64 / publish_secs,
            pipeline_per_sec: logged(&pipeline_log, "messages_per_sec") as f64,
            p50_ms: tally.latency_quantile(0.50),
            p99_ms: tally.latency_quantile(0.99),
            publisher_us: per_message(publisher_cpu),
            pipeline_us: per_message(pipeline_cpu),
            emulator_us: per_message(emulator_cpu),
            publisher_mib,
            pipeline_rss,
            data_keys: logged(&publisher_logs, "data_keys"),
            publisher_kms: logged(&publisher_logs, "kms_calls"),
            pipeline_kms: logged(&pipeline_log, "kms_calls"),
            junk_reasons,
            case_secs,
        })
    }

    /// How the binaries of `case` reach their KMS: the local keyring, or the fake Cloud
    /// KMS (started on first use), slowed by `kms_ms` either way.
    async fn kms_args(&mut self, case: Case, kms_ms: u64) -> anyhow::Result<Vec<String>> {
        if !case.uses_cloud_kms() {
            return Ok(vec![
                format!("--kms=local:{}", self.keyring.display()),
                format!("--local_kms_latency_ms={kms_ms}"),
            ]);
        }
        if self.cloud_kms.is_none() {
            self.cloud_kms = Some(fake_kms::FakeKms::start().await?);
        }
        let cloud_kms = self.cloud_kms.as_ref().expect("just started");
        cloud_kms.set_latency(Duration::from_millis(kms_ms));
        Ok(vec!["--kms=gcp".to_owned(), format!("--kms_endpoint={}", cloud_kms.endpoint())])
    }

    /// Starts a publisher of `case` on `input` and a thread feeding it `messages` lines.
    fn start_publisher(&self, case: Case, input: &str, kms_args: &[String], share: Share) -> anyhow::Result<Publisher> {
        let rate = share.rate.map(|rate| format!("--rate={rate}"));
        let (messages, index) = (share.messages, share.index);
        let mut command = match case {
            Case::Plaintext => {
                let mut command = Command::new(self.bins.join("bench"));
                command.args(["plain-publish", "--topic", input]);
                command
            }
            Case::Encrypt | Case::Sign | Case::Mixed => {
                let mut command = Command::new(self.bins.join("publisher"));
                command.args(["--input", "-", "--mode", &case.to_string(), "--pubsub_topic", input]);
                command.args(["--kms_key", KMS_KEY]).args(kms_args);
                command.arg(format!("--key_max_messages={}", self.options.key_max_messages));
                command
            }
            Case::Attest | Case::AttestKms => {
                let mut command = Command::new(self.bins.join("publisher"));
                command.args(["--input", "-", "--mode", "attest", "--pubsub_topic", input]);
                command.args(["--kms_key", SIGNING_KEY]).args(kms_args);
                if case == Case::AttestKms {
                    command.arg("--kms_sign_every_message");
                }
                command
            }
        };
        let log = self.dir.join(format!("publisher-{}-{index}.log", self.cases_run));
        let mut child = command
            .args(rate)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start the publisher")?;
        let rss = PeakRss::watch(child.id());
        let stdin = child.stdin.take().expect("piped");
        let corpus = self.corpus.clone();
        let writer = std::thread::spawn(move || corpus.write(messages, stdin));
        Ok(Publisher { child, rss, log, writer })
    }

    fn spawn_pipeline(&self, case: Case, args: &[String]) -> anyhow::Result<Pipeline> {
        let log = self.dir.join(format!("pipeline-{}.log", self.cases_run));
        let mut command = match case {
            Case::Plaintext => {
                let mut command = Command::new(self.bins.join("bench"));
                command.arg("plain-pipeline");
                command
            }
            _ => Command::new(self.bins.join("pipeline")),
        };
        let child = command
            .env("RUST_LOG", "info")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start the pipeline")?;
        let rss = PeakRss::watch(child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log)?.contains("pipeline started") {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the pipeline did not start:\n{}",
                std::fs::read_to_string(&log)?
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Pipeline { child, rss, log })
    }
}

/// What one message of distinct words did to the pipeline.
struct BigMessage {
    bytes: u64,
    words: u64,
    before_mib: f64,
    peak_mib: f64,
    secs: f64,
}

/// About `len` bytes of words that are all different (base-36 numbers of 4 and 5
/// characters), and how many.
fn distinct_words(len: usize) -> (String, u64) {
    let mut text = String::with_capacity(len + 8);
    let mut words = 0u64;
    while text.len() < len {
        let mut n = words + 36 * 36 * 36;
        let mut word = Vec::new();
        while n > 0 {
            word.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
            n /= 36;
        }
        word.reverse();
        text.push_str(std::str::from_utf8(&word).expect("ASCII"));
        text.push(' ');
        words += 1;
    }
    (text, words)
}

/// One publisher's part of a case.
struct Share {
    messages: u64,
    rate: Option<f64>,
    index: usize,
}

struct Publisher {
    child: Child,
    rss: PeakRss,
    log: PathBuf,
    writer: std::thread::JoinHandle<std::io::Result<HashMap<String, u64>>>,
}

struct Pipeline {
    child: Child,
    rss: PeakRss,
    log: PathBuf,
}

/// Waits for `child` off the runtime; returns its status and its whole CPU time.
async fn wait(mut child: Child) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
    tokio::task::spawn_blocking(move || {
        let before = reaped_children_cpu();
        let status = child.wait()?;
        Ok((status, reaped_children_cpu().saturating_sub(before)))
    })
    .await?
}

/// The sum of every `key=N` in a log (logs of several publishers are concatenated).
fn logged(log: &str, key: &str) -> u64 {
    let pattern = format!("{key}=");
    log.match_indices(&pattern)
        .filter_map(|(at, _)| {
            log[at + pattern.len()..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        })
        .sum()
}

fn check_counts(case: Case, expected: &HashMap<String, u64>, got: &HashMap<String, u64>) -> anyhow::Result<()> {
    if expected == got {
        return Ok(());
    }
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(word, count)| got.get(*word) != Some(count))
        .take(5)
        .map(|(word, count)| format!("{word}: want {count}, got {:?}", got.get(word)))
        .collect();
    anyhow::bail!("{case}: the counts are wrong: {}", wrong.join("; "))
}

fn print_table(rows: &[Row]) {
    println!(
        "| case | KMS latency | publish msg/s | pipeline msg/s | vs floor | p50 | p99 | publisher µs/msg | pipeline µs/msg | emulator µs/msg | publisher RSS | pipeline RSS | data keys | KMS calls (pub / pipeline) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let floor =
        rows.iter().find(|row| row.case == Case::Plaintext).map(|row| row.pipeline_per_sec.min(row.publish_per_sec));
    for row in rows {
        let ratio = floor
            .map_or("".to_owned(), |floor| format!("{:.2}", row.pipeline_per_sec.min(row.publish_per_sec) / floor));
        println!(
            "| {} | {} ms | {:.0} | {:.0} | {} | {:.1} s | {:.1} s | {:.1} | {:.1} | {:.1} | {:.0} MiB | {:.0} MiB | {} | {} / {} |",
            row.case,
            row.kms_ms,
            row.publish_per_sec,
            row.pipeline_per_sec,
            ratio,
            row.p50_ms as f64 / 1e3,
            row.p99_ms as f64 / 1e3,
            row.publisher_us,
            row.pipeline_us,
            row.emulator_us,
            row.publisher_mib,
            row.pipeline_rss.peak,
            row.data_keys,
            row.publisher_kms,
            row.pipeline_kms,
        );
    }
}

/// Prints each target beside its figure; never fails the run (only wrong counts do).
/// The publisher's `--keys_ahead` default.
const KEYS_AHEAD: u64 = 16;

fn print_checks(rows: &[Row], window_secs: u64) {
    let rate = |row: &Row| row.pipeline_per_sec.min(row.publish_per_sec);
    let floor = rows.iter().find(|row| row.case == Case::Plaintext).map(rate);
    println!();
    for row in rows.iter().filter(|row| row.case != Case::Plaintext) {
        let label = format!("{} (KMS +{} ms)", row.case, row.kms_ms);
        if let Some(floor) = floor {
            verdict(&label, "throughput ≥ 0.9 × plaintext", rate(row) / floor >= 0.9);
        }
        verdict(&label, "publisher ≤ 15 µs/msg", row.publisher_us <= 15.0);
        verdict(&label, "pipeline ≤ 15 µs/msg", row.pipeline_us <= 15.0);
        verdict(&label, &format!("p99 ≤ {} s", window_secs + 1), row.p99_ms <= (window_secs + 1) * 1000);
        // The publisher wraps up to `KEYS_AHEAD` keys ahead of need, which a run's end
        // can leave unused.
        verdict(&label, "KMS calls: one unwrap per wrapped key; wraps ≤ data keys + 16 made ahead", {
            (row.data_keys..=row.data_keys + KEYS_AHEAD).contains(&row.publisher_kms)
                && row.pipeline_kms == row.data_keys
        });
        if row.kms_ms > 0
            && let Some(fast) = rows.iter().find(|fast| fast.case == row.case && fast.kms_ms == 0)
        {
            verdict(&label, "throughput within 10% of KMS +0 ms", rate(row) >= 0.9 * rate(fast));
        }
    }
}

/// The soak's memory check: the pipeline's resident set in the last quarter of the run
/// stays within 20 % of the first quarter's.
fn print_memory(rows: &[Row]) {
    for row in rows.iter().filter(|row| row.case == Case::Mixed) {
        let Rss { first_quarter, last_quarter, .. } = row.pipeline_rss;
        println!(
            "- pipeline RSS, largest in the first quarter of the run {first_quarter:.0} MiB, in the last quarter {last_quarter:.0} MiB ({:+.0} %)",
            (last_quarter / first_quarter.max(1e-9) - 1.0) * 100.0
        );
        verdict(&row.case.to_string(), "RSS flat within 20 %", last_quarter <= 1.2 * first_quarter);
    }
}

fn verdict(label: &str, target: &str, met: bool) {
    println!("- {label}: {target}: {}", if met { "met" } else { "MISSED" });
}
