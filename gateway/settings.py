"""Process settings, read once from ``TIDINGS_*`` environment variables.

Built in the CLI and passed down; nothing else in Tidings reads ``os.environ`` for its own
configuration. (Policy files may name environment variables with ``{$env: NAME}``; those are
read when the policy loads, by :class:`gateway.policy.secret_values.SecretResolver`.) Every field
here appears in the README's settings table (a test keeps the two in step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """How this Tidings process runs. Policy (tenants, templates, providers) lives in YAML."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8080, ge=0, le=65535, description="Port the HTTP server listens on.")
    data_dir: Path = Field(Path("data"), description="Directory for the SQLite store (created if missing).")
    policy_dir: Path = Field(Path("policies"), description="Directory of YAML policy files.")
    policy_reload: bool = Field(
        True, description="Watch the policy directory and apply valid changes without a restart."
    )
    master_key: SecretStr | None = Field(
        None, description="Key that decrypts `enc:v1:` secrets in policy files."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level, in any case (`debug` works).")
    log_format: Literal["text", "json"] = Field(
        "text", description="`text` for people, `json` for log pipelines (one object per line); every line of `tidings serve` follows it."
    )
    access_log: bool = Field(True, description="Log one line per HTTP request (method, route, status, duration, tenant) at INFO.")
    metrics_token: SecretStr | None = Field(
        None, description="If set, `GET /metrics` needs `Authorization: Bearer` with this token; unset, it is open like `/healthz`."
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger is a 413."
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest a client may take to send a request's headers, and then its body (a 408); an idle keep-alive connection is closed after it too."
    )
    bulk_max_rows: int = Field(10_000, ge=1, description="Most recipients one bulk request may carry.")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="SQLite `synchronous` pragma; FULL makes every 202 survive power loss."
    )
    dispatch_concurrency: int = Field(
        64, ge=1, description="Sends in flight at once per channel."
    )
    dispatch_batch: int = Field(256, ge=1, description="Deliveries claimed per channel in one claim.")
    lease_seconds: float = Field(
        60.0, gt=0, description="How long a claimed delivery, business event or due digest stays reserved before another worker may take it again."
    )
    send_timeout_seconds: float = Field(30.0, gt=0, description="Longest a single provider call may take.")
    max_attempts: int = Field(
        5, ge=1, description="Attempts per delivery before it is dead-lettered, where no policy retry schedule applies."
    )
    retry_base_seconds: float = Field(
        2.0, gt=0, description="First retry delay where no policy retry schedule applies; later ones double, with jitter, up to an hour."
    )
    inbound_retention_days: float = Field(
        30, gt=0, description="How long raw provider callbacks (webhook requests as received) are kept before they are purged."
    )
    inbound_max_body_bytes: int = Field(
        256 * 1024, ge=1024, description="Largest provider callback body accepted on `/api/v1/webhooks/…`; larger is a 413."
    )
    inbound_refused_max_rows: int = Field(
        10_000, ge=1, description="How many refused provider callbacks (failed verification) are kept, as a summary without body or headers; older ones are dropped."
    )
    inbound_refused_rate_per_source: float = Field(
        10.0, ge=0, description="Callbacks failing verification one source address may send per second (an IPv6 /64 counts as one); past its budget every callback from it is a 429 with `Retry-After`. Verified callbacks never spend it. `0`: no limit."
    )
    inbound_refused_burst_per_source: int = Field(
        100, ge=1, description="Callbacks failing verification one source address may send at once before `TIDINGS_INBOUND_REFUSED_RATE_PER_SOURCE` holds it back."
    )
    inbound_rate_per_instance: float = Field(
        5000.0, ge=0, description="Provider callbacks one provider instance may take per second, verified or not; past its budget a callback is a 429 with `Retry-After` (the vendor retries it), so a flood of them cannot starve sends. `0`: no limit."
    )
    inbound_burst_per_instance: int = Field(
        10_000, ge=1, description="Provider callbacks one provider instance may take at once before `TIDINGS_INBOUND_RATE_PER_INSTANCE` holds it back."
    )
    max_contacts_per_tenant: int = Field(
        1_000_000, ge=1, description="Most contacts one tenant may hold per key mode (test and live apart); creating one more is a 409 `contact_limit_reached` until some are deleted."
    )
    idempotency_retention_hours: float = Field(
        24, gt=0, description="How long an Idempotency-Key is remembered; after that, the same key is a new request."
    )
    retention_batch: int = Field(
        500, ge=1, description="Notifications one write of a retention purge deletes (or of a deleted contact's erasure changes) at most; sends are written between batches, so neither ever holds them up for longer than one."
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM, how long in-flight sends may finish before they are released."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        """``debug`` is ``DEBUG``: a level is not refused for its case."""
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_in_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> Settings:
        if self.lease_seconds <= self.send_timeout_seconds:
            raise ValueError("lease_seconds must be longer than send_timeout_seconds, or a slow send could be attempted twice at once")
        return self

    @property
    def database_path(self) -> Path:
        return self.data_dir / "tidings.sqlite3"
