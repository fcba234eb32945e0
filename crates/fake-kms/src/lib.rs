//! A local fake of the Cloud KMS REST API (`:encrypt`, `:decrypt`, `:asymmetricSign`,
//! `/publicKey`), for tests.
//!
//! It does real AES-256-GCM under a random key per crypto key name and real ECDSA P-256
//! under a random key per key version name, checks the additional authenticated data and
//! every CRC32C field as Cloud KMS does, and can be told to fail: answer an HTTP status
//! (503, 403, ...), hang, or slow down, to exercise a client's handling of transient and
//! permanent failures and to stand in for a remote KMS in benchmarks.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]
#![forbid(unsafe_code)]
// Handlers return ready-made error responses; their size is irrelevant in a test fake.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{Digest, SHA256};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;
use serde_json::{Value, json};

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Like Cloud KMS.
    Normal,
    /// Every call fails with this HTTP status.
    Fail(u16),
    /// Every call waits forever.
    Hang,
    /// Answers normally, but the returned ciphertext or plaintext is altered after its
    /// checksum was computed, as corruption in transit would.
    Corrupt,
}

#[derive(Default)]
struct Keys {
    by_name: HashMap<String, LessSafeKey>,
    signing_by_version: HashMap<String, Arc<EcdsaKeyPair>>,
}

impl Keys {
    /// The signing key of a key version name, made on first use.
    fn signing(&mut self, version: &str) -> Arc<EcdsaKeyPair> {
        self.signing_by_version
            .entry(version.to_owned())
            .or_insert_with(|| Arc::new(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap()))
            .clone()
    }
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    latency: Mutex<std::time::Duration>,
    /// Extra latency for calls on keys whose name starts with the prefix.
    key_latency: Mutex<Vec<(String, std::time::Duration)>>,
    keys: Mutex<Keys>,
    /// Crypto keys whose versions were disabled (or destroyed): their encrypt and
    /// decrypt fail as Cloud KMS's do, FAILED_PRECONDITION.
    disabled: Mutex<std::collections::HashSet<String>>,
    calls: AtomicU64,
}

/// A running fake; stops when dropped.
pub struct FakeKms {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeKms {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour::Normal),
            latency: Mutex::new(std::time::Duration::ZERO),
            key_latency: Mutex::new(Vec::new()),
            keys: Mutex::new(Keys::default()),
            disabled: Mutex::default(),
            calls: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .route("/v1/{*call}", axum::routing::post(handle).get(handle_get))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake KMS server failed");
        });
        Ok(Self { addr, shared, server })
    }

    /// The endpoint to give a Cloud KMS client: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how later calls are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Adds `latency` before every answer, as a remote KMS would.
    pub fn set_latency(&self, latency: std::time::Duration) {
        *self.shared.latency.lock().unwrap() = latency;
    }

    /// Adds `latency` before every answer on a key whose name starts with `prefix`
    /// (one tenant's keys, say), on top of [`set_latency`](Self::set_latency).
    pub fn set_key_latency(&self, prefix: &str, latency: std::time::Duration) {
        self.shared.key_latency.lock().unwrap().push((prefix.to_owned(), latency));
    }

    /// Disables the crypto key `name` (every version): its encrypt and decrypt then fail
    /// with 400 FAILED_PRECONDITION, as Cloud KMS answers for a disabled or destroyed
    /// version.
    pub fn disable(&self, name: &str) {
        self.shared.disabled.lock().unwrap().insert(name.to_owned());
    }

    /// Calls received so far, whatever their answer.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeKms {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": grpc_status(status)}});
    (status, Json(body)).into_response()
}

fn grpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

fn field_bytes(body: &Value, field: &str) -> Result<Vec<u8>, Response> {
    match body.get(field).and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(text) => {
            STANDARD.decode(text).map_err(|_| error(StatusCode::BAD_REQUEST, &format!("{field} is not base64")))
        }
    }
}

