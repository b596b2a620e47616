"""Claims from files: outages.csv, tickets.csv, tariff.toml; every error names file and line."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.test_claims_build import NOW, StandIn, october
from wanwitness.claims import build as b
from wanwitness.claims import files
from wanwitness.claims.model import Tariff
from wanwitness.claims.tickets import to_ms
from wanwitness.collector import timeline
from wanwitness.errors import UserError

UTC = UTC
BERLIN = files.ZoneInfo("Europe/Berlin")
HEADER = ",".join(timeline.CSV_HEADER)

GOOD_OUTAGES = HEADER + """
home,isp_down,2026-10-03T08:00:00.000Z,2026-10-04T10:00:00.000Z,2.0,"{""boot"":1,""open_seq"":2,""close_seq"":4}"
home,unknown,2026-10-15T10:00:00.000Z,2026-10-15T12:00:00.000Z,,"{""reason"":""no agent running""}"

home,isp_down,2026-10-31T22:00:00.000Z,,,
"""

GOOD_TICKETS = """number,opened,closed,channel,operator,missed_appointments
T1,2026-10-03 11:12,2026-10-04 12:05,phone,"17 / Maria, 2nd level",2026-10-04 08:00
T2,2026-10-31T23:30+01:00,,app,,0
"""

GOOD_TARIFF = """monthly_fee = "39.99"
currency = "EUR"
period_start_day = 1
timezone = "Europe/Berlin"

[customer]
name = "Erika Mustermann"

