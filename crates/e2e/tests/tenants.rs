//! Two tenants with tenant ids of their own share the bus and one pipeline: each trusted
//! key names its tenant (`--trusted_kms_key PREFIX=TENANT`).
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::time::Duration;

use e2e::{Harness, TENANT_1_KEY, TENANT_2_KEY, expected_counts, receive, summed_counts, total};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_with_their_own_ids_are_counted_and_an_impostor_is_dead_lettered() {
    // Before, `--tenant_id` took one value and a second tenant using its own id was
    // dead-lettered `unwrap_rejected`. A tenant's key bound to the other tenant's id
    // still is.
    let harness = Harness::new();
    let dead_letters = harness.subscribe("tenants-dead", "dead-letter").await;
    let subscriber = harness.subscriber();
    let pipeline = harness.pipeline(&[
        "--trusted_kms_key",
        "projects/tenant-1/*=tenant-a",
        "--trusted_kms_key",
        "projects/tenant-2/*=tenant-b",
    ]);
    let sends = [
        (TENANT_1_KEY, "tenant-a", "encrypt", "alpha from a"),
        (TENANT_2_KEY, "tenant-b", "sign", "beta from b"),
        (TENANT_2_KEY, "tenant-b", "encrypt", "beta again"),
    ];
    for (key, tenant, mode, text) in sends {
        harness.publish(&["--kms_key", key, "--tenant_id", tenant, "--mode", mode, "--message", text]);
    }
    harness.publish(&["--kms_key", TENANT_2_KEY, "--tenant_id", "tenant-a", "--message", "impostor"]);

    let expected = expected_counts(sends.iter().map(|(_, _, _, text)| *text));
    let want: u64 = expected.values().sum();
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= want);
    assert_eq!(summed_counts(&lines), expected);
    let dead = receive(&harness.pubsub(), &dead_letters, 1, Duration::from_secs(30)).await;
    assert_eq!(dead[0].attributes["reject_reason"], "unwrap_rejected", "{:?}", dead[0].attributes);
    pipeline.terminate();
}
