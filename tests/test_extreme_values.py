"""Values beyond the protocol's bounds: refused at ingest, survived when already stored.

A store written before the bounds were checked may hold a record with t = 2^63-1. Its
boot's clock map then dates that agent's other records billions of years away; the
timeline leaves those spans out with a note, and every other agent's outages, the
outages table and the claim come out as they would without it.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from testing.records import rec_message
from tests.test_claims_build import at, october, write_config
from wanwitness.collector import protocol
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.store import open_store

HUGE = 2**63 - 1
RECV = at("2026-10-05T00:00:00+00:00")
# One batch: an outage opened at t=1000, closed by a record at t = 2^63-1. The batch's
# clock point is (2^63-1, RECV), so t=1000 maps to about -292 million years.
EVIL = [{"seq": 1, "t": 1000, "utc": None, "k": "state", "s": "isp_down", "at": 1000,
         "bound": None, "ev": {}},
        {"seq": 2, "t": HUGE, "utc": None, "k": "state", "s": "up", "at": HUGE, "bound": None,
         "ev": {}}]


def _store(tmp_path, name, monkeypatch=None):
    db = f"sqlite:///{tmp_path / name}"
    st = open_store(db)
    october(st)
    add_agent(st, "evil", hb_s=30)
    if monkeypatch is not None:
        # As the collector before the bounds stored it: t up to the BIGINT maximum.
        with monkeypatch.context() as m:
            m.setattr(protocol, "_T_RANGE", (0, HUGE, "the BIGINT maximum"))
            result = Ingestor(st).ingest([rec_message("evil", 1, EVIL, RECV)])
        assert result.stored == 2 and result.quarantined == 0
    st.dispose()
    return db


def test_a_record_with_t_2_63_is_quarantined_today(store):
    add_agent(store, "evil")
    result = Ingestor(store).ingest([rec_message("evil", 1, EVIL, RECV)])
    assert result.stored == 0 and result.reasons == [
        "invalid batch: recs[1].t: 9223372036854775807 is out of range "
        "(0..3155760000000: at most 100 years since boot)"]


@pytest.fixture
def stores(tmp_path, monkeypatch):
    return _store(tmp_path, "clean.db"), _store(tmp_path, "old.db", monkeypatch)


def test_outages_survive_a_stored_t_of_2_63_and_other_agents_are_unaffected(ww, stores):
    clean, old = stores
    note = ("note: agent 'evil': isp_down outage opened by record seq 1 (boot 1) left out: "
            "its start -9223370245696374807 ms is not a time between 2020 and 2100")
    for fmt in ((), ("--json",), ("--csv",)):
        proc = ww("outages", "--db", old, *fmt)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and note in proc.stderr
    got = json.loads(ww("outages", "--db", old, "--json").stdout)
    want = json.loads(ww("outages", "--db", clean, "--json").stdout)
    assert [r for r in got if r["agent"] == "home"] == [r for r in want if r["agent"] == "home"]
    assert len([r for r in want if r["agent"] == "home"]) >= 6
    # The bad boot's outage is not shown; the unknown span after its (sane) end is.
    assert [r["class"] for r in got if r["agent"] == "evil"] == ["unknown"]
    table = ww("outages", "--db", old).stdout
    assert "home" in table and "isp_down" in table
    rows = list(csv.DictReader(io.StringIO(ww("outages", "--db", old, "--csv").stdout)))
    assert {r["agent"] for r in rows} == {"home", "evil"}


def test_the_claim_survives_a_stored_t_of_2_63(ww, tmp_path, stores):
    clean, old = stores
    conf = str(write_config(tmp_path / "config.toml"))
    claim = ("--config", conf, "claim", "--period", "2026-10", "--rules", "de-tkg58")
    got, want = ww(*claim, "--db", old), ww(*claim, "--db", clean)
    assert got.returncode == 0 and want.returncode == 0, got.stderr
    assert "Traceback" not in got.stderr and "note: agent 'evil'" in got.stderr
    got_claim, want_claim = json.loads(got.stdout), json.loads(want.stdout)
    assert got_claim["items"] == want_claim["items"] and got_claim["total"] == want_claim["total"]
    csv_out = ww(*claim, "--db", old, "--format", "csv")
    assert csv_out.returncode == 0 and "note: agent 'evil'" in csv_out.stderr
    assert len(list(csv.DictReader(io.StringIO(csv_out.stdout)))) == len(want_claim["items"])
