//! Word counts per fixed window of publish time.
//!
//! The original ran Apache Beam's `FixedWindows(15)` and dropped data that arrived
//! after its window had fired. Here nothing is dropped: a message for a window that was
//! already emitted opens a further *pane* of that window, emitted on its own with the
//! next pane number, so that summing the panes of a window gives its exact total.
//!
//! Each pane carries *holds* of type `H` (the pipeline's ack handles): they are handed
//! back with the pane when it is emitted, so that input is acknowledged only once the
//! counts it contributed to are safely published.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;

// Seeded per process: the words come from other tenants' messages, so an unseeded
// hash would let one of them flood a bucket.
use foldhash::{HashMap, HashMapExt as _, HashSet};

/// Bytes of `[\w']` among ASCII: `[0-9A-Za-z_']`.
const ASCII_WORD: [bool; 128] = {
    let mut table = [false; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'\'';
        b += 1;
    }
    table
};

/// Whether the character starting at byte `at` of `text` belongs to the original
/// tokenizer's class `[\w']` (Unicode `\w`, as the regex crate defines it), and its
/// length in bytes. ASCII, nearly all of the input, is one table lookup with no UTF-8
/// decoding; the regex crate's own tables decide the rest.
#[inline]
fn word_char_at(text: &str, at: usize) -> (bool, usize) {
    let byte = text.as_bytes()[at];
    if byte.is_ascii() {
        return (ASCII_WORD[usize::from(byte)], 1);
    }
    let c = text[at..].chars().next().expect("`at` is on a character boundary");
    (regex_syntax::is_word_character(c), c.len_utf8())
}

/// The words of `text`, as the original pipeline's `[\w']+` split them; a byte scan
/// instead of a regex search (which cost two DFA passes per word) or a `char` split
/// (which decodes every character).
pub fn words(text: &str) -> Words<'_> {
    Words { text, at: 0 }
}

/// The iterator [`words`] returns.
#[derive(Debug, Clone)]
pub struct Words<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let end = self.text.len();
        let start = loop {
            if self.at >= end {
                return None;
            }
            let (word, len) = word_char_at(self.text, self.at);
            if word {
                break self.at;
            }
            self.at += len;
        };
        self.at += word_char_at(self.text, start).1;
        while self.at < end {
            let (word, len) = word_char_at(self.text, self.at);
            if !word {
                break;
            }
            self.at += len;
        }
        Some(&self.text[start..self.at])
    }
}

/// A fixed window `[start, end)` in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// Inclusive start.
    pub start_ms: u64,
    /// Exclusive end.
    pub end_ms: u64,
}

impl Window {
    /// The window of `size` containing `time`.
    pub fn containing(time: SystemTime, size: Duration) -> Self {
        let size_ms = size.as_millis().max(1) as u64;
        let at = time.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let start_ms = at - at % size_ms;
        Window { start_ms, end_ms: start_ms + size_ms }
    }

    /// The window's start as a time.
    pub fn start(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.start_ms)
    }

    /// The window's end as a time.
    pub fn end(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.end_ms)
    }
}

/// One counting shard's part of a pane being filled.
struct OpenPane<H> {
    counts: HashMap<String, u64>,
    holds: Vec<H>,
    ready_at: SystemTime,
}

/// A pane ready to publish.
#[derive(Debug)]
pub struct Pane<H> {
    /// The window it counts.
    pub window: Window,
    /// 0 for the first pane of the window in this process, then 1, 2, ... for late data.
    pub number: u32,
    /// Word counts, sorted by word.
    pub counts: Vec<(String, u64)>,
    /// Everything held until the pane is safely published.
    pub holds: Vec<H>,
}

/// What tells one message from another: equal for copies of one message (a redelivery,
/// a replay), different for any two distinct messages.
pub type Fingerprint = [u8; 32];

/// Whether a message was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Its words were counted.
    Counted,
    /// A copy of it was already counted in the same open pane (a redelivery, or a
    /// replay): held, not counted again.
    Duplicate,
}

