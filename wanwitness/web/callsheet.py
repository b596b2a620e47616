"""The call sheet: what to tell the ISP's support line about an outage, from the evidence.

A first-line operator follows a script: is the router on, which lights are on, since
when, have you restarted it, is your account paid, what is your customer number. The
sheet answers it from what the collector holds for one outage (going on now, or a past
one), in the language of the claim letters, and lists what to note during the call.

`build(store, conf, ...)` returns the sheet as a JSON-ready dict, already translated;
`render_text(sheet)` lays it out for a terminal (short lines, to read out on the phone);
the web page (templates/callsheet.html) shows the same dict.

The evidence is the outage's opening `state` record (`ev`, docs/protocol.md), completed
by the records that restated it (`cont_seqs`: an LED-opened outage gets its probe counts
when a round confirms it) and, while the outage goes on, by the newest `led` records: the
lights as they are now. The strings are in the claim letters' catalogs
(wanwitness/claims/locale); tests/test_callsheet.py checks that each is translated.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from babel.dates import format_datetime

from wanwitness import store as s
from wanwitness.claims.catalogs import N_, check_language, translations
from wanwitness.claims.letter import Fmt
from wanwitness.collector import timeline
from wanwitness.config import Config
from wanwitness.errors import UserError

MATCH_MS = 1000        # --start finds an outage that started within this of it


# What is down, in words for a layperson (timeline classes).
WHAT = {
    "isp_down": N_("The internet connection (the line to the provider)"),
    "dns_down": N_("Name lookup (DNS): websites do not open by name"),
    "degraded": N_("The internet connection: slow and losing data"),
    "local_down": N_("The router or the home network"),
}
# The LED roles of docs/agent.md (`leds[].role`) and their states (`off`, `on`, `blink`).
LED_LABELS = {
    "power": N_("Power light"),
    "wan": N_("WAN light"),
    "internet": N_("Internet light"),
    "lan": N_("LAN light"),
    "wifi": N_("Wi-Fi light"),
}
LED_STATES = {"on": N_("on"), "off": N_("off"), "blink": N_("blinking")}

CONFIG_KEYS = (("customer_number", N_("Customer number")), ("contract", N_("Contract number")))


# --- choosing the outage -------------------------------------------------------------

def parse_start(text: str, tz: ZoneInfo, what: str = "--start") -> tuple[str | None, int]:
    """'2026-11-03T07:00:05Z', '2026-11-03 08:00:05' (local in `tz`) or an outage id
    'AGENT@WHEN' (as the claim and `ticket list` write it) -> (agent or None, UTC ms)."""
    from wanwitness.claims import tickets as tk
    agent, sep, when = text.strip().rpartition("@")
    if sep and not agent:
        raise UserError(f"{what} {text!r}: expected a time, or AGENT@TIME")
    try:
        dt = tk.parse_when(when, tz, what)
    except ValueError as e:
        raise UserError(str(e)) from None
    return (agent or None), tk.to_ms(dt)


def _pick(outages: list[timeline.Outage], agent: str | None, at_ms: int | None,
          start: str | None) -> timeline.Outage:
    found = [o for o in outages if o.cls != timeline.UNKNOWN]
    whose = f" of agent {agent!r}" if agent else ""
    listing = "wanwitness outages" + (f" --agent {agent}" if agent else "")
    if at_ms is not None:
        near = sorted((o for o in found if abs(o.start_ms - at_ms) <= MATCH_MS),
                      key=lambda o: (abs(o.start_ms - at_ms), o.agent))
        if not near:
            raise UserError(f"no outage{whose} started at {start} (within 1 s): {listing} "
                            "lists them")
        best = [o for o in near if abs(o.start_ms - at_ms) == abs(near[0].start_ms - at_ms)]
        if len({o.agent for o in best}) > 1:
            names = ", ".join(sorted({o.agent for o in best}))
            raise UserError(f"outages of several agents started at {start} ({names}): "
                            "choose one with --agent")
        return near[0]
    if not found:
        raise UserError(f"no outage{whose} on record yet" if agent else
                        "no outage on record yet (wanwitness outages lists what there is)")
    ongoing = [o for o in found if o.end_ms is None]
    return max(ongoing or found, key=lambda o: (o.start_ms, o.end_ms or 0, o.agent))


# --- the evidence ----------------------------------------------------------------------

def _evidence(store: s.Store, o: timeline.Outage) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The `ev` of the opening record and of the records that restated it (oldest first),
    and the router's lights: at the start, or for an ongoing outage as they are now."""
    ev0 = o.evidence.get("ev")
    evs: list[dict[str, Any]] = [ev0] if isinstance(ev0, dict) else []
    open_seq, boot = o.evidence.get("open_seq"), o.evidence.get("boot")
    cont = [q for q in o.evidence.get("cont_seqs") or [] if isinstance(q, int)][-500:]
    R = s.records
    led_bodies: list[str] = []
    with store.engine.connect() as conn:
        if cont:
            for body in conn.execute(sa.select(R.c.body).where(
                    R.c.agent == o.agent, R.c.k == "state", R.c.seq.in_(cont)).order_by(R.c.seq)).scalars():
                ev = json.loads(body).get("ev")
                if isinstance(ev, dict):
                    evs.append(ev)
        if o.end_ms is None and isinstance(open_seq, int) and isinstance(boot, int):
            led_bodies = list(conn.execute(sa.select(R.c.body).where(
                R.c.agent == o.agent, R.c.k == "led", R.c.boot == boot,
                R.c.seq > open_seq).order_by(R.c.seq)).scalars())
    leds: dict[str, str] = {}
    for ev in evs if o.end_ms is None else evs[:1]:
        led = ev.get("led")
        if isinstance(led, dict):
            leds.update({str(k): str(v) for k, v in led.items() if isinstance(v, str)})
    for body in led_bodies:
        rec = json.loads(body)
        if isinstance(rec.get("ch"), str) and isinstance(rec.get("st"), str):
            leds[rec["ch"]] = rec["st"]
    return evs, leds


