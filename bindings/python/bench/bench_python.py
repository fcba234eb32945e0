"""Seal and open per 1 KiB message in Python: the package against the original's stack.

The original (the article's proof of concept) is reproduced as it worked: Tink's Python
AEAD (encrypt) or MAC (sign), a fresh data-key keyset every N messages wrapped by a
KMS AEAD with the tenant id as associated data, the producer's attributes carried as
JSON inside the ciphertext, and on the consumer an `ExpiringDict(max_len=100,
max_age_seconds=200)` of unwrapped keys. Its KMS here is a local Tink AEAD, as ours is
the local keyring: both sides pay a local wrap and unwrap per data key, no network.

Prints one row per (mode, rotation) with microseconds per message (best of --repeat
runs, wall clock, one thread): the original, the package one message at a time, and
the package in batches of 100 (`seal_many`, `open_many`); then the package's open on 1
and 8 threads, and `open_many` on 1 and 2 threads.

    python bench_python.py [--messages 20000] [--repeat 3] [--rotations 5,1000]
"""

import argparse
import base64
import json
import os
import tempfile
import threading
import time

import pubsub_envelope as pe

KEY = "projects/bench/locations/global/keyRings/bench/cryptoKeys/tenant-1"
TENANT = "tenant-1"
DATA = os.urandom(512).hex().encode()  # 1 KiB of text, as a producer sends
ATTRIBUTES = {"epoch_time": "1700000000", "a": "aaa"}


class Original:
    """The original's seal and open, on Tink (imported only when measured)."""

    def __init__(self, mode, rotation):
        import tink
        from expiringdict import ExpiringDict
        from tink import aead, mac

        aead.register()
        mac.register()
        self.tink, self.aead, self.mac = tink, aead, mac
        self.mode, self.rotation = mode, rotation
        self.kms = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
        self.cache = ExpiringDict(max_len=100, max_age_seconds=200)
        self.sealed = 0
        self.current = None

    def _rotate(self):
        from tink import cleartext_keyset_handle
        import io

        template = (
            self.aead.aead_key_templates.AES256_GCM
            if self.mode == "encrypt"
            else self.mac.mac_key_templates.HMAC_SHA256_256BITTAG
        )
        handle = self.tink.new_keyset_handle(template)
        out = io.BytesIO()
        cleartext_keyset_handle.write(self.tink.BinaryKeysetWriter(out), handle)
        wrapped = base64.b64encode(self.kms.encrypt(out.getvalue(), TENANT.encode())).decode()
        primitive = handle.primitive(self.aead.Aead if self.mode == "encrypt" else self.mac.Mac)
        self.current = (wrapped, primitive)

    def seal(self, data, attributes):
        if self.sealed % self.rotation == 0:
            self._rotate()
        self.sealed += 1
        wrapped, primitive = self.current
        if self.mode == "encrypt":
            cleartext = json.dumps({"data": data.decode(), "attributes": attributes}).encode()
            return primitive.encrypt(cleartext, b""), {"kms_key": KEY, "dek_wrapped": wrapped}
        signature = base64.b64encode(primitive.compute_mac(data)).decode()
        return data, {**attributes, "kms_key": KEY, "sign_key_wrapped": wrapped, "signature": signature}

    def _key(self, wrapped):
        primitive = self.cache.get(wrapped)
        if primitive is None:
            from tink import cleartext_keyset_handle
            import io

            keyset = self.kms.decrypt(base64.b64decode(wrapped), TENANT.encode())
            handle = cleartext_keyset_handle.read(self.tink.BinaryKeysetReader(io.BytesIO(keyset).getvalue()))
            primitive = handle.primitive(self.aead.Aead if self.mode == "encrypt" else self.mac.Mac)
            self.cache[wrapped] = primitive
        return primitive

    def open(self, data, attributes):
        if self.mode == "encrypt":
            message = json.loads(self._key(attributes["dek_wrapped"]).decrypt(data, b""))
            return message["data"].encode(), message["attributes"]
        self._key(attributes["sign_key_wrapped"]).verify_mac(base64.b64decode(attributes["signature"]), data)
        return data, {k: v for k, v in attributes.items() if k not in ("kms_key", "sign_key_wrapped", "signature")}


class Package:
    """The same through pubsub_envelope, on a local keyring."""

    def __init__(self, mode, rotation, keyring):
        kms = pe.LocalKms(keyring)
        make = pe.Sealer.encrypt if mode == "encrypt" else pe.Sealer.sign
        self.sealer = make(kms, KEY, TENANT, max_messages=rotation)
        self.opener = pe.Opener(pe.LocalKms(keyring), tenant_id=TENANT, trusted_kms_keys=[KEY])

    def seal(self, data, attributes):
        return self.sealer.seal(data, attributes)

    def open(self, data, attributes):
        opened = self.opener.open(data, attributes)
        return opened.data, opened.attributes


