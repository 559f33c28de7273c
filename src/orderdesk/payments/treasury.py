"""Treasury keys, derived per project from a master secret kept outside the database."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from orderdesk.config import Settings


class TreasurySecretError(RuntimeError):
    pass


def load_master_secret(settings: Settings) -> bytes:
    """Return the master secret from the environment or its file.

    In development, when neither is set, a random secret is created in
    data_dir/treasury.key with mode 0600. Other environments must configure one.
    """
    if settings.treasury_secret:
        return settings.treasury_secret.encode()
    path = settings.treasury_secret_file
    if path is None:
        if settings.environment != "development":
            raise TreasurySecretError(
                "No treasury secret is configured. Set ORDERDESK_TREASURY_SECRET_FILE "
                "to a file readable only by the service's user."
            )
        path = settings.data_dir / "treasury.key"
        if not path.exists():
            _create_secret_file(path)
    _check_permissions(path)
    try:
        value = path.read_bytes().strip()
    except OSError as exc:
        raise TreasurySecretError(
            f"The treasury secret file {path} cannot be read: {exc.strerror}. Run "
            "the service as the file's owner."
        ) from exc
    if len(value) < 32:
        raise TreasurySecretError(
            f"The treasury secret in {path} is shorter than 32 bytes."
        )
    return value


def check_treasury_secret(settings: Settings) -> None:
    """Read a configured treasury secret file once, so that a process refuses to start
    when the file is missing, too short, or open to other users.

    Raises TreasurySecretError. A secret set in the environment needs no check, and
    an unset one fails later, when a project or payout first needs it.
    """
    if not settings.treasury_secret and settings.treasury_secret_file is not None:
        load_master_secret(settings)


def _create_secret_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")


def _check_permissions(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise TreasurySecretError(
            f"The treasury secret file {path} cannot be read: {exc.strerror}. Set "
            "ORDERDESK_TREASURY_SECRET_FILE to an existing file."
        ) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TreasurySecretError(
            f"The treasury secret file {path} has mode {stat.S_IMODE(mode):04o}, so "
            "users other than its owner can open it. Make it readable only by the "
            f"service's user: chmod 600 {path}"
        )


def treasury_account(master_secret: bytes, index: int) -> LocalAccount:
    """Derive the treasury account of the project with this treasury index."""
    for attempt in range(1000):
        message = f"orderdesk-treasury:{index}:{attempt}".encode()
        key = hmac.new(master_secret, message, hashlib.sha256).digest()
        # Fewer than one key in 2**127 is outside the curve order; try the next one.
        if 0 < int.from_bytes(key, "big") < _SECP256K1_ORDER:
            return Account.from_key(key)
    raise TreasurySecretError("could not derive a treasury key")  # pragma: no cover


_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
