"""The package's own behaviour: round trips, errors with their reason codes, rotation,
pickling, and what many threads sharing one opener see."""

import base64
import pickle
import threading
import warnings

import pytest

import pubsub_envelope as pe
from conftest_shared import KEY, OTHER_KEY, SIGNER_VERSION, TENANT

ATTRIBUTES = {"epoch_time": "1541340000", "lang": "en"}


def sealers(kms):
    return {
        "encrypt": pe.Sealer.encrypt(kms, KEY, TENANT),
        "sign": pe.Sealer.sign(kms, KEY, TENANT),
        "attest": pe.Sealer.attest(kms, SIGNER_VERSION, TENANT),
        "attest_kms": pe.Sealer.attest(kms, SIGNER_VERSION, TENANT, by="kms_each_message"),
    }


def opener(kms, **settings):
    settings.setdefault("trusted_kms_keys", ["projects/tenant-1/*"])
    return pe.Opener(kms, tenant_id=TENANT, **settings)


@pytest.mark.parametrize("flavour", ["encrypt", "sign", "attest", "attest_kms"])
def test_every_mode_round_trips_data_and_attributes(kms, flavour):
    """What a sealer seals, an opener for the same tenant returns: data, attributes, mode, key."""
    sealer = sealers(kms)[flavour]
    data, attributes = sealer.seal(b"the quick brown fox", ATTRIBUTES)
    opened = opener(kms).open(data, attributes)
    assert opened.data == b"the quick brown fox"
    assert opened.attributes == ATTRIBUTES
    assert opened.mode == sealer.mode == flavour.split("_")[0]
    assert opened.kms_key == (KEY if flavour in ("encrypt", "sign") else SIGNER_VERSION.rsplit("/cryptoKeyVersions", 1)[0])
    assert len(opened.fingerprint) == 32
    if flavour.startswith("attest"):
        assert SIGNER_VERSION in opened.attested_by
    else:
        assert opened.attested_by is None


def test_encrypt_hides_data_and_attributes(kms):
    """In encrypt mode neither the data nor the producer's attributes travel in the clear."""
    data, attributes = pe.Sealer.encrypt(kms, KEY, TENANT).seal(b"secret words", {"lang": "en"})
    assert b"secret words" not in data
    assert "lang" not in attributes and "en" not in attributes.values()


def test_copies_share_a_fingerprint_and_messages_do_not(kms):
    """The fingerprint is what deduplication keys on: the same for a copy, different for two seals."""
    sealer = pe.Sealer.encrypt(kms, KEY, TENANT)
    first, second = sealer.seal(b"same", {}), sealer.seal(b"same", {})
    o = opener(kms)
    assert o.open(*first).fingerprint == o.open(*first).fingerprint
    assert o.open(*first).fingerprint != o.open(*second).fingerprint


def test_rotation_wraps_one_key_per_rotation_and_the_opener_unwraps_each_once(kms):
    """With a new data key every 5 messages, 20 messages take 4 wraps, and opening them 4 unwraps."""
    sealer = pe.Sealer.encrypt(kms, KEY, TENANT, max_messages=5, keys_ahead=0)
    sealed = [sealer.seal(b"m%d" % i, {}) for i in range(20)]
    assert sealer.data_keys_made == 4 and kms.wraps == 4
    o = opener(kms)
    assert [o.open(*message).data for message in sealed] == [b"m%d" % i for i in range(20)]
    assert kms.unwraps == 4
    assert o.cache_stats() == (16, 4)


@pytest.mark.parametrize("mode", ["encrypt", "sign"])
def test_strings_reused_across_messages_follow_each_new_key(kms, mode):
    """A sealer reuses its envelope attributes' strings while they repeat; after each rotation
    they are the new key's, every message opens, and a per-message value is never reused."""
    sealer = getattr(pe.Sealer, mode)(kms, KEY, TENANT, max_messages=2, keys_ahead=0)
    wrapped_name = "dek_wrapped" if mode == "encrypt" else "sign_key_wrapped"
    sealed = [sealer.seal(b"m%d" % i, dict(ATTRIBUTES)) for i in range(6)]
    wrapped = [attributes[wrapped_name] for _, attributes in sealed]
    assert wrapped[0] is wrapped[1] and wrapped[2] is wrapped[3] and wrapped[4] is wrapped[5]
    assert len({wrapped[0], wrapped[2], wrapped[4]}) == 3, "each rotation's message carries its own key"
    assert len({attributes["envelope_sealed_at"] for _, attributes in sealed}) == 6
    o = opener(kms)
    assert [o.open(*message).data for message in sealed] == [b"m%d" % i for i in range(6)]
    batch = sealer.seal_many([(b"b%d" % i, dict(ATTRIBUTES)) for i in range(3)])
    assert [o.open(*message).data for message in batch] == [b"b0", b"b1", b"b2"]
    assert batch[0][1][wrapped_name] != batch[2][1][wrapped_name]


