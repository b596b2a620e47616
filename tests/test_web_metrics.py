"""Prometheus /metrics on the web listener: what it says of seeded records (SQLite and
the real PostgreSQL), that `promtool check metrics` accepts it, who may read it, and
that its counters behave as Prometheus needs (no step down, no timeline rebuilt for a
scrape that has nothing new)."""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import contextmanager

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from testing.records import HOUR, MIN, T0, Board, hb_message, ingest
from tests.test_web import NOW, SEC, Web, seed
from wanwitness import __version__
from wanwitness.collector import timeline
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import QUARANTINE_REASONS, Ingestor, Message, reason_label
from wanwitness.store import open_store
from wanwitness.web import auth
from wanwitness.web.metrics import StoreMetrics, registry

PROMTOOL = shutil.which("promtool")


@pytest.fixture
def seeded(store):
    return seed(store)


@pytest.fixture
def lite(tmp_path):
    """A fresh store on SQLite only (for what does not depend on the backend)."""
    st = open_store(f"sqlite:///{tmp_path}/m.db")
    yield st
    st.dispose()


@contextmanager
def served(store, **kw):
    web = Web(store, **kw)
    try:
        yield web
    finally:
        web.close()


def seed_porch(store, ingestor: Ingestor) -> Board:
    """Agent `porch`: two isp_down outages, of 30 s and of 90 s, both ended."""
    add_agent(store, "porch", hb_s=30)
    b = Board(ingestor, "porch")
    b.boot, b.boot_utc = 1, T0
    b.rec("boot", T0, reset="PWRON_RESET", fw="0.1.0", safe=False, hb_s=30)
    b.state("isp_down", T0 + HOUR)
    b.state("up", T0 + HOUR + 30 * SEC)
    b.state("isp_down", T0 + 2 * HOUR)
    b.state("up", T0 + 2 * HOUR + 90 * SEC)
    return b


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def promtool_check(text: str) -> None:
    assert PROMTOOL, "promtool is missing (Debian: apt-get install prometheus; ./dev test installs it)"
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout + done.stderr)


@pytest.mark.integration  # promtool is a program of its own (./dev test installs it)
def test_the_metrics_of_a_seeded_collector_pass_promtool_and_say_what_the_store_holds(store):
    seed(store)
    ing = Ingestor(store)
    seed_porch(store, ing)
    with served(store, ingest=ing.metrics) as web:
        r = web.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        promtool_check(r.text)
        m = samples(r.text)
        # Two outages of 30 s and 90 s.
        assert value(m, "wanwitness_outage_seconds_total", agent="porch", **{"class": "isp_down"}) == 120
        assert value(m, "wanwitness_outages_total", agent="porch", **{"class": "isp_down"}) == 2
        # home: a 30-minute isp_down that ended; a local_down going on since NOW - 10 min,
        # witnessed up to the heartbeat at NOW (the app's clock is a minute later).
        assert value(m, "wanwitness_outage_seconds_total", agent="home", **{"class": "isp_down"}) == 1800
        assert value(m, "wanwitness_outages_total", agent="home", **{"class": "isp_down"}) == 1
        assert value(m, "wanwitness_outage_seconds_total", agent="home", **{"class": "local_down"}) == 600
        assert value(m, "wanwitness_outages_total", agent="home", **{"class": "local_down"}) == 0
        assert value(m, "wanwitness_outages_total", agent="attic", **{"class": "unknown"}) == 0
        # The line state, one series per state.
        assert value(m, "wanwitness_agent_line_state", agent="home", state="local_down") == 1
        assert value(m, "wanwitness_agent_line_state", agent="home", state="up") == 0
        # porch was last heard hours before the app's now: nobody knows (not counted yet).
        assert value(m, "wanwitness_agent_line_state", agent="porch", state="unknown") == 1
        assert value(m, "wanwitness_outage_seconds_total", agent="porch", **{"class": "unknown"}) == 0
        assert value(m, "wanwitness_agent_line_state", agent="attic", state="never_seen") == 1
        assert sum(v for (name, labels), v in m.items() if name == "wanwitness_agent_line_state"
                   and ("agent", "home") in labels) == 1
        assert value(m, "wanwitness_agent_line_state_since_timestamp_seconds", agent="home") == (NOW - 10 * MIN) / 1000
        # The board's health from its newest heartbeat; when it was last heard.
        assert value(m, "wanwitness_agent_heap_free_bytes", agent="home") == 23456
        assert value(m, "wanwitness_agent_wifi_rssi_dbm", agent="home") == -61
        assert value(m, "wanwitness_agent_outbox_records", agent="home") == 3
        assert value(m, "wanwitness_agent_last_seen_timestamp_seconds", agent="home") == NOW / 1000
        assert ("wanwitness_agent_heap_free_bytes", frozenset({("agent", "attic")})) not in m
        # Resets by cause, records in the ledger, the version.
        assert value(m, "wanwitness_agent_resets_total", agent="home", cause="WDT_RESET") == 1
        assert value(m, "wanwitness_agent_resets_total", agent="porch", cause="PWRON_RESET") == 1
        assert value(m, "wanwitness_records_ingested_total", agent="home") == 7
        assert value(m, "wanwitness_records_ingested_total", agent="porch") == 5
        assert value(m, "wanwitness_records_ingested_total", agent="attic") == 0
        assert value(m, "wanwitness_build_info", version=__version__) == 1
        # This process's ingest: every reason at 0 from the start, the commits timed.
        for reason in QUARANTINE_REASONS:
            assert value(m, "wanwitness_messages_quarantined_total", reason=reason_label(reason)) == 0
        commits = value(m, "wanwitness_ingest_commit_duration_seconds_count")
        assert commits == 5 and value(m, "wanwitness_ingest_commit_duration_seconds_bucket", le="+Inf") == 5

        # A malformed batch from porch is quarantined: its reason's counter goes up by one.
        bad = Message("wanwitness/porch/rec", b'{"v":1,"agent":"porch","boot":1,"recs":"x"}', NOW)
        assert ing.ingest([bad]).quarantined == 1
        r = web.get("/metrics")
        promtool_check(r.text)
        after = samples(r.text)
        assert value(after, "wanwitness_messages_quarantined_total", reason="invalid_batch") == 1
        assert value(after, "wanwitness_messages_quarantined_total", reason="unknown_agent") == 0
        assert value(after, "wanwitness_ingest_commit_duration_seconds_count") == commits + 1
        assert value(after, "wanwitness_records_ingested_total", agent="porch") == 5


