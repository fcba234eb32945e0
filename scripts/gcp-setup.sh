#!/usr/bin/env bash
# Sets up Google Cloud for a bus project and N tenants, least privilege: APIs, service
# accounts, every Pub/Sub topic and subscription the four binaries use (dead-letter and
# debug ones included: on real Pub/Sub a topic without a subscription drops what is
# published to it), Pub/Sub roles per topic or subscription, and per tenant a key ring
# with an encryption key (encrypt and sign modes) and a P-256 signing key (attest mode),
# with Cloud KMS roles per key.
#
#   scripts/gcp-setup.sh --bus-project BUS --tenant TENANT_PROJECT [--tenant ...] [--dry-run]
#
# Options:
#   --bus-project P    the project of the bus (topics, subscriptions, the pipeline's,
#                      subscriber's and operator's service accounts)
#   --tenant P         a tenant's project (repeatable): its key ring `bus-keyring` in
#                      --location, keys `key1` and `signer`, its account `publisher@P`
#   --location L       Cloud KMS location (default us-central1)
#   --only STEP        run one step: apis, accounts, pubsub, pubsub-iam, kms
#   --gke-namespace N  bind the Kubernetes service account N/pipeline to pipeline@ for
#                      Workload Identity (deploy/kubernetes/pipeline.yaml uses
#                      pubsub-envelope); needs a GKE cluster with Workload Identity
#   --cmek             encrypt the topics' messages at rest with a key of the bus
#                      project's own (pubsub-keyring/topics), not Google's
#   --dry-run          print the gcloud commands instead of running them
#
# Every step can be run again: what exists is left as it is. Encryption keys rotate
# every 90 days (older versions keep decrypting); the signing key does not rotate by
# itself (Cloud KMS cannot rotate asymmetric keys automatically; rotate it by hand and
# pin the new version). The bus subscription parks a message Pub/Sub could not get
# acknowledged in 100 deliveries (one that crashes or stalls the pipeline) on the topic
# `undeliverable`, read through `undeliverable-debug`, rather than redelivering it for
# ever. The `pubsub` step alone runs
# against the emulator (the tests do, with CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB and
# CLOUDSDK_AUTH_DISABLE_CREDENTIALS=true); the others need Google Cloud.
#
# Accounts made (in the bus project unless said):
#   pipeline@     subscribes to message-bus; the only account that publishes to df_out
#                 and dead-letter (whoever can publish there could forge counts or dead
#                 letters); unwraps (cryptoKeyDecrypter) and reads public keys of every
#                 tenant; wraps with its own key `pipeline-keyring/own` in the bus
#                 project (--pipeline_kms_key: sealed output, dead-letter receipts)
#   subscriber@   subscribes to df_subscribe; unwraps with the pipeline's own key
#   operator@     debug-subscriber: subscribes to message-bus-debug and
#                 dead-letter-debug, publishes to common-topic (--redrive), unwraps
#                 and reads public keys as the pipeline does, and unwraps with the
#                 pipeline's own key (to check dead-letter receipts)
#   publisher@T   per tenant, in its project: publishes to common-topic; encrypts with
#                 key1 (cryptoKeyEncrypter) and signs with signer (signer)
# Run the binaries as these accounts through Workload Identity or Application Default
# Credentials (docs/GCP.md, "Credentials"); key files are a last resort.
set -euo pipefail

bus=""
tenants=()
location=us-central1
only=""
gke_namespace=""
cmek=false
dry_run=false
while [ $# -gt 0 ]; do
  case $1 in
    --bus-project) bus=$2; shift 2 ;;
    --tenant) tenants+=("$2"); shift 2 ;;
    --location) location=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --gke-namespace) gke_namespace=$2; shift 2 ;;
    --cmek) cmek=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) sed -n '2,50p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gcp-setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$bus" ] || { echo "gcp-setup.sh: --bus-project is required (see --help)" >&2; exit 2; }
