"""Fixtures of the refund tests: the loopback SMTP servers of the mail tests."""

from tests.mail.conftest import certificate, smtp_server  # noqa: F401 - fixtures
