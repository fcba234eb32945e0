//! The docs' examples run as written. Every ```` ```sh emulator ```` block of README.md
//! and docs/*.md runs, in order, one shell per file, against an emulator of its own;
//! docs/GCP.md's set-up plan is what `scripts/gcp-setup.sh --dry-run` prints.
//!
//! One liberty is taken: a block's `cargo build` line is not run (the test build made
//! the binaries, and cargo holds its build lock while tests run); `target/release` in
//! the shell's directory is the test build's binaries instead.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{binary, workspace};

/// The fenced blocks of `markdown` whose info string is `sh TAG`, in order.
fn blocks(markdown: &str, tag: &str) -> Vec<String> {
    let opening = format!("```sh {tag}");
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == opening => current = Some(String::new()),
            None => {}
            Some(_) if line.starts_with("```") => found.push(current.take().unwrap()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "a ```sh {tag} block is not closed");
    found
}

/// What a file's session printed.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Kills a session's process group (its background jobs too) and its emulator, however
/// the test ends.
struct Session {
    dir: tempfile::TempDir,
    group: Option<u32>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).stderr(Stdio::null()).status();
        }
        let _ = Command::new(workspace().join("scripts/emulator.sh"))
            .arg("stop")
            .env("EMULATOR_STATE_DIR", self.dir.path().join("emulator"))
            .status();
    }
}

/// Runs the `sh emulator` blocks of `file` (relative to the workspace) as one shell
/// script, from a directory laid out as the checkout's root.
fn run_examples(file: &str, timeout: Duration) -> Ran {
    let markdown = std::fs::read_to_string(workspace().join(file)).unwrap();
    let examples = blocks(&markdown, "emulator");
    assert!(!examples.is_empty(), "{file} has no ```sh emulator block");
    let mut script = String::from("set -euo pipefail\n");
    for line in examples.concat().lines() {
        if line.starts_with("cargo build") {
            script.push_str(": built by the test build\n");
        } else {
            script.push_str(line);
            script.push('\n');
        }
    }
    let mut session = Session { dir: tempfile::tempdir().unwrap(), group: None };
    let dir = session.dir.path().to_owned();
    std::os::unix::fs::symlink(workspace().join("scripts"), dir.join("scripts")).unwrap();
    std::fs::create_dir(dir.join("target")).unwrap();
    let binaries: PathBuf = binary("publisher").parent().unwrap().to_owned();
    std::os::unix::fs::symlink(&binaries, dir.join("target/release")).unwrap();
    std::fs::write(dir.join("session.sh"), &script).unwrap();
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    let mut command = Command::new("bash");
    command
        .arg("session.sh")
        .current_dir(&dir)
        .env("EMULATOR_STATE_DIR", dir.join("emulator"))
        .stdin(Stdio::null())
        // Files, not pipes: background jobs would hold a pipe open after the shell ends.
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("PUBSUB_") || name == "GOOGLE_CLOUD_PROJECT" || name == "RUST_LOG" {
            command.env_remove(&*name);
        }
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().unwrap();
    session.group = Some(child.id());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > timeout {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let ran =
        Ran { success: status.is_some_and(|status| status.success()), stdout: read(&stdout), stderr: read(&stderr) };
    assert!(status.is_some(), "{file}'s examples did not finish within {timeout:?}:\n{}\n{}", ran.stdout, ran.stderr);
    ran
}

#[test]
fn the_readme_by_hand_block_runs_each_binary_as_written() {
    // The README's by-hand block, as a newcomer pastes it: a message published and
    // opened, counted in its window, and seen on the bus by debug-subscriber.
    let ran = run_examples("README.md", Duration::from_secs(180));
    assert!(ran.success, "stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("hello: 2") && ran.stdout.contains("world: 1"), "counted: {}", ran.stdout);
    assert!(ran.stdout.contains("OPENED") && ran.stdout.contains("hello hello world"), "opened: {}", ran.stdout);
}

#[test]
fn the_guide_runs_as_written_dead_letters_redriven_and_attest_proven() {
    // docs/GUIDE.md end to end: what was published before the pipeline started is
    // counted; tenant 2's message under a disabled version is dead-lettered with its
    // reason and receipt, redriven once the version is enabled again, and counted by
    // the same running pipeline; an attested message opens with who sent it.
    let ran = run_examples("docs/GUIDE.md", Duration::from_secs(300));
    let all = format!("stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    assert!(ran.success, "{all}");
    assert!(ran.stdout.contains(r#"pubsub_envelope_messages_total{outcome="counted",reason=""} 21"#), "{all}");
    assert!(ran.stdout.contains(r#"{outcome="dead_lettered",reason="kms_rejected"} 1"#), "{all}");
    assert!(ran.stdout.contains("DEAD ") && ran.stdout.contains("reason=kms_rejected"), "{all}");
    assert!(ran.stdout.contains("receipt: verified"), "{all}");
    assert!(ran.stdout.contains("redriven (opens now as encrypt)"), "{all}");
    assert!(ran.stdout.contains("tenant: 1") && ran.stdout.contains("two: 1"), "tenant 2 counted: {all}");
    assert!(ran.stdout.contains("attested_by=(tenant tenant-1 by "), "{all}");
}

#[test]
fn the_google_cloud_set_up_shown_is_what_the_script_does() {
    // docs/GCP.md shows the set-up by hand; it was once a block of its own that went
    // stale (other names, accounts, key files). It is now the script's plan, checked.
    let markdown = std::fs::read_to_string(workspace().join("docs/GCP.md")).unwrap();
    let shown = blocks(&markdown, "dry-run");
    assert_eq!(shown.len(), 1, "docs/GCP.md shows one plan");
    let plan = Command::new("bash")
        .arg(workspace().join("scripts/gcp-setup.sh"))
        .args(["--bus-project", "my-bus", "--tenant", "my-tenant", "--dry-run"])
        .env("GCP_SETUP_NEXT_ROTATION", "2027-03-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
    assert_eq!(shown[0], String::from_utf8_lossy(&plan.stdout), "docs/GCP.md's plan is not the script's");
}
