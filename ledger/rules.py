"""Earn rules: customer-group multipliers, campaigns, welcome bonuses (data, not code).

Which rules an order earns with is a function of stored facts only: the rules, the
order's ``placed_at`` (its ``occurred_at``), its currency, and the customer's groups at that
instant as recorded from ``customer.created`` / ``customer.updated`` (``dust_customer_groups``,
kept by ``occurred_at``). So a replay or a backfill derives the same multipliers, and an
arrival order of events changes nothing:

* an order placed after a group record reads the groups at its ``placed_at``;
* a group record that arrives after orders it precedes in time derives those orders again
  (:func:`record_groups`) and settles the difference (earn more, or claw back).

Both read under the customer's dust-account row lock, taken before the groups (order
placement) or the orders (group record) are read, so two concurrent transactions cannot
each miss the other's row. The account row carries a copy of the customer's latest group
record (``groups_at``, ``groups_event_id``, ``group_ids``), updated by :func:`record_groups`
under that lock: an order placed at or after it takes its groups from the row it has just
locked (in its latest committed version), so the set-based path makes no statement of its
own for the groups; an order placed before it reads the history.

* **Multiplier**: the product of the multipliers of the group-multiplier rules (for a
  group the customer is in) and campaigns in force at ``placed_at`` (``starts_at`` ≤ t <
  ``ends_at``) for the order's currency (or any), capped at ``EarnPolicy.max_multiplier``.
  Earned = ``floor(base × rate × multiplier)``; clawbacks reuse the order's recorded
  multiplier (``dust_orders.earn_multiplier`` / ``earn_rules``).
* **Welcome bonus**: once per customer (entry key ``customer:<id>:welcome``), on
  ``customer.created`` when a welcome rule is in force at its ``occurred_at``.

Rules are inputs: set them before the events they govern are applied (for a backfill,
before the backfill). Adding or ending a rule does not by itself derive recorded orders
again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation, localcontext
from functools import cached_property, lru_cache

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from dust.ledger import journal
from dust.ledger.accounts import IDS, ensure_account, lock_accounts, lock_dust_accounts
from dust.ledger.errors import LedgerError
from dust.ledger.journal import Ref
from dust.ledger.orders import EarnPolicy, lot_expiry, settle_earnings
from dust.models import Account, CustomerGroups, EarnRule, EarnRuleChange, Entry, Order
from dust.models.base import insert_for, utcnow
from dust.models.bulk import insert_rows
from dust.models.tables import DUST

GROUP_MULTIPLIER = "group_multiplier"
CAMPAIGN = "campaign"
WELCOME_BONUS = "welcome_bonus"
KINDS = (GROUP_MULTIPLIER, CAMPAIGN, WELCOME_BONUS)
#: A rule's multiplier: > 0 and at most this.
MAX_RULE_MULTIPLIER = Decimal(100)
#: Largest welcome bonus (as for amounts in events).
MAX_BONUS = 10**15

ONE = Decimal(1)


class InvalidRule(LedgerError):
    """A rule that cannot be added or ended as asked; nothing was changed."""


@dataclass(frozen=True)
class Rule:
    id: int
    kind: str
    group_id: str | None
    multiplier: Decimal | None
    amount: int | None
    currency_code: str | None
    name: str | None
    starts_at: datetime
    ends_at: datetime | None

    def in_force(self, at: datetime) -> bool:
        """Inclusive start, exclusive end."""
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)

    def covers(self, currency_code: str | None) -> bool:
        return self.currency_code is None or self.currency_code == currency_code


@dataclass(frozen=True)
class Earning:
    """The rules an order earns with and their capped product."""

    multiplier: Decimal
    rule_ids: tuple[int, ...]

    @cached_property
    def stored_multiplier(self) -> str | None:
        return None if not self.rule_ids else str(self.multiplier)

    @cached_property
    def stored_rules(self) -> str | None:
        return None if not self.rule_ids else json.dumps(list(self.rule_ids))


NO_RULES = Earning(ONE, ())
NO_GROUPS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RuleBook:
    """Every rule, read once per transaction (the table holds a handful of rows)."""

    rules: tuple[Rule, ...]
    #: Earnings made, by the ids of the rules applied and the cap (each made once).
    _made: dict[tuple[tuple[int, ...], Decimal], Earning] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        # in id order: an earning's rules and the order of its product do not depend on
        # the order the rules were read in
        object.__setattr__(self, "rules", tuple(sorted(self.rules, key=lambda r: r.id)))

    @property
    def has_group_rules(self) -> bool:
        return any(r.kind == GROUP_MULTIPLIER for r in self.rules)

    @cached_property
    def _multipliers(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.kind != WELCOME_BONUS)

    def multiplying(self, at: datetime, currency_code: str | None) -> list[Rule]:
        """The group multipliers and campaigns in force at ``at`` for the currency."""
        return [
            r
            for r in self._multipliers
            if r.starts_at <= at
            and (r.ends_at is None or at < r.ends_at)
            and (r.currency_code is None or r.currency_code == currency_code)
        ]

    def needs_groups(self, at: datetime, currency_code: str | None) -> bool:
        return any(r.kind == GROUP_MULTIPLIER for r in self.multiplying(at, currency_code))

    def earning(
        self,
        at: datetime,
        currency_code: str | None,
        groups: frozenset[str],
        cap: Decimal,
    ) -> Earning:
        return self.earning_of(self.multiplying(at, currency_code), groups, cap)

    def earning_of(self, in_force: list[Rule], groups: frozenset[str], cap: Decimal) -> Earning:
        """The earning of an order under the rules ``in_force`` (:meth:`multiplying`) for a
        customer in ``groups``."""
        applied = tuple(r for r in in_force if r.kind == CAMPAIGN or r.group_id in groups)
        if not applied:
            return NO_RULES
        key = (tuple(r.id for r in applied), cap)  # rules are in id order
        made = self._made.get(key)
        if made is None:
            with localcontext() as exact:
                exact.prec = 100
                product = ONE
                for rule in applied:
                    assert rule.multiplier is not None
                    product *= rule.multiplier
            # normalized, written without an exponent: 2 × 5 is stored "10", not "1E+1"
            capped = Decimal(format(min(product, cap).normalize(), "f"))
            made = self._made[key] = Earning(capped, key[0])
        return made

    def welcome(self, at: datetime) -> Rule | None:
        """The welcome rule in force at ``at`` (the largest bonus, if several are)."""
        found = [r for r in self.rules if r.kind == WELCOME_BONUS and r.in_force(at)]
        return max(found, key=lambda r: (r.amount or 0, -r.id)) if found else None


BOOK = "dust.rules.book"


def load(session: Session) -> RuleBook:
    """The rules as this transaction sees them (read once per session)."""
    book = session.info.get(BOOK)
    if book is None:
        # Rules are written by their own functions, which flush: nothing else the session
        # holds changes what this reads, so it need not be flushed first.
        stmt = select(EarnRule).order_by(EarnRule.id).execution_options(autoflush=False)
        rows = session.scalars(stmt)
        book = RuleBook(tuple(_rule(row) for row in rows))
        session.info[BOOK] = book
    return book


def forget(session: Session) -> None:
    session.info.pop(BOOK, None)


def _rule(row: EarnRule) -> Rule:
    return Rule(
        id=row.id,
        kind=row.kind,
        group_id=row.group_id,
        multiplier=Decimal(row.multiplier) if row.multiplier is not None else None,
        amount=row.amount,
        currency_code=row.currency_code,
        name=row.name,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
    )


# -- customer groups ---------------------------------------------------------------------


@dataclass(frozen=True)
class GroupHistory:
    """A customer's group records, in time order (``occurred_at``, then event id)."""

    records: tuple[tuple[datetime, str, frozenset[str]], ...]

    def at(self, instant: datetime) -> frozenset[str]:
        groups: frozenset[str] = frozenset()
        for occurred_at, _, ids in self.records:
            if occurred_at > instant:
                break
            groups = ids
        return groups


