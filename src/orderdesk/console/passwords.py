"""argon2id password hashes and the rule that rejects weak console passwords."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from orderdesk.errors import InvalidInput

MIN_LENGTH = 12
# argon2 accepts any length; the cap keeps one login from hashing megabytes.
MAX_LENGTH = 256
MIN_DISTINCT_CHARACTERS = 6
# Passwords that lead every published list of leaked passwords. A password is
# rejected when, stripped of digits and symbols, it is one of these words.
COMMON_WORDS = frozenset(
    {
        "password",
        "passw",
        "passwort",
        "qwerty",
        "qwertyuiop",
        "asdfgh",
        "asdfghjkl",
        "zxcvbnm",
        "letmein",
        "welcome",
        "admin",
        "administrator",
        "iloveyou",
        "monkey",
        "dragon",
        "football",
        "baseball",
        "sunshine",
        "princess",
        "abc",
        "abcdef",
        "changeme",
        "secret",
        "orderdesk",
        "operator",
        "console",
    }
)

_hasher = PasswordHasher()
# Verified when the email is unknown, so the reply takes as long as for a real user.
_UNKNOWN_USER_HASH = _hasher.hash("no such console user, compared for timing only")


def password_problem(password: str, email: str = "") -> str | None:
    """Return why `password` is too weak for a console user, or None when it is fine."""
    if not password or not password.strip():
        return "The password is empty. Choose one of at least 12 characters."
    if len(password) < MIN_LENGTH:
        return (
            f"The password has {len(password)} characters; it needs at least "
            f"{MIN_LENGTH}. A few unrelated words make a strong one."
        )
    if len(password) > MAX_LENGTH:
        return f"The password is longer than {MAX_LENGTH} characters. Shorten it."
    if len(set(password)) < MIN_DISTINCT_CHARACTERS:
        return (
            f"The password repeats too few characters (fewer than "
            f"{MIN_DISTINCT_CHARACTERS} different ones). Choose a less regular one."
        )
    letters = re.sub(r"[^a-z]", "", password.lower())
    if letters in COMMON_WORDS or not letters and password.isdigit():
        return (
            "The password is a common password with digits or symbols added. "
            "Choose one that is not on lists of leaked passwords."
        )
    local_part = email.split("@", 1)[0].lower()
    if len(local_part) >= 4 and local_part in password.lower():
        return "The password contains the email address. Choose an unrelated one."
    return None


def check_password_strength(password: str, email: str = "") -> None:
    """Raise InvalidInput with the reason when the password is too weak."""
    problem = password_problem(password, email)
    if problem is not None:
        raise InvalidInput(problem, code="weak_password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Return whether `password` matches; with no hash, spend the same time and fail."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _UNKNOWN_USER_HASH, password) and (
            password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Return whether the hash was made with older argon2 parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)