def test_a_new_outage_and_new_records_show_at_the_next_scrape(seeded):
    with served(seeded) as web:
        before = samples(web.get("/metrics").text)
        assert value(before, "wanwitness_records_ingested_total", agent="home") == 7
        # home's line comes back 30 s after NOW: the local_down ends, 10 min 30 s long.
        b = Board(Ingestor(seeded), "home", seq=7)
        b.boot, b.boot_utc = 1, T0
        b.state("up", NOW + 30 * SEC)
        m = samples(web.get("/metrics").text)
        assert value(m, "wanwitness_records_ingested_total", agent="home") == 8
        assert value(m, "wanwitness_outages_total", agent="home", **{"class": "local_down"}) == 1
        assert value(m, "wanwitness_outage_seconds_total", agent="home", **{"class": "local_down"}) == 630
        assert value(m, "wanwitness_agent_line_state", agent="home", state="up") == 1
        assert value(m, "wanwitness_agent_line_state_since_timestamp_seconds", agent="home") == (NOW + 30 * SEC) / 1000


# --- who may read it -----------------------------------------------------------------------

def test_on_loopback_without_a_password_the_metrics_are_open_like_the_ui(seeded):
    with served(seeded) as web:
        assert web.get("/metrics").status_code == 200
        # Only loopback host names, as for every page (DNS rebinding).
        assert web.get("/metrics", headers={"Host": f"evil.example:{web.server.port}"}).status_code == 400
        # Not part of the JSON API's contract.
        assert "/metrics" not in web.get("/openapi.json").json()["paths"]


