//! Test support: an emulator per test (or the one `PUBSUB_EMULATOR_HOST` names), a
//! project per test, a local keyring, and the real binaries as child processes.
//!
//! The binaries come from the same target directory as the test (`cargo build
//! --workspace` first; `scripts/test.sh` does).
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use envelope::kms::local::{Keyring, Purpose};

/// Where the consumers read `--trusted_kms_key` from; [`Harness::command`] sets it.
pub const TRUSTED_KMS_KEYS_ENV: &str = "PUBSUB_ENVELOPE_TRUSTED_KMS_KEYS";

/// The article's tenant key, and a second tenant's.
pub const TENANT_1_KEY: &str = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/key1";
/// Another tenant's key in the same keyring.
pub const TENANT_2_KEY: &str = "projects/tenant-2/locations/us-central1/keyRings/tenant2-keyring/cryptoKeys/key1";
/// Tenant 1's P-256 signing key, for attest mode.
pub const TENANT_1_SIGNER: &str = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/signer";
/// The pipeline's own key (`--pipeline_kms_key`): its output and dead-letter receipts.
pub const PIPELINE_KEY: &str = "projects/ops/locations/us-central1/keyRings/pipeline/cryptoKeys/own";
/// Tenant 2's signing key.
pub const TENANT_2_SIGNER: &str = "projects/tenant-2/locations/us-central1/keyRings/tenant2-keyring/cryptoKeys/signer";

/// A Pub/Sub emulator: started for this test, or shared through `PUBSUB_EMULATOR_HOST`.
pub struct Emulator {
    pub host: String,
    state: Option<tempfile::TempDir>,
}

impl Emulator {
    /// The shared emulator if `PUBSUB_EMULATOR_HOST` is set, else a new one on a free
    /// port, stopped when this value drops.
    pub fn start() -> Self {
        if let Ok(host) = std::env::var("PUBSUB_EMULATOR_HOST") {
            return Self { host, state: None };
        }
        Self::private()
    }

    /// A new emulator of this test's own, whatever is shared: one it may stop or freeze.
    pub fn private() -> Self {
        let state = tempfile::tempdir().unwrap();
        let output = Command::new(workspace().join("scripts/emulator.sh"))
            .arg("start")
            .env("EMULATOR_STATE_DIR", state.path())
            .output()
            .expect("cannot run scripts/emulator.sh");
        assert!(output.status.success(), "emulator failed to start: {}", String::from_utf8_lossy(&output.stderr));
        let line = String::from_utf8(output.stdout).unwrap();
        let host = line.trim().rsplit('=').next().unwrap().to_owned();
        Self { host, state: Some(state) }
    }

    /// Freezes (`true`: SIGSTOP) or thaws (SIGCONT) a [`private`](Self::private)
    /// emulator: it holds its connections and answers nothing, as a Pub/Sub that is
    /// unreachable.
    pub fn freeze(&self, frozen: bool) {
        let state = self.state.as_ref().expect("only a private emulator is frozen");
        let pid = std::fs::read_to_string(state.path().join("pid")).unwrap();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, "--", &format!("-{}", pid.trim())]).status().unwrap();
        assert!(status.success(), "kill {signal} the emulator's process group");
    }

    /// The directory of `scripts/emulator.sh`'s state for this emulator: its own, or the
    /// shared one's (`EMULATOR_STATE_DIR`, as `scripts/test.sh` exports it).
    pub fn state_dir(&self) -> Option<PathBuf> {
        match &self.state {
            Some(state) => Some(state.path().to_owned()),
            None => std::env::var_os("EMULATOR_STATE_DIR").map(PathBuf::from),
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            let _ = Command::new(workspace().join("scripts/emulator.sh"))
                .arg("stop")
                .env("EMULATOR_STATE_DIR", state.path())
                .status();
        }
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A built binary of the workspace, beside the running test's own executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first (scripts/test.sh does)", path.display());
    path
}

/// One test's world: an emulator, a project of its own, and a keyring with two tenants.
pub struct Harness {
    pub emulator: Emulator,
    pub project: String,
    dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Self {
        Self::on(Emulator::start())
    }

    /// A harness on `emulator` (a [`private`](Emulator::private) one, to stop or freeze).
    pub fn on(emulator: Emulator) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let project = format!("e2e-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let dir = tempfile::tempdir().unwrap();
        let mut keyring = Keyring::load_or_new(dir.path().join("keyring.json")).unwrap();
        keyring.create(&TENANT_1_KEY.parse().unwrap()).unwrap();
        keyring.create(&TENANT_2_KEY.parse().unwrap()).unwrap();
        keyring.create(&PIPELINE_KEY.parse().unwrap()).unwrap();
        keyring.create_for(&TENANT_1_SIGNER.parse().unwrap(), Purpose::AsymmetricSign).unwrap();
        keyring.create_for(&TENANT_2_SIGNER.parse().unwrap(), Purpose::AsymmetricSign).unwrap();
        keyring.save().unwrap();
        Self { emulator, project, dir }
    }

