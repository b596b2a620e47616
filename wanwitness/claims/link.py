"""Which outages a ticket is about: by time, unless the user said otherwise.

Automatic rule: an outage of a class that could be claimed (not local_down, not
unknown) belongs to a ticket when it overlaps the ticket's time [opened, closed]:
that covers the usual case, an outage already going on when the fault was reported,
and a fault that came back while the ticket was still open. A ticket that is not
closed covers every later outage. Manual overrides (`wanwitness ticket link/unlink`)
win over the rule in both directions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from .model import NEVER_CLAIMABLE, Outage, Ticket
from .tickets import Override


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
        for ov in manual.get(t.number, []):
            target = by_key.get((ov.agent, ov.open_seq))
            if target is None:
                continue  # the outage lies outside the outages at hand
            if ov.linked:
                ids.add(target.id)
            else:
                ids.discard(target.id)
        out.append(replace(t, outage_ids=tuple(sorted(ids, key=lambda i: order[i]))))
    return out
