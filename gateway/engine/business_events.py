"""Business events as a client posts them, and what a route's notification is built from.

``POST /api/v1/events`` parses its body into an :class:`EventRequest`, and :func:`new_event`
checks what the model cannot (one recipient form, bounded data) and fills the severity from
the event type's policy. Processing (:mod:`gateway.engine.event_processor`) and digests
(:mod:`gateway.engine.digests`) read the kept event back and build each route's notification
content with :func:`notification_content`, the one place that turns a route and an event's
variables into what a send's ``notification`` would say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from gateway.clock import parse_timestamp
from gateway.engine.submission import NotificationContent
from gateway.errors import ErrorDetail, PayloadTooLargeError, ValidationError
from gateway.policy.keys import Principal
from gateway.policy.models import DEFAULT_SEVERITY, RoutePolicy, Severity
from gateway.policy.routing import EventFacts
from gateway.policy.view import PolicySet
from gateway.store import BusinessEvent, NewBusinessEvent

MAX_RECIPIENTS: Final = 1000
"""Recipients one event may name: each becomes a notification per matching route."""
MAX_DATA_BYTES: Final = 64 * 1024
"""The most an event's ``data`` may take as JSON: it is kept, and copied into every digest it joins."""
MAX_EVENT_BYTES: Final = 512 * 1024
"""The most a whole event may take as JSON: it is kept as received, and every page of ``GET /api/v1/events`` shows it."""
EVENT_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_RECIPIENT_FIELDS: Final = 16
MAX_ADDRESS_CHARS: Final = 320  # the longest email address; far longer than any phone number, chat id or contact id
RECIPIENT_FORMS: Final = ("recipient", "recipients", "contact_id", "external_id")


Text = Annotated[StrictStr, Field(pattern=r"^[^\x00-\x1f\x7f]+$")]
"""A name or id a client gives: no control characters (a NUL or line break has no place in an id, a log line or a header)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActorRequest(_Body):
    """Who or what caused the event in the client's system (a user, a job)."""

    type: Text = Field(min_length=1, max_length=64)
    id: Text = Field(min_length=1, max_length=255)


RecipientValue = Annotated[StrictStr, Field(max_length=MAX_ADDRESS_CHARS)] | StrictInt
Recipient = dict[Annotated[str, Field(max_length=64)], RecipientValue]


class EventRequest(_Body):
    """The body of ``POST /api/v1/events``."""

    event_id: StrictStr = Field(min_length=1, max_length=255, pattern=r"^[^/\x00-\x1f\x7f]+$")
    event_name: StrictStr = Field(pattern=EVENT_NAME)
    source: Text | None = Field(None, min_length=1, max_length=255)
    severity: Severity | None = None
    occurred_at: StrictStr | None = Field(None, max_length=64)
    actor: ActorRequest | None = None
    recipient: Recipient | None = Field(None, min_length=1, max_length=MAX_RECIPIENT_FIELDS)
    recipients: list[Recipient] | None = Field(None, min_length=1, max_length=MAX_RECIPIENTS)
    contact_id: Text | None = Field(None, min_length=1, max_length=255)
    external_id: Text | None = Field(None, min_length=1, max_length=255)
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("event_id")
    @classmethod
    def _addressable(cls, value: str) -> str:
        if value in (".", ".."):  # a URL path reads them as "here" and "up": GET /api/v1/events/{event_id} could never name it
            raise ValueError("must not be '.' or '..'")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _zoned_time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_timestamp(value)  # its ValueError says what is wrong
        return value

    @field_validator("recipients")
    @classmethod
    def _bounded_rows(cls, rows: list[Recipient] | None) -> list[Recipient] | None:
        for row in rows or ():
            if not 1 <= len(row) <= MAX_RECIPIENT_FIELDS:
                raise ValueError(f"each recipient needs 1 to {MAX_RECIPIENT_FIELDS} fields")
        return rows