    pub fn keyring(&self) -> PathBuf {
        self.dir.path().join("keyring.json")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command for binary `name` wired to this harness's emulator and keyring.
    pub fn command(&self, name: &str) -> Command {
        let mut command = Command::new(binary(name));
        command
            .env("PUBSUB_EMULATOR_HOST", &self.emulator.host)
            .env("PUBSUB_ENVELOPE_KMS", format!("local:{}", self.keyring().display()))
            .env("RUST_LOG", "info")
            // The consumers trust no key unless told; the tests' two tenants by default
            // (a test's own --trusted_kms_key replaces this).
            .env(TRUSTED_KMS_KEYS_ENV, "projects/tenant-1/*,projects/tenant-2/*")
            .stdin(Stdio::null());
        command
    }

    /// Runs `publisher` to completion with `args` after the harness's project flag.
    pub fn publish(&self, args: &[&str]) -> Output {
        let output =
            self.command("publisher").arg("--pubsub_project_id").arg(&self.project).args(args).output().unwrap();
        assert!(output.status.success(), "publisher failed: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    /// Starts the pipeline with short windows and leases, so tests run in seconds.
    pub fn pipeline(&self, extra: &[&str]) -> Running {
        Running::spawn(self.pipeline_command(extra), "pipeline started")
    }

    /// The command [`pipeline`](Self::pipeline) runs, to adjust before spawning.
    pub fn pipeline_command(&self, extra: &[&str]) -> Command {
        let mut command = self.command("pipeline");
        command.args(["--project", &self.project, "--window_secs", "2", "--lease_extension_secs", "10"]).args(extra);
        command
    }

    /// Starts `subscriber --json` on the output topic.
    pub fn subscriber(&self) -> Running {
        self.subscriber_with(&[])
    }

    /// [`subscriber`](Self::subscriber) with `extra` flags.
    pub fn subscriber_with(&self, extra: &[&str]) -> Running {
        let mut command = self.command("subscriber");
        command.args(["--pubsub_project_id", &self.project, "--json"]).args(extra);
        Running::spawn(command, "listening for messages")
    }

    /// Runs `debug-subscriber --dead_letters --json` with `extra` to its end; its records.
    pub fn dead_letter_records(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let output = self
            .command("debug-subscriber")
            .args(["--pubsub_project_id", &self.project, "--dead_letters", "--json", "--idle_exit_secs", "10"])
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).expect(line)).collect()
    }

    /// Clients for the emulator, for tests that publish crafted messages or read a topic.
    pub fn pubsub(&self) -> bus::PubSub {
        bus::PubSub::emulator(&self.emulator.host)
    }

    pub fn topic(&self, id: &str) -> String {
        format!("projects/{}/topics/{id}", self.project)
    }

    pub fn subscription(&self, id: &str) -> String {
        format!("projects/{}/subscriptions/{id}", self.project)
    }

    /// Creates subscription `id` on topic `topic` (both short ids) and returns its full
    /// name; what is published to the topic afterwards can be read from it.
    pub async fn subscribe(&self, id: &str, topic: &str) -> String {
        let subscription = self.subscription(id);
        self.pubsub().ensure_subscription(&subscription, &self.topic(topic), Duration::from_secs(10)).await.unwrap();
        subscription
    }

    /// The attributes of the messages that unary pulls (the emulator's REST API) lease
    /// from subscription `id`, pulling until some arrive or `timeout` passes; acks nothing.
    ///
    /// Why not a streaming pull: the emulator keeps a streaming pull that a client
    /// closed (its gRPC fails on the client's reset) and goes on handing it messages,
    /// which then come back only as their leases run out. A test that reads a
    /// subscription a second time, after a process streamed from it, reads it this way.
    pub fn pull_attributes(&self, id: &str, timeout: Duration) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let path = format!("/v1/{}:pull", self.subscription(id));
            // The emulator answers an empty pull with `{}` once it gives up waiting.
            let (_, json) = http(&self.emulator.host, "POST", &path, r#"{"maxMessages":100}"#);
            let parsed: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_default();
            let attributes: Vec<_> = parsed["receivedMessages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|received| received["message"]["attributes"].as_object().cloned())
                .collect();
            if !attributes.is_empty() || std::time::Instant::now() > deadline {
                return attributes;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Seals `data` as a publisher of `tenant` would, with a data key of its own, for
    /// tests that then alter the message.
    pub async fn seal(&self, key: &str, tenant: &str, mode: envelope::Mode, data: &[u8]) -> envelope::Sealed {
        self.seal_at(std::time::SystemTime::now(), key, tenant, mode, data).await
    }

    /// [`seal`](Self::seal), as if sealed at `when`.
    pub async fn seal_at(
        &self,
        when: std::time::SystemTime,
        key: &str,
        tenant: &str,
        mode: envelope::Mode,
        data: &[u8],
    ) -> envelope::Sealed {
        let kms = std::sync::Arc::new(envelope::kms::local::LocalKms::open(self.keyring()).unwrap());
        let clock = std::sync::Arc::new(envelope::ManualClock::at(when));
        let key = key.parse().unwrap();
        let sealer = match mode {
            envelope::Mode::Encrypt => envelope::Sealer::encrypt(kms, key, tenant),
            envelope::Mode::Sign => envelope::Sealer::sign(kms, key, tenant),
            envelope::Mode::Attest => panic!("attest messages are sealed with Harness::attest"),
        };
        let mut sealer = sealer.with_clock(clock);
        sealer.seal(bytes::Bytes::copy_from_slice(data), envelope::Attributes::new()).await.unwrap()
    }
}

impl Harness {
    /// The local KMS of this harness's keyring.
    pub fn kms(&self) -> std::sync::Arc<envelope::kms::local::LocalKms> {
        std::sync::Arc::new(envelope::kms::local::LocalKms::open(self.keyring()).unwrap())
    }

    /// Seals `data` in attest mode under version 1 of the signing key `signer`, with a
    /// certified session key of its own.
    pub async fn attest(&self, signer: &str, tenant: &str, data: &[u8]) -> envelope::Sealed {
        let version = envelope::KeyVersionName::new(signer.parse().unwrap(), 1).unwrap();
        let mut sealer = envelope::Sealer::attest(self.kms(), version, tenant, envelope::AttestBy::SessionKey);
        sealer.seal(bytes::Bytes::copy_from_slice(data), envelope::Attributes::new()).await.unwrap()
    }
}

/// A sealed message, ready to publish.
pub fn message(sealed: envelope::Sealed) -> google_cloud_pubsub::model::Message {
    google_cloud_pubsub::model::Message::new().set_data(sealed.data).set_attributes(sealed.attributes)
}

/// A pipeline at work on a harness's bus: a reader of its dead letters made first, a
/// subscriber on its output, and a publisher to the bus.
pub struct AtWork {
    pub pubsub: bus::PubSub,
    /// The subscription that reads the dead-letter topic.
    pub dead_letters: String,
    pub pipeline: Running,
    pub subscriber: Running,
    /// Publishes to the bus (`common-topic`).
    pub bus: google_cloud_pubsub::client::Publisher,
}

impl Harness {
    /// A pipeline run with `args`, and what a test reads and writes around it.
    pub async fn at_work(&self, args: &[&str]) -> AtWork {
        let pubsub = self.pubsub();
        let dead_letters = self.subscribe("dead-letter-reader", "dead-letter").await;
        let pipeline = self.pipeline(args);
        let subscriber = self.subscriber();
        let bus = pubsub.publisher(&self.topic("common-topic")).await.unwrap();
        AtWork { pubsub, dead_letters, pipeline, subscriber, bus }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// A running binary whose stdout lines are collected; killed when dropped.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl Running {
    /// Spawns `command` and waits until its stderr shows `ready`.
    pub fn spawn(mut command: Command, ready: &str) -> Self {
        let stderr_dir = tempfile::tempdir().unwrap();
        let stderr = stderr_dir.path().join("stderr.log");
        let mut child = command.stdout(Stdio::piped()).stderr(std::fs::File::create(&stderr).unwrap()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let running = Self { child, lines, stderr, _stderr_dir: stderr_dir };
        running.wait_for_log(ready, Duration::from_secs(30));
        running
    }

    /// The stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the stderr log contains `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "`{text}` never appeared in the log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Collects stdout lines until `done` says the collection is complete, or panics
    /// after `timeout`.
    pub fn lines_until(&self, timeout: Duration, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        while !done(&lines) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    panic!("gave up waiting; got {} lines:\n{}\nstderr:\n{}", lines.len(), lines.join("\n"), self.log())
                }
            }
        }
        lines
    }

    /// Collects the stdout lines that arrive within `wait`.
    pub fn lines_for(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            lines.push(line);
        }
        lines
    }

    /// Sends SIGTERM, waits for a clean exit and returns the stderr log.
    pub fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status} after SIGTERM; log:\n{}", self.log());
        self.log()
    }

