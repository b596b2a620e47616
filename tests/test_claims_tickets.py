"""Tickets: time parsing in the tariff's zone, the store (SQLite and PostgreSQL), linking."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.claims import link as lk
from wanwitness.claims import tickets as tk
from wanwitness.claims.model import Outage, Ticket
from wanwitness.errors import UserError

UTC = UTC
BERLIN = tk.ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- times ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("2026-11-03 09:12", "2026-11-03T08:12:00+00:00"),            # CET, +01:00
    ("2026-07-03 09:12", "2026-07-03T07:12:00+00:00"),            # CEST, +02:00
    ("2026-11-03T09:12", "2026-11-03T08:12:00+00:00"),
    ("2026-11-03", "2026-11-02T23:00:00+00:00"),                  # local midnight
    ("2026-11-03T09:12:00Z", "2026-11-03T09:12:00+00:00"),        # an offset wins over the zone
    ("2026-11-03T09:12+05:30", "2026-11-03T03:42:00+00:00"),
    ("2026-10-25T02:30+02:00", "2026-10-25T00:30:00+00:00"),      # the first 02:30 of the night
    ("2026-10-25T02:30+01:00", "2026-10-25T01:30:00+00:00"),      # ... and the second
])
def test_times_are_local_in_the_tariff_zone_unless_they_carry_an_offset(text, expected):
    got = tk.parse_when(text, BERLIN, "--opened")
    assert got == utc(expected) and got.tzinfo is UTC


def test_a_local_time_the_clocks_skip_or_repeat_is_refused():
    with pytest.raises(ValueError, match=r"--opened 2026-03-29 02:30: that local time does not "
                                         r"exist in Europe/Berlin"):
        tk.parse_when("2026-03-29 02:30", BERLIN, "--opened")
    with pytest.raises(ValueError, match=r"happened twice in Europe/Berlin .* e\.g\. "
                                         r"2026-10-25T02:30\+02:00"):
        tk.parse_when("2026-10-25 02:30", BERLIN, "--opened")
    with pytest.raises(ValueError, match=r"--closed 'yesterday': not a date/time"):
        tk.parse_when("yesterday", BERLIN, "--closed")


def test_local_text_shows_the_zone_time():
    assert tk.local_text(utc("2026-11-03T08:12:00+00:00"), BERLIN) == "2026-11-03 09:12"
    assert tk.local_text(utc("2026-11-03T08:12:07+00:00"), BERLIN) == "2026-11-03 09:12:07"


# --- validation --------------------------------------------------------------------------

def test_a_ticket_closed_before_it_opened_is_refused_naming_both_times():
    with pytest.raises(ValueError, match="closed 2026-11-02 09:00 is before opened 2026-11-03 09:12"):
        tk.new_ticket("4711", tk.parse_when("2026-11-03 09:12", BERLIN, "o"), tz=BERLIN,
                      closed=tk.parse_when("2026-11-02 09:00", BERLIN, "c"))


@pytest.mark.parametrize("kwargs,message", [
    ({"missed": True}, "--missed needs the appointment"),
    ({"channel": "fax"}, "channel 'fax': expected one of phone, email, app, office"),
    ({"promised": utc("2026-11-01T00:00:00+00:00")}, "promised 2026-11-01 01:00 is before opened"),
    ({"operator": "x" * 201}, "operator: at most 200 characters"),
    ({"declined_s": -3600.0}, "declined time: expected hours of 0 or more, got -1.0"),
    ({"declined_s": float("nan")}, "declined time: expected hours of 0 or more, got nan"),
])
def test_other_impossible_tickets_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tk.new_ticket("4711", utc("2026-11-03T08:12:00+00:00"), tz=BERLIN, **kwargs)


@pytest.mark.parametrize("number,message", [
    ("  ", "the ticket number is empty"),
    ("x" * 65, "at most 64 printable characters"),
    ("47\n11", "at most 64 printable characters"),
])
def test_ticket_numbers_are_checked(number, message):
    with pytest.raises(ValueError, match=message):
        tk.new_ticket(number, utc("2026-11-03T08:12:00+00:00"), tz=BERLIN)


# --- the store ---------------------------------------------------------------------------

def test_tickets_round_trip_through_the_store(store):
    opened = tk.parse_when("2026-11-03 09:12", BERLIN, "--opened")
    t = tk.new_ticket(" 4711 ", opened, tz=BERLIN, channel="phone", operator=" 17 / Maria ",
                      promised=tk.parse_when("2026-11-05 18:00", BERLIN, "p"),
                      appointments=(tk.parse_when("2026-11-06 08:00", BERLIN, "a"),
                                    tk.parse_when("2026-11-05 08:00", BERLIN, "a")),
                      missed=True, note="router replaced", declined_s=4.5 * 3600)
    tk.add(store, t)
    tk.add(store, tk.new_ticket("0815", tk.parse_when("2026-11-01 10:00", BERLIN, "o"), tz=BERLIN))
    got = tk.list_all(store)
    assert [x.number for x in got] == ["0815", "4711"]  # oldest report first
    back = got[1]
    assert back == Ticket("4711", opened, None, "phone", "17 / Maria", t.promised,
                          t.appointments, "router replaced", (), 4.5 * 3600)
    assert [a.at for a in back.appointments] == sorted(a.at for a in back.appointments)
    assert back.missed_appointments == 2
    assert tk.get(store, "4711") == back


def test_a_duplicate_number_is_refused(store):
    t = tk.new_ticket("4711", utc("2026-11-03T08:12:00+00:00"), tz=BERLIN)
    tk.add(store, t)
    with pytest.raises(UserError, match="ticket 4711 already exists"):
        tk.add(store, t)
    assert len(tk.list_all(store)) == 1


def test_close_appointments_and_unknown_numbers(store):
    tk.add(store, tk.new_ticket("4711", utc("2026-11-03T08:12:00+00:00"), tz=BERLIN))
    with pytest.raises(UserError, match="ticket 4711: closed 2026-11-02 09:00 is before opened "
                                        "2026-11-03 09:12"):
        tk.close(store, "4711", tk.parse_when("2026-11-02 09:00", BERLIN, "--at"), BERLIN)
    before = tk.close(store, "4711", utc("2026-11-08T10:05:00+00:00"), BERLIN)
    assert before.closed is None
    assert tk.close(store, "4711", utc("2026-11-08T10:06:00+00:00"), BERLIN).closed == \
        utc("2026-11-08T10:05:00+00:00")
    tk.add_appointment(store, "4711", utc("2026-11-05T07:00:00+00:00"), True)
    tk.add_appointment(store, "4711", utc("2026-11-04T07:00:00+00:00"), False)
    t = tk.get(store, "4711")
    assert t.closed == utc("2026-11-08T10:06:00+00:00")
    assert [(a.at.day, a.missed) for a in t.appointments] == [(4, False), (5, True)]
    for call in (lambda: tk.get(store, "9999"),
                 lambda: tk.close(store, "9999", utc("2026-11-08T10:05:00+00:00"), BERLIN),
                 lambda: tk.add_appointment(store, "9999", utc("2026-11-05T07:00:00+00:00"), True),
                 lambda: tk.set_link(store, "9999", "home", 3, True)):
        with pytest.raises(UserError, match="no ticket '9999'"):
            call()


def test_manual_links_replace_each_other(store):
    tk.add(store, tk.new_ticket("4711", utc("2026-11-03T08:12:00+00:00"), tz=BERLIN))
    tk.set_link(store, "4711", "home", 12, True)
    tk.set_link(store, "4711", "shop", 7, False)
    tk.set_link(store, "4711", "home", 12, False)
    assert tk.overrides(store) == [tk.Override("4711", "home", 12, False),
                                   tk.Override("4711", "shop", 7, False)]


def store_at_version(db_url: str, version: int) -> s.Store:
    """A store with the schema as migrations 1..`version` left it."""
    old = s.open_store(db_url, migrate_schema=False)
    with old.engine.begin() as conn:
        s.schema_migrations.create(conn)
        for number, name, fn in s.MIGRATIONS[:version]:
            fn(conn)
            conn.execute(s.schema_migrations.insert().values(version=number, name=name, applied_ms=0))
    return old


def test_the_tickets_migration_upgrades_a_version_2_store(db_url):
    """A store made before tickets existed keeps its data and gains the ticket tables."""
    old = store_at_version(db_url, 2)
    engine = old.engine
    with engine.begin() as conn:
        conn.execute(s.settings.insert().values(key="k", value="kept"))
    assert not sa.inspect(engine).has_table("tickets")
    assert s.migrate(engine) == [v for v, _, _ in s.MIGRATIONS[2:]]  # 3 onwards
    assert s.migrate(engine) == []
    old.dispose()
    st = s.open_store(db_url)
    assert st.setting("k") == "kept"
    tk.add(st, tk.new_ticket("4711", utc("2026-11-03T08:12:00+00:00"), tz=BERLIN,
                             appointments=(utc("2026-11-05T07:00:00+00:00"),)))
    tk.set_link(st, "4711", "home", 3, True)
    assert tk.get(st, "4711").appointments[0].at == utc("2026-11-05T07:00:00+00:00")
    st.dispose()


def test_migration_10_gives_tickets_a_line_and_keeps_the_old_ones(db_url):
    """Tickets recorded before lines existed keep every field and name no line."""
    old = store_at_version(db_url, 9)
    engine = old.engine
    with engine.begin() as conn:
        assert "line" not in {c["name"] for c in sa.inspect(conn).get_columns("tickets")}
        conn.exec_driver_sql("INSERT INTO tickets (number, opened_ms, operator, declined_s, "
                             "created_ms) VALUES ('4711', 1793693520000, '17 / Maria', 0, 0)")
    assert s.migrate(engine) == [v for v, _, _ in s.MIGRATIONS[9:]]
    old.dispose()
    st = s.open_store(db_url)
    kept = tk.get(st, "4711")
    assert kept.operator == "17 / Maria" and kept.line is None
    tk.update(st, "4711", BERLIN, line="home")
    assert tk.get(st, "4711").line == "home"
    st.dispose()


# --- linking by time -------------------------------------------------------------------------

def outage(cls: str, start: str, end: str | None, seq: int = 1, agent: str = "home") -> Outage:
    return Outage(agent, cls, utc(start), utc(end) if end else None, None,
                  {"boot": 1, "open_seq": seq} if cls != "unknown" else {"reason": "x"})


OUTAGES = [
    outage("isp_down", "2026-11-01T10:00:00+00:00", "2026-11-01T12:00:00+00:00", 1),  # before
    outage("isp_down", "2026-11-03T08:00:00+00:00", "2026-11-03T12:00:00+00:00", 2),  # ongoing at opening
    outage("local_down", "2026-11-03T12:30:00+00:00", "2026-11-03T13:00:00+00:00", 3),
    outage("unknown", "2026-11-03T13:00:00+00:00", "2026-11-03T14:00:00+00:00"),
    outage("dns_down", "2026-11-04T08:00:00+00:00", "2026-11-04T09:00:00+00:00", 4),  # while open
    outage("isp_down", "2026-11-06T08:00:00+00:00", "2026-11-06T09:00:00+00:00", 5),  # at closing
    outage("isp_down", "2026-11-09T08:00:00+00:00", None, 6),                          # after closing
]
TICKET = Ticket("4711", utc("2026-11-03T09:12:00+00:00"), utc("2026-11-06T08:00:00+00:00"))


def test_tickets_link_to_claimable_outages_that_overlap_their_time():
    [t] = lk.link([TICKET], OUTAGES)
    assert t.outage_ids == (OUTAGES[1].id, OUTAGES[4].id, OUTAGES[5].id)


def test_an_open_ticket_covers_later_outages_and_one_that_ended_at_the_report_does_not():
    open_ticket = Ticket("4712", utc("2026-11-01T12:00:00+00:00"))
    [t] = lk.link([open_ticket], OUTAGES)
    assert t.outage_ids == (OUTAGES[1].id, OUTAGES[4].id, OUTAGES[5].id, OUTAGES[6].id)


def test_manual_overrides_win_both_ways_and_explicit_ids_are_kept():
    overrides = [tk.Override("4711", "home", 1, True), tk.Override("4711", "home", 4, False),
                 tk.Override("4711", "home", 99, True),   # an outage not at hand: ignored
                 tk.Override("other", "home", 6, True)]
    [t] = lk.link([TICKET], OUTAGES, overrides)
    assert t.outage_ids == (OUTAGES[0].id, OUTAGES[1].id, OUTAGES[5].id)
    explicit = Ticket("4713", TICKET.opened, outage_ids=(OUTAGES[6].id,))
    assert lk.link([explicit], OUTAGES)[0].outage_ids == (OUTAGES[6].id,)
