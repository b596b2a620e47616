"""`wanwitness ticket ...` and `wanwitness claim` as a user meets them: exit codes,
one-line errors naming the file and line.

In the test process (testing/cli.py: `main()` under click's CliRunner) unless a test needs
a separate process; those say why."""

from __future__ import annotations

import csv
import io
import json
import os
from decimal import Decimal

import pytest

from testing.cli import CliResult, one_clear_line
from tests.test_claims_build import october, write_config
from tests.test_claims_files import GOOD_OUTAGES, GOOD_TARIFF, GOOD_TICKETS
from tests.test_cli import _all_commands
from wanwitness import cli as cli_module
from wanwitness.store import open_store


@pytest.fixture
def home(tmp_path, ww):
    """A store with October 2026's records and tickets, and a config for it."""
    db = f"sqlite:///{tmp_path / 'w.db'}"
    st = open_store(db)
    october(st)
    st.dispose()
    conf = write_config(tmp_path / "config.toml")

    def args_of(args: tuple[str, ...]) -> list[str]:
        command, rest = args[0], args[1:]
        if command == "ticket":
            command, rest = f"ticket {rest[0]}", rest[1:]
        return ["--config", str(conf), *command.split(), "--db", db, *rest]

    def run(*args: str) -> CliResult:
        return ww(*args_of(args))
    run.conf = conf  # type: ignore[attr-defined]
    run.process = lambda *args, **kw: ww.process(*args_of(args), **kw)  # type: ignore[attr-defined]
    return run


@pytest.fixture
def inputs(tmp_path):
    paths = {}
    for name, body in (("outages.csv", GOOD_OUTAGES), ("tickets.csv", GOOD_TICKETS),
                       ("tariff.toml", GOOD_TARIFF)):
        paths[name] = tmp_path / name
        paths[name].write_text(body)
    return paths


def files_claim(ww, paths, *extra: str) -> CliResult:
    return ww("claim", "--outages", str(paths["outages.csv"]), "--tickets",
              str(paths["tickets.csv"]), "--tariff", str(paths["tariff.toml"]), *extra)


# --- help ------------------------------------------------------------------------------------

def test_every_ticket_and_claim_command_has_help_text():
    new = [(path, cmd) for path, cmd in _all_commands(cli_module.cli) if path[0] in ("ticket", "claim")]
    assert {" ".join(p) for p, _ in new} == {"ticket", "ticket add", "ticket list", "ticket close",
                                             "ticket appointment", "ticket link", "ticket unlink", "ticket edit",
                                             "claim"}
    for path, command in new:
        assert (command.help or "").strip(), path
        for param in command.params:
            if param.name != "help" and getattr(param, "param_type_name", "") == "option":
                assert (param.help or "").strip(), (path, param.name)


# --- tickets ---------------------------------------------------------------------------------

def test_ticket_add_list_close_link_and_unlink(home):
    amb = home("ticket", "add", "--number", "T3", "--opened", "2026-10-25 02:45")
    assert amb.returncode == 2
    assert "happened twice in Europe/Berlin" in one_clear_line(amb)
    ok = home("ticket", "add", "--number", "T3", "--opened", "2026-10-25T02:45+01:00",
              "--channel", "email", "--operator", "ticket desk")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "ticket T3 added: opened 2026-10-25 02:45 Europe/Berlin, still open"
    listed = json.loads(home("ticket", "list", "--json").stdout)
    t3 = next(t for t in listed if t["number"] == "T3")
    # reported at 01:45Z while outage D (00:30Z-02:30Z) was going on: linked by time;
    # while the ticket is open it also covers the outages after it
    assert t3["opened"] == "2026-10-25T01:45:00Z"
    assert t3["outages"] == ["home@2026-10-25T00:30:00.000Z", "home@2026-10-31T22:00:00.000Z",
                             "home@2026-11-20T10:00:00.000Z"]
    closed = home("ticket", "close", "T3", "--at", "2026-10-25 05:00")
    assert closed.returncode == 0 and "closed at 2026-10-25 05:00 Europe/Berlin" in closed.stdout
    listed = json.loads(home("ticket", "list", "--json").stdout)
    assert next(t for t in listed if t["number"] == "T3")["outages"] == ["home@2026-10-25T00:30:00.000Z"]
    unlink = home("ticket", "unlink", "T3", "home@2026-10-25T00:30:00.000Z")
    assert unlink.returncode == 0, unlink.stderr
    assert unlink.stdout.strip() == "ticket T3 unlinked from outage home@2026-10-25T00:30:00.000Z (isp_down)"
    link = home("ticket", "link", "T3", "home@2026-10-10 14:10")  # a local time during outage B
    assert link.returncode == 0, link.stderr
    assert "linked to outage home@2026-10-10T12:00:00.000Z (dns_down)" in link.stdout
    appt = home("ticket", "appointment", "T3", "--at", "2026-10-26 08:00", "--missed")
    assert appt.returncode == 0 and "(missed)" in appt.stdout

    table = home("ticket", "list").stdout.splitlines()
    assert table[0].split() == ["number", "opened", "(Europe/Berlin)", "closed", "channel",
                                "operator", "appointments", "outages"]
    row = next(line for line in table if line.startswith("T3"))
    assert "2026-10-25 02:45" in row and "2026-10-26 08:00 missed" in row
    assert row.endswith("home@2026-10-10T12:00:00.000Z")
    t1 = next(line for line in table if line.startswith("T1"))
    assert "17 / Maria" in t1 and t1.endswith("home@2026-10-03T08:00:00.000Z")


