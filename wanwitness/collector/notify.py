"""Notifications through Apprise (`[notify]`): the line is back, a flapping line's digest,
an agent silent and back, deadlines, the monthly claim.

During an ISP outage the home server is usually cut off too, so the message worth having
is the one when the line is back: each event is found in the store (the outages, the
agents, the tickets), put in the `notifications` table under a deterministic id
(`line_back:<agent>:<open_seq>`, one row per destination URL, inserted once however
often it is found, also after a restart) and sent from there until Apprise reports
success, with back-off while the internet is away. A row is marked sent right after the
service accepted it: a message is lost by nothing, and sent twice only if the process
dies in the instant between the two.

Like the Home Assistant publisher, a thread of its own does the work, woken after each
commit of the collector (`changed()`) and every CHECK_S; Apprise being slow or a service
being away never holds up ingest.

Events (`[notify.routes]` names them):
- `line_back`: an outage ended by the agent's record that the line is up (or a chain of
  outages of several classes, one after the other), lasting at least `min_duration_s`;
  its class, times in `[tariff] timezone`, and what it means for this period's claim
  under `[claim] rules`.
- `flap`: more than `flap_outages` outages started within `flap_window_s`: from the one
  over the limit on, no message each; one digest of the whole burst once the line has
  stayed up for `flap_window_s`.
- `agent_silent` / `agent_back`: nothing heard from an agent for `silent_after_s`
  (counted from the collector's start at the earliest), and when it is heard again.
- `deadline`: an open ticket's deadlines by the rule pack (`RulePack.milestones`) and the
  fix the ISP promised, and a claim's filing deadline (`dates.file_by`), each
  `deadline_notice_s` before it.
- `monthly_report`: after a billing period, its claim, the letter attached as PDF.

Only what happens after notifications were first turned on is told (the store keeps
that instant, setting `notify.since_ms`), and no outage older than LOOKBACK_MS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from wanwitness import store as s
from wanwitness.collector import timeline
from wanwitness.config import NOTIFY_EVENTS, Config
from wanwitness.errors import UserError

log = logging.getLogger("wanwitness.notify")

CHECK_S = 30.0              # a round at least this often (silence, deadlines, digests, retries)
MIN_GAP_S = 1.0             # at most one round a second, however much is ingested
SEND_TIMEOUT_S = 60         # one send, all in
TAKEN_MS = (2 * SEND_TIMEOUT_S + 60) * 1000  # a row being sent (the claim PDF made, then sent)
LOOKBACK_MS = 7 * 86_400_000
SINCE_KEY = "notify.since_ms"
FILING_PERIODS = 7           # complete billing periods looked at for a filing deadline (ru: 6 months)
WEBHOOK_SCHEMES = {"json", "jsons", "xml", "xmls", "form", "forms"}  # the path may be a secret

CLASS_TEXT = {
    "isp_down": "the line was down (the ISP's side)",
    "dns_down": "DNS failed (names did not resolve)",
    "degraded": "the line was slow or lost packets",
    "local_down": "your own equipment (router, Wi-Fi) was down",
}


# --- Apprise: URLs ------------------------------------------------------------------------

def _apprise() -> Any:
    """Apprise, imported when first needed; its own log kept out of ours (it is read from
    each call's result instead, and our lines name URLs only in privacy form)."""
    import apprise
    logger = logging.getLogger("apprise")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    # urllib3 logs each request's path at debug level: a Telegram bot's token is in it.
    logging.getLogger("urllib3").setLevel(max(logging.getLogger("urllib3").level, logging.INFO))
    return apprise


@contextmanager
def _apprise_said() -> Iterator[list[str]]:
    """What Apprise logs meanwhile (its reasons for refusing a URL)."""
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logger = logging.getLogger("apprise")
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield said
    finally:
        logger.removeHandler(handler)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _instantiate(url: str) -> tuple[Any, str]:
    """(Apprise's service for `url`, "") or (None, why not), the reason without the URL."""
    apprise = _apprise()
    with _apprise_said() as said:
        plugin = apprise.Apprise.instantiate(url)
    if plugin is not None:
        return plugin, ""
    if any(m.startswith("Unparseable URL") for m in said):
        return None, f"no Apprise service is called {_scheme(url) or '(no scheme)'}://"
    # Apprise's reasons, except those that repeat the URL (with its secrets): ours names it.
    reasons = [m for m in said if url not in m and not m.startswith("Could not load")]
    return None, "; ".join(dict.fromkeys(reasons)) or "Apprise cannot parse it"


def display(url: str) -> str:
    """The URL as logs and listings show it: Apprise's privacy form (passwords and tokens
    masked), no query; a webhook's path (often its secret) left out."""
    plugin, _why = _instantiate(url)
    scheme = _scheme(url) or "?"
    if plugin is None:
        return f"{scheme}://…"
    shown = str(plugin.url(privacy=True)).split("?", 1)[0]
    if scheme in WEBHOOK_SCHEMES:
        host = shown.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        shown = f"{scheme}://{host}/…"
    return shown


def check_url(url: str) -> str:
    """`url` if Apprise can use it; else ValueError saying why (the URL shown masked)."""
    plugin, why = _instantiate(url)
    if plugin is None:
        raise ValueError(f"Apprise cannot use {display(url)}: {why}")
    return url


def shown_setting(key: str, value: Any) -> Any:
    """A [notify] value as `config show` prints it: no URL's secrets."""
    if key == "urls":
        return [display(u) for u in value]
    if key == "routes":
        return {event: [display(u) for u in urls] for event, urls in value.items()}
    if key == "quiet_hours":
        return "" if value is None else "-".join(f"{m // 60:02d}:{m % 60:02d}" for m in value)
    return value


def target_id(url: str) -> str:
    """How the queue names a destination: no secret of the URL is stored."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def destinations(conf: Config, kind: str) -> tuple[str, ...]:
    """The URLs an event of `kind` goes to: its route, else [notify] urls."""
    n = conf.notify
    return n.routes[kind] if kind in n.routes else n.urls


def all_urls(conf: Config) -> list[str]:
    n = conf.notify
    return list(dict.fromkeys([*n.urls, *(u for kind in NOTIFY_EVENTS for u in n.routes.get(kind, ()))]))


def configured(conf: Config) -> bool:
    return conf.notify.enabled and bool(all_urls(conf))


def send(url: str, title: str, body: str, attach: list[str] | None = None) -> tuple[bool, str]:
    """One message to one URL now: (True, "") or (False, what went wrong)."""
    apprise = _apprise()
    plugin, why = _instantiate(url)
    if plugin is None:
        return False, why
    obj = apprise.Apprise()
    obj.add(plugin)
    result = obj.notify(body=body, title=title, attach=attach or None,
                        body_format=apprise.NotifyFormat.TEXT, timeout=SEND_TIMEOUT_S)
    if result:
        return True, ""
    said = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
    text = said[-1] if said else f"Apprise: {result.status.name.lower()}"
    return False, text.replace(url, display(url))


# --- times and words ---------------------------------------------------------------------

def local(ms: int, tz: ZoneInfo, *, day: bool = True) -> str:
    dt = datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
    return dt.strftime("%a %Y-%m-%d %H:%M:%S" if day else "%H:%M:%S")


def _same_day(a: int, b: int, tz: ZoneInfo) -> bool:
    return (datetime.fromtimestamp(a / 1000, UTC).astimezone(tz).date()
            == datetime.fromtimestamp(b / 1000, UTC).astimezone(tz).date())


def span_text(start: int, end: int, tz: ZoneInfo) -> str:
    return f"{local(start, tz)} to {local(end, tz, day=not _same_day(start, end, tz))}"


def relative_day(at_ms: int, now_ms: int, tz: ZoneInfo) -> str:
    """'today', 'tomorrow', 'in 3 days' (local calendar days), as reminders say it."""
    days = (datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(tz).date()
            - datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(tz).date()).days
    return "today" if days <= 0 else "tomorrow" if days == 1 else f"in {days} days"


def quiet_until(quiet: tuple[int, int] | None, now_ms: int, tz: ZoneInfo) -> int | None:
    """When the quiet hours going on at `now_ms` end (UTC ms); None: not quiet now."""
    if quiet is None:
        return None
    start, end = quiet
    now = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(tz)
    minute = now.hour * 60 + now.minute
    inside = start <= minute < end if start < end else minute >= start or minute < end
    if not inside:
        return None
    day = now.date() if minute < end else now.date() + timedelta(days=1)
    ends = datetime(day.year, day.month, day.day, end // 60, end % 60, tzinfo=tz)
    return int(ends.astimezone(UTC).timestamp() * 1000)


# --- outages into episodes, flapping ---------------------------------------------------------

@dataclass
class Episode:
    """Outages of one agent one after the other (a record switching isp_down to
    local_down ends one and starts the next at the same instant): the line is back only
    when the last one is closed by the agent's record that it is up."""
    agent: str
    parts: list[timeline.Outage]

    @property
    def start_ms(self) -> int:
        return self.parts[0].start_ms

    @property
    def end_ms(self) -> int | None:
        return self.parts[-1].end_ms

    @property
    def open_seq(self) -> Any:
        return self.parts[0].evidence.get("open_seq")

    @property
    def back(self) -> bool:
        """Ended by the agent's own record (not by its restart or silence)."""
        return self.end_ms is not None and self.parts[-1].evidence.get("close_seq") is not None

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys(p.cls for p in self.parts))


