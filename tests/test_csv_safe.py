"""CSV cells a spreadsheet would run as formulas are neutralised; numbers stay numbers.

The claim's CSV and the evidence bundle's files go to an ISP, where they are opened in a
spreadsheet. Ticket numbers, operators, notes and (in the file mode) agent names come
from people; a cell starting with = + - @, a tab or a CR is written with a leading `'`
(csvsafe), and reading our own files back gives the original text.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.test_claims_build import october, write_config
from tests.test_claims_files import GOOD_TARIFF
from wanwitness.claims import csvout, files
from wanwitness.claims.model import Appointment, Outage, Ticket
from wanwitness.collector import timeline
from wanwitness.csvsafe import restore, text
from wanwitness.store import open_store

BERLIN = files.ZoneInfo("Europe/Berlin")
RISKY = ["=1+2", "+4930123", "-x", "@SUM(A1)", "\tTAB", "\rCR"]


def cells(csv_text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(csv_text, newline="")))


def formula_cells(csv_text: str) -> list[str]:
    """Cells a spreadsheet would evaluate, also after splitting ';'-joined lists."""
    return [part for row in cells(csv_text) for cell in row for part in cell.split(";")
            if part[:1] in ("=", "+", "@", "\t", "\r") or (part[:1] == "-" and not _number(part))]


def _number(cell: str) -> bool:
    try:
        Decimal(cell)
        return True
    except ArithmeticError:
        return False


@pytest.mark.parametrize("value", RISKY + ["'=x", "''", "'", "'a", "plain", "", "T-1"])
def test_text_round_trips_and_never_starts_a_formula(value):
    written = text(value)
    assert restore(written) == value
    assert written[:1] not in ("=", "+", "-", "@", "\t", "\r")


def test_claim_csv_neutralises_a_ticket_number_and_keeps_amounts_numbers(tmp_path, ww):
    db = f"sqlite:///{tmp_path / 'w.db'}"
    st = open_store(db)
    october(st)
    st.dispose()
    conf = str(write_config(tmp_path / "config.toml"))
    # Reported during outage D (25 Oct, 02:30 CEST to 03:30 CET), so linked to it alone; a
    # pack without a grace pays D (de-tkg58 pays from the third day of a reported fault,
    # and since issue 17 no longer pays a later outage on an old open ticket).
    add = ww("--config", conf, "ticket", "add", "--db", db, "--number", "=HYPERLINK(\"http://x\")",
             "--opened", "2026-10-25 03:10", "--operator", "@evil", "--appointment",
             "2026-10-26 08:00", "--missed")
    assert add.returncode == 0, add.stderr
    proc = ww("--config", conf, "claim", "--db", db, "--period", "2026-10", "--rules", "pro-rata",
              "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert formula_cells(proc.stdout) == []
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    mine = [r for r in rows if "HYPERLINK" in r["tickets"]]
    # pro-rata's one item names every ticket linked in the period, each neutralised on its
    # own (a spreadsheet that splits the cell at ";" sees no formula either)
    assert [r["tickets"].split(";") for r in mine] == [["T1", "'=HYPERLINK(\"http://x\")", "T2"]]
    assert restore(mine[0]["tickets"].split(";")[1]) == "=HYPERLINK(\"http://x\")"
    assert all(Decimal(r["amount"]) > 0 for r in rows)  # numbers, unprefixed


def test_claim_csv_from_files_neutralises_agent_names(tmp_path, ww):
    outages = tmp_path / "outages.csv"
    outages.write_text(",".join(timeline.CSV_HEADER) + "\n"
                       "@cmd,isp_down,2026-10-03T08:00:00.000Z,2026-10-04T10:00:00.000Z,,\n")
    tickets = tmp_path / "tickets.csv"
    tickets.write_text("number,opened,closed,channel,operator,missed_appointments\n"
                       "+T1,2026-10-03 11:12,2026-10-04 12:05,phone,-op,2026-10-04 08:00\n")
    tariff = tmp_path / "tariff.toml"
    tariff.write_text(GOOD_TARIFF)
    proc = ww("claim", "--outages", str(outages), "--tickets", str(tickets), "--tariff", str(tariff),
              "--period", "2026-10", "--rules", "pro-rata", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert rows and formula_cells(proc.stdout) == []
    assert any(r["outages"].startswith("'@cmd@2026-10-03") for r in rows)
    assert any(r["tickets"] == "'+T1" for r in rows)


def test_csvout_neutralises_text_but_not_a_negative_amount():
    claim = {"period": {"label": "2026-10"}, "rules": {"name": "=rules"}, "currency": "EUR",
             "items": [{"kind": "-kind", "description": "=cmd|' /C calc'!A0", "amount": "-5.00",
                        "outages": ["a@2026-10-03T08:00:00.000Z"], "tickets": ["T1", "=T2"],
                        "basis": {"x": 1}}]}
    [_, row] = cells(csvout.to_csv(claim))
    assert row == ["2026-10", "'=rules", "'-kind", "'=cmd|' /C calc'!A0", "-5.00", "EUR",
                   "a@2026-10-03T08:00:00.000Z", "T1;'=T2", '{"x":1}']


def test_bundle_files_neutralise_and_read_back_exactly(tmp_path):
    opened = datetime(2026, 10, 3, 9, 12, tzinfo=UTC)
    outages = [Outage(name, "isp_down", datetime(2026, 10, 3, 8, i, tzinfo=UTC),
                      datetime(2026, 10, 3, 9, i, tzinfo=UTC), 2.0, {"boot": 1})
               for i, name in enumerate(["=a", "'=b", "home"])]
    out_text = files.write_outages(outages)
    assert formula_cells(out_text) == []
    (tmp_path / "outages.csv").write_text(out_text)
    assert files.read_outages(tmp_path / "outages.csv") == outages
    tickets = [Ticket(number, opened, operator=op, note=note, outage_ids=(outages[0].id,),
                      appointments=(Appointment(datetime(2026, 10, 4, 6, tzinfo=UTC), True),))
               for number, op, note in zip(RISKY[:3], ["@SUM(A1)", "-", "'=op"], ["=n", "'+n", "n"])]
    tk_text = files.write_tickets(tickets, BERLIN)
    assert formula_cells(tk_text) == []
    (tmp_path / "tickets.csv").write_text(tk_text)
    again, _ = files.read_tickets(tmp_path / "tickets.csv", BERLIN, {o.id for o in outages})
    assert [(t.number, t.operator, t.note, t.outage_ids) for t in again] == \
        [(t.number, t.operator, t.note, t.outage_ids) for t in tickets]