def measure_batches(keyring, mode, rotation, messages, repeat, batch=100):
    """Best microseconds per message to seal, then to open, in batches of `batch`
    (each result's data and attributes read, as a consumer would)."""
    seals, opens = [], []
    for _ in range(repeat):
        stack = Package(mode, rotation, keyring)
        inputs = [(DATA, ATTRIBUTES)] * batch
        start = time.perf_counter()
        sealed = []
        for _ in range(messages // batch):
            sealed.extend(stack.sealer.seal_many(inputs))
        seals.append((time.perf_counter() - start) / len(sealed) * 1e6)
        chunks = [sealed[i:i + batch] for i in range(0, len(sealed), batch)]
        start = time.perf_counter()
        for chunk in chunks:
            for opened in stack.opener.open_many(chunk):
                restored = opened.data, opened.attributes
        opens.append((time.perf_counter() - start) / len(sealed) * 1e6)
        assert restored == (DATA, ATTRIBUTES), "round trip"
    return best(seals), best(opens)


def threaded_open_many(keyring, rotation, messages, threads, repeat, batch=100):
    """Messages opened per second by `threads` threads, each opening its share with
    `open_many` in batches of `batch`, sharing one opener."""
    kms = pe.LocalKms(keyring)
    sealer = pe.Sealer.encrypt(kms, KEY, TENANT, max_messages=rotation)
    sealed = sealer.seal_many([(DATA, ATTRIBUTES)] * messages)

    def work(opener, part):
        for i in range(0, len(part), batch):
            for opened in opener.open_many(part[i:i + batch]):
                opened.data

    return on_threads(kms, sealed, threads, repeat, work)


def best(runs):
    return min(runs)


def measure(make, messages, repeat):
    """Best microseconds per message to seal, then to open, over `repeat` fresh runs."""
    seals, opens = [], []
    for _ in range(repeat):
        stack = make()
        start = time.perf_counter()
        sealed = [stack.seal(DATA, ATTRIBUTES) for _ in range(messages)]
        seals.append((time.perf_counter() - start) / messages * 1e6)
        start = time.perf_counter()
        for data, attributes in sealed:
            opened, restored = stack.open(data, attributes)
        opens.append((time.perf_counter() - start) / messages * 1e6)
        assert opened == DATA and restored == ATTRIBUTES, "round trip"
    return best(seals), best(opens)


def threaded_open(keyring, rotation, messages, threads, repeat, size):
    """Messages opened per second by `threads` threads sharing one opener."""
    kms = pe.LocalKms(keyring)
    sealer = pe.Sealer.encrypt(kms, KEY, TENANT, max_messages=rotation)
    data = os.urandom(size)
    sealed = [sealer.seal(data, ATTRIBUTES) for _ in range(messages)]
    def work(opener, part):
        for data, attributes in part:
            opener.open(data, attributes)

    return on_threads(kms, sealed, threads, repeat, work)


def on_threads(kms, sealed, threads, repeat, work):
    """Best messages per second of `work(opener, part)` on `threads` threads, each given
    its share of `sealed`, all sharing one new opener a run."""
    rates = []
    for _ in range(repeat):
        opener = pe.Opener(kms, tenant_id=TENANT, trusted_kms_keys=[KEY])
        share = [sealed[i::threads] for i in range(threads)]
        barrier = threading.Barrier(threads + 1)

        def run(part):
            barrier.wait()
            work(opener, part)

        workers = [threading.Thread(target=run, args=(part,)) for part in share]
        for worker in workers:
            worker.start()
        barrier.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        rates.append(len(sealed) / (time.perf_counter() - start))
    return max(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rotations", default="5,1000")
    parser.add_argument("--modes", default="encrypt,sign")
    args = parser.parse_args()
    rotations = [int(r) for r in args.rotations.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        keyring = os.path.join(folder, "keyring.json")
        pe.create_local_key(keyring, KEY)
        print(f"1 KiB messages, {args.messages} per run, best of {args.repeat}; us per message, one thread")
        print("| mode | new key every | original seal / open | package seal / open | speed-up | batches of 100 seal / open | speed-up |")
        print("|---|---:|---|---|---|---|---|")
        for mode in args.modes.split(","):
            for rotation in rotations:
                o_seal, o_open = measure(lambda: Original(mode, rotation), args.messages, args.repeat)
                p_seal, p_open = measure(lambda: Package(mode, rotation, keyring), args.messages, args.repeat)
                b_seal, b_open = measure_batches(keyring, mode, rotation, args.messages, args.repeat)
                print(
                    f"| {mode} | {rotation} | {o_seal:.1f} / {o_open:.1f} | {p_seal:.1f} / {p_open:.1f} "
                    f"| {o_seal / p_seal:.1f}x / {o_open / p_open:.1f}x | {b_seal:.2f} / {b_open:.2f} "
                    f"| {o_seal / b_seal:.1f}x / {o_open / b_open:.1f}x |",
                    flush=True,
                )
        print()
        print(f"package open (encrypt), msg/s by threads sharing one Opener; {os.cpu_count()} cores")
        print("| message | new key every | 1 thread | 8 threads | speed-up |")
        print("|---:|---:|---:|---:|---:|")
        for size, count in ((1024, args.messages), (64 * 1024, max(1, args.messages // 8))):
            for rotation in rotations:
                one = threaded_open(keyring, rotation, count, 1, args.repeat, size)
                eight = threaded_open(keyring, rotation, count, 8, args.repeat, size)
                print(f"| {size // 1024} KiB | {rotation} | {one:,.0f} | {eight:,.0f} | {eight / one:.2f}x |", flush=True)
        print()
        print("package open_many (encrypt, batches of 100, 1 KiB), msg/s by threads sharing one Opener")
        print("| new key every | 1 thread | 2 threads | speed-up |")
        print("|---:|---:|---:|---:|")
        for rotation in rotations:
            one = threaded_open_many(keyring, rotation, args.messages, 1, args.repeat)
            two = threaded_open_many(keyring, rotation, args.messages, 2, args.repeat)
            print(f"| {rotation} | {one:,.0f} | {two:,.0f} | {two / one:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