def group_histories(session: Session, customer_ids: Iterable[str]) -> dict[str, GroupHistory]:
    """The group records of ``customer_ids`` (one query)."""
    wanted = sorted(set(customer_ids))
    found: dict[str, list[tuple[datetime, str, frozenset[str]]]] = {c: [] for c in wanted}
    if not wanted:
        return {}
    rows = session.execute(
        select(
            CustomerGroups.customer_id,
            CustomerGroups.occurred_at,
            CustomerGroups.event_id,
            CustomerGroups.group_ids,
        )
        .where(CustomerGroups.customer_id.in_(wanted))
        .order_by(CustomerGroups.customer_id, CustomerGroups.occurred_at, CustomerGroups.event_id)
    )
    for customer_id, occurred_at, event_id, group_ids in rows:
        found[customer_id].append((occurred_at, event_id, frozenset(json.loads(group_ids))))
    return {c: GroupHistory(tuple(records)) for c, records in found.items()}


@lru_cache(maxsize=4096)
def parse_groups(text: str) -> frozenset[str]:
    """A stored JSON list of group ids (customers share a few lists: each parsed once)."""
    return frozenset(json.loads(text))


@lru_cache(maxsize=4096)
def parse_rule_ids(text: str) -> tuple[int, ...]:
    """A stored JSON list of rule ids (``dust_orders.earn_rules``), parsed once each."""
    return tuple(json.loads(text))


