"""Who may do what on the control API: three roles, each with its own tokens.

=========  ==========================================================================
viewer     ``GET /status``, ``/healthz``, ``/metrics``, ``/policy`` (read only)
operator   the viewer's, plus ``POST /kill``, ``/pause``, ``/unpause``, ``/cancel-all``
admin      the operator's, plus ``POST /resume`` (after a kill) and ``POST /policy``
=========  ==========================================================================

A token is presented as ``Authorization: Bearer <token>``. Tokens come from the
environment or files, never from the config file, and are never logged:

- ``control.tokens`` (``BACKSTOP_CONTROL__TOKENS='{"admin.alice": "..."}'`` or a
  secrets-dir file): ``ROLE.NAME`` -> token;
- ``control.tokens_dir``: a directory of files named ``ROLE.NAME``, one token each;
- ``control.token`` / ``control.token_file``: the single token of earlier versions,
  kept working as the **admin** token named ``admin``.

On TCP every request needs a token. On the Unix socket (mode 0600: only the daemon's
user can connect) a request without a token has ``control.socket_role`` (default
admin, as before roles existed); one with a token gets that token's role, and a wrong
token is refused there too. The name (``admin.alice``) is who the journal says acted,
and the identity the two-person rule counts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.settings.models import ControlSettings

MIN_TOKEN_CHARS = 16
NAME_RE = re.compile(r"^(viewer|operator|admin)\.[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LEGACY_NAME = "admin"
"""The name of the single ``control.token`` (admin role)."""


class Role(IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ConfigError(f"unknown role {text!r}: viewer, operator or admin") from None


ENDPOINT_ROLES: Mapping[tuple[str, str], Role] = {
    ("GET", "/status"): Role.VIEWER,
    ("GET", "/healthz"): Role.VIEWER,
    ("GET", "/metrics"): Role.VIEWER,
    ("GET", "/policy"): Role.VIEWER,
    ("POST", "/kill"): Role.OPERATOR,
    ("POST", "/pause"): Role.OPERATOR,
    ("POST", "/unpause"): Role.OPERATOR,
    ("POST", "/cancel-all"): Role.OPERATOR,
    ("POST", "/resume"): Role.ADMIN,
    ("POST", "/policy"): Role.ADMIN,
}
"""What each endpoint needs. Anything else (an unknown path) needs only a viewer."""


def required_role(method: str, path: str) -> Role:
    return ENDPOINT_ROLES.get((method.upper(), path), Role.VIEWER)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: a token's name and role, or the socket peer."""

    role: Role
    name: str | None
    """The token's name (``admin.alice``); None for the socket without a token."""
    via: str
    """How it arrived: ``control socket (uid 1000, pid 42)``, ``control tcp (...)``."""
    uid: int | None = None

    @property
    def identity(self) -> str:
        """What the two-person rule counts as one person."""
        if self.name is not None:
            return self.name
        return f"socket uid {self.uid}" if self.uid is not None else self.via

    def describe(self) -> str:
        """The journal's "who": the transport, plus the token's name when there is one."""
        return self.via if self.name is None else f"{self.via}, token {self.name}"


class TokenRegistry:
    """Named role tokens, compared in constant time (all of them, every time)."""

    def __init__(self, tokens: Mapping[str, SecretStr] | None = None) -> None:
        self._entries: list[tuple[str, Role, bytes]] = []
        seen: dict[str, str] = {}
        for name, token in (tokens or {}).items():
            value = token.get_secret_value().strip()
            role = Role.ADMIN if name == LEGACY_NAME else _role_of(name)
            if len(value) < MIN_TOKEN_CHARS:
                raise ConfigError(
                    f"control token {name}: too short: use at least {MIN_TOKEN_CHARS} characters"
                )
            digest = hashlib.sha256(value.encode("utf-8")).hexdigest()
            if digest in seen:
                # Two names for one token would make the two-person rule a one-person rule.
                raise ConfigError(f"control tokens {seen[digest]} and {name} are the same token")
            seen[digest] = name
            self._entries.append((name, role, value.encode("utf-8")))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return [name for name, _, _ in self._entries]

    def match(self, presented: str) -> tuple[str, Role] | None:
        given = presented.strip().encode("utf-8")
        found: tuple[str, Role] | None = None
        for name, role, token in self._entries:
            if hmac.compare_digest(given, token) and found is None:
                found = (name, role)
        return found

    @classmethod
    def from_settings(cls, control: ControlSettings) -> TokenRegistry:
        tokens: dict[str, SecretStr] = {}
        if control.token is not None:
            tokens[LEGACY_NAME] = control.token
        if control.token_file is not None:
            tokens[LEGACY_NAME] = read_token_file(control.token_file, "control.token_file")
        for name, token in control.tokens.items():
            _add(tokens, name, token, "control.tokens")
        if control.tokens_dir is not None:
            for name, token in read_tokens_dir(control.tokens_dir):
                _add(tokens, name, token, f"control.tokens_dir {control.tokens_dir}")
        return cls(tokens)


def _role_of(name: str) -> Role:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"control token name {name!r} must be ROLE.NAME with ROLE viewer, operator or "
            "admin (e.g. admin.alice)"
        )
    return Role.parse(name.split(".", 1)[0])


def _add(tokens: dict[str, SecretStr], name: str, token: SecretStr, where: str) -> None:
    if name in tokens:
        raise ConfigError(f"{where}: token {name} is defined twice")
    tokens[name] = token


def read_token_file(path: Path, what: str) -> SecretStr:
    """The token in ``path`` (whitespace stripped). Never echoes the contents."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise ConfigError(f"{what} {path}: cannot read the token: {reason}") from None
    if len(text) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{what} {path}: token too short: use at least {MIN_TOKEN_CHARS} random characters"
        )
    return SecretStr(text)


def read_tokens_dir(directory: Path) -> Iterable[tuple[str, SecretStr]]:
    """``(ROLE.NAME, token)`` for every file in ``directory`` (hidden files skipped)."""
    if not directory.is_dir():
        raise ConfigError(f"control.tokens_dir {directory}: not a directory")
    out: list[tuple[str, SecretStr]] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        _role_of(path.name)
        out.append((path.name, read_token_file(path, "control.tokens_dir file")))
    return out