case $only in ""|apis|accounts|pubsub|pubsub-iam|kms) ;; *) echo "gcp-setup.sh: --only takes apis, accounts, pubsub, pubsub-iam or kms" >&2; exit 2 ;; esac
if [ "$only" != pubsub ] && [ ${#tenants[@]} -eq 0 ]; then
  echo "gcp-setup.sh: name at least one --tenant project" >&2
  exit 2
fi
if ! $dry_run && ! command -v gcloud >/dev/null 2>&1; then
  echo "gcp-setup.sh: the Google Cloud CLI is missing (https://cloud.google.com/sdk/docs/install), or use --dry-run" >&2
  exit 1
fi

# Runs a command, or prints it with --dry-run.
run() {
  if $dry_run; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

# Runs a create command unless `gcloud ... describe` finds the resource (so that the
# script can run again). Prints only the create with --dry-run.
ensure() {
  local describe=$1
  shift
  if ! $dry_run && eval "$describe" >/dev/null 2>&1; then
    echo "exists: ${*: -1}" >&2
    return
  fi
  run "$@"
}

step() { [ -z "$only" ] || [ "$only" = "$1" ]; }

# The bus project's Pub/Sub service agent (it writes to dead-letter topics and uses CMEK
# keys): named by the project's number, looked up unless this is a dry run.
service_agent() {
  local number=BUS_PROJECT_NUMBER
  $dry_run || number=$(gcloud projects describe "$bus" --format='value(projectNumber)')
  echo "service-$number@gcp-sa-pubsub.iam.gserviceaccount.com"
}
# When encryption keys rotate first: 90 days from now (GCP_SETUP_NEXT_ROTATION fixes it,
# for a plan that does not change from day to day).
next_rotation=${GCP_SETUP_NEXT_ROTATION:-$(date -u -d '+90 days' +%Y-%m-%dT%H:%M:%SZ)}
rotation=(--rotation-period 90d --next-rotation-time "$next_rotation")

sa() { echo "$1@$2.iam.gserviceaccount.com"; }
pipeline_sa=$(sa pipeline "$bus")
subscriber_sa=$(sa subscriber "$bus")
operator_sa=$(sa operator "$bus")

if $dry_run && { step pubsub-iam || { $cmek && step pubsub; }; }; then
  echo "# BUS_PROJECT_NUMBER: gcloud projects describe $bus --format='value(projectNumber)'"
fi

if step apis; then
  run gcloud services enable pubsub.googleapis.com cloudkms.googleapis.com iam.googleapis.com --project "$bus"
  for tenant in "${tenants[@]}"; do
    run gcloud services enable cloudkms.googleapis.com pubsub.googleapis.com --project "$tenant"
  done
fi

if step accounts; then
  for name in pipeline subscriber operator; do
    ensure "gcloud iam service-accounts describe $(sa $name "$bus") --project $bus" \
      gcloud iam service-accounts create "$name" --project "$bus" --display-name "pubsub-envelope $name"
  done
  for tenant in "${tenants[@]}"; do
    ensure "gcloud iam service-accounts describe $(sa publisher "$tenant") --project $tenant" \
      gcloud iam service-accounts create publisher --project "$tenant" --display-name "pubsub-envelope publisher"
  done
  if [ -n "$gke_namespace" ]; then
    # Workload Identity: the pods of the Kubernetes service account `pipeline` act as
    # pipeline@, with no key file.
    run gcloud iam service-accounts add-iam-policy-binding "$pipeline_sa" --project "$bus" \
      --role roles/iam.workloadIdentityUser --member "serviceAccount:$bus.svc.id.goog[$gke_namespace/pipeline]"
  fi
fi

if step pubsub; then
  topic_key=()
  if $cmek; then
    # CMEK: the topics' messages at rest under a key of the bus project's own, which the
    # Pub/Sub service agent may use and nobody else.
    cmek_key=projects/$bus/locations/$location/keyRings/pubsub-keyring/cryptoKeys/topics
    ensure "gcloud kms keyrings describe pubsub-keyring --location $location --project $bus" \
      gcloud kms keyrings create pubsub-keyring --location "$location" --project "$bus"
    ensure "gcloud kms keys describe topics --keyring pubsub-keyring --location $location --project $bus" \
      gcloud kms keys create topics --keyring pubsub-keyring --location "$location" --project "$bus" \
      --purpose encryption "${rotation[@]}"
    run gcloud kms keys add-iam-policy-binding topics --keyring pubsub-keyring --location "$location" \
      --project "$bus" --member "serviceAccount:$(service_agent)" --role roles/cloudkms.cryptoKeyEncrypterDecrypter
    topic_key=(--topic-encryption-key "$cmek_key")
  fi
  # `undeliverable`: the bus subscription's own dead-letter topic (pubsub-iam sets the
  # policy), for messages Pub/Sub could not get acknowledged; the pipeline's verdicts go
  # to `dead-letter`.
  for topic in common-topic df_out dead-letter undeliverable; do
    ensure "gcloud pubsub topics describe $topic --project $bus" \
      gcloud pubsub topics create "$topic" --project "$bus" "${topic_key[@]}"
  done
  # subscription:topic:ack deadline:retention. The pipeline extends its leases itself;
  # 60 s is how soon a dead replica's messages come back. What is unread is kept the 7
  # days Pub/Sub allows (dead letters included); the debug view of the bus, read now
  # and then, only an hour.
  for spec in message-bus:common-topic:60:7d message-bus-debug:common-topic:60:1h \
              df_subscribe:df_out:10:7d dead-letter-debug:dead-letter:60:7d \
              undeliverable-debug:undeliverable:60:7d; do
    IFS=: read -r subscription topic deadline retention <<<"$spec"
    ensure "gcloud pubsub subscriptions describe $subscription --project $bus" \
      gcloud pubsub subscriptions create "$subscription" --topic "$topic" --ack-deadline "$deadline" \
      --message-retention-duration "$retention" --project "$bus"
  done
fi

if step pubsub-iam; then
  grant_topic() { run gcloud pubsub topics add-iam-policy-binding "$1" --project "$bus" --member "serviceAccount:$2" --role "$3"; }
  grant_sub() { run gcloud pubsub subscriptions add-iam-policy-binding "$1" --project "$bus" --member "serviceAccount:$2" --role "$3"; }
  grant_sub message-bus "$pipeline_sa" roles/pubsub.subscriber
  grant_topic df_out "$pipeline_sa" roles/pubsub.publisher
  grant_topic dead-letter "$pipeline_sa" roles/pubsub.publisher
  grant_sub df_subscribe "$subscriber_sa" roles/pubsub.subscriber
  grant_sub message-bus-debug "$operator_sa" roles/pubsub.subscriber
  grant_sub dead-letter-debug "$operator_sa" roles/pubsub.subscriber
  grant_sub undeliverable-debug "$operator_sa" roles/pubsub.subscriber
  grant_topic common-topic "$operator_sa" roles/pubsub.publisher
  for tenant in "${tenants[@]}"; do
    grant_topic common-topic "$(sa publisher "$tenant")" roles/pubsub.publisher
  done
  # Pub/Sub's own dead-lettering on the bus subscription: after 100 deliveries without
  # an ack (the most Pub/Sub allows; a KMS outage costs one a second per message, so
  # ~100 s of outage before a message is parked), Pub/Sub's service agent moves it to
  # `undeliverable`. It needs to publish there and to ack on the subscription.
  agent=$(service_agent)
  grant_topic undeliverable "$agent" roles/pubsub.publisher
  grant_sub message-bus "$agent" roles/pubsub.subscriber
  run gcloud pubsub subscriptions update message-bus --project "$bus" \
    --dead-letter-topic "projects/$bus/topics/undeliverable" --max-delivery-attempts 100
fi

if step kms; then
  # The pipeline's own key: it seals the output and signs dead-letter receipts (so it
  # only wraps); the subscriber opens the output and the operator checks receipts.
  ensure "gcloud kms keyrings describe pipeline-keyring --location $location --project $bus" \
    gcloud kms keyrings create pipeline-keyring --location "$location" --project "$bus"
  ensure "gcloud kms keys describe own --keyring pipeline-keyring --location $location --project $bus" \
    gcloud kms keys create own --keyring pipeline-keyring --location "$location" --project "$bus" --purpose encryption \
    "${rotation[@]}"
  grant_own() {
    run gcloud kms keys add-iam-policy-binding own --keyring pipeline-keyring --location "$location" \
      --project "$bus" --member "serviceAccount:$1" --role "$2"
  }
  grant_own "$pipeline_sa" roles/cloudkms.cryptoKeyEncrypter
  grant_own "$subscriber_sa" roles/cloudkms.cryptoKeyDecrypter
  grant_own "$operator_sa" roles/cloudkms.cryptoKeyDecrypter
  for tenant in "${tenants[@]}"; do
    ensure "gcloud kms keyrings describe bus-keyring --location $location --project $tenant" \
      gcloud kms keyrings create bus-keyring --location "$location" --project "$tenant"
    ensure "gcloud kms keys describe key1 --keyring bus-keyring --location $location --project $tenant" \
      gcloud kms keys create key1 --keyring bus-keyring --location "$location" --project "$tenant" \
      --purpose encryption "${rotation[@]}"
    ensure "gcloud kms keys describe signer --keyring bus-keyring --location $location --project $tenant" \
      gcloud kms keys create signer --keyring bus-keyring --location "$location" --project "$tenant" \
      --purpose asymmetric-signing --default-algorithm ec-sign-p256-sha256
    grant_key() {
      run gcloud kms keys add-iam-policy-binding "$1" --keyring bus-keyring --location "$location" \
        --project "$tenant" --member "serviceAccount:$2" --role "$3"
    }
    grant_key key1 "$(sa publisher "$tenant")" roles/cloudkms.cryptoKeyEncrypter
    grant_key signer "$(sa publisher "$tenant")" roles/cloudkms.signer
    for consumer in "$pipeline_sa" "$operator_sa"; do
      grant_key key1 "$consumer" roles/cloudkms.cryptoKeyDecrypter
      grant_key signer "$consumer" roles/cloudkms.publicKeyViewer
    done
  done
fi

if ! $dry_run && [ -z "$only" ]; then
  echo "done. The pipeline trusts these tenants with:" >&2
  for tenant in "${tenants[@]}"; do
    echo "  --trusted_kms_key 'projects/$tenant/locations/$location/keyRings/bus-keyring/*=$tenant'" >&2
  done
  echo "and the pipeline, subscriber and debug-subscriber share its own key:" >&2
  echo "  --pipeline_kms_key projects/$bus/locations/$location/keyRings/pipeline-keyring/cryptoKeys/own" >&2
fi