@dataclass(frozen=True)
class Placement:
    """What the rules need to know of an order: who, when, in which currency."""

    customer_id: str | None
    placed_at: datetime
    currency_code: str | None


def earnings(
    session: Session, book: RuleBook, placements: Sequence[Placement], policy: EarnPolicy
) -> list[Earning]:
    """The earning of each placement. When a group rule may apply to any of them, the
    customers' dust accounts are locked (opened if need be) before their groups are read,
    so a concurrent group record either is seen here or sees these orders. The groups come
    from the copy of each customer's latest record on the locked account (no statement of
    their own); the history is read only for orders placed before that record."""
    if not book.rules:
        return [NO_RULES] * len(placements)
    in_force = [
        book.multiplying(p.placed_at, p.currency_code) if p.customer_id is not None else []
        for p in placements
    ]
    # None: not needed (no group rule in force for the order), or read from the history
    groups: list[frozenset[str] | None] = [None] * len(placements)
    histories: dict[str, GroupHistory] = {}
    needed = [
        i for i, rules_ in enumerate(in_force) if any(r.kind == GROUP_MULTIPLIER for r in rules_)
    ]
    if needed:
        accounts = lock_dust_accounts(session, [p.customer_id for p in placements if p.customer_id])
        copies: dict[str, tuple[datetime | None, str | None]] = {}
        earlier: list[str] = []
        for i in needed:
            customer_id = placements[i].customer_id
            assert customer_id is not None
            copy = copies.get(customer_id)
            if copy is None:
                account = accounts[customer_id]
                copy = copies[customer_id] = (account.groups_at, account.group_ids)
            groups_at, group_ids = copy
            if groups_at is None:
                groups[i] = NO_GROUPS
            elif placements[i].placed_at < groups_at:  # before the latest record
                earlier.append(customer_id)
            else:
                assert group_ids is not None
                groups[i] = parse_groups(group_ids)
        if earlier:
            histories = group_histories(session, earlier)
            for i in needed:
                if groups[i] is None:
                    p = placements[i]
                    groups[i] = histories[p.customer_id].at(p.placed_at)  # type: ignore[index]
    cap = policy.max_multiplier
    return [
        book.earning_of(rules_, found or NO_GROUPS, cap) if rules_ else NO_RULES
        for rules_, found in zip(in_force, groups, strict=True)
    ]


def apply_to_order(session: Session, order: Order, book: RuleBook, policy: EarnPolicy) -> bool:
    """Derive the rules a placed customer's order earns with and record them on it.
    Returns whether they changed. The caller settles the earnings afterwards."""
    if order.customer_id is None or order.placed_at is None:
        return False
    if book.rules:
        account_id = ensure_account(session, order.customer_id, DUST)
        lock_accounts(session, [account_id])
    placement = Placement(order.customer_id, order.placed_at, order.currency_code)
    earning = earnings(session, book, [placement], policy)[0]
    if (order.earn_multiplier, order.earn_rules) == (
        earning.stored_multiplier,
        earning.stored_rules,
    ):
        return False
    order.earn_multiplier = earning.stored_multiplier
    order.earn_rules = earning.stored_rules
    return True