[isp]
name = "Example Telecom"
"""


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- outages.csv ----------------------------------------------------------------------

def test_what_outages_csv_writes_reads_back_unchanged(store, tmp_path):
    october(store)
    rows = timeline.query(store, now_ms=to_ms(NOW))
    text = timeline.to_csv(rows)
    got = files.read_outages(write(tmp_path, "outages.csv", text))
    assert got == [b.outage_from_timeline(o) for o in rows]
    assert {o.cls for o in got} == {"isp_down", "dns_down", "local_down", "unknown"}
    assert files.write_outages(got) == text  # and back again, byte for byte


def test_outages_csv_reads_ongoing_and_blank_lines(tmp_path):
    got = files.read_outages(write(tmp_path, "outages.csv", GOOD_OUTAGES))
    assert [o.cls for o in got] == ["isp_down", "unknown", "isp_down"]
    assert got[0].start == utc("2026-10-03T08:00:00+00:00") and got[0].start_uncertainty_s == 2.0
    assert got[0].evidence["open_seq"] == 2 and got[2].end is None
    assert got[0].id == "home@2026-10-03T08:00:00.000Z"


@pytest.mark.parametrize("row,message", [
    ("home,isp_down,2026-10-03T08:00:00Z,2026-10-04T10:00:00Z,,", None),
    ("home,isp_down,2026-10-03T08:00:00Z,2026-10-04T10:00:00Z,", "line 3: expected 6 fields (agent,class,start,end,start_uncertainty_s,evidence), got 5"),
    ("home,isp_dwn,2026-10-03T08:00:00Z,,,", "line 3: class 'isp_dwn': expected one of degraded, dns_down, isp_down, local_down, unknown"),
    ("home,isp_down,03.10.2026 08:00,,,", "line 3: start '03.10.2026 08:00': not an ISO 8601 time"),
    ("home,isp_down,2026-10-03T08:00:00Z,2026-10-03T07:00:00Z,,", "line 3: end 2026-10-03T07:00:00Z is before start 2026-10-03T08:00:00Z"),
    ("home,isp_down,2026-10-03T08:00:00Z,,-1,", "line 3: start_uncertainty_s '-1': expected seconds >= 0"),
    ("home,isp_down,2026-10-03T08:00:00Z,,nan,", "line 3: start_uncertainty_s 'nan'"),
    ("home,isp_down,2026-10-03T08:00:00Z,,,{boot:1}", "line 3: evidence: not JSON"),
    ("home,isp_down,2026-10-03T08:00:00Z,,,[1]", "line 3: evidence: expected a JSON object"),
    (",isp_down,2026-10-03T08:00:00Z,,,", "line 3: agent is empty"),
    ('home,isp_down,"2026-10-03T08:00:00Z,,,', "line 3: unexpected end of data"),
])
def test_a_malformed_outage_row_names_the_file_and_line(tmp_path, row, message):
    good = "home,dns_down,2026-10-01T08:00:00Z,2026-10-01T09:00:00Z,,"
    path = write(tmp_path, "outages.csv", f"{HEADER}\n{good}\n{row}\n")
    if message is None:
        assert len(files.read_outages(path)) == 2
        return
    with pytest.raises(UserError) as e:
        files.read_outages(path)
    assert str(e.value).startswith(f"{path} line 3: ") and message in str(e.value)


@pytest.mark.parametrize("text,message", [
    ("", "empty file"),
    ("agent,class,begin,end\n", "line 1: unknown column 'begin'"),
    ("agent,class,start\n", "line 1: column 'end' is missing"),
    ("agent,class,start,end,end\n", "line 1: a column appears twice"),
])
def test_a_bad_outages_header_is_refused(tmp_path, text, message):
    path = write(tmp_path, "outages.csv", text)
    with pytest.raises(UserError, match=message):
        files.read_outages(path)


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope.csv'}: no such file"):
        files.read_outages(tmp_path / "nope.csv")
    path = tmp_path / "latin1.csv"
    path.write_bytes(HEADER.encode() + b"\nh\xf6me,isp_down,2026-10-03T08:00:00Z,,,\n")
    with pytest.raises(UserError, match="latin1.csv: not UTF-8 text"):
        files.read_outages(path)


# --- tickets.csv --------------------------------------------------------------------------

def test_tickets_csv_reads_local_times_quoted_fields_and_missed_appointments(tmp_path):
    tickets, notes = files.read_tickets(write(tmp_path, "tickets.csv", GOOD_TICKETS), BERLIN)
    t1, t2 = tickets
    assert t1.opened == utc("2026-10-03T09:12:00+00:00") and t1.closed == utc("2026-10-04T10:05:00+00:00")
    assert t1.operator == "17 / Maria, 2nd level" and t1.channel == "phone"
    assert [(a.at, a.missed) for a in t1.appointments] == [(utc("2026-10-04T06:00:00+00:00"), True)]
    assert t2.closed is None and t2.appointments == () and t2.opened == utc("2026-10-31T22:30:00+00:00")
    assert notes == []


def test_missed_appointments_as_a_count_are_dated_at_the_report_with_a_note(tmp_path):
    path = write(tmp_path, "tickets.csv", "number,opened,missed_appointments\nT1,2026-10-03 11:12,2\n")
    [t], notes = files.read_tickets(path, BERLIN)
    assert t.missed_appointments == 2 and {a.at for a in t.appointments} == {t.opened}
    assert notes == ["tickets.csv line 2: ticket T1's 2 missed appointment(s) have no date; "
                     "dated at the report (2026-10-03 11:12)"]


@pytest.mark.parametrize("row,message", [
    ("4711,2026-11-03 09:12,2026-11-02 09:00,phone,,",
     "line 3: closed 2026-11-02 09:00 is before opened 2026-11-03 09:12"),
    ("4711,2026-11-03 09:12,,fax,,", "line 3: channel 'fax': expected one of phone, email, app, office"),
    ("4711,,,phone,,", "line 3: opened is empty"),
    ("4711,3.11.2026,,phone,,", "line 3: opened '3.11.2026': not a date/time"),
    ("4711,2026-03-29 02:30,,phone,,", "line 3: opened 2026-03-29 02:30: that local time does not exist"),
    ("4711,2026-11-03 09:12,,phone,,soon", "line 3: missed appointment 'soon': not a date/time"),
    ("T0,2026-11-03 09:12,,phone,,", "line 3: ticket T0 appears twice (also line 2)"),
    ("4711,2026-11-03 09:12,,phone", "line 3: expected 6 fields"),
])
def test_a_bad_ticket_row_names_the_file_and_line(tmp_path, row, message):
    head = "number,opened,closed,channel,operator,missed_appointments\n"
    path = write(tmp_path, "tickets.csv", head + "T0,2026-11-01 10:00,,phone,,\n" + row + "\n")
    with pytest.raises(UserError) as e:
        files.read_tickets(path, BERLIN)
    assert str(e.value).startswith(f"{path} line 3: ") and message in str(e.value)


def test_the_line_named_is_where_the_bad_row_starts_after_a_multi_line_note(tmp_path):
    path = write(tmp_path, "tickets.csv", 'number,opened,note\nT1,2026-10-03 11:12,"line one\n'
                 'line two"\nT2,2026-10-03 25:00,\n')
    with pytest.raises(UserError, match=r"tickets.csv line 4: opened '2026-10-03 25:00'"):
        files.read_tickets(path, BERLIN)


def test_the_outages_column_must_name_outages_of_the_outages_file(tmp_path):
    path = write(tmp_path, "tickets.csv", "number,opened,outages\nT1,2026-10-03 11:12,home@2026-10-03T08:00:00.000Z\n")
    [t], _ = files.read_tickets(path, BERLIN, {"home@2026-10-03T08:00:00.000Z"})
    assert t.outage_ids == ("home@2026-10-03T08:00:00.000Z",)
    with pytest.raises(UserError, match=r"tickets.csv line 2: outage 'home@2026-10-03T08:00:00.000Z' "
                                        r"is not in the outages file"):
        files.read_tickets(path, BERLIN, set())


def test_tickets_written_read_back_the_same(tmp_path):
    tickets, _ = files.read_tickets(write(tmp_path, "tickets.csv", GOOD_TICKETS), BERLIN)
    again, _ = files.read_tickets(write(tmp_path, "again.csv", files.write_tickets(tickets, BERLIN)),
                                  files.ZoneInfo("Asia/Tokyo"))  # times carry their offset
    assert again == tickets


# --- tariff.toml ----------------------------------------------------------------------------

def test_tariff_toml_with_customer_and_isp(tmp_path):
    tf = files.read_tariff(write(tmp_path, "tariff.toml", GOOD_TARIFF))
    assert tf.tariff == Tariff(Decimal("39.99"), "EUR", 1, "Europe/Berlin")
    assert tf.customer["name"] == "Erika Mustermann" and tf.customer["contract"] == ""
    assert tf.isp["name"] == "Example Telecom"
    again = files.read_tariff(write(tmp_path, "again.toml", files.write_tariff(tf)))
    assert again == tf


@pytest.mark.parametrize("text,message", [
    ('monthly_fee = "39.99"\ncurrency = "euro"\n', "tariff.toml line 2: currency: expected an ISO 4217 code"),
    ('monthly_fee = "39.999"\ncurrency = "EUR"\n', "tariff.toml line 1: monthly_fee: expected a non-negative amount with at most 2 decimals"),
    ('monthly_fee = 39.99\ncurrency = "EUR"\ntimezone = "Mars/Olympus"\n', "tariff.toml line 3: timezone: expected an IANA time zone"),
    ('monthly_fee = 39.99\ncurrency = "EUR"\nperiod_start_day = 31\n', "tariff.toml line 3: period_start_day: 31 is out of range 1..28"),
    ('currency = "EUR"\n', "tariff.toml: monthly_fee is missing"),
    ('monthly_fee = "1"\ncurrency = "EUR"\nfee = 3\n', "tariff.toml line 3: unknown key 'fee'"),
    ('monthly_fee = "1"\ncurrency = "EUR"\n[customer]\nname = "E"\nnmae = "x"\n', "tariff.toml line 5: unknown key [customer] nmae"),
    ('monthly_fee = "1"\ncurrency = "EUR"\n[isp]\nemail = 5\n', "tariff.toml line 4: [isp] email: expected a string"),
    ('monthly_fee = "1"\ncurrency = EUR\n', "tariff.toml: Invalid value (at line 2, column 12)"),
])
def test_a_bad_tariff_names_the_file_and_line(tmp_path, text, message):
    with pytest.raises(UserError) as e:
        files.read_tariff(write(tmp_path, "tariff.toml", text))
    assert message in str(e.value)


# --- a claim from files ------------------------------------------------------------------------

def test_a_claim_from_files_links_tickets_by_time(tmp_path):
    inputs = b.from_files(write(tmp_path, "outages.csv", GOOD_OUTAGES),
                          write(tmp_path, "tickets.csv", GOOD_TICKETS),
                          write(tmp_path, "tariff.toml", GOOD_TARIFF), "2026-10", now=NOW)
    claim = b.build(inputs, StandIn(), {"factor": Decimal(1)})
    assert claim["source"] == "files" and claim["ledger"] is None
    assert [t["outages"] for t in claim["tickets"]] == [["home@2026-10-03T08:00:00.000Z"],
                                                        ["home@2026-10-31T22:00:00.000Z"]]
    # the ongoing outage counts up to the end of the period; nothing cites ledger records
    assert claim["outages"][2]["counted_s"] == 30 * 60 and claim["outages"][2]["end"] is None
    assert all(o["records"] == [] for o in claim["outages"])
    assert claim["customer"]["name"] == "Erika Mustermann"


def test_a_period_with_no_rows_in_the_outages_file_is_refused(tmp_path):
    path = write(tmp_path, "outages.csv", GOOD_OUTAGES)
    with pytest.raises(UserError, match=f"{path}: no outage or unknown span in period 2026-08"):
        b.from_files(path, None, write(tmp_path, "tariff.toml", GOOD_TARIFF), "2026-08", now=NOW)
