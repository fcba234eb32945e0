//! Logging to stderr: text for a person (colour only on a terminal, never with
//! `NO_COLOR`), or one JSON object per line with the field names Cloud Logging reads
//! (`severity`, `message`, `time`, `logging.googleapis.com/sourceLocation`).

use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for a person.
    #[default]
    Text,
    /// One JSON object per line, as Cloud Logging (GKE, Cloud Run, the Ops Agent) parses it.
    Json,
}

/// The logging flag every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LogFlags {
    /// `text`, or `json` for Cloud Logging. `RUST_LOG` filters (default `info`);
    /// `NO_COLOR` turns colour off.
    #[arg(
        long = "log_format",
        visible_alias = "log-format",
        env = "PUBSUB_ENVELOPE_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

impl LogFlags {
    /// Sets up logging as the flags say.
    pub fn init(&self) {
        init(self.log_format);
    }
}

/// The format logging was set up in, for the last words of a process
/// ([`report::exit`](crate::report::exit)).
static CHOSEN: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format logging was set up in, if it was.
pub fn chosen() -> Option<LogFormat> {
    CHOSEN.get().copied()
}

/// Sets up logging to stderr in `format`, filtered by `RUST_LOG` (default `info`). A
/// `RUST_LOG` that does not parse is reported, not silently ignored.
pub fn init(format: LogFormat) {
    let _ = CHOSEN.set(format);
    let (filter, invalid) = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => match EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new("info"), Some((text, error))),
        },
        _ => (EnvFilter::new("info"), None),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(use_colour()).fmt_fields(escaping_fields()).init(),
        LogFormat::Json => builder.event_format(CloudLogging).init(),
    }
    if let Some((text, error)) = invalid {
        tracing::warn!("RUST_LOG `{text}` is not a valid filter ({error}); logging at `info`");
    }
}

/// Text logs' fields as `name=value`, space-separated as tracing's own, with control
/// characters escaped ([`Escaped`](crate::escape::Escaped)): fields carry what
/// messages say (attribute names, key names, reasons' details), and tracing's default
/// writes a newline in one as it is, which forges a log line.
fn escaping_fields() -> impl for<'writer> FormatFields<'writer> + 'static {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = crate::escape::Escaped(&text);
        match field.name() {
            "message" => write!(writer, "{text}"),
            name => write!(writer, "{}={text}", name.strip_prefix("r#").unwrap_or(name)),
        }
    })
    .delimited(" ")
}

/// Colour only for a person at a terminal who has not asked for none
/// (<https://no-color.org>: `NO_COLOR` set to anything but empty).
fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// Formats an event as one line of JSON with Cloud Logging's special field names; the
/// event's other fields become fields of the entry's `jsonPayload`.
struct CloudLogging;

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let metadata = event.metadata();
        let mut fields = Fields(serde_json::Map::new());
        event.record(&mut fields);
        let mut entry = serde_json::Map::new();
        let severity = match *metadata.level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            _ => "DEBUG",
        };
        entry.insert("severity".into(), severity.into());
        entry.insert("message".into(), fields.0.remove("message").unwrap_or_default());
        entry.insert("time".into(), humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string().into());
        entry.insert("target".into(), metadata.target().into());
        let mut location = serde_json::Map::new();
        if let Some(file) = metadata.file() {
            location.insert("file".into(), file.into());
        }
        if let Some(line) = metadata.line() {
            location.insert("line".into(), line.to_string().into());
        }
        location.insert("function".into(), metadata.module_path().unwrap_or_default().into());
        entry.insert("logging.googleapis.com/sourceLocation".into(), location.into());
        for (name, value) in fields.0 {
            entry.entry(name).or_insert(value);
        }
        writeln!(writer, "{}", serde_json::Value::Object(entry))
    }
}

/// An event's fields as JSON values.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captures what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // A field that carries a newline (an attacker's attribute name, say) stays on its
    // line: text logs escape control characters in every field and in the message.
    #[test]
    fn text_lines_escape_control_characters_in_fields_and_message() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(escaping_fields())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let name = "x\nERROR forged line";
            tracing::warn!(attribute = %name, count = 3_u64, "rejected {}", "a\rb");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r"rejected a\rb attribute=x\nERROR forged line count=3"), "{text}");
    }

    #[test]
    fn json_lines_carry_cloud_loggings_field_names() {
        // Cloud Logging reads `severity` (WARNING, not WARN), `message`, `time` and the
        // source location from a JSON line; the event's own fields stay beside them.
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().event_format(CloudLogging).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(reason = "unwrap_rejected", attempt = 3_u64, "rejected");
        });
        let line = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(line.lines().count(), 1, "{line}");
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(entry["severity"], "WARNING");
        assert_eq!(entry["message"], "rejected");
        assert_eq!(entry["reason"], "unwrap_rejected");
        assert_eq!(entry["attempt"], 3);
        assert!(entry["time"].as_str().unwrap().ends_with('Z'), "{entry}");
        assert_eq!(entry["logging.googleapis.com/sourceLocation"]["file"], file!());
    }
}
