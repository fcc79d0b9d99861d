"""Store URLs: which database a URL names, and the settings it carries (front door).

`sqlite://` (a file, WAL, every commit fsynced unless `?synchronous=normal` says otherwise) with
`?lock_timeout=`, `memory://`, and `postgresql://` with `?schema=`, timeouts and pool size; the
password never appears in `safe_url`.
"""

from __future__ import annotations

import getpass
import os
import urllib.parse
import uuid
from dataclasses import dataclass

from schedlog.errors import ConfigurationError
from schedlog.projections.sqlite_store import SYNCHRONOUS_MODES

__all__ = ["DEFAULT_STORE", "LOCK_TIMEOUT_S", "StoreConfig", "parse_store_url"]

DEFAULT_STORE = "sqlite://schedlog.db"
LOCK_TIMEOUT_S = 30
SQLITE_OPTIONS = frozenset({"lock_timeout", "synchronous"})


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """A parsed store URL."""

    url: str
    sqlite_dbname: str
    is_memory: bool
    lock_timeout_s: int = LOCK_TIMEOUT_S
    """How long a write waits for another process's lock before the store reports it busy."""
    synchronous: str = "full"
    """A SQLite file's `PRAGMA synchronous` (`SYNCHRONOUS_MODES`): `full` unless the URL says."""
    postgres: dict[str, str] | None = None
    """For a PostgreSQL store: the eventsourcing settings (POSTGRES_*), password included."""

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs and messages."""
        return _without_password(self.url)

    def same_store(self, other: StoreConfig) -> bool:
        """Tell whether `other` names the same store (its options aside).

        The same URL is the same store (`memory://` included: a fresh one either way);
        PostgreSQL hosts are compared as written (`localhost` is not `127.0.0.1`).
        """
        if self.url == other.url:
            return True
        if self.postgres is not None and other.postgres is not None:
            return all(self.postgres[k] == other.postgres[k] for k in _PG_IDENTITY)
        if self.is_memory or other.is_memory or self.postgres or other.postgres:
            return False
        return os.path.realpath(self.sqlite_dbname) == os.path.realpath(other.sqlite_dbname)


PG_OPTIONS = frozenset({"schema", "lock_timeout", "connect_timeout", "pool_size"})


def _is_digits(text: str) -> bool:
    """Tell whether `text` is a whole number in ASCII digits (`'²'.isdigit()` is True)."""
    return text.isascii() and text.isdigit()


def _postgres_settings(url: str) -> dict[str, str]:
    """Return eventsourcing's POSTGRES_* settings for `url` (finite timeouts by default)."""
    safe = _without_password(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 5432
    except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise ConfigurationError(f"store {safe!r} is not a valid URL: {e}") from None
    params = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
    unknown = sorted(set(params) - PG_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"store {safe!r}: unknown option {unknown[0]!r} "
            f"(known: {', '.join(sorted(PG_OPTIONS))})"
        )
    for key in ("lock_timeout", "connect_timeout", "pool_size"):
        if key in params and (not _is_digits(params[key]) or int(params[key]) < 1):
            raise ConfigurationError(f"store {safe!r}: {key} must be a whole number >= 1")
    dbname = parts.path.lstrip("/")
    if not dbname or not parts.hostname:
        raise ConfigurationError(
            f"store {safe!r} needs a host and a database: postgresql://user@host:5432/db"
        )
    schema = params.get("schema", "public")
    if not schema.replace("_", "").isalnum() or not schema.isascii():
        raise ConfigurationError(f"store {safe!r}: schema must be letters, digits and _")
    if schema != schema.lower():  # the library finds its own type by the unquoted name
        raise ConfigurationError(
            f"store {safe!r}: schema must be lower case (PostgreSQL folds unquoted names), "
            f"got {schema!r}"
        )
    return {
        "POSTGRES_DBNAME": urllib.parse.unquote(dbname),
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": urllib.parse.unquote(parts.username or getpass.getuser()),
        "POSTGRES_PASSWORD": urllib.parse.unquote(parts.password or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_LOCK_TIMEOUT": params.get("lock_timeout", str(LOCK_TIMEOUT_S)),
        "POSTGRES_CONNECT_TIMEOUT": params.get("connect_timeout", "10"),
        "POSTGRES_POOL_SIZE": params.get("pool_size", "10"),
        "POSTGRES_MAX_OVERFLOW": "10",
    }


def _sqlite_options(url: str, query: str) -> tuple[int, str]:
    """Read a SQLite store URL's `?lock_timeout=SECONDS` and `?synchronous=full|normal`."""
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - SQLITE_OPTIONS)
    if unknown:
        known = ", ".join(sorted(SQLITE_OPTIONS))
        raise ConfigurationError(f"store {url!r}: unknown option {unknown[0]!r} (known: {known})")
    lock_timeout = LOCK_TIMEOUT_S
    if "lock_timeout" in params:
        value = params["lock_timeout"][-1]
        if not _is_digits(value) or int(value) < 1:
            raise ConfigurationError(
                f"store {url!r}: lock_timeout must be a whole number of seconds >= 1, got {value!r}"
            )
        lock_timeout = int(value)
    synchronous = params.get("synchronous", ["full"])[-1].lower()
    if synchronous not in SYNCHRONOUS_MODES:
        choices = "; ".join(f"{name!r}: {what}" for name, what in SYNCHRONOUS_MODES.items())
        raise ConfigurationError(
            f"store {url!r}: synchronous must be 'full' or 'normal', "
            f"got {params['synchronous'][-1]!r} ({choices})"
        )
    return lock_timeout, synchronous


_PG_IDENTITY = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DBNAME", "POSTGRES_SCHEMA")


def parse_store_url(url: str | None) -> StoreConfig:
    """Parse a store URL (default: `$SCHEDLOG_STORE`, else `./schedlog.db`)."""
    if url is None:
        url = os.environ.get("SCHEDLOG_STORE") or DEFAULT_STORE
    if not isinstance(url, str):
        raise ConfigurationError(f"store must be a URL string, got {type(url).__name__}")
    if url == "memory://":
        name = f"file:schedlog-{uuid.uuid4().hex}?mode=memory&cache=shared"
        return StoreConfig(url, name, is_memory=True)
    if url.startswith("sqlite://"):
        path, _, query = url.removeprefix("sqlite://").partition("?")
        if not path or path == "/":
            raise ConfigurationError(f"store {url!r} names no file: use sqlite:///abs/path.db")
        lock_timeout, synchronous = _sqlite_options(url, query)
        return StoreConfig(
            url, path, is_memory=False, lock_timeout_s=lock_timeout, synchronous=synchronous
        )
    if url.startswith(("postgresql://", "postgres://")):
        return StoreConfig(url, "", is_memory=False, postgres=_postgres_settings(url))
    shown = _without_password(url)
    raise ConfigurationError(
        f"store {shown!r} is not a store URL: use sqlite:///abs/path.db, sqlite://rel/path.db, "
        "memory:// or postgresql://user@host:5432/db"
    )


def _without_password(url: str) -> str:
    """Return `url` with any password in it masked (`user:***@host`), for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # not parsable: show no credentials at all
        return url.rsplit("@", maxsplit=1)[-1]
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
