//! CPU time and memory of processes, read from the kernel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};

/// CPU time (user + system) of every child this process has waited for. The
/// difference around one `wait` is that child's whole CPU time.
pub fn reaped_children_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage cannot fail for RUSAGE_CHILDREN");
    let time = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    time(usage.user_time()) + time(usage.system_time())
}

/// CPU time of `root` and all its descendants so far (a launcher script and the JVM it
/// started, for the emulator).
pub fn tree_cpu(root: u32) -> Duration {
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Some((parent, ticks)) = stat(pid) {
            processes.push((pid, parent, ticks));
        }
    }
    let mut tree = vec![root];
    let mut ticks = 0;
    // Parents are listed before children only by luck; repeat until nothing is added.
    let mut added = true;
    while added {
        added = false;
        for (pid, parent, _) in &processes {
            if !tree.contains(pid) && tree.contains(parent) {
                tree.push(*pid);
                added = true;
            }
        }
    }
    for (pid, _, process_ticks) in &processes {
        if tree.contains(pid) {
            ticks += process_ticks;
        }
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec as f64)
}

/// Parent pid and utime + stime ticks of `pid`, from /proc/PID/stat.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last `)`.
    let fields: Vec<&str> = text[text.rfind(')')? + 2..].split(' ').collect();
    let parent = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((parent, utime + stime))
}

/// Watches a process's resident set until stopped: its peak (VmHWM) and, sampled
/// every 100 ms, its current size (VmRSS), to tell growth from a plateau.
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Rss>,
}

/// What [`PeakRss`] saw, in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// The peak resident set.
    pub peak: f64,
    /// The largest resident set seen in the first quarter of the watch.
    pub first_quarter: f64,
    /// The largest resident set seen in the last quarter of the watch.
    pub last_quarter: f64,
}

impl PeakRss {
    /// Samples `pid` every 100 ms.
    pub fn watch(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut peak_kib = 0;
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some((high_water_mark, resident)) = memory_kib(pid) {
                        peak_kib = peak_kib.max(high_water_mark);
                        samples.push(resident);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let quarter = samples.len().div_ceil(4);
                let max_mib = |part: &[u64]| part.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
                Rss {
                    peak: peak_kib as f64 / 1024.0,
                    first_quarter: max_mib(&samples[..quarter]),
                    last_quarter: max_mib(&samples[samples.len() - quarter..]),
                }
            }
        });
        Self { stop, thread }
    }

    /// Stops watching and tells what was seen.
    pub fn stop(self) -> Rss {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The resident set of `pid` now, in MiB.
pub fn resident_mib(pid: u32) -> Option<f64> {
    memory_kib(pid).map(|(_, resident)| resident as f64 / 1024.0)
}

/// VmHWM and VmRSS of `pid`, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
