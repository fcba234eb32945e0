//! Window totals: the pipeline's partial counts (one per replica, window, pane and word)
//! summed per window, each part once, and forgotten once a window has been quiet long
//! enough that no more parts are expected.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

/// What became of one message of the output topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new part: the window's total changed.
    Counted,
    /// A part already summed (Pub/Sub delivers at least once).
    Repeat,
    /// Not a pipeline's output (no window attributes, or not `word: count`).
    NotPipelineOutput,
    /// Not sealed under the pipeline's key, which the subscriber was told to require.
    Unauthenticated,
}

/// The sums of every window seen and not yet forgotten.
pub struct Totals {
    /// A window is forgotten once no part has arrived for this long.
    forget_after: Duration,
    windows: BTreeMap<String, Window>,
    /// Windows forgotten so far.
    pub forgotten: u64,
    /// When this subscriber began listening: a window that ended before may have had
    /// parts published before, which it never sees.
    listening_since: SystemTime,
}

/// One window's sum.
struct Window {
    end: String,
    counts: HashMap<String, u64>,
    /// (replica, pane, word) of each part summed, so that a repeat is summed once.
    parts: HashSet<(String, u32, String)>,
    panes: BTreeSet<(String, u32)>,
    /// Words each (replica, pane) has, as its parts say (`pane_words`; absent from
    /// pipelines before it).
    pane_words: HashMap<(String, u32), u64>,
    /// Whether the window ended before this subscriber listened.
    ended_before_listening: bool,
    /// When the first part not yet printed arrived.
    changed: Option<Instant>,
    updated: Instant,
}

/// A window's sum as it stands, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub window_start: String,
    pub window_end: String,
    /// Words counted in the window, all replicas and panes together.
    pub total: u64,
    pub replicas: usize,
    pub panes: usize,
    /// Whether parts of the window may be missing: it ended before this subscriber
    /// listened, and not every pane of every replica seen is known to be whole (from
    /// pane 0 up, each with as many words as its `pane_words` says).
    pub partial: bool,
    /// Word counts, most frequent first, then by word.
    pub counts: Vec<(String, u64)>,
}

impl Totals {
    /// Totals of a subscriber that began listening at `listening_since`.
    pub fn new(forget_after: Duration, listening_since: SystemTime) -> Self {
        Self { forget_after, windows: BTreeMap::new(), forgotten: 0, listening_since }
    }

    /// Sums one message of the output topic into its window.
    pub fn add(&mut self, attributes: &HashMap<String, String>, data: &[u8], now: Instant) -> Added {
        let Some(part) = Part::parse(attributes, data) else { return Added::NotPipelineOutput };
        let listening_since = self.listening_since;
        let window = self.windows.entry(part.window_start.to_owned()).or_insert_with(|| Window {
            end: part.window_end.to_owned(),
            counts: HashMap::new(),
            parts: HashSet::new(),
            panes: BTreeSet::new(),
            pane_words: HashMap::new(),
            ended_before_listening: humantime::parse_rfc3339(part.window_end).is_ok_and(|end| end < listening_since),
            changed: None,
            updated: now,
        });
        if !window.parts.insert((part.replica.to_owned(), part.pane, part.word.to_owned())) {
            return Added::Repeat;
        }
        window.panes.insert((part.replica.to_owned(), part.pane));
        if let Some(words) = part.pane_words {
            window.pane_words.insert((part.replica.to_owned(), part.pane), words);
        }
        *window.counts.entry(part.word.to_owned()).or_default() += part.count;
        window.changed.get_or_insert(now);
        window.updated = now;
        Added::Counted
    }

    /// The windows whose sums changed since the last call and have had no new part for
    /// `quiet` (a pane's parts arrive one word at a time: a window is shown once they
    /// have stopped coming, not half counted), or have waited ten times that: a window
    /// that never goes quiet is still shown. Oldest window first.
    pub fn take_changed(&mut self, now: Instant, quiet: Duration) -> Vec<Snapshot> {
        let mut changed = Vec::new();
        for (start, window) in &mut self.windows {
            let Some(first) = window.changed else { continue };
            let quiet_now = now.saturating_duration_since(window.updated) >= quiet;
            if quiet_now || now.saturating_duration_since(first) >= quiet * 10 {
                window.changed = None;
                changed.push(window.snapshot(start));
            }
        }
        changed
    }

    /// Forgets the windows no part has reached for `forget_after`; returns how many.
    pub fn forget_quiet(&mut self, now: Instant) -> usize {
        let before = self.windows.len();
        let forget_after = self.forget_after;
        self.windows.retain(|_, window| now.saturating_duration_since(window.updated) < forget_after);
        let forgotten = before - self.windows.len();
        self.forgotten += forgotten as u64;
        forgotten
    }

