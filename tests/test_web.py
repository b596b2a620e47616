"""The web UI and its JSON API over real HTTP (uvicorn on a loopback port), on SQLite
and on the real PostgreSQL: what each endpoint says of seeded records, and who may do
what (login, back-off, CSRF, cross-origin, host names)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from zoneinfo import ZoneInfo

import pytest
import requests
import sqlalchemy as sa

from testing.records import HOUR, MIN, T0, Board, ingest
from testing.webconfig import make_config
from wanwitness import config as cfg
from wanwitness import store as s
from wanwitness.collector import protocol
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import IngestMetrics, Ingestor, Message
from wanwitness.collector.ledger import make_checkpoint
from wanwitness.store import open_store
from wanwitness.web import auth
from wanwitness.web.app import WebSettings, create_app
from wanwitness.web.server import WebServer, bind

SEC = 1000
NOW = T0 + 6 * HOUR
SEEDED_RECORDS = 7  # what seed() stores for `home` (the next record's seq follows)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def seed(store):
    """Agent `home`: a boot, a 30-minute isp_down (ended), then a local_down going on,
    and a heartbeat with the board's health. Agent `attic`: registered, never seen."""
    add_agent(store, "home", hb_s=30)
    add_agent(store, "attic", hb_s=30)
    ing = Ingestor(store)
    b = Board(ing, "home")
    b.boot, b.boot_utc = 1, T0
    b.rec("boot", T0, reset="WDT_RESET", fw="0.1.0", hw="Generic ESP32 module with ESP32", safe=False,
          hb_s=30)
    b.state("isp_down", T0 + HOUR, bound=T0 + HOUR - 2 * SEC,
            ev={"anchors": {"ok": 0, "of": 3}, "gateway": "ok"})
    b.state("up", T0 + HOUR + 30 * MIN)
    b.rec("led", NOW - 10 * MIN - 2 * SEC, ch="internet", st="off", at=b.t(NOW - 10 * MIN - 2 * SEC))
    b.rec("probe", NOW - 10 * MIN - SEC, tg="gw:192.0.2.1", kind="icmp", ok=False, rtt=None,
          err="timeout")
    b.rec("probe", NOW - 10 * MIN - SEC, tg="198.51.100.7", kind="icmp", ok=True, rtt=23, err=None)
    b.state("local_down", NOW - 10 * MIN, ev={"gateway": "fail"})
    beat = {"boot": 1, "t": b.t(NOW), "s": "local_down", "heap": 23456, "peak": 41000, "q": 3,
            "rssi": -61, "safe": False, "fe": 12}
    ingest(ing, Message("wanwitness/home/hb", json.dumps(beat).encode(), NOW))
    return store


def line_back(store) -> None:
    """`home`'s line comes back 30 s after NOW: a state record through the real ingest."""
    b = Board(Ingestor(store), "home", seq=SEEDED_RECORDS)
    b.boot, b.boot_utc = 1, T0
    b.state("up", NOW + 30 * SEC)


@pytest.fixture
def seeded(store):
    return seed(store)


class Web:
    """The app served on a free loopback port, and a browser-like session for it."""

    def __init__(self, store, *, loopback_only: bool = True, clock=None,
                 config: cfg.Config | None = None, now_ms: int = NOW + MIN,
                 ingest: IngestMetrics | None = None) -> None:
        self.store = store
        self.backoff = auth.Backoff(clock=clock) if clock else auth.Backoff()
        settings = WebSettings(tz=ZoneInfo("Europe/Berlin"), loopback_only=loopback_only,
                               config=config, events_poll_s=0.2,
                               status=lambda: {"home": "online"}, backoff=self.backoff,
                               now_ms=lambda: now_ms, ingest=ingest)
        self.server = WebServer(create_app(store, settings), bind("127.0.0.1", 0))
        self.server.start()
        self.base = f"http://127.0.0.1:{self.server.port}"
        self.http = requests.Session()

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.url(path), timeout=30, **kw)

    def token(self) -> str:
        return self.get("/api/v1/session").json()["csrf"]

    def send(self, method: str, path: str, body: dict, *, csrf: bool = True) -> requests.Response:
        headers = {auth.CSRF_HEADER: self.token()} if csrf else {}
        return self.http.request(method, self.url(path), json=body, headers=headers, timeout=30)

    def close(self) -> None:
        self.http.close()
        self.server.stop()