/// Panes being filled, by window, shared by every worker of a pipeline.
///
/// Two kinds of shard, each behind its own lock, let workers count at once:
/// * which messages a pane has counted is sharded by fingerprint, so that copies of a
///   message (one fingerprint) meet in one shard and count once;
/// * the counts themselves are sharded by worker thread, so that the large word tables
///   stay in the cache of the core that fills them instead of moving between cores
///   with every message.
///
/// A window is emitted from every shard at once, as one pane with the shards' counts
/// summed, so sharding never shows in the output.
pub struct Windows<H> {
    size: Duration,
    grace: Duration,
    settle: Duration,
    /// Fingerprints counted in each open window. Locked before a counting shard (and
    /// held while the message is counted, so that a message's fingerprint and its counts
    /// always land in the same pane); all of them are locked, in order, to emit.
    /// Each shard on a cache line of its own: workers lock different shards at once,
    /// and two locks on one line would pass it between their cores with every message.
    seen: Box<[CachePadded<Mutex<Seen>>]>,
    counting: Box<[CachePadded<Mutex<Counting<H>>>]>,
    /// Next pane number of windows already emitted, so late data gets a further pane.
    /// Only emitting touches it.
    next_pane: Mutex<BTreeMap<Window, u32>>,
    /// Distinct words in the open panes (each shard's own: a word two shards hold
    /// counts twice, as it takes memory twice), against `word_budget`.
    words: AtomicUsize,
    word_budget: usize,
}

/// One fingerprint shard: the fingerprints counted per open window.
type Seen = BTreeMap<Window, HashSet<Fingerprint>>;
/// One counting shard: its part of each open pane.
type Counting<H> = BTreeMap<Window, OpenPane<H>>;

/// How long emitted windows are remembered, to number their late panes.
const REMEMBER: Duration = Duration::from_secs(24 * 60 * 60);

/// Each thread's counting shard, modulo the shard count: threads number themselves in
/// the order they first count, so a runtime's workers get distinct shards.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|slot| *slot)
}

impl<H> Windows<H> {
    /// Windows of `size`, counted by up to `workers` threads at once (more work, just
    /// with more waiting on locks). A window's first pane is emitted `grace` after the
    /// window ends; a pane whose first message arrived later than that waits `settle`
    /// from that message, so that a backlog is counted in a few panes rather than one
    /// per message.
    pub fn new(size: Duration, grace: Duration, settle: Duration, workers: usize) -> Self {
        let workers = workers.max(1);
        // A few fingerprint shards per worker, so that two rarely want one lock.
        let seen = (0..workers * 4).map(|_| CachePadded::new(Mutex::new(BTreeMap::new()))).collect();
        let counting = (0..workers).map(|_| CachePadded::new(Mutex::new(BTreeMap::new()))).collect();
        Self {
            size,
            grace,
            settle,
            seen,
            counting,
            next_pane: Mutex::new(BTreeMap::new()),
            words: AtomicUsize::new(0),
            word_budget: usize::MAX,
        }
    }

    /// Bounds the memory of the open panes: once they hold more than `budget` distinct
    /// words, [`over_budget`](Self::over_budget) says so, and the caller should take
    /// them all ([`take_all`](Self::take_all)) rather than wait for their windows to
    /// end. Unbounded by default.
    ///
    /// The words of one message are counted together (its hold must go with all of
    /// them), so the panes reach at most `budget` plus what was added before the caller
    /// looked again, the largest message's words at the least.
    #[must_use]
    pub fn with_word_budget(mut self, budget: usize) -> Self {
        self.word_budget = budget;
        self
    }

    /// Whether the open panes hold more distinct words than their budget.
    pub fn over_budget(&self) -> bool {
        self.open_words() > self.word_budget
    }

    /// Distinct words in the open panes (summed over the counting shards).
    pub fn open_words(&self) -> usize {
        self.words.load(Ordering::Relaxed)
    }