    /// The process id, to signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the process exits, or panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {timeout:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for an exit with status `code`; returns the log.
    pub fn terminate_expecting(mut self, code: i32) -> String {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let status = self.wait(Duration::from_secs(60));
        let log = self.log();
        assert_eq!(status.code(), Some(code), "log:\n{log}");
        log
    }

    /// The metrics this process serves (`--metrics_addr`, at the address it logged):
    /// `GET path`'s status line and body.
    pub fn http_get(&self, path: &str) -> (String, String) {
        let log = self.log();
        let addr = log
            .lines()
            .find(|line| line.contains("serving metrics"))
            .and_then(|line| line.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the process logs where it serves metrics");
        http(addr, "GET", path, "")
    }

    /// The value of the metrics sample whose line starts with `series` (0 if absent).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find(|line| line.starts_with(series))
            .map_or(0.0, |line| line.rsplit(' ').next().unwrap().parse().unwrap())
    }

    /// Waits until the metric `series` reaches `value`.
    pub fn wait_for_metric(&self, series: &str, value: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.metric(series) < value {
            assert!(Instant::now() < deadline, "{series} never reached {value}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no flush, no acks.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to `host` (`host:port`), its connection closed after the
/// answer: the status line and the body. The tests' two plain HTTP peers (the metrics
/// endpoint, the emulator's REST API) need nothing more, and a blocking client would not
/// run inside the async tests that call this.
fn http(host: &str, method: &str, path: &str, body: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Only a request with a body says what the body is (the emulator's REST API takes JSON).
    let content_type = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    // A read that times out keeps what arrived.
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// The word counts of `texts`, as the pipeline must report them.
pub fn expected_counts<'a>(texts: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for text in texts {
        for word in wordcount::words(text) {
            *counts.entry(word.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// The latest `subscriber --json` record of each window (each record is a window's
/// whole sum so far), by window start.
pub fn window_totals(lines: &[String]) -> BTreeMap<String, serde_json::Value> {
    let mut windows = BTreeMap::new();
    for line in lines {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        windows.insert(record["window_start"].as_str().unwrap().to_owned(), record);
    }
    windows
}

/// Word counts over every window, from the latest `subscriber --json` record of each.
pub fn summed_counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for record in window_totals(lines).values() {
        for (word, count) in record["counts"].as_object().unwrap() {
            *counts.entry(word.clone()).or_default() += count.as_u64().unwrap();
        }
    }
    counts
}

/// Total of all counts in `subscriber --json` lines.
pub fn total(lines: &[String]) -> u64 {
    summed_counts(lines).values().sum()
}

/// Asserts that nothing arrives on `subscription` within `wait`.
pub async fn assert_nothing_arrives(pubsub: &bus::PubSub, subscription: &str, wait: Duration) {
    let client = pubsub.subscriber(1).await.unwrap();
    let mut stream = client.subscribe(subscription).build();
    if let Ok(Some(Ok((message, _)))) = tokio::time::timeout(wait, stream.next()).await {
        panic!("{subscription} should be empty, but got {message:?}");
    }
}

/// Publishes each `(name, reason, message)` of `catalogue` to `bus`, then asserts that
/// each arrives once on `dead_letters` with its `reject_reason`, naming the ones that
/// did not.
pub async fn assert_dead_lettered(
    pubsub: &bus::PubSub,
    bus: &google_cloud_pubsub::client::Publisher,
    dead_letters: &str,
    catalogue: Vec<(&str, &str, envelope::Sealed)>,
) {
    let mut expected_reason = std::collections::HashMap::new();
    for (name, reason, sealed) in catalogue {
        expected_reason.insert(bus.publish(message(sealed)).await.unwrap(), (name, reason));
    }
    let rejected = receive(pubsub, dead_letters, expected_reason.len(), Duration::from_secs(60)).await;
    let mut wrong = Vec::new();
    for dead in &rejected {
        let (name, reason) = expected_reason.remove(&dead.attributes["original_message_id"]).expect("each once");
        if dead.attributes["reject_reason"] != reason {
            wrong.push(format!("{name}: want {reason}, got {:?}", dead.attributes));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Reads `count` messages from `subscription` (acking them), or panics after `timeout`.
pub async fn receive(
    pubsub: &bus::PubSub,
    subscription: &str,
    count: usize,
    timeout: Duration,
) -> Vec<google_cloud_pubsub::model::Message> {
    let client = pubsub.subscriber(1).await.unwrap();
    let mut stream = client.subscribe(subscription).build();
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while received.len() < count {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok((message, handler)))) => {
                handler.ack();
                received.push(message);
            }
            Ok(other) => panic!("stream ended: {:?}", other.map(|r| r.map(|_| ()))),
            Err(_) => panic!("only {} of {count} messages arrived on {subscription}", received.len()),
        }
    }
    stream.shutdown_token().shutdown().await;
    received
}
