"""Naming a contact as a send's recipient: ``{"contact_id": "ctc_…"}`` or ``{"external_id": "u-42"}``, resolved in one read.

Every surface that builds a send (``/send``, ``/bulk``, business events) hands its recipient
maps to the intake, which resolves those that name a contact here before anything is built. A
reference stands alone: a recipient that names a contact and gives addresses too is refused
(``conflicting_recipient``), and so is one naming a contact the tenant does not have in the
key's mode (``contact_not_found``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import ErrorDetail, ValidationError
from gateway.policy.keys import Principal
from gateway.store import Contact, Store

CONTACT_ID: Final = "contact_id"
EXTERNAL_ID: Final = "external_id"
MAX_REFERENCE_LENGTH: Final = 255
CONTACT_NOT_FOUND: Final = "contact_not_found"


@dataclass(frozen=True, slots=True)
class ContactRef:
    """A recipient that names a contact: by which field, and the value."""

    field: str
    value: str


def names_contact(recipient: Mapping[str, Any]) -> bool:
    """Whether ``recipient`` names a contact rather than giving addresses."""
    return CONTACT_ID in recipient or EXTERNAL_ID in recipient


def reference_of(recipient: Mapping[str, Any], path: str) -> ContactRef | None:
    """The contact ``recipient`` names, None when it gives addresses instead; ValidationError when it does both or is malformed."""
    if not names_contact(recipient):
        return None
    field = CONTACT_ID if CONTACT_ID in recipient else EXTERNAL_ID
    if len(recipient) > 1:
        others = ", ".join(sorted(name for name in recipient if name != field))
        message = f"a recipient naming a contact by {field} takes nothing else (got {others}); set addresses on the contact"
        raise ValidationError.from_details([ErrorDetail(f"{path}.{field}", message, "conflicting_recipient")])
    value = recipient[field]
    if not isinstance(value, str) or not 0 < len(value) <= MAX_REFERENCE_LENGTH:
        message = f"must be a string of 1 to {MAX_REFERENCE_LENGTH} characters"
        raise ValidationError.from_details([ErrorDetail(f"{path}.{field}", message, "invalid_recipient")])
    return ContactRef(field, value)


async def resolve(store: Store, principal: Principal, refs: Sequence[ContactRef | None]) -> list[Contact | None]:
    """The contact each reference names (None where there is no reference or no such contact), in one read."""
    wanted = [ref for ref in refs if ref is not None]
    if not wanted:
        return [None] * len(refs)
    found = await store.find_contacts(
        principal.tenant, principal.mode,
        contact_ids={ref.value for ref in wanted if ref.field == CONTACT_ID},
        external_ids={ref.value for ref in wanted if ref.field == EXTERNAL_ID},
    )
    by_id = {contact.id: contact for contact in found}
    by_external = {contact.fields.external_id: contact for contact in found if contact.fields.external_id is not None}
    return [None if ref is None else (by_id if ref.field == CONTACT_ID else by_external).get(ref.value) for ref in refs]


def not_found(ref: ContactRef, path: str) -> ValidationError:
    """The refusal of a reference to a contact the tenant does not have (in this mode)."""
    message = f"no contact with {ref.field} {ref.value!r} (contacts of test keys and live keys are apart)"
    return ValidationError(
        "The recipient names a contact that does not exist.", code=CONTACT_NOT_FOUND,
        details=[ErrorDetail(f"{path}.{ref.field}", message, CONTACT_NOT_FOUND)],
    )
