"""The store as the engine and the HTTP layer see it: the contract every backend of it implements.

Every write below is atomic: all of it is durable when the call returns, or none of it is.
Every read sees every write that returned before the read began, and reads one consistent
state from start to end. Times are epoch seconds from :attr:`Store.clock`. Lists are newest
first unless a method says otherwise, and page by opaque cursors: a cursor the store did not
hand out for that list raises :class:`InvalidCursorError`; a cursor stays valid while new
items arrive. A tenant never reads or changes another tenant's data: a method given a tenant
answers as if the others' data did not exist.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

from gateway.clock import Clock
from gateway.store import records, stored


class InvalidCursorError(ValueError):
    """A pagination cursor this store did not hand out for the list it was given to."""


class StorageUnavailableError(Exception):
    """The storage refused a write (disk full, I/O error, read-only, locked too long): none of it was kept; ask again later."""


class ExternalIdTakenError(ValueError):
    """Another contact of the tenant, in that mode, already has the ``external_id`` a change would give this one."""


class ContactLimitError(Exception):
    """The tenant already holds as many contacts in that mode as it may: a new one is not kept (replacing one still is)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the tenant holds {limit} contacts in this mode, the most it may")
        self.limit = limit


class StaleContactError(Exception):
    """The contact changed since the version a change was made from: read it again and redo the change."""


