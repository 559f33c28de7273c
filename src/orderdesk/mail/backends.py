"""Mail backends: SMTP when `smtp_url` is set, otherwise `.eml` files in `mail_dir`.

SMTP URLs:
- `smtp://user:pass@host:587` connects in plain text and upgrades with STARTTLS.
  With a user name STARTTLS is required: when the server does not offer it, sending
  fails instead of sending the password in clear text.
- `smtp://host:25` without credentials, for a local relay, uses STARTTLS when the
  server offers it and plain SMTP otherwise.
- `smtps://user:pass@host:465` speaks TLS from the first byte (implicit TLS).
- `?starttls=require|auto|off` on an `smtp://` URL overrides the choice above;
  `off` suits a relay on loopback whose certificate cannot be verified.

User name and password are percent-decoded (`%40` for `@`). TLS certificates are
always verified, against the system store or the `smtp_ca_file` setting. The
default ports are 25 for smtp and 465 for smtps.
"""

from __future__ import annotations

import functools
import hashlib
import os
import smtplib
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

SMTP_TIMEOUT_SECONDS = 30.0
StartTls = Literal["require", "auto", "off"]


class MailError(Exception):
    """A message could not be built or sent."""


class MailConfigurationError(MailError):
    pass


class MailDeliveryError(MailError):
    """The mail server was unreachable or rejected the message. A retry may work."""


class MailBackend(Protocol):
    name: str

    def send(self, message: EmailMessage) -> None: ...


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    implicit_tls: bool
    starttls: StartTls
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = SMTP_TIMEOUT_SECONDS
    ca_file: Path | None = None


def parse_smtp_url(
    url: str, *, timeout: float = SMTP_TIMEOUT_SECONDS, ca_file: Path | None = None
) -> SmtpSettings:
    """Parse an smtp:// or smtps:// URL. Raises MailConfigurationError.

    Messages name the scheme, host and port but never the password.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise MailConfigurationError(
            f"smtp_url has scheme {parts.scheme!r}. Use smtp:// or smtps://."
        )
    try:
        port = parts.port or (465 if scheme == "smtps" else 25)
    except ValueError as exc:
        raise MailConfigurationError(f"smtp_url has an invalid port: {exc}.") from exc
    if not parts.hostname:
        raise MailConfigurationError(
            "smtp_url has no host, as in smtp://mail.example.com:587."
        )
    if parts.path not in ("", "/"):
        raise MailConfigurationError("smtp_url must not have a path.")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    starttls = _starttls_option(parts.query, scheme, has_credentials=bool(username))
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        implicit_tls=scheme == "smtps",
        starttls=starttls,
        username=username,
        password=password,
        timeout=timeout,
        ca_file=ca_file,
    )


def _starttls_option(query: str, scheme: str, *, has_credentials: bool) -> StartTls:
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"starttls"})
    if unknown:
        raise MailConfigurationError(
            f"smtp_url has unknown parameters {', '.join(unknown)}. Only starttls "
            "is supported."
        )
    if "starttls" not in options:
        if scheme == "smtps":
            return "off"
        return "require" if has_credentials else "auto"
    if scheme == "smtps":
        raise MailConfigurationError(
            "smtp_url uses smtps://, which is TLS already. Remove ?starttls."
        )
    value = options["starttls"][-1].lower()
    if value == "require":
        return "require"
    if value == "auto":
        return "auto"
    if value == "off":
        return "off"
    raise MailConfigurationError(
        f"smtp_url has starttls={value!r}. Use require, auto or off."
    )


# How long an idle SMTP connection is kept for the next message of the same thread.
# Servers close idle clients after a few minutes (RFC 5321 recommends a server
# timeout of at least 5 minutes), so this stays well below that.
SMTP_IDLE_SECONDS = 30.0


@dataclass
class _OpenConnection:
    client: smtplib.SMTP
    last_used: float


# One connection per thread and server, so a worker sends one message after the
# other over the same session, and threads never share an SMTP conversation.
_connections = threading.local()


class SmtpBackend:
    """Send messages over an SMTP connection reused by the same thread.

    A connection idle for SMTP_IDLE_SECONDS is replaced before the message is sent.
    When a reused connection turns out to be closed (the server dropped it, or
    replied 421 and closed it), the message is sent again over a new connection,
    so a reused connection never loses a message. Any failure during a send
    closes the connection.
    """

    name = "smtp"

    def __init__(self, smtp: SmtpSettings) -> None:
        self.smtp = smtp

    def __repr__(self) -> str:
        return f"SmtpBackend({self.smtp.host}:{self.smtp.port})"

    def send(self, message: EmailMessage) -> None:
        """Deliver the message. Raises MailDeliveryError on any failure, and when
        the server rejects a recipient."""
        smtp = self.smtp
        where = f"{smtp.host}:{smtp.port}"
        message_id = message.get("Message-ID", "(no Message-ID)")
        try:
            client, rejected = self._send_once_more_if_dropped(message)
        except MailDeliveryError:
            raise
        except (smtplib.SMTPException, OSError) as exc:
            # ssl.SSLError and socket timeouts are OSErrors too.
            raise MailDeliveryError(
                f"Sending {message_id} through {where} failed: {_describe(exc)}"
            ) from exc
        self._open_connections()[self.smtp] = _OpenConnection(client, time.monotonic())
        if rejected:
            replies = "; ".join(f"{code} {text!r}" for code, text in rejected.values())
            raise MailDeliveryError(
                f"{where} rejected {len(rejected)} recipients of {message_id}: "
                f"{replies}"
            )

    def _send_once_more_if_dropped(
        self, message: EmailMessage
    ) -> tuple[smtplib.SMTP, dict[str, tuple[int, bytes]]]:
        """Send over this thread's kept connection, or over a new one when there is
        none or the kept one was closed. Return the client and the rejected
        recipients. Raises what smtplib raises, after closing the client."""
        kept = self._kept_client()
        if kept is not None:
            try:
                return kept, kept.send_message(message)
            except (smtplib.SMTPException, OSError) as exc:
                _close_quietly(kept)
                if not _is_dropped_connection(exc):
                    raise
                # NOTE: a server that closes the connection after it accepted the
                # message's data but before its reply gets the message twice. The
                # repeat has the same Message-ID, as a retried job's would.
        client = self._connect()
        try:
            return client, client.send_message(message)
        except BaseException:
            _close_quietly(client)
            raise

    def _open_connections(self) -> dict[SmtpSettings, _OpenConnection]:
        if not hasattr(_connections, "by_server"):
            _connections.by_server = {}
        connections: dict[SmtpSettings, _OpenConnection] = _connections.by_server
        return connections

    def _kept_client(self) -> smtplib.SMTP | None:
        """Take this thread's connection to the server if it was used recently."""
        kept = self._open_connections().pop(self.smtp, None)
        if kept is None:
            return None
        if time.monotonic() - kept.last_used < SMTP_IDLE_SECONDS:
            return kept.client
        _close_quietly(kept.client)
        return None

    def _connect(self) -> smtplib.SMTP:
        smtp = self.smtp
        context = _tls_context(str(smtp.ca_file) if smtp.ca_file else None)
        client: smtplib.SMTP
        if smtp.implicit_tls:
            client = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=smtp.timeout, context=context
            )
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        try:
            client.ehlo()
            if smtp.starttls != "off" and not smtp.implicit_tls:
                self._start_tls(client, context)
            if smtp.username:
                client.login(smtp.username, smtp.password or "")
        except BaseException:
            _close_quietly(client)
            raise
        return client

    def _start_tls(self, client: smtplib.SMTP, context: ssl.SSLContext) -> None:
        if client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
            return
        if self.smtp.starttls == "require":
            raise MailDeliveryError(
                f"{self.smtp.host}:{self.smtp.port} does not offer STARTTLS, which is "
                "required when smtp_url has a user name. Use a server with STARTTLS, "
                "smtps://, or ?starttls=off for a trusted local relay."
            )


