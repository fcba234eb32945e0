//! The pipeline's own KMS key, on what the pipeline writes: its output sealed (encrypt
//! mode), so that only holders of the key read the counts and nobody else can pass
//! counts off as the pipeline's; and a receipt on each dead letter (a sign-mode seal of
//! its digest), so that `debug-subscriber --redrive` republishes only what this pipeline
//! dead-lettered, never a message someone else put on the dead-letter topic.
//!
//! Each use binds a tenant id of its own into its data keys' wraps
//! ([`OUTPUT_TENANT`], [`DEAD_LETTER_TENANT`]), so that no data key of one can serve the
//! other, or pass for a tenant's on the bus.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use envelope::kms::KeyWrap;
use envelope::{Attributes, KeyName, Mode, Opener, Sealer, TrustedKeys};
use google_cloud_pubsub::model::Message;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use crate::Output;

/// The tenant id the pipeline's output is sealed for.
pub const OUTPUT_TENANT: &str = "pubsub-envelope/output";
/// The tenant id of dead-letter receipts.
pub const DEAD_LETTER_TENANT: &str = "pubsub-envelope/dead-letter";
/// The dead-letter attribute that carries its receipt: the envelope attributes of a
/// sign-mode seal of [`receipt_digest`], as a JSON object.
pub const RECEIPT_ATTR: &str = "reject_receipt";

/// The pipeline's own key, with a sealer for each use.
pub struct OwnKey {
    name: KeyName,
    output: Mutex<Sealer>,
    receipts: Mutex<Sealer>,
}

impl std::fmt::Debug for OwnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnKey").field("name", &self.name).finish_non_exhaustive()
    }
}

impl OwnKey {
    /// Seals and receipts under `name` through `kms`; a data key per rotation of each
    /// (every 100 s), as any sealer.
    pub fn new(kms: Arc<dyn KeyWrap>, name: KeyName) -> Self {
        Self {
            output: Mutex::new(Sealer::encrypt(kms.clone(), name.clone(), OUTPUT_TENANT)),
            receipts: Mutex::new(Sealer::sign(kms, name.clone(), DEAD_LETTER_TENANT)),
            name,
        }
    }

    /// The key's name.
    pub fn name(&self) -> &KeyName {
        &self.name
    }
}

/// An opener of the pipeline's output: sealed under `key`, in encrypt mode, for
/// [`OUTPUT_TENANT`]; nothing else opens.
pub fn output_opener(kms: Arc<dyn KeyWrap>, key: &KeyName) -> Result<Opener, envelope::BuildError> {
    own_opener(kms, key, OUTPUT_TENANT, Mode::Encrypt)
}

/// An opener of dead-letter receipts made under `key`.
pub fn receipt_opener(kms: Arc<dyn KeyWrap>, key: &KeyName) -> Result<Opener, envelope::BuildError> {
    own_opener(kms, key, DEAD_LETTER_TENANT, Mode::Sign)
}

fn own_opener(kms: Arc<dyn KeyWrap>, key: &KeyName, tenant: &str, mode: Mode) -> Result<Opener, envelope::BuildError> {
    Opener::builder(tenant, TrustedKeys::only(key.clone())).unwrap_with(kms).accept(&[mode]).build()
}

/// Publishes each message sealed under the pipeline's key.
#[derive(Clone)]
pub(crate) struct SealedOutput<O> {
    pub(crate) inner: O,
    pub(crate) key: Arc<OwnKey>,
}

impl<O: Output> Output for SealedOutput<O> {
    async fn publish(&self, message: Message) -> Result<(), String> {
        let attributes: Attributes = message.attributes.into_iter().collect();
        let sealed = self.key.output.lock().await.seal(message.data, attributes).await;
        let sealed = sealed.map_err(|error| format!("sealing the output under {}: {error}", self.key.name))?;
        let attributes: std::collections::HashMap<_, _> = sealed.attributes.into_iter().collect();
        self.inner.publish(Message::new().set_data(sealed.data).set_attributes(attributes)).await
    }
}

/// Publishes each dead letter with a receipt.
#[derive(Clone)]
pub(crate) struct Receipted<O> {
    pub(crate) inner: O,
    pub(crate) key: Arc<OwnKey>,
}

