"""Several lines in one household ([lines.NAME]): each with its agents, tariff, ISP and
customer number; tickets belong to a line; `claim --line NAME` claims for one of them.

Two lines in October 2026 (Europe/Berlin): `home` (agent ww-home, 39.99 EUR at Example
Telecom) and `office` (agent ww-office, 59.00 EUR at Other Net). Both go down on 3 Oct
at the same hours; each line has its own ticket. Through the CLI as a user meets it."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from testing.records import Board
from tests.test_claims_build import CONFIG, at, utc
from wanwitness import config as cfg
from wanwitness import store as s
from wanwitness.claims import tickets as tk
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.errors import UserError
from wanwitness.store import open_store

BERLIN = tk.ZoneInfo("Europe/Berlin")

LINES = """
[claim]
rules = "pro-rata"

[lines.home]
agents = ["ww-home"]

[lines.office]
agents = ["ww-office"]
[lines.office.tariff]
monthly_fee = "59.00"
[lines.office.customer]
customer_number = "B-77"
[lines.office.isp]
name = "Other Net"
"""


def two_lines(store) -> None:
    ing = Ingestor(store)
    for name in ("ww-home", "ww-office"):
        add_agent(store, name, hb_s=30)
        board = Board(ing, name)
        board.start(1, at("2026-09-28T00:00:00+00:00"))
        board.state("isp_down", at("2026-10-03T08:00:00+00:00"))
        board.state("up", at("2026-10-03T14:00:00+00:00"))
        if name == "ww-office":  # a second outage only the office has
            board.state("isp_down", at("2026-10-20T08:00:00+00:00"))
            board.state("up", at("2026-10-20T10:00:00+00:00"))
        board.hb(at("2026-11-02T00:00:00+00:00"))


@pytest.fixture
def lines(tmp_path, ww):
    db = f"sqlite:///{tmp_path / 'w.db'}"
    st = open_store(db)
    two_lines(st)
    st.dispose()
    conf = tmp_path / "config.toml"
    conf.write_text(CONFIG + LINES)

    def run(*args: str):
        command, rest = args[0], args[1:]
        if command == "ticket":
            command, rest = f"ticket {rest[0]}", rest[1:]
        return ww("--config", str(conf), *command.split(), "--db", db, *rest)
    run.conf = conf  # type: ignore[attr-defined]
    run.db = db  # type: ignore[attr-defined]
    return run


def claimed(claim: dict) -> list[tuple[str, str]]:
    return [(o["agent"], o["start"]) for o in claim["outages"] if o["claimed"]]


def test_each_line_claims_its_own_agents_fee_and_isp(lines):
    assert lines("ticket", "add", "--number", "H1", "--opened", "2026-10-03 10:30",
                 "--line", "home").returncode == 0
    assert lines("ticket", "add", "--number", "O1", "--opened", "2026-10-03 10:40",
                 "--line", "office").returncode == 0
    home = lines("claim", "--period", "2026-10", "--line", "home")
    assert home.returncode == 0, home.stderr
    h = json.loads(home.stdout)
    assert h["line"] == "home" and h["monthly_fee"] == "39.99"
    assert h["isp"]["name"] == "Example Telecom" and h["customer"]["customer_number"] == "K-123"
    assert {o["agent"] for o in h["outages"]} == {"ww-home"}
    assert [t["number"] for t in h["tickets"]] == ["H1"]
    office = lines("claim", "--period", "2026-10", "--line", "office")
    assert office.returncode == 0, office.stderr
    o = json.loads(office.stdout)
    assert o["line"] == "office" and o["monthly_fee"] == "59.00"
    assert o["isp"]["name"] == "Other Net" and o["customer"]["customer_number"] == "B-77"
    assert o["customer"]["name"] == "Erika Mustermann"   # not overridden: the top-level one
    assert {x["agent"] for x in o["outages"]} == {"ww-office"}
    assert len(claimed(o)) == 2 and len(claimed(h)) == 1
    assert [t["number"] for t in o["tickets"]] == ["O1"]
    # the same six hours are worth more on the dearer line
    assert 0 < float(h["total"]) < float(o["total"])


def test_a_ticket_meets_only_its_own_lines_outages(lines):
    # Reported for the office while both lines were down: the home outage is not its fault.
    assert lines("ticket", "add", "--number", "O1", "--opened", "2026-10-03 10:40",
                 "--line", "office").returncode == 0
    listed = lines("ticket", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (o1,) = json.loads(listed.stdout)
    assert o1["line"] == "office" and o1["outages"] and all(
        i.startswith("ww-office@") for i in o1["outages"])
    table = lines("ticket", "list")
    assert table.stdout.split("\n")[0].split()[:2] == ["number", "line"]
    assert table.stdout.split("\n")[1].split()[:2] == ["O1", "office"]
    home = json.loads(lines("claim", "--period", "2026-10", "--line", "home").stdout)
    assert home["tickets"] == []


def test_with_several_lines_the_line_must_be_named(lines):
    for args in (("claim", "--period", "2026-10"),
                 ("ticket", "add", "--number", "X", "--opened", "2026-10-03 10:30")):
        proc = lines(*args)
        assert proc.returncode == 2
        assert "2 lines: pass --line NAME (home, office)" in proc.stderr
        assert "Traceback" not in proc.stderr
    unknown = lines("claim", "--period", "2026-10", "--line", "cellar")
    assert unknown.returncode == 2 and "no line 'cellar'" in unknown.stderr
    assert "(lines: home, office)" in unknown.stderr


def test_a_ticket_without_a_line_is_named_and_can_be_given_one(lines):
    # Recorded before the second line was configured: it names no line.
    st = open_store(lines.db)
    tk.add(st, tk.new_ticket("OLD", utc("2026-10-03T10:50:00+02:00"), tz=BERLIN))
    st.dispose()
    proc = lines("claim", "--period", "2026-10", "--line", "home")
    assert proc.returncode == 0, proc.stderr
    assert "ticket OLD names no line" in proc.stderr
    assert "wanwitness ticket edit OLD --line NAME" in proc.stderr
    assert json.loads(proc.stdout)["tickets"] == []
    edit = lines("ticket", "edit", "OLD", "--line", "home")
    assert edit.returncode == 0, edit.stderr
    after = lines("claim", "--period", "2026-10", "--line", "home")
    assert "OLD" not in after.stderr
    assert [t["number"] for t in json.loads(after.stdout)["tickets"]] == ["OLD"]
    bad = lines("ticket", "edit", "OLD", "--line", "attic")
    assert bad.returncode == 2 and "no line 'attic'" in bad.stderr


def test_one_line_needs_no_line_option_and_keeps_old_tickets(lines):
    conf = lines.conf
    conf.write_text(CONFIG + '[claim]\nrules = "pro-rata"\n[lines.home]\nagents = ["ww-home"]\n')
    st = open_store(lines.db)
    tk.add(st, tk.new_ticket("OLD", utc("2026-10-03T10:50:00+02:00"), tz=BERLIN))
    st.dispose()
    proc = lines("claim", "--period", "2026-10")
    assert proc.returncode == 0, proc.stderr
    claim = json.loads(proc.stdout)
    assert claim["line"] == "home" and [t["number"] for t in claim["tickets"]] == ["OLD"]
    assert {o["agent"] for o in claim["outages"]} == {"ww-home"}   # the office agent: no line


def test_without_lines_a_claim_covers_every_agent_as_before(lines):
    lines.conf.write_text(CONFIG + '[claim]\nrules = "pro-rata"\n')
    proc = lines("claim", "--period", "2026-10")
    assert proc.returncode == 0, proc.stderr
    claim = json.loads(proc.stdout)
    assert "line" not in claim
    assert {o["agent"] for o in claim["outages"]} == {"ww-home", "ww-office"}
    refused = lines("claim", "--period", "2026-10", "--line", "home")
    assert refused.returncode == 2 and "has no [lines.NAME] tables" in refused.stderr


@pytest.mark.parametrize("body, expected", [
    ('[lines.a]\nagents = ["x"]\n[lines.b]\nagents = ["x"]\n',
     "[lines.b]: agent 'x' is already in line 'a'"),
    ("[lines.a]\nagents = []\n", "[lines.a]: agents must list the ids"),
    ('[lines.a]\nagents = ["x"]\nfee = "1"\n', "[lines.a]: unknown key fee"),
    ('[lines.a]\nagents = ["x"]\n[lines.a.tariff]\nmonthly_fee = "abc"\n',
     "[lines.a.tariff] monthly_fee:"),
    ('[lines.a]\nagents = ["x"]\n[lines.a.tariff]\nfee = "1"\n', "unknown key [lines.a.tariff] fee"),
    ('[lines."a b"]\nagents = ["x"]\n', "a line's name is 1-32 letters"),
    ('lines = 3\n', "lines must be tables"),
])
def test_a_bad_lines_table_is_one_line_naming_it(tmp_path, ww, body, expected):
    path = tmp_path / "config.toml"
    path.write_text(body)
    with pytest.raises(UserError) as e:
        cfg.load(path, env={})
    assert expected in str(e.value) and str(path) in str(e.value)
    proc = ww("--config", str(path), "config", "show")
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_config_show_and_example_show_lines(lines, ww):
    shown = ww("--config", str(lines.conf), "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "[lines.office]" in shown.stdout and "tariff.monthly_fee = '59.00'" in shown.stdout
    example = ww("config", "example").stdout
    assert "#  [lines.home]" in example
    # the example's lines block, uncommented, is a valid config
    block = example[example.index("#  [lines.home]"):]
    path = lines.conf.parent / "example.toml"
    path.write_text("\n".join(x[3:] for x in block.split("\n") if x.startswith("#  ")))
    loaded = cfg.load(path, env={})
    assert [ln.name for ln in loaded.lines] == ["home", "office"]
    assert loaded.for_line("office").tariff.monthly_fee == "59.00"


# --- the web UI and its API ---------------------------------------------------------------

@pytest.fixture
def lines_web(tmp_path):
    from tests.test_web import Web
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    two_lines(store)
    path = tmp_path / "config.toml"
    path.write_text(CONFIG + LINES)
    web = Web(store, config=cfg.load(path, env={}), now_ms=at("2026-11-10T00:00:00+00:00"))
    yield web
    web.close()
    store.dispose()


def test_the_api_takes_a_line_for_tickets_and_claims(lines_web):
    web = lines_web
    nameless = web.send("POST", "/api/v1/tickets", {"number": "X1", "opened": "2026-10-03 10:30"})
    assert nameless.status_code == 400
    assert 'has 2 lines: pass "line": NAME (home, office)' in nameless.json()["detail"]
    made = web.send("POST", "/api/v1/tickets", {"number": "O1", "opened": "2026-10-03 10:40",
                                                "line": "office"})
    assert made.status_code == 201, made.text
    assert made.json()["line"] == "office"
    assert all(i.startswith("ww-office@") for i in made.json()["outages"])
    wrong = web.send("POST", "/api/v1/tickets", {"number": "O2", "opened": "2026-10-03 10:40",
                                                 "line": "cellar"})
    assert wrong.status_code == 400 and "no line 'cellar'" in wrong.json()["detail"]
    moved = web.send("PATCH", "/api/v1/tickets/O1", {"line": "home"})
    assert moved.status_code == 200 and moved.json()["line"] == "home"
    assert all(i.startswith("ww-home@") for i in moved.json()["outages"])

    office = web.get("/api/v1/claims/preview?period=2026-10&line=office")
    assert office.status_code == 200, office.text
    assert office.json()["line"] == "office" and office.json()["monthly_fee"] == "59.00"
    assert office.json()["tickets"] == []
    home = web.get("/api/v1/claims/preview?period=2026-10&line=home").json()
    assert [t["number"] for t in home["tickets"]] == ["O1"]
    none = web.get("/api/v1/claims/preview?period=2026-10")
    assert none.status_code == 400 and "(line=NAME)" in none.json()["detail"]
    csv = web.get("/api/v1/claims/download?period=2026-10&line=office&format=csv")
    assert csv.status_code == 200
    assert 'filename="claim-office-2026-10-pro-rata.csv"' in csv.headers["content-disposition"]
    bad = web.get("/api/v1/claims/preview?period=2026-10&line=a%20b")
    assert bad.status_code == 422 and "line" in bad.text   # refused by the pattern, never a 500


def test_the_web_reads_a_tickets_local_times_in_its_lines_timezone(tmp_path):
    # The office line is in London, the household's [tariff] in Berlin: "10:40" typed
    # for an office ticket is 10:40 in London (as `wanwitness ticket add --line office`
    # reads it), an hour later in UTC terms than Berlin's 10:40.
    from tests.test_web import Web
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    two_lines(store)
    path = tmp_path / "config.toml"
    path.write_text(CONFIG + LINES.replace('monthly_fee = "59.00"',
                                           'monthly_fee = "59.00"\ntimezone = "Europe/London"'))
    web = Web(store, config=cfg.load(path, env={}), now_ms=at("2026-11-10T00:00:00+00:00"))
    try:
        home = web.send("POST", "/api/v1/tickets", {"number": "H1", "opened": "2026-10-03 10:40",
                                                    "line": "home"})
        office = web.send("POST", "/api/v1/tickets", {"number": "O1", "opened": "2026-10-03 10:40",
                                                      "closed": "2026-10-03 15:00", "line": "office"})
        assert home.status_code == 201 and office.status_code == 201, (home.text, office.text)
        assert utc(home.json()["opened"]) == utc("2026-10-03T08:40:00+00:00")     # CEST, UTC+2
        assert utc(office.json()["opened"]) == utc("2026-10-03T09:40:00+00:00")   # BST, UTC+1
        assert utc(office.json()["closed"]) == utc("2026-10-03T14:00:00+00:00")
        # a change and an appointment: the same line's timezone
        patched = web.send("PATCH", "/api/v1/tickets/O1", {"promised": "2026-10-03 16:00"})
        assert patched.status_code == 200, patched.text
        assert utc(patched.json()["promised"]) == utc("2026-10-03T15:00:00+00:00")
        booked = web.send("POST", "/api/v1/tickets/O1/appointments", {"at": "2026-10-04 09:00"})
        assert booked.status_code == 201, booked.text
        assert [utc(a["at"]) for a in booked.json()["appointments"]] == [utc("2026-10-04T08:00:00+00:00")]
        # moved to the home line, its times are read in Berlin's
        moved = web.send("PATCH", "/api/v1/tickets/O1", {"line": "home", "closed": "2026-10-03 15:00"})
        assert moved.status_code == 200, moved.text
        assert utc(moved.json()["closed"]) == utc("2026-10-03T13:00:00+00:00")
    finally:
        web.close()
        store.dispose()


def test_the_claim_page_chooses_a_line_and_the_calendar_follows_the_agents(lines_web):
    web = lines_web
    assert web.send("POST", "/api/v1/tickets", {"number": "O1", "opened": "2026-10-03 10:40",
                                                "line": "office"}).status_code == 201
    page = web.get("/claim?period=2026-10")
    assert page.status_code == 200
    assert '<select name="line">' in page.text and "Line home · 2026-10" in page.text
    office = web.get("/claim?period=2026-10&line=office")
    assert "Line office · 2026-10" in office.text and "59.00" in office.text
    tickets = web.get("/tickets")
    assert "<th>Line</th>" in tickets.text and '<td data-label="Line">office</td>' in tickets.text
    assert '<select name="line" required>' in tickets.text   # the add form asks which line
    cal = web.get("/api/v1/calendar?period=2026-10&agent=ww-office").json()
    assert cal["line"] == "office"


# --- notifications and Home Assistant -----------------------------------------------------

def test_the_monthly_report_and_home_assistant_count_each_line_apart(tmp_path):
    from wanwitness.collector.homeassistant import claims
    from wanwitness.collector.notify import Notifier
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    two_lines(store)
    path = tmp_path / "config.toml"
    path.write_text(CONFIG + LINES + '\n[notify]\nurls = ["json://127.0.0.1:9/x"]\n'
                    "monthly_report = true\n")
    conf = cfg.load(path, env={})
    now = at("2026-11-10T00:00:00+00:00")
    n = Notifier(store, conf, now_ms=lambda: now)
    n.scan(now)
    with store.engine.connect() as c:
        rows = c.execute(sa.select(s.notifications.c.event, s.notifications.c.title,
                                   s.notifications.c.data)).all()
    events = sorted({r.event for r in rows if r.event.startswith("monthly_report:")})
    assert events == ["monthly_report:2026-10:home", "monthly_report:2026-10:office"]
    titles = {r.event: r.title for r in rows}
    assert "of line office" in titles["monthly_report:2026-10:office"]
    assert json.loads(next(r.data for r in rows if r.event.endswith("office")))["line"] == "office"
    # each agent's claim sensor: its own line's fee
    home = claims(store, conf.for_line("home"), "2026-10", ["ww-home"], now)["ww-home"]
    office = claims(store, conf.for_line("office"), "2026-10", ["ww-office"], now)["ww-office"]
    assert home is not None and office is not None and 0 < float(home) < float(office)
    store.dispose()


def test_a_lines_evidence_bundle_carries_only_its_agents_and_verifies(lines, tmp_path):
    # Two lines of one collector: the office's bundle is the office's evidence alone.
    from tests.test_claims_households import unzip, verify
    zipped = tmp_path / "office.zip"
    proc = lines("claim", "--period", "2026-10", "--line", "office", "--evidence", str(zipped))
    assert proc.returncode == 0, proc.stderr
    assert "ww-office link" in proc.stderr and "ww-home" not in proc.stderr
    files = unzip(zipped, tmp_path / "office")
    assert "chains/ww-office.tsv" in files
    assert not any(b"ww-home" in data for data in files.values())
    checked = verify(tmp_path / "office")
    assert checked.returncode == 0, checked.stdout + checked.stderr