/// Checks an optional CRC32C field (int64 as a JSON string or number) against `bytes`.
fn checksum_ok(body: &Value, field: &str, bytes: &[u8]) -> bool {
    let given = match body.get(field) {
        None => return true,
        Some(Value::String(text)) => text.parse::<u64>().ok(),
        Some(value) => value.as_u64(),
    };
    given == Some(u64::from(crc32c::crc32c(bytes)))
}

fn crc(bytes: &[u8]) -> String {
    crc32c::crc32c(bytes).to_string()
}

/// Counts the call, waits out the latency, and applies the behaviour: `Err` holds the
/// injected failure.
async fn admit(shared: &Shared, call: &str) -> Result<Behaviour, Response> {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    let per_key: std::time::Duration = shared
        .key_latency
        .lock()
        .unwrap()
        .iter()
        .filter(|(prefix, _)| call.starts_with(prefix.as_str()))
        .map(|(_, latency)| *latency)
        .sum();
    let latency = *shared.latency.lock().unwrap() + per_key;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let behaviour = *shared.behaviour.lock().unwrap();
    match behaviour {
        Behaviour::Normal | Behaviour::Corrupt => Ok(behaviour),
        Behaviour::Fail(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Err(error(status, "injected failure"))
        }
        Behaviour::Hang => std::future::pending().await,
    }
}

async fn handle(State(shared): State<Arc<Shared>>, Path(call): Path<String>, Json(body): Json<Value>) -> Response {
    let behaviour = match admit(&shared, &call).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let Some((name, method)) = call.rsplit_once(':') else {
        return error(StatusCode::NOT_FOUND, "no such method");
    };
    let corrupt = behaviour == Behaviour::Corrupt;
    if shared.disabled.lock().unwrap().contains(name) {
        let body = json!({"error": {
            "code": 400,
            "message": format!("{name}/cryptoKeyVersions/1 is not enabled, current state is: DISABLED."),
            "status": "FAILED_PRECONDITION",
        }});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let result = match method {
        "encrypt" => encrypt(&shared, name, &body, corrupt),
        "decrypt" => decrypt(&shared, name, &body, corrupt),
        "asymmetricSign" => asymmetric_sign(&shared, name, &body, corrupt),
        _ => Err(error(StatusCode::NOT_FOUND, "no such method")),
    };
    result.unwrap_or_else(|response| response)
}

/// `GET {name}/publicKey`.
async fn handle_get(State(shared): State<Arc<Shared>>, Path(call): Path<String>) -> Response {
    let behaviour = match admit(&shared, &call).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let Some(name) = call.strip_suffix("/publicKey") else {
        return error(StatusCode::NOT_FOUND, "no such method");
    };
    let key = shared.keys.lock().unwrap().signing(name);
    let der = key.public_key().as_der().unwrap();
    let body: Vec<String> =
        STANDARD.encode(der.as_ref()).as_bytes().chunks(64).map(|line| String::from_utf8_lossy(line).into()).collect();
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", body.join("\n"));
    let sent = if behaviour == Behaviour::Corrupt { pem.replacen('A', "B", 1) } else { pem.clone() };
    Json(json!({
        "pem": sent,
        "pemCrc32c": crc(pem.as_bytes()),
        "algorithm": "EC_SIGN_P256_SHA256",
        "name": name,
        "protectionLevel": "SOFTWARE",
    }))
    .into_response()
}

fn asymmetric_sign(shared: &Shared, name: &str, body: &Value, corrupt: bool) -> Result<Response, Response> {
    let digest = match body.pointer("/digest/sha256").and_then(Value::as_str) {
        Some(text) => STANDARD.decode(text).map_err(|_| error(StatusCode::BAD_REQUEST, "digest is not base64"))?,
        None => return Err(error(StatusCode::BAD_REQUEST, "a SHA-256 digest is required")),
    };
    if !checksum_ok(body, "digestCrc32c", &digest) {
        return Err(error(StatusCode::BAD_REQUEST, "checksum mismatch"));
    }
    let digest = Digest::import_less_safe(&digest, &SHA256)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "digest is not 32 bytes"))?;
    let key = shared.keys.lock().unwrap().signing(name);
    let signature = key.sign_digest(&digest).unwrap();
    Ok(Json(json!({
        "signature": encoded(signature.as_ref(), corrupt),
        "signatureCrc32c": crc(signature.as_ref()),
        "verifiedDigestCrc32c": body.get("digestCrc32c").is_some(),
        "name": name,
        "protectionLevel": "SOFTWARE",
    }))
    .into_response())
}

