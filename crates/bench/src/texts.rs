//! What the benchmark sends: 1 KiB lorem paragraphs, each line stamped with the time
//! it was handed to the publisher, so that the counts themselves carry latency.

use std::collections::HashMap;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The publisher's lorem paragraphs (60 words each), one per line.
const LOREM: &str = include_str!("../../../bins/publisher/src/lorem.txt");

/// Size of a message's text, stamp included.
const MESSAGE_BYTES: usize = 1024;
/// Distinct paragraphs, cycled.
const PARAGRAPHS: usize = 64;
/// Width of a stamp's time bucket.
pub const STAMP_MILLIS: u64 = 100;

/// The stamp word for a time: `ts` and the 100 ms bucket number. Lorem text has no
/// digits, so a stamp never collides with a counted word.
fn stamp(time: SystemTime) -> String {
    let millis = time.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
    format!("ts{}", millis / STAMP_MILLIS)
}

/// The middle of a stamp's bucket, in Unix milliseconds; `None` if `word` is no stamp.
pub fn stamp_millis(word: &str) -> Option<u64> {
    let bucket: u64 = word.strip_prefix("ts")?.parse().ok()?;
    Some(bucket * STAMP_MILLIS + STAMP_MILLIS / 2)
}

/// Paragraphs and their word counts.
pub struct Corpus {
    paragraphs: Vec<String>,
    counts: Vec<HashMap<String, u64>>,
}

impl Corpus {
    /// Lorem paragraphs that, with a stamp, fill [`MESSAGE_BYTES`].
    pub fn new() -> Self {
        let paragraphs: Vec<String> = (0..PARAGRAPHS as u64)
            .map(|seed| {
                // Consecutive paragraphs of the corpus, from a different one each time.
                let lines: Vec<&str> = LOREM.lines().collect();
                let words = (0..8).map(|i| lines[(seed as usize + i) % lines.len()]).collect::<Vec<_>>().join(" ");
                let room = MESSAGE_BYTES - stamp(SystemTime::now()).len() - 1;
                let cut = words[..room].rfind(' ').unwrap_or(room);
                words[..cut].to_owned()
            })
            .collect();
        let counts = paragraphs.iter().map(|text| count_words(text)).collect();
        Self { paragraphs, counts }
    }

    /// Writes `lines` stamped lines to `sink` and returns the word counts the pipeline
    /// must report for them.
    pub fn write(&self, lines: u64, sink: impl Write) -> std::io::Result<HashMap<String, u64>> {
        let mut sink = std::io::BufWriter::new(sink);
        let mut uses = [0u64; PARAGRAPHS];
        let mut expected = HashMap::new();
        for index in 0..lines as usize {
            let stamp = stamp(SystemTime::now());
            writeln!(sink, "{stamp} {}", self.paragraphs[index % PARAGRAPHS])?;
            uses[index % PARAGRAPHS] += 1;
            *expected.entry(stamp).or_default() += 1;
        }
        sink.flush()?;
        for (counts, uses) in self.counts.iter().zip(uses) {
            for (word, count) in counts {
                *expected.entry(word.clone()).or_default() += count * uses;
            }
        }
        Ok(expected)
    }
}

fn count_words(text: &str) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for word in wordcount::words(text) {
        *counts.entry(word.to_owned()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_counts_match_a_direct_count_of_what_was_written() {
        let corpus = Corpus::new();
        let mut written = Vec::new();
        let expected = corpus.write(200, &mut written).unwrap();
        let text = String::from_utf8(written).unwrap();
        assert!(text.lines().all(|line| line.len() <= MESSAGE_BYTES && line.len() > MESSAGE_BYTES - 40));
        assert_eq!(expected, count_words(&text));
        let stamps: u64 = expected.iter().filter(|(word, _)| stamp_millis(word).is_some()).map(|(_, n)| n).sum();
        assert_eq!(stamps, 200);
    }
}