@contextmanager
def seeded_web(directory):
    """The seeded store on SQLite in `directory`, served."""
    store = seed(open_store(f"sqlite:///{directory}/w.db"))
    web = Web(store, config=make_config(directory))
    try:
        yield web
    finally:
        web.close()
        store.dispose()


@pytest.fixture
def web(seeded, tmp_path):
    w = Web(seeded, config=make_config(tmp_path))
    yield w
    w.close()


# --- reading -------------------------------------------------------------------------

def test_agents_say_the_state_now_the_last_outage_and_the_boards_health(web):
    agents = {a["id"]: a for a in web.get("/api/v1/agents").json()}
    home = agents["home"]
    assert home["state"] == "local_down"
    assert home["since"] == "2026-11-03T11:50:00.000Z"
    assert home["last_outage"]["class"] == "isp_down"
    assert home["last_outage"]["start"] == "2026-11-03T07:00:00.000Z"
    assert home["last_outage"]["end"] == "2026-11-03T07:30:00.000Z"
    assert (home["heap_free"], home["heap_peak"], home["rssi"], home["outbox"]) == (23456, 41000, -61, 3)
    assert (home["firmware"], home["reset_cause"], home["safe_mode"]) == ("0.1.0", "WDT_RESET", False)
    assert home["hardware"] == "Generic ESP32 module with ESP32"
    assert home["last_heartbeat"] == "2026-11-03T12:00:00.000Z"
    assert home["status"] == "online"
    attic = agents["attic"]
    assert attic["state"] == "never_seen" and attic["last_seen"] is None and attic["heap_free"] is None
    # What the witness sees: each LED's and each target's newest word.
    assert home["sees"]["leds"] == {"internet": {"state": "off", "received": "2026-11-03T11:49:58.000Z"}}
    assert home["sees"]["targets"]["gw:192.0.2.1"]["ok"] is False
    assert home["sees"]["targets"]["gw:192.0.2.1"]["error"] == "timeout"
    assert home["sees"]["targets"]["198.51.100.7"]["rtt_ms"] == 23
    assert attic["sees"] == {"leds": {}, "targets": {}}


