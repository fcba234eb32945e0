//! Why Google Cloud found or accepted no credentials, said once with the remedy.
//!
//! Google's auth errors nest three or four layers that each repeat "cannot create the
//! authentication headers ... but future attempts may succeed", and end in a root cause
//! such as a failed DNS lookup of the metadata server, which names neither the missing
//! login nor its fix. The error here is one line: the remedy, where credentials were
//! looked for, and the root cause; the whole chain goes to the debug log.

use std::path::{Path, PathBuf};

/// Where a process's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A service-account key file (`--service_account`).
    KeyFile(PathBuf),
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
    /// application-default file, or the metadata server of a Google Cloud machine.
    ApplicationDefault,
}

/// Who a process is to Google: where its credentials come from (to say so when they
/// fail) and the credentials themselves, asked for only when Google Cloud is used.
pub trait Source {
    /// Where the credentials come from.
    fn origin(&self) -> Origin;
    /// The credentials.
    fn credentials(&self) -> anyhow::Result<google_cloud_auth::credentials::Credentials>;
}

/// No credentials: for what runs on the emulator only (the benchmarks).
pub struct EmulatorOnly;

impl Source for EmulatorOnly {
    fn origin(&self) -> Origin {
        Origin::ApplicationDefault
    }

    fn credentials(&self) -> anyhow::Result<google_cloud_auth::credentials::Credentials> {
        anyhow::bail!("this runs on the Pub/Sub emulator only: set PUBSUB_EMULATOR_HOST")
    }
}

/// The remedy every credentials error starts with.
pub const NO_CREDENTIALS: &str = "Google Cloud refused or found no credentials: run `gcloud auth application-default login`, \
     or pass --service_account KEY.json";

/// How to do without Google Cloud, for Pub/Sub.
pub const OFFLINE_PUBSUB: &str = "or set PUBSUB_EMULATOR_HOST to use the emulator";
/// How to do without Google Cloud, for the KMS.
pub const OFFLINE_KMS: &str = "or use a local keyring: --kms local:PATH";

/// The error for credentials that `origin` gave and Google Cloud refused, or that could
/// not be found: [`NO_CREDENTIALS`], the `offline` alternative, then one line on where
/// they were looked for and the root cause of `error`.
pub fn refused(origin: &Origin, offline: &str, error: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let mut chain = vec![error.to_string()];
    let mut root = error;
    while let Some(source) = root.source() {
        chain.push(source.to_string());
        root = source;
    }
    tracing::debug!(chain = ?chain, "the credentials failed");
    let root = root.to_string();
    let why = match origin {
        Origin::KeyFile(path) => format!("the key file {} did not work: {root}", path.display()),
        Origin::ApplicationDefault => match adc_file() {
            Some(Adc::FromEnv(path)) => {
                format!("the credentials in {} (GOOGLE_APPLICATION_CREDENTIALS) did not work: {root}", path.display())
            }
            Some(Adc::WellKnown(path)) if path.exists() => {
                format!("the application-default credentials in {} did not work: {root}", path.display())
            }
            file => format!(
                "none are set up here (no --service_account, no GOOGLE_APPLICATION_CREDENTIALS{}), and the metadata \
                 server of a Google Cloud machine gave none: {root}",
                match file {
                    Some(Adc::WellKnown(path)) => format!(", no {}", path.display()),
                    _ => String::new(),
                }
            ),
        },
    };
    anyhow::anyhow!("{NO_CREDENTIALS} ({offline}): {why}")
}

/// Whether Application Default Credentials can only come from a metadata server: no
/// `GOOGLE_APPLICATION_CREDENTIALS`, no gcloud application-default file.
pub fn only_metadata_server() -> bool {
    match adc_file() {
        Some(Adc::FromEnv(_)) => false,
        Some(Adc::WellKnown(path)) => !path.exists(),
        None => true,
    }
}

enum Adc {
    FromEnv(PathBuf),
    WellKnown(PathBuf),
}

/// Where Google's auth library looks for Application Default Credentials (AIP-4110 and
/// AIP-4113, as `google-cloud-auth` reads them).
fn adc_file() -> Option<Adc> {
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        return Some(Adc::FromEnv(path.into()));
    }
    let root = if cfg!(windows) { std::env::var_os("APPDATA")? } else { std::env::var_os("HOME")? };
    let relative = if cfg!(windows) { "gcloud" } else { ".config/gcloud" };
    Some(Adc::WellKnown(Path::new(&root).join(relative).join("application_default_credentials.json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|layer| layer as _)
        }
    }

    #[test]
    fn a_credentials_error_is_one_line_with_the_remedy_the_source_and_the_root_cause() {
        // Google's chain repeats its own words layer after layer; ours says each thing once.
        let error = Layer(
            "cannot create the authentication headers but future attempts may succeed",
            Some(Box::new(Layer(
                "failed to fetch access token but future attempts may succeed",
                Some(Box::new(Layer("failed to lookup address information", None))),
            ))),
        );
        let text = refused(&Origin::KeyFile("k.json".into()), OFFLINE_KMS, &error).to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with(NO_CREDENTIALS), "{text}");
        assert!(text.contains("--kms local:PATH") && text.contains("k.json"), "{text}");
        assert!(text.ends_with(": failed to lookup address information"), "{text}");
        assert!(!text.contains("future attempts"), "{text}");
    }
}