def _count(ev: dict[str, Any], key: str) -> int | None:
    v = ev.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _counts(evs: list[dict[str, Any]]) -> dict[str, Any]:
    """The probe counts of the newest record that has them ({} when none has: an outage
    an LED opened and no round has tested yet)."""
    for ev in evs[::-1]:
        if _count(ev, "rounds") and _count(ev, "anc_n") is not None:
            return ev
    return {}


# --- the sheet -------------------------------------------------------------------------

def _local_iso(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") + f" {tz.key}"


def build(store: s.Store, conf: Config, *, agent: str | None = None, start: str | None = None,
          lang: str = "en", now_ms: int | None = None) -> dict[str, Any]:
    """The call sheet of one outage: by default the newest one going on (of `agent`, else
    of any agent), else the newest that ended; `start` picks the outage that started then
    (within 1 s; ISO 8601, no offset = local time in [tariff] timezone, or AGENT@TIME).
    Raises UserError when there is no such agent or outage."""
    check_language(lang)
    tz = ZoneInfo(conf.tariff.timezone)
    now = s.now_ms() if now_ms is None else now_ms
    at_ms = None
    if start is not None:
        named, at_ms = parse_start(start, tz, "start")
        if named is not None:
            if agent is not None and agent != named:
                raise UserError(f"start {start!r} names agent {named!r}, but the agent asked for is {agent!r}")
            agent = named
    rows = timeline.query(store, agent=agent, now_ms=now)
    o = _pick(rows, agent, at_ms, start)
    if conf.lines and (line := conf.line_of(o.agent)) is not None:
        conf = conf.for_line(line)   # the customer number and contract of the outage's line
    _: Callable[[str], str] = translations(lang).gettext
    fmt = Fmt(lang, tz, "")

    def moment(ms: int) -> str:
        return format_datetime(datetime.fromtimestamp(ms / 1000, UTC), "medium", tzinfo=tz, locale=lang)

    evs, leds = _evidence(store, o)
    ev = _counts(evs)
    bys = {e.get("by") for e in evs}
    end_ms = o.end_ms
    duration_ms = (now if end_ms is None else end_ms) - o.start_ms
    facts: list[dict[str, str]] = []

    def fact(key: str, label: str, value: str) -> None:
        facts.append({"key": key, "label": label, "value": value})

    power = leds.get("power")
    rounds, gw_fail = _count(ev, "rounds"), _count(ev, "gw_fail")
    answered = None if rounds is None or gw_fail is None else max(rounds - gw_fail, 0)
    router_off = o.cls == "local_down" and (power == "off" or "led+link" in bys)
    if o.cls == "isp_down":
        meaning = (_("Your router is on and answers; the line beyond it is down.")
                   if answered or (answered is None and power in ("on", "blink"))
                   else _("The line beyond your router is down."))
    elif o.cls == "local_down":
        meaning = (_("Your router is off (no power).") if router_off
                   else _("Your router does not answer: check it and its cables first."))
    elif o.cls == "dns_down":
        meaning = _("The connection works, but name lookup (DNS) fails: websites do not open by name.")
    else:
        meaning = _("The connection works but loses much of its data: it is slow and unreliable.")

    # What and since when, what it means, then the script's questions in its order.
    what = _(WHAT.get(o.cls, o.cls))
    fact("down", _("What is down"), what)
    fact("start", _("Start"), moment(o.start_ms))
    if end_ms is not None:
        fact("end", _("End"), moment(end_ms))
    fact("duration", _("So far") if end_ms is None else _("Duration"), fmt.duration(duration_ms / 1000))
    fact("meaning", _("What it means"), meaning)

    # The router's lights: power first, then the line's (WAN / internet), then the rest.
    fact("led_power", _(LED_LABELS["power"]), _led(power, _))
    line_roles = [r for r in ("wan", "internet") if r in leds]
    for role in line_roles:
        fact(f"led_{role}", _(LED_LABELS[role]), _led(leds[role], _))
    if not line_roles:
        fact("led_wan", _("Internet (WAN) light"), _("not watched"))
    for other in ("lan", "wifi"):
        if other in leds:
            fact(f"led_{other}", _(LED_LABELS[other]), _led(leds[other], _))

    if rounds is None or answered is None:
        router = _("not tested yet")
    else:
        router = (_("yes (%(ok)s of %(n)s answered)") if answered == rounds else
                  _("no (%(ok)s of %(n)s answered)") if answered == 0 else
                  _("only partly (%(ok)s of %(n)s answered)")) % {"ok": answered, "n": rounds}
    fact("router_answers", _("Router answers our tests"), router)

    anc_ok, anc_n = _count(ev, "anc_ok"), _count(ev, "anc_n")
    if anc_ok is None or not anc_n:
        anchors = _("not tested yet")
    else:
        anchors = (_("none answered (%(ok)s of %(n)s)") if anc_ok == 0 else
                   _("all answered (%(ok)s of %(n)s)") if anc_ok >= anc_n else
                   _("some answered (%(ok)s of %(n)s)")) % {"ok": anc_ok, "n": anc_n}
    fact("anchors", _("Servers on the internet"), anchors)

    dns_fail = _count(ev, "dns_fail")
    if rounds is None or dns_fail is None:
        dns = _("not tested yet")
    else:
        dns_ok = max(rounds - dns_fail, 0)
        dns = (_("works (%(ok)s of %(n)s answered)") if dns_ok == rounds else
               _("fails (%(ok)s of %(n)s answered)") if dns_ok == 0 else
               _("only partly (%(ok)s of %(n)s answered)")) % {"ok": dns_ok, "n": rounds}
    fact("dns", _("Name lookup (DNS)"), dns)
    loss = _count(ev, "loss")
    if o.cls == "degraded" and loss is not None:
        fact("loss", _("Lost packets"), f"{loss} %")


    silent_since = None
    if o.evidence.get("end") == timeline.END_SILENT:
        gone = [u for u in rows if u.agent == o.agent and u.cls == timeline.UNKNOWN and u.end_ms is None]
        if gone:
            silent_since = gone[-1].start_ms
            fact("silent", _("Measuring device"), _("not heard from since %(when)s: the outage may still "
                                                    "be going on") % {"when": moment(silent_since)})
    if not router_off:
        fact("restart", _("Restarting the router"),
             _("If you are asked to, restart it: the measuring device records when it goes off "
               "and comes back."))

    customer = conf.customer
    for key, label in CONFIG_KEYS:
        value = str(getattr(customer, key) or "").strip()
        fact(key, _(label), value or _("not set: add %(key)s under [customer] in the config file")
             % {"key": key})
    fact("bills", _("Bills"), _("Check that your bills are paid: operators often ask that first."))

    tickets = _tickets(store, rows, o, conf)
    if tickets:
        shown = [(_("%(number)s, reported %(when)s (operator: %(operator)s)") if t["operator"] else
                  _("%(number)s, reported %(when)s")) % {
            "number": t["number"], "when": moment(t["opened_ms"]), "operator": t["operator"]}
            for t in tickets]
        fact("ticket", _("Ticket for this outage"), "; ".join(shown))
    else:
        fact("ticket", _("Ticket for this outage"), _("none yet: ask for a ticket number"))
    fact("to_note", _("Note during the call"),
         _("ticket number, operator's name or ID, time of the call"))

    return {
        "lang": lang,
        "agent": o.agent,
        "class": o.cls,
        "id": f"{o.agent}@{timeline.iso(o.start_ms)}",
        "open_seq": o.evidence.get("open_seq"),    # what `ticket link` names it by (tickets.set_link)
        "start": timeline.iso(o.start_ms),
        "start_local": _local_iso(o.start_ms, tz),
        "end": None if end_ms is None else timeline.iso(end_ms),
        "end_local": None if end_ms is None else _local_iso(end_ms, tz),
        "duration_s": max(duration_ms, 0) // 1000,
        "ongoing": end_ms is None,
        "silent_since": None if silent_since is None else timeline.iso(silent_since),
        "timezone": tz.key,
        "now_local": datetime.fromtimestamp(now / 1000, UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        "title": _("Call sheet"),
        "what": what,
        "meaning": meaning,
        "facts": facts,
        "tickets": [{"number": t["number"], "opened": timeline.iso(t["opened_ms"]),
                     "operator": t["operator"]} for t in tickets],
        "note": [{"key": "number", "label": _("Ticket number")},
                 {"key": "operator", "label": _("Operator (name or ID)")},
                 {"key": "opened", "label": _("Time of the call")}],
        "labels": {
            "say": _("What to say"),
            "note": _("Note during the call"),
            "status": _("ongoing") if end_ms is None else _("over"),
            "times": _("Times in %(tz)s") % {"tz": tz.key},
            "save": _("Save the ticket"),
        },
    }


def _led(state: str | None, _: Callable[[str], str]) -> str:
    if state is None:
        return _("not watched")
    return _(LED_STATES[state]) if state in LED_STATES else state


def _tickets(store: s.Store, rows: list[timeline.Outage], o: timeline.Outage,
             conf: Config) -> list[dict[str, Any]]:
    """The tickets linked to outage `o` (by time, or by `ticket link`), as cli/claims.py
    links them."""
    from wanwitness.claims import link
    from wanwitness.claims import tickets as tk
    from wanwitness.claims.build import outage_from_timeline
    wanted = outage_from_timeline(o).id
    linked = link.link_lines(tk.list_all(store), [outage_from_timeline(x) for x in rows],
                             tk.overrides(store), conf)
    return [{"number": t.number, "opened_ms": tk.to_ms(t.opened), "operator": t.operator or ""}
            for t in linked if wanted in t.outage_ids]


# --- text ------------------------------------------------------------------------------

WIDTH = 60


def render_text(sheet: dict[str, Any]) -> str:
    """The sheet for a terminal: one short line (wrapped) per fact, the things to note
    at the end as lines to fill in."""
    labels = sheet.get("labels") or {}
    head = f"{sheet['title']}: {sheet['agent']} ({labels.get('status', '')})"
    lines = [head, "=" * min(len(head), WIDTH), labels.get("times", ""), ""]
    for f in sheet["facts"]:
        if f["key"] == "to_note":
            lines += ["", f"{f['label']}:"]
            for field in sheet.get("note") or []:
                lines.append(f"  {field['label']}: ____________________")
            continue
        lines += textwrap.wrap(f"{f['label']}: {f['value']}", WIDTH, subsequent_indent="    ",
                               break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines).rstrip() + "\n"
