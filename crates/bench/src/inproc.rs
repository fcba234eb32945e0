//! `bench pipeline`: `runner::run` itself, the production layout, in this process, fed
//! pre-sealed 1 KiB messages from memory (a [`runner::Source`] per worker), with
//! counters standing in for Pub/Sub's ack and publish. What the pipeline itself costs
//! per message, and how it scales with workers, with no emulator in the way.
//!
//! Each case seals its messages first (not timed), then for each worker count runs the
//! pipeline on that many worker threads, each with its own share of the messages (as
//! each worker has its own streams), sharing a fresh opener (cold key cache) and the
//! windows, with the emitter on this thread; then checks that every message was acked
//! once and every word counted exactly. The clock starts once every worker holds its
//! share, when they all start delivering.
//!
//! The clock stops when the last message is acked. The opener, with every data key it
//! cached, is dropped after that and timed on its own ("teardown"): a running pipeline
//! lets keys go one by one as they expire, on whichever worker finds them expired, but
//! here all of a case's keys (20,000 at a new key every 5) went at once on one thread
//! while the other idled, which took 5-8 % of a run's time and counted it against two
//! workers alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use envelope::kms::Counted;
use envelope::kms::local::{Keyring, LocalKms, Purpose};
use envelope::{AttestBy, Attributes, KeyName, KeyVersionName, Mode, Opener, RotationPolicy, Sealer, TrustedKeys};
use google_cloud_pubsub::model::Message;
use nix::sys::resource::{UsageWho, getrusage};

use crate::texts::Corpus;

#[derive(clap::Args)]
pub struct Options {
    /// Messages per case.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// A new data key every this many messages (the article's 5 by default).
    #[arg(long = "key-max-messages", value_delimiter = ',', default_value = "5,1048576")]
    key_max_messages: Vec<u64>,
    /// Worker counts to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Runs per case and worker count; the row shows the fastest. On a shared VM one
    /// run moves by 10-40 %, and interference only ever slows a run down, so the
    /// fastest run is the steadiest estimate of what the code does.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Modes to measure.
    #[arg(long, value_delimiter = ',', default_value = "encrypt,sign,attest")]
    modes: Vec<BenchMode>,
}

/// The envelope modes, as flag values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchMode {
    Encrypt,
    Sign,
    Attest,
}

/// Prints one Markdown table row per (mode, rotation, workers).
pub fn run(options: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let keyring_path = dir.path().join("keyring.json");
    let wrap_key: KeyName = "projects/bench/locations/global/keyRings/bench/cryptoKeys/wrap".parse()?;
    let sign_key: KeyName = "projects/bench/locations/global/keyRings/bench/cryptoKeys/sign".parse()?;
    let mut keyring = Keyring::load_or_new(&keyring_path)?;
    keyring.create(&wrap_key)?;
    keyring.create_for(&sign_key, Purpose::AsymmetricSign)?;
    keyring.save()?;
    let corpus = Corpus::new();
    let mut lines = Vec::new();
    let expected = corpus.write(options.messages, &mut lines)?;
    let texts: Vec<Bytes> = Bytes::from(lines)
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(Bytes::copy_from_slice)
        .collect();

    println!(
        "machine: {}, {} cores; {} messages of 1 KiB per case",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, usize::from),
        options.messages
    );
    println!();
    println!("(each row: the fastest of {} runs, the worker counts taking turns)", options.repeat.max(1));
    println!();
    println!(
        "| mode | new key every | workers | msg/s | CPU us/msg | vs 1 worker | KMS calls (consumer) | data keys | teardown ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Each row's ratio is to the first row of its case, one worker.
    let layouts = &options.workers;
    for mode in &options.modes {
        let mode = match mode {
            BenchMode::Encrypt => Mode::Encrypt,
            BenchMode::Sign => Mode::Sign,
            BenchMode::Attest => Mode::Attest,
        };
        for &rotation in &options.key_max_messages {
            let policy = RotationPolicy { max_messages: rotation, ..RotationPolicy::default() };
            let kms = Arc::new(LocalKms::open(&keyring_path)?);
            let (sealer, key) = match mode {
                Mode::Encrypt => (Sealer::encrypt(kms.clone(), wrap_key.clone(), "bench"), wrap_key.clone()),
                Mode::Sign => (Sealer::sign(kms.clone(), wrap_key.clone(), "bench"), wrap_key.clone()),
                Mode::Attest => {
                    let version = KeyVersionName::new(sign_key.clone(), 1)?;
                    (Sealer::attest(kms.clone(), version, "bench", AttestBy::SessionKey), sign_key.clone())
                }
            };
            let (messages, data_keys) = seal_all(sealer.with_policy(policy), &texts)?;
            let messages = Arc::new(messages);
            // The worker counts take turns, run after run, rather than one count's runs
            // all before the next's: this VM's speed drifts by tens of percent over a
            // minute, and taking turns gives every count the same drift to live with.
            let mut runs: Vec<Vec<(Measured, u64)>> = layouts.iter().map(|_| Vec::new()).collect();
            for _ in 0..options.repeat.max(1) {
                for (&workers, runs) in layouts.iter().zip(&mut runs) {
                    let kms = Arc::new(Counted::new(LocalKms::open(&keyring_path)?));
                    let opener = Opener::builder("bench", TrustedKeys::only(key.clone())).kms(kms.clone()).build()?;
                    let measured = measure(opener, &messages, workers, &expected)
                        .with_context(|| format!("{mode}, {workers} workers"))?;
                    runs.push((measured, kms.calls()));
                }
            }
            let mut one_worker = None;
            for (&workers, mut runs) in layouts.iter().zip(runs) {
                runs.sort_by_key(|run| run.0.wall);
                let (measured, calls) = runs.swap_remove(0);
                let rate = measured.messages as f64 / measured.wall.as_secs_f64();
                let base = *one_worker.get_or_insert(rate);
                println!(
                    "| {mode} | {rotation} | {workers} | {rate:.0} | {:.1} | {:.2}x | {} | {data_keys} | {:.1} |",
                    measured.cpu.as_secs_f64() * 1e6 / measured.messages as f64,
                    rate / base,
                    calls,
                    measured.teardown.as_secs_f64() * 1e3,
                );
            }
        }
    }
    Ok(())
}

