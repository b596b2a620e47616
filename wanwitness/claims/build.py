"""Assemble a claim: inputs from the store or from files, a rule pack, one claim dict.

    inputs = from_store(store, config, "2026-11")      # or from_files(...)
    claim = build(inputs, pack, options, lang="en")    # the dict `claim --format json` prints

What the builder adds to the pack's result: the outages of the period (every class;
local_down and unknown listed, never claimed) each with `claimed`, `why_not` and
`counted_s`; the tickets with their linked outages; and, from the store, the ledger
records behind each claimed outage (its opening, restating and closing state records,
with their link numbers and hashes in their agent's chain) and the ledger checkpoint
that commits those chains (with the heads of the claim's agents in it), so that every
claimed minute can be traced to chained records (bundle.py ships them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from wanwitness.collector import ledger, timeline

from .. import store as s
from ..config import SCHEMA, Config
from ..errors import UserError
from . import files, link
from . import tickets as tk
from .catalogs import N_
from .model import NEVER_CLAIMABLE, Outage, Period, RuleResult, Tariff, Ticket, iso, money, statement

UTC = UTC
CLAIM_VERSION = 1
PARTY_KEYS = {party: tuple(SCHEMA[party]) for party in ("customer", "isp")}  # the config's keys
# why_not texts: the claim schema's and the rule packs' own (rules/base.py), so that the
# letter translates them; a pack's own reason, when it gives one, comes first.
WHY_LOCAL = "local_down: the customer's own equipment"
WHY_UNKNOWN = "unknown: no agent reporting"
WHY_CLASS = "{cls} not claimable under this rule"
WHY_BEFORE = "before the report"
WHY_NO_TICKET = "no fault report (ticket) linked to this outage"
WHY_NOT_COUNTED = "not counted under this rule"


class Pack(Protocol):
    """What the builder needs of a rule pack (wanwitness.claims.rules)."""

    def describe(self, options: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def parse_options(self, raw: dict[str, str | list[str]]) -> dict[str, Any]: ...

    def compute(self, outages: list[Outage], tickets: list[Ticket], tariff: Tariff,
                period: Period, options: dict[str, Any]) -> RuleResult: ...


def load_pack(name: str) -> Pack:
    """The rule pack NAME; an unknown name is a UserError listing the known ones."""
    from . import rules
    return rules.get(name)


def pack_names() -> list[str]:
    from . import rules
    return list(rules.names())


class PeriodError(UserError):
    """A billing period label that is not one (the CLI names its --period)."""


@dataclass
class Trace:
    """Links and hashes of the records behind the outages, and the checkpoint that
    commits them (store claims only)."""
    records: dict[tuple[str, int], tuple[int, str]]   # (agent, seq) -> (link in its chain, hash)
    last_of_boot: dict[tuple[str, int], int]          # (agent, boot) -> last chained seq
    checkpoint: dict[str, Any] | None                 # {"checkpoint": N, "root": "...", "made": ISO}
    heads: dict[str, dict[str, Any]]                  # agent -> {"link": n, "hash": "..."} in it


@dataclass
class Inputs:
    source: str                    # "store" | "files"
    tariff: Tariff
    period: Period
    outages: list[Outage]          # every class, around the period; ongoing ones as they are
    tickets: list[Ticket]          # linked
    customer: dict[str, str]
    isp: dict[str, str]
    now: datetime
    trace: Trace | None = None
    notes: list[str] = field(default_factory=list)
    # For the user, not the letter: spans the timeline had to leave out (timeline.query).
    warnings: list[str] = field(default_factory=list)
    line: str | None = None        # [lines.NAME] claimed for; None: no [lines] in the config
    agents: tuple[str, ...] | None = None   # the line's agents; None: every agent


# --- the period -------------------------------------------------------------------------

def resolve_period(tariff: Tariff, label: str | None, now: datetime) -> Period:
    """The billing period LABEL ('2026-11'), by default the last complete one at `now`."""
    if label is None:
        local = now.astimezone(tariff.tz)
        y, m = local.year, local.month
        if local.day < tariff.period_start_day:
            y, m = (y - 1, 12) if m == 1 else (y, m - 1)   # the current period began last month
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)       # the one before it is complete
        label = f"{y:04d}-{m:02d}"
    try:
        return tariff.period(label)
    except ValueError as e:
        raise PeriodError(str(e)) from None


def _relevant(ticket: Ticket, period: Period) -> bool:
    return ticket.opened < period.end and (ticket.closed is None or ticket.closed >= period.start)


def _around(period: Period, tickets: list[Ticket]) -> datetime:
    """Where the outages a pack needs begin: the first day of the calendar month in
    which the period starts (hu-eszr assesses a calendar month, with all its time, in
    the period where it ends: with periods from the 15th, November's first half would
    be missing), or the report of a ticket still open in the period if earlier (its
    clock may have started before)."""
    month = period.start.replace(day=1)
    return min([month] + [t.opened for t in tickets if _relevant(t, period)])


def _in(o: Outage, since: datetime, until: datetime) -> bool:
    return o.start < until and (o.end is None or o.end > since)


# --- from the store ------------------------------------------------------------------------

def tariff_from_config(conf: Config) -> Tariff:
    fee, currency = conf.tariff.monthly_fee, conf.tariff.currency
    missing = [k for k, v in (("monthly_fee", fee), ("currency", currency)) if not v]
    if missing:
        raise UserError(f"set [tariff] {' and '.join(missing)} in {conf.path} "
                        "(wanwitness config example shows every key)")
    return Tariff(Decimal(fee), currency, conf.tariff.period_start_day,
                  conf.tariff.timezone)


def _parties(conf: Config) -> tuple[dict[str, str], dict[str, str]]:
    return ({k: str(conf.get("customer", k)) for k in PARTY_KEYS["customer"]},
            {k: str(conf.get("isp", k)) for k in PARTY_KEYS["isp"]})


def _check_coverage(conn: sa.Connection, period: Period, where: str,
                    agents: tuple[str, ...] | None = None) -> None:
    """'A period with no data': no agent (of the line) reported anything between its
    start and end."""
    B = s.boots
    start, end = tk.to_ms(period.start), tk.to_ms(period.end)
    q = sa.select(B.c.agent).where(B.c.first_recv_ms < end, B.c.last_recv_ms >= start)
    if agents is not None:
        q = q.where(B.c.agent.in_(agents))
    if conn.execute(q.limit(1)).first() is None:
        who = "no agent" if agents is None else f"no agent of this line ({', '.join(agents)})"
        raise UserError(f"{where}: {who} reported anything in period {period.label} "
                        f"({period.start.isoformat()} to {period.end.isoformat()}): nothing to claim")


def outage_from_timeline(o: timeline.Outage) -> Outage:
    return Outage(o.agent, o.cls, tk.from_ms(o.start_ms),
                  None if o.end_ms is None else tk.from_ms(o.end_ms),
                  None if o.start_uncertainty_ms is None else o.start_uncertainty_ms / 1000,
                  o.evidence)


def _trace(conn: sa.Connection, outages: list[Outage]) -> Trace:
    R = s.records
    wanted: dict[str, set[int]] = {}
    boots: set[tuple[str, int]] = set()
    for o in outages:
        seqs = evidence_seqs(o)
        if seqs:
            wanted.setdefault(o.agent, set()).update(seqs)
        if o.evidence.get("close_seq") is None and isinstance(o.evidence.get("boot"), int):
            boots.add((o.agent, o.evidence["boot"]))
    records: dict[tuple[str, int], tuple[int, str]] = {}
    last_of_boot: dict[tuple[str, int], int] = {}
    for agent, boot in sorted(boots):
        last = conn.execute(sa.select(sa.func.max(R.c.seq))
                            .where(R.c.agent == agent, R.c.boot == boot)).scalar()
        if last is not None:
            last_of_boot[(agent, boot)] = last
            wanted.setdefault(agent, set()).add(last)
    for agent, agent_seqs in sorted(wanted.items()):
        ordered = sorted(agent_seqs)
        for i in range(0, len(ordered), 500):  # bounded IN lists on both backends
            for seq, n, digest in conn.execute(
                    sa.select(R.c.seq, R.c.link, R.c.hash)
                    .where(R.c.agent == agent, R.c.seq.in_(ordered[i:i + 500]),
                           R.c.link.is_not(None))):
                records[(agent, seq)] = (n, digest)
    need: dict[str, int] = {}
    for (agent, _seq), (n, _digest) in records.items():
        need[agent] = max(need.get(agent, 0), n)
    cp = ledger.covering_checkpoint(conn, need)
    if cp is None:  # none commits these records yet: one is made now
        cp = ledger.checkpoint_in(conn)
        conn.commit()
    if cp is None:
        return Trace(records, last_of_boot, None, {})
    agents = {o.agent for o in outages}
    heads = {a: {"link": n, "hash": h} for a, n, h in ledger.checkpoint_heads(conn, cp.id) if a in agents}
    return Trace(records, last_of_boot,
                 {"checkpoint": cp.id, "root": cp.root, "made": timeline.iso(cp.made_ms)},
                 heads)


def from_store(store: s.Store, conf: Config, label: str | None, *,
               now: datetime | None = None, line: str | None = None) -> Inputs:
    """The claim's inputs for one line (`line`, or the config's only one): its agents'
    outages, its tickets, its tariff and parties (Config.for_line)."""
    conf = conf.for_line(line)
    agents = conf.line.agents if conf.line is not None else None
    now = now or datetime.now(UTC)
    tariff = tariff_from_config(conf)
    period = resolve_period(tariff, label, now)
    with store.engine.connect() as conn:
        _check_coverage(conn, period, f"store {store.url}", agents)
    ticket_list, warnings = tk.of_line(tk.list_all(store), conf)
    since = _around(period, ticket_list)
    rows = timeline.query(store, since_ms=tk.to_ms(since), until_ms=tk.to_ms(period.end),
                          now_ms=tk.to_ms(now), notes=warnings, agents=agents)
    outages = [outage_from_timeline(o) for o in rows]
    with store.engine.connect() as conn:
        # Read after the timeline: every record it used is at or below this head.
        trace = _trace(conn, outages)
    customer, isp = _parties(conf)
    return Inputs("store", tariff, period, outages,
                  link.link(ticket_list, outages, tk.overrides(store)), customer, isp, now, trace,
                  warnings=warnings, line=conf.line.name if conf.line else None, agents=agents)


# --- from files ------------------------------------------------------------------------------

def from_files(outages_path: Path, tickets_path: Path | None, tariff_path: Path,
               label: str | None, *, now: datetime | None = None) -> Inputs:
    now = now or datetime.now(UTC)
    tf = files.read_tariff(tariff_path)
    period = resolve_period(tf.tariff, label, now)
    all_outages = files.read_outages(outages_path)
    ticket_list, notes = ([], []) if tickets_path is None else files.read_tickets(
        tickets_path, tf.tariff.tz, {o.id for o in all_outages})
    if not any(_in(o, period.start, period.end) for o in all_outages):
        raise UserError(f"{outages_path}: no outage or unknown span in period {period.label} "
                        f"({period.start.isoformat()} to {period.end.isoformat()}): nothing to claim")
    since = _around(period, ticket_list)
    outages = [o for o in all_outages if _in(o, since, period.end)]
    return Inputs("files", tf.tariff, period, outages, link.link(ticket_list, outages),
                  tf.customer, tf.isp, now, None, notes)


# --- the claim -------------------------------------------------------------------------------

def evidence_seqs(o: Outage) -> list[int]:
    """The chained state records an outage was derived from: opening, restating, closing."""
    ev = o.evidence
    seqs = [ev.get("open_seq"), *(ev.get("cont_seqs") or []), ev.get("close_seq")]
    return [q for q in seqs if isinstance(q, int) and not isinstance(q, bool)]


def _records(o: Outage, trace: Trace) -> list[dict[str, Any]]:
    ev = o.evidence
    roles = [("open", ev.get("open_seq"))] + [("cont", q) for q in ev.get("cont_seqs") or []]
    if ev.get("close_seq") is not None:
        roles.append(("close", ev["close_seq"]))
    elif (o.agent, ev.get("boot")) in trace.last_of_boot:
        # Ended by a restart or by silence: the boot's last chained record bounds the end.
        roles.append(("last_of_boot", trace.last_of_boot[(o.agent, ev["boot"])]))
    out = []
    for role, seq in roles:
        found = trace.records.get((o.agent, seq)) if isinstance(seq, int) else None
        if found is None:
            raise UserError(f"outage {o.id}: its record {o.agent} seq {seq} is not in the "
                            "ledger; run `wanwitness verify`")
        out.append({"seq": seq, "link": found[0], "hash": found[1], "role": role})
    return out


def _why_not(o: Outage, desc: dict[str, Any], result: RuleResult,
             tickets: list[Ticket]) -> str:
    """Why an outage in the period is not claimed: the pack's reason when it gives one."""
    if o.cls == "local_down":
        return WHY_LOCAL
    if o.cls == "unknown":
        return WHY_UNKNOWN
    given = getattr(result, "why_not", {}).get(o.id)
    if given:
        return str(given)
    classes = (desc.get("options") or {}).get("classes") or desc.get("claimable_classes")
    if isinstance(classes, (list, tuple)) and o.cls not in classes:
        return WHY_CLASS.format(cls=o.cls)
    linked = [t for t in tickets if o.id in t.outage_ids]
    if desc.get("clock_start") == "ticket":
        if not linked:
            return WHY_NO_TICKET
        if o.end is not None and o.end <= min(t.opened for t in linked):
            return WHY_BEFORE
    return WHY_NOT_COUNTED


