"""Turning send and bulk requests into notifications: validate against policy, then render.

Everything a caller can get wrong is found here, before anything is queued, and reported all
at once as :class:`~gateway.errors.ValidationError` details with codes to branch on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, StringConstraints

from gateway import ids
from gateway.channels import address_for, check_recipient_field
from gateway.clock import parse_timestamp
from gateway.engine.preferences import skip_reason
from gateway.errors import BODY_TOO_LONG, ErrorDetail, ValidationError
from gateway.plugin_api import ChannelSpec
from gateway.policy.durations import parse_duration
from gateway.policy.keys import Principal
from gateway.policy.models import Severity
from gateway.policy.templates import CompiledTemplate, RenderedContent, TemplateRenderError
from gateway.policy.view import PolicySet
from gateway.store import Contact, ContactFields, NewDelivery, NewNotification

MAX_SCHEDULE_AHEAD: Final = 365 * 86400.0
"""How far ``send_at``, ``expires_at`` and ``fallback_after`` may reach: a year (``send_at`` also no more than a year ago)."""
Priority = Literal["high", "normal", "bulk"]
Strategy = Literal["all", "fallback"]


def _duration_seconds(value: str | int | float) -> float:
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    if seconds <= 0:
        raise ValueError("must be a positive duration such as 90s or 5m, or a number of seconds")
    return seconds


Duration = Annotated[StrictStr | StrictInt | StrictFloat, AfterValidator(_duration_seconds)]
"""``90s``, ``5m`` or a number of seconds; validated to seconds."""
RecipientValue = StrictStr | StrictInt
Key = StrictStr
Category = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""What a message is about (``marketing``, ``security``): contacts opt out of categories."""
Locale = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$")]
"""A BCP 47 language tag such as ``pt`` or ``pt-BR``."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NotificationContent(_Body):
    channels: list[StrictStr] = Field(min_length=1, max_length=16)
    template_id: StrictStr | None = Field(None, min_length=1, max_length=200)
    subject: StrictStr | None = None
    body: StrictStr | None = None
    html: StrictStr | None = None
    data: dict[str, Any] = {}
    priority: Priority | None = None
    strategy: Strategy | None = None
    fallback_after: Duration | None = None
    send_at: StrictStr | None = None
    expires_at: StrictStr | None = None
    category: Category | None = None
    severity: Severity | None = None
    locale: Locale | None = None


class SendRequest(_Body):
    recipient: dict[str, RecipientValue] = Field(min_length=1)
    notification: NotificationContent
    idempotency_key: StrictStr | None = Field(None, min_length=1, max_length=255)
    metadata: dict[str, StrictStr | StrictInt | float | bool] | None = Field(None, max_length=32)


class BulkRequest(NotificationContent):
    """One notification's content for every row of ``recipients``: the content fields are the send's, at the top level."""

    recipients: list[dict[str, Any]] = Field(min_length=1)
    idempotency_key: StrictStr | None = Field(None, min_length=1, max_length=255)
    metadata: dict[str, StrictStr | StrictInt | float | bool] | None = Field(None, max_length=32)


def _seconds(duration: str | None) -> float | None:
    return parse_duration(duration) if duration is not None else None


def _timestamp(value: str | None, field: str, problems: list[ErrorDetail]) -> float | None:
    """Seconds since the epoch of an ISO 8601 time with a zone, or a problem."""
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as err:
        problems.append(ErrorDetail(field, str(err), "invalid_schedule"))
        return None


def body_digest(route: str, body: Mapping[str, Any]) -> str:
    """Identity of a request body for idempotency: same JSON, whatever its key order or spacing."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(route.encode() + b"\0" + canonical).hexdigest()


def used_addresses(contact: ContactFields, used: Collection[str]) -> dict[str, str]:
    """The contact's recipient fields whose address a delivery goes to: what its notification records as ``recipient``."""
    return {name: value for name, value in contact.addresses.items() if value in used}


@dataclass(frozen=True)
class Plan:
    """What every row of a request shares once checked: channels, template and priority."""

    channels: tuple[ChannelSpec, ...]
    template: CompiledTemplate | None
    content: NotificationContent
    priority: Priority
    variables: frozenset[str]
    strategy: str = "all"
    fallback_after: float | None = None
    send_at: float | None = None
    expires_at: float | None = None
    category: str | None = None
    severity: str | None = None


