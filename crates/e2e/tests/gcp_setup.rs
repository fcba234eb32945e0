//! `scripts/gcp-setup.sh`: its Pub/Sub half makes, on the emulator, every topic and
//! subscription the binaries use, and they run on what it made; its plan grants
//! least-privilege roles only.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

use std::process::{Command, Output};
use std::time::Duration;

use e2e::{Harness, TENANT_1_KEY, TENANT_2_KEY, expected_counts, summed_counts, total, workspace};

/// Runs `scripts/gcp-setup.sh` with `args`, gcloud pointed at the harness's emulator
/// with no credentials and a configuration of its own.
fn setup(harness: &Harness, args: &[&str]) -> Output {
    let config = harness.dir().join("gcloud-config");
    Command::new("bash")
        .arg(workspace().join("scripts/gcp-setup.sh"))
        .args(args)
        .env("CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB", format!("http://{}/", harness.emulator.host))
        .env("CLOUDSDK_AUTH_DISABLE_CREDENTIALS", "true")
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CONFIG", config)
        .output()
        .unwrap()
}

fn gcloud_list(harness: &Harness, kind: &str) -> Vec<String> {
    gcloud_list_of(harness, &harness.project, kind, "value(name,topic)")
}

/// `gcloud pubsub KIND list` in `project`, each line's resource names cut to their ids.
fn gcloud_list_of(harness: &Harness, project: &str, kind: &str, format: &str) -> Vec<String> {
    let output = Command::new("gcloud")
        .args(["pubsub", kind, "list", "--project", project, &format!("--format={format}")])
        .env("CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB", format!("http://{}/", harness.emulator.host))
        .env("CLOUDSDK_AUTH_DISABLE_CREDENTIALS", "true")
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CONFIG", harness.dir().join("gcloud-config"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split_whitespace().map(|part| part.rsplit('/').next().unwrap()).collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pub_sub_half_makes_what_the_binaries_use_and_they_run_on_it() {
    let harness = Harness::new();
    let made = setup(&harness, &["--only", "pubsub", "--bus-project", &harness.project]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert_eq!(gcloud_list(&harness, "topics"), ["common-topic", "dead-letter", "df_out", "undeliverable"]);
    assert_eq!(
        gcloud_list(&harness, "subscriptions"),
        [
            "dead-letter-debug dead-letter",
            "df_subscribe df_out",
            "message-bus common-topic",
            "message-bus-debug common-topic",
            "undeliverable-debug undeliverable"
        ]
    );
    let again = setup(&harness, &["--only", "pubsub", "--bus-project", &harness.project]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert_eq!(stderr.matches("exists: ").count(), 9, "a second run changes nothing: {stderr}");

    // The binaries on what it made: counts reach the subscriber, and a message from an
    // untrusted tenant is kept on dead-letter-debug (published before anyone read it).
    let subscriber = harness.subscriber();
    let pipeline = harness.pipeline(&["--trusted_kms_key", "projects/tenant-1/*"]);
    harness.publish(&["--kms_key", TENANT_1_KEY, "--message", "made by the script"]);
    harness.publish(&["--kms_key", TENANT_2_KEY, "--message", "not trusted"]);
    let lines = subscriber.lines_until(Duration::from_secs(60), |lines| total(lines) >= 4);
    assert_eq!(summed_counts(&lines), expected_counts(["made by the script"]));
    let dead =
        e2e::receive(&harness.pubsub(), &harness.subscription("dead-letter-debug"), 1, Duration::from_secs(30)).await;
    assert_eq!(dead[0].attributes["reject_reason"], "untrusted_key");
    pipeline.terminate();
}

#[test]
fn the_emulator_is_laid_out_as_the_script_lays_out_google_cloud() {
    // `scripts/emulator.sh start --project P` makes the topics and subscriptions (with
    // their ack deadlines) that the script's plan makes, so that the by-hand path on the
    // emulator loses nothing published before a reader starts, as on Google Cloud.
    let harness = Harness::new();
    let project = format!("{}-layout", harness.project);
    let state = harness.emulator.state_dir().expect("the emulator's state directory (scripts/test.sh exports it)");
    for _ in 0..2 {
        // Twice: a second start on a running emulator leaves what exists as it is.
        let output = Command::new(workspace().join("scripts/emulator.sh"))
            .args(["start", "--project", &project])
            .env("EMULATOR_STATE_DIR", &state)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(&format!("export GOOGLE_CLOUD_PROJECT={project}")), "{stdout}");
    }
    let plan = setup(&harness, &["--only", "pubsub", "--bus-project", &project, "--dry-run"]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    let mut topics: Vec<String> = plan
        .lines()
        .filter_map(|line| line.strip_prefix("gcloud pubsub topics create "))
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .collect();
    let mut subscriptions: Vec<String> = plan
        .lines()
        .filter_map(|line| line.strip_prefix("gcloud pubsub subscriptions create "))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let after = |flag: &str| words[words.iter().position(|word| *word == flag).unwrap() + 1];
            format!("{} {} {}", words[0], after("--topic"), after("--ack-deadline"))
        })
        .collect();
    topics.sort();
    subscriptions.sort();
    assert_eq!(topics.len(), 4, "{plan}");
    assert_eq!(subscriptions.len(), 5, "{plan}");
    assert_eq!(gcloud_list_of(&harness, &project, "topics", "value(name)"), topics);
    assert_eq!(
        gcloud_list_of(&harness, &project, "subscriptions", "value(name,topic,ackDeadlineSeconds)"),
        subscriptions
    );
}