    /// Windows held.
    pub fn len(&self) -> usize {
        self.windows.len()
    }
}

impl Window {
    fn snapshot(&self, start: &str) -> Snapshot {
        let mut counts: Vec<(String, u64)> = self.counts.iter().map(|(word, count)| (word.clone(), *count)).collect();
        counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Snapshot {
            window_start: start.to_owned(),
            window_end: self.end.clone(),
            total: self.counts.values().sum(),
            replicas: self.panes.iter().map(|(replica, _)| replica).collect::<BTreeSet<_>>().len(),
            panes: self.panes.len(),
            partial: self.ended_before_listening && !self.whole(),
            counts,
        }
    }

    /// Whether every replica seen has every pane from 0 to its last seen, each with as
    /// many parts as its `pane_words` says.
    fn whole(&self) -> bool {
        let mut seen: HashMap<(&str, u32), u64> = HashMap::new();
        for (replica, pane, _) in &self.parts {
            *seen.entry((replica.as_str(), *pane)).or_default() += 1;
        }
        let mut last: BTreeMap<&str, u32> = BTreeMap::new();
        for (replica, pane) in &self.panes {
            let at = last.entry(replica.as_str()).or_default();
            *at = (*at).max(*pane);
        }
        last.iter().all(|(replica, last)| {
            (0..=*last).all(|pane| {
                let expected = self.pane_words.get(&((*replica).to_owned(), pane));
                expected.is_some_and(|words| seen.get(&(*replica, pane)) == Some(words))
            })
        })
    }
}

impl Snapshot {
    /// The window as a person reads it: a heading, then a line for each of the `top`
    /// most frequent words (every word if `top` is 0) and how many more there are.
    /// Words and window bounds come from the output topic's messages, so they are shown
    /// escaped.
    pub fn text(&self, top: usize) -> String {
        use cli::escape::Escaped;
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut text = format!(
            "window {} .. {}: {} words ({}, {}){}\n",
            Escaped(&self.window_start),
            Escaped(&self.window_end),
            self.total,
            plural(self.replicas, "replica", "replicas"),
            plural(self.panes, "pane", "panes"),
            if self.partial {
                ", PARTIAL: it ended before this subscriber listened, and parts are missing"
            } else {
                ""
            },
        );
        let shown = if top == 0 { self.counts.len() } else { top.min(self.counts.len()) };
        for (word, count) in &self.counts[..shown] {
            text.push_str(&format!("  {}: {count}\n", Escaped(word)));
        }
        let more = self.counts.len() - shown;
        if more > 0 {
            text.push_str(&format!("  ... and {more} more words (--top 0 lists every word)\n"));
        }
        text
    }

    /// The window as one JSON record.
    pub fn json(&self) -> serde_json::Value {
        let counts: serde_json::Map<String, serde_json::Value> =
            self.counts.iter().map(|(word, count)| (word.clone(), (*count).into())).collect();
        serde_json::json!({
            "window_start": self.window_start,
            "window_end": self.window_end,
            "total": self.total,
            "replicas": self.replicas,
            "panes": self.panes,
            "partial": self.partial,
            "counts": counts,
        })
    }
}

/// One `word: count` of one pane, as the pipeline publishes it.
struct Part<'a> {
    window_start: &'a str,
    window_end: &'a str,
    replica: &'a str,
    pane: u32,
    pane_words: Option<u64>,
    word: &'a str,
    count: u64,
}

