//! The developer scripts that CI does not run (benchmarks, mutation and fuzz runs) name
//! packages and bench targets that exist: a rename cannot leave one broken unseen, as
//! the envelope crate's rename to `pubsub-envelope` once left `scripts/bench-envelope.sh`.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::collections::BTreeSet;
use std::process::Command;

use e2e::workspace;

/// The workspace's package names, and its bench target names, from `cargo metadata`.
fn packages_and_benches() -> (BTreeSet<String>, BTreeSet<String>) {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut packages = BTreeSet::new();
    let mut benches = BTreeSet::new();
    for package in metadata["packages"].as_array().unwrap() {
        packages.insert(package["name"].as_str().unwrap().to_owned());
        for target in package["targets"].as_array().unwrap() {
            if target["kind"].as_array().unwrap().iter().any(|kind| kind == "bench") {
                benches.insert(target["name"].as_str().unwrap().to_owned());
            }
        }
    }
    (packages, benches)
}

/// Each value that follows `flags` in a `cargo` command line of `script`.
fn cargo_arguments<'a>(script: &'a str, flags: &[&str]) -> Vec<&'a str> {
    script
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter(|line| line.contains("cargo "))
        .flat_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.windows(2).filter(|pair| flags.contains(&pair[0])).map(|pair| pair[1]).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_package_and_bench_a_script_names_exists() {
    // Every `-p`/`--package` and `--bench` in scripts/*.sh names one of the workspace's.
    let (packages, benches) = packages_and_benches();
    let mut named = 0;
    for entry in std::fs::read_dir(workspace().join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "sh") {
            continue;
        }
        let script = std::fs::read_to_string(&path).unwrap();
        for package in cargo_arguments(&script, &["-p", "--package"]) {
            assert!(
                packages.contains(package),
                "{} names package {package}; the workspace has {packages:?}",
                path.display()
            );
            named += 1;
        }
        for bench in cargo_arguments(&script, &["--bench"]) {
            assert!(benches.contains(bench), "{} names bench {bench}; the workspace has {benches:?}", path.display());
            named += 1;
        }
    }
    // bench.sh, bench-envelope.sh and mutants.sh name some: a parser that finds none is broken.
    assert!(named >= 5, "found only {named} package or bench names in scripts/");
}
