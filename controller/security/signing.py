"""Ed25519 signatures: control events signed by people and CI systems, commands signed by the
controller (docs/security.md, "Signatures").

- **The message.** `DOMAIN`, a newline, the event type, a newline, then the payload as
  canonical JSON: the pydantic model's JSON values with nulls left out, the signature without
  its `value` (its `key_id` and `signed_at` are signed), keys sorted, no whitespace, UTF-8
  (`signing_message`). The event type keeps an approval's signature from passing as a denial's;
  the deployment id and the step inside the payload keep it to one gate of one rollout.
- **Keys.** A private key file is JSON: `{"key_id", "identity", "private_key"}`, the key as the
  base64 of its 32 raw bytes (`rollout keys generate`). Public keys are the base64 of their 32
  raw bytes, in an identities file (people and CI systems: the worker verifies control events
  against it) or a trusted-keys file (the controller's: routers verify commands against it).
- **Validity.** A key may have `not_before`, `not_after` and `revoked_at`; a signature counts
  when its `signed_at` lies in the key's validity (so an approval signed with a key before it
  expired still counts when a worker that was down reads it later) and before its revocation;
  one dated more than `max_skew_s` ahead of the verifier's clock does not.

Verifying is pure computation (no I/O); the files are read once, when a shell starts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from controller.core.access import Identity, signer
from controller.errors import RolloutError
from schemas import Payload
from schemas.events import Signature

DOMAIN = b"rollout-controller.signature.v1"
#: A signature dated further ahead of the verifier's clock than this is refused.
MAX_SKEW_S = 300.0
_PLACEHOLDER = "A" * 86 + "=="

P = TypeVar("P", bound=Payload)


class SigningKeyError(RolloutError, ValueError):
    """A key file or a key list is unusable: one sentence saying what to change."""


# ---- the message --------------------------------------------------------------------------


def _canonical(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def signing_message(payload: Payload) -> bytes:
    """The bytes a payload's signature covers (the payload must carry its signature; its
    value is not part of the message)."""
    data = payload.model_dump(mode="json", exclude_none=True)
    signature = data.get("signature")
    if not isinstance(signature, dict):
        raise ValueError(f"{payload.EVENT_TYPE}: no signature to sign or verify")
    signature.pop("value", None)
    return DOMAIN + b"\n" + payload.EVENT_TYPE.encode() + b"\n" + _canonical(data)


def signature_digest(signature: Signature) -> str:
    """A short, stable name of one signing act (what a rollout remembers)."""
    return hashlib.sha256(signature.value.encode()).hexdigest()[:32]


# ---- keys ---------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _raw_public(text: str, where: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        if len(raw) != 32:
            raise ValueError(f"{len(raw)} bytes")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(
            f"{where}: public_key is not an Ed25519 public key in base64 (32 bytes): {exc}; "
            "copy the line `rollout keys public` prints"
        ) from None


def public_key_text(key: Ed25519PublicKey) -> str:
    return _b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


@dataclass(frozen=True)
class SigningKey:
    """A private key, its id, and the identity it signs as."""

    key_id: str
    identity: str
    key: Ed25519PrivateKey

    @classmethod
    def generate(cls, key_id: str, identity: str) -> SigningKey:
        return cls(key_id, identity, Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        where = str(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise SigningKeyError(f"cannot read the key file {where}: {exc.strerror}") from None
        except ValueError:
            raise SigningKeyError(
                f"{where} is not a key file (JSON with key_id, identity and private_key, as "
                "`rollout keys generate` writes)"
            ) from None
        try:
            key_id, identity = str(data["key_id"]), str(data["identity"])
            raw = base64.b64decode(str(data["private_key"]), validate=True)
            key = Ed25519PrivateKey.from_private_bytes(raw)
        except (KeyError, TypeError, ValueError):
            raise SigningKeyError(
                f"{where} is not a key file: it needs key_id, identity and private_key (the "
                "base64 of a 32-byte Ed25519 key), as `rollout keys generate` writes"
            ) from None
        return cls(key_id, identity, key)

    def save(self, path: Path) -> None:
        """Write the key file, readable by its owner only; refuse to overwrite one."""
        raw = self.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        text = json.dumps(
            {"key_id": self.key_id, "identity": self.identity, "private_key": _b64(raw)}
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")

    @property
    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def public_text(self) -> str:
        return public_key_text(self.public)

    def sign(self, payload: P, signed_at: datetime | None = None) -> P:
        """The payload with its signature (`signed_at`: now unless given)."""
        at = signed_at or datetime.now(UTC)
        draft = Signature(key_id=self.key_id, signed_at=at, value=_PLACEHOLDER)
        unsigned = payload.model_copy(update={"signature": draft})
        value = _b64(self.key.sign(signing_message(unsigned)))
        signature = Signature(key_id=self.key_id, signed_at=at, value=value)
        return payload.model_copy(update={"signature": signature})


# ---- registered public keys ---------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublicKeyEntry(_Model):
    id: str = Field(min_length=1, max_length=256)
    public_key: str
    not_before: AwareDatetime | None = None
    not_after: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None


class IdentityEntry(_Model):
    name: str = Field(min_length=1, max_length=256)
    groups: tuple[str, ...] = ()
    keys: tuple[PublicKeyEntry, ...] = Field(min_length=1)


class IdentitiesDocument(_Model):
    identities: tuple[IdentityEntry, ...] = ()


class TrustedKeysDocument(_Model):
    keys: tuple[PublicKeyEntry, ...] = Field(min_length=1)


@dataclass(frozen=True)
class RegisteredKey:
    key_id: str
    owner: str
    groups: tuple[str, ...]
    key: Ed25519PublicKey
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None

    def problem_at(self, signed_at: datetime) -> str:
        """Why a signature dated `signed_at` does not count with this key (empty: it does)."""
        if self.revoked_at is not None and signed_at >= self.revoked_at:
            return f"key {self.key_id!r} was revoked at {self.revoked_at.isoformat()}"
        if self.not_before is not None and signed_at < self.not_before:
            return f"key {self.key_id!r} is valid from {self.not_before.isoformat()} only"
        if self.not_after is not None and signed_at > self.not_after:
            return f"key {self.key_id!r} expired at {self.not_after.isoformat()}"
        return ""


def _entries(doc: Any, where: str, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "$"
        raise SigningKeyError(f"{where}: {loc}: {first['msg']}") from None


def _registered(entry: PublicKeyEntry, owner: str, groups: tuple[str, ...], where: str) -> Any:
    return RegisteredKey(
        entry.id,
        owner,
        groups,
        _raw_public(entry.public_key, f"{where}: key {entry.id!r}"),
        entry.not_before,
        entry.not_after,
        entry.revoked_at,
    )


@dataclass
class KeyRing:
    """Public keys by id, each registered to an identity (with its groups)."""

    keys: dict[str, RegisteredKey] = field(default_factory=dict)
    max_skew_s: float = MAX_SKEW_S

    @classmethod
    def of(
        cls, keys: Iterable[RegisteredKey], max_skew_s: float = MAX_SKEW_S, where: str = "keys"
    ) -> KeyRing:
        ring = cls({}, max_skew_s)
        for key in keys:
            first = ring.keys.get(key.key_id)
            if first is not None:
                raise SigningKeyError(
                    f"{where}: key id {key.key_id!r} is registered twice ({first.owner} and "
                    f"{key.owner}): key ids are unique, so generate one of the keys again with "
                    "another --key-id"
                )
            ring.keys[key.key_id] = key
        return ring

    @classmethod
    def identities(cls, doc: Mapping[str, Any], where: str = "identities") -> KeyRing:
        """The keys of an identities document (`identities: [{name, groups, keys}]`)."""
        parsed = _entries(doc, where, IdentitiesDocument)
        return cls.of(
            (_registered(k, i.name, i.groups, where) for i in parsed.identities for k in i.keys),
            where=where,
        )

    @classmethod
    def trusted(cls, doc: Mapping[str, Any], owner: str, where: str = "keys") -> KeyRing:
        """The keys of a trusted-keys document (`keys: [...]`), all registered to `owner`."""
        parsed = _entries(doc, where, TrustedKeysDocument)
        return cls.of((_registered(k, owner, (), where) for k in parsed.keys), where=where)

    @classmethod
    def load(cls, path: Path, kind: str, owner: str = "rollout-controller") -> KeyRing:
        """Read an identities file (`kind` "identities") or a trusted-keys file ("keys")."""
        from controller.policy_io import DocumentError, read_document

        try:
            doc = read_document(path)
        except OSError as exc:
            raise SigningKeyError(f"cannot read {path}: {exc.strerror}") from None
        except DocumentError as exc:
            raise SigningKeyError(str(exc)) from None
        if not isinstance(doc, Mapping):
            raise SigningKeyError(f"{path}: expected a mapping with `{kind}:` at the top")
        if kind == "identities":
            return cls.identities(doc, str(path))
        return cls.trusted(doc, owner, str(path))

    def check(
        self, payload: Payload, now: datetime, signer: str | None = None
    ) -> tuple[RegisteredKey | None, str]:
        """The key that verifies the payload's signature, or why none does. `signer`: the
        identity the payload names (its `by`), which must own the key."""
        key, problem, _forged = self._check(payload, now, signer)
        return key, problem

    def _check(
        self, payload: Payload, now: datetime, signer: str | None
    ) -> tuple[RegisteredKey | None, str, bool]:
        """`check`, and whether the failure looks like a forgery: a registered key of
        someone else, or a signature that does not verify (not a missing or stale key)."""
        signature = getattr(payload, "signature", None)
        if signature is None:
            return None, "not signed", False
        key = self.keys.get(signature.key_id)
        if key is None:
            return None, f"signed with key {signature.key_id!r}, which is not registered", False
        if signer is not None and key.owner != signer:
            return None, f"key {key.key_id!r} belongs to {key.owner!r}, not to {signer!r}", True
        if (signature.signed_at - now).total_seconds() > self.max_skew_s:
            ahead = (
                f"signed at {signature.signed_at.isoformat()}, more than "
                f"{self.max_skew_s:g} s ahead of this clock"
            )
            return None, ahead, False
        problem = key.problem_at(signature.signed_at)
        if problem:
            return None, problem, False
        try:
            key.key.verify(base64.b64decode(signature.value), signing_message(payload))
        except InvalidSignature:
            changed = (
                f"the signature does not verify with key {key.key_id!r} (the event was "
                "changed after it was signed, or signed with another key)"
            )
            return None, changed, True
        return key, "", False

    def identify(self, payload: Any, now: datetime) -> Identity:
        """The identity behind a control event (its `by`) or a deployment request (its
        `requested_by`), verified or with the problem."""
        name = signer(payload)
        if name is None:
            return Identity("", problem="it names no requested_by, the identity that signs it")
        key, problem, forged = self._check(payload, now, name)
        if key is None:
            return Identity(name, problem=problem, forged=forged)
        return Identity(
            key.owner,
            key.groups,
            key.key_id,
            verified=True,
            signature=signature_digest(payload.signature),
        )


# ---- what a shell reads from its settings -------------------------------------------------


def signing_options(settings: Any) -> dict[str, Any]:
    """The Engine's `identities` and `command_key` from the settings' files (absent: None).
    A file that cannot be used is a SigningKeyError naming it and what to change."""
    found: dict[str, Any] = {}
    if settings.identities_file is not None:
        found["identities"] = KeyRing.load(Path(settings.identities_file), "identities")
    if settings.command_key_file is not None:
        found["command_key"] = SigningKey.load(Path(settings.command_key_file))
    return found


def log_signing(engine: Any) -> None:
    """Say at start what the worker verifies and signs (a worker that verifies nothing says
    so: anyone who can write the deployments topic can then approve, pause or abort)."""
    import structlog

    log = structlog.get_logger("controller.security")
    if engine.identities is None:
        log.warning(
            "signing.control_unverified",
            detail="no identities file (ROLLOUT_IDENTITIES_FILE): control events are not "
            "verified, identities are recorded as unverified",
        )
    else:
        owners = sorted({k.owner for k in engine.identities.keys.values()})
        log.info("signing.control_verified", keys=len(engine.identities.keys), identities=owners)
    if engine.command_key is None:
        log.warning("signing.commands_unsigned", detail="no ROLLOUT_COMMAND_KEY_FILE")
    else:
        log.info("signing.commands_signed", key_id=engine.command_key.key_id)
