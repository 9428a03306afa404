"""Loading settings: sources in priority order, and one clear message per mistake."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsError,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources import DefaultSettingsSource

from bot.errors import ConfigError
from bot.settings.models import (
    CREDENTIAL_FIELDS,
    CREDENTIAL_KEYS,
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    RESERVED_ENV_VARS,
    SECRETS_DIR_ENV,
    Settings,
    env_name,
    suggest,
)

# --------------------------------------------------------------------------- sources


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env source reading a given mapping instead of ``os.environ``.

    Lets tests (and embedders) pass an environment without touching the process's.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            (k if self.case_sensitive else k.lower()): v
            for k, v in self._environ.items()
            if not (self.env_ignore_empty and v == "")
        }


@dataclass(frozen=True)
class _Source:
    """One place settings came from, with what it contributed (for naming it in errors)."""

    kind: Literal["cli", "env", "secrets", "file", "defaults"]
    source: PydanticBaseSettingsSource | None
    data: Mapping[str, Any]
    file: Path | None = None
    environ: Mapping[str, str] | None = None
    secrets_prefix: str = ""

    def describe(self, loc: tuple[str | int, ...]) -> str:
        if self.kind == "cli":
            return "command line"
        if self.kind == "file":
            return str(self.file)
        if self.kind == "defaults":
            return "built-in defaults"
        names = list(_env_name_candidates(loc, self.secrets_prefix))
        if self.kind == "env":
            present = {k.upper(): k for k in (self.environ or {})}
            found = next((present[n] for n in names if n in present), names[0] if names else "")
            return f"environment variable {found}"
        assert self.file is not None
        on_disk = (
            {p.name.upper(): p.name for p in self.file.iterdir()} if self.file.is_dir() else {}
        )
        found = next((on_disk[n] for n in names if n in on_disk), names[0] if names else "")
        return f"secrets file {self.file / found}"


def _env_name_candidates(loc: tuple[str | int, ...], prefix: str) -> Iterator[str]:
    """Variable names that could have set ``loc``, most specific first.

    Lists arrive as one JSON value, so the path stops at the first list index.
    """
    dict_path: list[str] = []
    for part in loc:
        if isinstance(part, int):
            break
        dict_path.append(part)
    for n in range(len(dict_path), 0, -1):
        yield env_name(tuple(dict_path[:n]), prefix)


def _walk(data: Any, loc: tuple[str | int, ...]) -> bool:
    """Whether ``data`` decides the merged value at ``loc``: it holds the whole path, or a
    list or scalar on the way (only tables merge across sources; anything else replaces
    lower-priority values whole, so a missing key inside a list element is still ours)."""
    node = data
    for part in loc:
        if not (isinstance(node, Mapping) and part in node):
            return False
        node = node[part]
        if not isinstance(node, Mapping):
            return True
    return True


def _owner(sources: Sequence[_Source], loc: tuple[str | int, ...]) -> _Source | None:
    """The source whose value ended up at ``loc`` after merging (None: a default)."""
    for src in sources:  # highest priority first
        if _walk(src.data, loc):
            return src
    return None


def _field_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(settings)"


def _is_secret_path(loc: Sequence[str | int]) -> bool:
    return any(
        isinstance(p, str)
        and (
            p in CREDENTIAL_FIELDS
            or p == "options"
            or p.replace("_", "").lower() in CREDENTIAL_KEYS
        )
        for p in loc
    )


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The settings model class that holds the key at ``loc`` (for "did you mean")."""
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        candidates = [annotation, *(inner or ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _reason(error: Mapping[str, Any], loc: tuple[str | int, ...], origin: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(loc[:-1])
        hint = suggest(key, list(model.model_fields)) if model else ""
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    message = message.replace("Input should be", "must be")
    if kind == "backstop" or _is_secret_path(loc):
        return message
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message += f" (got {shown})"
    if kind == "list_type" and loc == ("markets",) and origin == "file":
        message += "; in TOML write one [[markets]] table per market"
    return message


def _describe_validation_error(exc: ValidationError, sources: Sequence[_Source]) -> str:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        loc: tuple[str | int, ...] = tuple(error["loc"]) + tuple(ctx.get("subloc", ()))
        blame: tuple[str | int, ...] = tuple(ctx.get("blame", loc))
        owner = _owner(sources, blame) or _Source("defaults", None, {})
        problems.append(
            f"{owner.describe(blame)}: {_field_path(loc)}: {_reason(error, loc, owner.kind)}"
        )
    if len(problems) > 3:
        problems = [*problems[:3], f"and {len(problems) - 3} more problem(s)"]
    return "; ".join(problems)


# --------------------------------------------------------------------------- loading


def _drop_none(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """CLI flags not given arrive as None: they mean "not set", not "set to None"."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        out[key] = _drop_none(value) if isinstance(value, Mapping) else value
    return out


def _credential_keys(data: Mapping[str, Any]) -> list[str]:
    """Dotted paths of credential-like keys in a config's [exchange], [control] and [fleet]
    tables."""
    found: list[str] = []
    # The control API's bearer token and the fleet's Redis password (control.token_file,
    # a path, is fine).
    for section in ("control", "fleet"):
        table = data.get(section)
        if isinstance(table, Mapping):
            found += [
                f"{section}.{k}"
                for k in table
                if str(k).replace("_", "").replace("-", "").lower() in CREDENTIAL_KEYS
            ]
    exchange = data.get("exchange")
    if not isinstance(exchange, Mapping):
        return found
    found = [
        f"exchange.{k}"
        for k in exchange
        if k in CREDENTIAL_FIELDS or k.replace("_", "").replace("-", "").lower() in CREDENTIAL_KEYS
    ] + found
    options = exchange.get("options")
    if isinstance(options, Mapping):
        found += [
            f"exchange.options.{k}"
            for k in options
            if str(k).replace("_", "").replace("-", "").lower() in CREDENTIAL_KEYS
        ]
    return found


def _where_credentials_go(path: str = "exchange") -> str:
    if path.startswith("control.tokens"):
        return (
            f"set the environment variable {env_name(('control', 'tokens'))} (JSON: "
            '{"admin.alice": "..."}), or point control.tokens_dir at a directory of '
            "token files named ROLE.NAME"
        )
    if path.startswith("control."):
        return (
            f"set the environment variable {env_name(('control', 'token'))} or a file of that "
            f"name in a secrets directory (set {SECRETS_DIR_ENV}), or point control.token_file "
            f"at a file holding the token"
        )
    if path.startswith("fleet."):
        return (
            f"set the environment variable {env_name(('fleet', 'password'))} or a file of that "
            f"name in a secrets directory (set {SECRETS_DIR_ENV})"
        )
    env = ", ".join(env_name(("exchange", f)) for f in CREDENTIAL_FIELDS)
    return (
        f"set them in environment variables ({env}) or as files of those names in a secrets "
        f"directory (set {SECRETS_DIR_ENV})"
    )


def _check_env_names(environ: Mapping[str, str]) -> None:
    """Refuse BACKSTOP_* variables that set nothing: a typo must not silently fall back."""
    fields = list(Settings.model_fields)
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in RESERVED_ENV_VARS:
            continue
        top = upper[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER)[0].lower()
        if top not in fields:
            raise ConfigError(
                f"environment variable {name}: unknown setting {top!r}"
                f"{suggest(top, fields)}; settings variables are {ENV_PREFIX}<FIELD> or "
                f"{ENV_PREFIX}<SECTION>{ENV_NESTED_DELIMITER}<FIELD>"
            )


def _read_toml(config_file: Path) -> TomlConfigSettingsSource:
    if not config_file.exists():
        raise ConfigError(f"{config_file}: config file does not exist")
    if not config_file.is_file():
        raise ConfigError(f"{config_file}: config path is not a file")
    try:
        return TomlConfigSettingsSource(Settings, toml_file=config_file)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{config_file}: TOML syntax error: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config_file}: cannot read config file: {e}") from None


def _secrets_sources(directory: Path, origin: str) -> list[_Source]:
    if not directory.exists():
        raise ConfigError(f"{origin}: secrets directory {directory} does not exist")
    if not directory.is_dir():
        raise ConfigError(f"{origin}: secrets path {directory} is not a directory")
    sources: list[_Source] = []
    # Two spellings: the env-var name (BACKSTOP_EXCHANGE__API_KEY) and the bare nested key
    # (exchange__api_key), as Docker/Kubernetes secrets are usually named either way.
    for prefix in (ENV_PREFIX, ""):
        try:
            src = NestedSecretsSettingsSource(
                SecretsSettingsSource(Settings, secrets_dir=directory),
                secrets_dir_missing="error",
                secrets_prefix=prefix,
            )
            data = src()
        except (SettingsError, OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"secrets directory {directory}: {_scrub(str(e))}") from None
        sources.append(_Source("secrets", src, data, file=directory, secrets_prefix=prefix))
    return sources


def _scrub(message: str) -> str:
    # pydantic-settings' parse errors name the field, never the value; keep it that way.
    return message.split("\n", 1)[0]


def _record_origins(settings: Settings, sources: Sequence[_Source]) -> None:
    paths: list[tuple[str | int, ...]] = [("exchange", "id"), ("mode",)]
    paths += [("markets", i, "symbol") for i in range(len(settings.markets))]
    origins: dict[str, str] = {}
    for loc in paths:
        owner = _owner(sources, loc)
        origins[_field_path(loc)] = owner.describe(loc) if owner else "built-in defaults"
    settings._origins = origins


def load_settings(
    config_file: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
) -> Settings:
    """Build the settings: overrides > env > secrets dir > TOML file > defaults.

    ``overrides`` are the command line's values as nested dicts (``{"feed": {"speed": 2}}``;
    None values mean "flag not given"). ``env`` defaults to ``os.environ``. ``secrets_dir``
    defaults to ``$BACKSTOP_SECRETS_DIR`` when that is set. Raises :class:`ConfigError`
    with one message naming the source, the field and the problem.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    _check_env_names(environ)

    # Highest priority first; each keeps what it contributed so errors can name it.
    sources: list[_Source] = []
    cli = _drop_none(overrides or {})
    cli_source = InitSettingsSource(Settings, init_kwargs=cli)
    sources.append(_Source("cli", cli_source, cli_source()))
    leaked = _credential_keys(cli)
    if leaked:
        raise ConfigError(
            f"command line: {leaked[0]}: credentials are not accepted on the command line "
            f"(they would show in the process list and shell history); "
            f"{_where_credentials_go(leaked[0])}"
        )

    env_source = _MappingEnvSource(Settings, environ)
    try:
        env_data = env_source()
    except SettingsError as e:
        field = re.search(r'field "([^"]+)"', str(e))
        name = env_name((field.group(1),)) if field else ENV_PREFIX + "*"
        raise ConfigError(
            f"environment variable {name}: {field.group(1) if field else 'value'}: "
            f"not valid JSON (lists and tables must be given as JSON)"
        ) from None
    sources.append(_Source("env", env_source, env_data, environ=environ, secrets_prefix=ENV_PREFIX))

    if secrets_dir is not None:
        sources += _secrets_sources(secrets_dir, "command line")
    else:
        from_env = next((v for k, v in environ.items() if k.upper() == SECRETS_DIR_ENV and v), None)
        if from_env:
            sources += _secrets_sources(Path(from_env), f"environment variable {SECRETS_DIR_ENV}")

    if config_file is not None:
        toml_source = _read_toml(config_file)
        toml_data = toml_source()
        leaked = _credential_keys(toml_data)
        if leaked:
            raise ConfigError(
                f"{config_file}: {leaked[0]}: credentials must not be in the config file "
                f"(config files get committed and copied); remove it and "
                f"{_where_credentials_go(leaked[0])}"
            )
        sources.append(_Source("file", toml_source, toml_data, file=config_file))

    built = tuple(s.source for s in sources if s.source is not None)
    try:
        settings = Settings(_build_sources=((*built, DefaultSettingsSource(Settings)), cli))
    except ValidationError as e:
        raise ConfigError(_describe_validation_error(e, sources)) from None
    except SettingsError as e:
        raise ConfigError(f"settings: {_scrub(str(e))}") from None
    _record_origins(settings, sources)
    if settings.governance.policy_file is not None:
        settings = _apply_policy(settings, sources)
    return settings


def _apply_policy(settings: Settings, sources: Sequence[_Source]) -> Settings:
    """The policy file owns some settings: fill them in, refuse contradicting values."""
    from bot.governance.policy import apply_policy, conflicts, load_policy_file

    path = settings.governance.policy_file
    assert path is not None
    policy = load_policy_file(path)
    found = conflicts(settings, policy.policy)
    if found:
        first = found[0]
        owner = _owner(sources, first.loc)
        where = owner.describe(first.loc) if owner is not None else "settings"
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(
            f"{where}: {first.path} = {first.have!r}, but the policy {path} (version "
            f"{policy.short}) owns it and says {first.want!r}{more}: remove it from the "
            "operational settings, or change the policy"
        )
    return apply_policy(settings, policy)


def validate_symbols(settings: Settings, markets: Mapping[str, Any], *, source: str) -> None:
    """Check every configured symbol exists (and is active) in ``markets``.

    ``markets`` is ccxt's ``exchange.markets`` (or :func:`bot.markets.offline_markets`);
    ``source`` says where it came from, e.g. ``"binance (bundled offline markets)"``.
    """
    available = list(markets)
    for i, market in enumerate(settings.markets):
        path = f"markets[{i}].symbol"
        origin = settings.origin(path) or "settings"
        symbol = market.symbol
        if symbol not in markets:
            hint = suggest(symbol, available)
            if not hint:
                related = [s for s in available if s.split(":")[0] == symbol.split(":")[0]]
                if related:
                    hint = " (this exchange has " + " and ".join(repr(s) for s in related[:3]) + ")"
            raise ConfigError(
                f"{origin}: {path}: symbol {symbol!r} is not on exchange "
                f"{settings.exchange.id!r} (markets from {source}){hint}"
            )
        info = markets[symbol]
        if isinstance(info, Mapping) and info.get("active") is False:
            raise ConfigError(
                f"{origin}: {path}: symbol {symbol!r} is not active on exchange "
                f"{settings.exchange.id!r} (trading halted or delisted; markets from {source})"
            )
