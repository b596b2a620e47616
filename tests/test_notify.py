"""Notifications through Apprise (collector/notify.py), delivered to receivers on loopback:
a webhook (Apprise `json://`, a small HTTP server of the test's own) and an SMTP server
(aiosmtpd; Apprise `mailto://` without TLS).

The notifier runs in-process on a store fed through the real Ingestor (testing/records.py),
with a clock of the test's own; its thread is woken as the collector wakes it after a commit.
"""

from __future__ import annotations

import base64
import email
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from testing.brokers import free_port
from testing.records import HOUR, MIN, T0, Board
from wanwitness import config as cfg
from wanwitness import store as s
from wanwitness.claims import tickets as tk
from wanwitness.collector import notify as nt
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.store import open_store

WAIT_S = 20
SEC = 1000
DAY = 24 * HOUR


def wait_for(what: str, check: Callable[[], object], timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


class Webhook:
    """What Apprise's json:// posts, received on 127.0.0.1:`port` (start/stop at will)."""

    def __init__(self, port: int | None = None, delay_s: float = 0.0):
        self.port = port or free_port()
        self.delay_s = delay_s  # before each answer: a slow service
        self.got: list[tuple[str, dict]] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Webhook:
        got, delay_s = self.got, self.delay_s

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append((self.path, json.loads(body)))
                time.sleep(delay_s)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def titles(self) -> list[str]:
        return [doc["title"] for _p, doc in self.got]


class Smtp:
    """An SMTP server on loopback keeping every message."""

    def __init__(self):
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        outer = self

        class Handler:
            async def handle_DATA(self, _server, _session, envelope):
                outer.messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=wanwitness@example.com&to=me@example.com&mode=insecure"

    def texts(self) -> list[str]:
        out = []
        for m in self.messages:
            for part in m.walk():
                if part.get_content_type() == "text/plain":
                    out.append(part.get_payload(decode=True).decode().replace("\r\n", "\n"))
        return out

    def stop(self) -> None:
        self.controller.stop()


def write_config(path: Path, urls: list[str], *, notify: str = "", rules: str = "pro-rata",
                 extra: str = "") -> cfg.Config:
    listed = ", ".join(f'"{u}"' for u in urls)
    given = {line.split("=")[0].strip() for line in notify.splitlines()}
    defaults = "".join(f"{k} = {v}\n" for k, v in (("silent_after_s", 0), ("retry_min_s", 1), ("retry_max_s", 2))
                       if k not in given)
    path.write_text(f'[notify]\nurls = [{listed}]\n{defaults}{notify}\n'
                    '[tariff]\nmonthly_fee = "100.00"\ncurrency = "EUR"\ntimezone = "Europe/Berlin"\n'
                    f'[claim]\nrules = "{rules}"\n{extra}')
    return cfg.load(path, env={})


class Rig:
    """A store with agent `kitchen` (booted at T0), the test's clock, a notifier to start."""

    def __init__(self, store: s.Store, conf: cfg.Config, clock: list[int]):
        self.store, self.conf, self.clock = store, conf, clock
        self.notifier: nt.Notifier | None = None

    def start(self) -> nt.Notifier:
        self.notifier = nt.Notifier(self.store, self.conf, now_ms=lambda: self.clock[0], check_s=0.2)
        self.notifier.start()
        return self.notifier

    def stop(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
            self.notifier = None

    def at(self, ms: int) -> None:
        """The clock moves to `ms`, and the notifier is told (as after a commit)."""
        self.clock[0] = ms
        if self.notifier is not None:
            self.notifier.changed()

    def queue(self) -> list:
        return nt.rows(self.store)


@contextmanager
def rigged(tmp_path: Path, db_url: str, urls: list[str], **config: str) -> Iterator[tuple[Rig, Board]]:
    """A store on `db_url` with agent `kitchen`, a notifier started at T0 + 1 min."""
    store = open_store(db_url)
    board = _board(store)
    rig = Rig(store, write_config(tmp_path / "config.toml", urls, **config), [T0 + MIN])
    try:
        yield rig, board
    finally:
        rig.stop()
        store.dispose()


def _board(store: s.Store) -> Board:
    add_agent(store, "kitchen")
    board = Board(Ingestor(store), "kitchen")
    board.boot, board.boot_utc = 1, T0
    board.rec("boot", T0, reset="PWRON_RESET", fw="0.1.0")
    return board


@pytest.fixture
def receivers():
    hook, smtp = Webhook().start(), Smtp()
    yield hook, smtp
    hook.stop()
    smtp.stop()


@pytest.fixture
def rig(tmp_path, store, receivers):
    hook, smtp = receivers
    board = _board(store)
    rig = Rig(store, write_config(tmp_path / "config.toml", [hook.url(), smtp.url()]), [T0 + MIN])
    yield rig, board, hook, smtp
    rig.stop()


def outage(board: Board, start: int, end: int, cls: str = "isp_down") -> None:
    board.state(cls, start, ev={"by": "probe"})
    board.state("up", end)


LINE_BACK_BODY = ("The line is back. It was isp_down: the line was down (the ISP's side).\n"
                  "Down from Tue 2026-11-03 07:02:00 to 07:07:00 (Europe/Berlin), 5m 00s.\n"
                  "Claim 2026-11 under pro-rata: this outage 0.01 EUR (5m 00s of downtime counted); "
                  "0.01 EUR so far this period.")


def test_line_back_is_one_message_to_each_destination_with_local_times_and_the_claim(rig):
    """Also: the collector stopped between the outage's end and the send, and again after."""
    rig, board, hook, smtp = rig
    rig.start()  # notifications begin at T0 + 1 min
    wait_for("the first round", lambda: rig.store.setting(nt.SINCE_KEY))
    rig.stop()
    outage(board, T0 + 2 * MIN, T0 + 7 * MIN)  # while the notifier is stopped
    rig.at(T0 + 8 * MIN)
    rig.start()
    wait_for("the webhook's message", lambda: hook.got)
    wait_for("the e-mail", lambda: smtp.messages)
    path, doc = hook.got[0]
    assert path == "/hook"
    assert doc["title"] == "kitchen: line back after 5m 00s"
    assert doc["message"] == LINE_BACK_BODY
    assert smtp.messages[0]["Subject"] == "kitchen: line back after 5m 00s"
    assert smtp.texts()[0].strip() == LINE_BACK_BODY
    rows = wait_for("both marked sent", lambda: (r := rig.queue()) and all(x.state == "sent" for x in r) and r)
    assert {r.event for r in rows} == {f"line_back:kitchen:{board.seq - 1}"} and len(rows) == 2
    # Restarted after the send, and many rounds later: nothing again.
    rig.stop()
    rig.start()
    for minute in (9, 10, 11):
        rig.at(T0 + minute * MIN)
        time.sleep(1.2)
    assert len(hook.got) == 1 and len(smtp.messages) == 1


def test_receiver_down_delays_the_message_and_a_restart_keeps_it(tmp_path, db_url):
    hook = Webhook()  # its port chosen, nothing listening yet
    with rigged(tmp_path, db_url, [hook.url()]) as (rig, board):
        rig.start()
        outage(board, T0 + 2 * MIN, T0 + 7 * MIN)
        rig.at(T0 + 8 * MIN)
        row = wait_for("a failed try", lambda: (r := rig.queue()) and r[0].attempts >= 1 and r[0])
        assert row.state == "pending" and "Connection error" in row.last_error
        rig.stop()  # the collector restarts while the internet is still away
        rig.start()
        rig.at(T0 + 9 * MIN)
        wait_for("another failed try", lambda: rig.queue()[0].attempts >= 2)
        hook.start()  # the internet is back
        rig.at(T0 + 10 * MIN)
        wait_for("the message", lambda: hook.got)
        wait_for("marked sent", lambda: rig.queue()[0].state == "sent")
        for minute in (11, 12):
            rig.at(T0 + minute * MIN)
            time.sleep(1.2)
        assert hook.titles() == ["kitchen: line back after 5m 00s"]
    hook.stop()


def test_a_flapping_line_gives_one_digest(tmp_path, sqlite_url, receivers):
    hook, _smtp = receivers
    with rigged(tmp_path, sqlite_url, [hook.url()],
                notify="flap_outages = 3\nflap_window_s = 600\nmin_duration_s = 0\n") as (rig, board):
        rig.start()
        for i in range(6):  # 30 s down every 90 s
            start = T0 + 2 * MIN + i * 90 * SEC
            outage(board, start, start + 30 * SEC)
            rig.at(start + 31 * SEC)
            time.sleep(0.3)
        last_end = T0 + 2 * MIN + 5 * 90 * SEC + 30 * SEC
        wait_for("the first three", lambda: len(hook.got) >= 3)
        rig.at(last_end + 5 * MIN)  # not quiet for the window yet
        time.sleep(1.5)
        assert len(hook.got) == 3
        rig.at(last_end + 10 * MIN)
        wait_for("the digest", lambda: len(hook.got) >= 4)
        for minute in (11, 12):
            rig.at(last_end + minute * MIN)
            time.sleep(1.2)
        titles = hook.titles()
        assert titles == ["kitchen: line back after 30s"] * 3 + ["kitchen: line flapping, 6 outages"]
        digest = hook.got[3][1]["message"]
        assert "6 outages from Tue 2026-11-03 07:02:00 to 07:10:00 (Europe/Berlin) (isp_down 6)" in digest
        assert "down 3m 00s in all" in digest and "It has been up since Tue 2026-11-03 07:10:00." in digest


def test_quiet_hours_hold_a_message_but_not_a_deadline_before_their_end(tmp_path, sqlite_url, receivers):
    hook, _smtp = receivers
    with rigged(tmp_path, sqlite_url, [hook.url()], notify='quiet_hours = "07:00-08:00"\n') as (rig, board):
        tk.add(rig.store, tk.new_ticket("4711", tk.from_ms(T0 - HOUR), tz=ZoneInfo("Europe/Berlin"),
                                        promised=tk.from_ms(T0 + 30 * MIN)))
        rig.start()
        outage(board, T0 + 2 * MIN, T0 + 7 * MIN)  # 07:07 in Berlin: quiet
        rig.at(T0 + 8 * MIN)
        wait_for("the deadline", lambda: hook.got)
        assert hook.titles() == ["ticket 4711: deadline today"]
        assert hook.got[0][1]["message"] == ("The ISP promised to fix ticket 4711 by Tue 2026-11-03 "
                                             "07:30:00 (Europe/Berlin), today.")
        time.sleep(1.5)
        assert len(hook.got) == 1
        rig.at(T0 + HOUR + SEC)  # 08:00:01
        wait_for("the line-back message", lambda: len(hook.got) == 2)
        assert hook.titles()[1] == "kitchen: line back after 5m 00s"


def test_agent_silent_and_back(tmp_path, sqlite_url, receivers):
    hook, _smtp = receivers
    with rigged(tmp_path, sqlite_url, [hook.url()], notify="silent_after_s = 300\n") as (rig, board):
        board.hb(T0 + MIN)
        rig.start()
        rig.at(T0 + 5 * MIN)
        time.sleep(1.5)
        assert hook.got == []
        rig.at(T0 + 7 * MIN)
        wait_for("silent", lambda: hook.got)
        assert hook.got[0][1]["message"].startswith(
            "Nothing heard from agent kitchen since Tue 2026-11-03 07:01:00 (Europe/Berlin), 6m 00s ago.")
        board.hb(T0 + 20 * MIN)
        rig.at(T0 + 20 * MIN)
        wait_for("back", lambda: len(hook.got) == 2)
        assert hook.got[1][1]["message"] == ("Agent kitchen is heard from again at Tue 2026-11-03 "
                                             "07:20:00 (Europe/Berlin), after 19m 00s without a word "
                                             "(from Tue 2026-11-03 07:01:00).")
        rig.at(T0 + 21 * MIN)
        time.sleep(1.5)
        assert hook.titles() == ["kitchen: witness silent", "kitchen: witness back"]


def test_claim_line_of_a_reported_fault_under_tkg58(tmp_path, sqlite_url):
    """Day 3 of a reported fault is paid; the next milestone is named."""
    store = open_store(sqlite_url)
    board = _board(store)
    conf = write_config(tmp_path / "config.toml", ["json://127.0.0.1:9/x"], rules="de-tkg58")
    tk.add(store, tk.new_ticket("4711", tk.from_ms(T0 + HOUR), tz=ZoneInfo("Europe/Berlin")))
    start, end = T0 + 2 * MIN, T0 + 3 * DAY + 18 * HOUR  # Nov 3 07:02 to Nov 7 01:00 (Berlin)
    for h in range(0, 90, 1):  # heartbeats keep the outage witnessed
        board.hb(start + h * HOUR)
    outage(board, start, end)
    notifier = nt.Notifier(store, conf, now_ms=lambda: end + MIN)
    ep = nt.episodes(nt.timeline.query(store, now_ms=end + MIN))["kitchen"][0]
    line = notifier.claim_line("kitchen", ep.parts, end + MIN)
    assert line == ("Claim 2026-11 under de-tkg58: this outage 10.00 EUR (day 3 of complete outage "
                    "after the report); 10.00 EUR so far this period. Ticket 4711: day 5: EUR 10 or "
                    "20 % a day from here, from Sun 2026-11-08 00:00:00.")
    store.dispose()


def test_monthly_report_carries_the_claim_as_pdf(tmp_path, sqlite_url, receivers):
    hook, _smtp = receivers
    with rigged(tmp_path, sqlite_url, [hook.url()], notify="monthly_report = true\n",
                extra='[customer]\nname = "A. Customer"\n[isp]\nname = "The ISP"\n') as (rig, board):
        rig.start()
        outage(board, T0 + 2 * MIN, T0 + 7 * MIN)
        wait_for("line back", lambda: hook.got)
        dec1 = tk.to_ms(tk.parse_when("2026-12-01 00:05", ZoneInfo("Europe/Berlin"), "t"))
        rig.at(dec1)
        wait_for("the report", lambda: len(hook.got) == 2)
        doc = hook.got[1][1]
        assert doc["title"] == "wanwitness: claim for 2026-11: 0.01 EUR"
        assert "Billing period 2026-11: 1 outage(s) (isp_down 1), down 5m 00s in all." in doc["message"]
        (attached,) = doc["attachments"]
        assert attached["filename"] == "wanwitness-claim-2026-11.pdf"
        assert base64.b64decode(attached["base64"]).startswith(b"%PDF")


def test_queue_is_insert_once_per_event_and_destination(store):
    add = dict(kind="line_back", agent="kitchen", title="t", body="b", data={}, now_ms=T0)
    assert nt.enqueue(store, "line_back:kitchen:7", urls=("json://127.0.0.1:9/a", "json://127.0.0.1:9/b"),
                      **add) == 2
    assert nt.enqueue(store, "line_back:kitchen:7", urls=("json://127.0.0.1:9/a",), **add) == 0
    assert nt.enqueue(store, "line_back:kitchen:8", urls=("json://127.0.0.1:9/a",), **add) == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(s.notifications)).scalar() == 3


def test_two_collectors_on_one_store_send_a_message_once(tmp_path, db_url):
    """`collect --shared`: every collector runs a notifier on the same queue; a slow
    service keeps the first send open while the other notifier looks at the queue."""
    hook = Webhook(delay_s=1.0).start()
    store = open_store(db_url)
    conf = write_config(tmp_path / "config.toml", [hook.url()])
    try:
        assert nt.enqueue(store, "line_back:kitchen:7", "line_back", "kitchen", (hook.url(),),
                          "kitchen: line back", "b", {}, T0) == 1
        notifiers = [nt.Notifier(store, conf, now_ms=lambda: T0 + SEC) for _ in range(2)]
        threads = [threading.Thread(target=n.deliver, args=(T0 + SEC,)) for n in notifiers]
        for th in threads:
            th.start()
        for th in threads:
            th.join(WAIT_S)
        assert hook.titles() == ["kitchen: line back"]
        (row,) = nt.rows(store)
        assert row.state == "sent" and row.attempts == 1
    finally:
        hook.stop()
        store.dispose()


# --- configuration and the CLI ---------------------------------------------------------------

@pytest.mark.parametrize("body, key", [
    ('urls = ["nosuchservice://x/y"]', "[notify] urls"),
    ('urls = "json://127.0.0.1:9/x"\nquiet_hours = "22-7"', "[notify] quiet_hours"),
    ('urls = ["mailto://user:pw@127.0.0.1:1?to=x@example.com&mode=insecure"]', "[notify] urls"),
    ('[notify.routes]\nsomething = ["json://127.0.0.1:9/x"]', "[notify] routes"),
    ('flap_outages = 0', "[notify] flap_outages"),
])
def test_bad_notify_config_is_one_line_naming_the_key(ww, tmp_path, body, key):
    conf = tmp_path / "config.toml"
    conf.write_text(f"[notify]\n{body}\n" if not body.startswith("[") else body + "\n")
    result = ww("--config", str(conf), "collect", "--no-web")
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert "pw@" not in result.stderr


def test_config_show_masks_notification_urls(ww, tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text('[notify]\nurls = ["json://u:s3cretpw@127.0.0.1:9/hook/tok3n"]\nquiet_hours = "22:00-07:00"\n'
                    '[notify.routes]\nflap = []\ndeadline = ["ntfy://u:s3cretpw@127.0.0.1:9/topic"]\n')
    shown = ww("--config", str(conf), "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "urls = ['json://127.0.0.1:9/…']" in shown.stdout and "quiet_hours = '22:00-07:00'" in shown.stdout
    assert "'flap': []" in shown.stdout and "ntfy://u:****@127.0.0.1:9/topic" in shown.stdout
    assert "s3cretpw" not in shown.stdout and "tok3n" not in shown.stdout


def test_notify_test_and_list(ww, tmp_path, receivers):
    hook, smtp = receivers
    secret_url = f"json://someone:s3cretpw@127.0.0.1:{hook.port}/hook/tok3n"
    conf = tmp_path / "config.toml"
    conf.write_text(f'[notify]\nurls = ["{secret_url}", "{smtp.url()}"]\n')
    result = ww("--config", str(conf), "notify", "test")
    assert result.returncode == 0, result.stderr
    assert hook.got[0][0] == "/hook/tok3n" and hook.got[0][1]["title"] == "wanwitness: test notification"
    assert smtp.messages[0]["Subject"] == "wanwitness: test notification"
    assert "s3cretpw" not in result.stdout + result.stderr and "tok3n" not in result.stdout + result.stderr
    assert f"sent to json://127.0.0.1:{hook.port}/…" in result.stdout

    other = Webhook().start()
    try:
        one = ww("--config", str(conf), "notify", "test", "--url", other.url("only"))
        assert one.returncode == 0 and [p for p, _d in other.got] == ["/only"]
    finally:
        other.stop()
    down = ww("--config", str(conf), "notify", "test", "--url", f"json://127.0.0.1:{free_port()}/x")
    assert down.returncode == 1 and "NOT sent" in down.stderr and "Connection error" in down.stderr
    bad = ww("--config", str(conf), "notify", "test", "--url", "nosuchservice://x")
    assert bad.returncode == 2 and bad.stderr.startswith("wanwitness: --url: Apprise cannot use")

    db = f"sqlite:///{tmp_path}/w.db"
    store = open_store(db)
    add = dict(kind="line_back", agent="kitchen", title="t", body="b", data={}, now_ms=T0)
    nt.enqueue(store, "line_back:kitchen:7", urls=(secret_url,), **add)
    nt.enqueue(store, "line_back:kitchen:9", urls=("json://127.0.0.1:9/gone",), **add)
    with store.engine.begin() as conn:
        conn.execute(s.notifications.update().where(s.notifications.c.event == "line_back:kitchen:7")
                     .values(attempts=2, last_error="A Connection error occurred"))
    store.dispose()
    listing = ww("--config", str(conf), "notify", "list", "--db", db)
    assert listing.returncode == 0, listing.stderr
    assert "line_back:kitchen:7" in listing.stdout and "A Connection error occurred" in listing.stdout
    assert "no longer configured" in listing.stdout and "2 pending, 0 sent, 0 failed" in listing.stdout
    assert "s3cretpw" not in listing.stdout and "tok3n" not in listing.stdout
    as_json = json.loads(ww("--config", str(conf), "notify", "list", "--db", db, "--json").stdout)
    assert {r["event"]: r["attempts"] for r in as_json} == {"line_back:kitchen:7": 2, "line_back:kitchen:9": 0}


def test_secrets_never_reach_the_log(tmp_path, sqlite_url, caplog):
    """A send that fails and one that succeeds: the log names the URL masked."""
    hook = Webhook()
    secret_url = f"json://someone:s3cretpw@127.0.0.1:{hook.port}/hook/tok3n"
    caplog.set_level(logging.DEBUG)
    with rigged(tmp_path, sqlite_url, [secret_url]) as (rig, board):
        rig.start()
        outage(board, T0 + 2 * MIN, T0 + 7 * MIN)
        rig.at(T0 + 8 * MIN)
        wait_for("a failed try", lambda: (r := rig.queue()) and r[0].attempts >= 1)
        hook.start()
        rig.at(T0 + 9 * MIN)
        wait_for("sent", lambda: rig.queue()[0].state == "sent")
    hook.stop()
    text = caplog.text
    assert "not sent" in text and "sent to json://127.0.0.1" in text
    assert "s3cretpw" not in text and "tok3n" not in text


def test_rule_pack_deadline_of_an_open_ticket_is_told_a_day_before(tmp_path, sqlite_url, receivers):
    hook, _smtp = receivers
    with rigged(tmp_path, sqlite_url, [hook.url()], rules="de-tkg58") as (rig, _board):
        berlin = ZoneInfo("Europe/Berlin")
        tk.add(rig.store, tk.new_ticket("4711", tk.parse_when("2026-11-03 10:00", berlin, "t"), tz=berlin))
        rig.notifier = nt.Notifier(rig.store, rig.conf, now_ms=lambda: rig.clock[0])
        rig.notifier.prepare()
        rig.clock[0] = tk.to_ms(tk.parse_when("2026-11-05 12:00", berlin, "t"))
        rig.notifier.round()
        rig.notifier.round()
        assert [doc["message"] for _p, doc in hook.got] == [
            "Ticket 4711, de-tkg58: day 3: EUR 5 or 10 % of the fee a day from here: from Fri "
            "2026-11-06 00:00:00 (Europe/Berlin), tomorrow."]


def test_a_claims_filing_deadline_months_later_is_told_on_its_last_day(tmp_path, sqlite_url, receivers):
    """ru-telematics: a claim is filed within six months of the first day without service
    (2026-11-03 -> by 2027-05-02), long after the period was the last complete one; told
    within deadline_notice_s (a day) of its end."""
    hook, _smtp = receivers
    with rigged(tmp_path, sqlite_url, [hook.url()], rules="ru-telematics") as (rig, board):
        outage(board, T0 + 2 * MIN, T0 + 7 * MIN)
        berlin = ZoneInfo("Europe/Berlin")
        rig.notifier = nt.Notifier(rig.store, rig.conf, now_ms=lambda: rig.clock[0])
        rig.notifier.prepare()
        rig.clock[0] = tk.to_ms(tk.parse_when("2027-05-01 12:00", berlin, "t"))
        rig.notifier.round()
        assert not [doc for _p, doc in hook.got if doc["title"].startswith("claim ")]
        rig.clock[0] = tk.to_ms(tk.parse_when("2027-05-02 09:00", berlin, "t"))
        rig.notifier.round()
        rig.notifier.round()
        filing = [doc for _p, doc in hook.got if doc["title"].startswith("claim ")]
        assert [d["title"] for d in filing] == ["claim 2026-11: file it by Sun 2027-05-02"]
        assert filing[0]["message"].startswith(
            "Your claim for 2026-11 (0.01 EUR under ru-telematics) can be filed until Sun "
            "2027-05-02 23:59 (Europe/Berlin), today")
