//! How a binary ends: an error becomes one headline that says the cause, then each
//! cause beneath it that adds something, never the same words twice.

use std::process::ExitCode;

/// Prints `result`'s error, if any, and gives the exit code: the body's own on success,
/// 1 on error. With `--log_format json` the error is one Cloud Logging entry (severity
/// `ERROR`, the whole text in `message`), not lines of text that Cloud Logging would
/// take for four entries; it is written whatever `RUST_LOG` filters.
pub fn exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            let text = render(&error);
            if crate::logging::chosen() == Some(crate::logging::LogFormat::Json) {
                let time = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
                eprintln!("{}", serde_json::json!({ "severity": "ERROR", "message": text, "time": time }));
            } else {
                eprintln!("{text}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `error: HEADLINE: ROOT CAUSE`, then each middle cause that says something the lines
/// above do not, indented. A cause whose text is already part of a line above (clients
/// that repeat their source in their own message) is dropped.
pub fn render(error: &anyhow::Error) -> String {
    let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
    let headline = chain[0].as_str();
    let root = chain.last().filter(|_| chain.len() > 1).map(String::as_str);
    let mut said: Vec<&str> = [Some(headline), root].into_iter().flatten().collect();
    let mut middle = Vec::new();
    for cause in chain.iter().skip(1).take(chain.len().saturating_sub(2)) {
        // A layer that only prefixes the root (`keyring k.json: No such file`) adds just
        // its prefix.
        let cause = match root.and_then(|root| cause.strip_suffix(root)) {
            Some(prefix) => prefix.trim_end_matches([':', ' ']),
            None => cause.as_str(),
        };
        if cause.is_empty() || said.iter().any(|line| line.contains(cause)) {
            continue;
        }
        said.push(cause);
        middle.push(cause);
    }
    let mut text = match root {
        Some(root) if !headline.contains(root) => format!("error: {headline}: {root}"),
        _ => format!("error: {headline}"),
    };
    // The closest causes say most; a client's chain can run to a dozen layers.
    for cause in middle.iter().take(MAX_CAUSES) {
        text.push_str("\n  because: ");
        text.push_str(cause);
    }
    if middle.len() > MAX_CAUSES {
        text.push_str(&format!("\n  ({} more causes)", middle.len() - MAX_CAUSES));
    }
    text
}

/// Causes shown between the headline and the root.
const MAX_CAUSES: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headline_names_the_root_cause_and_repeats_are_dropped() {
        // The publisher's old headline `cannot seal message 0` hid its cause; a client
        // whose message repeats its source printed the same words twice; such a layer
        // now adds only its own words.
        let error = anyhow::anyhow!("key projects/p/locations/l/keyRings/r/cryptoKeys/k not found")
            .context("transport error: key projects/p/locations/l/keyRings/r/cryptoKeys/k not found")
            .context("cannot wrap a data key")
            .context("cannot seal message 0");
        assert_eq!(
            render(&error),
            "error: cannot seal message 0: key projects/p/locations/l/keyRings/r/cryptoKeys/k not found\n  \
             because: cannot wrap a data key\n  because: transport error"
        );
        assert_eq!(render(&anyhow::anyhow!("one line")), "error: one line");
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let error =
            anyhow::Error::new(io).context("keyring k.json: entity not found").context("there is no keyring at k.json");
        assert_eq!(render(&error), "error: there is no keyring at k.json: entity not found\n  because: keyring k.json");
    }
}
