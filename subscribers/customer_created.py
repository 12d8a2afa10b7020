"""``customer.created`` / ``customer.updated``: open the customer's accounts, record the
customer's groups (``group_ids``, as of the event's ``occurred_at``) and credit the welcome
bonus (``customer.created`` only) when an earn rule gives one (``dust.ledger.rules``).

:func:`handle` applies one event; :func:`prepare_many` a run of them set-based (the
inbox's batches, ``subscribers.BULK_SUBSCRIBERS``) with the same rows and outcomes."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy.orm import Session

from dust.ledger import rules
from dust.ledger.accounts import ensure_account, open_accounts
from dust.models.tables import DUST, STORE_CREDIT
from dust.subscribers.base import (
    Context,
    Envelope,
    Identifier,
    Outcome,
    Payload,
    Prepared,
    Touches,
    parse,
    valid,
    validation_context,
)


class CustomerPayload(Payload):
    id: Identifier
    email: str | None = None
    #: The customer's groups; absent or null: unchanged (nothing recorded).
    group_ids: list[Identifier] | None = None


def handle(session: Session, envelope: Envelope, context: Context) -> Outcome:
    customer = parse(CustomerPayload, envelope.data, context)
    ensure_account(session, customer.id, DUST)
    if context.default_currency:
        ensure_account(session, customer.id, STORE_CREDIT, context.default_currency)
    outcome = Outcome()
    if customer.group_ids is not None:
        changed = rules.record_groups(
            session,
            customer.id,
            customer.group_ids,
            envelope.occurred_at,
            envelope.id,
            context.policy,
        )
        if changed:
            outcome.detail["regrouped_orders"] = changed
    if envelope.name == "customer.created":
        bonus = rules.credit_welcome(
            session, customer.id, envelope.occurred_at, envelope.id, context.policy
        )
        if bonus:
            outcome.detail["welcome_bonus"] = bonus
    return outcome


def prepare_many(session: Session, envelopes: list[Envelope], context: Context) -> Prepared | None:
    """The first events of ``envelopes`` (all of one name) applied together: every
    customer's accounts opened in one statement, the group records in one, the welcome
    bonuses as one ``journal.credit_many`` (``rules.credit_welcomes``). Taken while each is
    valid, names a customer not seen earlier in the run, and records no groups while a
    group rule exists (a group record may then derive placed orders again: :func:`handle`
    does that). The others are left to :func:`handle`. None when the first is not taken."""
    book = rules.load(session)
    taken: list[tuple[CustomerPayload, Envelope]] = []
    seen: set[str] = set()
    for envelope in envelopes:
        try:
            customer = CustomerPayload.model_validate(
                envelope.data, context=validation_context(context)
            )
        except ValidationError:
            break  # handle() rejects it with the reason
        if customer.id in seen or (customer.group_ids is not None and book.has_group_rules):
            break
        seen.add(customer.id)
        taken.append((customer, envelope))
    if not taken:
        return None

    def apply(session: Session) -> bool:
        open_accounts(session, [c.id for c, _ in taken], context.default_currency)
        rules.record_groups_many(
            session,
            [
                rules.GroupRecord(c.id, c.group_ids, e.occurred_at, e.id)
                for c, e in taken
                if c.group_ids is not None
            ],
        )
        bonuses = rules.credit_welcomes(
            session,
            [
                rules.Welcome(c.id, e.occurred_at, e.id)
                for c, e in taken
                if e.name == "customer.created"
            ],
            context.policy,
        )
        for outcome, (customer, _) in zip(outcomes, taken, strict=True):
            if bonuses.get(customer.id):
                outcome.detail["welcome_bonus"] = bonuses[customer.id]
        return True

    # Filled in by apply (the bonuses depend on the entries found under the accounts' locks);
    # the inbox reads them once apply has returned.
    outcomes = [Outcome() for _ in taken]
    return Prepared(outcomes, apply)


def touched(envelope: Envelope, context: Context) -> Touches | None:
    payload = valid(CustomerPayload, envelope, context)
    return None if payload is None else Touches(customer_id=payload.id)
