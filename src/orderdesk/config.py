"""Settings read from ORDERDESK_* environment variables."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "staging", "production"]

# Combined state and average local sales tax rates, rounded to 0.1 percent. They are
# sample defaults for the demo; a merchant sets its own with ORDERDESK_TAX_RATES.
DEFAULT_TAX_RATES: dict[str, str] = {
    "AL": "0.092",
    "AK": "0.018",
    "AZ": "0.084",
    "AR": "0.095",
    "CA": "0.088",
    "CO": "0.078",
    "CT": "0.0635",
    "DE": "0",
    "DC": "0.06",
    "FL": "0.070",
    "GA": "0.074",
    "HI": "0.045",
    "ID": "0.060",
    "IL": "0.089",
    "IN": "0.070",
    "IA": "0.069",
    "KS": "0.087",
    "KY": "0.060",
    "LA": "0.096",
    "ME": "0.055",
    "MD": "0.060",
    "MA": "0.0625",
    "MI": "0.060",
    "MN": "0.080",
    "MS": "0.071",
    "MO": "0.084",
    "MT": "0",
    "NE": "0.070",
    "NV": "0.082",
    "NH": "0",
    "NJ": "0.066",
    "NM": "0.076",
    "NY": "0.085",
    "NC": "0.070",
    "ND": "0.070",
    "OH": "0.072",
    "OK": "0.090",
    "OR": "0",
    "PA": "0.063",
    "RI": "0.070",
    "SC": "0.075",
    "SD": "0.061",
    "TN": "0.096",
    "TX": "0.082",
    "UT": "0.073",
    "VT": "0.064",
    "VA": "0.058",
    "WA": "0.094",
    "WV": "0.066",
    "WI": "0.054",
    "WY": "0.054",
}


class Settings(BaseSettings):
    """Runtime configuration. Every field is set by ORDERDESK_<FIELD NAME>."""

    model_config = SettingsConfigDict(env_prefix="ORDERDESK_", extra="ignore")

    environment: Environment = "development"
    database_url: str = "sqlite:///orderdesk.db"
    data_dir: Path = Path("var")
    redis_url: str | None = None

    rate_limit_writes_per_minute: int = Field(default=120, ge=0)
    rate_limit_reads_per_minute: int = Field(default=360, ge=0)

    # Chains: the embedded devnet, plus any chain described in a TOML file.
    devnet: bool | None = None
    devnet_confirmations: int = Field(default=1, ge=1)
    chains_file: Path | None = None
    # The master secret from which each project's treasury key is derived. When both
    # are unset in development, a random one is written to data_dir/treasury.key.
    treasury_secret: str | None = None
    treasury_secret_file: Path | None = None

    quote_ttl_seconds: int = Field(default=3600, ge=1)
    return_window_days: int = Field(default=30, ge=0)
    # A refund request whose amount is below this is accepted as soon as it is made,
    # with no review. None (the default) sends every request to review.
    refund_auto_accept_below: Decimal | None = Field(default=None, gt=0)
    # Seconds between checks of a sent payout transaction for its confirmations.
    payout_recheck_seconds: float = Field(default=5.0, gt=0)
    # Seconds before the first retry of a payout the treasury cannot fund; the delay
    # doubles with each failure up to payout_retry_max_seconds.
    payout_retry_seconds: float = Field(default=30.0, gt=0)
    payout_retry_max_seconds: float = Field(default=3600.0, gt=0)
    tax_rates: str | None = None

    mail_dir: Path = Path("var/mail")
    # smtp://user:pass@host:587 (STARTTLS), smtps://host:465 or smtp://relay:25.
    smtp_url: str | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    smtp_ca_file: Path | None = None
    mail_from: str = "orderdesk <orders@orderdesk.localhost>"

    # Return labels: "local" numbers from return_tracking_format, or EasyPost.
    label_provider: Literal["local", "easypost"] = "local"
    # JSON object {name, line1, line2, city, state, postalCode, country, phone}.
    returns_address: str | None = None
    return_carrier: str = "USPS"
    return_tracking_format: str = "9202{digits:17}{mod10}"
    label_font_path: Path | None = None
    easypost_api_key: str | None = None
    easypost_base_url: str = "https://api.easypost.com/v2"
    easypost_timeout_seconds: float = Field(default=30.0, gt=0)
    easypost_service: str | None = None
    # JSON object {length, width, height} in inches and {weight} in ounces.
    return_parcel: str | None = None

    # Carrier tracking feeds: a secret turns on that provider's signature check.
    carrier_easypost_secret: str | None = None
    carrier_shippo_secret: str | None = None
    carrier_shippo_token: str | None = None
    carrier_aftership_secret: str | None = None
    # JSON object of carrier name to a URL template containing {number}.
    tracking_url_templates: str | None = None
    # The fulfilment provider of new projects: "manual" or "simulated".
    fulfilment_provider: Literal["manual", "simulated"] = "manual"
    # Seconds between the steps of the simulated fulfilment provider.
    simulated_step_seconds: float = Field(default=20.0, gt=0)

    # Merchant webhooks: the time limit of one delivery attempt (keep it below the
    # worker's 60 s job lease), a factor on every retry delay, and whether production
    # may deliver to loopback, private and link-local addresses.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)
    webhook_retry_scale: float = Field(default=1.0, gt=0)
    webhook_allow_private_urls: bool = False

    worker_poll_seconds: float = Field(default=1.0, gt=0)
    # On SIGTERM, how long `serve` waits for requests in flight (and the in-process
    # worker for its current job) before it closes them.
    shutdown_grace_seconds: int = Field(default=30, ge=1)
    payment_recheck_seconds: float = Field(default=5.0, gt=0)
    log_format: Literal["console", "json"] | None = None
    log_level: str = "INFO"
    # One log line per request (method, route template, status, duration).
    access_log: bool = True
    # A request still running after this many seconds gets 503 request_timeout and
    # commits nothing more; 0 turns the limit off. It is longer than the SQLite busy
    # timeout (30 s) and a chain node request (10 s), which fail on their own first.
    request_timeout_seconds: float = Field(default=60.0, ge=0)

    # The operator console. The secret is the HMAC key of the stored session token
    # hashes, the login form tokens and the flash cookie. When both are unset in
    # development, a random one is written to data_dir/console-session.key.
    console_session_secret: str | None = None
    console_session_secret_file: Path | None = None
    # A session ends this many hours after login, or after this many idle minutes.
    console_session_hours: float = Field(default=12.0, gt=0)
    console_session_idle_minutes: float = Field(default=60.0, gt=0)
    # Failed logins within console_lockout_minutes that lock further attempts, counted
    # per email and per client IP address.
    console_lockout_minutes: float = Field(default=15.0, gt=0)
    console_lockout_email_failures: int = Field(default=5, ge=1)
    console_lockout_ip_failures: int = Field(default=20, ge=1)

    @field_validator("database_url")
    @classmethod
    def _normalise_postgres_scheme(cls, value: str) -> str:
        # psycopg 3 is the only PostgreSQL driver installed, so plain URLs use it.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def devnet_enabled(self) -> bool:
        """Return whether the in-process devnet chain runs (default: in development)."""
        if self.devnet is None:
            return self.environment == "development"
        return self.devnet

    @property
    def devnet_endpoints_enabled(self) -> bool:
        return self.environment == "development" and self.devnet_enabled

    @cached_property
    def tax_rate_table(self) -> dict[str, Decimal]:
        raw = json.loads(self.tax_rates) if self.tax_rates else DEFAULT_TAX_RATES
        return {state.upper(): Decimal(str(rate)) for state, rate in raw.items()}


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with keyword overrides taking precedence."""
    return Settings(**overrides)  # type: ignore[arg-type]
