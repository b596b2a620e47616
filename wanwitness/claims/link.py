"""Which outages a ticket is about: by time, unless the user said otherwise.

Automatic rule: an outage of a class that could be claimed (not local_down, not
unknown) belongs to a ticket when it overlaps the ticket's time [opened, closed]:
that covers the usual case, an outage already going on when the fault was reported,
and a fault that came back while the ticket was still open. A ticket that is not
closed covers every later outage. Manual overrides (`wanwitness ticket link/unlink`)
win over the rule in both directions.

Which links the rule made is kept (`Ticket.auto_linked`): a fault that comes back after
the reported one was repaired is linked to a ticket still open, but that report does not
cover it; the rule packs then leave it out unless the user links it by hand
(rules/base.py, `PackRun.reports`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ..config import Config
from .model import NEVER_CLAIMABLE, Outage, Ticket
from .tickets import Override, of_line


def overlaps(outage: Outage, ticket: Ticket) -> bool:
    """Outage [start, end) meets the ticket's [opened, closed] (open-ended while not closed)."""
    if ticket.closed is not None and outage.start > ticket.closed:
        return False
    return outage.end is None or outage.end > ticket.opened


def outage_key(outage: Outage) -> tuple[str, int] | None:
    """(agent, open_seq): how a manual override names an outage; None for unknown spans."""
    seq = outage.evidence.get("open_seq")
    return (outage.agent, seq) if isinstance(seq, int) else None


def link(tickets: Iterable[Ticket], outages: list[Outage],
         overrides: Iterable[Override] = ()) -> list[Ticket]:
    """The tickets with `outage_ids` filled, in outage start order.

    A ticket that already carries outage ids (tickets.csv's `outages` column) keeps
    exactly those: they are the user's manual choice.
    """
    by_key = {k: o for o in outages if (k := outage_key(o)) is not None}
    order = {o.id: (o.start, o.agent) for o in outages}
    manual: dict[str, list[Override]] = {}
    for ov in overrides:
        manual.setdefault(ov.ticket, []).append(ov)
    out = []
    for t in tickets:
        if t.outage_ids:
            out.append(t)
            continue
        ids = {o.id for o in outages if o.cls not in NEVER_CLAIMABLE and overlaps(o, t)}
        auto = set(ids)
        for ov in manual.get(t.number, []):
            target = by_key.get((ov.agent, ov.open_seq))
            if target is None:
                continue  # the outage lies outside the outages at hand
            auto.discard(target.id)
            if ov.linked:
                ids.add(target.id)
            else:
                ids.discard(target.id)
        ordered = tuple(sorted(ids, key=lambda i: order[i]))
        out.append(replace(t, outage_ids=ordered, auto_linked=tuple(i for i in ordered if i in auto)))
    return out


def link_lines(tickets: list[Ticket], outages: list[Outage], overrides: Iterable[Override],
               conf: Config) -> list[Ticket]:
    """`link` within each line ([lines.NAME]): a line's tickets meet only the outages of
    its own agents. A ticket of no configured line is linked to nothing."""
    if not conf.lines:
        return link(tickets, outages, overrides)
    overrides = list(overrides)
    out: list[Ticket] = []
    for line in conf.lines:
        mine, _notes = of_line(tickets, conf.for_line(line.name))
        out += link(mine, [o for o in outages if line.has(o.agent)], overrides)
    placed = {t.number for t in out}
    out += [replace(t, outage_ids=(), auto_linked=()) if not t.outage_ids else t
            for t in tickets if t.number not in placed]
    return sorted(out, key=lambda t: (t.opened, t.number))
