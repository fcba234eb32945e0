//! Where the messages' texts come from: `--message`, `--input FILE|-`, or the article's
//! lorem paragraphs.

use std::io::BufRead as _;

use anyhow::Context as _;

use crate::args::Cli;

/// Where message texts come from.
pub enum Texts {
    /// Given lines, cycled until `--count` is reached.
    Cycled(Vec<String>),
    /// Lines of stdin, sent as they arrive, so that `publisher --input -` can sit at the
    /// end of a pipe.
    Stdin(tokio::sync::mpsc::Receiver<std::io::Result<String>>),
}

impl Texts {
    /// The texts `cli` names; each given line must fit Pub/Sub's message limit with
    /// `attribute_bytes` of attributes beside it.
    pub fn from_cli(cli: &Cli, attribute_bytes: usize) -> anyhow::Result<Self> {
        if !cli.message.is_empty() {
            for (index, text) in cli.message.iter().enumerate() {
                check_fits(text, attribute_bytes, || format!("--message number {}", index + 1))?;
            }
            return Ok(Texts::Cycled(cli.message.clone()));
        }
        let Some(path) = &cli.input else {
            // Ten of the lorem paragraphs in `lorem.txt` (made once with the lipsum crate,
            // kept as data so that no text generator ships in the publisher), drawn
            // afresh each run so that runs differ.
            let corpus: Vec<&str> = include_str!("lorem.txt").lines().collect();
            let paragraphs = rand::seq::index::sample(&mut rand::rng(), corpus.len(), 10).into_iter();
            let paragraphs = paragraphs.map(|i| corpus[i].to_owned());
            return Ok(Texts::Cycled(paragraphs.collect()));
        };
        if path.as_os_str() == "-" {
            return Ok(Texts::Stdin(cli::stdin_lines()));
        }
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let lines: Vec<String> = std::io::BufReader::new(file).lines().collect::<Result<_, _>>()?;
        anyhow::ensure!(!lines.is_empty(), "{} holds no lines to send", path.display());
        for (index, line) in lines.iter().enumerate() {
            check_fits(line, attribute_bytes, || format!("line {} of {}", index + 1, path.display()))?;
        }
        Ok(Texts::Cycled(lines))
    }

    /// Messages to send: `--count`, else every given line once; unknown for stdin.
    pub fn total(&self, count: Option<u64>) -> Option<u64> {
        match self {
            Texts::Cycled(lines) => Some(count.unwrap_or(lines.len() as u64)),
            Texts::Stdin(_) => count,
        }
    }

    pub async fn get(&mut self, index: u64) -> anyhow::Result<Option<String>> {
        match self {
            Texts::Cycled(lines) => Ok(Some(lines[index as usize % lines.len()].clone())),
            Texts::Stdin(receiver) => Ok(receiver.recv().await.transpose().context("cannot read stdin")?),
        }
    }
}

/// Refuses a text that cannot fit one Pub/Sub message, before anything is sealed or
/// sent, naming where it came from.
fn check_fits(text: &str, attribute_bytes: usize, place: impl FnOnce() -> String) -> anyhow::Result<()> {
    let size = text.len() + attribute_bytes;
    anyhow::ensure!(
        size <= bus::MAX_MESSAGE_BYTES,
        "{} is {} bytes (with its attributes {size}), over Pub/Sub's limit of {} bytes a message; nothing was sent",
        place(),
        text.len(),
        bus::MAX_MESSAGE_BYTES
    );
    Ok(())
}
