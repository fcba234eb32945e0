//! Attest mode signed by a service account's own key, verified against certificates a
//! local HTTP server publishes in the layout of Google's x509 metadata endpoint.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::{Fixture, attrs};
use pubsub_envelope::format::{ATTEST_CERT_URL_ATTR, ATTEST_KEY_ID_ATTR, SIGNATURE_ATTR};
use pubsub_envelope::{
    Attestation, Attributes, Mode, Opener, Sealer, ServiceAccountSigner, TrustedKeys, TrustedSigners,
};

const PUBLISHER: &str = "publisher@test-project.iam.gserviceaccount.com";
const OTHER: &str = "other@test-project.iam.gserviceaccount.com";

fn data(file: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Serves `/PUBLISHER` and `/OTHER` certificates; counts requests.
struct CertServer {
    url: String,
    requests: Arc<AtomicU64>,
}

async fn cert_server() -> CertServer {
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let app = axum::Router::new().route(
        "/{account}",
        axum::routing::get(move |axum::extract::Path(account): axum::extract::Path<String>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match account.as_str() {
                    PUBLISHER => Ok(data("publisher-certs.json")),
                    OTHER => Ok(data("other-certs.json")),
                    _ => Err(axum::http::StatusCode::NOT_FOUND),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    CertServer { url, requests }
}

fn signer(server: &CertServer, file: &str, email: &str) -> ServiceAccountSigner {
    ServiceAccountSigner::from_json(&data(file)).unwrap().with_cert_url(format!("{}/{email}", server.url))
}

fn opener(fixture: &Fixture, server: &CertServer) -> Opener {
    let trusted = TrustedSigners::default().trust(PUBLISHER, Some(format!("{}/{PUBLISHER}", server.url))).unwrap();
    Opener::builder("tenant-1", TrustedKeys::none()).kms(fixture.kms.clone()).trusted_signers(trusted).build().unwrap()
}

#[tokio::test]
async fn a_service_account_signs_and_its_published_certificate_verifies() {
    let (fixture, server) = (Fixture::new(), cert_server().await);
    let mut sealer = Sealer::service_account(signer(&server, "service-account.json", PUBLISHER));
    let opener = opener(&fixture, &server);
    for i in 0..10 {
        let sealed = sealer.seal(Bytes::from(format!("message {i}")), attrs(&[("seq", &i.to_string())])).await.unwrap();
        let opened = opener.open(&sealed.data, &sealed.attributes).await.unwrap();
        assert_eq!(opened.data, format!("message {i}").as_bytes());
        assert_eq!(opened.attributes, attrs(&[("seq", &i.to_string())]));
        assert_eq!(opened.mode, Mode::Attest);
        assert_eq!(opened.kms_key, None);
        let want = Attestation::ServiceAccount { signer: PUBLISHER.into(), key_id: "k1".into() };
        assert_eq!(opened.attestation, Some(want));
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 1, "certificates fetched once");
    assert_eq!(fixture.kms.calls(), 0, "no KMS involved");
}

#[tokio::test]
async fn untrusted_forged_and_altered_signatures_are_refused() {
    let (fixture, server) = (Fixture::new(), cert_server().await);
    let opener = opener(&fixture, &server);
    let reason = |sealed: &pubsub_envelope::Sealed| {
        let (data, attributes) = (sealed.data.clone(), sealed.attributes.clone());
        let opener = &opener;
        async move { opener.open(&data, &attributes).await.unwrap_err().reason().to_owned() }
    };
    let mut publisher = Sealer::service_account(signer(&server, "service-account.json", PUBLISHER));
    let good = publisher.seal(Bytes::from_static(b"pay 10"), attrs(&[("to", "alice")])).await.unwrap();

    let mut other = Sealer::service_account(signer(&server, "other-service-account.json", OTHER));
    let theirs = other.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    assert_eq!(reason(&theirs).await, "untrusted_signer");

    let mut elsewhere = good.clone();
    elsewhere.attributes.insert(ATTEST_CERT_URL_ATTR.into(), format!("{}/{OTHER}", server.url));
    assert_eq!(reason(&elsewhere).await, "untrusted_signer", "certificates from another URL");

    // The other account's key signing in the publisher's name and key id.
    let impostor = ServiceAccountSigner::from_json(
        &data("other-service-account.json").replace(OTHER, PUBLISHER).replace("k9", "k1"),
    )
    .unwrap()
    .with_cert_url(format!("{}/{PUBLISHER}", server.url));
    let forged =
        Sealer::service_account(impostor).seal(Bytes::from_static(b"pay 99"), Attributes::new()).await.unwrap();
    assert_eq!(reason(&forged).await, "tampered");

    let mut unknown_key = good.clone();
    unknown_key.attributes.insert(ATTEST_KEY_ID_ATTR.into(), "k2".into());
    assert_eq!(reason(&unknown_key).await, "unknown_signing_key");

    let mut altered = good.clone();
    altered.data = Bytes::from_static(b"pay 99");
    assert_eq!(reason(&altered).await, "tampered");
    let mut retargeted = good.clone();
    retargeted.attributes.insert("to".into(), "mallory".into());
    assert_eq!(reason(&retargeted).await, "tampered");
    let mut stray = good.clone();
    stray.attributes.insert("kms_key".into(), "projects/p/locations/l/keyRings/r/cryptoKeys/k".into());
    assert_eq!(reason(&stray).await, "unexpected_attribute");
    let mut truncated = good.clone();
    truncated.attributes.insert(SIGNATURE_ATTR.into(), "AAAA".into());
    assert_eq!(reason(&truncated).await, "tampered");
    assert!(opener.open(&good.data, &good.attributes).await.is_ok(), "the good one still opens");
}

/// A key id the account does not publish costs one fetch, not one per message; after a
/// minute the list is fetched again (Google rotates account keys), once.
#[tokio::test]
async fn unknown_key_ids_refetch_at_most_once_a_minute() {
    let (fixture, server) = (Fixture::new(), cert_server().await);
    let clock = Arc::new(pubsub_envelope::ManualClock::new());
    let trusted = TrustedSigners::default().trust(PUBLISHER, Some(format!("{}/{PUBLISHER}", server.url))).unwrap();
    let opener = Opener::builder("tenant-1", TrustedKeys::none())
        .kms(fixture.kms.clone())
        .trusted_signers(trusted)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut sealer = Sealer::service_account(signer(&server, "service-account.json", PUBLISHER));
    let good = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    let mut unknown = good.clone();
    unknown.attributes.insert(ATTEST_KEY_ID_ATTR.into(), "k2".into());
    let fetches = || server.requests.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(opener.open(&unknown.data, &unknown.attributes).await.unwrap_err().reason(), "unknown_signing_key");
    }
    assert!(opener.open(&good.data, &good.attributes).await.is_ok());
    assert_eq!(fetches(), 1, "within a minute, the cached list answers");
    clock.advance(std::time::Duration::from_secs(59));
    assert_eq!(opener.open(&unknown.data, &unknown.attributes).await.unwrap_err().reason(), "unknown_signing_key");
    assert_eq!(fetches(), 1);
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(opener.open(&unknown.data, &unknown.attributes).await.unwrap_err().reason(), "unknown_signing_key");
    assert_eq!(fetches(), 2, "a minute on, a missing key id fetches again");
    assert!(opener.open(&good.data, &good.attributes).await.is_ok());
    assert_eq!(fetches(), 2, "a known key id never refetches");
}

/// RSA signatures are 1 to 1024 bytes (keys up to 8192 bits); outside that the message
/// is malformed before any certificate is fetched, inside it a wrong one is tampered.
#[tokio::test]
async fn rsa_signature_lengths_are_bounded() {
    let (fixture, server) = (Fixture::new(), cert_server().await);
    let opener = opener(&fixture, &server);
    let mut sealer = Sealer::service_account(signer(&server, "service-account.json", PUBLISHER));
    let good = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    for (len, reason) in [(0, "garbled_attribute"), (1, "tampered"), (1024, "tampered"), (1025, "garbled_attribute")] {
        let mut bad = good.clone();
        bad.attributes.insert(SIGNATURE_ATTR.into(), pubsub_envelope::format::encode_base64(&vec![1; len]));
        assert_eq!(opener.open(&bad.data, &bad.attributes).await.unwrap_err().reason(), reason, "{len} bytes");
    }
}

#[tokio::test]
async fn unreachable_certificates_are_a_transient_failure() {
    let fixture = Fixture::new();
    let server = cert_server().await;
    let mut sealer = Sealer::service_account(signer(&server, "service-account.json", PUBLISHER));
    let sealed = sealer.seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    assert!(opener(&fixture, &server).open(&sealed.data, &sealed.attributes).await.is_ok());
    let unreachable = TrustedSigners::default().trust(PUBLISHER, Some("http://127.0.0.1:9/none".into())).unwrap();
    let opener = Opener::builder("tenant-1", TrustedKeys::none())
        .accept(&[Mode::Attest])
        .trusted_signers(unreachable)
        .build()
        .unwrap();
    let mut pointed = sealed.clone();
    pointed.attributes.insert(ATTEST_CERT_URL_ATTR.into(), "http://127.0.0.1:9/none".into());
    let error = opener.open(&pointed.data, &pointed.attributes).await.unwrap_err();
    assert_eq!(error.reason(), "certificates_unavailable");
    assert!(error.is_transient());
}

#[test]
fn key_files_are_checked() {
    assert!(ServiceAccountSigner::from_json("{}").is_err());
    let no_key = data("service-account.json").replace("BEGIN PRIVATE KEY", "BEGIN NOTHING");
    assert!(ServiceAccountSigner::from_json(&no_key).is_err());
    let signer = ServiceAccountSigner::from_json(&data("service-account.json")).unwrap();
    assert_eq!(signer.email(), PUBLISHER);
}

#[tokio::test]
async fn a_certificate_server_that_fails_is_asked_again_only_after_a_growing_backoff() {
    // A server that is down was asked once per message (10 messages made 1,148 fetches
    // in 10 s through debug-subscriber's nacks). A failed fetch now answers every open
    // at once, transient, until its backoff has passed: 1 s, then 2 s, doubling.
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let app = axum::Router::new().route(
        "/{account}",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::SERVICE_UNAVAILABLE }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/{PUBLISHER}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let signer = ServiceAccountSigner::from_json(&data("service-account.json")).unwrap().with_cert_url(url.clone());
    let sealed = Sealer::service_account(signer).seal(Bytes::from_static(b"x"), Attributes::new()).await.unwrap();
    let clock = Arc::new(pubsub_envelope::ManualClock::new());
    let opener = Opener::builder("tenant-1", TrustedKeys::none())
        .accept(&[Mode::Attest])
        .trusted_signers(TrustedSigners::default().trust(PUBLISHER, Some(url)).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let open_all = async |times: usize| {
        for _ in 0..times {
            let error = opener.open(&sealed.data, &sealed.attributes).await.unwrap_err();
            assert_eq!((error.reason(), error.is_transient()), ("certificates_unavailable", true));
        }
        requests.load(Ordering::SeqCst)
    };
    assert_eq!(open_all(10).await, 1, "ten opens, one fetch");
    clock.advance(std::time::Duration::from_millis(1_100));
    assert_eq!(open_all(10).await, 2, "after the first second, one more");
    clock.advance(std::time::Duration::from_millis(1_100));
    assert_eq!(open_all(10).await, 2, "the second wait is 2 s");
    clock.advance(std::time::Duration::from_millis(1_000));
    assert_eq!(open_all(10).await, 3);
}
