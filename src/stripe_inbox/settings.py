"""Settings from CLI flags, environment variables and an optional TOML file, in that order of precedence."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .actions.channels import ChannelConfig, LogChannel, needs_confirmation
from .actions.destinations import ForwardDestination
from .actions.retries import OutboxPolicy
from .actions.trackers import TrackerConfig
from .errors import ConfigError
from .events import EventFilter, check_patterns
from .models import PRIORITIES, Priority
from .policy import Policy, Rule
from .stores import is_server_url

DEFAULT_CONFIG_FILE = "stripe-inbox.toml"
SECRET_PATTERN = re.compile(r"whsec_[A-Za-z0-9+/=_-]{8,}")
API_KEY_PREFIXES = ("sk_", "rk_", "pk_")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MIN_TOKEN_LENGTH = 16
SECONDS_A_DAY = 86400.0
MINUTES_A_YEAR = 525600.0
DAYS_A_CENTURY = 36500.0

# The environment variables read, each with the setting it fills; the first one set wins. No other variable is
# read: a generic name such as API_BASE, DB or WEBHOOK_SECRET may belong to another program.
ENVIRONMENT: dict[str, str] = {
    "STRIPE_WEBHOOK_SECRET": "webhook_secret",
    "STRIPE_API_KEY": "api_key",
    "STRIPE_SECRET_KEY": "api_key",
    "STRIPE_API_BASE": "api_base",
    "STRIPE_INBOX_DB": "db",
    "STRIPE_INBOX_TOKEN": "mcp_token",
    "STRIPE_INBOX_MCP_TOKEN": "mcp_token",
    "STRIPE_INBOX_PUBLIC_URL": "public_url",
    "STRIPE_INBOX_EVENTS_KEY": "events_key",
}


class HttpLimits(BaseModel):
    """`[http]`: what `serve` allows one HTTP connection, so slow or huge request heads cannot pile up."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_header_bytes: int = Field(
        default=65536, ge=4096, le=1048576, description="request line and headers; more gets 431 and a close"
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="from connection (or first byte) to the end of the headers; then 408"
    )
    keep_alive_seconds: float = Field(default=5.0, gt=0, le=300, description="an idle connection is closed")
    max_connections: int = Field(
        default=1000, ge=1, le=1_000_000, description="open connections; past that, requests get 503"
    )


class PushSettings(BaseModel):
    """Which new events `mcp --channel` pushes into the session, and how many: `[push]` in the TOML file."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    events: list[str] = Field(default_factory=lambda: ["*"], description="event type patterns, as `events`")
    min_priority: Priority = "low"
    backlog: int = Field(default=10, ge=0, le=100, description="pending events announced at start, oldest first")
    per_minute: int = Field(
        default=10, ge=1, le=10000, description="announcements a minute; past that, one digest line"
    )
    window_seconds: float = Field(
        default=60.0, gt=0, le=SECONDS_A_DAY, description="the rate limit's window (a minute)"
    )

    @field_validator("events")
    @classmethod
    def _check_events(cls, patterns: list[str]) -> list[str]:
        return check_patterns(patterns)

    def matches(self, event_type: str, priority: Priority) -> bool:
        high_enough = PRIORITIES.index(priority) >= PRIORITIES.index(self.min_priority)
        return high_enough and EventFilter(self.events).accepts(event_type)


class AlertSettings(BaseModel):
    """`[alerts]`: the inbox watching itself; `serve` checks every `check_seconds` and tells `channel` once when
    an incident opens and once when it clears."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    channel: str
    oldest_pending_minutes: float | None = Field(
        default=None, gt=0, le=MINUTES_A_YEAR, description="no agent is working the inbox"
    )
    failed_actions: bool = Field(default=True, description="a notification, ticket or forward ended failed")
    failed_actions_window_minutes: float = Field(
        default=60.0, gt=0, le=MINUTES_A_YEAR, description="open while a failure is this recent"
    )
    check_seconds: float = Field(default=60.0, gt=0, le=SECONDS_A_DAY)