    /// Counts the words of `text`, published at `published`, into its window's open pane.
    pub fn add(&self, published: SystemTime, id: Fingerprint, text: &str, hold: H, now: SystemTime) -> Added {
        let window = Window::containing(published, self.size);
        let key = u64::from_le_bytes(id[..8].try_into().expect("8 bytes"));
        // Fingerprints are hashes, uniform in their first bytes.
        let mut seen = lock(&self.seen[(key % self.seen.len() as u64) as usize]);
        let new = seen.entry(window).or_default().insert(id);
        let mut counting = lock(&self.counting[thread_slot() % self.counting.len()]);
        let pane = counting.entry(window).or_insert_with(|| OpenPane {
            counts: HashMap::new(),
            holds: Vec::new(),
            ready_at: (window.end() + self.grace).max(now + self.settle),
        });
        pane.holds.push(hold);
        if !new {
            return Added::Duplicate;
        }
        drop(seen);
        let before = pane.counts.len();
        for word in words(text) {
            match pane.counts.get_mut(word) {
                Some(count) => *count += 1,
                None => {
                    pane.counts.insert(word.to_owned(), 1);
                }
            }
        }
        self.words.fetch_add(pane.counts.len() - before, Ordering::Relaxed);
        Added::Counted
    }

    /// Removes and returns the panes ready at `now`: every window that is ready in any
    /// shard, taken from all of them.
    pub fn take_ready(&self, now: SystemTime) -> Vec<Pane<H>> {
        let mut ready = BTreeSet::new();
        for shard in &self.counting {
            let shard = lock(shard);
            ready.extend(shard.iter().filter(|(_, pane)| pane.ready_at <= now).map(|(window, _)| *window));
        }
        let panes = self.take(&ready);
        self.forget_before(now);
        panes
    }

    /// Removes and returns every open pane, ready or not: for a clean shutdown.
    pub fn take_all(&self) -> Vec<Pane<H>> {
        let mut windows = BTreeSet::new();
        for shard in &self.counting {
            windows.extend(lock(shard).keys().copied());
        }
        self.take(&windows)
    }

    /// Holds in open panes.
    pub fn held(&self) -> usize {
        self.counting.iter().map(|shard| lock(shard).values().map(|pane| pane.holds.len()).sum::<usize>()).sum()
    }

    /// Takes `windows` out of every shard, each as one pane.
    fn take(&self, windows: &BTreeSet<Window>) -> Vec<Pane<H>> {
        if windows.is_empty() {
            return Vec::new();
        }
        // Every fingerprint shard is held until the counts are out, so that no message
        // is between its fingerprint and its counts meanwhile: both leave together.
        let mut seen: Vec<_> = self.seen.iter().map(|shard| lock(shard)).collect();
        for shard in &mut seen {
            shard.retain(|window, _| !windows.contains(window));
        }
        let mut parts: BTreeMap<Window, Vec<OpenPane<H>>> = BTreeMap::new();
        for shard in &self.counting {
            let mut shard = lock(shard);
            for window in windows {
                if let Some(part) = shard.remove(window) {
                    self.words.fetch_sub(part.counts.len(), Ordering::Relaxed);
                    parts.entry(*window).or_default().push(part);
                }
            }
        }
        drop(seen);
        let mut next_pane = lock(&self.next_pane);
        parts
            .into_iter()
            .map(|(window, parts)| {
                let number = next_pane.get(&window).copied().unwrap_or(0);
                next_pane.insert(window, number + 1);
                merge(window, number, parts)
            })
            .collect()
    }

    fn forget_before(&self, now: SystemTime) {
        let horizon = now.checked_sub(REMEMBER).unwrap_or(UNIX_EPOCH);
        lock(&self.next_pane).retain(|window, _| window.end() > horizon);
    }
}

/// One pane from the shards' parts of it: counts summed, holds together.
fn merge<H>(window: Window, number: u32, parts: Vec<OpenPane<H>>) -> Pane<H> {
    let mut parts = parts.into_iter();
    let first = parts.next().expect("a window is taken from at least one shard");
    let (mut counts, mut holds) = (first.counts, first.holds);
    for part in parts {
        holds.extend(part.holds);
        for (word, count) in part.counts {
            *counts.entry(word).or_default() += count;
        }
    }
    let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
    counts.sort_unstable();
    Pane { window, number, counts, holds }
}

