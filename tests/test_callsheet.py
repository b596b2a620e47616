"""The call sheet (`wanwitness callsheet`, wanwitness/web/callsheet.py): what the user tells
the ISP's support line, from records delivered through the real ingest path, on SQLite
and on the real PostgreSQL; in the user's language; and its command's errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import pytest
from babel.messages.extract import extract_from_file

from testing.cli import one_line_error
from testing.records import HOUR, MIN, T0, Board
from wanwitness import config as cfg
from wanwitness import store as s
from wanwitness.claims import catalogs
from wanwitness.claims import tickets as tk
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.errors import UserError
from wanwitness.web import callsheet as cs

SEC = 1000
BERLIN = ZoneInfo("Europe/Berlin")
NOW = T0 + 6 * HOUR                  # 2026-11-03 12:00Z, 13:00 in Berlin

# The probes of the round that declared the isp_down: the router answered, no anchor did.
ISP_EV = {"by": "probe", "rounds": 1, "gw_fail": 0, "dns_fail": 1, "anc_ok": 0, "anc_n": 3,
          "loss": 100, "streak": 9, "need_p": 9, "led": {"power": "on", "wan": "off"}}
# The router switched off: its power LED went dark and the board lost the access point.
OFF_EV = {"by": "led+link", "confirmed": True, "link_down": 0, "led": {"power": "off", "wan": "off"}}
# No LEDs watched; the gateway did not answer in any of the 3 rounds.
DEAD_EV = {"by": "probe", "rounds": 3, "gw_fail": 3, "dns_fail": 3, "anc_ok": 0, "anc_n": 9, "loss": 100}

CONFIG = """
[tariff]
timezone = "Europe/Berlin"
[customer]
customer_number = "K-123456"
contract = "V-9876"
[claim]
lang = "de"
"""


class Times:
    """The seeded outages' instants, from the boot's time t0."""

    def __init__(self, t0: int):
        self.t0 = t0
        self.off = t0 + HOUR + 5 * SEC                 # router off ...
        self.back = t0 + HOUR + 20 * MIN               # ... and on again
        self.isp = t0 + 3 * HOUR + 7 * SEC + 250       # isp_down, going on
        self.dead = t0 + 30 * MIN                      # attic: the router does not answer
        self.dead_end = t0 + 40 * MIN


def local(ms: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(BERLIN).strftime(fmt)


def seed(store, t0: int = T0, *, heard_at: int = NOW, hb_s: int = 30) -> Times:
    """Agent `home`: the router off for 20 minutes, then an isp_down going on (heard from
    at `heard_at`). Agent `attic`: a local_down whose router did not answer, ended."""
    at = Times(t0)
    ing = Ingestor(store)
    add_agent(store, "home", hb_s=hb_s)
    home = Board(ing, "home")
    home.start(1, t0)
    home.state("local_down", at.off, bound=at.off - 2 * SEC, ev=OFF_EV)
    home.state("up", at.back)
    home.state("isp_down", at.isp, bound=at.isp - 1500, ev=ISP_EV)
    home.hb(heard_at)
    add_agent(store, "attic", hb_s=hb_s)
    attic = Board(ing, "attic")
    attic.start(1, t0)
    attic.state("local_down", at.dead, ev=DEAD_EV)
    attic.state("up", at.dead_end)
    return at


@pytest.fixture
def conf_path(tmp_path) -> Path:
    path = tmp_path / "wanwitness.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def conf(conf_path) -> cfg.Config:
    return cfg.load(conf_path, env={})


def facts(sheet) -> dict[str, str]:
    return {f["key"]: f["value"] for f in sheet["facts"]}


def labels(sheet) -> dict[str, str]:
    return {f["key"]: f["label"] for f in sheet["facts"]}


def flat(text: str) -> str:
    """Whitespace (wrapped lines, Babel's no-break spaces) as single spaces."""
    return " ".join(text.split())


# --- the sheet ---------------------------------------------------------------------------

def test_an_isp_down_going_on_says_the_router_answers_and_the_line_beyond_it_is_down(store, conf):
    at = seed(store)
    sheet = cs.build(store, conf, now_ms=NOW)          # no agent, no start: what is going on now
    assert json.loads(json.dumps(sheet)) == sheet
    assert (sheet["agent"], sheet["class"], sheet["ongoing"]) == ("home", "isp_down", True)
    assert sheet["start"] == "2026-11-03T09:00:07.250Z"
    assert sheet["start_local"] == "2026-11-03 10:00:07 Europe/Berlin"
    assert (sheet["id"], sheet["open_seq"]) == ("home@2026-11-03T09:00:07.250Z", 4)   # its state record
    assert sheet["end"] is None and sheet["end_local"] is None
    assert sheet["duration_s"] == (NOW - at.isp) // 1000 == 3 * HOUR // 1000 - 8
    assert sheet["now_local"] == "2026-11-03 13:00"
    f = facts(sheet)
    assert f["down"] == "The internet connection (the line to the provider)"
    assert "10:00:07" in f["start"] and "Nov 3, 2026" in f["start"]
    assert f["meaning"] == sheet["meaning"] == "Your router is on and answers; the line beyond it is down."
    assert (f["led_power"], f["led_wan"]) == ("on", "off")
    assert f["router_answers"] == "yes (1 of 1 answered)"
    assert f["anchors"] == "none answered (0 of 3)"
    assert f["dns"] == "fails (0 of 1 answered)"
    assert (f["customer_number"], f["contract"]) == ("K-123456", "V-9876")
    assert f["ticket"] == "none yet: ask for a ticket number"
    assert "paid" in f["bills"]
    assert "restart" in f["restart"]
    assert f["to_note"] == "ticket number, operator's name or ID, time of the call"
    assert [n["key"] for n in sheet["note"]] == ["number", "operator", "opened"]
    assert "end" not in f and "silent" not in f


def test_a_past_router_off_outage_by_its_local_start_time(store, conf):
    at = seed(store)
    sheet = cs.build(store, conf, start="2026-11-03 08:00:05", now_ms=NOW)   # Berlin time
    assert (sheet["agent"], sheet["class"], sheet["ongoing"]) == ("home", "local_down", False)
    assert sheet["start_local"] == "2026-11-03 08:00:05 Europe/Berlin"
    assert sheet["end_local"] == "2026-11-03 08:20:00 Europe/Berlin"
    assert sheet["duration_s"] == (at.back - at.off) // 1000 == 1195
    f = facts(sheet)
    assert f["meaning"] == "Your router is off (no power)."
    assert f["led_power"] == "off"
    assert f["router_answers"] == "not tested yet"      # no round ran: the board lost its Wi-Fi
    assert "restart" not in f                            # it is off: nothing to restart
    assert "8:20:00" in f["end"]
    # The same outage by a UTC time within 1 s of its start, and by its id.
    assert cs.build(store, conf, start="2026-11-03T07:00:05.900Z", now_ms=NOW)["start"] == sheet["start"]
    assert cs.build(store, conf, start="home@2026-11-03T07:00:05.000Z", now_ms=NOW)["start"] == sheet["start"]
    with pytest.raises(UserError, match=r"no outage started at 2026-11-03T07:00:06.100Z \(within 1 s\)"):
        cs.build(store, conf, start="2026-11-03T07:00:06.100Z", now_ms=NOW)


def test_a_router_that_does_not_answer_and_lights_not_watched(store, conf):
    seed(store)
    sheet = cs.build(store, conf, agent="attic", now_ms=NOW)   # nothing going on: the newest ended
    assert (sheet["agent"], sheet["class"], sheet["ongoing"]) == ("attic", "local_down", False)
    assert sheet["start_local"] == "2026-11-03 07:30:00 Europe/Berlin"
    f = facts(sheet)
    assert f["meaning"] == "Your router does not answer: check it and its cables first."
    assert f["router_answers"] == "no (0 of 3 answered)"
    assert f["led_power"] == "not watched"
    assert labels(sheet)["led_wan"] == "Internet (WAN) light" and f["led_wan"] == "not watched"


def test_the_german_and_the_russian_sheet(store, conf):
    seed(store)
    de = cs.build(store, conf, lang="de", now_ms=NOW)
    f, lab = facts(de), labels(de)
    assert de["title"] == "Anrufhilfe"
    assert f["meaning"] == "Ihr Router ist eingeschaltet und antwortet; die Leitung dahinter ist ausgefallen."
    assert f["start"] == "03.11.2026, 10:00:07"
    assert (lab["start"], lab["led_power"], f["led_power"], f["led_wan"]) == ("Beginn", "Power-LED", "leuchtet", "aus")
    assert (lab["router_answers"], f["router_answers"]) == ("Router antwortet auf die Tests",
                                                            "ja (1 von 1 beantwortet)")
    assert f["anchors"] == "keiner hat geantwortet (0 von 3)"
    assert (lab["customer_number"], f["customer_number"]) == ("Kundennummer", "K-123456")
    assert f["ticket"] == "noch keins: Fragen Sie nach einer Ticketnummer"
    assert [n["label"] for n in de["note"]] == ["Ticketnummer", "Mitarbeiter/in (Name oder Kennung)",
                                                "Uhrzeit des Anrufs"]
    ru = cs.build(store, conf, lang="ru", start="2026-11-03 08:00:05", now_ms=NOW)
    assert facts(ru)["meaning"] == "Ваш роутер выключен (нет питания)."
    assert facts(ru)["led_power"] == "не горит"
    assert labels(ru)["customer_number"] == "Лицевой счёт"
    assert flat(facts(ru)["start"]) == "3 нояб. 2026 г., 08:00:05"
    with pytest.raises(UserError, match="unknown language 'fr'"):
        cs.build(store, conf, lang="fr", now_ms=NOW)


def test_a_ticket_already_linked_to_the_outage_is_named(store, conf):
    at = seed(store)
    tk.add(store, tk.new_ticket("4711", tk.from_ms(at.isp + 10 * MIN), tz=BERLIN, channel="phone",
                                operator="17 / Maria"))
    sheet = cs.build(store, conf, now_ms=NOW)
    assert [t["number"] for t in sheet["tickets"]] == ["4711"]
    assert facts(sheet)["ticket"].startswith("4711, reported Nov 3, 2026, 10:10:07")
    assert facts(sheet)["ticket"].endswith("(operator: 17 / Maria)")
    # Not the router-off outage before it: a ticket is about the ISP's outages.
    past = cs.build(store, conf, start="2026-11-03 08:00:05", now_ms=NOW)
    assert past["tickets"] == [] and facts(past)["ticket"] == "none yet: ask for a ticket number"


def test_the_lights_of_an_outage_going_on_are_the_newest_ones(store, conf):
    at = seed(store)
    home = Board(Ingestor(store), "home", seq=4)
    home.boot, home.boot_utc = 1, at.t0
    home.rec("led", at.isp + 5 * MIN, ch="wan", st="blink", at=home.t(at.isp + 5 * MIN), deliver=False)
    home.flush(NOW)
    assert facts(cs.build(store, conf, now_ms=NOW))["led_wan"] == "blinking"
    # An ended outage keeps the lights of its start.
    assert facts(cs.build(store, conf, agent="home", start="2026-11-03 08:00:05", now_ms=NOW))["led_wan"] == "off"


def test_a_witness_gone_silent_says_so(store, conf):
    seed(store)
    later = NOW + 10 * MIN                    # 20 heartbeat periods without a word from `home`
    sheet = cs.build(store, conf, now_ms=later)
    assert (sheet["agent"], sheet["class"], sheet["ongoing"]) == ("home", "isp_down", False)
    assert sheet["silent_since"] == sheet["end"] == "2026-11-03T12:00:00.000Z"
    assert facts(sheet)["silent"] == ("not heard from since Nov 3, 2026, 1:00:00\u202fPM: "
                                      "the outage may still be going on")


def test_customer_fields_not_set_are_a_hint(store, tmp_path):
    seed(store)
    path = tmp_path / "bare.toml"
    path.write_text('[tariff]\ntimezone = "Europe/Berlin"\n')
    f = facts(cs.build(store, cfg.load(path, env={}), now_ms=NOW))
    assert f["customer_number"] == "not set: add customer_number under [customer] in the config file"
    assert f["contract"] == "not set: add contract under [customer] in the config file"


def test_no_agent_or_no_outage_is_a_user_error(store, conf):
    with pytest.raises(UserError, match="no outage on record yet"):
        cs.build(store, conf, now_ms=NOW)
    seed(store)
    with pytest.raises(UserError, match="no agent named 'nobody'"):
        cs.build(store, conf, agent="nobody", now_ms=NOW)
    with pytest.raises(UserError, match="names agent 'attic', but the agent asked for is 'home'"):
        cs.build(store, conf, agent="home", start="attic@2026-11-03T06:30:00Z", now_ms=NOW)


def test_text_has_short_lines_and_lines_to_fill_in(store, conf):
    seed(store)
    text = cs.render_text(cs.build(store, conf, now_ms=NOW))
    lines = text.splitlines()
    assert lines[0] == "Call sheet: home (ongoing)"
    assert max(len(line) for line in lines) <= cs.WIDTH
    assert "What it means: Your router is on and answers; the line beyond it is down." in flat(text)
    assert "Customer number: K-123456" in lines
    note = lines.index("Note during the call:")
    assert lines[note + 1:note + 4] == ["  Ticket number: ____________________",
                                        "  Operator (name or ID): ____________________",
                                        "  Time of the call: ____________________"]


def test_the_page_shows_the_sheet_and_a_form_to_note_the_call(store, conf):
    seed(store)
    sheet = cs.build(store, conf, lang="de", now_ms=NOW)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(cs.__file__).parent / "templates"),
                             autoescape=True)
    page = env.get_template("callsheet.html").render(sheet=sheet, csrf="tok-123", tz="Europe/Berlin")
    assert '<div class="callsheet" lang="de"' in page
    assert "Ihr Router ist eingeschaltet und antwortet; die Leitung dahinter ist ausgefallen." in page
    assert "<dt>Power-LED</dt><dd>leuchtet</dd>" in page
    assert 'action="/callsheet/ticket"' in page
    assert '<input type="hidden" name="csrf" value="tok-123">' in page
    assert '<input type="hidden" name="start" value="2026-11-03T09:00:07.250Z">' in page
    assert '<input type="hidden" name="agent" value="home">' in page
    assert 'name="opened" required maxlength="64" value="2026-11-03 13:00"' in page
    assert page.index("Kundennummer") < page.index('name="number"')   # what to say, then the form