class EventSubscriptionSettings(BaseModel):
    """`[event_subscriptions]`: MCP Events webhook subscriptions (`events/subscribe`); retried with `[outbox]`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_subscriptions: int = Field(default=1000, ge=0, le=100_000, description="not ended, of all principals")
    max_per_principal: int = Field(default=100, ge=0, le=100_000, description="not ended, of one client")
    default_ttl_days: float = Field(default=30.0, gt=0, le=DAYS_A_CENTURY, description="when ttlMs is not given")
    max_ttl_days: float = Field(default=365.0, gt=0, le=DAYS_A_CENTURY, description="a longer ttlMs is cut to this")
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="one POST to a callback")
    lease_seconds: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="a replica delivers a subscription's events for this long before renewing; after a crash, "
        "another (or the restarted one) takes over once it lapses",
    )
    key_file: str | None = Field(
        default=None, description="the key the callbacks' secrets are encrypted with; default: beside the database"
    )

    @model_validator(mode="after")
    def _lease_outlasts_a_pass(self) -> EventSubscriptionSettings:
        if self.lease_seconds < 3 * self.timeout_seconds:
            # A pass starts POSTs for a third of the lease, and the last may take the whole timeout.
            raise ValueError("lease_seconds must be at least 3 times timeout_seconds")
        return self


class Settings(BaseSettings):
    # Only the variables in ENVIRONMENT are read: a generic name such as API_BASE or DB belongs to other programs.
    model_config = SettingsConfigDict(extra="forbid", allow_inf_nan=False)

    webhook_secret: str | None = None
    api_key: str | None = None
    api_base: str = "https://api.stripe.com"
    db: str = "./stripe-inbox.db"
    # The access token of /mcp and the dashboard.
    mcp_token: str | None = None
    # Whether the dashboard may show an event's personal data unmasked, on request, when `redact` masks it.
    dashboard_reveal: bool = False
    public_url: str | None = None
    events: list[str] = Field(default_factory=lambda: ["*"])
    lock_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    body_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    http: HttpLimits = Field(default_factory=HttpLimits)
    policy: Policy = Field(default_factory=Policy)
    rules: list[Rule] = Field(default_factory=list)
    redact: list[Literal["email", "phone", "address", "name"]] = Field(default_factory=list)
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    tickets: TrackerConfig | None = None
    outbox: OutboxPolicy = Field(default_factory=OutboxPolicy)
    push: PushSettings = Field(default_factory=PushSettings)
    event_stream_heartbeat_seconds: float = Field(
        default=30.0, gt=0, le=30, description="an idle events/stream tells its cursor this often"
    )
    approval_timeout_minutes: float = Field(
        default=1440.0, gt=0, le=MINUTES_A_YEAR, description="an unanswered approval lapses"
    )
    alerts: AlertSettings | None = None
    retention_days: float | None = Field(
        default=None, gt=0, le=DAYS_A_CENTURY, description="serve prunes acked events this old daily"
    )
    forward: list[ForwardDestination] = Field(default_factory=list)
    event_subscriptions: EventSubscriptionSettings = Field(default_factory=EventSubscriptionSettings)
    # The key webhook subscriptions' secrets are encrypted with (base64 of 32 bytes), for replicas that share no
    # file; else it is read from, or made into, event_subscriptions.key_file.
    events_key: str | None = None

    _toml_file: ClassVar[Path | None] = None

    @field_validator("webhook_secret")
    @classmethod
    def _check_secrets(cls, value: str | None) -> str | None:
        if value is not None:
            parse_secrets(value)
        return value

    @field_validator("mcp_token")
    @classmethod
    def _check_token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_TOKEN_LENGTH:
            # Long enough that guessing it through the sign-in form's throttle is hopeless.
            raise ValueError(
                f"is shorter than {MIN_TOKEN_LENGTH} characters; make a long random one, for example with "
                '`python3 -c "import secrets; print(secrets.token_urlsafe(32))"`'
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        return check_public_url(value) if value is not None else None

    @model_validator(mode="after")
    def _public_url_needs_the_access_token(self) -> Settings:
        if self.public_url is not None and not self.mcp_token:
            # The operator consents to each OAuth client by signing in with the access token.
            raise ValueError("public_url turns on OAuth, whose consent page asks for the access token: set it too")
        return self

    @field_validator("events")
    @classmethod
    def _check_events(cls, patterns: list[str]) -> list[str]:
        return check_patterns(patterns)

    @model_validator(mode="after")
    def _rules_name_configured_channels(self) -> Settings:
        for number, rule in enumerate(self.rules):
            for action in rule.actions or []:
                channel = action.arguments.get("channel")
                if channel is not None and channel not in self.all_channels:
                    raise ValueError(
                        f"rules.{number}: notify names channel {channel!r}, which is not configured "
                        f"(channels: {', '.join(self.all_channels)})"
                    )
        return self

    @model_validator(mode="after")
    def _alerts_name_a_channel_that_needs_no_one(self) -> Settings:
        if self.alerts is None:
            return self
        channel = self.all_channels.get(self.alerts.channel)
        if channel is None:
            raise ValueError(
                f"alerts.channel: {self.alerts.channel!r} is not configured (channels: {', '.join(self.all_channels)})"
            )
        if needs_confirmation(channel):
            raise ValueError(f"alerts.channel: {self.alerts.channel!r} waits for a person's approval; alerts cannot")
        return self

    @field_validator("channels")
    @classmethod
    def _check_channel_names(cls, channels: dict[str, ChannelConfig]) -> dict[str, ChannelConfig]:
        for name in channels:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                raise ValueError(f"{name!r} is not a channel name: use lower-case letters, digits, '-' and '_'")
        return channels

    @field_validator("forward")
    @classmethod
    def _check_forward(cls, destinations: list[ForwardDestination]) -> list[ForwardDestination]:
        names = [destination.name for destination in destinations]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"destination names must differ: {', '.join(repeated)} appears more than once")
        for destination in destinations:
            variable = destination.secret_env
            value = os.environ.get(variable)
            where = f"destination {destination.name!r}: secret_env names {variable}"
            if not value:
                raise ValueError(
                    f"{where}, which is not set; set it to the destination's whsec_… secret "
                    f"(`stripe-inbox forward secret {destination.name}` makes one)"
                )
            try:
                parse_secrets(value)
            except ValueError as error:
                raise ValueError(f"{where}, whose {error}") from None
        return destinations

    @property
    def all_channels(self) -> dict[str, ChannelConfig]:
        """The configured channels, and `log`, which is always there."""
        return {"log": LogChannel(), **self.channels}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, NamedEnvironment(settings_cls)]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    @property
    def webhook_secrets(self) -> list[str]:
        """Configured secrets, then any stored beside the database (generated or registered)."""
        configured = parse_secrets(self.webhook_secret) if self.webhook_secret else []
        return configured + [s for s in read_stored_secrets(self.secret_file) if s not in configured]

    @property
    def events_key_file(self) -> Path:
        if self.event_subscriptions.key_file:
            return Path(self.event_subscriptions.key_file).expanduser().resolve()
        if is_server_url(self.db):
            return Path("stripe-inbox.events-key").resolve()
        return Path(self.db).expanduser().resolve().with_name(Path(self.db).name + ".events-key")

    @property
    def secret_file(self) -> Path:
        if is_server_url(self.db):
            return Path("stripe-inbox.whsec").resolve()
        return Path(self.db).expanduser().resolve().with_name(Path(self.db).name + ".whsec")


class NamedEnvironment(PydanticBaseSettingsSource):
    """The settings given by the variables in ENVIRONMENT, and by no other variable."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for variable, name in ENVIRONMENT.items():
            if name == field_name and os.environ.get(variable):
                return os.environ[variable], variable, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for variable, name in ENVIRONMENT.items():
            value = os.environ.get(variable)
            if value and name not in found:
                found[name] = value
        return found