def episodes(outages: list[timeline.Outage]) -> dict[str, list[Episode]]:
    out: dict[str, list[Episode]] = {}
    for o in sorted((o for o in outages if o.cls != timeline.UNKNOWN),
                    key=lambda o: (o.agent, o.start_ms)):
        mine = out.setdefault(o.agent, [])
        if mine and mine[-1].end_ms is not None and mine[-1].end_ms == o.start_ms:
            mine[-1].parts.append(o)
        else:
            mine.append(Episode(o.agent, [o]))
    return out


def flapping(eps: list[Episode], limit: int, window_ms: int) -> tuple[set[int], list[list[Episode]]]:
    """Which episodes (indexes) are over the limit (more than `limit` started within
    `window_ms`, counting themselves), and the bursts holding them: runs of episodes each
    starting less than `window_ms` after the one before ended."""
    over = set()
    for i, e in enumerate(eps):
        if sum(1 for f in eps[:i + 1] if f.start_ms > e.start_ms - window_ms) > limit:
            over.add(i)
    runs: list[list[int]] = []
    for i, e in enumerate(eps):
        prev = eps[i - 1] if i else None
        if prev is not None and (prev.end_ms is None or e.start_ms - prev.end_ms < window_ms):
            runs[-1].append(i)
        else:
            runs.append([i])
    return over, [[eps[i] for i in run] for run in runs if over & set(run)]


