//! How `debug-subscriber` shows one message: opened, or why not, as a line of text for
//! a person (message-derived text escaped) or a JSON object.

use cli::escape::{Escaped, escaped};
use envelope::{OpenError, Opened};

/// One opened message: its id, mode, key, seal time, who attested it, its attributes
/// and its data.
pub(crate) fn opened(id: &str, opened: &Opened, json: bool) -> String {
    let text = String::from_utf8_lossy(&opened.data);
    let sealed_at = humantime::format_rfc3339_micros(opened.sealed_at).to_string();
    if json {
        let record = serde_json::json!({
            "message_id": id, "status": "opened", "mode": opened.mode.as_str(),
            "kms_key": opened.kms_key.as_ref().map(|key| key.as_str()), "sealed_at": sealed_at,
            "attested_by": opened.attestation.as_ref().map(ToString::to_string),
            "attributes": opened.attributes, "data": text,
        });
        return record.to_string();
    }
    // Escaped: whoever publishes chooses these, and a newline would start a line that
    // looks like this tool's own.
    let mut attributes: Vec<_> =
        opened.attributes.iter().map(|(k, v)| format!("{}={}", Escaped(k), Escaped(v))).collect();
    attributes.sort();
    let attributes = attributes.join(", ");
    let attested = match &opened.attestation {
        Some(attestation) => format!(" attested_by=({})", escaped(&attestation.to_string())),
        None => String::new(),
    };
    format!(
        "OPENED {} mode={} kms_key={} sealed_at={sealed_at}{attested} attributes={{{attributes}}}\n  {}",
        Escaped(id),
        opened.mode,
        opened.kms_key.as_ref().map_or("-", |key| key.as_str()),
        Escaped(&text)
    )
}

/// One message that did not open: `RETRY` (transient) or `REJECTED`, its reason code and
/// detail.
pub(crate) fn refused(id: &str, error: &OpenError, json: bool) -> String {
    let status = if error.is_transient() { "retry" } else { "rejected" };
    if json {
        let record = serde_json::json!({"message_id": id, "status": status, "reason": error.reason(), "detail": error.to_string()});
        return record.to_string();
    }
    let (id, detail) = (Escaped(id), escaped(&error.to_string()));
    format!("{} {id} reason={}: {detail}", status.to_uppercase(), error.reason())
}