def test_sign_mode_hands_back_the_producers_own_objects(kms):
    """Sign mode leaves data and attributes as they were: the seal returns the producer's
    bytes and attribute strings themselves, and the open the bytes it was given, not copies."""
    data, given = b"x" * 1024, {"epoch_time": "1541340000", "lang": "en"}
    sealed_data, attributes = pe.Sealer.sign(kms, KEY, TENANT).seal(data, given)
    assert sealed_data is data
    assert all(attributes[name] is value for name, value in given.items())
    assert given == {"epoch_time": "1541340000", "lang": "en"}, "the producer's dict is not changed"
    opened = opener(kms).open(sealed_data, attributes)
    assert opened.data is sealed_data
    assert opened.attributes == given and all(opened.attributes[name] is value for name, value in given.items())
    # A str subclass is not handed back: what comes out is plain str, equal.
    class Text(str):
        pass

    _, attributes = pe.Sealer.sign(kms, KEY, TENANT).seal(data, {"lang": Text("en"), "epoch_time": "1"})
    assert type(attributes["lang"]) is str and attributes["lang"] == "en" and attributes["epoch_time"] == "1"
    assert opener(kms).open(data, {**attributes, "lang": Text("en")}).attributes == {"lang": "en", "epoch_time": "1"}
    # A bytearray is copied going in, so what comes back is bytes, equal, not the same object.
    sealed_data, _ = pe.Sealer.sign(kms, KEY, TENANT).seal(bytearray(data), given)
    assert type(sealed_data) is bytes and sealed_data == data


def test_a_dict_changed_after_open_cannot_change_the_opened_attributes(kms):
    """Opened.attributes reuses the strings of the dict handed to open only where they equal
    what was authenticated: a value changed or a key added after the open does not get in."""
    data, attributes = pe.Sealer.sign(kms, KEY, TENANT).seal(b"words", {"lang": "en", "epoch_time": "1"})
    given = dict(attributes)
    opened = opener(kms).open(data, given)
    given["lang"] = "forged"
    given["extra"] = "added"
    del given["epoch_time"]
    assert opened.attributes == {"lang": "en", "epoch_time": "1"}


@pytest.mark.parametrize(
    "change, error, reason",
    [
        (lambda d, a: (d[:-1] + bytes([d[-1] ^ 1]), a), pe.ForgedError, "tampered"),
        (lambda d, a: (d, {k: v for k, v in a.items() if k != "kms_key"}), pe.MalformedError, "missing_attribute"),
        (lambda d, a: (d, {**a, "extra": "x"}), pe.MalformedError, "unexpected_attribute"),
        (lambda d, a: (d, {**a, "envelope_version": "2"}), pe.MalformedError, "unknown_version"),
        (lambda d, a: (d, {**a, "dek_wrapped": "%%%"}), pe.MalformedError, "bad_base64"),
    ],
)
def test_bad_messages_raise_their_kind_and_reason(kms, change, error, reason):
    """Each way a message can be spoilt raises its exception class with the stable reason code."""
    data, attributes = pe.Sealer.encrypt(kms, KEY, TENANT).seal(b"words", {"lang": "en"})
    with pytest.raises(error) as raised:
        opener(kms).open(*change(data, attributes))
    assert raised.value.reason == reason
    assert raised.value.transient is False
    assert isinstance(raised.value, pe.OpenError) and isinstance(raised.value, pe.EnvelopeError)


