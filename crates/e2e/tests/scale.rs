//! Scale-out: several pipeline replicas share one subscription.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::time::Duration;

use e2e::{Harness, TENANT_1_KEY, expected_counts, summed_counts, total};

#[test]
fn three_replicas_on_one_subscription_give_the_totals_of_one() {
    let harness = Harness::new();
    let subscriber = harness.subscriber();
    let replicas: Vec<_> = (0..3).map(|_| harness.pipeline(&["--streams", "2"])).collect();
    let texts: Vec<String> = (0..300).map(|i| format!("message {i} shared by replicas alpha beta")).collect();
    let input = harness.dir().join("input.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    harness.publish(&["--kms_key", TENANT_1_KEY, "--input", input.to_str().unwrap(), "--rate", "150"]);

    let expected = expected_counts(texts.iter().map(String::as_str));
    let want: u64 = expected.values().sum();
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= want);
    assert_eq!(summed_counts(&lines), expected, "partials merged over replicas equal one pipeline's totals");
    // Each window's latest record is its whole total: the sum of its words equals the
    // total the subscriber states for it.
    let windows = e2e::window_totals(&lines);
    for record in windows.values() {
        let summed: u64 = record["counts"].as_object().unwrap().values().map(|count| count.as_u64().unwrap()).sum();
        assert_eq!(record["total"].as_u64(), Some(summed), "{record}");
    }
    let most = windows.values().map(|record| record["replicas"].as_u64().unwrap()).max();
    assert!(most >= Some(2), "the replicas shared the work: {windows:?}");
    for replica in replicas {
        replica.terminate();
    }
}
