//! The hostile case's junk: well-formed messages under a trusted tenant's key name whose
//! wrapped keys no KMS made, flooded beside a genuine tenant, and the dead letters they
//! become.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use envelope::Attributes;
use google_cloud_pubsub::model::Message;

/// The key name the junk claims: trusted by an entry of its own, held by the keyring.
pub const VICTIM_KEY: &str = "projects/bench/locations/global/keyRings/bench/cryptoKeys/victim";

/// Bytes of a wrapped key in the local keyring's format (version, nonce, key, tag): the
/// junk has the right length, so the keyring tries (and fails) to open each.
const WRAPPED_LEN: usize = 4 + 12 + 32 + 16;

/// Publishes `count` junk messages to `topic` as fast as the client takes them: one
/// genuine message under [`VICTIM_KEY`], sealed once, with its wrapped key replaced by
/// different bytes each time.
pub async fn flood(pubsub: bus::PubSub, keyring: PathBuf, topic: String, count: u64) -> anyhow::Result<()> {
    let kms = Arc::new(envelope::kms::local::LocalKms::open(&keyring)?);
    let mut sealer = envelope::Sealer::encrypt(kms, VICTIM_KEY.parse()?, "tenantKey");
    let template = sealer.seal(Bytes::from_static(b"junk words"), Attributes::new()).await?;
    let publisher = pubsub.publisher(&topic).await?;
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..count {
        let mut attributes = template.attributes.clone();
        attributes.insert("dek_wrapped".into(), base64::engine::general_purpose::STANDARD.encode(junk_bytes(n)));
        let message = Message::new().set_data(template.data.clone()).set_attributes(attributes);
        let publisher = publisher.clone();
        sends.spawn(async move { publisher.publish(message).await });
        // A bounded number in flight, as a real flooder's client would have.
        while sends.len() >= 1000 {
            sends.join_next().await.expect("not empty")??;
        }
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    Ok(())
}

/// Bytes no KMS wrapped, different for each `n` (splitmix64).
fn junk_bytes(n: u64) -> Vec<u8> {
    let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..WRAPPED_LEN / 8)
        .flat_map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .collect()
}

/// Reads `count` dead letters from `subscription` (acking them), by reason; fails
/// after `timeout`.
pub async fn dead_letters(
    pubsub: &bus::PubSub,
    subscription: &str,
    count: u64,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let client = pubsub.subscriber(1).await?;
    let mut stream = client.subscribe(subscription).set_max_outstanding_messages(10_000).build();
    let mut reasons = BTreeMap::new();
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while received < count {
        let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
            anyhow::bail!("only {received} of {count} dead letters arrived: {reasons:?}");
        };
        let Some((message, handler)) = next.transpose()? else { anyhow::bail!("the dead-letter stream ended") };
        handler.ack();
        let reason = message.attributes.get("reject_reason").cloned().unwrap_or_default();
        *reasons.entry(reason).or_default() += 1;
        received += 1;
    }
    stream.shutdown_token().shutdown().await;
    Ok(reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_has_the_wrapped_length_and_differs_each_time() {
        // Property: every junk wrapped key has the local format's length and no two of
        // the first thousand are equal.
        let keys: std::collections::HashSet<Vec<u8>> = (0..1000).map(junk_bytes).collect();
        assert_eq!(keys.len(), 1000);
        assert!(keys.iter().all(|key| key.len() == WRAPPED_LEN));
    }
}
