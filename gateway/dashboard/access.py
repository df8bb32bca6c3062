"""Who is looking at the dashboard, and what they may see and do.

A tenant's API key shows that tenant only, in the key's own mode (a test key its test
traffic, a live key its live traffic), and may replay its dead letters as the API lets it. An
operator key (policy ``operators:``) shows every tenant, live and test, and its role decides
what it may do: a ``viewer`` reads, an ``operator`` also replays dead letters, an ``admin``
also reloads the policy. Each is checked on the server for every request: a button left out
of a page is a courtesy, the refusal is the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.dashboard.sessions import Session
from gateway.errors import ForbiddenError, NotFoundError
from gateway.http.paging import bad_parameter
from gateway.policy.keys import Operator, Principal, find_operator, find_principal
from gateway.policy.view import PolicySet

TENANT_ROLE: Final = "tenant"
MODES: Final = ("live", "test")


@dataclass(frozen=True, slots=True)
class Visitor:
    """The person signed in: through a tenant's key (``principal``) or an operator's (``operator``), never both."""

    principal: Principal | None = None
    operator: Operator | None = None

    @property
    def name(self) -> str:
        """How the page names them: the operator's name, or the key's name (else its prefix) and tenant."""
        if self.operator is not None:
            return self.operator.name
        assert self.principal is not None
        return f"{self.principal.label} ({self.principal.tenant})"

    @property
    def role(self) -> str:
        return self.operator.role if self.operator is not None else TENANT_ROLE

    @property
    def actor(self) -> str:
        """Who did it, in a notification's history: ``operator:NAME`` or ``key:PREFIX``, as the API writes a key's."""
        if self.operator is not None:
            return self.operator.actor
        assert self.principal is not None
        return self.principal.actor

    @property
    def fixed_tenant(self) -> str | None:
        """The one tenant a tenant's key sees; None for an operator, who sees them all."""
        return self.principal.tenant if self.principal is not None else None

    @property
    def fixed_mode(self) -> str | None:
        """The one mode a tenant's key sees (its own); None for an operator, who sees both."""
        return self.principal.mode if self.principal is not None else None

    @property
    def may_replay(self) -> bool:
        """A tenant's own key may (the API lets it); an operator from the ``operator`` role up."""
        return self.operator.may("operator") if self.operator is not None else True

    @property
    def may_reload(self) -> bool:
        """Reloading the policy touches every tenant: an admin's alone."""
        return self.operator is not None and self.operator.may("admin")

    @property
    def sees_policy_errors(self) -> bool:
        """A refused policy's errors name every tenant's files and fields: operators see them, tenants only that there were some."""
        return self.operator is not None

    def require_replay(self) -> None:
        if not self.may_replay:
            raise ForbiddenError(f"The {self.role} role cannot replay dead letters; the operator role can.", code="role_forbidden")

    def require_reload(self) -> None:
        if not self.may_reload:
            raise ForbiddenError(f"The {self.role} role cannot reload the policy; the admin role can.", code="role_forbidden")

    def tenants(self, policy: PolicySet) -> Sequence[str]:
        """The tenants this visitor may pick from: their own, or every tenant in policy."""
        fixed = self.fixed_tenant
        return (fixed,) if fixed is not None else tuple(sorted(policy.document.tenants))

    def tenant(self, policy: PolicySet, asked: str | None) -> str | None:
        """The tenant a page shows: ``asked`` if this visitor may see it (404 otherwise, as for any id not theirs), else the first.

        None only for an operator while the policy has no tenants.
        """
        choices = self.tenants(policy)
        if asked:
            if asked not in choices:
                raise NotFoundError(f"No tenant {asked!r}.", code="tenant_not_found")
            return asked
        return choices[0] if choices else None

    def mode(self, asked: str | None) -> str | None:
        """The mode a page shows: a tenant key's own; an operator's choice (``live``, ``test``, or both when not given)."""
        fixed = self.fixed_mode
        if fixed is not None:
            return fixed
        if asked and asked not in MODES:
            raise bad_parameter("mode", "must be live or test")
        return asked or None


def visitor_of(session: Session, policy: PolicySet) -> Visitor | None:
    """The visitor a session stands for under ``policy``; None once the key has left it (or its tenant is suspended)."""
    if session.kind == "operator":
        operator = find_operator(policy, session.prefix, session.digest)
        return Visitor(operator=operator) if operator is not None else None
    principal = find_principal(policy, session.prefix, session.digest)
    return Visitor(principal=principal) if principal is not None else None
