"""The claim builder on a store filled through the real ingest path (SQLite and PostgreSQL).

October 2026 in Europe/Berlin: an outage across midnight, one across the DST change
(25 Oct, 03:00 CEST -> 02:00 CET), one across the billing-period boundary, a DNS outage,
a LAN fault (local_down), an agent restart (unknown span), and two tickets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from testing.records import Board
from wanwitness import config as cfg
from wanwitness import store as s
from wanwitness.claims import build as b
from wanwitness.claims import rules
from wanwitness.claims import tickets as tk
from wanwitness.claims.model import Item, Outage, RuleResult, Tariff, money
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.collector.ledger import chain_heads, latest_checkpoint
from wanwitness.errors import UserError

UTC = UTC
BERLIN = tk.ZoneInfo("Europe/Berlin")
FEE = Decimal("39.99")


def at(text: str) -> int:
    """'2026-10-03T08:00Z' -> UTC ms."""
    return tk.to_ms(datetime.fromisoformat(text))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


CONFIG = """
[tariff]
monthly_fee = "39.99"
currency = "EUR"
timezone = "Europe/Berlin"

[customer]
name = "Erika Mustermann"
address = "Hauptstr. 1\\n10115 Berlin"
customer_number = "K-123"

[isp]
name = "Example Telecom"
address = "Postfach 1\\n53000 Bonn"
email = "billing@example.net"
"""


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(CONFIG + extra)
    return path


@pytest.fixture
def conf(tmp_path):
    return cfg.load(write_config(tmp_path / "config.toml"), env={})


@dataclass
class Scenario:
    seqs: dict[str, int]          # outage name -> its opening state record's seq


def october(store: s.Store) -> Scenario:
    """The records, delivered as they happen; the two tickets."""
    add_agent(store, "home", hb_s=30)
    home = Board(Ingestor(store), "home")
    seqs = {}
    home.start(1, at("2026-09-28T00:00:00+00:00"))
    # A: across midnight (local 10:00 on the 3rd to 12:00 on the 4th)
    seqs["A"] = home.state("isp_down", at("2026-10-03T08:00:00+00:00"),
                           bound=at("2026-10-03T07:59:58+00:00"), ev={"anchors": {"ok": 0, "of": 3}})
    home.state("isp_down", at("2026-10-03T08:00:00+00:00"), t=at("2026-10-03T20:00:00+00:00"))
    home.state("up", at("2026-10-04T10:00:00+00:00"))
    # B: DNS only, 30 minutes
    seqs["B"] = home.state("dns_down", at("2026-10-10T12:00:00+00:00"), ev={"dns": "timeout"})
    home.state("up", at("2026-10-10T12:30:00+00:00"))
    # C: the customer's own LAN
    seqs["C"] = home.state("local_down", at("2026-10-12T18:00:00+00:00"), ev={"gateway": "timeout"})
    home.state("up", at("2026-10-12T19:00:00+00:00"))
    # the agent loses power for two hours: an unknown span
    home.hb(at("2026-10-15T10:00:00+00:00"))
    home.start(2, at("2026-10-15T12:00:00+00:00"))
    # D: across the DST change, 02:30 CEST -> 03:30 CET is two real hours
    seqs["D"] = home.state("isp_down", at("2026-10-25T00:30:00+00:00"))
    home.state("up", at("2026-10-25T02:30:00+00:00"))
    # E: across the period boundary (23:00 CET on the 31st to 02:00 CET on 1 Nov)
    seqs["E"] = home.state("isp_down", at("2026-10-31T22:00:00+00:00"))
    home.state("up", at("2026-11-01T01:00:00+00:00"))
    # F: still going on when the agent was last heard from
    seqs["F"] = home.state("isp_down", at("2026-11-20T10:00:00+00:00"))
    home.hb(at("2026-11-20T12:00:00+00:00"))

    tk.add(store, tk.new_ticket(
        "T1", utc("2026-10-03T11:12:00+02:00"), tz=BERLIN, closed=utc("2026-10-04T12:05:00+02:00"),
        channel="phone", operator="17 / Maria",
        appointments=(utc("2026-10-04T08:00:00+02:00"),), missed=True))
    tk.add(store, tk.new_ticket("T2", utc("2026-10-31T23:30:00+01:00"), tz=BERLIN,
                                channel="app", operator="chat bot"))
    return Scenario(seqs)


class StandIn:
    """A tiny rule pack: pro rata from the report on, isp_down only, linked outages only."""
    name = "stand-in"
    options: dict[str, Any] = {"factor": "1"}

    def describe(self, options=None):
        return {"name": self.name, "title": "Stand-in rule", "country": None,
                "source": "tests/test_claims_build.py", "source_url": None, "clock_start": "ticket",
                "grace": "none", "unit": "second", "options": dict(options or {})}

    def parse_options(self, raw):
        unknown = set(raw) - set(self.options)
        if unknown:
            raise UserError(f"rule pack stand-in: unknown option {sorted(unknown)[0]!r}")
        return {"factor": Decimal(raw.get("factor", "1"))}

    def compute(self, outages, tickets, tariff, period, options):
        counted: dict[str, float] = {}
        items = []
        for o in outages:
            linked = [t for t in tickets if o.id in t.outage_ids]
            if o.cls != "isp_down" or not linked:
                continue
            start = max(o.start, min(t.opened for t in linked), period.start)
            end = min(o.end or period.end, period.end)
            secs = max((end - start).total_seconds(), 0.0)
            if secs:
                counted[o.id] = secs
                amount = tariff.monthly_fee * Decimal(repr(secs)) / Decimal(repr(period.seconds))
                items.append(Item("downtime", money(amount * options["factor"]),
                                  {"seconds": secs, "monthly_fee": tariff.monthly_fee,
                                   "period_seconds": period.seconds},
                                  [o.id], [t.number for t in linked], "stand-in"))
        return RuleResult(items, notes=["stand-in pack"], counted_s=counted)


@pytest.fixture
def scenario(store):
    return october(store)


NOW = utc("2026-11-22T12:00:00+00:00")


def by_class(claim):
    return {o["id"]: o for o in claim["outages"]}


def test_a_store_claim_lists_every_class_and_claims_only_the_claimable(store, scenario, conf):
    inputs = b.from_store(store, conf, "2026-10", now=NOW)
    claim = b.build(inputs, StandIn(), {"factor": Decimal(1)}, "de")
    assert claim["period"] == {"label": "2026-10", "start": "2026-10-01T00:00:00+02:00",
                               "end": "2026-11-01T00:00:00+01:00", "timezone": "Europe/Berlin"}
    assert claim["source"] == "store" and claim["lang"] == "de" and claim["currency"] == "EUR"
    classes = [(o["class"], o["claimed"]) for o in claim["outages"]]
    assert classes == [("isp_down", True), ("dns_down", False), ("local_down", False),
                       ("unknown", False), ("isp_down", False), ("isp_down", True)]
    why = {o["class"]: o["why_not"] for o in claim["outages"]}
    assert why["local_down"] == "local_down: the customer's own equipment"
    assert why["unknown"] == "unknown: no agent reporting"
    assert why["dns_down"] == "no fault report (ticket) linked to this outage"
    d = claim["outages"][4]
    assert d["start"] == "2026-10-25T00:30:00.000Z" and d["duration_s"] == 7200.0
    assert d["why_not"] == "no fault report (ticket) linked to this outage"
    a, e = claim["outages"][0], claim["outages"][5]
    # the stand-in counts from the report (09:12Z) to the end of the outage (10:00Z next day)
    assert a["counted_s"] == 24 * 3600 + 48 * 60 and a["duration_s"] == 26 * 3600
    # E is listed in October; only its part before local midnight counts here
    assert e["counted_s"] == 30 * 60 and e["end"] == "2026-11-01T01:00:00.000Z"
    assert claim["total"] == str(sum(Decimal(i["amount"]) for i in claim["items"]))
    assert [t["number"] for t in claim["tickets"]] == ["T1", "T2"]
    t1 = claim["tickets"][0]
    assert t1["opened"] == "2026-10-03T09:12:00Z" and t1["operator"] == "17 / Maria"
    assert t1["appointments"] == [{"at": "2026-10-04T06:00:00Z", "missed": True}]
    assert t1["outages"] == [a["id"]] and claim["tickets"][1]["outages"][0] == e["id"]
    assert claim["customer"]["name"] == "Erika Mustermann"
    assert claim["isp"]["email"] == "billing@example.net" and claim["notes"] == ["stand-in pack"]


def test_every_claimed_minute_traces_to_ledger_records_that_exist(store, scenario, conf):
    claim = b.build(b.from_store(store, conf, "2026-10", now=NOW), StandIn(), {"factor": 1})
    with store.engine.connect() as conn:
        ledger = {(r.agent, r.seq): (r.link, r.hash) for r in conn.execute(sa.select(s.records))}
        heads = {a: (n, h) for a, n, h in chain_heads(conn)}
        bodies = {r.seq: r.body for r in conn.execute(sa.select(s.records.c.seq, s.records.c.body))}
        cp = latest_checkpoint(conn)
    # a checkpoint was made for the claim: it commits every agent's head now
    assert cp is not None and claim["ledger"] == {
        "checkpoint": cp.id, "root": cp.root, "made": claim["ledger"]["made"],
        "heads": {a: {"link": n, "hash": h} for a, (n, h) in heads.items()}}
    claimed = [o for o in claim["outages"] if o["claimed"]]
    assert len(claimed) == 2
    for o in claimed:
        roles = [r["role"] for r in o["records"]]
        assert roles[0] == "open" and roles[-1] == "close"
        for r in o["records"]:
            assert ledger[(o["agent"], r["seq"])] == (r["link"], r["hash"])
            assert r["link"] <= heads[o["agent"]][0]
        assert o["records"][0]["seq"] == o["evidence"]["open_seq"]
    a = claimed[0]
    assert a["records"][0]["seq"] == scenario.seqs["A"]
    assert [r["role"] for r in a["records"]] == ["open", "cont", "close"]
    assert '"s":"isp_down"' in bodies[a["records"][0]["seq"]]
    assert '"s":"up"' in bodies[a["records"][-1]["seq"]]
    # unclaimed outages cite nothing: the claim rests only on what it claims
    assert all(o["records"] == [] for o in claim["outages"] if not o["claimed"])


def test_real_pro_rata_counts_midnight_dst_and_the_period_boundary(store, scenario, conf):
    pack = rules.get("pro-rata")
    october_claim = b.build(b.from_store(store, conf, "2026-10", now=NOW), pack, pack.parse_options({}))
    counted = {o["start"][:16]: o["counted_s"] for o in october_claim["outages"] if o["claimed"]}
    assert counted == {"2026-10-03T08:00": 26 * 3600.0,   # across midnight: all of it
                       "2026-10-25T00:30": 2 * 3600.0,    # across DST: real hours, not wall clock
                       "2026-10-31T22:00": 1 * 3600.0}    # up to local midnight 1 Nov (23:00Z)
    october_s = (744 + 1) * 3600  # 31 days and the hour the clocks went back
    expected = money(FEE * Decimal(29 * 3600) / Decimal(october_s))
    assert october_claim["total"] == str(expected)
    assert october_claim["items"][0]["basis"]["period_seconds"] == october_s
    by_cls = {o["class"]: o["why_not"] for o in october_claim["outages"] if not o["claimed"]}
    assert by_cls["dns_down"] == "dns_down not claimable under this rule"

    november = b.build(b.from_store(store, conf, "2026-11", now=NOW), pack, pack.parse_options({}))
    e = next(o for o in november["outages"] if o["start"].startswith("2026-10-31T22:00"))
    assert e["claimed"] and e["counted_s"] == 2 * 3600.0  # the rest of E, from 00:00 CET
    assert november["period"]["start"] == "2026-11-01T00:00:00+01:00"


def test_manual_link_and_unlink_override_the_time_rule(store, scenario, conf):
    tk.set_link(store, "T1", "home", scenario.seqs["A"], False)
    tk.set_link(store, "T1", "home", scenario.seqs["B"], True)
    claim = b.build(b.from_store(store, conf, "2026-10", now=NOW), StandIn(), {"factor": 1})
    outs = by_class(claim)
    t1 = claim["tickets"][0]
    b_id = next(i for i, o in outs.items() if o["class"] == "dns_down")
    assert t1["outages"] == [b_id]
    a = claim["outages"][0]
    assert not a["claimed"] and a["why_not"] == "no fault report (ticket) linked to this outage"
    # linking back restores the claim
    tk.set_link(store, "T1", "home", scenario.seqs["A"], True)
    again = b.build(b.from_store(store, conf, "2026-10", now=NOW), StandIn(), {"factor": 1})
    assert again["outages"][0]["claimed"]


def test_a_period_with_no_data_is_refused(store, scenario, conf):
    with pytest.raises(UserError, match=r"no agent reported anything in period 2026-08 "
                                        r"\(2026-08-01T00:00:00\+02:00 to"):
        b.from_store(store, conf, "2026-08", now=NOW)


def test_a_period_that_is_not_over_counts_ongoing_time_up_to_now(store, scenario, conf):
    now = utc("2026-11-20T12:00:30+00:00")  # the agent is still reporting
    claim = b.build(b.from_store(store, conf, "2026-11", now=now), rules.get("pro-rata"), {})
    f = claim["outages"][-1]
    assert f["start"] == "2026-11-20T10:00:00.000Z" and f["end"] is None and f["ongoing"]
    assert f["counted_s"] == 2 * 3600 + 30 and f["duration_s"] == 2 * 3600 + 30
    assert any("not over" in n for n in claim["notes"])
    # ongoing outages cite the records so far: the opening one and the boot's last
    assert [r["role"] for r in f["records"]] == ["open", "last_of_boot"]


@pytest.mark.parametrize("now,start_day,label", [
    ("2026-11-22T12:00:00+00:00", 1, "2026-10"),
    ("2026-10-31T23:30:00+00:00", 1, "2026-10"),   # 00:30 on 1 Nov in Berlin
    ("2026-10-31T22:30:00+00:00", 1, "2026-09"),   # 23:30 on 31 Oct in Berlin
    ("2026-11-22T12:00:00+00:00", 25, "2026-09"),  # the period that began 25 Oct is running
    ("2026-01-10T12:00:00+00:00", 1, "2025-12"),
    ("2026-01-10T12:00:00+00:00", 15, "2025-11"),
])
def test_the_default_period_is_the_last_complete_one_in_the_tariff_zone(now, start_day, label):
    tariff = Tariff(FEE, "EUR", start_day, "Europe/Berlin")
    period = b.resolve_period(tariff, None, utc(now))
    assert period.label == label and period.end <= utc(now)


def test_a_bad_period_label_is_a_user_error():
    with pytest.raises(UserError, match="^period '2026-13'"):
        b.resolve_period(Tariff(FEE, "EUR"), "2026-13", NOW)


def test_a_claim_needs_the_tariff_in_the_config(tmp_path, store, scenario):
    path = tmp_path / "c.toml"
    path.write_text('[tariff]\ncurrency = "EUR"\n')
    with pytest.raises(UserError, match=r"set \[tariff\] monthly_fee in .*c\.toml"):
        b.from_store(store, cfg.load(path, env={}), "2026-10", now=NOW)


def test_a_pack_that_claims_local_down_is_caught():
    class Greedy(StandIn):
        def compute(self, outages, tickets, tariff, period, options):
            lan = next(o for o in outages if o.cls == "local_down")
            return RuleResult([Item("downtime", Decimal("1.00"), {"seconds": 1, "monthly_fee": 1,
                                                                  "period_seconds": 1}, [lan.id])])
    tariff = Tariff(FEE, "EUR", 1, "UTC")
    lan = Outage("home", "local_down", utc("2026-10-02T00:00:00+00:00"), utc("2026-10-02T01:00:00+00:00"))
    inputs = b.Inputs("files", tariff, tariff.period("2026-10"), [lan], [], {}, {}, NOW)
    with pytest.raises(RuntimeError, match="claimed local_down/unknown"):
        b.build(inputs, Greedy(), {})


def test_outages_before_the_period_reach_the_pack_when_a_ticket_needs_them(store, scenario, conf):
    """A ticket still open in November (T2) reaches back to its report on 31 Oct: the pack
    sees E whole, and the claim lists E because it runs into November."""
    seen: list[list[Outage]] = []

    class Spy(StandIn):
        def compute(self, outages, tickets, tariff, period, options):
            seen.append(list(outages))
            return super().compute(outages, tickets, tariff, period, options)

    claim = b.build(b.from_store(store, conf, "2026-11", now=NOW), Spy(), {"factor": 1})
    starts = [o.start for o in seen[0]]
    assert utc("2026-10-31T22:00:00+00:00") in starts
    assert utc("2026-10-25T00:30:00+00:00") not in starts  # before T2's report: not needed
    assert [t["number"] for t in claim["tickets"]] == ["T2"]
    assert claim["tickets"][0]["outages"][:1] == ["home@2026-10-31T22:00:00.000Z"]