#[test]
fn the_plan_grants_each_account_only_what_it_uses() {
    let harness = Harness::new();
    let plan = setup(&harness, &["--dry-run", "--bus-project", "bus", "--tenant", "t-1", "--tenant", "t-2"]);
    assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    let roles: Vec<&str> = plan.lines().filter_map(|line| line.split("--role ").nth(1)).collect();
    for role in &roles {
        assert!(
            [
                "roles/pubsub.subscriber",
                "roles/pubsub.publisher",
                "roles/cloudkms.cryptoKeyEncrypter",
                "roles/cloudkms.cryptoKeyDecrypter",
                "roles/cloudkms.signer",
                "roles/cloudkms.publicKeyViewer",
                "roles/iam.workloadIdentityUser",
                "roles/cloudkms.cryptoKeyEncrypterDecrypter"
            ]
            .contains(role),
            "a role beyond what the binaries use: {role}"
        );
    }
    let grant = |what: &str, account: &str, role: &str| {
        plan.lines().any(|line| {
            line.contains(what) && line.contains(&format!("serviceAccount:{account}")) && line.ends_with(role)
        })
    };
    assert!(grant("subscriptions add-iam-policy-binding message-bus ", "pipeline@bus", "roles/pubsub.subscriber"));
    assert!(grant("topics add-iam-policy-binding dead-letter ", "pipeline@bus", "roles/pubsub.publisher"));
    assert!(grant("keys add-iam-policy-binding key1 ", "publisher@t-2", "roles/cloudkms.cryptoKeyEncrypter"));
    assert!(!grant("keys add-iam-policy-binding key1 ", "publisher@t-2", "roles/cloudkms.cryptoKeyDecrypter"));
    assert!(grant("keys add-iam-policy-binding key1 ", "pipeline@bus", "roles/cloudkms.cryptoKeyDecrypter"));
    // Only the pipeline may write what others trust as the pipeline's: counts and dead
    // letters (issue: tenant integrity).
    for topic in ["df_out", "dead-letter"] {
        let publishers: Vec<&str> = plan
            .lines()
            .filter(|line| line.contains(&format!("topics add-iam-policy-binding {topic} ")))
            .filter(|line| line.ends_with("roles/pubsub.publisher"))
            .collect();
        assert_eq!(publishers.len(), 1, "{topic}: {publishers:?}");
        assert!(publishers[0].contains("serviceAccount:pipeline@bus"), "{publishers:?}");
    }
    assert!(grant("keys add-iam-policy-binding own ", "pipeline@bus", "roles/cloudkms.cryptoKeyEncrypter"));
    assert!(!grant("keys add-iam-policy-binding own ", "pipeline@bus", "roles/cloudkms.cryptoKeyDecrypter"));
    assert!(grant("keys add-iam-policy-binding own ", "subscriber@bus", "roles/cloudkms.cryptoKeyDecrypter"));
    assert_eq!(plan.matches("subscriptions create").count(), 5);
    assert!(plan.contains("dead-letter-debug --topic dead-letter"));

    // Pub/Sub's own dead-lettering on the bus subscription, its service agent allowed to
    // move messages there and nothing more; every encryption key rotates; neither a
    // Workload Identity binding nor CMEK unless asked for.
    let agent = "service-BUS_PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com";
    assert!(plan.contains(
        "subscriptions update message-bus --project bus --dead-letter-topic projects/bus/topics/undeliverable \
         --max-delivery-attempts 100"
    ));
    assert!(grant("topics add-iam-policy-binding undeliverable ", agent, "roles/pubsub.publisher"));
    assert!(grant("subscriptions add-iam-policy-binding message-bus ", agent, "roles/pubsub.subscriber"));
    assert_eq!(plan.lines().filter(|line| line.contains(agent)).count(), 2, "{plan}");
    let encryption_keys: Vec<&str> = plan.lines().filter(|line| line.contains("--purpose encryption")).collect();
    assert_eq!(encryption_keys.len(), 3, "own, and key1 of each tenant: {encryption_keys:?}");
    assert!(encryption_keys.iter().all(|line| line.contains("--rotation-period 90d --next-rotation-time ")));
    assert!(!plan.contains("workloadIdentityUser") && !plan.contains("--topic-encryption-key"));

    let asked = setup(
        &harness,
        &["--dry-run", "--bus-project", "bus", "--tenant", "t-1", "--gke-namespace", "pubsub-envelope", "--cmek"],
    );
    let asked = String::from_utf8_lossy(&asked.stdout);
    let binding = asked.lines().find(|line| line.contains("roles/iam.workloadIdentityUser")).expect("a binding");
    assert!(binding.contains("add-iam-policy-binding pipeline@bus.iam.gserviceaccount.com"), "{binding}");
    assert!(binding.contains("bus.svc.id.goog\\[pubsub-envelope/pipeline\\]"), "{binding}");
    let key = "projects/bus/locations/us-central1/keyRings/pubsub-keyring/cryptoKeys/topics";
    assert_eq!(asked.matches(&format!("--topic-encryption-key {key}")).count(), 4, "{asked}");
    let cmek_grants: Vec<&str> =
        asked.lines().filter(|line| line.contains("roles/cloudkms.cryptoKeyEncrypterDecrypter")).collect();
    assert_eq!(cmek_grants.len(), 1, "{cmek_grants:?}");
    assert!(cmek_grants[0].contains(agent) && cmek_grants[0].contains("keys add-iam-policy-binding topics "));
}