def check_size(body: Mapping[str, Any]) -> None:
    """Refuse, before parsing, a body naming too many recipients, carrying too much data, or too large as a whole (413)."""
    rows = body.get("recipients")
    if isinstance(rows, list) and len(rows) > MAX_RECIPIENTS:
        raise PayloadTooLargeError(f"An event may name at most {MAX_RECIPIENTS} recipients (got {len(rows)}).", code="too_many_recipients")
    data = body.get("data")
    if isinstance(data, dict) and len(orjson.dumps(data)) > MAX_DATA_BYTES:
        raise PayloadTooLargeError(f"An event's data may take at most {MAX_DATA_BYTES} bytes as JSON.", code="event_data_too_large")
    if len(orjson.dumps(body)) > MAX_EVENT_BYTES:
        raise PayloadTooLargeError(f"An event may take at most {MAX_EVENT_BYTES} bytes as JSON.", code="event_too_large")


def new_event(request: EventRequest, policy: PolicySet, principal: Principal) -> NewBusinessEvent:
    """The event to keep: exactly one recipient form, and its severity (the request's, its type's default, else medium)."""
    given = [form for form in RECIPIENT_FORMS if getattr(request, form) is not None]
    if not given:
        detail = ErrorDetail("recipient", "give one of recipient, recipients, contact_id or external_id", "missing_recipient")
        raise ValidationError("The event names no recipient.", code="missing_recipient", details=[detail])
    if len(given) > 1:
        details = [ErrorDetail(form, "give only one of recipient, recipients, contact_id or external_id", "conflicting_recipients") for form in given]
        raise ValidationError("The event names its recipients more than one way.", code="conflicting_recipients", details=details)
    defaults = policy.document.events.get(request.event_name)
    severity = request.severity or (defaults.severity if defaults else None) or DEFAULT_SEVERITY
    return NewBusinessEvent(
        tenant=principal.tenant, mode=principal.mode, event_id=request.event_id, name=request.event_name, severity=severity,
        received=request.model_dump(exclude_none=True), key_prefix=principal.key_prefix, key_name=principal.name,
    )


def recipients_of(event: BusinessEvent) -> list[dict[str, Any]]:
    """The event's recipients as a send's ``recipient`` maps, in order: a contact named by id is ``{"contact_id": …}``."""
    received = event.received
    if "recipient" in received:
        return [dict(received["recipient"])]
    if "recipients" in received:
        return [dict(row) for row in received["recipients"]]
    form = "contact_id" if "contact_id" in received else "external_id"
    return [{form: received[form]}]


def facts_of(event: BusinessEvent) -> EventFacts:
    """What routing reads of a kept event."""
    received = event.received
    return EventFacts(event.name, event.severity, received.get("source"), received.get("data", {}), received.get("actor"))


def event_variables(event: BusinessEvent) -> dict[str, Any]:
    """A route's template variables for the event: its ``data`` at the top, and ``event`` (its name, id, severity, source, time, actor).

    ``event`` wins over a data field of that name.
    """
    received = event.received
    about = {
        "name": event.name, "id": event.event_id, "severity": event.severity, "source": received.get("source"),
        "occurred_at": received.get("occurred_at"), "actor": received.get("actor"),
    }
    return {**received.get("data", {}), "event": about}


def notification_content(route: RoutePolicy, variables: Mapping[str, Any], severity: str) -> NotificationContent:
    """What a send's ``notification`` would say for ``route`` with these template variables: its template, channels,
    strategy, ``fallback_after`` and priority from the route's ``notify``, the rest from the template and tenant defaults.

    The one place a route's notification content is built, for single events and digests alike.
    It carries the event's ``severity`` (a digest's: the highest of its events'), so a
    ``critical`` event reaches a contact past a category opt-out as a ``critical`` send does; its
    category is the template's.
    """
    notify = route.notify
    content: dict[str, Any] = {
        "channels": list(notify.channels), "template_id": notify.template, "data": dict(variables), "severity": severity,
    }
    for name in ("strategy", "fallback_after", "priority"):
        value = getattr(notify, name)
        if value is not None:
            content[name] = value
    return NotificationContent.model_validate(content)