impl<'a> Part<'a> {
    fn parse(attributes: &'a HashMap<String, String>, data: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(data).ok()?;
        let (word, count) = text.rsplit_once(": ")?;
        Some(Self {
            window_start: attributes.get(runner::WINDOW_START_ATTR)?,
            window_end: attributes.get(runner::WINDOW_END_ATTR)?,
            replica: attributes.get(runner::REPLICA_ATTR)?,
            pane: attributes.get(runner::PANE_ATTR)?.parse().ok()?,
            pane_words: attributes.get(runner::PANE_WORDS_ATTR).and_then(|words| words.parse().ok()),
            word,
            count: count.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(replica: &str, start: &str, pane: u32) -> HashMap<String, String> {
        HashMap::from([
            (runner::WINDOW_START_ATTR.to_owned(), start.to_owned()),
            (runner::WINDOW_END_ATTR.to_owned(), format!("{start}+15s")),
            (runner::REPLICA_ATTR.to_owned(), replica.to_owned()),
            (runner::PANE_ATTR.to_owned(), pane.to_string()),
        ])
    }

    #[test]
    fn replicas_and_late_panes_sum_into_one_total_each_part_once() {
        // Two replicas' partials and a late pane add up; a repeated delivery does not.
        let mut totals = Totals::new(Duration::from_secs(60), std::time::UNIX_EPOCH);
        let now = Instant::now();
        assert_eq!(totals.add(&part("r1", "w1", 0), b"alpha: 600", now), Added::Counted);
        assert_eq!(totals.add(&part("r2", "w1", 0), b"alpha: 400", now), Added::Counted);
        assert_eq!(totals.add(&part("r2", "w1", 0), b"alpha: 400", now), Added::Repeat);
        assert_eq!(totals.add(&part("r2", "w1", 0), b"beta: 7", now), Added::Counted);
        assert!(totals.take_changed(now, Duration::from_millis(500)).is_empty(), "parts still arriving");
        let first = totals.take_changed(now + Duration::from_millis(500), Duration::from_millis(500));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].counts, [("alpha".to_owned(), 1000), ("beta".to_owned(), 7)]);
        assert_eq!((first[0].total, first[0].replicas, first[0].panes), (1007, 2, 2));
        assert!(totals.take_changed(now, Duration::ZERO).is_empty(), "nothing changed since");

        assert_eq!(totals.add(&part("r1", "w1", 1), b"alpha: 5", now), Added::Counted);
        let updated = totals.take_changed(now, Duration::ZERO);
        assert_eq!(updated[0].counts[0], ("alpha".to_owned(), 1005));
        assert_eq!((updated[0].replicas, updated[0].panes), (2, 3));
    }

    #[test]
    fn a_window_that_never_goes_quiet_is_still_shown() {
        // Parts every 100 ms for 6 s never leave 500 ms of quiet: the window is shown
        // once 5 s have passed since its first unshown part.
        let mut totals = Totals::new(Duration::from_secs(60), std::time::UNIX_EPOCH);
        let start = Instant::now();
        let quiet = Duration::from_millis(500);
        let mut shown_at = None;
        for tenth in 0..60u32 {
            let now = start + Duration::from_millis(100) * tenth;
            totals.add(&part(&format!("r{tenth}"), "w1", 0), b"x: 1", now);
            if shown_at.is_none() && !totals.take_changed(now, quiet).is_empty() {
                shown_at = Some(tenth);
            }
        }
        assert_eq!(shown_at, Some(50));
    }

    #[test]
    fn windows_are_kept_apart_and_words_with_colons_keep_them() {
        // A word is what precedes the last ": ", so counts of odd words are not mangled.
        let mut totals = Totals::new(Duration::from_secs(60), std::time::UNIX_EPOCH);
        let now = Instant::now();
        totals.add(&part("r1", "w1", 0), b"a: b: 3", now);
        totals.add(&part("r1", "w2", 0), b"a: b: 4", now);
        let changed = totals.take_changed(now, Duration::ZERO);
        assert_eq!(
            changed.iter().map(|s| (s.window_start.as_str(), s.counts[0].1)).collect::<Vec<_>>(),
            [("w1", 3), ("w2", 4)]
        );
        assert_eq!(changed[0].counts[0].0, "a: b");
    }

    #[test]
    fn anything_but_pipeline_output_is_refused() {
        // Ciphertext on the bus, a message without window attributes or a count that is
        // not a number is never summed.
        let mut totals = Totals::new(Duration::from_secs(60), std::time::UNIX_EPOCH);
        let now = Instant::now();
        assert_eq!(totals.add(&HashMap::new(), b"alpha: 1", now), Added::NotPipelineOutput);
        assert_eq!(totals.add(&part("r1", "w1", 0), b"alpha", now), Added::NotPipelineOutput);
        assert_eq!(totals.add(&part("r1", "w1", 0), b"alpha: many", now), Added::NotPipelineOutput);
        assert_eq!(totals.add(&part("r1", "w1", 0), &[0xff, b':', b' ', b'1'], now), Added::NotPipelineOutput);
        let mut bad_pane = part("r1", "w1", 0);
        bad_pane.insert(runner::PANE_ATTR.to_owned(), "first".to_owned());
        assert_eq!(totals.add(&bad_pane, b"alpha: 1", now), Added::NotPipelineOutput);
        assert_eq!(totals.len(), 0);
    }

    #[test]
    fn quiet_windows_are_forgotten_and_memory_stays_bounded() {
        // A window with no new part for the bound is dropped and counted; one still
        // receiving parts is kept.
        let mut totals = Totals::new(Duration::from_secs(60), std::time::UNIX_EPOCH);
        let start = Instant::now();
        totals.add(&part("r1", "old", 0), b"x: 1", start);
        totals.add(&part("r1", "busy", 0), b"x: 1", start);
        totals.add(&part("r1", "busy", 1), b"x: 1", start + Duration::from_secs(50));
        assert_eq!(totals.forget_quiet(start + Duration::from_secs(59)), 0);
        assert_eq!(totals.forget_quiet(start + Duration::from_secs(60)), 1);
        assert_eq!((totals.len(), totals.forgotten), (1, 1));
        for n in 0..1000u64 {
            let now = start + Duration::from_secs(100 + n);
            totals.add(&part("r1", &format!("w{n}"), 0), b"x: 1", now);
            totals.forget_quiet(now);
            assert!(totals.len() <= 61, "held {} windows", totals.len());
        }
    }

    // Whoever can publish to the output topic chooses words and window bounds: a
    // newline in either must not print a line of a window that was never counted.
    #[test]
    fn text_shows_words_and_window_bounds_escaped() {
        let mut totals = Totals::new(Duration::from_secs(60), std::time::UNIX_EPOCH);
        let now = Instant::now();
        totals.add(&part("r1", "w1\nwindow forged", 0), b"fox\n  wolf: 1000: 1", now);
        let text = totals.take_changed(now + Duration::from_secs(60), Duration::ZERO)[0].text(0);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains(r"window w1\nwindow forged"), "{text}");
        assert!(text.contains(r"  fox\n  wolf: 1000: 1"), "{text}");
    }