def test_policy_refusals_are_refused_errors(kms):
    """An untrusted key is refused by policy; another tenant's id fails its unwrap."""
    data, attributes = pe.Sealer.encrypt(kms, OTHER_KEY, "tenant-2").seal(b"words", {})
    with pytest.raises(pe.RefusedError) as raised:
        opener(kms).open(data, attributes)
    assert raised.value.reason == "untrusted_key"
    data, attributes = pe.Sealer.encrypt(kms, KEY, "tenant-2").seal(b"words", {})
    with pytest.raises(pe.OpenError) as raised:
        opener(kms).open(data, attributes)
    assert raised.value.reason == "unwrap_rejected"


def test_a_mode_not_accepted_is_refused(kms):
    """An opener in decrypt mode refuses signed messages."""
    data, attributes = pe.Sealer.sign(kms, KEY, TENANT).seal(b"words", {})
    with pytest.raises(pe.RefusedError) as raised:
        opener(kms, mode="decrypt").open(data, attributes)
    assert raised.value.reason == "mode_not_accepted"


def test_an_unreachable_kms_is_a_transient_infrastructure_error(kms):
    """A KMS that cannot be reached raises InfrastructureError with transient=True: retry, do not dead-letter."""
    data, attributes = pe.Sealer.encrypt(kms, KEY, TENANT).seal(b"words", {})
    unreachable = pe.CloudKms(endpoint="http://127.0.0.1:9", timeout_secs=2)
    with pytest.raises(pe.InfrastructureError) as raised:
        pe.Opener(unreachable, tenant_id=TENANT, trusted_kms_keys=[KEY]).open(data, attributes)
    assert raised.value.transient is True
    assert raised.value.reason in ("kms_unavailable", "kms_timeout")


def test_sealing_refuses_reserved_attributes(kms):
    """A producer attribute the envelope reserves is a SealError, not a silently broken message."""
    with pytest.raises(pe.SealError) as raised:
        pe.Sealer.encrypt(kms, KEY, TENANT).seal(b"words", {"kms_key": "mine"})
    assert raised.value.reason == "invalid_attributes" and raised.value.transient is False


def test_configuration_errors_are_value_errors(kms):
    """Settings that cannot work fail at construction: nothing trusted, a bad key name, a bad mode."""
    with pytest.raises(ValueError, match="nothing is trusted"):
        pe.Opener(kms, tenant_id=TENANT)
    with pytest.raises(ValueError):
        pe.Sealer.encrypt(kms, "not/a/key", TENANT)
    with pytest.raises(ValueError):
        opener(kms, mode="sometimes")
    with pytest.raises(ValueError):
        pe.Sealer.encrypt(kms, KEY, TENANT, max_age_secs=0)
    with pytest.raises(ValueError):
        pe.Opener(tenant_id=TENANT, trusted_kms_keys=[KEY])  # encrypt and sign need a KMS


def test_trust_lists_that_contradict_or_fetch_in_the_clear_are_value_errors(kms):
    """The library's trust rules hold here too: entries for one set of keys that bind
    different tenant ids, an entry without an id under a prefix that names one, a `*`
    that could never match, and a certificate URL that is not https are refused."""
    for trusted, why in [
        (["projects/tenant-2/*=tenant-2", "projects/tenant-2/*=tenant-x"], "different tenant ids"),
        (["projects/tenant-1/*=tenant-1", KEY], "names no tenant id"),
        (["projects/*/locations/global/*"], "may only end"),
    ]:
        with pytest.raises(ValueError, match=why):
            pe.Opener(kms, tenant_id=TENANT, trusted_kms_keys=trusted)
    with pytest.raises(ValueError, match="must be https"):
        opener(kms, trusted_signers=["a@p.iam.gserviceaccount.com=http://certs.example.com/a"])
    opener(kms, trusted_signers=["a@p.iam.gserviceaccount.com=http://127.0.0.1:9/a"])  # a test's server


# Values a caller might pass by mistake; none may escape as pyo3's PanicException,
# which derives from BaseException and so passes through a Beam DoFn's `except Exception`.
EXTREMES = [0, -1, 0.5, 4e10, 1e300, float("inf"), float("nan"), 2**63, 2**64, 2**200]


