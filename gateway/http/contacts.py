"""``/api/v1/contacts``: stored recipients, with addresses, locale, time zone and preferences, to send to by id.

A contact belongs to the tenant and to the key's mode: a test key's contacts and a live key's
are apart, each 404 to the other, as another tenant's are. Its addresses sit at the top level
under the recipient fields of a send (``email``, ``phone``, ``slack_user_id``, … and plugin
channels' own), checked as a send checks them. ``POST`` with an ``external_id`` the tenant has
already used replaces that contact (200) instead of creating one (201); ``PATCH`` is a JSON
merge patch (RFC 7396: a field set to null is removed). ``DELETE`` erases the contact's
addresses from the notifications that hold them before it answers (see
:mod:`gateway.engine.erasure`).

The view shows the legal opt-outs recorded against the contact's addresses (STOP replies and
the like). They are not the contact's to change, so they are read-only here: only the
recipient lifts one, by replying START.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, StringConstraints

from gateway import ids
from gateway.channels import address_for, check_recipient_field
from gateway.engine.submission import Category, Locale
from gateway.errors import ConflictError, ErrorDetail, NotFoundError, ValidationError
from gateway.http.api import json_response, parse_model, read_json
from gateway.http.appkeys import ERASER, SETTINGS, STORE
from gateway.http.auth import caller, policy_of
from gateway.http.paging import bad_cursor, page_limit
from gateway.http.views import contact_view
from gateway.policy.view import PolicySet
from gateway.store import Contact, ContactFields, ContactLimitError, ExternalIdTakenError, InvalidCursorError, OptOutEntry, StaleContactError

routes = web.RouteTableDef()
MAX_PREFERENCES: Final = 64
MAX_METADATA: Final = 32
PATCH_TRIES: Final = 5
"""How often a PATCH is redone from a fresh read when another change got in between, before it answers 409."""
ExternalId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
ChannelName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = StrictStr | StrictInt | StrictFloat | StrictBool
MAX_METADATA_TEXT: Final = 1024
TimeZone = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]


class Preferences(BaseModel):
    """Whether the contact wants messages on each channel and of each category; one not listed is wanted."""

    model_config = ConfigDict(extra="forbid")

    channels: dict[ChannelName, StrictBool] = Field(default_factory=dict, max_length=MAX_PREFERENCES)
    categories: dict[Category, StrictBool] = Field(default_factory=dict, max_length=MAX_PREFERENCES)


class ContactBody(BaseModel):
    """A contact as a client writes it; the fields not named here are addresses, checked against the recipient fields."""

    model_config = ConfigDict(extra="allow")

    external_id: ExternalId | None = None
    locale: Locale | None = None
    timezone: TimeZone | None = None
    preferences: Preferences = Field(default_factory=Preferences)
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=MAX_METADATA)


@routes.post("/api/v1/contacts")
async def create_contact(request: web.Request) -> web.Response:
    """Create a contact (201), or replace the one with the same ``external_id`` (200); 409 when the tenant holds as many
    contacts in the key's mode as ``TIDINGS_MAX_CONTACTS_PER_TENANT`` allows (replacing one still works)."""
    policy, principal = policy_of(request), caller(request)
    fields = contact_fields(policy, await read_json(request))
    limit = request.app[SETTINGS].max_contacts_per_tenant
    try:
        saved = await request.app[STORE].save_contact(principal.tenant, principal.mode, fields, new_id=ids.new_id(ids.CONTACT), limit=limit)
    except ContactLimitError:
        message = f"The tenant already holds {limit} contacts in this mode, the most it may; delete some first."
        raise ConflictError(message, code="contact_limit_reached") from None
    return json_response(await _view(request, saved.contact), 201 if saved.created else 200)


@routes.get("/api/v1/contacts/{contact_id}")
async def get_contact(request: web.Request) -> web.Response:
    return json_response(await _view(request, await _found(request)))


@routes.get("/api/v1/contacts")
async def list_contacts(request: web.Request) -> web.Response:
    """The contacts of the key's mode, newest first, a page at a time; ``?external_id=`` finds the one that has it."""
    principal, query = caller(request), request.query
    limit = page_limit(query.get("limit"))
    try:
        page = await request.app[STORE].list_contacts(
            principal.tenant, principal.mode, external_id=query.get("external_id") or None, limit=limit, cursor=query.get("cursor") or None
        )
    except InvalidCursorError:
        raise bad_cursor() from None
    opt_outs = await _opt_outs(request, page.items)
    items = [contact_view(contact, [entry for entry in opt_outs if entry.address in _lowered(contact)]) for contact in page.items]
    return json_response({"items": items, "next_cursor": page.next_cursor})


@routes.patch("/api/v1/contacts/{contact_id}")
async def patch_contact(request: web.Request) -> web.Response:
    """Change some fields (JSON merge patch: null removes one); the result is checked as a whole, as a POST is."""
    policy, principal, store = policy_of(request), caller(request), request.app[STORE]
    patch = await read_json(request)
    for _ in range(PATCH_TRIES):
        contact = await _found(request)
        fields = contact_fields(policy, merge_patch(document(contact.fields), patch))
        try:
            updated = await store.update_contact(principal.tenant, principal.mode, contact.id, fields, version=contact.version)
        except StaleContactError:
            continue
        except ExternalIdTakenError:
            message = "another contact has this external_id"
            raise ConflictError(f"Another contact already has external_id {fields.external_id!r}.", code="external_id_taken",
                                details=[ErrorDetail("external_id", message, "external_id_taken")]) from None
        if updated is None:
            raise _not_found(contact.id)
        return json_response(await _view(request, updated))
    raise ConflictError("The contact kept changing while this change was made; send it again.", code="contact_changed")