def _is_dropped_connection(exc: BaseException) -> bool:
    """Return whether `exc` means the server had closed the connection: a socket
    error, a closed stream, or reply 421 (the server is closing the channel)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code == 421 for code, _text in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPServerDisconnected | OSError)


def _close_quietly(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Return the verifying TLS context for `ca_file` (None: the system store).

    Built once per process: loading the CA bundle takes longer than sending a
    message to a relay on loopback. A CA file changed on disk is read again only
    after a restart.
    """
    return ssl.create_default_context(cafile=ca_file)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return f"{type(exc).__name__} {exc.smtp_code} {text}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = ", ".join(str(code) for code, _text in exc.recipients.values())
        return f"SMTPRecipientsRefused ({codes})"
    return f"{type(exc).__name__}: {exc}"


class FileBackend:
    """Write each message to `<mail_dir>/<Message-ID>.eml`.

    The file is written to a temporary name and renamed into place, so readers never
    see half a message, and a retry of the same message replaces its file.
    """

    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, message: EmailMessage) -> Path:
        message_id = message.get("Message-ID")
        if not message_id:
            raise MailError(
                "A message needs a Message-ID before the file backend stores it."
            )
        return self.directory / f"{_file_name(str(message_id))}.eml"

    def send(self, message: EmailMessage) -> None:
        target = self.path_for(message)
        self.directory.mkdir(parents=True, exist_ok=True)
        data = message.as_bytes(policy=policy.default)
        descriptor, temporary = tempfile.mkstemp(
            dir=self.directory, prefix=".", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _file_name(message_id: str) -> str:
    """A file name from a Message-ID: `<refund-1-accepted@shop>` becomes
    `refund-1-accepted@shop`. An id with other characters gets them replaced and a
    hash of the original appended, so two ids never share a file."""
    core = message_id.strip().strip("<>")
    safe = "".join(
        c if c.isascii() and (c.isalnum() or c in "._@-") else "_" for c in core
    )
    safe = safe.lstrip(".")[:180]
    if safe != core:
        safe += "-" + hashlib.sha256(core.encode()).hexdigest()[:16]
    return safe


def mail_backend(settings: Any) -> MailBackend:
    """SMTP when `smtp_url` is set, else the file backend on `mail_dir`."""
    url = getattr(settings, "smtp_url", None)
    if url:
        timeout = float(
            getattr(settings, "smtp_timeout_seconds", None) or SMTP_TIMEOUT_SECONDS
        )
        ca_file = getattr(settings, "smtp_ca_file", None)
        smtp = parse_smtp_url(
            str(url), timeout=timeout, ca_file=Path(ca_file) if ca_file else None
        )
        return SmtpBackend(smtp)
    return FileBackend(Path(getattr(settings, "mail_dir", "var/mail")))
