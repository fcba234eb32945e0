"""Type stubs of the native module; see the package docstring."""

from os import PathLike
from typing import Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Tuple, Union

__version__: str
DEFAULT_TENANT_ID: str
LIMITS: dict[str, int]

class EnvelopeError(Exception):
    """Base of every error the envelope raises."""

    reason: str
    """A stable code (docs/FORMAT.md lists them)."""
    transient: bool
    """Whether trying again later may succeed: retry if so, else dead-letter."""

class OpenError(EnvelopeError): ...
class MalformedError(OpenError): ...
class RefusedError(OpenError): ...
class ForgedError(OpenError): ...
class InfrastructureError(OpenError): ...
class SealError(EnvelopeError): ...

class Kms:
    """Base of the KMS backends."""

    @property
    def wraps(self) -> int: ...
    @property
    def unwraps(self) -> int: ...
    @property
    def calls(self) -> int: ...

class LocalKms(Kms):
    """A local keyring file standing in for Cloud KMS (development, tests)."""

    def __init__(self, path: Union[str, PathLike[str]], latency_ms: int = 0) -> None: ...

class CloudKms(Kms):
    """Cloud KMS through Google's client: ADC, a service-account file, or a fake's endpoint."""

    def __init__(
        self,
        *,
        credentials_file: Optional[Union[str, PathLike[str]]] = None,
        endpoint: Optional[str] = None,
        timeout_secs: float = 10.0,
    ) -> None: ...

class Sealer:
    """Seals messages for one tenant under one KMS key, in one mode."""

    @staticmethod
    def encrypt(
        kms: Kms,
        key: str,
        tenant_id: str,
        *,
        max_age_secs: float = 100.0,
        max_messages: int = 1 << 20,
        max_bytes: int = 1 << 34,
        keys_ahead: Optional[int] = None,
    ) -> Sealer: ...
    @staticmethod
    def sign(
        kms: Kms,
        key: str,
        tenant_id: str,
        *,
        max_age_secs: float = 100.0,
        max_messages: int = 1 << 20,
        max_bytes: int = 1 << 34,
        keys_ahead: Optional[int] = None,
    ) -> Sealer: ...
    @staticmethod
    def attest(
        kms: Kms,
        key_version: str,
        tenant_id: str,
        *,
        by: Literal["session", "kms_each_message"] = "session",
        max_age_secs: float = 100.0,
        max_messages: int = 1 << 20,
        max_bytes: int = 1 << 34,
        keys_ahead: Optional[int] = None,
    ) -> Sealer: ...
    @staticmethod
    def service_account(key_file_json: str, *, cert_url: Optional[str] = None) -> Sealer: ...
    def seal(
        self, data: bytes, attributes: Optional[Mapping[str, str]] = None
    ) -> Tuple[bytes, dict[str, str]]: ...
    def seal_many(
        self, messages: Iterable[Union[bytes, Tuple[bytes, Optional[Mapping[str, str]]]]]
    ) -> List[Union[Tuple[bytes, dict[str, str]], SealError]]: ...
    @property
    def mode(self) -> Literal["encrypt", "sign", "attest"]: ...
    @property
    def data_keys_made(self) -> int: ...

class Opened:
    """A message that opened: authenticated and, in encrypt mode, decrypted."""

    @property
    def data(self) -> bytes: ...
    @property
    def attributes(self) -> dict[str, str]: ...
    @property
    def mode(self) -> Literal["encrypt", "sign", "attest"]: ...
    @property
    def kms_key(self) -> Optional[str]: ...
    @property
    def sealed_at(self) -> float: ...
    @property
    def attested_by(self) -> Optional[str]: ...
    @property
    def fingerprint(self) -> bytes:
        """32 bytes: the message's identity (docs/FORMAT.md, "Fingerprint"), equal for every copy and every valid encoding of one sealed message, different for any two messages, whoever sealed them."""
        ...

class Opener:
    """Opens messages for one tenant, from the keys and accounts it trusts."""

    def __init__(
        self,
        kms: Optional[Kms] = None,
        *,
        tenant_id: str,
        trusted_kms_keys: Sequence[str] = (),
        trusted_public_keys: Optional[Mapping[str, str]] = None,
        trusted_signers: Sequence[str] = (),
        mode: Literal["auto", "decrypt", "verify", "attest"] = "auto",
        cache_ttl_secs: float = 200.0,
        cache_capacity: int = 100_000,
        max_message_age_secs: Optional[float] = None,
        max_certificate_lifetime_secs: float = 3660.0,
        kms_failure_budget: int = 100,
        kms_max_in_flight: int = 64,
        dangerous_trust_any_kms_key: bool = False,
    ) -> None: ...
    def open(self, data: bytes, attributes: Mapping[str, str]) -> Opened: ...
    def open_many(self, messages: Iterable[Tuple[bytes, Mapping[str, str]]]) -> List[Union[Opened, OpenError]]: ...
    def cache_stats(self) -> Tuple[int, int]: ...
    def kms_stats(self) -> Dict[str, int]: ...
    @property
    def tenant_id(self) -> str: ...

def create_local_key(
    path: Union[str, PathLike[str]], key: str, purpose: Literal["encrypt", "sign"] = "encrypt"
) -> None: ...
def public_key_pem(kms: Kms, key_version: str) -> str: ...