# --- the queue -----------------------------------------------------------------------------

def _insert_ignore(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    N = s.notifications
    stmt = (postgresql.insert(N) if conn.dialect.name == "postgresql" else sqlite.insert(N))
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["event", "target"]), rows)


def enqueue(store: s.Store, event: str, kind: str, agent: str | None, urls: tuple[str, ...],
            title: str, body: str, data: dict[str, Any], now_ms: int) -> int:
    """One row per destination, each inserted once: returns how many were new."""
    if not urls:
        return 0
    N = s.notifications
    rows = [{"event": event, "target": target_id(u), "kind": kind, "agent": agent,
             "created_ms": now_ms, "title": title, "body": body, "data": json.dumps(data),
             "state": "pending", "attempts": 0, "next_ms": now_ms} for u in dict.fromkeys(urls)]
    with store.engine.begin() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(N).where(N.c.event == event)).scalar()
        _insert_ignore(conn, rows)
        after = conn.execute(sa.select(sa.func.count()).select_from(N).where(N.c.event == event)).scalar()
    return int(after or 0) - int(before or 0)


def known(store: s.Store, event: str) -> bool:
    N = s.notifications
    with store.engine.connect() as conn:
        return conn.execute(sa.select(N.c.event).where(N.c.event == event).limit(1)).first() is not None


def rows(store: s.Store, *, state: str | None = None, limit: int | None = None) -> list[Any]:
    """The queue, newest first."""
    N = s.notifications
    q = sa.select(N).order_by(N.c.created_ms.desc(), N.c.event, N.c.target)
    if state is not None:
        q = q.where(N.c.state == state)
    if limit is not None:
        q = q.limit(limit)
    with store.engine.connect() as conn:
        return list(conn.execute(q).all())


# --- the notifier ----------------------------------------------------------------------------

@dataclass
class Claim:
    claim: dict[str, Any]     # as `wanwitness claim --format json` prints it
    tickets: list[Any]        # the tickets, linked (claims.model.Ticket)
    pack: Any                 # the rule pack (claims.rules.RulePack)