@pytest.mark.parametrize("args,expected", [
    (("ticket", "add", "--number", "4711", "--opened", "2026-11-03 09:12", "--closed", "2026-11-02 09:00"),
     "wanwitness: ticket 4711: closed 2026-11-02 09:00 is before opened 2026-11-03 09:12"),
    (("ticket", "add", "--number", "4711", "--opened", "2026-11-03 09:12", "--missed"),
     "wanwitness: ticket 4711: --missed needs the appointment it refers to (--appointment WHEN)"),
    (("ticket", "add", "--number", "4711", "--opened", "2026-11-03 09:12", "--channel", "fax"),
     "wanwitness: ticket 4711: channel 'fax': expected one of phone, email, app, office"),
    (("ticket", "add", "--number", "T1", "--opened", "2026-11-03 09:12"),
     "wanwitness: ticket T1 already exists (wanwitness ticket list)"),
    (("ticket", "add", "--number", "4711", "--opened", "soon"),
     "wanwitness: --opened 'soon': not a date/time"),
    (("ticket", "add", "--number", "4711", "--opened", "2026-11-03 09:12", "--declined-h", "a few"),
     "wanwitness: --declined-h 'a few': expected hours, e.g. 4.5"),
    (("ticket", "close", "T1", "--at", "2026-10-01 09:00"),
     "wanwitness: ticket T1: closed 2026-10-01 09:00 is before opened 2026-10-03 11:12"),
    (("ticket", "close", "9999", "--at", "2026-10-01 09:00"), "wanwitness: no ticket '9999'"),
    (("ticket", "link", "T1", "2026-10-10"), "wanwitness: outage '2026-10-10': expected AGENT@WHEN"),
    (("ticket", "link", "T1", "home@2026-10-09 12:00"),
     "wanwitness: no outage of 'home' at 2026-10-09 12:00 (wanwitness outages --agent home)"),
    (("ticket", "link", "T1", "shop@2026-10-09 12:00"), "wanwitness: no agent named 'shop'"),
])
def test_ticket_errors_are_one_line_and_exit_2(home, args, expected):
    proc = home(*args)
    assert proc.returncode == 2
    assert one_clear_line(proc).startswith(expected)


# --- claim from the store ----------------------------------------------------------------

def test_claim_defaults_come_from_the_config(home, tmp_path):
    conf = home.conf
    conf.write_text(conf.read_text() + '\n[claim]\nrules = "pro-rata"\nlang = "de"\n'
                    '[claim.options]\nclasses = ["isp_down", "dns_down"]\n')
    proc = home("claim", "--period", "2026-10")
    assert proc.returncode == 0, proc.stderr
    claim = json.loads(proc.stdout)
    assert claim["rules"]["name"] == "pro-rata" and claim["lang"] == "de"
    assert claim["rules"]["options"]["classes"] == ["isp_down", "dns_down"]
    assert [o["class"] for o in claim["outages"] if o["claimed"]] == ["isp_down", "dns_down",
                                                                      "isp_down", "isp_down"]
    # another pack does not get pro-rata's options; --option and --lang win
    other = home("claim", "--period", "2026-10", "--rules", "de-tkg58", "--lang", "en",
                 "--option", "partial_days=true")
    assert other.returncode == 0, other.stderr
    tkg = json.loads(other.stdout)
    assert tkg["lang"] == "en" and tkg["rules"]["options"]["partial_days"] is True
    assert [i["kind"] for i in tkg["items"]] == ["appointment"]  # T1's missed technician
    assert tkg["items"][0]["tickets"] == ["T1"] and tkg["total"] == "10.00"