def parse_secrets(value: str) -> list[str]:
    """Split a comma-separated secret list; a malformed entry is named by position, never printed."""
    entries = [entry.strip() for entry in value.split(",")]
    for position, entry in enumerate(entries, start=1):
        where = f"entry {position} of {len(entries)}"
        if not entry:
            raise ValueError(f"{where} is empty (a stray comma?)")
        if any(ch.isspace() for ch in entry):
            raise ValueError(f"{where} contains whitespace (a newline pasted inside the secret?)")
        if entry.startswith(API_KEY_PREFIXES):
            raise ValueError(
                f"{where} looks like a Stripe API key ({entry[:3]}…), not a webhook signing secret (whsec_…)"
            )
        if not SECRET_PATTERN.fullmatch(entry):
            raise ValueError(
                f"{where} does not look like a webhook signing secret: it must be 'whsec_' followed by "
                "letters and digits, as shown by the Stripe dashboard or `stripe listen`"
            )
    return entries


def check_public_url(value: str) -> str:
    """The origin people reach `serve` at, without a trailing slash: HTTPS, or HTTP on this machine."""
    url = urlsplit(value.strip())
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ValueError("must be an absolute URL such as https://inbox.example.com")
    if url.scheme == "http" and url.hostname not in LOOPBACK_HOSTS:
        raise ValueError("must be https:// (plain http is allowed only for 127.0.0.1, localhost and ::1)")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError("must be an origin alone (scheme, host and port), without a path, query or fragment")
    return f"{url.scheme}://{url.netloc}"


def read_stored_secrets(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def store_secret(path: Path, secret: str) -> None:
    """Append a secret to the file beside the database, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as file:
        file.write(secret + "\n")
    os.chmod(path, 0o600)


def generate_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32).replace("-", "A").replace("_", "B")


def load_settings(config: str | None = None, **overrides: Any) -> Settings:
    """Build settings: CLI overrides, then environment, then the TOML file, then defaults."""
    toml_file = _find_config(config or os.environ.get("STRIPE_INBOX_CONFIG"))
    loaded = type("LoadedSettings", (Settings,), {"_toml_file": toml_file})
    try:
        return loaded(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as error:
        raise ConfigError(_describe(error, toml_file)) from None
    except ValueError as error:  # the TOML file itself does not parse
        raise ConfigError(f"{toml_file}: {error}") from None


def _find_config(path: str | None) -> Path | None:
    if path:
        if not Path(path).is_file():
            raise ConfigError(f"config file {path} does not exist")
        return Path(path)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


_ENV_NAMES = {name: " or ".join(v for v, n in ENVIRONMENT.items() if n == name) for name in ENVIRONMENT.values()}


def _describe(error: ValidationError, toml_file: Path | None) -> str:
    # include_input=False: the rejected value may be a secret.
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        key = ".".join(str(part) for part in problem["loc"])
        if key in _ENV_NAMES:
            key = f"{key} ({_ENV_NAMES[key]})"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = f"unknown setting{f' in {toml_file}' if toml_file else ''}"
        lines.append(f"{key}: {message}")
    return "invalid configuration: " + "; ".join(lines)