def test_every_call_sheet_string_is_translated_in_every_catalog():
    """The sheet's strings live in the letters' catalogs, which `catalogs.extract()` does
    not read: this is their check (present, translated, not fuzzy, same %(fields)s)."""
    msgids = {m for _line, m, _c, _ctx in extract_from_file("python", cs.__file__)}
    assert len(msgids) > 50
    problems = []
    for lang in catalogs.LANGUAGES:
        if lang == catalogs.SOURCE_LANGUAGE:
            continue
        cat = catalogs.read_catalog(lang)
        for msgid in sorted(msgids):
            have = cat.get(msgid)
            if have is None or not have.string or have.fuzzy:
                problems.append(f"{lang}: {msgid!r} not translated")
            else:
                problems += [f"{lang}: {msgid!r}: {err}" for err in have.check(cat)]
    assert problems == []


# --- the command ---------------------------------------------------------------------------

@pytest.fixture
def callsheet_cli(monkeypatch):
    """The command on the root group (until wanwitness/cli/app.py registers it itself)."""
    from wanwitness.cli import app
    from wanwitness.cli import callsheet as command
    if "callsheet" not in app.cli.commands:
        monkeypatch.setitem(app.cli.commands, "callsheet", command.callsheet)


def test_cli_prints_the_sheet_in_the_configured_language(store, db_url, conf_path, ww, callsheet_cli):
    real_now = s.now_ms() // 1000 * 1000
    at = seed(store, real_now - 4 * HOUR, heard_at=real_now, hb_s=3600)
    r = ww("--config", str(conf_path), "callsheet", "--db", db_url)     # [claim] lang = "de"
    assert r.returncode == 0, r.stderr
    out = flat(r.stdout)
    assert r.stdout.startswith("Anrufhilfe: home (andauernd)\n")
    assert f"Beginn: {local(at.isp, '%d.%m.%Y, %H:%M:%S')}" in out
    assert "Was das bedeutet: Ihr Router ist eingeschaltet und antwortet; die Leitung dahinter ist ausgefallen." in out
    assert "Router antwortet auf die Tests: ja (1 von 1 beantwortet)" in out
    assert "Kundennummer: K-123456" in out
    assert "Uhrzeit des Anrufs: ____" in out