def test_outages_filter_by_class_and_time_and_export_csv(web):
    every = web.get("/api/v1/outages", params={"agent": "home"}).json()
    assert [o["class"] for o in every] == ["isp_down", "local_down"]
    assert every[0]["start_uncertainty_s"] == 2.0
    assert every[0]["evidence"]["ev"] == {"anchors": {"ok": 0, "of": 3}, "gateway": "ok"}
    assert every[1]["end"] is None
    only = web.get("/api/v1/outages", params={"class": "isp_down"}).json()
    assert [o["class"] for o in only] == ["isp_down"]
    late = web.get("/api/v1/outages", params={"since": "2026-11-03T10:00:00Z"}).json()
    assert [o["class"] for o in late] == ["local_down"]
    csv = web.get("/api/v1/outages.csv", params={"agent": "home"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0] == "agent,class,start,end,start_uncertainty_s,evidence"
    assert lines[1].startswith("home,isp_down,2026-11-03T07:00:00.000Z,2026-11-03T07:30:00.000Z,2.0,")


@pytest.mark.parametrize("path, params, status, message", [
    ("outages", {"since": "yesterday"}, 422, "since: use a date or a date and time, e.g. 2026-11-03"),
    ("outages", {"until": "2026-13-03"}, 400, "since/until: use an ISO 8601 date or time"),
    ("outages", {"since": "2026-11-04", "until": "2026-11-03"}, 400, "until must be later than since"),
    ("outages", {"class": "isp_up"}, 422, "class:"),
    ("outages", {"agent": "ghost"}, 404, "no agent named 'ghost'"),
    ("claims/preview", {"period": "2026-13"}, 400, "period"),
    ("claims/preview", {"period": "Nov"}, 422, "period:"),
    ("claims/preview", {"period": "2026-11", "rules": "xx-none"}, 400, "xx-none"),
    ("claims/download", {"period": "2026-11"}, 422, "format: Field required"),
])
def test_a_bad_query_is_a_clear_error(web, path, params, status, message):
    r = web.get(f"/api/v1/{path}", params=params)
    assert r.status_code == status
    assert message in r.json()["detail"]


def test_the_ledger_reports_its_chains_and_a_verification_kept_for_later(web, seeded):
    before = web.get("/api/v1/ledger").json()
    assert before["count"] == SEEDED_RECORDS and before["last_verify"] is None
    [chain] = before["chains"]
    assert (chain["agent"], chain["links"], len(chain["head"])) == ("home", SEEDED_RECORDS, 64)
    assert before["checkpoint"] is None
    make_checkpoint(seeded)
    r = web.send("POST", "/api/v1/ledger/verify", {})
    assert r.status_code == 200
    cp = r.json()["checkpoint"]
    assert (cp["checkpoint"], cp["agents"], cp["links"], cp["stamps"]) == (1, 1, SEEDED_RECORDS, 0)
    done = r.json()["last_verify"]
    assert done["ok"] is True and done["count"] == SEEDED_RECORDS and done["checkpoint"] == 1
    assert web.get("/api/v1/ledger").json()["last_verify"] == done
    page = web.get("/agents").text
    assert f"root <code>{cp['root']}</code>" in page and f"home: {SEEDED_RECORDS}" in page


def test_the_ledger_verification_names_a_broken_link(web, seeded):
    with seeded.engine.begin() as conn:
        conn.execute(s.records.update().where(s.records.c.seq == 2)
                     .values(body=s.records.c.body + " "))
    done = web.send("POST", "/api/v1/ledger/verify", {}).json()["last_verify"]
    assert done["ok"] is False and done["broken_at"] == "agent home link 2 (seq 2)"


def test_the_pages_show_the_state_and_the_outages_in_the_contracts_time_zone(web):
    now = web.get("/")
    assert now.status_code == 200
    assert 'data-agent="home"' in now.text and "local down" in now.text
    assert "2026-11-03 12:50:00" in now.text  # 11:50Z in Berlin
    table = web.get("/outages", params={"class": "isp_down"})
    assert "2026-11-03 08:00:00" in table.text and "30m 00s" in table.text
    assert "local down" not in table.text.split("<tbody>")[1]


# --- tickets ---------------------------------------------------------------------------

def test_a_ticket_is_added_linked_by_time_and_closed(web):
    r = web.send("POST", "/api/v1/tickets", {"number": "4711", "opened": "2026-11-03 08:10",
                                             "channel": "phone", "operator": "17 / Maria"})
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["opened"] == "2026-11-03T07:10:00Z"  # Berlin local time in, UTC out
    assert len(t["outages"]) == 1  # the isp_down it reported
    r = web.send("PATCH", "/api/v1/tickets/4711", {"closed": "2026-11-03T09:00:00+01:00"})
    assert r.status_code == 200 and r.json()["closed"] == "2026-11-03T08:00:00Z"
    assert [x["number"] for x in web.get("/api/v1/tickets").json()] == ["4711"]


@pytest.mark.parametrize("method, path, body, status, message", [
    ("POST", "/api/v1/tickets", {"number": "1", "opened": "3 Nov"}, 422, "opened: use a date or"),
    ("POST", "/api/v1/tickets", {"number": "1", "opened": "2026-11-03 02:30+0100"}, 422, "opened:"),
    ("POST", "/api/v1/tickets", {"number": "1", "opened": "2026-03-29 02:30"}, 400,
     "does not exist in Europe/Berlin"),
    ("POST", "/api/v1/tickets", {"number": "1", "opened": "2026-11-03 08:10", "channel": "fax"},
     422, "channel: Input should be 'phone', 'email', 'app' or 'office'"),
    ("POST", "/api/v1/tickets", {"number": " ", "opened": "2026-11-03 08:10"}, 422,
     "number: not blank"),
    ("POST", "/api/v1/tickets", {"number": "1", "opened": "2026-11-03 08:10", "x": 1}, 422, "x:"),
    ("PATCH", "/api/v1/tickets/404", {"note": "?"}, 404, "no ticket '404'"),
])
def test_a_bad_ticket_is_refused_with_what_is_wrong(web, method, path, body, status, message):
    r = web.send(method, path, body)
    assert r.status_code == status
    assert message in r.json()["detail"]
    assert web.get("/api/v1/tickets").json() == []


def test_a_ticket_cannot_close_before_it_opened_and_stays_as_it_was(web):
    assert web.send("POST", "/api/v1/tickets", {"number": "7", "opened": "2026-11-03 08:10"}).ok
    r = web.send("PATCH", "/api/v1/tickets/7", {"closed": "2026-11-02 08:10"})
    assert r.status_code == 400 and "is before opened" in r.json()["detail"]
    assert web.get("/api/v1/tickets").json()[0]["closed"] is None


def test_the_ticket_form_adds_a_ticket_and_shows_a_mistake_with_the_input_kept(web):
    page = web.get("/tickets")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    bad = web.http.post(web.url("/tickets"), data={"csrf": token, "number": "88",
                                                   "opened": "soon", "operator": "Bob"})
    assert bad.status_code == 400 and "not a date/time" in bad.text and 'value="Bob"' in bad.text
    ok = web.http.post(web.url("/tickets"), data={"csrf": token, "number": "88",
                                                  "opened": "2026-11-03 08:10"})
    assert ok.status_code == 200 and ok.url.endswith("/tickets")  # after the redirect
    assert '<td data-label="Number">88</td>' in ok.text


# --- who may do what -------------------------------------------------------------------

def test_changes_need_the_sessions_csrf_token(web):
    r = web.send("POST", "/api/v1/tickets", {"number": "1", "opened": "2026-11-03 08:10"}, csrf=False)
    assert r.status_code == 403 and auth.CSRF_HEADER in r.json()["detail"]
    other = requests.Session()
    stolen = other.get(web.url("/api/v1/session")).json()["csrf"]  # another session's token
    r = web.http.post(web.url("/api/v1/tickets"), json={"number": "1", "opened": "2026-11-03 08:10"},
                      headers={auth.CSRF_HEADER: stolen})
    assert r.status_code == 403
    form = web.http.post(web.url("/tickets"), data={"csrf": "", "number": "1",
                                                    "opened": "2026-11-03 08:10"})
    assert form.status_code == 403 and "reload the page" in form.text
    assert web.get("/api/v1/tickets").json() == []


def test_a_request_from_another_site_is_refused_even_with_a_token(web):
    token = web.token()
    r = web.http.post(web.url("/api/v1/tickets"), json={"number": "1", "opened": "2026-11-03 08:10"},
                      headers={auth.CSRF_HEADER: token, "Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]


def test_on_loopback_only_loopback_host_names_are_served(web):
    # DNS rebinding: a page on evil.example whose name now points at 127.0.0.1.
    r = web.get("/api/v1/agents", headers={"Host": f"evil.example:{web.server.port}"})
    assert r.status_code == 400
    assert web.get("/api/v1/agents", headers={"Host": f"localhost:{web.server.port}"}).ok


def test_with_a_password_everything_needs_a_login_and_failures_back_off(seeded):
    auth.set_password(seeded, "correct horse")
    clock = FakeClock()
    web = Web(seeded, loopback_only=False, clock=clock)
    try:
        assert web.get("/api/v1/agents").status_code == 401
        page = web.get("/", allow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
        assert web.get("/static/style.css").ok  # the login page needs its style
        codes = [web.send("POST", "/api/v1/login", {"password": "wrong"}).status_code
                 for _ in range(4)]
        assert codes == [401, 401, 401, 401]  # three free, the fourth costs 1 s
        r = web.send("POST", "/api/v1/login", {"password": "correct horse"})
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        clock.now += 1.5
        r = web.send("POST", "/api/v1/login", {"password": "correct horse"})
        assert r.status_code == 200 and r.json()["logged_in"] is True
        assert web.get("/api/v1/agents").ok
        # A new password ends the session made under the old one.
        auth.set_password(seeded, "battery staple")
        assert web.get("/api/v1/agents").status_code == 401
    finally:
        web.close()


def test_the_login_form_logs_in_and_out(seeded):
    auth.set_password(seeded, "correct horse")
    web = Web(seeded, loopback_only=False)
    try:
        form = web.get("/login?next=/outages")
        token = form.text.split('name="csrf" value="')[1].split('"')[0]
        wrong = web.http.post(web.url("/login"), data={"csrf": token, "password": "nope",
                                                       "next": "/outages"})
        assert wrong.status_code == 401 and "wrong password" in wrong.text
        ok = web.http.post(web.url("/login"), data={"csrf": token, "password": "correct horse",
                                                    "next": "//evil.example/"})
        assert ok.url == web.url("/")  # not to another site
        cookie = next(c for c in web.http.cookies if c.name == "wanwitness_session")
        assert cookie.has_nonstandard_attr("HttpOnly") or "httponly" in str(cookie._rest).lower()
        token = ok.text.split('name="csrf" value="')[1].split('"')[0]
        out = web.http.post(web.url("/logout"), data={"csrf": token})
        assert out.url.startswith(web.url("/login"))
        assert web.get("/api/v1/agents").status_code == 401
    finally:
        web.close()


def test_the_backoff_doubles_and_is_capped():
    clock = FakeClock()
    b = auth.Backoff(free=2, cap_s=10, clock=clock)
    assert [b.failed("a") for _ in range(7)] == [0, 0, 1, 2, 4, 8, 10]
    assert b.wait_s("a") == 10 and b.wait_s("b") == 0
    b.succeeded("a")
    assert b.wait_s("a") == 0


def test_a_short_web_password_is_refused(store):
    from wanwitness.errors import UserError
    with pytest.raises(UserError, match="at least 8 characters"):
        auth.set_password(store, "short")
    assert not auth.has_password(store)


# --- heartbeats --------------------------------------------------------------------------

def test_only_the_documented_health_fields_of_their_type_are_kept():
    beat = {"boot": 1, "t": 5, "heap": "lots", "peak": True, "q": 2, "rssi": -70, "safe": 1,
            "s": "x" * 40, "fe": 2**60, "extra": {"a": 1}}
    assert protocol.heartbeat_health(json.dumps(beat).encode()) == {"boot": 1, "t": 5, "q": 2,
                                                                    "rssi": -70}


def test_the_newest_heartbeat_of_a_commit_is_the_one_kept(store):
    add_agent(store, "home", hb_s=30)
    msgs = [Message("wanwitness/home/hb", json.dumps({"boot": 1, "t": t, "heap": h}).encode(), T0 + t)
            for t, h in ((2000, 2), (3000, 3), (1000, 1))]
    assert Ingestor(store).ingest(msgs).quarantined == 0
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(s.agents.c.last_hb, s.agents.c.last_hb_ms)).one()
    assert json.loads(row.last_hb)["heap"] == 3 and row.last_hb_ms == T0 + 3000


def test_off_loopback_a_password_removed_while_serving_locks_everyone_out(seeded):
    auth.set_password(seeded, "correct horse")
    web = Web(seeded, loopback_only=False)
    try:
        assert web.send("POST", "/api/v1/login", {"password": "correct horse"}).ok
        assert web.get("/api/v1/agents").ok
        seeded.set_setting(auth.PASSWORD_KEY, "")  # wanwitness web password --remove
        assert web.get("/api/v1/agents").status_code == 401
        assert web.get("/", allow_redirects=False).status_code == 303
    finally:
        web.close()


# --- latency and loss --------------------------------------------------------------------

ANCHOR, RESOLVER = "198.51.100.7", "dns:198.51.100.53"
OUT_FROM, OUT_TO = NOW - 30 * MIN, NOW - 20 * MIN      # every anchor probe lost
GAP_FROM, GAP_TO = NOW - 80 * MIN, NOW - 50 * MIN      # no heartbeat (the server was off)


def seed_latency(store) -> int:
    """`home`'s heartbeats every 30 s over the two hours to NOW, through the real ingest:
    the anchor answers 10 of 10 in 10/20/40 ms, except 10 minutes with all lost; the
    resolver always in 3/5/9 ms; no heartbeats for half an hour. Returns the count."""
    msgs = []
    for k in range(241):
        recv = NOW - 2 * HOUR + k * 30 * SEC
        if GAP_FROM <= recv < GAP_TO:
            continue
        anchor = [10, 10, None, None, None] if OUT_FROM <= recv < OUT_TO else [10, 0, 10, 20, 40]
        beat = {"boot": 1, "t": recv - T0, "lat": {ANCHOR: anchor, RESOLVER: [10, 0, 3, 5, 9]}}
        msgs.append(Message("wanwitness/home/hb", json.dumps(beat).encode(), recv))
    assert Ingestor(store).ingest(msgs).quarantined == 0
    return len(msgs)


def test_latency_says_round_trips_and_loss_per_target_and_leaves_gaps_empty(seeded, tmp_path):
    beats = seed_latency(seeded)
    web = Web(seeded, config=make_config(tmp_path), now_ms=NOW)
    try:
        d = web.get("/api/v1/latency?agent=home&range=day").json()
        assert (d["agent"], d["range"], d["step_s"]) == ("home", "day", 300)
        assert [t["target"] for t in d["targets"]] == [ANCHOR, RESOLVER]   # gateway, anchors, dns
        pts = {p["ms"]: p for p in d["targets"][0]["points"]}
        # 25 five-minute buckets over two hours, less the 6 without a heartbeat
        assert len(pts) == 19
        assert not [ms for ms in pts if GAP_FROM <= ms < GAP_TO]
        assert pts[NOW - 100 * MIN] == {"t": "2026-11-03T10:20:00.000Z", "ms": NOW - 100 * MIN, "sent": 100,
                                   "lost": 0, "loss_pct": 0.0, "min": 10, "typical": 20, "max": 40}
        assert (pts[OUT_FROM]["loss_pct"], pts[OUT_FROM]["min"], pts[OUT_FROM]["typical"]) == (100.0, None, None)
        assert sum(p["sent"] for p in pts.values()) == beats * 10
        week = web.get("/api/v1/latency?agent=home&range=week").json()
        assert week["step_s"] == 1800
        assert sum(p["sent"] for p in week["targets"][1]["points"]) == beats * 10

        page = web.get("/latency?agent=home").text
        assert page.count('<figure class="lat"') == 2
        chart = page[page.index(f'data-target="{ANCHOR}"'):page.index(f'data-target="{RESOLVER}"')]
        # three runs with times: before the gap, between the gap and the loss, after it
        assert chart.count('class="band"') == 3 and chart.count('class="typical"') == 3
        assert chart.count('class="loss all"') == 2
        assert "typically 20 ms, slowest 40 ms" in chart
    finally:
        web.close()


def test_latency_for_an_agent_without_summaries_and_bad_parameters(web):
    r = web.get("/api/v1/latency?agent=attic")
    assert r.ok and r.json()["targets"] == []
    assert "No round-trip summaries from attic" in web.get("/latency?agent=attic").text
    bad = web.get("/api/v1/latency?range=fortnight")
    assert bad.status_code == 422 and "range" in bad.json()["detail"]
    nobody = web.get("/api/v1/latency?agent=nobody")
    assert nobody.status_code == 404 and "nobody" in nobody.json()["detail"]


# --- the claim ---------------------------------------------------------------------------

def test_the_claim_preview_counts_the_reported_isp_down_under_the_configured_rules(web):
    assert web.send("POST", "/api/v1/tickets", {"number": "4711", "opened": "2026-11-03 08:10"}).ok
    claim = web.get("/api/v1/claims/preview", params={"period": "2026-11"}).json()
    assert claim["rules"]["name"] == "de-tkg58" and claim["period"]["label"] == "2026-11"
    assert claim["currency"] == "EUR" and claim["tickets"][0]["number"] == "4711"
    [isp] = [o for o in claim["outages"] if o["class"] == "isp_down"]
    assert isp["start"].startswith("2026-11-03T07:00:00") and isp["duration_s"] == 1800.0
    [local] = [o for o in claim["outages"] if o["class"] == "local_down"]
    assert local["claimed"] is False  # your own equipment is never claimed
    # A 30-minute fault fixed within TKG §58's grace days is owed nothing.
    assert claim["total"] == "0.00"


def test_the_claim_downloads_as_a_pdf_letter_and_an_evidence_bundle(web):
    pdf = web.get("/api/v1/claims/download", params={"period": "2026-11", "format": "pdf"})
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    assert 'filename="claim-2026-11-de-tkg58.pdf"' in pdf.headers["content-disposition"]
    csv = web.get("/api/v1/claims/download", params={"period": "2026-11", "format": "csv"})
    assert csv.status_code == 200 and csv.text.startswith("period,rules,kind,description,amount,")
    z = web.get("/api/v1/claims/evidence", params={"period": "2026-11"})
    assert z.status_code == 200 and z.content.startswith(b"PK")
    import io
    import zipfile
    assert "verify.py" in zipfile.ZipFile(io.BytesIO(z.content)).namelist()


def test_the_claim_page_shows_the_total_the_evidence_and_the_downloads(web):
    page = web.get("/claim", params={"period": "2026-11"})
    assert page.status_code == 200
    assert "0.00 EUR" in page.text and "de-tkg58" in page.text
    assert "No ticket in this period" in page.text
    assert "/api/v1/claims/download?period=2026-11&amp;rules=de-tkg58&amp;lang=en&amp;format=pdf" in page.text
    bad = web.get("/claim", params={"period": "2026-13"})
    assert bad.status_code == 200 and 'class="error"' in bad.text


# --- the calendar ------------------------------------------------------------------------

def test_the_calendar_draws_each_day_and_never_across_a_gap(web):
    assert web.send("POST", "/api/v1/tickets", {"number": "4711", "opened": "2026-11-03 08:10"}).ok
    cal = web.get("/api/v1/calendar", params={"period": "2026-11", "agent": "home"}).json()
    assert cal["period"] == "2026-11" and len(cal["days"]) == 30 and cal["timezone"] == "Europe/Berlin"
    day = {d["date"]: d for d in cal["days"]}
    nov3 = day["2026-11-03"]
    by = {s["cls"]: s for s in nov3["segments"]}
    # Heard from 07:00 local (06:00Z); an isp_down 08:00-08:30 local = 1/3..1/3+1/48 of the day.
    assert by["up"]["left"] == pytest.approx(100 * 7 / 24, abs=0.01)
    assert by["isp_down"]["left"] == pytest.approx(100 * 8 / 24, abs=0.01)
    assert by["isp_down"]["width"] == pytest.approx(100 * 0.5 / 24, abs=0.01)
    assert by["local_down"]["left"] == pytest.approx(100 * (12 + 50 / 60) / 24, abs=0.01)
    # The app's now is 13:01 local: the local_down ends there and nothing is drawn after it.
    assert by["up"]["left"] + by["up"]["width"] == pytest.approx(100 * (13 + 1 / 60) / 24, abs=0.01)
    assert nov3["down_s"] == 1800 + 11 * 60
    assert day["2026-11-02"]["segments"] == []  # before the first contact: empty, not up
    assert day["2026-11-04"]["segments"] == [] and day["2026-11-04"]["future"]
    kinds = [(m["kind"], m["title"]) for m in nov3["marks"]]
    assert ("opened", "08:10:00 ticket 4711 reported") in kinds
    # de-tkg58: day 3 after a report received on 3 Nov is 6 Nov, day 5 is 8 Nov.
    assert [m["title"][:17] for m in day["2026-11-06"]["marks"]] == ["00:00:00 ticket 4"]
    assert "day 3" in day["2026-11-06"]["marks"][0]["title"]
    assert "day 5" in day["2026-11-08"]["marks"][0]["title"]


def test_a_day_the_clocks_change_is_23_hours_long(web):
    cal = web.get("/api/v1/calendar", params={"period": "2026-03"}).json()
    hours = {d["date"]: d["hours"] for d in cal["days"]}
    assert hours["2026-03-29"] == 23 and hours["2026-03-28"] == 24


def test_the_calendar_page_shows_the_strips_and_moves_between_periods(web):
    page = web.get("/calendar", params={"period": "2026-11", "agent": "home"})
    assert page.status_code == 200
    assert page.text.count('class="cal-row') == 31  # the axis and 30 days
    assert 'data-class="isp_down"' in page.text and 'data-kind="deadline"' not in page.text
    assert 'href="/calendar?period=2026-10&amp;agent=home"' in page.text
    assert web.get("/calendar", params={"agent": "ghost"}).status_code == 404


def test_an_outage_shows_the_ledger_records_it_was_derived_from(web):
    d = web.get("/api/v1/outage", params={"agent": "home", "start": "2026-11-03T07:00:00.000Z"}).json()
    assert d["outage"]["class"] == "isp_down" and d["duration_s"] == 1800
    assert [(r["seq"], r["role"], r["kind"]) for r in d["records"]] == [
        (2, "opened it", "state"), (3, "closed it", "state")]
    assert d["records"][0]["body"]["ev"] == {"anchors": {"ok": 0, "of": 3}, "gateway": "ok"}
    assert all(len(r["hash"]) == 64 and r["link"] == r["seq"] for r in d["records"])
    page = web.get("/outages", params={"agent": "home"})
    link = "/outage?agent=home&amp;start=2026-11-03T07%3A00%3A00.000Z"
    assert link in page.text
    detail = web.get(link.replace("&amp;", "&"))
    assert detail.status_code == 200 and "opened it" in detail.text and "closed it" in detail.text
    missing = web.get("/api/v1/outage", params={"agent": "home", "start": "2026-11-03T07:00:01.000Z"})
    assert missing.status_code == 404 and "no outage of 'home' starts at" in missing.json()["detail"]


def test_an_agent_is_revoked_only_when_its_name_is_typed(web, seeded):
    page = web.get("/agents")
    assert page.status_code == 200 and 'data-agent="home"' in page.text and "23456 B" in page.text
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    wrong = web.http.post(web.url("/agents/home/revoke"), data={"csrf": token, "confirm": "hom"})
    assert wrong.status_code == 400 and "type its name" in wrong.text
    ok = web.http.post(web.url("/agents/home/revoke"), data={"csrf": token, "confirm": "home"})
    assert ok.status_code == 200 and "(revoked)" in ok.text
    from wanwitness.collector.agents import check_agent_password, list_agents
    assert [a.enabled for a in list_agents(seeded) if a.id == "home"] == [False]
    assert not check_agent_password(seeded, "home", "anything")
    r = web.send("POST", "/api/v1/agents/ghost/revoke", {})
    assert r.status_code == 404 and "no agent named 'ghost'" in r.json()["detail"]


def test_the_live_stream_sends_the_states_at_once_and_again_when_one_changes(web, seeded):
    def events(lines):
        kind = None
        for raw in lines:
            line = raw.decode() if isinstance(raw, bytes) else raw
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "agents":
                yield {a["id"]: a for a in json.loads(line[6:])}

    with web.http.get(web.url("/api/v1/events"), stream=True, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = events(r.iter_lines())
        first = next(stream)
        assert first["home"]["state"] == "local_down" and first["attic"]["state"] == "never_seen"
        # The line comes back: a record through the real ingest path.
        line_back(seeded)
        second = next(stream)
        assert second["home"]["state"] == "up" and second["home"]["since"] == "2026-11-03T12:00:30.000Z"
    assert web.http.get(web.url("/api/v1/agents"), timeout=30).ok  # the server goes on


def test_without_a_login_the_live_stream_is_refused(seeded):
    auth.set_password(seeded, "correct horse")
    web = Web(seeded, loopback_only=False)
    try:
        assert web.get("/api/v1/events").status_code == 401
    finally:
        web.close()


def test_a_ticket_is_edited_and_gets_appointments_through_the_page_and_the_api(web):
    assert web.send("POST", "/api/v1/tickets", {"number": "4711", "opened": "2026-11-03 08:10"}).ok
    r = web.send("POST", "/api/v1/tickets/4711/appointments", {"at": "2026-11-05 08:00", "missed": True})
    assert r.status_code == 201 and r.json()["appointments"] == [{"at": "2026-11-05T07:00:00Z", "missed": True}]
    page = web.get("/tickets")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    edited = web.http.post(web.url("/tickets/4711/edit"), data={
        "csrf": token, "channel": "email", "operator": "Team B", "promised": "2026-11-06 18:00",
        "closed": "", "note": "second call"})
    assert edited.status_code == 200 and edited.url.endswith("/tickets")
    added = web.http.post(web.url("/tickets/4711/appointment"), data={"csrf": token, "at": "2026-11-07 09:00"})
    assert added.status_code == 200
    [t] = web.get("/api/v1/tickets").json()
    assert (t["channel"], t["operator"], t["promised"], t["note"]) == (
        "email", "Team B", "2026-11-06T17:00:00Z", "second call")
    assert t["appointments"] == [{"at": "2026-11-05T07:00:00Z", "missed": True},
                                 {"at": "2026-11-07T08:00:00Z", "missed": False}]
    bad = web.http.post(web.url("/tickets/4711/edit"), data={"csrf": token, "closed": "2026-11-01 00:00"})
    assert bad.status_code == 400 and "is before opened" in bad.text
    assert web.send("POST", "/api/v1/tickets/nope/appointments", {"at": "2026-11-05 08:00"}).status_code == 404


def test_a_bug_is_one_line_to_the_user_not_a_traceback(seeded, tmp_path, monkeypatch):
    from wanwitness.web import data as web_data

    def broken(*_a, **_k):
        raise KeyError("surprise")

    monkeypatch.setattr(web_data, "ledger", broken)
    web = Web(seeded, config=make_config(tmp_path))
    try:
        r = web.get("/api/v1/ledger")
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error: KeyError (details in the collector's log)"}
        assert "Traceback" not in web.get("/agents").text
    finally:
        web.close()
