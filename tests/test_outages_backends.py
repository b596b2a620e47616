"""SQLite and PostgreSQL give byte-identical outage output for the same records."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from testing.records import HOUR, MIN, T0, Board
from wanwitness.collector import timeline as tl
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.store import now_ms, open_store

SEC = 1000
HOME_BOOT_1, HOME_BOOT_2 = 3_141_592_653, 2_718_281_828  # > 2**31: BIGINT on both backends


def feed(store, t0: int) -> None:
    """Three agents, six hours from t0: every outage class, a retraction, a reboot
    mid-outage, unknown spans between boots and at the end, ongoing outages."""
    add_agent(store, "home", hb_s=30)
    add_agent(store, "shop", hb_s=60)
    add_agent(store, "office", hb_s=30)
    ing = Ingestor(store)
    home, shop, office = Board(ing, "home"), Board(ing, "shop"), Board(ing, "office")

    home.start(HOME_BOOT_1, t0)
    office.start(7, t0 + 123)
    home.hb(t0 + 10 * MIN)
    shop.start(100, t0 + 30 * MIN)
    home.state("isp_down", t0 + HOUR, t=t0 + HOUR + 6 * SEC, bound=t0 + HOUR - 2_500,
               ev={"anchors": {"ok": 0, "of": 3}, "gateway": "ok"})
    # The shop's LAN is down for 12 minutes: its records wait in the outbox.
    shop.state("local_down", t0 + HOUR, t=t0 + HOUR + 8 * SEC, bound=t0 + HOUR - 4 * SEC,
               ev={"gateway": "timeout"}, deliver=False)
    shop.rec("probe", t0 + HOUR + 30 * SEC, tg="gw", ok=False, deliver=False)
    shop.state("up", t0 + HOUR + 12 * MIN, deliver=False)
    shop.flush(t0 + HOUR + 12 * MIN + 5 * SEC)
    home.state("up", t0 + HOUR + 30 * MIN, ev={"anchors": {"ok": 3, "of": 3}})
    home.state("dns_down", t0 + 2 * HOUR, bound=t0 + 2 * HOUR - 3 * SEC, ev={"dns": "timeout"})
    home.state("isp_down", t0 + 2 * HOUR + 10 * MIN, bound=t0 + 2 * HOUR + 10 * MIN - SEC)
    home.state("up", t0 + 2 * HOUR + 20 * MIN)
    home.state("degraded", t0 + 3 * HOUR, ev={"loss_pct": 35})
    home.hb(t0 + 3 * HOUR + 5 * MIN)
    # Power cut: home comes back 15 minutes later with a new boot.
    home.start(HOME_BOOT_2, t0 + 3 * HOUR + 20 * MIN, reset="POWERON_RESET")
    office.state("degraded", t0 + 4 * HOUR + 1_234, bound=t0 + 4 * HOUR + 234,
                 ev={"loss_pct": 12.5, "note": "Wi-Fi – 2,4 GHz"})
    office.state("up", t0 + 4 * HOUR + 65_432)
    # An LED said the internet was off; the probes never agreed.
    home.state("isp_down", t0 + 4 * HOUR, ev={"led": {"internet": "off"}})
    home.state("up", t0 + 4 * HOUR + 20 * SEC, retract=True, ev={"anchors": {"ok": 3, "of": 3}})
    home.state("isp_down", t0 + 5 * HOUR, bound=t0 + 5 * HOUR - 2 * SEC)
    shop.state("isp_down", t0 + 5 * HOUR + 45 * MIN, bound=t0 + 5 * HOUR + 45 * MIN - SEC)
    home.hb(t0 + 5 * HOUR + 50 * MIN)  # then nothing more from home
    shop.hb(t0 + 5 * HOUR + 59 * MIN)
    office.hb(t0 + 6 * HOUR - 5 * SEC)


NOW = T0 + 6 * HOUR

EXPECTED = [  # (agent, class, start, end) relative to T0
    ("home", "isp_down", HOUR, HOUR + 30 * MIN),
    ("shop", "local_down", HOUR, HOUR + 12 * MIN),
    ("home", "dns_down", 2 * HOUR, 2 * HOUR + 10 * MIN),
    ("home", "isp_down", 2 * HOUR + 10 * MIN, 2 * HOUR + 20 * MIN),
    ("home", "degraded", 3 * HOUR, 3 * HOUR + 5 * MIN),               # agent restarted
    ("home", "unknown", 3 * HOUR + 5 * MIN, 3 * HOUR + 20 * MIN),
    ("office", "degraded", 4 * HOUR + 1_234, 4 * HOUR + 65_432),
    ("home", "isp_down", 5 * HOUR, 5 * HOUR + 50 * MIN),              # agent went silent
    ("shop", "isp_down", 5 * HOUR + 45 * MIN, None),                  # ongoing
    ("home", "unknown", 5 * HOUR + 50 * MIN, None),
]


@pytest.fixture
def both(sqlite_url, pg_url):
    stores = [open_store(sqlite_url), open_store(pg_url)]
    yield stores
    for st in stores:
        st.dispose()


def test_sqlite_and_postgresql_give_identical_outages(both):
    for st in both:
        feed(st, T0)
    lite, pg = both
    out = tl.query(lite, now_ms=NOW)
    assert [(o.agent, o.cls, o.start_ms - T0, None if o.end_ms is None else o.end_ms - T0)
            for o in out] == EXPECTED
    assert [o.start_uncertainty_ms for o in out] == [2_500, 4_000, 3_000, 1_000, None, None,
                                                     1_000, 2_000, 1_000, None]
    by_end = {o.evidence.get("end") for o in out}
    assert by_end == {None, "agent restarted", "agent silent"}

    text = tl.to_json(out)
    assert text == tl.to_json(tl.query(pg, now_ms=NOW))
    assert tl.to_csv(out) == tl.to_csv(tl.query(pg, now_ms=NOW))
    window = dict(agent="home", since_ms=T0 + 2 * HOUR + 15 * MIN, until_ms=T0 + 5 * HOUR,
                  now_ms=NOW)
    assert tl.to_json(tl.query(lite, **window)) == tl.to_json(tl.query(pg, **window))
    assert [o.cls for o in tl.query(lite, **window)] == ["isp_down", "degraded", "unknown"]

    doc = json.loads(text)
    assert doc[6]["start"] == "2026-11-03T10:00:01.234Z"
    assert doc[6]["evidence"]["ev"] == {"loss_pct": 12.5, "note": "Wi-Fi – 2,4 GHz"}
    assert doc[8]["end"] is None and doc[9]["end"] is None
    assert doc[4]["evidence"]["boot"] == HOME_BOOT_1


def test_cli_outages_json_is_identical_on_both_backends(sqlite_url, pg_url):
    """The `wanwitness outages --json` command, which takes `now` from the clock."""
    cli = pytest.importorskip("wanwitness.cli").cli
    t0 = now_ms() // 1000 * 1000 - 6 * HOUR
    for url in (sqlite_url, pg_url):
        st = open_store(url)
        feed(st, t0)
        st.dispose()
    runner = CliRunner()
    outputs = []
    for url in (sqlite_url, pg_url):
        res = runner.invoke(cli, ["outages", "--db", url, "--json"])
        assert res.exit_code == 0, res.output
        outputs.append(res.output)
    assert outputs[0] == outputs[1]
    doc = json.loads(outputs[0])
    assert [(o["agent"], o["class"]) for o in doc] == [e[:2] for e in EXPECTED]
    csvs = [runner.invoke(cli, ["outages", "--db", url, "--csv"]).output
            for url in (sqlite_url, pg_url)]
    assert csvs[0] == csvs[1] and csvs[0].startswith("agent,class,start,end,")
