//! `bench pipeline`, run small: the harness checks each of its runs itself (every message
//! acked once, nothing dead-lettered, the counts equal to the words sealed, nothing but
//! the harness holding the opener when it is torn down) and fails otherwise, so a change
//! that breaks it, or the core under it, fails here rather than when someone measures.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::process::Command;

#[test]
fn a_small_run_checks_out_in_every_mode_and_unwraps_each_data_key_once() {
    // Property: at 1 and 2 workers of `runner::run` itself, in each mode and at both rotations, the run passes its own checks, and the consumer asks
    // the KMS once per data key (encrypt, sign) or once for the signing key's public key
    // (attest), however the workers split the keys.
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["pipeline", "--messages", "300", "--repeat", "1"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));

    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|line| ["| encrypt ", "| sign ", "| attest "].iter().any(|mode| line.starts_with(mode)))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 3 * 2 * 2, "a row per mode, rotation and worker count:\n{stdout}");
    for row in &rows {
        let [mode, rotation, workers, rate, _cpu, _ratio, calls, data_keys, teardown] = row[..] else {
            panic!("nine columns: {row:?}");
        };
        let (rotation, calls, data_keys): (u64, u64, u64) =
            (rotation.parse().unwrap(), calls.parse().unwrap(), data_keys.parse().unwrap());
        assert!(["1", "2"].contains(&workers), "{row:?}");
        assert!(rate.parse::<f64>().unwrap() > 0.0, "{row:?}");
        assert!(teardown.parse::<f64>().unwrap() >= 0.0, "{row:?}");
        assert_eq!(data_keys, 300u64.div_ceil(rotation), "{row:?}");
        let expected_calls = if mode == "attest" { 1 } else { data_keys };
        assert_eq!(calls, expected_calls, "{row:?}");
    }
}