    #[test]
    fn snapshots_read_as_text_and_as_json() {
        // The text names the window and its sizes; the JSON record carries the same.
        let snapshot = Snapshot {
            window_start: "2026-01-01T00:00:00Z".to_owned(),
            window_end: "2026-01-01T00:00:15Z".to_owned(),
            total: 3,
            replicas: 1,
            panes: 2,
            partial: false,
            counts: vec![("b".to_owned(), 2), ("a".to_owned(), 1)],
        };
        assert_eq!(
            snapshot.text(0),
            "window 2026-01-01T00:00:00Z .. 2026-01-01T00:00:15Z: 3 words (1 replica, 2 panes)\n  b: 2\n  a: 1\n"
        );
        assert_eq!(
            snapshot.text(1),
            "window 2026-01-01T00:00:00Z .. 2026-01-01T00:00:15Z: 3 words (1 replica, 2 panes)\n  b: 2\n  ... and 1 \
             more words (--top 0 lists every word)\n",
            "the top word, and how many more"
        );
        let json = snapshot.json();
        assert_eq!((json["total"].as_u64(), json["panes"].as_u64()), (Some(3), Some(2)));
        assert_eq!(json["counts"]["b"].as_u64(), Some(2));
        assert_eq!(json["partial"], false);
        let partial = Snapshot { partial: true, ..snapshot };
        assert!(partial.text(0).lines().next().unwrap().contains("PARTIAL"), "{}", partial.text(0));
        assert_eq!(partial.json()["partial"], true);
    }

    /// A part of window `start` (ending at `end`) from a pane of `words` words.
    fn part_of(replica: &str, end: &str, pane: u32, words: Option<u64>) -> HashMap<String, String> {
        let mut part = part(replica, "2026-01-01T00:00:00Z", pane);
        part.insert(runner::WINDOW_END_ATTR.to_owned(), end.to_owned());
        if let Some(words) = words {
            part.insert(runner::PANE_WORDS_ATTR.to_owned(), words.to_string());
        }
        part
    }

    #[test]
    fn a_window_that_ended_before_listening_is_partial_until_its_panes_are_known_whole() {
        // Property: a subscriber that began listening after a window ended marks it
        // partial while any pane from 0 up of a replica it saw lacks parts, and whole
        // once every such pane has all its `pane_words` parts; a window that ended after
        // it began listening is never marked.
        let listening = humantime::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let now = Instant::now();
        let snapshot = |totals: &mut Totals| totals.take_changed(now, Duration::ZERO).pop().unwrap();

        let mut late = Totals::new(Duration::from_secs(60), listening);
        let end = "2026-01-01T00:00:15Z";
        late.add(&part_of("r1", end, 0, Some(2)), b"a: 1", now);
        assert!(snapshot(&mut late).partial, "one of pane 0's two parts");
        late.add(&part_of("r1", end, 0, Some(2)), b"b: 1", now);
        assert!(!snapshot(&mut late).partial, "pane 0 whole");
        late.add(&part_of("r1", end, 2, Some(1)), b"c: 1", now);
        assert!(snapshot(&mut late).partial, "pane 1 never seen");
        late.add(&part_of("r1", end, 1, Some(1)), b"c: 1", now);
        assert!(!snapshot(&mut late).partial, "panes 0, 1, 2 whole");

        let mut old_pipeline = Totals::new(Duration::from_secs(60), listening);
        old_pipeline.add(&part_of("r1", end, 0, None), b"a: 1", now);
        assert!(snapshot(&mut old_pipeline).partial, "without pane_words nothing is known whole");

        let mut early = Totals::new(Duration::from_secs(60), listening);
        early.add(&part_of("r1", "2026-01-01T00:01:15Z", 3, Some(9)), b"a: 1", now);
        assert!(!snapshot(&mut early).partial, "ended after listening began");
    }
}