impl<O: Output> Output for Receipted<O> {
    async fn publish(&self, mut message: Message) -> Result<(), String> {
        message.attributes.remove(RECEIPT_ATTR);
        let digest = Bytes::copy_from_slice(&receipt_digest(&message));
        let sealed = self.key.receipts.lock().await.seal(digest, Attributes::new()).await;
        let sealed = sealed.map_err(|error| format!("signing a dead letter under {}: {error}", self.key.name))?;
        let receipt: BTreeMap<_, _> = sealed.attributes.into_iter().collect();
        let receipt = serde_json::to_string(&receipt).expect("a map of strings is JSON");
        message.attributes.insert(RECEIPT_ATTR.to_owned(), receipt);
        self.inner.publish(message).await
    }
}

/// What a receipt signs: SHA-256 over a context, the dead letter's data and every
/// attribute but the receipt, in byte order of their names, each length-prefixed.
pub fn receipt_digest(message: &Message) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut put = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    put(b"pubsub-envelope/v1 dead letter");
    put(&message.data);
    let mut attributes: Vec<_> = message.attributes.iter().filter(|(name, _)| *name != RECEIPT_ATTR).collect();
    attributes.sort_unstable();
    for (name, value) in attributes {
        put(name.as_bytes());
        put(value.as_bytes());
    }
    hash.finalize().into()
}

/// Why a dead letter's receipt does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// It has none (written by a pipeline without `--pipeline_kms_key`, or not by a
    /// pipeline at all).
    #[error("it carries no receipt ({RECEIPT_ATTR}): the pipeline did not sign it")]
    Missing,
    /// The receipt does not open under the pipeline's key, or signs other content.
    #[error("its receipt does not verify under the pipeline's key: {0}")]
    Invalid(String),
    /// The KMS could not be asked; the receipt may hold on another try.
    #[error("its receipt could not be checked now: {0}")]
    Unavailable(String),
}