/// Flips the first bit of `bytes` when `corrupt`, leaving its checksum as it was.
fn encoded(bytes: &[u8], corrupt: bool) -> String {
    let mut sent = bytes.to_vec();
    if corrupt && !sent.is_empty() {
        sent[0] ^= 1;
    }
    STANDARD.encode(sent)
}

fn encrypt(shared: &Shared, name: &str, body: &Value, corrupt: bool) -> Result<Response, Response> {
    let plaintext = field_bytes(body, "plaintext")?;
    let aad = field_bytes(body, "additionalAuthenticatedData")?;
    let plaintext_ok = checksum_ok(body, "plaintextCrc32c", &plaintext);
    let aad_ok = checksum_ok(body, "additionalAuthenticatedDataCrc32c", &aad);
    if !plaintext_ok || !aad_ok {
        return Err(error(StatusCode::BAD_REQUEST, "checksum mismatch"));
    }
    let mut keys = shared.keys.lock().unwrap();
    let key = keys.by_name.entry(name.to_owned()).or_insert_with(|| {
        let mut material = [0u8; 32];
        rand::rng().fill_bytes(&mut material);
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &material).unwrap())
    });
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let mut sealed = plaintext;
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut sealed).unwrap();
    let mut ciphertext = nonce.to_vec();
    ciphertext.extend_from_slice(&sealed);
    Ok(Json(json!({
        "name": format!("{name}/cryptoKeyVersions/1"),
        "ciphertext": encoded(&ciphertext, corrupt),
        "ciphertextCrc32c": crc(&ciphertext),
        "verifiedPlaintextCrc32c": body.get("plaintextCrc32c").is_some(),
        "verifiedAdditionalAuthenticatedDataCrc32c": body.get("additionalAuthenticatedDataCrc32c").is_some(),
        "protectionLevel": "SOFTWARE",
    }))
    .into_response())
}

fn decrypt(shared: &Shared, name: &str, body: &Value, corrupt: bool) -> Result<Response, Response> {
    let ciphertext = field_bytes(body, "ciphertext")?;
    let aad = field_bytes(body, "additionalAuthenticatedData")?;
    let ciphertext_ok = checksum_ok(body, "ciphertextCrc32c", &ciphertext);
    let aad_ok = checksum_ok(body, "additionalAuthenticatedDataCrc32c", &aad);
    if !ciphertext_ok || !aad_ok {
        return Err(error(StatusCode::BAD_REQUEST, "checksum mismatch"));
    }
    let keys = shared.keys.lock().unwrap();
    let key = keys.by_name.get(name).ok_or_else(|| error(StatusCode::NOT_FOUND, "crypto key not found"))?;
    let failed = || error(StatusCode::BAD_REQUEST, "Decryption failed: the ciphertext is invalid.");
    if ciphertext.len() < 12 + 16 {
        return Err(failed());
    }
    let (nonce, sealed) = ciphertext.split_at(12);
    let mut buffer = sealed.to_vec();
    let plaintext = key
        .open_in_place(Nonce::try_assume_unique_for_key(nonce).unwrap(), Aad::from(&aad), &mut buffer)
        .map_err(|_| failed())?;
    Ok(Json(json!({
        "plaintext": encoded(plaintext, corrupt),
        "plaintextCrc32c": crc(plaintext),
        "usedPrimary": true,
        "protectionLevel": "SOFTWARE",
    }))
    .into_response())
}
