"""The envelope's published test vectors (crates/envelope/tests/vectors), opened from Python:
every valid vector opens to its data and attributes, and every catalogued bad message
raises the reason code the vector names, exactly as the Rust crate does."""

import base64
import json

import pytest

import pubsub_envelope as pe
from conftest_shared import REPO

VECTORS = REPO / "crates" / "envelope" / "tests" / "vectors"
FILES = ["encrypt.json", "sign.json", "attest_session.json", "attest_kms.json"]


def b64(text):
    return base64.b64decode(text)


PYTHON_MODE = {"encrypt": "decrypt", "sign": "verify", "attest": "attest"}


def opener_for(vectors, tmp_path, pin=True, settings=None):
    """An opener as the Rust tests build theirs: the vectors' data keys were wrapped by the
    local keyring backend under the KEK of keyring_wrap.json, so a keyring holding that KEK
    unwraps them. Attest public keys are pinned (the keyring has no signing keys), unless
    `pin` is false: the case of a KMS that lacks a version's public key."""
    kek = json.loads((VECTORS / "keyring_wrap.json").read_text())
    keys = [
        {
            "name": wrapped["kms_key"],
            "purpose": "ENCRYPT_DECRYPT",
            "primary": kek["version"],
            "versions": [{"version": kek["version"], "material": kek["kek"]}],
        }
        for wrapped in vectors.get("wrapped_keys", [])
    ]
    keyring = tmp_path / "vectors-keyring.json"
    keyring.write_text(json.dumps({"format": "pubsub-envelope-keyring/1", "keys": keys}))
    pinned = {
        version: "-----BEGIN PUBLIC KEY-----\n" + der + "\n-----END PUBLIC KEY-----\n"
        for version, der in vectors.get("public_keys", {}).items()
        if pin
    }
    # A vector refused by policy names the opener's settings; its `now` is not needed
    # here, since each such vector holds at any real time this package will meet.
    settings = settings or {}
    if "pinned" in settings:
        pinned = {
            version: "-----BEGIN PUBLIC KEY-----\n" + der + "\n-----END PUBLIC KEY-----\n"
            for version, der in settings["pinned"].items()
        }
    accept = settings.get("accept")
    assert accept is None or len(accept) == 1, "the package's modes accept one mode or all"
    return pe.Opener(
        pe.LocalKms(keyring),
        tenant_id=vectors["tenant_id"],
        trusted_kms_keys=vectors["trusted_kms_keys"],
        trusted_public_keys=pinned,
        mode=PYTHON_MODE[accept[0]] if accept else "auto",
        max_message_age_secs=settings.get("max_age_secs"),
        max_certificate_lifetime_secs=settings.get("max_certificate_lifetime_secs", 3660),
    )


def cases(kind):
    found = []
    for name in FILES:
        vectors = json.loads((VECTORS / name).read_text())
        found += [pytest.param(vectors, case, id=f"{name}:{case['name']}") for case in vectors[kind]]
    return found


@pytest.mark.parametrize("vectors, case", cases("valid"))
def test_valid_vectors_open(vectors, case, tmp_path):
    """A valid vector opens to its data and attributes, with its fingerprint."""
    opened = opener_for(vectors, tmp_path).open(b64(case["sealed"]["data"]), case["sealed"]["attributes"])
    assert opened.data == b64(case["data"])
    assert opened.attributes == case["attributes"]
    assert opened.fingerprint == b64(case["fingerprint"])
    assert opened.sealed_at == pytest.approx(case["sealed_at"] / 1e6)


@pytest.mark.parametrize("vectors, case", cases("invalid"))
def test_invalid_vectors_give_their_reason(vectors, case, tmp_path):
    """A catalogued bad message raises an OpenError with the vector's reason code."""
    with pytest.raises(pe.OpenError) as raised:
        pin = "the KMS lacks" not in case["name"]
        opener = opener_for(vectors, tmp_path, pin, case.get("opener"))
        opener.open(b64(case["sealed"]["data"]), case["sealed"]["attributes"])
    assert raised.value.reason == case["reason"], str(raised.value)