def _utc_text(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ticket_dict(t: Ticket) -> dict[str, Any]:
    return {"number": t.number, "opened": _utc_text(t.opened), "closed": _utc_text(t.closed),
            "channel": t.channel, "operator": t.operator, "promised": _utc_text(t.promised),
            "appointments": [{"at": _utc_text(a.at), "missed": a.missed} for a in t.appointments],
            "note": t.note, "outages": list(t.outage_ids),
            **({"declined_s": t.declined_s} if t.declined_s else {}),
            **({"line": t.line} if t.line else {})}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):  # date, datetime
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return value


def build(inputs: Inputs, pack: Pack, options: dict[str, Any], lang: str = "en") -> dict[str, Any]:
    period, now = inputs.period, inputs.now
    notes = list(inputs.notes)
    statements: list[dict[str, Any]] = []
    outages = inputs.outages
    if period.end > now:
        # Ongoing outages count up to the period's end; in a period not over yet that
        # would claim the future, so they end now.
        outages = [replace(o, end=now) if o.end is None else o for o in outages]
        notes.append(f"The period {period.label} is not over: time is counted up to "
                     f"{_utc_text(now)}.")
        statements.append(statement(N_("The billing period is not over yet: the time is counted up "
                                       "to %(until_at)s."), until_at=iso(now)))
    result = pack.compute(outages, list(inputs.tickets), inputs.tariff, period, options)
    desc = _jsonable(dict(pack.describe(options)))
    claimed = {oid for item in result.items for oid in item.outages}
    claimed |= {oid for oid, secs in result.counted_s.items() if secs > 0}
    never = sorted(o.id for o in outages if o.id in claimed and o.cls in NEVER_CLAIMABLE)
    if never:  # a bug in the pack, not something the user can fix
        raise RuntimeError(f"rule pack claimed local_down/unknown time: {', '.join(never)}")
    shown_ids = {o.id for o in outages if _in(o, period.start, period.end)} | claimed
    ongoing = {o.id for o in inputs.outages if o.end is None}
    out_list = []
    for o in outages:
        if o.id not in shown_ids:
            continue
        end = o.end or now
        is_claimed = o.id in claimed
        entry: dict[str, Any] = {
            "id": o.id, "agent": o.agent, "class": o.cls, "start": iso(o.start),
            "end": None if o.id in ongoing else iso(end),
            "duration_s": max((end - o.start).total_seconds(), 0.0),
            "counted_s": float(result.counted_s.get(o.id, 0.0)) if is_claimed else 0.0,
            "claimed": is_claimed,
            "why_not": None if is_claimed else _why_not(o, desc, result, inputs.tickets),
            "start_uncertainty_s": o.start_uncertainty_s,
            "evidence": o.evidence,
            "records": (_records(o, inputs.trace) if is_claimed and inputs.trace else []),
        }
        if o.id in ongoing:
            entry["ongoing"] = True
        out_list.append(entry)
    shown_tickets = [t for t in inputs.tickets
                     if _relevant(t, period) or any(t.number in i.tickets for i in result.items)]
    return {
        "v": CLAIM_VERSION,
        "generated": _utc_text(now),
        "source": inputs.source,
        **({"line": inputs.line} if inputs.line is not None else {}),
        "lang": lang,
        "rules": desc,
        "period": {"label": period.label, "start": period.start.isoformat(),
                   "end": period.end.isoformat(), "timezone": inputs.tariff.timezone},
        "currency": inputs.tariff.currency,
        "monthly_fee": str(money(inputs.tariff.monthly_fee)),
        "total": str(result.total),
        "items": [{"kind": i.kind, "amount": str(money(i.amount)), "basis": _jsonable(i.basis),
                   "outages": list(i.outages), "tickets": list(i.tickets),
                   "description": i.description} for i in result.items],
        "outages": out_list,
        "tickets": [ticket_dict(t) for t in shown_tickets],
        "notes": notes + list(result.notes),
        "statements": statements + list(getattr(result, "statements", [])),
        "dates": {k: v.isoformat() for k, v in result.dates.items()},
        "customer": {k: inputs.customer.get(k, "") for k in PARTY_KEYS["customer"]},
        "isp": {k: inputs.isp.get(k, "") for k in PARTY_KEYS["isp"]},
        "ledger": _ledger(inputs),
    }


def _ledger(inputs: Inputs) -> dict[str, Any] | None:
    """The checkpoint the claim's records are committed in, and the heads of the
    claim's agents (those of its outages) in it; None for a claim from files."""
    trace = inputs.trace
    if trace is None or trace.checkpoint is None:
        return None
    agents = {o.agent for o in inputs.outages}
    return {**trace.checkpoint, "heads": {a: trace.heads[a] for a in sorted(agents) if a in trace.heads}}


def to_json(claim: dict[str, Any]) -> str:
    return json.dumps(claim, indent=2, ensure_ascii=False) + "\n"