/// Checks that `dead`'s receipt was made under the pipeline's key for exactly this
/// dead letter, with `opener` from [`receipt_opener`].
pub async fn verify_receipt(opener: &Opener, dead: &Message) -> Result<(), ReceiptError> {
    let text = dead.attributes.get(RECEIPT_ATTR).ok_or(ReceiptError::Missing)?;
    let attributes: Attributes =
        serde_json::from_str(text).map_err(|error| ReceiptError::Invalid(format!("not a JSON object: {error}")))?;
    let digest = Bytes::copy_from_slice(&receipt_digest(dead));
    let opened = opener.open(&digest, &attributes).await.map_err(|error| {
        let why = format!("{}: {error}", error.reason());
        if error.is_transient() { ReceiptError::Unavailable(why) } else { ReceiptError::Invalid(why) }
    })?;
    // Sign mode authenticates the data given: the digest of this dead letter.
    debug_assert_eq!(opened.data, digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envelope::kms::local::{Keyring, LocalKms};

    use super::*;

    /// Keeps what is published.
    #[derive(Clone, Default)]
    struct Kept(Arc<std::sync::Mutex<Vec<Message>>>);

    impl Output for Kept {
        async fn publish(&self, message: Message) -> Result<(), String> {
            self.0.lock().unwrap().push(message);
            Ok(())
        }
    }

    const PIPELINE_KEY: &str = "projects/ops/locations/global/keyRings/pipeline/cryptoKeys/own";
    const TENANT_KEY: &str = "projects/tenant-1/locations/global/keyRings/bus/cryptoKeys/key";

    fn kms(dir: &tempfile::TempDir) -> Arc<LocalKms> {
        let path = dir.path().join("keyring.json");
        let mut keyring = Keyring::load_or_new(&path).unwrap();
        keyring.create(&PIPELINE_KEY.parse().unwrap()).unwrap();
        keyring.create(&TENANT_KEY.parse().unwrap()).unwrap();
        keyring.save().unwrap();
        Arc::new(LocalKms::open(&path).unwrap())
    }

    fn dead_letter() -> Message {
        let attributes = HashMap::from([
            ("reject_reason".to_owned(), "untrusted_key".to_owned()),
            ("kms_key".to_owned(), TENANT_KEY.to_owned()),
        ]);
        Message::new().set_data(Bytes::from_static(b"sealed bytes")).set_attributes(attributes)
    }

    // A receipt vouches for exactly the dead letter the pipeline wrote, under its key:
    // none, another's, a changed reason, data or attribute, or another key's all fail.
    #[tokio::test]
    async fn a_receipt_holds_for_its_own_dead_letter_only() {
        let dir = tempfile::tempdir().unwrap();
        let kms = kms(&dir);
        let key = Arc::new(OwnKey::new(kms.clone(), PIPELINE_KEY.parse().unwrap()));
        let kept = Kept::default();
        let receipted = Receipted { inner: kept.clone(), key };
        receipted.publish(dead_letter()).await.unwrap();
        let mut other = dead_letter();
        other.data = Bytes::from_static(b"other bytes");
        receipted.publish(other).await.unwrap();
        let [written, other] = <[Message; 2]>::try_from(kept.0.lock().unwrap().clone()).unwrap();
        let opener = receipt_opener(kms.clone(), &PIPELINE_KEY.parse().unwrap()).unwrap();
        assert_eq!(verify_receipt(&opener, &written).await, Ok(()));

        let invalid =
            async |message: &Message| matches!(verify_receipt(&opener, message).await, Err(ReceiptError::Invalid(_)));
        assert_eq!(verify_receipt(&opener, &dead_letter()).await, Err(ReceiptError::Missing));
        let mut changed = written.clone();
        changed.attributes.insert("reject_reason".into(), "kms_unavailable".into());
        assert!(invalid(&changed).await, "reason changed");
        let mut changed = written.clone();
        changed.data = Bytes::from_static(b"sealed bytez");
        assert!(invalid(&changed).await, "data changed");
        let mut changed = written.clone();
        changed.attributes.insert("extra".into(), String::new());
        assert!(invalid(&changed).await, "attribute added");
        let mut moved = other.clone();
        moved.attributes.insert(RECEIPT_ATTR.into(), written.attributes[RECEIPT_ATTR].clone());
        assert!(invalid(&moved).await, "a receipt moved to another dead letter");
        let tenant_opener = receipt_opener(kms, &TENANT_KEY.parse().unwrap()).unwrap();
        assert!(matches!(verify_receipt(&tenant_opener, &written).await, Err(ReceiptError::Invalid(_))), "another key");
    }

    // Sealed output opens with the output opener, attributes and data intact; a
    // receipt's seal (the same key, another use) does not open as output.
    #[tokio::test]
    async fn sealed_output_opens_only_as_output() {
        let dir = tempfile::tempdir().unwrap();
        let kms = kms(&dir);
        let key = Arc::new(OwnKey::new(kms.clone(), PIPELINE_KEY.parse().unwrap()));
        let kept = Kept::default();
        let output = SealedOutput { inner: kept.clone(), key: key.clone() };
        let attributes = HashMap::from([("window_start".to_owned(), "2026-01-01T00:00:00Z".to_owned())]);
        output
            .publish(Message::new().set_data(Bytes::from_static(b"fox: 3")).set_attributes(attributes))
            .await
            .unwrap();
        Receipted { inner: kept.clone(), key }.publish(dead_letter()).await.unwrap();
        let [sealed, receipted] = <[Message; 2]>::try_from(kept.0.lock().unwrap().clone()).unwrap();
        assert!(!sealed.attributes.contains_key("window_start"), "sealed inside");
        let opener = output_opener(kms, &PIPELINE_KEY.parse().unwrap()).unwrap();
        let to = |message: &Message| message.attributes.clone().into_iter().collect::<Attributes>();
        let opened = opener.open(&sealed.data, &to(&sealed)).await.unwrap();
        assert_eq!(
            (&opened.data[..], &opened.attributes["window_start"][..]),
            (&b"fox: 3"[..], "2026-01-01T00:00:00Z")
        );
        let receipt: Attributes = serde_json::from_str(&receipted.attributes[RECEIPT_ATTR]).unwrap();
        let digest = Bytes::copy_from_slice(&receipt_digest(&receipted));
        assert_eq!(opener.open(&digest, &receipt).await.unwrap_err().reason(), "mode_not_accepted");
    }
}
