"""Secret values in policy: referenced, never written in clear; marked in schemas; masked wherever shown.

Anywhere in a policy document a value may stand for a secret kept elsewhere:

- ``{$env: NAME}`` — the environment variable ``NAME`` (how most deployments pass secrets);
- ``{$file: PATH}`` — the file's content with one trailing newline stripped; a relative
  ``PATH`` is read from the policy directory (Docker and Kubernetes mount secrets as files);
- ``enc:v1:TOKEN`` — ciphertext made by ``tidings secret encrypt``, safe to commit to git.

The ``enc:v1`` format: ``TOKEN`` is unpadded URL-safe base64 of ``nonce (12 bytes) ||
ciphertext || tag (16 bytes)`` from AES-256-GCM (no associated data) over the UTF-8 secret.
The AES key is HKDF-SHA256 of the master key (``TIDINGS_MASTER_KEY``, as UTF-8; no salt,
``info=b"tidings secrets v1"``, 32 bytes), so any master key string works; a fresh random
nonce per value means one secret encrypted twice gives two different tokens.

Every value a reference resolves to is a :class:`~gateway.redaction.ResolvedSecret`: a plain ``str`` to the
plugin, but masked by ``repr`` and :func:`mask_config` even where a plugin's schema forgot
``"x-secret": true``. A reference that cannot be resolved is reported with its path and why,
never with the value or the ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from gateway.redaction import MASK, ResolvedSecret

if TYPE_CHECKING:
    from gateway.settings import Settings

ENV: Final = "$env"
FILE: Final = "$file"
ENCRYPTED: Final = "enc:v1:"
_ANY_ENCRYPTED: Final = re.compile(r"^enc:v\d+:")
_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_HKDF_INFO: Final = b"tidings secrets v1"
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
_USE: Final = "write {$env: NAME}, {$file: PATH} or an enc:v1: value"

Report = Callable[[tuple[str | int, ...], str], None]
"""Where problems go: the path of the offending value and a message safe to show."""


class _Unresolvable(Exception):
    """Why one reference has no value; the message names the cause, never the secret."""


class SecretResolver:
    """Replaces the secret references in a policy document with their values.

    Built once per process from settings and reused by every (re)load, so the AES key is
    derived once. ``environ`` is the one place outside settings that reads the process
    environment: ``{$env: NAME}`` exists to do exactly that.
    """

    def __init__(
        self, master_key: SecretStr | None = None, environ: Mapping[str, str] | None = None, *, base_dir: Path | None = None
    ) -> None:
        self._master_key = master_key
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._aead: AESGCM | None = None
        self.base_dir = base_dir

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretResolver:
        return cls(settings.master_key, os.environ, base_dir=settings.policy_dir)

    def relative_to(self, directory: Path) -> SecretResolver:
        """The same resolver reading relative ``$file`` paths from ``directory``."""
        bound = SecretResolver(self._master_key, self._environ, base_dir=directory)
        bound._aead = self._aead
        return bound

    def resolve(self, document: dict[str, Any], report: Report) -> None:
        """Replace every reference in ``document`` in place; report each problem, all of them.

        A reference that fails is replaced by a masked placeholder, so the rest of validation
        runs (and reports its own problems) while the set as a whole is still rejected.
        """
        self._walk(document, (), report)

    def _walk(self, node: dict[str, Any] | list[Any], path: tuple[str | int, ...], report: Report) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                node[key] = self._resolved(value, (*path, key), report)
        else:
            for index, value in enumerate(node):
                node[index] = self._resolved(value, (*path, index), report)

    def _resolved(self, value: Any, path: tuple[str | int, ...], report: Report) -> Any:
        try:
            if isinstance(value, dict) and any(str(key).startswith("$") for key in value):
                return ResolvedSecret(self._dereference(value))
            if isinstance(value, str) and _ANY_ENCRYPTED.match(value):
                return ResolvedSecret(self._decrypt(value))
        except _Unresolvable as err:
            report(path, str(err))
            return ResolvedSecret(MASK)
        if isinstance(value, (dict, list)):
            self._walk(value, path, report)
        return value

    def _dereference(self, reference: dict[str, Any]) -> str:
        marks = sorted(str(key) for key in reference if str(key).startswith("$"))
        unknown = [mark for mark in marks if mark not in (ENV, FILE)]
        if unknown:
            raise _Unresolvable(f"unknown reference {unknown[0]!r}: {_USE}")
        if len(reference) != 1:
            raise _Unresolvable(f"a {{{marks[0]}: …}} reference must be the only key in its mapping")
        ((mark, target),) = reference.items()
        if not isinstance(target, str) or not target:
            wanted = "an environment variable name" if mark == ENV else "a file path"
            raise _Unresolvable(f"{{{mark}: …}} needs {wanted}")
        return self._read_env(target) if mark == ENV else self._read_file(target)

    def _read_env(self, name: str) -> str:
        value = self._environ.get(name)
        if value is None:
            raise _Unresolvable(f"environment variable {name} is not set")
        if not value:
            raise _Unresolvable(f"environment variable {name} is empty")
        return value

    def _read_file(self, name: str) -> str:
        path = Path(name)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as err:
            raise _Unresolvable(f"cannot read secret file {path}: {err.strerror or type(err).__name__}") from None
        except UnicodeDecodeError:
            raise _Unresolvable(f"secret file {path} is not UTF-8 text") from None
        text = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
        if not text:
            raise _Unresolvable(f"secret file {path} is empty")
        return text

    def _decrypt(self, value: str) -> str:
        version = value.split(":", 2)[1]
        if version != "v1":
            raise _Unresolvable(f"unsupported format enc:{version}: (this Tidings reads enc:v1: values)")
        sealed = _decode_token(value.removeprefix(ENCRYPTED))
        if self._master_key is None:
            raise _Unresolvable("an enc:v1: value needs the master key: set TIDINGS_MASTER_KEY")
        if self._aead is None:
            self._aead = _aead(self._master_key)
        try:
            plain = self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], None)
        except InvalidTag:
            raise _Unresolvable(
                "cannot decrypt enc:v1: value: TIDINGS_MASTER_KEY is not the key it was encrypted with (or the value was altered)"
            ) from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise _Unresolvable("malformed enc:v1: value: it does not decrypt to UTF-8 text") from None


def encrypt(value: str, master_key: SecretStr) -> str:
    """``value`` as an ``enc:v1:`` string that :class:`SecretResolver` turns back into ``value``."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = nonce + _aead(master_key).encrypt(nonce, value.encode("utf-8"), None)
    return ENCRYPTED + base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")


def generate_master_key() -> str:
    """A fresh random master key: 32 bytes, URL-safe base64, fit for an environment variable."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii").rstrip("=")


def _aead(master_key: SecretStr) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return AESGCM(hkdf.derive(master_key.get_secret_value().encode("utf-8")))


def _decode_token(token: str) -> bytes:
    malformed = _Unresolvable("malformed enc:v1: value (make one with `tidings secret encrypt`)")
    if not _TOKEN.match(token):
        raise malformed
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise malformed from None
    if len(sealed) < _NONCE_BYTES + _TAG_BYTES:
        raise malformed
    return sealed
