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

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// Seeded per process: the words come from other tenants' messages, so an unseeded
// hash would let one of them flood a bucket.
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

/// Whether `c` belongs to the original tokenizer's class `[\w']` (Unicode `\w`, as the
/// regex crate defines it). ASCII, nearly all of the input, is decided here without
/// a table lookup; the regex crate's own tables decide the rest.
fn is_word_char(c: char) -> bool {
    if c.is_ascii() { c.is_ascii_alphanumeric() || c == '_' || c == '\'' } else { regex_syntax::is_word_character(c) }
}

/// The words of `text`, as the original pipeline's `[\w']+` split them; a scan instead
/// of a regex search, which cost two DFA passes per word.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !is_word_char(c)).filter(|word| !word.is_empty())
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

/// One pane being filled.
struct OpenPane<H> {
    number: u32,
    counts: HashMap<String, u64>,
    fingerprints: HashSet<Fingerprint>,
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
pub type Fingerprint = [u8; 16];

/// Whether a message was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Its words were counted.
    Counted,
    /// A copy of it was already counted in the same open pane (a redelivery, or a
    /// replay): held, not counted again.
    Duplicate,
}

/// Panes being filled, by window.
pub struct Windows<H> {
    size: Duration,
    grace: Duration,
    settle: Duration,
    open: BTreeMap<Window, OpenPane<H>>,
    /// Next pane number of windows already emitted, so late data gets a further pane.
    next_pane: BTreeMap<Window, u32>,
}

/// How long emitted windows are remembered, to number their late panes.
const REMEMBER: Duration = Duration::from_secs(24 * 60 * 60);

impl<H> Windows<H> {
    /// Windows of `size`. A window's first pane is emitted `grace` after the window ends;
    /// a pane whose first message arrived later than that waits `settle` from that
    /// message, so that a backlog is counted in a few panes rather than one per message.
    pub fn new(size: Duration, grace: Duration, settle: Duration) -> Self {
        Self { size, grace, settle, open: BTreeMap::new(), next_pane: BTreeMap::new() }
    }

    /// Counts the words of `text`, published at `published`, into its window's open pane.
    pub fn add(&mut self, published: SystemTime, id: Fingerprint, text: &str, hold: H, now: SystemTime) -> Added {
        let window = Window::containing(published, self.size);
        let (grace, settle) = (self.grace, self.settle);
        let next_pane = &self.next_pane;
        let pane = self.open.entry(window).or_insert_with(|| OpenPane {
            number: next_pane.get(&window).copied().unwrap_or(0),
            counts: HashMap::new(),
            fingerprints: HashSet::new(),
            holds: Vec::new(),
            ready_at: (window.end() + grace).max(now + settle),
        });
        pane.holds.push(hold);
        if !pane.fingerprints.insert(id) {
            return Added::Duplicate;
        }
        for word in words(text) {
            match pane.counts.get_mut(word) {
                Some(count) => *count += 1,
                None => {
                    pane.counts.insert(word.to_owned(), 1);
                }
            }
        }
        Added::Counted
    }

    /// Removes and returns the panes ready at `now`.
    pub fn take_ready(&mut self, now: SystemTime) -> Vec<Pane<H>> {
        let ready: Vec<Window> = self.open.iter().filter(|(_, pane)| pane.ready_at <= now).map(|(w, _)| *w).collect();
        let panes = ready.into_iter().map(|window| self.emit(window)).collect();
        self.forget_before(now);
        panes
    }

    /// Removes and returns every open pane, ready or not: for a clean shutdown.
    pub fn take_all(&mut self) -> Vec<Pane<H>> {
        let windows: Vec<Window> = self.open.keys().copied().collect();
        windows.into_iter().map(|window| self.emit(window)).collect()
    }

    /// Holds in open panes.
    pub fn held(&self) -> usize {
        self.open.values().map(|pane| pane.holds.len()).sum()
    }

    fn emit(&mut self, window: Window) -> Pane<H> {
        let pane = self.open.remove(&window).expect("emitting an open window");
        self.next_pane.insert(window, pane.number + 1);
        let mut counts: Vec<(String, u64)> = pane.counts.into_iter().collect();
        counts.sort_unstable();
        Pane { window, number: pane.number, counts, holds: pane.holds }
    }

    fn forget_before(&mut self, now: SystemTime) {
        let horizon = now.checked_sub(REMEMBER).unwrap_or(UNIX_EPOCH);
        self.next_pane.retain(|window, _| window.end() > horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: Duration = Duration::from_secs(15);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn id(tag: u8) -> Fingerprint {
        [tag; 16]
    }

    fn windows() -> Windows<u32> {
        Windows::new(SIZE, Duration::from_millis(500), Duration::from_secs(1))
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
        let mut windows = windows();
        windows.add(at(1_000_005), id(b'1'), "a b a", 1, at(1_000_005));
        windows.add(at(1_000_019), id(b'2'), "b", 2, at(1_000_019));
        windows.add(at(1_000_020), id(b'3'), "c", 3, at(1_000_020));
        assert!(windows.take_ready(at(1_000_020)).is_empty(), "inside the grace period");
        let panes = windows.take_ready(at(1_000_021));
        assert_eq!(panes.len(), 1);
        assert_eq!(panes[0].counts, [("a".to_owned(), 2), ("b".to_owned(), 2)]);
        assert_eq!(panes[0].holds, [1, 2]);
        assert_eq!(panes[0].number, 0);
        assert_eq!(windows.held(), 1);
    }

    #[test]
    fn late_data_opens_a_further_pane_and_nothing_is_dropped() {
        let mut windows = windows();
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
        let mut windows = windows();
        assert_eq!(windows.add(at(1_000_005), id(b'm'), "w", 1, at(1_000_005)), Added::Counted);
        assert_eq!(windows.add(at(1_000_005), id(b'm'), "w", 2, at(1_000_006)), Added::Duplicate);
        let panes = windows.take_all();
        assert_eq!(panes[0].counts, [("w".to_owned(), 1)]);
        assert_eq!(panes[0].holds, [1, 2], "both deliveries are acked with the pane");
    }
}