def test_off_loopback_the_metrics_need_the_token_or_a_login(seeded):
    auth.set_password(seeded, "correct horse")
    with served(seeded, loopback_only=False) as web:
        refused = requests.get(web.url("/metrics"), timeout=30)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "wanwitness web metrics-token" in refused.text
        assert "wanwitness_" not in refused.text
        token = auth.set_metrics_token(seeded)
        assert len(token) >= 40
        for header in ("Bearer wrong-token-of-some-length", f"Basic {token}", "Bearer", token,
                       f"Bearer {token}x"):
            r = requests.get(web.url("/metrics"), headers={"Authorization": header}, timeout=30)
            assert r.status_code == 401, header
        ok = requests.get(web.url("/metrics"), headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert ok.status_code == 200 and "wanwitness_agent_line_state{" in ok.text
        # The token opens /metrics only, not the UI or its API.
        assert requests.get(web.url("/api/v1/agents"), headers={"Authorization": f"Bearer {token}"},
                            timeout=30).status_code == 401
        # A session logged in with the web password may read it too (a browser).
        assert web.send("POST", "/api/v1/login", {"password": "correct horse"}).ok
        assert web.get("/metrics").status_code == 200
        # A new token voids the one before; removing it voids every one.
        newer = auth.set_metrics_token(seeded, "a-token-chosen-by-config-management")
        assert newer == "a-token-chosen-by-config-management"
        assert requests.get(web.url("/metrics"), headers={"Authorization": f"Bearer {token}"},
                            timeout=30).status_code == 401
        assert requests.get(web.url("/metrics"), headers={"Authorization": f"bearer {newer}"},
                            timeout=30).status_code == 200
        auth.remove_metrics_token(seeded)
        assert requests.get(web.url("/metrics"), headers={"Authorization": f"Bearer {newer}"},
                            timeout=30).status_code == 401


@pytest.mark.parametrize("token, message", [
    ("short", "at least 16 characters"),
    ("sixteen chars with spaces", "only letters, digits"),
    ("ümlaut-ümlaut-ümlaut", "only letters, digits"),
])
def test_a_metrics_token_that_cannot_work_is_refused(lite, token, message):
    from wanwitness.errors import UserError
    with pytest.raises(UserError, match=message):
        auth.set_metrics_token(lite, token)
    assert not auth.has_metrics_token(lite)


def test_a_store_that_cannot_be_read_is_one_line_and_503(seeded, monkeypatch):
    def away(_self):
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(StoreMetrics, "_collect", away)
    with served(seeded) as web:
        r = web.get("/metrics")
        assert r.status_code == 503
        assert r.text.startswith("the store cannot be read:") and r.text.count("\n") == 1
        assert "Traceback" not in r.text


def test_a_bug_while_scraping_is_one_line_of_text(seeded, monkeypatch):
    def broken(_self):
        raise KeyError("surprise")

    monkeypatch.setattr(StoreMetrics, "_collect", broken)
    with served(seeded) as web:
        r = web.get("/metrics")
        assert r.status_code == 500 and r.headers["content-type"].startswith("text/plain")
        assert r.text == "internal error: KeyError (details in the collector's log)\n"


# --- counters as Prometheus needs them --------------------------------------------------------

def _scrape(metrics: StoreMetrics) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in metrics.collect():
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_a_silent_agent_keeps_its_outage_counted_and_it_goes_on_when_heard_again(lite):
    add_agent(lite, "porch", hb_s=30)
    ing = Ingestor(lite)
    b = Board(ing, "porch")
    b.boot, b.boot_utc = 1, T0
    b.rec("boot", T0, reset="PWRON_RESET", fw="0.1.0", safe=False, hb_s=30)
    b.state("isp_down", T0 + HOUR)
    b.hb(T0 + HOUR + 60 * SEC)
    clock = [T0 + HOUR + 61 * SEC]
    metrics = StoreMetrics(lite, lambda: clock[0])
    cls = {"class": "isp_down"}
    m = _scrape(metrics)
    assert value(m, "wanwitness_outage_seconds_total", agent="porch", **cls) == 60
    assert value(m, "wanwitness_outages_total", agent="porch", **cls) == 0  # not ended
    # Silent for more than 3 heartbeat periods: the outage is cut at its last word and
    # an unknown span goes on; neither is counted as ended.
    clock[0] = T0 + HOUR + 10 * MIN
    m = _scrape(metrics)
    assert value(m, "wanwitness_agent_line_state", agent="porch", state="unknown") == 1
    assert value(m, "wanwitness_outage_seconds_total", agent="porch", **cls) == 60
    assert value(m, "wanwitness_outages_total", agent="porch", **cls) == 0
    assert value(m, "wanwitness_outage_seconds_total", agent="porch", **{"class": "unknown"}) == 0
    # Heard again, still down: the same outage goes on; then it ends.
    b.hb(T0 + HOUR + 11 * MIN)
    clock[0] = T0 + HOUR + 11 * MIN + SEC
    m = _scrape(metrics)
    assert value(m, "wanwitness_outage_seconds_total", agent="porch", **cls) == 11 * 60
    b.state("up", T0 + HOUR + 12 * MIN)
    m = _scrape(metrics)
    assert value(m, "wanwitness_outage_seconds_total", agent="porch", **cls) == 12 * 60
    assert value(m, "wanwitness_outages_total", agent="porch", **cls) == 1
    # A reboot after a long silence: the time nobody ran is an unknown span, counted
    # once it has ended.
    b.start(2, T0 + 3 * HOUR, reset="BROWNOUT_RESET")
    clock[0] = T0 + 3 * HOUR + SEC
    m = _scrape(metrics)
    assert value(m, "wanwitness_outages_total", agent="porch", **{"class": "unknown"}) == 1
    assert value(m, "wanwitness_outage_seconds_total", agent="porch", **{"class": "unknown"}) == (
        3 * HOUR - (HOUR + 12 * MIN)) / 1000
    assert value(m, "wanwitness_agent_resets_total", agent="porch", cause="BROWNOUT_RESET") == 1


def test_a_retracted_outage_never_makes_a_counter_go_down(lite):
    add_agent(lite, "porch", hb_s=30)
    b = Board(Ingestor(lite), "porch")
    b.boot, b.boot_utc = 1, T0
    b.rec("boot", T0, reset="PWRON_RESET", fw="0.1.0", safe=False, hb_s=30)
    b.state("isp_down", T0 + HOUR)
    b.hb(T0 + HOUR + 20 * SEC)
    metrics = StoreMetrics(lite, lambda: T0 + HOUR + 21 * SEC)
    cls = {"class": "isp_down"}
    assert value(_scrape(metrics), "wanwitness_outage_seconds_total", agent="porch", **cls) == 20
    # The agent withdraws it: the timeline no longer lists it, the counter stays.
    b.state("up", T0 + HOUR + 25 * SEC, retract=True)
    assert timeline.derive(lite, "porch", now_ms=T0 + HOUR + 26 * SEC) == []
    assert value(_scrape(metrics), "wanwitness_outage_seconds_total", agent="porch", **cls) == 20
    # A collector started now shows the lite's truth.
    fresh = StoreMetrics(lite, lambda: T0 + HOUR + 26 * SEC)
    assert value(_scrape(fresh), "wanwitness_outage_seconds_total", agent="porch", **cls) == 0


def test_a_scrape_derives_the_timeline_again_only_for_an_agent_heard_from(lite, monkeypatch):
    seed(lite)
    derived = []
    real = timeline.derive

    def counting(st, agent, **kw):
        derived.append(agent)
        return real(st, agent, **kw)

    monkeypatch.setattr(timeline, "derive", counting)
    metrics = StoreMetrics(lite, lambda: NOW + MIN)
    _scrape(metrics)
    assert sorted(derived) == ["attic", "home"]
    derived.clear()
    _scrape(metrics)
    assert derived == []
    beat = {"boot": 1, "t": NOW + 30 * SEC - T0, "heap": 20000, "q": 0, "rssi": -70}
    ingest(Ingestor(lite), Message("wanwitness/home/hb", json.dumps(beat).encode(), NOW + 30 * SEC))
    m = _scrape(metrics)
    assert derived == ["home"]
    assert value(m, "wanwitness_agent_heap_free_bytes", agent="home") == 20000
    assert value(m, "wanwitness_outage_seconds_total", agent="home", **{"class": "local_down"}) == 630
    # A heartbeat alone adds no record.
    assert value(m, "wanwitness_records_ingested_total", agent="home") == 7


def test_without_a_collector_in_the_process_there_are_no_ingest_metrics(lite):
    add_agent(lite, "home", hb_s=30)
    ingest(Ingestor(lite), hb_message("home", 1, 5, T0))
    names = {f.name for f in registry(lite, now_ms=lambda: T0).collect()}
    assert "wanwitness_messages_quarantined" not in names
    assert {"wanwitness_build", "wanwitness_outages", "process_cpu_seconds"} <= names


def test_the_readme_lists_every_metric_with_its_type(lite):
    from pathlib import Path

    from prometheus_client.exposition import generate_latest

    seed(lite)
    text = generate_latest(registry(lite, now_ms=lambda: NOW, ingest=Ingestor(lite).metrics)).decode()
    exposed = {line.split()[2]: line.split()[3] for line in text.splitlines()
               if line.startswith("# TYPE wanwitness_")}
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    listed = {}
    for line in readme.splitlines():
        if line.startswith("| `wanwitness_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            listed[cells[0].strip("`")] = cells[1]
    assert listed == exposed