class Notifier:
    """start(), changed() after each commit, close(); `round()` does one pass (scan the
    store for events, then send what is due)."""

    def __init__(self, store: s.Store, conf: Config, *, now_ms: Callable[[], int] = s.now_ms,
                 check_s: float = CHECK_S, status: Callable[[], dict[str, str]] = dict):
        self.store = store
        self.conf = conf
        self.n = conf.notify
        self.tz = ZoneInfo(conf.tariff.timezone)
        self.now_ms = now_ms
        self.check_s = check_s
        self.status = status
        self.urls = {target_id(u): u for u in all_urls(conf)}
        self.since_ms = 0
        self.started_ms = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._error_logged = ""
        self._failing: dict[str, str] = {}       # step -> the error it last logged
        self._known: set[str] = set()            # events already in the queue
        self._file_by: dict[tuple[str | None, str], tuple[int, str] | None] = {}  # (line, period) -> (deadline, amount)

    # -- running ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """The instant notifications began (kept in the store: nothing before it is told)."""
        now = self.now_ms()
        self.started_ms = now
        given = self.store.setting(SINCE_KEY)
        if given is None:
            self.store.set_setting(SINCE_KEY, str(now))
            given = str(now)
        self.since_ms = int(given)

    def start(self) -> None:
        self.prepare()
        self._thread.start()

    def changed(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(SEND_TIMEOUT_S + 10)

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.is_set():
            self._wake.wait(wait)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                wait = self.round()
                self._error_logged = ""
            except Exception as e:  # the store away, a bug: say it once, keep trying
                wait = self.check_s
                text = f"{type(e).__name__}: {e}"
                if text != self._error_logged:
                    self._error_logged = text
                    log.error("notifications: %s; trying again", text)
            self._stop.wait(MIN_GAP_S)

    def round(self) -> float:
        """Find new events, send what is due; returns seconds until the next round is due."""
        now = self.now_ms()
        self.scan(now)
        return self.deliver(now)

    # -- finding events ------------------------------------------------------------------------
    def _add(self, event: str, kind: str, agent: str | None, now: int,
             make: Callable[[], tuple[str, str, dict[str, Any]]]) -> None:
        """Queue `event` unless it already is: `make` (the words, the claim) runs once."""
        urls = destinations(self.conf, kind)
        if event in self._known or not urls:
            return
        if known(self.store, event):
            self._known.add(event)
            return
        title, body, data = make()
        if enqueue(self.store, event, kind, agent, urls, title, body, data, now):
            log.info("notification %s queued for %d destination(s)", event, len(urls))
        self._known.add(event)

    def scan(self, now: int) -> None:
        """Every kind of event, each on its own: one failing (a claim that cannot be made,
        a bug) is logged once and keeps none of the others from being found."""
        steps = [self._outages]
        if self.n.silent_after_s:
            steps.append(self._silence)
        if self.n.deadlines:
            steps.append(self._deadlines)
        if self.n.monthly_report:
            steps.append(self._monthly)
        for step in steps:
            try:
                step(now)
                self._failing.pop(step.__name__, None)
            except Exception as e:
                text = f"{type(e).__name__}: {e}"
                if self._failing.get(step.__name__) != text:
                    self._failing[step.__name__] = text
                    log.error("notifications: %s: %s; trying again", step.__name__.strip("_"), text)

    def _outages(self, now: int) -> None:
        from wanwitness.web import data
        window = self.n.flap_window_s * 1000
        outs = data.outages(self.store, since_ms=now - LOOKBACK_MS - window, now_ms=now)
        for agent, eps in episodes(outs).items():
            over, bursts = flapping(eps, self.n.flap_outages, window)
            for i, ep in enumerate(eps):
                end = ep.end_ms
                if (not ep.back or end is None or end < self.since_ms or end < now - LOOKBACK_MS
                        or i in over or end - ep.start_ms < self.n.min_duration_s * 1000):
                    continue
                self._add(f"line_back:{agent}:{ep.open_seq}", "line_back", agent, now,
                          partial(self._line_back, ep, now))
            for burst in bursts:
                last = burst[-1].end_ms
                if last is None or now - last < window or last < self.since_ms:
                    continue
                self._add(f"flap:{agent}:{burst[0].open_seq}", "flap", agent, now,
                          partial(self._flap, burst, now))

    def _silence(self, now: int) -> None:
        from wanwitness.web import data
        N = s.notifications
        for a in data.agents(self.store, now_ms=now, status=self.status()):
            if not a["enabled"] or a["last_seen"] is None:
                continue
            agent = a["id"]
            last = timeline.parse_time(a["last_seen"], option="last_seen")
            if now - max(last, self.started_ms) >= self.n.silent_after_s * 1000:
                self._add(f"agent_silent:{agent}:{last}", "agent_silent", agent, now,
                          partial(self._silent, agent, last, now))
                continue
            with self.store.engine.connect() as conn:
                told = conn.execute(sa.select(N.c.data).where(N.c.kind == "agent_silent", N.c.agent == agent)
                                    .order_by(N.c.created_ms.desc()).limit(1)).scalar()
            before = json.loads(told)["last_ms"] if told else None
            if before is not None and before < last:
                self._add(f"agent_back:{agent}:{before}", "agent_back", agent, now,
                          partial(self._back, agent, before, last))

    def _lines(self) -> list[str | None]:
        """The lines a claim is made for: each [lines.NAME], or the one line (None)."""
        return list(self.conf.line_names()) or [None]

    def _ticket_conf(self, line: str | None) -> Config:
        """The configuration of a ticket's line (the top-level one for a ticket of none)."""
        return self.conf.for_line(line) if self.conf.lines and line in self.conf.line_names() else self.conf

    def _deadlines(self, now: int) -> None:
        from wanwitness.claims import tickets as tk
        notice = self.n.deadline_notice_s * 1000
        for t in tk.list_all(self.store):
            if t.closed is not None:
                continue
            conf = self._ticket_conf(t.line)
            pack = self._pack(conf)
            due: list[tuple[int, str, str]] = []
            if pack is not None:
                for at, what in pack.milestones(t, self.tz, conf.claim.options):
                    due.append((tk.to_ms(at), f"{pack.name}: {what}", "milestone"))
            if t.promised is not None:
                due.append((tk.to_ms(t.promised), "the fix the ISP promised", "promised"))
            for at_ms, what, how in due:
                if at_ms - notice <= now < at_ms:
                    self._add(f"deadline:{t.number}:{how}:{at_ms}", "deadline", None, now,
                              partial(self._deadline, t.number, at_ms, what, how, now))
        for line in self._lines():
            self._filing(now, notice, line)

    def _filing(self, now: int, notice: int, line: str | None) -> None:
        """The complete periods' claims of the last FILING_PERIODS months, where their rule
        sets a filing deadline (ru-telematics: six months from the first day without
        service, so not only the last period's deadline can be near); per line."""
        from wanwitness.claims import build as b
        from wanwitness.claims import tickets as tk
        conf = self.conf.for_line(line)
        if self._pack(conf) is None or not (conf.tariff.monthly_fee and conf.tariff.currency):
            return
        tariff = b.tariff_from_config(conf)
        last = b.resolve_period(tariff, None, tk.from_ms(now)).label
        year, month = (int(x) for x in last.split("-"))
        for back in range(FILING_PERIODS):
            y, m = divmod(year * 12 + month - 1 - back, 12)
            label = f"{y:04d}-{m + 1:02d}"
            if (line, label) not in self._file_by:
                self._file_by[(line, label)] = self._file_by_of(label, now, line)
            found = self._file_by[(line, label)]
            if found and found[0] - notice <= now < found[0]:
                end, total = found
                self._add(f"deadline:file_by:{label}" + (f":{line}" if line else ""), "deadline",
                          None, now, partial(self._file_by_message, label, end, total, now, line))

    def _file_by_of(self, label: str, now: int, line: str | None = None) -> tuple[int, str] | None:
        """(the end of period `label`'s filing deadline, the amount), or None: no claim,
        nothing to claim, or a rule without a filing deadline."""
        from wanwitness.claims import tickets as tk
        try:
            made = self._claim(label, now, line=line)
        except UserError:  # nothing reported in that period: nothing to file
            return None
        claim: dict[str, Any] = made.claim if made else {"dates": {}, "total": "0"}
        file_by = claim["dates"].get("file_by") if Decimal(claim["total"]) > 0 else None
        if not file_by:
            return None
        day = date.fromisoformat(file_by) + timedelta(days=1)
        return (tk.to_ms(datetime(day.year, day.month, day.day, tzinfo=self.tz)),
                f"{claim['total']} {claim['currency']}")

    def _monthly(self, now: int) -> None:
        from wanwitness.claims import build as b
        from wanwitness.claims import tickets as tk
        from wanwitness.claims.model import Tariff
        for line in self._lines():
            conf = self.conf.for_line(line)
            tariff = Tariff(Decimal(0), "XXX", conf.tariff.period_start_day, conf.tariff.timezone)
            period = b.resolve_period(tariff, None, tk.from_ms(now))
            if tk.to_ms(period.end) < self.since_ms:
                continue
            self._add(f"monthly_report:{period.label}" + (f":{line}" if line else ""),
                      "monthly_report", None, now, partial(self._report, period.label, now, line))

    # -- the words ------------------------------------------------------------------------
    def _pack(self, conf: Config | None = None) -> Any:
        conf = conf or self.conf
        if not conf.claim.rules:
            return None
        from wanwitness.claims import make
        return make.choose_pack(conf, None, {}, how="[claim] rules")[0]

    def _claim(self, label: str, now: int, agent: str | None = None,
               line: str | None = None) -> Claim | None:
        """The claim for period `label` (of `line`, or of the line `agent` watches) as the
        Claim page makes it (one agent's evidence alone, as the Home Assistant sensor
        counts it); None without a claim configured."""
        from wanwitness.claims import build as b
        from wanwitness.claims import make
        from wanwitness.claims import tickets as tk
        from wanwitness.collector.homeassistant import claim_currency
        conf = self.conf.for_agent(agent) if agent is not None else self.conf.for_line(line)
        if conf is None or claim_currency(conf) is None:
            return None
        pack, options = make.choose_pack(conf, None, {}, how="[claim] rules")
        inputs = b.from_store(self.store, conf, label, now=tk.from_ms(now))
        if agent is not None:
            inputs = replace(inputs, outages=[o for o in inputs.outages if o.agent == agent])
        return Claim(b.build(inputs, pack, options), inputs.tickets, pack)

    def claim_line(self, agent: str, parts: list[timeline.Outage], now: int) -> str:
        """What these outages mean for this period's claim, in one or two sentences."""
        from wanwitness.claims import tickets as tk
        from wanwitness.claims.model import money
        from wanwitness.web import data
        end = parts[-1].end_ms or now
        conf = self.conf.for_agent(agent) or self.conf
        label = data._period_now(conf.tariff.period_start_day, self.tz, end)
        try:
            made = self._claim(label, now, agent)
        except UserError as e:
            return f"No claim this period: {e}."
        if made is None:
            return ""
        claim, pack, cur = made.claim, made.pack, made.claim["currency"]
        ids = {f"{agent}@{timeline.iso(p.start_ms)}" for p in parts}
        items = [i for i in claim["items"] if ids & set(i["outages"])]
        if items:
            counted = {o["id"]: o["counted_s"] for o in claim["outages"] if o["id"] in ids}
            amount, said = Decimal(0), []
            for i in items:
                if i["kind"] == "downtime":  # one item for all the period's time: our share
                    secs = sum(counted.get(x, 0.0) for x in i["outages"] if x in ids)
                    amount += (Decimal(i["amount"]) * Decimal(repr(secs))
                               / Decimal(repr(float(i["basis"]["seconds"]) or 1.0)))
                    said.append(f"{timeline.duration(int(secs * 1000))} of downtime counted")
                else:
                    amount += Decimal(i["amount"])
                    said.append(i["description"])
            mine = f"this outage {money(amount)} {cur} ({'; '.join(dict.fromkeys(said))})"
        else:
            why = next((o["why_not"] for o in claim["outages"] if o["id"] in ids and o["why_not"]),
                       "not counted under this rule")
            mine = f"this outage nothing ({why})"
        text = f"Claim {label} under {pack.name}: {mine}; {claim['total']} {cur} so far this period."
        for t in made.tickets:
            if t.closed is not None or not ids & set(t.outage_ids):
                continue
            ahead = [(at, what) for at, what in pack.milestones(t, self.tz, conf.claim.options)
                     if tk.to_ms(at) > now]
            if ahead:
                at, what = ahead[0]
                text += f" Ticket {t.number}: {what}, from {local(tk.to_ms(at), self.tz)}."
        return text

    def _line_back(self, ep: Episode, now: int) -> tuple[str, str, dict[str, Any]]:
        end = ep.end_ms or now
        length = timeline.duration(end - ep.start_ms)
        classes = ep.classes
        what = ", then ".join(f"{c}: {CLASS_TEXT.get(c, c)}" for c in classes)
        lines = [f"The line is back. It was {what}.",
                 f"Down from {span_text(ep.start_ms, end, self.tz)} ({self.tz.key}), {length}."]
        claim = self.claim_line(ep.agent, ep.parts, now)
        if claim:
            lines.append(claim)
        title = f"{ep.agent}: line back after {length}"
        return title, "\n".join(lines), {"start_ms": ep.start_ms, "end_ms": end, "classes": classes}

    def _flap(self, burst: list[Episode], now: int) -> tuple[str, str, dict[str, Any]]:
        agent = burst[0].agent
        first, last = burst[0].start_ms, burst[-1].end_ms or now
        down = sum(((p.end_ms or now) - p.start_ms) for ep in burst for p in ep.parts)
        by_class = Counter(c for ep in burst for c in ep.classes)
        counts = ", ".join(f"{c} {n}" for c, n in sorted(by_class.items()))
        lines = [f"The line flapped: {len(burst)} outages from {span_text(first, last, self.tz)} "
                 f"({self.tz.key}) ({counts}), down {timeline.duration(down)} in all.",
                 f"It has been up since {local(last, self.tz)}."]
        claim = self.claim_line(agent, [p for ep in burst for p in ep.parts], now)
        if claim:
            lines.append(claim)
        title = f"{agent}: line flapping, {len(burst)} outages"
        return title, "\n".join(lines), {"start_ms": first, "end_ms": last, "outages": len(burst)}

    def _silent(self, agent: str, last: int, now: int) -> tuple[str, str, dict[str, Any]]:
        body = (f"Nothing heard from agent {agent} since {local(last, self.tz)} ({self.tz.key}), "
                f"{timeline.duration(now - last)} ago. Its board may be off, or its Wi-Fi or the "
                "broker away; the time without a word is unknown in the ledger, neither up nor down.")
        return f"{agent}: witness silent", body, {"last_ms": last}

    def _back(self, agent: str, before: int, heard: int) -> tuple[str, str, dict[str, Any]]:
        body = (f"Agent {agent} is heard from again at {local(heard, self.tz)} ({self.tz.key}), "
                f"after {timeline.duration(heard - before)} without a word (from "
                f"{local(before, self.tz)}).")
        return f"{agent}: witness back", body, {"last_ms": before, "heard_ms": heard}

    def _deadline(self, number: str, at_ms: int, what: str, how: str,
                  now: int) -> tuple[str, str, dict[str, Any]]:
        when = f"{local(at_ms, self.tz)} ({self.tz.key}), {relative_day(at_ms, now, self.tz)}"
        if how == "promised":
            body = f"The ISP promised to fix ticket {number} by {when}."
        else:
            body = f"Ticket {number}, {what}: from {when}."
        return f"ticket {number}: deadline {relative_day(at_ms, now, self.tz)}", body, {"at_ms": at_ms}

    def _file_by_message(self, label: str, end: int, total: str, now: int,
                         line: str | None = None) -> tuple[str, str, dict[str, Any]]:
        last_day = local(end - 1, self.tz).rsplit(" ", 1)[0]
        of, opt = (f" of line {line}", f" --line {line}") if line else ("", "")
        body = (f"Your claim for {label}{of} ({total} under {self.conf.for_line(line).claim.rules}) "
                f"can be filed until {last_day} 23:59 ({self.tz.key}), "
                f"{relative_day(end - 1, now, self.tz)}: wanwitness claim --period {label}{opt}.")
        return f"claim {label}{of}: file it by {last_day}", body, {"at_ms": end}

    def _report(self, label: str, now: int, line: str | None = None) -> tuple[str, str, dict[str, Any]]:
        from wanwitness.claims import make
        of = f" of line {line}" if line else ""
        try:
            made = self._claim(label, now, line=line)
        except UserError as e:
            return f"wanwitness: billing period {label}{of}", f"No claim for {label}{of}: {e}.", {}
        if made is None:
            return (f"wanwitness: billing period {label}{of}", f"No claim for {label}{of}: set "
                    "[tariff] monthly_fee and currency and [claim] rules to have one made.", {})
        claim = made.claim
        missing = make.missing_parties(claim)
        letter = (f"The letter is attached (PDF; wanwitness claim --period {label}"
                  f"{f' --line {line}' if line else ''} makes it again)."
                  if not missing else f"No letter attached: set {' and '.join(missing)} in the config.")
        listed = [o for o in claim["outages"] if o["class"] != timeline.UNKNOWN]
        down = sum(o["duration_s"] for o in listed)
        counts = ", ".join(f"{c} {n}" for c, n in sorted(Counter(o["class"] for o in listed).items()))
        body = (f"Billing period {label}{of}: {len(listed)} outage(s)"
                f"{f' ({counts})' if counts else ''}, down {timeline.duration(int(down * 1000))} in all. "
                f"Claim under {claim['rules']['name']}: {claim['total']} {claim['currency']}. {letter}")
        return (f"wanwitness: claim for {label}{of}: {claim['total']} {claim['currency']}", body,
                {} if missing else {"claim": label, **({"line": line} if line else {})})

    # -- sending ----------------------------------------------------------------------------
    def _attachment(self, label: str, directory: Path, line: str | None = None) -> list[str]:
        from wanwitness.claims import make
        made = self._claim(label, self.now_ms(), line=line)
        if made is None:
            return []
        path = directory / f"wanwitness-claim-{label}{f'-{line}' if line else ''}.pdf"
        path.write_bytes(make.encode(made.claim, "pdf", self.conf.for_line(line).claim.lang))
        return [str(path)]

    def _exempt(self, row: Any, quiet_end: int) -> bool:
        """What does not wait for the quiet hours: a deadline falling before they end."""
        at = json.loads(row.data).get("at_ms")
        return row.kind == "deadline" and isinstance(at, int) and at <= quiet_end

    def deliver(self, now: int) -> float:
        """Send every pending row that is due; returns seconds until one is due again."""
        N = s.notifications
        with self.store.engine.connect() as conn:
            pending = list(conn.execute(sa.select(N).where(N.c.state == "pending")
                                        .order_by(N.c.created_ms, N.c.event, N.c.target)).all())
        quiet_end = quiet_until(self.n.quiet_hours, now, self.tz)
        down: set[str] = set()   # destinations that failed this round: the rest wait too
        next_due: int | None = quiet_end
        for row in pending:
            url = self.urls.get(row.target)
            if url is None or now - row.created_ms > self.n.give_up_s * 1000:
                why = ("its URL is no longer in [notify]" if url is None
                       else f"not sent within give_up_s ({row.last_error or 'never tried'})")
                self._finish(row, "failed", now, why)
                continue
            if row.next_ms > now or row.target in down or (
                    quiet_end is not None and not self._exempt(row, quiet_end)):
                if row.next_ms > now:
                    next_due = row.next_ms if next_due is None else min(next_due, row.next_ms)
                continue
            if not self._take(row, now):
                continue  # another collector on this store is sending it
            with tempfile.TemporaryDirectory(prefix="wanwitness-notify-") as tmp:
                try:
                    doc = json.loads(row.data)
                    label = doc.get("claim")
                    attach = self._attachment(label, Path(tmp), doc.get("line")) if label else []
                    ok, why = send(url, row.title, row.body, attach)
                except Exception as e:  # making the attachment, a bug in a plugin
                    ok, why = False, f"{type(e).__name__}: {e}"
            if ok:
                self._finish(row, "sent", now, None)
                log.info("notification %s sent to %s", row.event, display(url))
                continue
            down.add(row.target)
            delay = min(self.n.retry_min_s * 2 ** row.attempts, self.n.retry_max_s)
            with self.store.engine.begin() as conn:
                conn.execute(N.update().where(N.c.event == row.event, N.c.target == row.target,
                                              N.c.state == "pending")
                             .values(attempts=row.attempts + 1, next_ms=now + delay * 1000,
                                     last_error=why[:500]))
            next_due = now + delay * 1000 if next_due is None else min(next_due, now + delay * 1000)
            log.warning("notification %s to %s not sent (%s); trying again in %s", row.event,
                        display(url), why, timeline.duration(delay * 1000))
        if next_due is None:
            return self.check_s
        return max(0.05, min(self.check_s, (next_due - now) / 1000))

    def _take(self, row: Any, now: int) -> bool:
        """The row is this process's to send: its next_ms moves past the time a send may
        take, unless someone moved it since we read it (several collectors on one store,
        `wanwitness collect --shared`, each run a notifier: one of them sends). If this
        process dies before the send's outcome is written, another sends it after that."""
        N = s.notifications
        with self.store.engine.begin() as conn:
            taken = conn.execute(N.update().where(N.c.event == row.event, N.c.target == row.target,
                                                  N.c.state == "pending", N.c.next_ms == row.next_ms)
                                 .values(next_ms=now + TAKEN_MS)).rowcount
        return taken == 1

    def _finish(self, row: Any, state: str, now: int, why: str | None) -> None:
        N = s.notifications
        values: dict[str, Any] = {"state": state, "attempts": row.attempts + (state == "sent")}
        if state == "sent":
            values["sent_ms"] = now
        else:
            values["last_error"] = why
            log.error("notification %s: given up: %s", row.event, why)
        with self.store.engine.begin() as conn:
            conn.execute(N.update().where(N.c.event == row.event, N.c.target == row.target,
                                          N.c.state == "pending").values(**values))
