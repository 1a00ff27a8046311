"""API keys for the gateway: stored hashed, each with an optional machine allow-list.

Keys come from two places, both read at start-up:

- ``WORKBENCH_GATEWAY_API_KEYS``: comma-separated keys, for a quick start and for tests;
  they may send for any machine.
- the keys file (``WORKBENCH_GATEWAY_KEYS_FILE``, default ``<state dir>/gateway-keys.toml``),
  which holds only SHA-256 hashes of keys, never the keys::

      [[key]]
      name = "line-3"
      sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
      machines = ["m-0001", "m-0002"]   # optional: only these machines

``workbench gateway key NAME`` makes a random key, appends its hash to the file and prints
the key once. Keys are random 32-byte tokens, so a plain SHA-256 is the right hash (a slow
password hash protects guessable secrets; these are not), and a lookup by hash is as good
as a constant-time comparison: the hash of a guess tells nothing about a stored key.

>>> ring = KeyRing.from_sources("k1,k2", None)
>>> ring.check("k2").name, ring.check("nope")
('key 2 of WORKBENCH_GATEWAY_API_KEYS', None)
"""

from __future__ import annotations

import hashlib
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import FileConfigError


@dataclass(frozen=True)
class ApiKey:
    """A key's name (for logs and metrics) and the machines it may send for (None: all)."""

    name: str
    machines: frozenset[str] | None = None

    def forbidden(self, machines: set[str]) -> list[str]:
        """The machines of ``machines`` this key may not send for."""
        return [] if self.machines is None else sorted(machines - self.machines)


class KeyRing:
    """The accepted keys, by the SHA-256 hex digest of each."""

    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, key: str | None) -> ApiKey | None:
        """The key's entry, or None when it is missing or not one of ours."""
        if not key:
            return None
        return self._keys.get(digest(key))

    @classmethod
    def from_sources(cls, plain: str | None, path: Path | None) -> KeyRing:
        """Keys from the comma-separated ``plain`` list and the keys file at ``path`` (if
        it exists); :class:`FileConfigError` names a bad entry."""
        keys: dict[str, ApiKey] = {}
        for i, key in enumerate((k.strip() for k in (plain or "").split(",") if k.strip()), 1):
            keys[digest(key)] = ApiKey(f"key {i} of WORKBENCH_GATEWAY_API_KEYS")
        if path is not None and path.is_file():
            keys |= _read_file(path)
        return cls(keys)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _read_file(path: Path) -> dict[str, ApiKey]:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FileConfigError(path, "the keys file", f"not readable TOML ({exc})") from None
    keys = {}
    for i, entry in enumerate(doc.get("key", []), 1):
        where = f"[[key]] {i}"
        sha = entry.get("sha256", "") if isinstance(entry, dict) else ""
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise FileConfigError(path, where, "sha256 must be 64 lowercase hex digits")
        machines = entry.get("machines")
        if machines is not None and not (
            isinstance(machines, list) and all(isinstance(m, str) for m in machines)
        ):
            raise FileConfigError(path, where, "machines must be a list of machine ids")
        keys[sha] = ApiKey(
            str(entry.get("name", f"key {i} of {path.name}")),
            None if machines is None else frozenset(machines),
        )
    return keys


def add_key(path: Path, name: str, machines: list[str] | None = None) -> str:
    """Make a new random key, append its hash (and ``machines``) to the keys file, and
    return the key: the only time it is ever shown."""
    key = secrets.token_urlsafe(32)
    lines = ["", "[[key]]", f"name = {_toml_string(name)}", f'sha256 = "{digest(key)}"']
    if machines:
        lines.append(f"machines = [{', '.join(_toml_string(m) for m in machines)}]")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")
    path.chmod(0o600)
    _read_file(path)  # what was written reads back
    return key


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