/// Locks `mutex`. A worker that panicked while counting may have left a message half
/// counted beside its hold: rather than publish and ack that, the pipeline stops here,
/// and what it held is redelivered and counted again.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("a worker panicked while counting")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: Duration = Duration::from_secs(15);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn id(tag: u8) -> Fingerprint {
        [tag; 32]
    }

    fn sorted(mut holds: Vec<u32>) -> Vec<u32> {
        holds.sort_unstable();
        holds
    }

    fn windows() -> Windows<u32> {
        Windows::new(SIZE, Duration::from_millis(500), Duration::from_secs(1), 4)
    }

    proptest::proptest! {
        #[test]
        fn splits_exactly_as_the_original_regex(text in "(?s).{0,64}|[a-z' ,.\u{e0}-\u{ff}\u{300}\u{200d}_0-9]{0,64}") {
            let original = regex::Regex::new(r"[\w']+").unwrap();
            let want: Vec<&str> = original.find_iter(&text).map(|m| m.as_str()).collect();
            proptest::prop_assert_eq!(words(&text).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn splits_like_the_original() {
        let got: Vec<&str> = words("Lorem ipsum, dolor's sit-amet! Ünïcode 42").collect();
        assert_eq!(got, ["Lorem", "ipsum", "dolor's", "sit", "amet", "Ünïcode", "42"]);
    }

    #[test]
    fn windows_are_aligned_to_their_size() {
        let w = Window::containing(at(1_000_017), SIZE);
        assert_eq!((w.start_ms, w.end_ms), (1_000_005_000, 1_000_020_000));
    }

    #[test]
    fn counts_per_window_and_emits_after_the_end() {
        let windows = windows();
        windows.add(at(1_000_005), id(b'1'), "a b a", 1, at(1_000_005));
        windows.add(at(1_000_019), id(b'2'), "b", 2, at(1_000_019));
        windows.add(at(1_000_020), id(b'3'), "c", 3, at(1_000_020));
        assert!(windows.take_ready(at(1_000_020)).is_empty(), "inside the grace period");
        let panes = windows.take_ready(at(1_000_021));
        assert_eq!(panes.len(), 1);
        assert_eq!(panes[0].counts, [("a".to_owned(), 2), ("b".to_owned(), 2)]);
        assert_eq!(sorted(panes[0].holds.clone()), [1, 2]);
        assert_eq!(panes[0].number, 0);
        assert_eq!(windows.held(), 1);
    }

    #[test]
    fn open_words_follow_the_panes_and_the_budget_says_when_to_take_them() {
        // Property: the open word count is the distinct words of the open panes (per
        // shard), back to zero once they are taken; over the budget is reported only
        // past it.
        let windows = windows().with_word_budget(3);
        windows.add(at(1_000_005), id(b'1'), "a b a", 1, at(1_000_005));
        windows.add(at(1_000_006), id(b'2'), "b c", 2, at(1_000_006));
        assert_eq!(windows.open_words(), 3);
        assert!(!windows.over_budget());
        windows.add(at(1_000_021), id(b'3'), "a", 3, at(1_000_021));
        assert_eq!(windows.open_words(), 4, "another window's pane holds its own copy of `a`");
        assert!(windows.over_budget());
        let first = windows.take_ready(at(1_000_022));
        assert_eq!(first.len(), 1);
        assert_eq!(windows.open_words(), 1);
        assert!(!windows.over_budget());
        windows.take_all();
        assert_eq!(windows.open_words(), 0);
    }

    #[test]
    fn late_data_opens_a_further_pane_and_nothing_is_dropped() {
        let windows = windows();
        windows.add(at(1_000_005), id(b'1'), "x", 1, at(1_000_005));
        assert_eq!(windows.take_ready(at(1_000_030)).len(), 1);
        windows.add(at(1_000_006), id(b'2'), "x y", 2, at(1_000_031));
        assert!(windows.take_ready(at(1_000_031)).is_empty(), "a late pane settles first");
        let late = windows.take_ready(at(1_000_032));
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].number, 1);
        assert_eq!(late[0].counts, [("x".to_owned(), 1), ("y".to_owned(), 1)]);
    }

    #[test]
    fn redelivered_messages_are_held_but_counted_once() {
        let windows = windows();
        assert_eq!(windows.add(at(1_000_005), id(b'm'), "w", 1, at(1_000_005)), Added::Counted);
        assert_eq!(windows.add(at(1_000_005), id(b'm'), "w", 2, at(1_000_006)), Added::Duplicate);
        let panes = windows.take_all();
        assert_eq!(panes[0].counts, [("w".to_owned(), 1)]);
        assert_eq!(panes[0].holds, [1, 2], "both deliveries are acked with the pane");
    }

    #[test]
    fn shards_sum_into_one_pane_per_window() {
        // Messages spread over every shard still come out as one pane per window, with
        // the counts of all shards summed and every hold handed back.
        let windows = windows();
        std::thread::scope(|scope| {
            for thread in 0..4u8 {
                let windows = &windows;
                scope.spawn(move || {
                    for tag in (0..=255u8).filter(|tag| tag % 4 == thread) {
                        let mut id = [0; 32];
                        id[0] = tag;
                        windows.add(at(1_000_005), id, "w w x", u32::from(tag), at(1_000_005));
                    }
                });
            }
        });
        let panes = windows.take_all();
        assert_eq!(panes.len(), 1);
        assert_eq!(panes[0].counts, [("w".to_owned(), 512), ("x".to_owned(), 256)]);
        assert_eq!(sorted(panes[0].holds.clone()), (0..=255).collect::<Vec<_>>());
    }

    #[test]
    fn a_window_ready_in_one_shard_is_taken_from_all() {
        // A late message arriving in one shard after another shard's part became ready
        // does not split the window into two panes: the ready part takes the rest along.
        let windows = windows();
        let (early, late) = ([0; 32], [1; 32]);
        // From two threads, so into two counting shards.
        std::thread::scope(|scope| {
            scope.spawn(|| windows.add(at(1_000_005), early, "a", 1, at(1_000_005)));
        });
        std::thread::scope(|scope| {
            scope.spawn(|| windows.add(at(1_000_006), late, "b", 2, at(1_000_020)));
        });
        let panes = windows.take_ready(at(1_000_020) + Duration::from_millis(600));
        assert_eq!(panes.len(), 1);
        assert_eq!(panes[0].counts, [("a".to_owned(), 1), ("b".to_owned(), 1)]);
        assert_eq!(windows.held(), 0);
    }

    #[test]
    fn late_panes_are_numbered_per_window_whatever_the_shard() {
        // Pane numbers count the window's emissions, not a shard's: a late message
        // landing in a shard that never saw the window still gets pane 1.
        let windows = windows();
        windows.add(at(1_000_005), [0; 32], "x", 1, at(1_000_005));
        assert_eq!(windows.take_ready(at(1_000_030))[0].number, 0);
        windows.add(at(1_000_005), [3; 32], "x", 2, at(1_000_031));
        let late = windows.take_all();
        assert_eq!((late[0].number, late[0].holds.as_slice()), (1, &[2][..]));
    }

    #[test]
    fn workers_counting_at_once_count_what_one_would() {
        // Four threads adding interleaved messages, with every message delivered twice,
        // produce exactly the counts of one thread adding each message once.
        let windows = std::sync::Arc::new(windows());
        let threads: Vec<_> = (0..4u32)
            .map(|thread| {
                let windows = windows.clone();
                std::thread::spawn(move || {
                    for n in 0..2_000u32 {
                        let message = n % 1_000 * 4 + thread;
                        let mut id = [0; 32];
                        id[..4].copy_from_slice(&message.to_le_bytes());
                        let text = format!("all t{thread} m{}", message % 7);
                        windows.add(at(1_000_005 + u64::from(message % 30)), id, &text, message, at(1_000_000));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|thread| thread.join().unwrap());
        let panes = windows.take_all();
        assert_eq!(panes.len(), 2, "30 s of publish times from a window's start: two 15 s windows");
        let total = |word: &str| -> u64 {
            panes.iter().flat_map(|pane| &pane.counts).filter(|(w, _)| w == word).map(|(_, c)| c).sum()
        };
        assert_eq!(total("all"), 4_000);
        assert_eq!((0..4).map(|t| total(&format!("t{t}"))).collect::<Vec<_>>(), [1_000; 4]);
        assert_eq!(panes.iter().map(|pane| pane.holds.len()).sum::<usize>(), 8_000, "every delivery held");
    }
}