def no_panic(call):
    """Calls `call`; returns the Exception it raised (None if none). A BaseException
    that is not an Exception (PanicException) propagates and fails the test."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 - which kind is the caller's to check
        return error
    return None


def test_every_duration_and_size_keyword_is_bounded_and_nothing_panics(kms, keyring):
    """`Opener(cache_ttl_secs=4e10)` took moka's panicking path (PanicException). Each
    keyword is checked against `LIMITS`, the library's one table: its limit is
    accepted, beyond it is a ValueError, and no value at all makes a panic."""
    limits = pe.LIMITS
    makers = {
        "cache_ttl_secs": lambda v: opener(kms, cache_ttl_secs=v),
        "cache_capacity": lambda v: opener(kms, cache_capacity=v),
        "max_message_age_secs": lambda v: opener(kms, max_message_age_secs=v),
        "max_certificate_lifetime_secs": lambda v: opener(kms, max_certificate_lifetime_secs=v),
        "kms_failure_budget": lambda v: opener(kms, kms_failure_budget=v),
        "kms_max_in_flight": lambda v: opener(kms, kms_max_in_flight=v),
        "max_age_secs": lambda v: pe.Sealer.encrypt(kms, KEY, TENANT, max_age_secs=v),
        "max_messages": lambda v: pe.Sealer.sign(kms, KEY, TENANT, max_messages=v),
        "keys_ahead": lambda v: pe.Sealer.attest(kms, SIGNER_VERSION, TENANT, keys_ahead=v),
        "timeout_secs": lambda v: pe.CloudKms(endpoint="http://127.0.0.1:9", timeout_secs=v),
        "latency_ms": lambda v: pe.LocalKms(keyring, latency_ms=v),
    }
    assert set(makers) <= set(limits), "every keyword bounded has its limit published"
    for keyword, make in makers.items():
        assert no_panic(lambda: make(limits[keyword])) is None, f"{keyword} at its limit"
        beyond = no_panic(lambda: make(limits[keyword] + 1))
        assert isinstance(beyond, (ValueError, OverflowError)), f"{keyword} beyond its limit: {beyond!r}"
        for value in EXTREMES:
            error = no_panic(lambda: make(value))
            assert error is None or isinstance(error, (ValueError, TypeError, OverflowError)), (keyword, value, error)
    assert limits["default_max_certificate_lifetime_secs"] == 3660


def test_garbage_messages_raise_open_errors_and_never_panic(kms):
    """Whatever a message holds, `open` raises an OpenError subclass (or returns)."""
    import random

    rng = random.Random(28)
    opener_ = opener(kms)
    good_data, good = pe.Sealer.encrypt(kms, KEY, TENANT).seal(b"words", {"a": "b"})
    for _ in range(500):
        attributes = dict(good)
        for key in rng.sample(sorted(attributes), rng.randint(0, len(attributes))):
            choice = rng.random()
            if choice < 0.3:
                del attributes[key]
            elif choice < 0.6:
                attributes[key] = "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 40)))
            else:
                value = bytearray(attributes[key].encode())
                if value:
                    value[rng.randrange(len(value))] ^= 1 << rng.randrange(7)
                attributes[key] = value.decode("utf-8", "replace")
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))) if rng.random() < 0.5 else good_data
        error = no_panic(lambda: opener_.open(data, attributes))
        assert error is None or isinstance(error, pe.OpenError), repr(error)


def test_trusting_any_key_is_explicit_and_warns(kms):
    """Trusting every key takes a loudly named flag, which warns."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pe.Opener(kms, tenant_id=TENANT, dangerous_trust_any_kms_key=True)
    assert any(issubclass(w.category, RuntimeWarning) and "ANY KMS key" in str(w.message) for w in caught)


def test_kms_and_opener_pickle_as_their_settings(kms, keyring):
    """A Beam DoFn can carry an opener: unpickled, it opens what the original opens."""
    data, attributes = pe.Sealer.encrypt(kms, KEY, TENANT).seal(b"words", {"a": "b"})
    original = opener(kms, cache_capacity=10, max_message_age_secs=3600)
    copy = pickle.loads(pickle.dumps(original))
    assert copy.open(data, attributes).data == b"words"
    assert copy.tenant_id == TENANT
    assert repr(pickle.loads(pickle.dumps(kms))) == repr(kms)
    cloud = pickle.loads(pickle.dumps(pe.CloudKms(endpoint="http://127.0.0.1:9", timeout_secs=3)))
    assert "timeout_secs=3" in repr(cloud)