class Submission:
    """Checks requests of one principal against one policy set and builds notifications."""

    def __init__(self, policy: PolicySet, principal: Principal, now: float) -> None:
        self.policy = policy
        self.principal = principal
        self.now = now

    def plan(self, content: NotificationContent, *, default_priority: Priority = "normal", prefix: str = "notification.") -> Plan:
        """Check what does not depend on the recipient; raise ValidationError listing every problem."""
        problems: list[ErrorDetail] = []
        specs = self._channels(content.channels, prefix, problems)
        template = self._content_mode(content, specs, prefix, problems)
        send_at, expires_at = self._schedule(content, template, prefix, problems)
        if problems:
            raise ValidationError.from_details(problems)
        if template is None:
            self._check_lengths(specs, {spec.name: content.body for spec in specs}, f"{prefix}body", "the body is")
        variables = template.declared.union(*(template.channels[s.name].variables for s in specs)) if template else frozenset()
        defaults = self.policy.tenant_defaults(self.principal.tenant)
        priority = content.priority or (template.priority if template else None) or defaults.priority or default_priority
        strategy = content.strategy or (template.strategy if template else None) or defaults.strategy or "all"
        fallback_after = float(content.fallback_after) if content.fallback_after is not None else None
        if fallback_after is None and strategy == "fallback":
            fallback_after = (template.fallback_after if template else None) or _seconds(defaults.fallback_after)
        category = content.category or (template.category if template else None)
        return Plan(
            tuple(specs), template, content, priority, variables,  # type: ignore[arg-type]
            strategy, fallback_after if strategy == "fallback" else None, send_at, expires_at, category, content.severity,
        )

    def _schedule(
        self, content: NotificationContent, template: CompiledTemplate | None, prefix: str, problems: list[ErrorDetail]
    ) -> tuple[float | None, float | None]:
        """When the first attempt may run, and after when to give up (``expires_at`` or the template's ttl)."""
        send_at = self._within_a_year(_timestamp(content.send_at, f"{prefix}send_at", problems), f"{prefix}send_at", problems)
        expires_at = self._within_a_year(_timestamp(content.expires_at, f"{prefix}expires_at", problems), f"{prefix}expires_at", problems)
        if content.fallback_after is not None and float(content.fallback_after) > MAX_SCHEDULE_AHEAD:
            problems.append(ErrorDetail(f"{prefix}fallback_after", "must be at most a year (365d)", "invalid_schedule"))
        start = send_at if send_at is not None else self.now
        if expires_at is None and template is not None and template.ttl is not None:
            expires_at = start + template.ttl
        if expires_at is not None and expires_at <= start and content.expires_at is not None:
            problems.append(ErrorDetail(f"{prefix}expires_at", "must be later than send_at (or now)", "invalid_schedule"))
        if content.fallback_after is not None and content.strategy != "fallback":
            problems.append(ErrorDetail(f"{prefix}fallback_after", "applies only with strategy: fallback", "invalid_strategy"))
        return send_at, expires_at

    def _within_a_year(self, moment: float | None, field: str, problems: list[ErrorDetail]) -> float | None:
        """``moment`` if it is less than a year from now either way; otherwise a problem, and None."""
        if moment is None or abs(moment - self.now) <= MAX_SCHEDULE_AHEAD:
            return moment
        ahead = moment > self.now
        problems.append(ErrorDetail(field, f"must be at most a year {'ahead' if ahead else 'ago'}", "invalid_schedule"))
        return None

    def build(
        self,
        plan: Plan,
        recipient: Mapping[str, Any],
        data: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        recipient_path: str = "recipient",
        data_path: str = "notification.data",
        contact: Contact | None = None,
    ) -> NewNotification:
        """One notification for one recipient, or for ``contact`` (``recipient`` is then not read); raise ValidationError listing every problem.

        To a contact, a channel it opted out of or has no address on is a delivery skipped
        from the start (:mod:`gateway.engine.preferences`), and its locale picks the template's
        translation unless the send gives ``locale``.
        """
        problems: list[ErrorDetail] = []
        skips: dict[str, str] = {}
        if contact is None:
            clean = self._recipient(recipient, recipient_path, problems)
            addresses = self._addresses(plan.channels, clean, recipient_path, problems)
        else:
            addresses, skips = self._contact_addresses(plan, contact.fields)
            clean = used_addresses(contact.fields, {address for name, address in addresses.items() if name not in skips})
        locale = plan.content.locale or (contact.fields.locale if contact else None)
        translation = plan.template.translation_for(locale) if plan.template else None
        missing = sorted(self._variables(plan, translation).difference(data))
        if missing:
            names = ", ".join(missing)
            problems.append(ErrorDetail(data_path, f"template {plan.template.template_id!r} needs values for: {names}", "missing_variables"))  # type: ignore[union-attr]
        if problems:
            raise ValidationError.from_details(problems)
        contents = self._render(plan, data, data_path, translation)
        if plan.template is not None:
            self._check_lengths(plan.channels, {name: content.get("body") for name, content in contents.items()}, data_path,
                                f"template {plan.template.template_id!r} renders")
        notification_id = ids.new_id(ids.NOTIFICATION)
        deliveries = [
            NewDelivery(ids.new_id(ids.DELIVERY), spec.name, position, addresses.get(spec.name, ""), contents[spec.name], skips.get(spec.name))
            for position, spec in enumerate(plan.channels)
        ]
        return NewNotification(
            id=notification_id,
            tenant=self.principal.tenant,
            mode=self.principal.mode,
            priority=plan.priority,
            strategy=plan.strategy,
            template_id=plan.template.template_id if plan.template else None,
            template_version=plan.template.version if plan.template else None,
            template_language=plan.template.language if plan.template else None,
            recipient=clean,
            channels=[spec.name for spec in plan.channels],
            deliveries=deliveries,
            created_by=self.principal.actor,
            metadata=metadata,
            idempotency_key=idempotency_key,
            send_at=plan.send_at,
            expires_at=plan.expires_at,
            fallback_after=plan.fallback_after,
            contact_id=contact.id if contact else None,
            category=plan.category,
            severity=plan.severity,
            locale=plan.template.tags.get(translation, translation) if plan.template and translation else None,
        )

    @staticmethod
    def _contact_addresses(plan: Plan, contact: ContactFields) -> tuple[dict[str, str], dict[str, str]]:
        """The contact's address per channel it gets the message on, and why each other channel is skipped.

        A channel skipped by preference keeps the contact's address on its delivery (a
        delivery to no address has none), so erasing the contact finds it there too.
        """
        addresses: dict[str, str] = {}
        skips: dict[str, str] = {}
        for spec in plan.channels:
            reason = skip_reason(contact, spec, plan.category, plan.severity)
            address = address_for(spec, contact.addresses)
            if address is not None:
                addresses[spec.name] = address
            if reason is not None:
                skips[spec.name] = reason
        return addresses, skips

    @staticmethod
    def _variables(plan: Plan, translation: str | None) -> frozenset[str]:
        """What the rendering needs: the plan's, or with a translation the declared ones and its channels' own."""
        if translation is None or plan.template is None:
            return plan.variables
        template = plan.template
        return template.declared.union(*(template.content(spec.name, translation).variables for spec in plan.channels))

    # --- checks ----------------------------------------------------------------------------

    def _channels(self, names: Sequence[str], prefix: str, problems: list[ErrorDetail]) -> list[ChannelSpec]:
        specs = []
        seen: set[str] = set()
        for index, name in enumerate(names):
            field = f"{prefix}channels[{index}]"
            spec = self.policy.channels.get(name)
            if spec is None:
                known = ", ".join(sorted(self.policy.channels.specs))
                problems.append(ErrorDetail(field, f"unknown channel {name!r} (known: {known})", "unknown_channel"))
            elif name in seen:
                problems.append(ErrorDetail(field, f"channel {name!r} is listed twice", "duplicate_channel"))
            elif not self._served(name):
                problems.append(ErrorDetail(field, f"no provider serves channel {name!r} for this tenant", "channel_unavailable"))
            else:
                specs.append(spec)
            seen.add(name)
        return specs

    def _check_lengths(self, specs: Sequence[ChannelSpec], bodies: Mapping[str, Any], field: str, what: str) -> None:
        """Refuse a body longer than every provider instance of its channel takes (the sandbox takes any)."""
        if self.principal.is_test:
            return
        problems = []
        for spec in specs:
            limit = self.policy.max_body_chars(self.principal.tenant, spec.name)
            body = bodies.get(spec.name)
            if limit is not None and isinstance(body, str) and len(body) > limit:
                message = f"{what} {len(body)} characters for {spec.name}; its provider instances take at most {limit}"
                problems.append(ErrorDetail(field, message, BODY_TOO_LONG))
        if problems:
            raise ValidationError.from_details(problems)

    def _served(self, channel: str) -> bool:
        return self.principal.is_test or bool(self.policy.providers_for(self.principal.tenant, channel))

    def _content_mode(
        self, content: NotificationContent, specs: Sequence[ChannelSpec], prefix: str, problems: list[ErrorDetail]
    ) -> CompiledTemplate | None:
        if content.template_id is None:
            self._check_raw(content, specs, prefix, problems)
            return None
        template = self.policy.template(self.principal.tenant, content.template_id)
        if template is None:
            problems.append(ErrorDetail(f"{prefix}template_id", f"unknown template {content.template_id!r}", "unknown_template"))
            return None
        for part in ("subject", "body", "html"):
            if getattr(content, part) is not None:
                message = f"{part} cannot be combined with template_id: the template supplies it"
                problems.append(ErrorDetail(f"{prefix}{part}", message, "conflicting_content"))
        for spec in specs:
            if spec.name not in template.channels:
                message = f"template {template.template_id!r} has no content for channel {spec.name!r}"
                problems.append(ErrorDetail(f"{prefix}template_id", message, "template_channel_missing"))
        return template

    @staticmethod
    def _check_raw(content: NotificationContent, specs: Sequence[ChannelSpec], prefix: str, problems: list[ErrorDetail]) -> None:
        for spec in specs:
            if spec.template_required:
                message = f"channel {spec.name!r} sends only approved templates: set template_id instead of a raw body"
                problems.append(ErrorDetail(f"{prefix}template_id", message, "template_required"))
        if content.body is None and content.html is None:
            problems.append(ErrorDetail(f"{prefix}body", "body is required when no template_id is given", "missing_content"))
        if content.subject is None and any(spec.subject and spec.name == "email" for spec in specs):
            problems.append(ErrorDetail(f"{prefix}subject", "an email needs a subject", "missing_content"))

    def _recipient(self, recipient: Mapping[str, Any], path: str, problems: list[ErrorDetail]) -> dict[str, str]:
        clean: dict[str, str] = {}
        known = self.policy.channels.recipient_fields
        for name, value in recipient.items():
            field = f"{path}.{name}"
            if name not in known:
                problems.append(ErrorDetail(field, f"unknown recipient field (known: {', '.join(sorted(known))})", "unknown_recipient_field"))
                continue
            if isinstance(value, bool) or not isinstance(value, str | int):
                problems.append(ErrorDetail(field, "must be a string", "invalid_recipient"))
                continue
            text = str(value)
            why = check_recipient_field(name, text)
            if why:
                problems.append(ErrorDetail(field, why, "invalid_recipient"))
                continue
            clean[name] = text
        return clean

    @staticmethod
    def _addresses(
        specs: Sequence[ChannelSpec], recipient: Mapping[str, str], path: str, problems: list[ErrorDetail]
    ) -> dict[str, str]:
        addresses = {}
        reported = {problem.field for problem in problems}
        for spec in specs:
            address = address_for(spec, recipient)
            if address is None and any(f"{path}.{name}" in reported for name in spec.recipient_fields):
                continue  # the field was given but is invalid; that problem is already reported
            if address is None:
                fields = " or ".join(spec.recipient_fields)
                message = f"channel {spec.name!r} needs recipient {fields}"
                problems.append(ErrorDetail(f"{path}.{spec.recipient_fields[0]}", message, "missing_recipient_field"))
            else:
                addresses[spec.name] = address
        return addresses

    @staticmethod
    def _render(plan: Plan, data: Mapping[str, Any], data_path: str, translation: str | None = None) -> dict[str, dict[str, Any]]:
        if plan.template is None:
            content = plan.content
            return {
                spec.name: RenderedContent(
                    body=content.body if content.body is not None else None,
                    subject=content.subject if spec.subject else None,
                    html=content.html if spec.name == "email" else None,
                ).as_dict()
                for spec in plan.channels
            }
        try:
            return {spec.name: plan.template.content(spec.name, translation).render(data).as_dict() for spec in plan.channels}
        except TemplateRenderError as err:
            message = f"template {plan.template.template_id!r} could not be rendered: {err}"
            raise ValidationError(message, code="template_render_failed", details=[ErrorDetail(data_path, str(err), "template_render_failed")]) from err