def record_groups(
    session: Session,
    customer_id: str,
    group_ids: Iterable[str],
    occurred_at: datetime,
    event_id: str,
    policy: EarnPolicy,
) -> dict[str, int]:
    """Record the customer's groups as of ``occurred_at`` and derive again the orders
    placed while this record is the latest (from ``occurred_at`` to the next record):
    ``{order_id: change in net earned dust}`` for those whose earning changed."""
    insert = insert_for(session)
    # On the session's connection: a group record does not depend on what the session
    # holds, which need not be flushed first (a batch's run writes it at its end).
    inserted = (
        session.connection()
        .execute(
            insert(CustomerGroups)
            .values(
                event_id=event_id,
                customer_id=customer_id,
                occurred_at=occurred_at,
                group_ids=json.dumps(sorted(set(group_ids))),
                recorded_at=utcnow(),
            )
            .on_conflict_do_nothing()
            .returning(CustomerGroups.event_id)
        )
        .scalar()
    )
    if inserted is None:
        return {}
    book = load(session)
    if not book.has_group_rules:
        account_id = ensure_account(session, customer_id, DUST)
        copy_latest(session, lock_accounts(session, [account_id])[account_id], occurred_at)
        if IDS not in session.info:  # a deferred block (dust.ledger.journal) flushes at its end
            session.flush()
        return {}
    following = session.scalar(
        select(CustomerGroups.occurred_at)
        .where(
            CustomerGroups.customer_id == customer_id,
            tuple_(CustomerGroups.occurred_at, CustomerGroups.event_id)
            > tuple_(occurred_at, event_id),
        )
        .order_by(CustomerGroups.occurred_at, CustomerGroups.event_id)
        .limit(1)
    )
    window = [
        Order.customer_id == customer_id,
        Order.placed_event_id.is_not(None),
        Order.placed_at >= occurred_at,
    ]
    if following is not None:
        window.append(Order.placed_at < following)

    def lock_orders(known: set[str]) -> list[Order]:
        stmt = (
            select(Order)
            .where(*window, Order.order_id.not_in(known) if known else Order.order_id.is_not(None))
            .order_by(Order.order_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return list(session.scalars(stmt))

    # Orders before the account (the ledger's lock order); then, under the account's
    # lock, orders committed meanwhile (their placement read the groups without this row).
    orders = lock_orders(set())
    account_id = ensure_account(session, customer_id, DUST)
    copy_latest(session, lock_accounts(session, [account_id])[account_id], occurred_at)
    orders += lock_orders({o.order_id for o in orders})
    changes: dict[str, int] = {}
    for order in sorted(orders, key=lambda o: o.order_id):
        if apply_to_order(session, order, book, policy):
            change = settle_earnings(session, order, event_id, policy)
            changes[order.order_id] = change
    session.flush()
    return changes


def copy_latest(session: Session, account: Account, occurred_at: datetime) -> None:
    """Bring the copy of the customer's latest group record on their locked dust account up
    to date after a record at ``occurred_at`` was stored. A later record than the copy's is
    the latest; an earlier one changes nothing; at the same instant the event ids decide,
    as :func:`group_histories` orders them (by the database)."""
    if account.groups_at is not None and occurred_at < account.groups_at:
        return
    latest = session.execute(
        select(CustomerGroups.occurred_at, CustomerGroups.event_id, CustomerGroups.group_ids)
        .where(CustomerGroups.customer_id == account.customer_id)
        .order_by(CustomerGroups.occurred_at.desc(), CustomerGroups.event_id.desc())
        .limit(1)
        # Group records are inserted at once, never through the session: no flush first.
        .execution_options(autoflush=False)
    ).one()
    account.groups_at, account.groups_event_id, account.group_ids = latest


@dataclass(frozen=True)
class GroupRecord:
    """One ``customer.created`` / ``customer.updated``'s groups (:func:`record_groups_many`)."""

    customer_id: str
    group_ids: Iterable[str]
    occurred_at: datetime
    event_id: str


def record_groups_many(session: Session, records: Sequence[GroupRecord]) -> None:
    """Record many customers' groups (each customer once) in one statement, while no group
    rule exists (none then derives an order again: :func:`record_groups` returns nothing
    for each), and update each one's copy on their dust account. A record whose event id is
    there already is left out, as :func:`record_groups` leaves it."""
    if not records:
        return
    if load(session).has_group_rules:
        raise AssertionError("group records under group rules go one at a time")
    now = utcnow()
    rows = [
        {
            "event_id": r.event_id,
            "customer_id": r.customer_id,
            "occurred_at": r.occurred_at,
            "group_ids": json.dumps(sorted(set(r.group_ids))),
            "recorded_at": now,
        }
        for r in records
    ]
    inserted = set(
        insert_rows(
            session, CustomerGroups.__table__, rows, skip_conflicts=True, returning="event_id"
        )
    )
    # As record_groups does for each: the copy of the latest record on the customer's
    # locked dust account (all of them locked in one statement, id order).
    done = [r for r in records if r.event_id in inserted]
    if not done:
        return
    accounts = lock_dust_accounts(session, [r.customer_id for r in done])
    for r in done:
        copy_latest(session, accounts[r.customer_id], r.occurred_at)
    session.flush()


# -- welcome bonus -------------------------------------------------------------------------


def welcome_key(customer_id: str) -> str:
    return f"customer:{customer_id}:welcome"


def credit_welcome(
    session: Session, customer_id: str, occurred_at: datetime, event_id: str, policy: EarnPolicy
) -> int:
    """Credit the welcome bonus in force at ``occurred_at``, once per customer ever.
    Returns what was credited (0: no rule in force, or credited before)."""
    rule = load(session).welcome(occurred_at)
    if rule is None or rule.amount is None:
        return 0
    key = welcome_key(customer_id)
    if session.scalar(select(Entry.id).where(Entry.idempotency_key == key)) is not None:
        return 0
    account_id = ensure_account(session, customer_id, DUST)
    account = lock_accounts(session, [account_id])[account_id]
    ref = Ref("welcome", "customer", customer_id, key, event_id, memo=f"earn rule {rule.id}")
    journal.credit(
        session,
        account,
        rule.amount,
        ref,
        expires_at=lot_expiry(occurred_at, policy.points_ttl_days),
    )
    return rule.amount


@dataclass(frozen=True)
class Welcome:
    """A ``customer.created`` that may earn the welcome bonus (:func:`credit_welcomes`)."""

    customer_id: str
    occurred_at: datetime
    event_id: str


def credit_welcomes(
    session: Session, welcomes: Sequence[Welcome], policy: EarnPolicy
) -> dict[str, int]:
    """:func:`credit_welcome` for many customers (each once in ``welcomes``) at once: the
    accounts of those a rule gives a bonus locked in one statement (id order, opened if
    need be), then their bonus entries looked up in one, the bonuses not yet credited
    posted with one ``journal.credit_many``. Returns ``{customer_id: bonus}`` of those
    credited now. The same entries and lots as :func:`credit_welcome` for each in turn."""
    book = load(session)
    due = [(w, rule) for w in welcomes if (rule := book.welcome(w.occurred_at)) and rule.amount]
    if not due:
        return {}
    if len({w.customer_id for w, _ in due}) != len(due):
        raise ValueError("a customer twice among the welcomes")
    accounts = lock_dust_accounts(session, [w.customer_id for w, _ in due])
    keys = [welcome_key(w.customer_id) for w, _ in due]
    credited = set(
        session.scalars(select(Entry.idempotency_key).where(Entry.idempotency_key.in_(keys)))
    )
    credits = []
    bonuses: dict[str, int] = {}
    for (w, rule), key in zip(due, keys, strict=True):
        if key in credited:
            continue
        assert rule.amount is not None
        ref = Ref(
            "welcome", "customer", w.customer_id, key, w.event_id, memo=f"earn rule {rule.id}"
        )
        credits.append(
            journal.Credit(
                accounts[w.customer_id],
                rule.amount,
                ref,
                expires_at=lot_expiry(w.occurred_at, policy.points_ttl_days),
            )
        )
        bonuses[w.customer_id] = rule.amount
    journal.credit_many(session, credits)
    return bonuses


# -- managing rules (dust rules add / end / list) ----------------------------------------------


def parse_multiplier(text: str) -> Decimal:
    """A rule multiplier from its decimal text: > 0 and <= 100."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise InvalidRule(
            f"the multiplier must be a decimal number such as 1.5, got {text!r}"
        ) from None
    if not value.is_finite() or value <= 0 or value > MAX_RULE_MULTIPLIER:
        raise InvalidRule(f"the multiplier must be > 0 and <= {MAX_RULE_MULTIPLIER}, got {text!r}")
    if len(str(value)) > 40:
        raise InvalidRule(f"the multiplier has too many digits: {text!r}")
    return value


def add_rule(
    session: Session,
    *,
    kind: str,
    actor: str,
    reason: str,
    starts_at: datetime,
    ends_at: datetime | None = None,
    group_id: str | None = None,
    multiplier: Decimal | None = None,
    amount: int | None = None,
    currency_code: str | None = None,
    name: str | None = None,
) -> EarnRule:
    """Add a rule and its audit row. Raises :class:`InvalidRule` (nothing written) for a
    rule that cannot be."""
    if kind not in KINDS:
        raise InvalidRule(f"unknown rule kind {kind!r}: one of {', '.join(KINDS)}")
    if ends_at is not None and ends_at <= starts_at:
        raise InvalidRule(
            f"the end ({ends_at.isoformat()}) must be after the start ({starts_at.isoformat()})"
        )
    if kind == WELCOME_BONUS:
        if amount is None or not 0 < amount <= MAX_BONUS:
            raise InvalidRule(f"a welcome bonus is a whole number of dust from 1 to {MAX_BONUS}")
        if multiplier is not None or group_id is not None or currency_code is not None:
            raise InvalidRule(
                "a welcome bonus has an amount only (no multiplier, group or currency)"
            )
        overlap = [
            r
            for r in load(session).rules
            if r.kind == WELCOME_BONUS
            and (r.ends_at is None or r.ends_at > starts_at)
            and (ends_at is None or r.starts_at < ends_at)
        ]
        if overlap:
            raise InvalidRule(
                f"welcome-bonus rule {overlap[0].id} is in force in that window:"
                " a customer gets one bonus; end it first"
            )
    else:
        if multiplier is None:
            raise InvalidRule(f"a {kind.replace('_', '-')} rule needs a multiplier")
        parse_multiplier(str(multiplier))
        if amount is not None:
            raise InvalidRule(f"a {kind.replace('_', '-')} rule has no amount")
        if (kind == GROUP_MULTIPLIER) != (group_id is not None):
            raise InvalidRule("a group-multiplier rule names one group; a campaign none")
    now = utcnow()
    rule = EarnRule(
        kind=kind,
        group_id=group_id,
        multiplier=str(multiplier) if multiplier is not None else None,
        amount=amount,
        currency_code=currency_code,
        name=name,
        starts_at=starts_at,
        ends_at=ends_at,
        created_at=now,
        actor=actor,
        reason=reason,
    )
    session.add(rule)
    session.flush()
    session.add(
        EarnRuleChange(
            rule_id=rule.id,
            action="add",
            ends_before=None,
            ends_after=ends_at,
            actor=actor,
            reason=reason,
            created_at=now,
        )
    )
    session.flush()
    forget(session)
    return rule


def end_rule(session: Session, rule_id: int, at: datetime, *, actor: str, reason: str) -> EarnRule:
    """End rule ``rule_id`` at ``at`` (not in force from then on). An end is only ever
    brought earlier, never before the rule's start; orders already recorded keep what
    they earned. Raises :class:`InvalidRule` (nothing written)."""
    rule = session.scalar(select(EarnRule).where(EarnRule.id == rule_id).with_for_update())
    if rule is None:
        raise InvalidRule(f"no rule {rule_id}")
    if at < rule.starts_at:
        raise InvalidRule(
            f"the end ({at.isoformat()}) is before rule {rule_id}'s start"
            f" ({rule.starts_at.isoformat()})"
        )
    if rule.ends_at is not None and rule.ends_at <= at:
        raise InvalidRule(f"rule {rule_id} already ends at {rule.ends_at.isoformat()}")
    before = rule.ends_at
    rule.ends_at = at
    session.add(
        EarnRuleChange(
            rule_id=rule.id,
            action="end",
            ends_before=before,
            ends_after=at,
            actor=actor,
            reason=reason,
            created_at=utcnow(),
        )
    )
    session.flush()
    forget(session)
    return rule


def rule_json(rule: EarnRule, changes: list[EarnRuleChange] | None = None) -> dict[str, object]:
    kind = rule.kind.replace("_", "-")
    return {
        "id": rule.id,
        "kind": kind,
        "group_id": rule.group_id,
        "multiplier": rule.multiplier,
        "amount": rule.amount,
        "currency_code": rule.currency_code,
        "name": rule.name,
        "starts_at": rule.starts_at.isoformat(),
        "ends_at": rule.ends_at.isoformat() if rule.ends_at else None,
        "created_at": rule.created_at.isoformat(),
        "actor": rule.actor,
        "reason": rule.reason,
        "changes": [
            {
                "action": c.action,
                "ends_before": c.ends_before.isoformat() if c.ends_before else None,
                "ends_after": c.ends_after.isoformat() if c.ends_after else None,
                "actor": c.actor,
                "reason": c.reason,
                "at": c.created_at.isoformat(),
            }
            for c in changes or []
        ],
    }


def list_rules(session: Session) -> list[dict[str, object]]:
    """Every rule, with its audit trail, oldest first."""
    changes: dict[int, list[EarnRuleChange]] = {}
    for change in session.scalars(select(EarnRuleChange).order_by(EarnRuleChange.id)):
        changes.setdefault(change.rule_id, []).append(change)
    rules = session.scalars(select(EarnRule).order_by(EarnRule.id))
    return [rule_json(rule, changes.get(rule.id)) for rule in rules]