def test_eight_threads_open_what_one_thread_opens_with_one_kms_call_per_key(keyring):
    """8 threads sharing one opener give the same results, and concurrent misses on one key make one KMS call."""
    slow = pe.LocalKms(keyring, latency_ms=300)
    sealer = pe.Sealer.encrypt(pe.LocalKms(keyring), KEY, TENANT, max_messages=50)
    sealed = [sealer.seal(b"message %d" % i, {"n": str(i)}) for i in range(400)]
    shared = opener(slow)
    results = [None] * len(sealed)

    def work(part):
        for i in part:
            opened = shared.open(*sealed[i])
            results[i] = (opened.data, opened.attributes["n"])

    threads = [threading.Thread(target=work, args=(range(t, len(sealed), 8),)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [(b"message %d" % i, str(i)) for i in range(400)]
    assert slow.unwraps == sealer.data_keys_made == 8


def test_an_open_waiting_on_the_kms_lets_other_threads_run(keyring):
    """The GIL is released while an open waits on the KMS: another thread runs Python meanwhile."""
    data, attributes = pe.Sealer.encrypt(pe.LocalKms(keyring), KEY, TENANT).seal(b"words", {})
    slow = opener(pe.LocalKms(keyring, latency_ms=3000))
    assert runs_python_meanwhile(lambda: [slow.open(data, attributes).data]) == [b"words"]


def runs_python_meanwhile(call):
    """Runs `call` (one that waits 3 s on the KMS) on a thread and plain Python on this
    one meanwhile, which can only run while the call has the GIL released: asserts the
    call was still waiting once the Python work was done, and returns what it returned."""
    started = threading.Event()
    returned = []

    def run():
        started.set()
        returned.append(call())

    worker = threading.Thread(target=run)
    worker.start()
    started.wait()
    total = sum(range(100_000))
    still_waiting = worker.is_alive()
    worker.join()
    assert total == 4_999_950_000 and still_waiting, "the call held the GIL while it waited"
    return returned[0]


def test_help_is_useful():
    """help() on the main types says how to use them."""
    assert "tenant_id" in pe.Opener.__doc__ and "trusted_kms_keys" in pe.Opener.__doc__
    assert "rotation" in pe.Sealer.__doc__
    assert "reason" in pe.EnvelopeError.__doc__ and "transient" in pe.EnvelopeError.__doc__
    assert pe.Sealer.encrypt.__doc__ and pe.Opener.open.__doc__


@pytest.mark.parametrize("mode", ["encrypt", "sign"])
def test_cloud_kms_backend_round_trips_through_the_rest_api(fake_cloud_kms, mode):
    """The Cloud KMS backend wraps and unwraps through the REST API (a local fake here): one call each way per key."""
    kms = pe.CloudKms(endpoint=fake_cloud_kms, timeout_secs=10)
    sealer = getattr(pe.Sealer, mode)(kms, KEY, TENANT, max_messages=3, keys_ahead=0)
    sealed = [sealer.seal(b"message %d" % i, {"n": str(i)}) for i in range(9)]
    o = pe.Opener(pe.CloudKms(endpoint=fake_cloud_kms), tenant_id=TENANT, trusted_kms_keys=[KEY])
    assert [o.open(*message).data for message in sealed] == [b"message %d" % i for i in range(9)]
    assert kms.wraps == 3
    with pytest.raises(pe.OpenError) as raised:
        pe.Opener(pe.CloudKms(endpoint=fake_cloud_kms), tenant_id="tenant-2", trusted_kms_keys=[KEY]).open(*sealed[0])
    assert raised.value.reason == "unwrap_rejected" and not raised.value.transient


@pytest.mark.parametrize("mode", ["encrypt", "sign"])
def test_cloud_kms_backend_round_trips_through_the_rest_api(fake_cloud_kms, mode):
    """The Cloud KMS backend wraps and unwraps through the REST API (a local fake here): one call each way per key."""
    kms = pe.CloudKms(endpoint=fake_cloud_kms, timeout_secs=10)
    sealer = getattr(pe.Sealer, mode)(kms, KEY, TENANT, max_messages=3, keys_ahead=0)
    sealed = [sealer.seal(b"message %d" % i, {"n": str(i)}) for i in range(9)]
    reader = pe.CloudKms(endpoint=fake_cloud_kms)
    o = pe.Opener(reader, tenant_id=TENANT, trusted_kms_keys=[KEY])
    assert [o.open(*message).data for message in sealed] == [b"message %d" % i for i in range(9)]
    assert kms.wraps == 3 and reader.unwraps == 3
    with pytest.raises(pe.OpenError) as raised:
        pe.Opener(pe.CloudKms(endpoint=fake_cloud_kms), tenant_id="tenant-2", trusted_kms_keys=[KEY]).open(*sealed[0])
    assert raised.value.reason == "unwrap_rejected" and not raised.value.transient


def test_attributes_may_be_any_mapping(kms):
    """Attributes are taken from any mapping (Google's client gives a protobuf map), not only a dict."""
    import types

    data, attributes = pe.Sealer.sign(kms, KEY, TENANT).seal(b"words", types.MappingProxyType({"lang": "en"}))
    opened = opener(kms).open(data, types.MappingProxyType(attributes))
    assert opened.attributes == {"lang": "en"}
    with pytest.raises(TypeError):
        opener(kms).open(data, {"lang": 1})


def test_service_account_attest_round_trips_against_its_published_certificates(tmp_path):
    """A message a service account signs opens for an opener trusting that account, its
    certificates fetched from where the account publishes them; another account is refused."""
    import http.server
    import json
    from pathlib import Path

    data_dir = Path(__file__).resolve().parents[3] / "crates" / "envelope" / "tests" / "data"
    account = json.loads((data_dir / "service-account.json").read_text())
    certs = (data_dir / "publisher-certs.json").read_bytes()

    class Certs(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(certs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Certs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/certs"
        sealer = pe.Sealer.service_account((data_dir / "service-account.json").read_text(), cert_url=url)
        data, attributes = sealer.seal(b"signed by an account", {"lang": "en"})
        email = account["client_email"]
        opened = pe.Opener(tenant_id=TENANT, trusted_signers=[f"{email}={url}"], mode="attest").open(data, attributes)
        assert opened.data == b"signed by an account" and opened.attributes == {"lang": "en"}
        assert opened.kms_key is None and email in opened.attested_by
        with pytest.raises(pe.RefusedError):
            other = pe.Opener(tenant_id=TENANT, trusted_signers=[f"someone-else@example.com={url}"], mode="attest")
            other.open(data, attributes)
    finally:
        server.shutdown()


def test_create_local_key_takes_the_keyrings_lock_and_loses_no_concurrent_key(tmp_path):
    """`create_local_key` wrote the file without the lock `publisher keyring` takes, so
    two writers at once could lose a key. Eight threads each add keys at once: every key
    is there afterwards, and the lock file is its owner's alone (0600)."""
    import os
    import stat

    path = tmp_path / "keyring.json"
    keys = [f"projects/p/locations/l/keyRings/r/cryptoKeys/k{thread}-{i}" for thread in range(8) for i in range(5)]

    def add(mine):
        for key in mine:
            pe.create_local_key(path, key)

    threads = [threading.Thread(target=add, args=(keys[t * 5 : (t + 1) * 5],)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kms = pe.LocalKms(path)
    for key in keys:
        pe.Sealer.encrypt(kms, key, TENANT).seal(b"x")  # raises if the key was lost
    assert stat.S_IMODE(os.stat(f"{path}.lock").st_mode) == 0o600


def test_a_junk_flood_costs_the_kms_its_budget_then_is_refused_without_a_call(kms):
    """Junk wrapped keys under a trusted key make at most `kms_failure_budget` KMS
    calls; the rest raise `kms_budget_exhausted` (a RefusedError, final) without one,
    and a genuine message under a data key cached before still opens."""
    opener_ = opener(kms, kms_failure_budget=5)
    data, good = pe.Sealer.sign(kms, KEY, TENANT).seal(b"words", {})
    opener_.open(data, good)
    reasons = []
    for n in range(30):
        junk = dict(good, sign_key_wrapped=base64.b64encode(n.to_bytes(2, "big") * 30).decode())
        with pytest.raises(pe.OpenError) as raised:
            opener_.open(data, junk)
        reasons.append(raised.value.reason)
        assert not raised.value.transient
    assert reasons.count("unwrap_rejected") == 5, reasons
    assert reasons.count("kms_budget_exhausted") == 25, reasons
    assert isinstance(raised.value, pe.RefusedError)
    assert opener_.open(data, good).data == b"words"
    stats = opener_.kms_stats()
    assert (stats["ok"], stats["refused"], stats["over_budget"]) == (1, 5, 25), stats


@pytest.mark.parametrize("flavour", ["encrypt", "sign", "attest"])
def test_a_batch_seals_and_opens_in_order_with_each_failure_in_its_place(kms, flavour):
    """seal_many and open_many keep the order, and a bad message is an error in its own place, not a raise."""
    sealer = sealers(kms)[flavour]
    texts = [f"message {n}".encode() for n in range(50)]
    # The 10th asks for a reserved attribute: its place holds the SealError.
    batch = [(text, {"n": str(n)} if n != 10 else {"envelope_version": "1"}) for n, text in enumerate(texts)]
    sealed = sealer.seal_many(batch)
    assert len(sealed) == 50
    assert isinstance(sealed[10], pe.SealError) and sealed[10].reason == "invalid_attributes"
    assert not sealed[10].transient
    good = [item for n, item in enumerate(sealed) if n != 10]
    assert all(isinstance(item, tuple) for item in good)
    # Plain bytes seal with no attributes.
    (plain,) = sealer.seal_many([b"no attributes"])

    # Opened in order; a tampered message and one from an untrusted key fail in place.
    messages = list(good)
    data, attributes = messages[3]
    messages[3] = (data + b"!" if flavour != "encrypt" else data[:-1] + bytes([data[-1] ^ 1]), attributes)
    stranger = pe.Sealer.encrypt(kms, OTHER_KEY, TENANT).seal(b"stranger", {})
    messages.insert(7, stranger)
    messages.append(plain)
    opened = opener(kms).open_many(messages)
    assert len(opened) == len(messages) == 51
    assert isinstance(opened[3], pe.ForgedError) and not opened[3].transient
    assert isinstance(opened[7], pe.RefusedError) and opened[7].reason == "untrusted_key"
    rest = [item for n, item in enumerate(opened[:-1]) if n not in (3, 7)]
    expected = [(text, {"n": str(n)}) for n, text in enumerate(texts) if n not in (3, 10)]
    assert [(item.data, item.attributes) for item in rest] == expected
    assert (opened[-1].data, opened[-1].attributes) == (b"no attributes", {})
    # The same messages one by one give the same answers.
    single = opener(kms)
    for message, batched in zip(messages, opened):
        if isinstance(batched, pe.OpenError):
            with pytest.raises(type(batched)):
                single.open(*message)
        else:
            assert single.open(*message).fingerprint == batched.fingerprint


def test_a_transient_failure_in_a_batch_is_returned_transient_and_the_rest_open(keyring):
    """A message whose data key cannot be unwrapped now (KMS down) comes back transient; the others still open."""
    kms = pe.LocalKms(keyring)
    under_key = pe.Sealer.encrypt(kms, KEY, TENANT).seal(b"needs the kms", {})
    # An attest message with a pinned public key needs no KMS: it opens while the KMS is down.
    attested = pe.Sealer.attest(kms, SIGNER_VERSION, TENANT).seal(b"needs no kms", {})
    pem = pe.public_key_pem(kms, SIGNER_VERSION)
    down = pe.CloudKms(endpoint="http://127.0.0.1:9", timeout_secs=1)
    results = opener(down, trusted_public_keys={SIGNER_VERSION: pem}).open_many([under_key, attested, under_key])
    assert results[1].data == b"needs no kms"
    assert all(isinstance(item, pe.InfrastructureError) and item.transient for item in (results[0], results[2])), results


def test_a_batch_is_opened_with_the_gil_released(keyring):
    """While open_many waits on the KMS, another thread runs Python."""
    messages = [pe.Sealer.encrypt(pe.LocalKms(keyring), KEY, TENANT).seal(b"words", {}) for _ in range(3)]
    slow = opener(pe.LocalKms(keyring, latency_ms=3000))
    opened = runs_python_meanwhile(lambda: [item.data for item in slow.open_many(messages)])
    assert opened == [b"words"] * 3
