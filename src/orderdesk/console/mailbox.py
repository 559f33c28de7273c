"""The development mail folder: the `.eml` files the file mail backend writes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

MAX_LISTED = 200
# Larger files are listed but not opened; the file backend writes far smaller ones.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
_FILE_NAME = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]{0,250}\.eml")


@dataclass
class MailFile:
    name: str
    size: int
    modified_at: datetime
    subject: str = ""
    to: str = ""


@dataclass
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass
class MailMessage:
    file: MailFile
    headers: list[tuple[str, str]]
    text: str
    text_type: str
    attachments: list[Attachment] = field(default_factory=list)


def list_mail(directory: Path) -> list[MailFile]:
    """Return up to MAX_LISTED `.eml` files of the folder, newest first."""
    if not directory.is_dir():
        return []
    files = []
    for path in directory.iterdir():
        if not _FILE_NAME.fullmatch(path.name) or not path.is_file():
            continue
        stat = path.stat()
        files.append(
            MailFile(
                path.name, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)
            )
        )
    files.sort(key=lambda item: (item.modified_at, item.name), reverse=True)
    files = files[:MAX_LISTED]
    for item in files:
        headers = _read_headers(directory / item.name)
        item.subject = str(headers.get("Subject", ""))
        item.to = str(headers.get("To", ""))
    return files


def read_mail(directory: Path, name: str) -> MailMessage | None:
    """Return the parsed message of a file listed in the folder, or None when the
    name is not such a file. Names with a path separator never match."""
    if not _FILE_NAME.fullmatch(name):
        return None
    path = directory / name
    if not path.is_file() or path.resolve().parent != directory.resolve():
        return None
    stat = path.stat()
    if stat.st_size > MAX_MESSAGE_BYTES:
        return None
    info = MailFile(name, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    if not isinstance(message, EmailMessage):
        return None
    info.subject = str(message.get("Subject", ""))
    info.to = str(message.get("To", ""))
    headers = [
        (header, str(message[header]))
        for header in ("From", "To", "Subject", "Date", "Message-ID")
        if message[header] is not None
    ]
    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    text_type = body.get_content_type() if body is not None else "text/plain"
    attachments = [
        Attachment(
            part.get_filename() or "(unnamed)",
            part.get_content_type(),
            len(part.get_payload(decode=True) or b""),
        )
        for part in message.iter_attachments()
    ]
    return MailMessage(info, headers, str(text), text_type, attachments)


def _read_headers(path: Path) -> EmailMessage:
    with path.open("rb") as handle:
        parsed = BytesParser(policy=policy.default).parse(handle, headersonly=True)
    return parsed  # type: ignore[return-value]