class Store(Protocol):
    """Notifications and their deliveries, attempts, history, callbacks, opt-outs, event webhooks and quota usage."""

    # Lifetime and commits

    @property
    def clock(self) -> Clock:
        """The clock the store stamps its writes with; callers stamping values for it use the same one."""

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` has run and :meth:`close` has not."""

    @property
    def commits(self) -> int:
        """How many writes that changed something have become durable since :meth:`open`; a count for :meth:`wait_for_commit`."""

    async def open(self) -> None:
        """Make the store ready, creating or upgrading what it keeps; raise ``StoreInUseError`` if another process has it."""

    async def close(self) -> None:
        """Finish the writes already asked for, then let go of everything; calling it again does nothing."""

    async def wait_for_commit(self, after: int) -> None:
        """Return once :attr:`commits` has passed ``after``: some write became durable since that count was read."""

    @property
    def history_seq(self) -> int:
        """The ``seq`` of the newest line of history (event or not) that is durable; it never goes back."""

    async def wait_for_history(self, after: int) -> None:
        """Return once :attr:`history_seq` has passed ``after``: a line of history, so maybe an event, became durable."""

    def is_transient(self, error: BaseException) -> bool:
        """Whether a write that raised ``error`` may succeed if asked again (busy, unavailable), rather than being refused."""

    @property
    def writable(self) -> bool:
        """False from a write the storage refused (:class:`StorageUnavailableError`) until a write is kept again."""

    async def probe_writes(self) -> bool:
        """Make a small write that needs new space, kept nowhere; whether the storage took it (and so :attr:`writable`)."""

    # Accepting notifications, and the outbox of their deliveries

    async def find_response(self, tenant: str, mode: str, key: str) -> records.StoredResponse | None:
        """What the tenant's earlier request in ``mode`` with idempotency ``key`` answered; None if none used the key in that mode."""

    async def purge_idempotency_keys(self, before: float) -> int:
        """Forget idempotency records made before ``before``; how many went. A key used again after that is a new request."""

    async def accept(
        self, notifications: Sequence[records.NewNotification], *, tenant: str, idempotency: records.IdempotencyClaim | None, status: int,
        body: bytes, quota: records.QuotaCharge | None = None,
    ) -> records.Acceptance:
        """Keep the notifications, their deliveries, their history, the answer (``status``, ``body``) and the quota spent at once.

        With an idempotency claim whose key the tenant already used in the claim's mode, nothing is written: the
        first answer comes back as ``replayed``, saying whether the fingerprints match (and ``quota`` is not spent).
        Deliveries start queued at ``send_at`` (or now); with strategy ``fallback`` only the
        first channel does, the others wait their turn.

        ``quota`` (see :class:`~gateway.store.records.QuotaCharge`) adds its count to the
        tenant's count of its mode and day, and writes a ``quota.threshold`` event for each of
        its thresholds that the new count reaches and that has not fired that day: the decision
        is made on the stored count, in this transaction, so each fires exactly once per
        tenant, mode and day even when several processes accept for one tenant. The rate
        level is stored as given (the last acceptance's). Counts only ever add up; a store
        shared by several replicas keeps their sum.
        """

    async def quota_usage(self) -> list[records.QuotaUsage]:
        """Every tenant's quota state per mode as last kept by :meth:`accept`: loaded at start so limits survive a restart.

        A replica loads the sum of every replica's counts; it then admits against its own
        copy in memory, so with N replicas a tenant may go over a limit by what the others
        accepted since this one started (the thresholds still fire once, see :meth:`accept`).
        """

    async def claim_due(
        self, channel: str, *, limit: int, owner: str, lease_seconds: float, holding: Collection[str] = (),
        mode: str | None = None, after_tenant: str | None = None, paused: Collection[str] = (),
    ) -> list[records.ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries of ``channel`` to ``owner`` for ``lease_seconds``, tenants taking turns.

        A delivery is due when it is queued and its time has come, or when its lease ran out
        (``reclaimed``), except those in ``holding``: the owner's sends whose outcomes are on
        their way. Only deliveries of ``mode`` (either when None), and none of the ``paused``
        tenants' (suspended: they stay queued, untouched). Tenants with due work give one
        delivery each per turn, in name order starting after ``after_tenant`` (the last tenant
        the claimer was given), each its highest priority first, then its longest due; the
        claims come back in that order. Each claim counts an attempt. Waiting fallbacks whose
        time ran out are queued first; deliveries past ``expires_at`` are dead-lettered
        instead of claimed. Two owners never hold the same delivery at once.
        """

    async def release(self, delivery_ids: Iterable[str], owner: str) -> None:
        """Give back ``owner``'s leases without an attempt (a shutdown): due again at once, the claim uncounted."""

    async def hold(self, delivery_ids: Sequence[str], owner: str, reason: str) -> None:
        """Give back ``owner``'s leases of deliveries held unsent (their tenant was suspended), as :meth:`release` does, each with a ``held`` line of history."""

    async def record_outcomes(
        self, results: Sequence[records.AttemptResult], receipts: Sequence[records.ReceivedStatus], events: Sequence[records.NewEvent] = ()
    ) -> set[str]:
        """Record attempt results, then provider receipts, then events, at once; the tenants whose opt-outs changed.

        A delivery's status only moves forward (a late or repeated receipt changes nothing);
        a failure with a fallback left starts the next channel, one without becomes a dead
        letter. A receipt for a message not known yet is held until its send is recorded.
        A send refused as opted out records the opt-out. Every move is a history entry, and
        the events it tells tenants about are written with it.
        """

    # Reading notifications

    async def get_notification(self, tenant: str, notification_id: str, *, mode: str | None = None) -> stored.Notification | None:
        """The tenant's notification with its deliveries, their attempts and its history, all as of one moment; None if unknown.

        With ``mode``, only a notification of that mode (``live`` or ``test``) is found.
        """

    async def list_notifications(
        self, tenant: str, where: records.NotificationFilter, *, limit: int, cursor: str | None
    ) -> records.Page[stored.Notification]:
        """The tenant's notifications matching ``where``, with their deliveries (no attempts or history), ``limit`` a page."""

    # Business events, what routes make of them, digests, acknowledgements

    async def accept_business_event(self, event: records.NewBusinessEvent) -> bool:
        """Keep a new event to be processed; False (nothing written) when the tenant used its id in that mode before."""

    async def claim_business_events(
        self, *, limit: int, owner: str, lease_seconds: float, after: tuple[str, str] | None = None
    ) -> list[stored.BusinessEvent]:
        """Claim up to ``limit`` events kept but not processed yet for ``owner``, fairly across tenants and modes.

        Events come by lane, a lane being a (tenant, mode) pair: each lane with pending events
        gives its oldest one per turn, lanes in (tenant, mode) order starting after ``after``
        (the lane of the last event the caller's previous claim returned, which the caller
        carries from claim to claim). So a lane's backlog, however long, delays another lane's
        event by at most one claim, or by as many claims as it takes to go round the lanes
        when there are more lanes than ``limit``. A tenant's test traffic is a lane apart from
        its live traffic. Finding the lanes and reading a lane costs what is taken, never a
        scan of every pending event.

        Claimed events are the owner's for ``lease_seconds``, or until they are recorded
        (:meth:`record_event_processing`): another owner's claim leaves them out, the owner's own
        claim returns them again. So several workers, in one process or several, can share the
        pending events: a store that several processes use keeps the claim in the rows (taken
        ``FOR UPDATE SKIP LOCKED``, with a lease column); one that a single process holds may
        keep it in memory, since its claims cannot outlive that process. A lease that runs out
        (its worker died or stalled) makes the events claimable again; recording is what makes
        processing happen once, not the claim.
        """

    async def record_event_processing(self, batch: Sequence[records.EventProcessing]) -> list[records.EventRecorded]:
        """Commit what processing each event of ``batch`` decided, all at once: their notifications, each candidate's
        outcome, their processed marks; what was kept for each event, in ``batch``'s order.

        Before that, a candidate with a ``fingerprint`` held by an acknowledgement (until the
        event's arrival) is suppressed as ``acknowledged_repeat``; one with a ``dedupe_window``
        whose fingerprint was seen on the route inside the window (by an earlier event of the
        batch too) is ``deduplicated`` (naming the first event), and otherwise starts the
        window. A digest candidate joins the open digest of its route and recipient, or opens
        one. The quota ``processing.quota`` takes is kept for the notifications actually made
        (its count trimmed to them), with the threshold events it reaches, as an acceptance's
        is. An event already processed (by another worker whose lease ran out meanwhile)
        changes nothing. Each result gives the channels of the notifications kept and how many
        were made. Recorded events are no longer claimed.
        """

    async def get_business_event(self, tenant: str, mode: str, event_id: str) -> stored.BusinessEvent | None:
        """The tenant's event of that id in ``mode`` with its outcomes (their notifications' statuses now); None if none."""

    async def list_business_events(
        self, tenant: str, where: records.EventFilter, *, limit: int, cursor: str | None
    ) -> records.Page[stored.BusinessEvent]:
        """The tenant's events matching ``where``, newest first, without outcomes, ``limit`` a page."""

    async def next_digest_due(self) -> float | None:
        """When the next open digest is due; None when no digest is open."""

    async def claim_due_digests(self, *, limit: int, owner: str, lease_seconds: float, after: tuple[str, str] | None = None) -> list[records.DueDigest]:
        """Claim up to ``limit`` open digests due by now for ``owner``, with their events' variables in arrival order.

        Lanes and turns as :meth:`claim_business_events` (each lane's oldest due first), so one
        tenant's thousands of digests falling due at once delay another's by one claim at most;
        claims and leases likewise, until :meth:`record_digests` settles them.
        """

    async def record_digests(self, results: Sequence[records.DigestResult]) -> set[str]:
        """Settle due digests at once, each with its notification (sent) or why it could not be made (failed); a digest
        settles once (its claim with it), and the quota a sent one's ``quota`` takes is kept with it. Returns the channels
        of the notifications kept."""

    async def purge_business_events(self, tenant: str, before: float, *, limit: int) -> int:
        """Forget up to ``limit`` of the tenant's processed events received before ``before`` (with their outcomes), and
        digests settled before it; how many went. Events still to be processed stay."""

    async def purge_event_windows(self, before: float) -> int:
        """Forget dedupe windows and repeat holds that ended before ``before``; how many went."""

    async def acknowledge(self, request: records.AcknowledgeRequest) -> tuple[stored.Acknowledgement, bool] | None:
        """Acknowledge a notification of the tenant in the request's mode; None if there is none.

        At once: who, when and the note; a line of history told as ``message.acknowledged``; its
        deliveries still waiting their fallback turn skipped; and, for a notification a route
        made with a fingerprint, repeats of it on that route held for ``repeat_after``. A
        notification acknowledged before keeps its first acknowledgement and nothing is
        written: the answer says whether this call recorded it.
        """

    # Dead letters

    async def list_dead_letters(
        self, tenant: str, where: records.DeadLetterFilter, *, limit: int, cursor: str | None
    ) -> records.Page[stored.DeadLetter]:
        """The tenant's dead-lettered deliveries matching ``where``, newest delivery first, ``limit`` a page."""

    async def replay(
        self, tenant: str, *, delivery_ids: Sequence[str] | None = None, where: records.DeadLetterFilter | None = None,
        actor: str, limit: int = 10_000, mode: str | None = None,
    ) -> records.Replayed:
        """Queue dead letters again now, by id or the oldest ``limit`` matching ``where``, with a fresh retry schedule.

        The one backward move a delivery makes, entered in the history with ``actor``; its
        expiry is lifted. Ids that are not the tenant's (or, with ``mode``, not of that mode) are
        ignored; those that are but are not dead-lettered are named in ``not_dead_lettered``.
        """

    # Monitoring: what metrics and the log read, cheaply, from indexes

    async def queue_depths(self) -> list[records.QueueDepth]:
        """Per channel with deliveries queued or sending: how many, and when the longest-waiting due one became due.

        Read at each metrics scrape: it walks the index of due work, never the deliveries table.
        """

    async def dead_lettered_after(self, seq: int, *, through: int, limit: int) -> list[records.DeadLettered]:
        """Deliveries that became dead letters in the lines of history after ``seq`` up to ``through``, oldest first, ``limit`` at most.

        Every path that dead-letters (retries exhausted, refused for good, expired) writes such a
        line, so a reader that follows the history sees each dead letter once, after it committed.
        """

    # Provider callbacks, replies and opt-outs

    async def store_inbound(self, callbacks: Sequence[records.InboundRecord]) -> None:
        """Keep verified callbacks as they arrived, to be processed, in one write."""

    async def store_refused(self, refused: records.RefusedCallback, *, keep: int) -> None:
        """Keep the summary of a callback that failed verification; of those, only the newest ``keep`` stay."""

    async def get_refused(self, request_id: str) -> records.RefusedCallback | None:
        """One refused callback's summary; None if it is not (or no longer) kept."""

    async def pending_inbound(self) -> list[records.InboundRecord]:
        """Callbacks kept but not processed nor rejected yet, oldest first."""

    async def reject_inbound(self, request_id: str, reason: str) -> None:
        """Mark a kept callback refused, for ``reason``."""

    async def record_inbound(
        self, processed: Sequence[str], replies: Sequence[records.NewReply], opt_outs: Sequence[records.NewOptOut] = (), *,
        receipts: Sequence[records.ReceivedStatus] = (), rejected: Sequence[tuple[str, str]] = (),
    ) -> set[str]:
        """What callbacks said, and that they were read, at once: reconcile ``receipts``, keep replies (each once,
        with its event), apply opt-outs and opt-ins, mark ``processed`` callbacks processed and ``rejected`` ones
        (id, reason) rejected.

        Receipts are reconciled as :meth:`record_outcomes` does. A reply or opt-out goes to the
        tenant whose delivery it answers, else to those of its ``tenants`` that sent to the
        address through the instance. Returns the tenants whose opt-outs changed.
        """

    async def purge_inbound(self, before: float) -> int:
        """Forget callbacks (kept or refused) received before ``before``, and receipts held as long; how many callbacks went."""

    async def list_replies(
        self, tenant: str, *, channel: str | None = None, sender: str | None = None, limit: int = 100, cursor: str | None = None,
        mode: str | None = None,
    ) -> records.Page[stored.Reply]:
        """The tenant's replies, filtered by channel and sender, ``limit`` a page.

        A reply's mode is that of the message it answers; one that answers none is ``live``.
        """

    async def list_opt_outs(
        self, tenant: str, *, channel: str | None = None, address: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> records.Page[stored.OptOutEntry]:
        """The tenant's opt-outs in order of address then channel, filtered, ``limit`` a page."""

    async def add_opt_out(self, tenant: str, channel: str, address: str, source: str) -> bool:
        """Record that ``address`` opted out of the tenant's ``channel``, with its event; False if it already had."""

    async def tenants_with_opt_outs(self) -> set[str]:
        """The tenants with at least one opt-out."""

    async def opted_out(self, tenant: str, targets: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those (channel, address) pairs of ``targets`` that opted out of the tenant (email addresses in any case)."""

    # Contacts

    async def save_contact(
        self, tenant: str, mode: str, fields: records.ContactFields, *, new_id: str, limit: int
    ) -> stored.ContactSaved:
        """Create a contact of the tenant in ``mode`` with id ``new_id``; or, when ``fields.external_id`` is the external id of
        one it has, replace that one's fields (its id and creation time stay).

        Raises :class:`ContactLimitError`, keeping nothing, when creating it would take the
        tenant's contacts in ``mode`` past ``limit`` (checked in the write, so two creations at
        once cannot both pass).
        """

    async def update_contact(self, tenant: str, mode: str, contact_id: str, fields: records.ContactFields, *, version: int) -> stored.Contact | None:
        """Replace the fields of the contact, if it is still at ``version``; None if the tenant has no such contact in ``mode``.

        Raises :class:`StaleContactError` when it changed since, :class:`ExternalIdTakenError`
        when another contact has the new ``external_id``.
        """

    async def get_contact(self, tenant: str, mode: str, contact_id: str) -> stored.Contact | None:
        """The tenant's contact in ``mode``; None if unknown (or another tenant's, or the other mode's)."""

    async def find_contacts(
        self, tenant: str, mode: str, *, contact_ids: Collection[str] = (), external_ids: Collection[str] = ()
    ) -> list[stored.Contact]:
        """The tenant's contacts in ``mode`` among those ids and external ids, in one read; unknown ones are left out."""

    async def list_contacts(
        self, tenant: str, mode: str, *, external_id: str | None = None, limit: int, cursor: str | None
    ) -> records.Page[stored.Contact]:
        """The tenant's contacts in ``mode`` (with ``external_id``, the one that has it), newest first, ``limit`` a page."""

    async def delete_contact(self, tenant: str, mode: str, contact_id: str) -> records.Erasure | None:
        """Forget the contact and note its addresses for erasure, at once; None if the tenant has no such contact in ``mode``."""

    async def erase_contact_batch(self, erasure: records.Erasure, *, limit: int) -> int:
        """Replace the erasure's addresses by :data:`~gateway.store.records.ERASED` in up to ``limit`` of its tenant's notifications of its mode: one small write.

        In their recipient, metadata, deliveries, rendered content and history; a delivery not
        sent yet is skipped (``contact_deleted``). Statuses, times and lines of history stay.
        Returns how many notifications it changed; 0 means none is left: then the senders of
        the replies those addresses sent (to messages of its mode) are erased too, and the
        erasure is marked done. Opt-outs are kept (they are the law's, not the contact's).
        """

    async def pending_erasures(self) -> list[records.Erasure]:
        """Erasures not finished (the process stopped mid-way), oldest first."""

    async def opt_outs_of(self, tenant: str, targets: Iterable[tuple[str, str]]) -> list[stored.OptOutEntry]:
        """The tenant's opt-outs among these (channel, address) pairs (email addresses in any case), by address then channel."""

    # Retention

    async def purge_notifications(self, tenant: str, before: float, *, limit: int, after: str | None = None) -> records.PurgedBatch:
        """Forget some of the tenant's notifications made and last changed before ``before``: one small write.

        Looks at up to ``limit`` of them, oldest first, from after the id ``after``. Of those, a
        notification goes only when it is finished (no delivery queued, sending or waiting) and
        none of its events is still to be fanned out or sent to an endpoint; it goes with its
        deliveries, attempts, history and its events' webhook deliveries. Says how many went
        and where the next batch starts (None: no more to look at).
        """

    async def purge_history_lines(self, tenant: str | None, before: float, *, limit: int) -> int:
        """Forget up to ``limit`` of the tenant's history lines about no notification made before ``before``; how many went.

        ``tenant`` None: lines of no tenant (from older versions). A line whose event is still to
        be fanned out or sent to an endpoint stays; its webhook deliveries that are done go with it.
        """

    async def reclaim_space(self, *, pages: int) -> int:
        """Give up to ``pages`` of the storage's free pages back to the file system; how many it gave (0 where it has no such thing)."""

    # Event webhooks

    async def events_to_fan_out(self, *, after: int | None = None, limit: int) -> list[records.EventHead]:
        """Up to ``limit`` events after ``seq`` ``after`` (None: after the stored fan-out cursor), in ``seq`` order;
        reading them changes nothing."""

    async def fan_out_cursor(self) -> int:
        """The ``seq`` through which events are fanned out, as stored."""

    async def keep_fan_out_cursor(self, through_seq: int) -> int:
        """Mark events through ``through_seq`` fanned out with no delivery added; the cursor as now stored. It never
        moves back, and a call that would not move it changes nothing."""

    async def disabled_webhook_endpoints(self) -> dict[tuple[str, str], str]:
        """(tenant, endpoint) of every disabled endpoint → the url it had when disabled."""

    async def fan_out(self, targets: Sequence[records.WebhookTarget], through_seq: int) -> None:
        """Add one webhook delivery per target (once, however often asked) and mark events through ``through_seq`` fanned out, at once."""

    async def next_webhook_due(self) -> float | None:
        """When the next delivery of any endpoint is due: the oldest pending one of each endpoint counts (the rest wait
        behind it), a lease as not due before it ends; None if none is pending."""

    async def claim_webhooks(
        self, *, limit: int, lease_seconds: float, per_endpoint: int = 20, busy: Collection[tuple[str, str]] = ()
    ) -> list[records.ClaimedWebhook]:
        """Lease due webhook deliveries for ``lease_seconds``, each with its event: per (tenant, endpoint) the oldest
        pending ones in creation order, up to ``per_endpoint`` and up to the first that is not due or already leased,
        none for ``busy`` endpoints; endpoints with the oldest events first, ``limit`` in all.

        Each claim counts an attempt.
        """

    async def claim_lane_webhooks(
        self, tenant: str, endpoint: str, *, held: Collection[str], limit: int, lease_seconds: float
    ) -> list[records.ClaimedWebhook]:
        """For the lane of (tenant, endpoint) that holds ``held`` (leased by it, outcomes not recorded yet): lease the
        endpoint's next deliveries as :meth:`claim_webhooks` would once those were recorded — in creation order, passing
        over ``held``, up to ``limit`` and up to the first that is not due or is leased by anyone else."""

    async def record_webhooks(self, results: Sequence[records.WebhookResult]) -> None:
        """Record attempts' outcomes and each endpoint's health, at once.

        An endpoint that answered ``disabled`` (410), or failed without a success for its
        ``disable_after``, is disabled: its pending deliveries are held as ``disabled``.
        """

    async def release_webhooks(self, delivery_ids: Iterable[str]) -> None:
        """Give back leases of sends cut short (a shutdown): due again at once, the claim uncounted; recorded ones untouched."""

    async def webhook_endpoint_states(self, tenant: str) -> dict[str, records.WebhookEndpointState]:
        """The tenant's endpoints the store knows anything about, by name: health and any disabling."""

    async def enable_webhook_endpoint(self, tenant: str, endpoint: str) -> int:
        """Lift an endpoint's disabling and its failing period, and queue what it held again now; how many were queued."""

    async def list_webhook_deliveries(
        self, tenant: str, *, status: str | None = None, endpoint: str | None = None, limit: int = 100, cursor: str | None = None,
        mode: str | None = None,
    ) -> records.Page[stored.WebhookDelivery]:
        """The tenant's webhook deliveries, filtered by status, endpoint and mode, ``limit`` a page.

        A webhook delivery's mode is that of the message its event is about; other events (opt-outs, replies, circuits) are ``live``.
        """

    async def webhook_delivery_status(self, tenant: str, delivery_id: str, *, mode: str | None = None) -> str | None:
        """The status of one of the tenant's webhook deliveries (of ``mode``, when given); None if the tenant has no such delivery."""

    async def replay_webhooks(
        self, tenant: str, *, delivery_ids: Sequence[str] | None = None, endpoint: str | None = None, since: float | None = None,
        mode: str | None = None,
    ) -> list[str]:
        """Queue dead or disabled webhook deliveries again now with a fresh schedule, oldest event first; their ids.

        By ids, or all of ``endpoint`` created at or after ``since`` (all time when None).
        Replaying an endpoint's deliveries lifts its disabling.
        """
