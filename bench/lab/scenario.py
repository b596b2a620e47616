"""Scenario files for the outage lab: loading, validation and the ground truth.

A scenario is a JSON object:

    {"name": "cut-10s", "duration_s": 60, "description": "optional text",
     "agent": {config overrides, e.g. {"debounce": {"down": 2}}},
     "timeline": [{"at": 20, "set": "wan", "to": "down"},
                  {"at": 30, "set": "wan", "to": "up"}]}

`at` is seconds from the start of the scenario (after the agent has settled);
entries run in file order, and their `at` may not go backwards (equal is allowed:
the entries are applied one after another, in file order). Every switch must be back
at its normal value by the end (wan up, loss 0, dns up, router on, wifi up, power_led
lit, broker up, collector up, agent_power on), so that every true outage has an end and the agent can
deliver everything before the lab scores it.

Keys (what the runner does with them is in bench/lab/runner.py):

| set         | to            | normal |
|-------------|---------------|--------|
| wan         | up, down      | up     |
| loss        | 0..100 (int)  | 0      |
| dns         | up, down      | up     |
| router      | on, off       | on     |
| wifi        | up, down      | up     |
| power_led   | lit, dark     | lit    |
| broker      | up, down      | up     |
| collector   | up, down      | up     |
| agent_power | on, off       | on     |
| led_lag_s   | 0..600 (s)    | (0.2)  |

Ground truth (`truth()`): at every moment the line is in the first of these that holds

    router off              -> local_down
    wan down                -> isp_down
    dns down                -> dns_down
    loss >= threshold       -> degraded   (the agent's degraded_loss_pct, default 50)
    otherwise               -> up

so router off wins over wan down, which wins over dns down, which wins over loss (the
agent's own order of severity). Each maximal run of one class other than `up` is one
true outage; a class change in the middle (wan down, then the router off and on again)
splits it into consecutive outages. wifi, power_led, broker, collector and agent_power
are faults of our own chain, not of the line: they make no truth, and an outage found
during them that overlaps no true outage is a false one. (power_led dark is a sensor
fault: the router's power LED, or the agent's sensor on it, goes dark while the router
and the line work on.)

Every problem is a `UserError` naming the file and the entry, raised before the lab
builds anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanwitness.boards import board_config
from wanwitness.errors import UserError

REPO = Path(__file__).resolve().parents[2]

ONOFF = ("on", "off")
UPDOWN = ("up", "down")
LITDARK = ("lit", "dark")
KEYS: dict[str, tuple[str, ...] | str] = {
    "wan": UPDOWN,
    "loss": "percent",
    "dns": UPDOWN,
    "router": ONOFF,
    "wifi": UPDOWN,
    "power_led": LITDARK,
    "broker": UPDOWN,
    "collector": UPDOWN,
    "agent_power": ONOFF,
    "led_lag_s": "seconds",
}
NORMAL: dict[str, Any] = {"wan": "up", "loss": 0, "dns": "up", "router": "on", "wifi": "up",
                          "power_led": "lit", "broker": "up", "collector": "up",
                          "agent_power": "on"}
# Switches of our own chain: no outage may be reported for them, no record lost.
FAULT_KEYS = ("wifi", "power_led", "broker", "collector", "agent_power")
LINE_CLASSES = ("local_down", "isp_down", "dns_down", "degraded")
MAX_LED_LAG_S = 600
DEFAULT_LED_LAG_S = 0.2
DEFAULT_DEGRADED_PCT = 50

TOP_KEYS = {"name", "duration_s", "agent", "timeline", "description"}
# The agent config keys a scenario may override; the rest belong to the lab (the
# agent's id, broker and Wi-Fi are where the lab put them).
AGENT_KEYS = ("probe", "debounce", "degraded_loss_pct", "hb_s", "wdt_s", "leds", "outbox")
LAB_PROBE_KEYS = ("gateway", "anchors", "dns", "ntp")


@dataclass(frozen=True)
class Entry:
    index: int          # position in the file's timeline, from 0
    at: float
    key: str
    value: Any

    def describe(self) -> str:
        return f"entry {self.index} ({self.key} -> {self.value!r} at {self.at:g} s)"


@dataclass
class Scenario:
    name: str
    duration_s: float
    agent: dict[str, Any]
    timeline: list[Entry]
    path: Path | None = None
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def degraded_pct(self) -> int:
        v = self.agent.get("degraded_loss_pct", DEFAULT_DEGRADED_PCT)
        return int(v)

    def uses(self, key: str) -> bool:
        return any(e.key == key for e in self.timeline)

    def planned_times_ms(self, t0_ms: int = 0) -> list[int]:
        return [t0_ms + round(e.at * 1000) for e in self.timeline]


@dataclass(frozen=True)
class Span:
    cls: str
    start_ms: int
    end_ms: int

    def to_json(self) -> dict[str, Any]:
        from wanwitness.collector.timeline import iso
        return {"class": self.cls, "start": iso(self.start_ms), "end": iso(self.end_ms),
                "start_ms": self.start_ms, "end_ms": self.end_ms,
                "duration_s": (self.end_ms - self.start_ms) / 1000}


# --- loading ---------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_agent_overrides(where: str, agent: Any) -> dict[str, Any]:
    if not isinstance(agent, dict):
        raise UserError(f"{where}: \"agent\" must be an object of agent config overrides, "
                        f"not {type(agent).__name__}")
    for key in agent:
        if key not in AGENT_KEYS:
            owned = key in ("id", "broker", "wifi", "prefix")
            raise UserError(f"{where}: agent.{key}: " + (
                "set by the lab, a scenario cannot override it" if owned else
                f"not an agent config key a scenario may set (one of {', '.join(AGENT_KEYS)})"))
    probe = agent.get("probe", {})
    if isinstance(probe, dict):
        for key in probe:
            if key in LAB_PROBE_KEYS:
                raise UserError(f"{where}: agent.probe.{key}: set by the lab (its probe targets "
                                "are the lab's gateway, anchors and DNS), a scenario cannot "
                                "override it")
    # The agent's own parser decides what it would accept; anything it would replace by a
    # default is a mistake in the scenario.
    conf = board_config.agent_rules().parse(dict(agent, id="lab", broker={"host": "192.0.2.10"}))
    if conf.problems:
        key, msg = conf.problems[0]
        raise UserError(f"{where}: agent.{key}: {msg}")
    return agent


def parse(data: Any, where: str = "scenario") -> Scenario:
    """A scenario from its decoded JSON; UserError naming `where` and the entry if invalid."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: a scenario is a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (a scenario has name, duration_s, "
                        "agent, timeline and optionally description)")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: \"name\" must be a non-empty string")
    duration: Any = data.get("duration_s")
    if not _is_number(duration) or duration <= 0:
        raise UserError(f"{where}: \"duration_s\" must be a number of seconds > 0, "
                        f"got {duration!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"{where}: \"description\" must be a string")
    agent = check_agent_overrides(where, data.get("agent", {}))
    timeline = data.get("timeline")
    if not isinstance(timeline, list):
        raise UserError(f"{where}: \"timeline\" must be a list of "
                        "{\"at\": seconds, \"set\": KEY, \"to\": VALUE} entries")

    entries: list[Entry] = []
    state: dict[str, Any] = dict(NORMAL)
    set_by: dict[str, int] = {}
    prev_at = 0.0
    for i, raw in enumerate(timeline):
        here = f"{where}: timeline entry {i}"
        if not isinstance(raw, dict):
            raise UserError(f"{here}: must be an object {{\"at\", \"set\", \"to\"}}, "
                            f"not {json.dumps(raw)}")
        extra = sorted(set(raw) - {"at", "set", "to"})
        missing = [k for k in ("at", "set", "to") if k not in raw]
        if extra:
            raise UserError(f"{here} {json.dumps(raw)}: unknown field {extra[0]!r} "
                            "(an entry has at, set and to)")
        if missing:
            raise UserError(f"{here} {json.dumps(raw)}: missing {missing[0]!r}")
        here = f"{here} {json.dumps(raw)}"
        at, key, value = raw["at"], raw["set"], raw["to"]
        if not _is_number(at) or at < 0:
            raise UserError(f"{here}: \"at\" must be a number of seconds >= 0")
        if at > duration:
            raise UserError(f"{here}: \"at\" {at:g} s is beyond the scenario's duration_s "
                            f"{duration:g} s")
        if at < prev_at:
            raise UserError(f"{here}: \"at\" {at:g} s goes back in time (the entry before is "
                            f"at {prev_at:g} s); keep the timeline in order")
        if key not in KEYS:
            raise UserError(f"{here}: unknown key {key!r}; one of {', '.join(KEYS)}")
        kind = KEYS[key]
        if isinstance(kind, tuple):
            if value not in kind:
                raise UserError(f"{here}: {key} must be set to {' or '.join(kind)}, "
                                f"not {value!r}")
        elif kind == "percent":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                raise UserError(f"{here}: loss must be an integer percentage 0..100, "
                                f"not {value!r}")
        else:
            if not _is_number(value) or not 0 <= value <= MAX_LED_LAG_S:
                raise UserError(f"{here}: led_lag_s must be a number of seconds "
                                f"0..{MAX_LED_LAG_S}, not {value!r}")
        if key in state and state[key] == value:
            before = (f"entry {set_by[key]}" if key in set_by else "the start")
            raise UserError(f"{here}: {key} is already {value!r} (since {before}); "
                            "each entry must change something")
        if key in state:
            state[key] = value
            set_by[key] = i
        prev_at = float(at)
        entries.append(Entry(i, float(at), key, value))
    left = [k for k in NORMAL if state[k] != NORMAL[k]]
    if left:
        k = left[0]
        raise UserError(f"{where}: the timeline leaves {k} {state[k]!r} at the end (since "
                        f"entry {set_by[k]}); add an entry that sets it back to "
                        f"{NORMAL[k]!r} before duration_s, so the outage ends and the agent "
                        "can deliver its records")
    return Scenario(name.strip(), float(duration), agent, entries, description=description,
                    raw=data)


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file; UserError (exit 2) naming the file and entry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such scenario file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory (use `python -m bench.lab suite DIR`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") \
            from None
    sc = parse(data, str(path))
    sc.path = path
    return sc


def load_dir(directory: str | Path) -> list[Scenario]:
    """Every *.json in a directory (not its subdirectories), by file name; all validated."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory of scenario files")
    files = sorted(directory.glob("*.json"))
    if not files:
        raise UserError(f"{directory}: no *.json scenario files in it")
    scenarios = [load(f) for f in files]
    names: dict[str, Path] = {}
    for sc in scenarios:
        if sc.name in names:
            raise UserError(f"{sc.path}: scenario name {sc.name!r} is also used by "
                            f"{names[sc.name]}")
        names[sc.name] = sc.path  # type: ignore[assignment]
    return scenarios


# --- ground truth ------------------------------------------------------------------------

def line_class(state: dict[str, Any], degraded_pct: int) -> str:
    """The true class of the line in a switch state (see the module docstring)."""
    if state["router"] == "off":
        return "local_down"
    if state["wan"] == "down":
        return "isp_down"
    if state["dns"] == "down":
        return "dns_down"
    if state["loss"] >= degraded_pct:
        return "degraded"
    return "up"


def truth(sc: Scenario, times_ms: list[int]) -> list[Span]:
    """The true outages, given when each timeline entry took effect (wall-clock ms).

    times_ms[i] belongs to sc.timeline[i] (the runner passes the ms each switch returned;
    `sc.planned_times_ms(t0)` gives the plan).
    """
    if len(times_ms) != len(sc.timeline):
        raise ValueError("truth(): one time per timeline entry")
    state = dict(NORMAL)
    spans: list[Span] = []
    cur, since = "up", 0
    for e, t in zip(sc.timeline, times_ms):
        if e.key not in ("wan", "loss", "dns", "router"):
            continue
        state[e.key] = e.value
        cls = line_class(state, sc.degraded_pct)
        if cls == cur:
            continue
        if cur != "up" and t > since:
            spans.append(Span(cur, since, t))
        cur, since = cls, t
    # parse() made sure every switch is back to normal: cur is "up" here.
    return spans


def fault_spans(sc: Scenario, times_ms: list[int], end_ms: int) -> list[Span]:
    """Spans of our own chain's faults (wifi down, power LED dark, broker/collector down,
    agent off)."""
    spans: list[Span] = []
    opened: dict[str, int] = {}
    for e, t in zip(sc.timeline, times_ms):
        if e.key not in FAULT_KEYS:
            continue
        if e.value != NORMAL[e.key]:
            opened[e.key] = t
        elif e.key in opened:
            spans.append(Span(e.key, opened.pop(e.key), t))
    for key, t in opened.items():
        spans.append(Span(key, t, end_ms))
    return sorted(spans, key=lambda s: s.start_ms)