/// Seals every text as the publisher would, and gives each the message id and publish
/// time Pub/Sub would.
fn seal_all(mut sealer: Sealer, texts: &[Bytes]) -> anyhow::Result<(Vec<Message>, u64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let published = google_cloud_wkt::Timestamp::try_from(SystemTime::now())?;
    let messages = runtime.block_on(async {
        let mut messages = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let sealed = sealer.seal(text.clone(), Attributes::new()).await?;
            messages.push(
                Message::new()
                    .set_data(sealed.data)
                    .set_attributes(sealed.attributes)
                    .set_message_id(index.to_string())
                    .set_publish_time(published),
            );
        }
        anyhow::Ok(messages)
    })?;
    Ok((messages, sealer.data_keys_made()))
}

struct Measured {
    messages: u64,
    wall: Duration,
    cpu: Duration,
    /// Dropping the opener and the keys it cached, after the clock stopped.
    teardown: Duration,
}

/// Runs `runner::run` over `messages` on `workers` worker threads, each delivering its
/// own share from memory, with the emitter on this thread, as `pipeline` lays it out.
fn measure(
    opener: Opener,
    messages: &Arc<Vec<Message>>,
    workers: usize,
    expected: &HashMap<String, u64>,
) -> anyhow::Result<Measured> {
    let count = messages.len() as u64;
    let workers = workers.max(1);
    // Held here so that the opener outlives the run and is dropped after the clock
    // stops (see the module's comment).
    let opener = Arc::new(opener);
    let acks: Vec<Arc<Acks>> = (0..workers).map(|_| Arc::new(Acks::default())).collect();
    let (output, dead_letter) = (Sink::default(), Sink::default());
    let metrics = Arc::new(runner::metrics::Metrics::new(None));
    let share = messages.len().div_ceil(workers).max(1);
    let start = Arc::new(Start { barrier: std::sync::Barrier::new(workers), at: OnceLock::new() });
    let sources: Vec<Memory> = (0..workers)
        .map(|worker| {
            let first = (worker * share).min(messages.len());
            Memory {
                messages: messages.clone(),
                range: first..(first + share).min(messages.len()),
                acks: acks[worker].clone(),
                start: start.clone(),
            }
        })
        .collect();
    // One window spans the run, so every message is held until the end and acked then.
    let config = runner::Config {
        window: Duration::from_secs(3600),
        replica: "bench".to_owned(),
        max_in_flight: runner::MAX_IN_FLIGHT,
        own_key: None,
        max_pane_words: runner::DEFAULT_MAX_PANE_WORDS,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let run = runner::run(
        sources,
        opener.clone(),
        output.clone(),
        dead_letter.clone(),
        config,
        metrics,
        std::future::pending(),
    );
    let summary = runtime.block_on(run)?;
    let (started, cpu_before) = *start.at.get().context("no worker started")?;
    let (wall, cpu) = (started.elapsed(), process_cpu() - cpu_before);
    drop(runtime);
    let teardown = tear_down(opener)?;
    check(count, summary.counted, &acks, &output, &dead_letter, expected)?;
    Ok(Measured { messages: count, wall, cpu, teardown })
}

/// When every worker held its share and they started delivering: the clock's start,
/// wall and CPU.
struct Start {
    barrier: std::sync::Barrier,
    at: OnceLock<(Instant, Duration)>,
}

/// One worker's share of the messages, delivered from memory as a stream delivers
/// them, each with an ack handle that tallies into `acks`.
struct Memory {
    messages: Arc<Vec<Message>>,
    range: std::ops::Range<usize>,
    acks: Arc<Acks>,
    start: Arc<Start>,
}

impl runner::Source for Memory {
    type Ack = Ack;

    async fn deliver(self, mut feed: runner::Feed<Ack>) -> anyhow::Result<()> {
        // Copied on the worker's thread, so that the messages are its own, as a
        // stream's are: messages made by another thread cost whoever frees them a
        // trip through the allocator's reclaiming of that thread's pages.
        let mine = self.messages[self.range].to_vec();
        feed.started();
        // Blocks this worker's thread, which has nothing else to do until then.
        if self.start.barrier.wait().is_leader() {
            let _ = self.start.at.set((Instant::now(), process_cpu()));
        }
        for message in mine {
            if !feed.send(Ok((message, Ack(self.acks.clone())))).await {
                break;
            }
        }
        Ok(())
    }
}

/// Drops the opener, and with it every data key it cached, once nothing else holds it;
/// how long that took (the `teardown` column, outside the clock).
fn tear_down(opener: Arc<Opener>) -> anyhow::Result<Duration> {
    anyhow::ensure!(Arc::strong_count(&opener) == 1, "something still holds the opener");
    let dropped = Instant::now();
    drop(opener);
    Ok(dropped.elapsed())
}

/// Every message counted and acked once, none dead-lettered or nacked, and the
/// published counts equal to the words sealed.
fn check(
    count: u64,
    counted: u64,
    acks: &[Arc<Acks>],
    output: &Sink,
    dead_letter: &Sink,
    expected: &HashMap<String, u64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(counted == count, "counted {counted} of {count}");
    anyhow::ensure!(dead_letter.messages() == 0, "{} dead letters", dead_letter.messages());
    let acked: u64 = acks.iter().map(|acks| acks.acked.load(Ordering::Relaxed)).sum();
    let nacked: u64 = acks.iter().map(|acks| acks.nacked.load(Ordering::Relaxed)).sum();
    anyhow::ensure!(acked == count && nacked == 0, "acked {acked} and nacked {nacked} of {count}");
    let counts = output.counts.lock().expect("not poisoned").clone();
    anyhow::ensure!(&counts == expected, "the counts differ from what was sealed");
    Ok(())
}

/// Acks and nacks, counted.
#[derive(Debug, Default)]
struct Acks {
    acked: AtomicU64,
    nacked: AtomicU64,
}

/// The stand-in for Pub/Sub's ack handle.
struct Ack(Arc<Acks>);

impl runner::Ack for Ack {
    fn ack(self) {
        self.0.acked.fetch_add(1, Ordering::Relaxed);
    }

    fn nack(self) {
        self.0.nacked.fetch_add(1, Ordering::Relaxed);
    }
}

/// The stand-in for a topic: counts what is published to it and sums the counts of
/// `word: count` messages.
#[derive(Clone, Default)]
struct Sink {
    published: Arc<AtomicU64>,
    counts: Arc<std::sync::Mutex<HashMap<String, u64>>>,
}

impl Sink {
    fn messages(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

impl runner::Output for Sink {
    async fn publish(&self, message: Message) -> Result<(), String> {
        self.published.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&message.data);
        if let Some((word, count)) = text.rsplit_once(": ")
            && let Ok(count) = count.parse::<u64>()
        {
            *self.counts.lock().expect("not poisoned").entry(word.to_owned()).or_default() += count;
        }
        Ok(())
    }
}

/// User + system CPU time of this process so far.
fn process_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage cannot fail for RUSAGE_SELF");
    let time = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    time(usage.user_time()) + time(usage.system_time())
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|line| {
            line.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