def test_claim_csv_has_one_row_per_item_adding_up_to_the_total(home):
    claim = json.loads(home("claim", "--period", "2026-10", "--rules", "de-tkg58").stdout)
    proc = home("claim", "--period", "2026-10", "--rules", "de-tkg58", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == len(claim["items"]) >= 1
    assert sum(Decimal(r["amount"]) for r in rows) == Decimal(claim["total"])
    assert rows[0]["kind"] == "appointment" and rows[0]["tickets"] == "T1"
    assert json.loads(rows[0]["basis"]) == claim["items"][0]["basis"]


def test_claim_letters_name_the_ticket_operator_and_amount(home, tmp_path):
    md = home("claim", "--period", "2026-10", "--rules", "de-tkg58", "--format", "md")
    assert md.returncode == 0, md.stderr
    assert "17 / Maria" in md.stdout and "T1" in md.stdout and "Example Telecom" in md.stdout
    assert "10.00" in md.stdout
    # Issue 17: the notes are the user's: on standard error, never in the letter
    assert "note: options in effect: partial_days=false" in md.stderr
    assert "options in effect" not in md.stdout and "partial_days" not in md.stdout
    html = home("claim", "--period", "2026-10", "--rules", "de-tkg58", "--format", "html",
                "--lang", "hu")
    assert html.returncode == 0 and "<html" in html.stdout and 'lang="hu"' in html.stdout
    pdf = home("claim", "--period", "2026-10", "--rules", "de-tkg58", "--format", "pdf",
               "--out", str(tmp_path / "claim.pdf"))
    assert pdf.returncode == 0, pdf.stderr
    assert (tmp_path / "claim.pdf").read_bytes().startswith(b"%PDF")
    assert "10.00 EUR in 1 item(s), written to" in pdf.stderr


@pytest.mark.integration
def test_a_pdf_is_not_written_to_a_terminal_but_to_a_pipe(home):
    # processes: a real pty and a real pipe on stdout (in-process stdout is a BytesIO)
    import pty
    leader, follower = pty.openpty()
    try:
        proc = home.process("claim", "--period", "2026-10", "--rules", "pro-rata", "--format", "pdf",
                            stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    proc.stdout = ""  # it went to the pty
    assert proc.returncode == 2
    assert one_clear_line(proc) == ("wanwitness: --format pdf is binary: pass --out FILE "
                                    "(or redirect the output)")
    piped = home.process("claim", "--period", "2026-10", "--rules", "pro-rata", "--format", "pdf",
                         text=False)
    assert piped.returncode == 0 and piped.stdout.startswith(b"%PDF")


def test_a_store_period_with_no_data_is_one_line(home):
    proc = home("claim", "--period", "2026-08", "--rules", "pro-rata")
    assert proc.returncode == 2
    assert "no agent reported anything in period 2026-08" in one_clear_line(proc)


# --- claim from files --------------------------------------------------------------------------

def test_a_claim_from_files_touches_no_store(ww, inputs, tmp_path):
    proc = files_claim(ww, inputs, "--rules", "pro-rata", "--period", "2026-10")
    assert proc.returncode == 0, proc.stderr
    claim = json.loads(proc.stdout)
    assert claim["source"] == "files" and claim["ledger"] is None
    assert claim["outages"][0]["counted_s"] == 26 * 3600.0
    assert not list(tmp_path.glob("*.db")) and not list(ww.home.rglob("*.db"))  # nor the default store


def test_bad_input_names_the_file_and_line(ww, inputs):
    tickets = inputs["tickets.csv"]
    tickets.write_text("number,opened,closed,channel,operator,missed_appointments\n"
                       "4711,2026-11-03 09:12,2026-11-02 09:00,phone,17 / Maria,0\n")
    proc = files_claim(ww, inputs, "--rules", "pro-rata", "--period", "2026-10")
    assert proc.returncode == 2
    assert one_clear_line(proc) == (f"wanwitness: {tickets} line 2: closed 2026-11-02 09:00 "
                                    "is before opened 2026-11-03 09:12")

    outages = inputs["outages.csv"]
    outages.write_text(GOOD_OUTAGES.replace("home,unknown,", "home,unknwn,"))
    proc = ww("claim", "--outages", str(outages), "--tariff", str(inputs["tariff.toml"]),
              "--rules", "pro-rata", "--period", "2026-10")
    assert proc.returncode == 2
    assert one_clear_line(proc).startswith(f"wanwitness: {outages} line 3: class 'unknwn'")


@pytest.mark.parametrize("extra,expected", [
    (("--rules", "xx-law", "--period", "2026-10"),
     "wanwitness: unknown rule pack 'xx-law' (known: pro-rata, de-tkg58"),
    (("--period", "2026-10"), "wanwitness: no rule pack chosen: pass --rules NAME or set [claim] "
                              "rules in "),
    (("--rules", "pro-rata", "--period", "2026-08"), "no outage or unknown span in period 2026-08"),
    (("--rules", "pro-rata", "--period", "2026-13"), "wanwitness: --period: period '2026-13': expected YYYY-MM"),
    (("--rules", "pro-rata", "--option", "colour=red"), "wanwitness: rule pack pro-rata: unknown option 'colour'"),
    (("--rules", "pro-rata", "--option", "classes"), "wanwitness: --option 'classes': expected KEY=VALUE"),
    (("--rules", "pro-rata", "--format", "docx"), "wanwitness: --format 'docx': choose one of json, csv, md, html, pdf"),
    (("--rules", "pro-rata", "--lang", "fr"), "wanwitness: --lang 'fr': choose one of en, de, hu, ru, sw"),
    (("--rules", "pro-rata", "--evidence", "x.zip"), "wanwitness: --evidence needs the store"),
])
def test_wrong_claim_arguments_are_one_line_and_exit_2(ww, inputs, extra, expected):
    proc = files_claim(ww, inputs, *extra)
    assert proc.returncode == 2
    line = one_clear_line(proc)
    assert line.startswith(expected) if expected.startswith("wanwitness:") else expected in line
    if "no rule pack chosen" in expected:
        assert "(rule packs: pro-rata, de-tkg58, " in line


def test_the_file_mode_needs_outages_and_a_tariff(ww, inputs):
    proc = ww("claim", "--tickets", str(inputs["tickets.csv"]), "--rules", "pro-rata")
    assert proc.returncode == 2 and "add --outages FILE" in one_clear_line(proc)
    proc = ww("claim", "--outages", str(inputs["outages.csv"]), "--rules", "pro-rata")
    assert proc.returncode == 2 and "--outages needs --tariff FILE" in one_clear_line(proc)


# --- the config's claim sections ---------------------------------------------------------------

def test_config_example_shows_the_claim_keys(ww):
    example = ww("config", "example").stdout
    for line in ("[tariff]", '# monthly_fee = ""', "# period_start_day = 1", '# timezone = "UTC"',
                 "[customer]", '# customer_number = ""', "[isp]", "[claim]", '# rules = ""',
                 '# lang = "en"', "# options = {}"):
        assert line in example.splitlines()


@pytest.mark.parametrize("body,expected", [
    ('[tariff]\nmonthly_fee = "39,99"\n', "[tariff] monthly_fee: expected an amount such as \"39.99\""),
    ("[tariff]\nmonthly_fee = -5\n", "[tariff] monthly_fee: expected a non-negative amount"),
    ('[tariff]\ncurrency = "eur"\n', "[tariff] currency: expected an ISO 4217 code"),
    ("[tariff]\nperiod_start_day = 29\n", "[tariff] period_start_day: 29 is out of range 1..28"),
    ('[tariff]\ntimezone = "CET+1"\n', "[tariff] timezone: expected an IANA time zone"),
    ('[claim]\nlang = "fr"\n', "[claim] lang: expected one of en, de, hu, ru, sw"),
    ("[claim.options]\nclasses = [{a = 1}]\n", "[claim] options: option 'classes': expected a string"),
    ('[customer]\nnmae = "x"\n', "unknown key [customer] nmae"),
])
def test_bad_claim_config_values_are_one_line_naming_the_key(ww, tmp_path, body, expected):
    path = tmp_path / "config.toml"
    path.write_text(body)
    proc = ww("--config", str(path), "claim", "--rules", "pro-rata", "--db",
              f"sqlite:///{tmp_path / 'w.db'}")
    assert proc.returncode == 2
    line = one_clear_line(proc)
    assert expected in line and str(path) in line


def test_claim_config_values_are_normalised(tmp_path):
    from wanwitness import config as cfg
    path = tmp_path / "config.toml"
    path.write_text('[tariff]\nmonthly_fee = 40\ncurrency = "HUF"\ntimezone = "Europe/Budapest"\n'
                    '[claim.options]\npartial_days = true\nexclude = ["4711", 815]\n')
    conf = cfg.load(path, env={"WANWITNESS_TARIFF_PERIOD_START_DAY": "15"})
    assert conf.tariff.monthly_fee == "40.00"
    assert conf.tariff.period_start_day == 15
    assert conf.claim.options == {"partial_days": "true", "exclude": ["4711", "815"]}
    env = {"WANWITNESS_CLAIM_OPTIONS": "classes=isp_down,dns_down; partial_days=false"}
    assert cfg.load(path, env=env).claim.options == {
        "classes": "isp_down,dns_down", "partial_days": "false"}


def test_a_letter_needs_the_names_of_customer_and_isp(ww, inputs):
    inputs["tariff.toml"].write_text('monthly_fee = "39.99"\ncurrency = "EUR"\n[isp]\nname = "X"\n')
    proc = files_claim(ww, inputs, "--rules", "pro-rata", "--period", "2026-10", "--format", "md")
    assert proc.returncode == 2
    assert one_clear_line(proc) == (f"wanwitness: a letter needs [customer] name: set it in "
                                    f"{inputs['tariff.toml']}")
    assert files_claim(ww, inputs, "--rules", "pro-rata", "--period", "2026-10").returncode == 0
