//! One opener serves several tenants that each bind a tenant id of their own, named per
//! trusted key; a message bound to one tenant's id never opens as another's.
#![allow(unused_crate_dependencies, reason = "each test target uses a share of its package's dependencies")]

mod common;

use bytes::Bytes;
use common::{Fixture, TENANT_1_KEY, TENANT_2_KEY, key};
use pubsub_envelope::kms::local::Purpose;
use pubsub_envelope::{AttestBy, Attributes, KeyVersionName, Mode, Opener, Sealer, TrustedKeys};

const SIGNER_2: &str = "projects/tenant-2/locations/us-central1/keyRings/tenant2-keyring/cryptoKeys/signer";

/// An opener whose own tenant id is the article's, trusting tenant 1's keys for
/// `tenant-a` and tenant 2's for `tenant-b`.
fn opener(fixture: &Fixture) -> Opener {
    let trusted = TrustedKeys::from_patterns(["projects/tenant-1/*=tenant-a", "projects/tenant-2/*=tenant-b"]).unwrap();
    Opener::builder("tenantKey", trusted).kms(fixture.kms.clone()).build().unwrap()
}

async fn seal(sealer: &mut Sealer, text: &str) -> pubsub_envelope::Sealed {
    sealer.seal(Bytes::copy_from_slice(text.as_bytes()), Attributes::new()).await.unwrap()
}

#[tokio::test]
async fn each_tenant_opens_under_its_own_id_and_no_other() {
    let fixture = Fixture::new();
    fixture.add_key(SIGNER_2, Purpose::AsymmetricSign);
    let opener = opener(&fixture);
    let kms = fixture.kms.clone();
    let signer = KeyVersionName::new(key(SIGNER_2), 1).unwrap();
    let mut right = [
        (Sealer::encrypt(kms.clone(), key(TENANT_1_KEY), "tenant-a"), Mode::Encrypt),
        (Sealer::sign(kms.clone(), key(TENANT_2_KEY), "tenant-b"), Mode::Sign),
        (Sealer::attest(kms.clone(), signer.clone(), "tenant-b", AttestBy::SessionKey), Mode::Attest),
        (Sealer::attest(kms.clone(), signer.clone(), "tenant-b", AttestBy::KmsEachMessage), Mode::Attest),
    ];
    for (sealer, mode) in &mut right {
        let sealed = seal(sealer, "mine").await;
        let opened = opener.open(&sealed.data, &sealed.attributes).await.unwrap();
        assert_eq!((opened.data.as_ref(), opened.mode), (&b"mine"[..], *mode));
    }
    // The same keys, bound to the other tenant's id (or the opener's default): refused,
    // each with the reason its mode gives.
    let mut wrong = [
        (Sealer::encrypt(kms.clone(), key(TENANT_1_KEY), "tenant-b"), "unwrap_rejected"),
        (Sealer::sign(kms.clone(), key(TENANT_2_KEY), "tenantKey"), "unwrap_rejected"),
        (Sealer::attest(kms.clone(), signer.clone(), "tenant-a", AttestBy::SessionKey), "wrong_tenant"),
        (Sealer::attest(kms.clone(), signer, "tenant-a", AttestBy::KmsEachMessage), "tampered"),
    ];
    for (sealer, reason) in &mut wrong {
        let sealed = seal(sealer, "not mine").await;
        let error = opener.open(&sealed.data, &sealed.attributes).await.unwrap_err();
        assert_eq!(error.reason(), *reason, "{error}");
    }
}
