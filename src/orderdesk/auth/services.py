"""Create projects and keys, and authenticate requests."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from orderdesk.auth.cache import KEY_CACHE_MAX_ENTRIES, KEY_CACHE_SECONDS, TtlCache
from orderdesk.auth.models import ApiKey, Project
from orderdesk.auth.scopes import ALL_SCOPES
from orderdesk.config import Settings
from orderdesk.db.base import utcnow
from orderdesk.errors import InvalidInput, NotFound, Unauthorized
from orderdesk.payments.treasury import load_master_secret, treasury_account

ENVIRONMENTS = ("development", "staging", "production")
_ALPHABET = string.ascii_letters + string.digits
KEY_RANDOM_LENGTH = 32  # about 190 bits from a 62-letter alphabet


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def secrets_match(value: str, expected_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(value), expected_hash)


def random_token(length: int = KEY_RANDOM_LENGTH) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class KeyPrincipal:
    """A request made with a server API key."""

    project_id: str
    key_id: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        return f"api_key:{self.key_id}"


@dataclass(frozen=True)
class SecretPrincipal:
    """A request made with one order's client secret."""

    secret_hash: str

    @property
    def actor(self) -> str:
        return "client_secret"


Principal = KeyPrincipal | SecretPrincipal


def get_project_by_name(session: Session, name: str) -> Project | None:
    return session.scalar(select(Project).where(Project.name == name))


def create_project(session: Session, settings: Settings, name: str) -> Project:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput(f"Project name {name!r} must be 1 to 100 characters.")
    index = (session.scalar(select(func.max(Project.treasury_index))) or 0) + 1
    account = treasury_account(load_master_secret(settings), index)
    project = Project(
        name=name,
        treasury_index=index,
        treasury_address=account.address,
        fulfilment_provider=settings.fulfilment_provider,
    )
    session.add(project)
    session.flush()
    return project


FULFILMENT_PROVIDERS = ("manual", "simulated")


def set_fulfilment_provider(project: Project, provider: str) -> None:
    if provider not in FULFILMENT_PROVIDERS:
        raise InvalidInput(
            f"Fulfilment provider {provider!r} is unknown. Use one of: "
            f"{', '.join(FULFILMENT_PROVIDERS)}."
        )
    project.fulfilment_provider = provider


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))


def get_or_create_project(session: Session, settings: Settings, name: str) -> Project:
    return get_project_by_name(session, name) or create_project(session, settings, name)


def parse_scopes(raw: str | list[str]) -> list[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    scopes = [s.strip() for s in items if s.strip()]
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown:
        raise InvalidInput(
            f"Unknown scope(s) {', '.join(unknown)}. "
            f"Use any of: {', '.join(ALL_SCOPES)}."
        )
    if not scopes:
        raise InvalidInput(f"Give at least one scope: {', '.join(ALL_SCOPES)}.")
    return sorted(set(scopes), key=ALL_SCOPES.index)


def create_api_key(
    session: Session,
    project: Project,
    environment: str,
    scopes: list[str],
    name: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret value, which is not stored."""
    if environment not in ENVIRONMENTS:
        raise InvalidInput(
            f"Environment {environment!r} must be one of {ENVIRONMENTS}."
        )
    value = f"sk_{environment}_{random_token()}"
    key = ApiKey(
        project_id=project.id,
        key_hash=hash_secret(value),
        display_prefix=value[: len(f"sk_{environment}_") + 6],
        environment=environment,
        scopes=",".join(scopes),
        name=name,
    )
    session.add(key)
    session.flush()
    return key, value


def revoke_api_key(session: Session, key_id_or_value: str) -> ApiKey:
    """Revoke a key given its id or its full value."""
    key = session.get(ApiKey, key_id_or_value) or session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_secret(key_id_or_value))
    )
    if key is None:
        raise NotFound(f"No API key has the id or value {key_id_or_value[:24]!r}.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    # Other processes notice within KEY_CACHE_SECONDS; this one at once.
    key_cache.discard(key.key_hash)
    return key


def list_api_keys(session: Session, project_id: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if project_id:
        query = query.where(ApiKey.project_id == project_id)
    return list(session.scalars(query))


def key_environment(value: str) -> str | None:
    parts = value.split("_", 2)
    if len(parts) == 3 and parts[0] == "sk" and parts[1] in ENVIRONMENTS:
        return parts[1]
    return None


@dataclass(frozen=True)
class CachedKey:
    project_id: str
    key_id: str
    scopes: frozenset[str]
    revoked_at: datetime | None


key_cache: TtlCache[CachedKey] = TtlCache(KEY_CACHE_SECONDS, KEY_CACHE_MAX_ENTRIES)


def find_key(sessions: sessionmaker[Session], value: str) -> CachedKey | None:
    """Look the key up by its hash, reusing a lookup made in the last
    KEY_CACHE_SECONDS. Unknown keys are looked up every time.

    The lookup runs in a read-only session of its own. In the request's session it
    would begin the request's transaction, which on SQLite takes the database write
    lock for a write request. That lock would then stay taken across FastAPI's
    thread-pool hop from this dependency to the route, so under load every pool
    thread could end up waiting for it.
    """
    key_hash = hash_secret(value)
    cached = key_cache.get(key_hash)
    if cached is not None:
        return cached
    with sessions() as session:
        session.connection(execution_options={"read_only": True})
        key = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
        if key is None:
            return None
        found = CachedKey(key.project_id, key.id, key.scope_set, key.revoked_at)
    key_cache.put(key_hash, found)
    return found


def authenticate_key(
    sessions: sessionmaker[Session], settings: Settings, value: str
) -> KeyPrincipal:
    """Check an X-API-KEY value, raising 401 with the reason when it is not usable.

    `sessions` opens the short session of a lookup that the cache cannot serve.
    """
    environment = key_environment(value)
    if environment is None:
        raise Unauthorized(
            "The API key is malformed. Keys look like sk_<environment>_<random>; "
            "create one with: orderdesk keys create."
        )
    if environment != settings.environment:
        raise Unauthorized(
            f"The API key is for the {environment} environment but this deployment "
            f"serves {settings.environment}. Use a {settings.environment} key.",
            code="environment_mismatch",
        )
    key = find_key(sessions, value)
    if key is None:
        raise Unauthorized(
            "The API key is not recognised. Check it or create a new one."
        )
    if key.revoked_at is not None:
        raise Unauthorized(
            "The API key has been revoked. Create a new key.", code="key_revoked"
        )
    return KeyPrincipal(key.project_id, key.key_id, key.scopes)