def test_cli_a_past_outage_as_json(store, db_url, conf_path, ww, callsheet_cli):
    seed(store)
    r = ww("--config", str(conf_path), "callsheet", "--db", db_url, "--lang", "en", "--json",
           "--start", "2026-11-03 08:00:05")                             # local time in Berlin
    assert r.returncode == 0, r.stderr
    sheet = json.loads(r.stdout)
    assert (sheet["agent"], sheet["class"], sheet["lang"]) == ("home", "local_down", "en")
    assert sheet["start_local"] == "2026-11-03 08:00:05 Europe/Berlin"
    assert facts(sheet)["meaning"] == "Your router is off (no power)."


def test_cli_errors_are_one_clear_line(store, db_url, conf_path, ww, callsheet_cli):
    line = one_line_error(ww("--config", str(conf_path), "callsheet", "--db", db_url))
    assert "no outage on record yet" in line
    seed(store)
    line = one_line_error(ww("--config", str(conf_path), "callsheet", "--db", db_url, "--agent", "nobody"))
    assert "no agent named 'nobody'" in line
    line = one_line_error(ww("--config", str(conf_path), "callsheet", "--db", db_url, "--start", "yesterday"))
    assert line.startswith("wanwitness: --start 'yesterday': not a date/time")
    line = one_line_error(ww("--config", str(conf_path), "callsheet", "--db", db_url,
                             "--start", "2026-11-03 08:00:09"))
    assert "no outage started at 2026-11-03 08:00:09 (within 1 s)" in line
    line = one_line_error(ww("--config", str(conf_path), "callsheet", "--db", db_url, "--lang", "fr"))
    assert "--lang 'fr': choose one of en, de, hu, ru, sw" in line