@routes.delete("/api/v1/contacts/{contact_id}")
async def delete_contact(request: web.Request) -> web.Response:
    """Forget the contact and erase its addresses from the notifications that hold them; 204 once they are erased."""
    principal, contact_id = caller(request), request.match_info["contact_id"]
    erasure = None
    if ids.has_prefix(contact_id, ids.CONTACT):
        erasure = await request.app[STORE].delete_contact(principal.tenant, principal.mode, contact_id)
    if erasure is None:
        raise _not_found(contact_id)
    await request.app[ERASER].erase(erasure)
    return web.Response(status=204)


def contact_fields(policy: PolicySet, body: Mapping[str, Any]) -> ContactFields:
    """A request's contact as fields to store; a ValidationError listing every problem otherwise (nothing is written)."""
    parsed: ContactBody = parse_model(ContactBody, dict(body))
    problems: list[ErrorDetail] = []
    addresses = _addresses(policy, parsed.model_extra or {}, problems)
    for name in parsed.preferences.channels:
        if policy.channels.get(name) is None:
            known = ", ".join(sorted(policy.channels.specs))
            problems.append(ErrorDetail(f"preferences.channels.{name}", f"unknown channel (known: {known})", "unknown_channel"))
    for name, value in parsed.metadata.items():
        if isinstance(value, str) and len(value) > MAX_METADATA_TEXT:
            problems.append(ErrorDetail(f"metadata.{name}", f"must be at most {MAX_METADATA_TEXT} characters", "validation_failed"))
    if parsed.timezone is not None and not _is_time_zone(parsed.timezone):
        problems.append(ErrorDetail("timezone", "must be an IANA time zone such as Europe/Lisbon", "invalid_timezone"))
    if problems:
        raise ValidationError.from_details(problems, "The contact is not valid.")
    return ContactFields(
        external_id=parsed.external_id, addresses=addresses, locale=parsed.locale, timezone=parsed.timezone,
        channels=parsed.preferences.channels, categories=parsed.preferences.categories, metadata=parsed.metadata,
    )


def _addresses(policy: PolicySet, given: Mapping[str, Any], problems: list[ErrorDetail]) -> dict[str, str]:
    """The address fields, checked as a send's recipient is: known recipient fields, each a valid address."""
    known = policy.channels.recipient_fields
    addresses: dict[str, str] = {}
    for name, value in given.items():
        if name not in known:
            fields = ", ".join(sorted(known))
            problems.append(ErrorDetail(name, f"unknown field (contact fields, and the recipient fields: {fields})", "unknown_field"))
        elif value is None:
            continue  # what a merge patch leaves of a removed address
        elif isinstance(value, bool) or not isinstance(value, str | int):
            problems.append(ErrorDetail(name, "must be a string", "invalid_recipient"))
        elif why := check_recipient_field(name, str(value)):
            problems.append(ErrorDetail(name, why, "invalid_recipient"))
        else:
            addresses[name] = str(value)
    return addresses


def _is_time_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def document(fields: ContactFields) -> dict[str, Any]:
    """The contact as a client wrote it (what a merge patch applies to); fields unset are absent."""
    doc: dict[str, Any] = {
        "external_id": fields.external_id, **fields.addresses, "locale": fields.locale, "timezone": fields.timezone,
        "preferences": {"channels": dict(fields.channels), "categories": dict(fields.categories)}, "metadata": dict(fields.metadata),
    }
    return {name: value for name, value in doc.items() if value is not None}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: an object patch merges field by field, null removes a field, anything else replaces the target."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = merge_patch(merged.get(name), value)
    return merged


async def _found(request: web.Request) -> Contact:
    principal, contact_id = caller(request), request.match_info["contact_id"]
    contact = None
    if ids.has_prefix(contact_id, ids.CONTACT):
        contact = await request.app[STORE].get_contact(principal.tenant, principal.mode, contact_id)
    if contact is None:
        raise _not_found(contact_id)
    return contact


def _not_found(contact_id: str) -> NotFoundError:
    return NotFoundError(f"No contact {contact_id!r}.", code="contact_not_found")


async def _view(request: web.Request, contact: Contact) -> dict[str, Any]:
    return contact_view(contact, await _opt_outs(request, [contact]))


async def _opt_outs(request: web.Request, contacts: Sequence[Contact]) -> list[OptOutEntry]:
    """The legal opt-outs of these contacts' addresses on the channels they address, in one read."""
    policy, principal = policy_of(request), caller(request)
    targets = {
        (spec.name, address) for contact in contacts for spec in policy.channels if (address := address_for(spec, contact.fields.addresses))
    }
    return await request.app[STORE].opt_outs_of(principal.tenant, targets) if targets else []


def _lowered(contact: Contact) -> set[str]:
    """The contact's addresses as opt-outs keep them (email addresses in lower case: compare in both forms)."""
    return {form for address in contact.fields.addresses.values() for form in (address, address.lower())}

