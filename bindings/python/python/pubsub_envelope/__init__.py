"""Seal and open Pub/Sub messages under per-tenant KMS keys.

The Rust library pubsub-envelope, exposed: the same wire format (docs/FORMAT.md),
trust rules and reason codes as the toolkit's binaries, so messages sealed here open
in the Rust pipeline and the other way round.

Producer::

    kms = LocalKms("keyring.json")             # or CloudKms() on GCP
    sealer = Sealer.encrypt(kms, KEY, "tenant-1")
    data, attributes = sealer.seal(b"hello", {"lang": "en"})
    publisher.publish(topic, data, **attributes)

Consumer::

    opener = Opener(kms, tenant_id="tenant-1", trusted_kms_keys=[KEY])
    try:
        opened = opener.open(message.data, dict(message.attributes))
    except OpenError as error:
        if error.transient:
            ...  # retry later (nack)
        else:
            ...  # dead-letter, with error.reason
"""

from ._native import (
    DEFAULT_TENANT_ID,
    LIMITS,
    CloudKms,
    EnvelopeError,
    ForgedError,
    InfrastructureError,
    Kms,
    LocalKms,
    MalformedError,
    Opened,
    Opener,
    OpenError,
    RefusedError,
    SealError,
    Sealer,
    __version__,
    create_local_key,
    public_key_pem,
)

__all__ = [
    "DEFAULT_TENANT_ID",
    "LIMITS",
    "CloudKms",
    "EnvelopeError",
    "ForgedError",
    "InfrastructureError",
    "Kms",
    "LocalKms",
    "MalformedError",
    "Opened",
    "Opener",
    "OpenError",
    "RefusedError",
    "SealError",
    "Sealer",
    "__version__",
    "create_local_key",
    "public_key_pem",
]
