# config.json -> settings on safe defaults, with a list of what was wrong.
# A bad value never stops the agent: it is replaced by its default and reported
# (the app publishes one `error` record per problem, naming the key).
import binascii
import json


def defaults():
    # A fresh tree of the defaults per call: built only while config.json is parsed (a
    # module-level dict would stay on the heap for good, ~0.5 KB; this code is in flash).
    return {
        "id": "",
        "prefix": "wanwitness",
        "wifi": {"ssid": "", "password": ""},
        # ca: the broker's CA certificate, PEM text in config.json, DER bytes once parsed.
        # others: more brokers ((host, port), ...) to fail over to, same credentials and CA.
        "broker": {"host": "", "port": 1883, "user": "", "password": "", "tls": False, "ca": None,
                   "others": ()},
        "hb_s": 30,
        "wdt_s": 20,
        "probe": {
            "interval_s": 2,
            "timeout_ms": 1500,
            # Watches between rounds (one anchor, one DNS query) every watch_ms; 0: none.
            "watch_ms": 500,
            "gateway": None,
            # Public anchors for real deployments only; tests and the lab override them.
            "anchors": ["1.1.1.1", "8.8.8.8", "9.9.9.9"],
            "dns": {"server": "1.1.1.1", "name": "example.com"},
            "ntp": "pool.ntp.org",
        },
        "debounce": {"down": 3, "up": 2},
        "degraded_loss_pct": 50,
        "leds": [],
        "outbox": {"max_bytes": 131072},
    }


LED_ROLES = ("internet", "wan", "power", "lan", "wifi")


def _type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


class Config:
    def __init__(self):
        self.problems = []  # [(key, message)]
        self.values = defaults()

    def get(self, key):
        node = self.values
        for part in key.split("."):
            node = node[part]
        return node

    def problem(self, key, message):
        self.problems.append((key, message))


def _int(cfg, raw, key, lo, hi, target, name):
    if name not in raw:
        return
    v = raw[name]
    if not isinstance(v, int) or isinstance(v, bool):
        cfg.problem(key, "expected an integer, got " + _type_name(v))
    elif not lo <= v <= hi:
        cfg.problem(key, "%d is out of range %d..%d" % (v, lo, hi))
    else:
        target[name] = v


def _str(cfg, raw, key, target, name, nullable=False):
    if name not in raw:
        return
    v = raw[name]
    if v is None and nullable:
        target[name] = None
    elif not isinstance(v, str):
        cfg.problem(key, "expected a string, got " + _type_name(v))
    else:
        target[name] = v


def _bool(cfg, raw, key, target, name):
    if name not in raw:
        return
    v = raw[name]
    if not isinstance(v, bool):
        cfg.problem(key, "expected true or false, got " + _type_name(v))
    else:
        target[name] = v


_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n \t"


def pem_der(text):
    # The DER bytes of one PEM certificate (RFC 7468), or None if text is not exactly
    # one. DER is what SSLContext.load_verify_locations(cadata=) takes on every port.
    i = text.find(_BEGIN)
    j = text.find(_END)
    if i < 0 or j < i or text.find(_BEGIN, i + 1) >= 0:
        return None
    body = text[i + len(_BEGIN):j]
    for c in body:
        if c not in _B64:  # binascii skips what is not base64; a typo must not pass
            return None
    try:
        der = binascii.a2b_base64(body)
    except ValueError:
        return None
    # A certificate is one DER SEQUENCE (X.690 8.1.3): 0x30, its length, nothing after.
    if len(der) < 4 or der[0] != 0x30:
        return None
    n = der[1]
    h = 2
    if n & 0x80:
        k = n & 0x7F
        if not 1 <= k <= 3:
            return None
        n = 0
        for b in der[2:2 + k]:
            n = n << 8 | b
        h = 2 + k
    return der if h + n == len(der) else None


def _ca(cfg, raw, target):
    # Reads broker.ca into target; False when it is not given at all.
    v = raw.get("ca")
    if v is None or v == "":
        return False
    der = pem_der(v) if isinstance(v, str) else None
    if der is None:
        cfg.problem("broker.ca", "expected the broker's CA certificate as PEM text "
                    "(-----BEGIN CERTIFICATE----- ...), got " + _type_name(v))
    else:
        target["ca"] = der
    return True


def _others(cfg, raw, target):
    # broker.others: up to 3 {"host": ..., "port": ...} (port: broker.port's); a bad
    # entry is reported and left out, the good ones kept.
    if "others" not in raw:
        return
    v = raw["others"]
    if not isinstance(v, list) or len(v) > 3:
        cfg.problem("broker.others", "expected a list of at most 3 {\"host\": ..., \"port\": ...}")
        return
    out = []
    for i, o in enumerate(v):
        key = "broker.others[%d]" % i
        host = o.get("host") if isinstance(o, dict) else None
        port = o.get("port", target["port"]) if isinstance(o, dict) else None
        if not isinstance(host, str) or not host:
            cfg.problem(key, "expected {\"host\": NAME, \"port\": N}")
        elif not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            cfg.problem(key, "port: expected an integer 1..65535")
        else:
            out.append((host, port))
    target["others"] = tuple(out)


def _section(cfg, raw, name):
    if name not in raw:
        return {}
    v = raw[name]
    if not isinstance(v, dict):
        cfg.problem(name, "expected an object, got " + _type_name(v))
        return {}
    return v


def _valid_id(name):
    if not 1 <= len(name) <= 32:
        return False
    for i, c in enumerate(name):
        if not ("a" <= c <= "z" or "0" <= c <= "9" or (i and c in "-_")):
            return False
    return True


def parse(raw):
    """A dict from config.json -> Config (never raises)."""
    cfg = Config()
    v = cfg.values
    if not isinstance(raw, dict):
        cfg.problem("config.json", "expected an object, got " + _type_name(raw))
        return cfg
    if "id" in raw:
        if isinstance(raw["id"], str) and _valid_id(raw["id"]):
            v["id"] = raw["id"]
        else:
            cfg.problem("id", "not a valid agent id (1-32 of a-z 0-9 - _)")
    _str(cfg, raw, "prefix", v, "prefix")
    _int(cfg, raw, "hb_s", 5, 3600, v, "hb_s")
    _int(cfg, raw, "wdt_s", 5, 120, v, "wdt_s")
    _int(cfg, raw, "degraded_loss_pct", 1, 100, v, "degraded_loss_pct")

    w = _section(cfg, raw, "wifi")
    _str(cfg, w, "wifi.ssid", v["wifi"], "ssid")
    _str(cfg, w, "wifi.password", v["wifi"], "password")

    b = _section(cfg, raw, "broker")
    _str(cfg, b, "broker.host", v["broker"], "host")
    _int(cfg, b, "broker.port", 1, 65535, v["broker"], "port")
    _str(cfg, b, "broker.user", v["broker"], "user")
    _str(cfg, b, "broker.password", v["broker"], "password")
    _bool(cfg, b, "broker.tls", v["broker"], "tls")
    _others(cfg, b, v["broker"])
    if not _ca(cfg, b, v["broker"]) and v["broker"]["tls"]:
        # Fail closed: without the CA the broker cannot be verified, and the password
        # must not go to whoever answers.
        cfg.problem("broker.ca", "missing: broker.tls needs the broker's CA certificate "
                    "(wanwitness agent add writes it); not connecting until it is given")

    p = _section(cfg, raw, "probe")
    vp = v["probe"]
    if "interval_s" in p:
        iv = p["interval_s"]
        if isinstance(iv, (int, float)) and not isinstance(iv, bool) and 0.5 <= iv <= 600:
            vp["interval_s"] = iv
        else:
            cfg.problem("probe.interval_s", "expected a number of seconds 0.5..600")
    _int(cfg, p, "probe.timeout_ms", 100, 30000, vp, "timeout_ms")
    if p.get("watch_ms") == 0 and not isinstance(p["watch_ms"], bool):
        vp["watch_ms"] = 0
    else:
        _int(cfg, p, "probe.watch_ms", 200, 60000, vp, "watch_ms")
    _str(cfg, p, "probe.gateway", vp, "gateway", nullable=True)
    _str(cfg, p, "probe.ntp", vp, "ntp", nullable=True)
    if "anchors" in p:
        a = p["anchors"]
        if isinstance(a, list) and a and all(isinstance(x, str) and x for x in a):
            vp["anchors"] = a
        else:
            cfg.problem("probe.anchors", "expected a non-empty list of addresses")
    if "dns" in p:
        d = p["dns"]
        if d is None:
            vp["dns"] = None
        elif isinstance(d, dict) and isinstance(d.get("server"), str) and isinstance(d.get("name"), str):
            vp["dns"] = {"server": d["server"], "name": d["name"]}
        else:
            cfg.problem("probe.dns", 'expected {"server": ADDRESS, "name": NAME} or null')

    d = _section(cfg, raw, "debounce")
    _int(cfg, d, "debounce.down", 1, 60, v["debounce"], "down")
    _int(cfg, d, "debounce.up", 1, 60, v["debounce"], "up")

    o = _section(cfg, raw, "outbox")
    _int(cfg, o, "outbox.max_bytes", 8192, 1048576, v["outbox"], "max_bytes")

    if "leds" in raw:
        leds = raw["leds"]
        if not isinstance(leds, list):
            cfg.problem("leds", "expected a list")
        else:
            for i, led in enumerate(leds):
                key = "leds[%d]" % i
                if not isinstance(led, dict):
                    cfg.problem(key, "expected an object")
                    continue
                pin = led.get("pin")
                role = led.get("role")
                if not isinstance(pin, int) or isinstance(pin, bool) or not 0 <= pin <= 48:
                    cfg.problem(key + ".pin", "expected a GPIO number")
                    continue
                if role not in LED_ROLES:
                    cfg.problem(key + ".role", "expected one of " + ", ".join(LED_ROLES))
                    continue
                entry = {"pin": pin, "role": role,
                         "down_when_off": bool(led.get("down_when_off", role in ("internet", "wan")))}
                lag = led.get("lag_ms", 0)
                if isinstance(lag, int) and not isinstance(lag, bool) and 0 <= lag <= 120000:
                    entry["lag_ms"] = lag
                else:
                    cfg.problem(key + ".lag_ms", "expected 0..120000 ms")
                    entry["lag_ms"] = 0
                levels = led.get("levels")
                if levels is not None:
                    if (isinstance(levels, list) and len(levels) == 2
                            and all(isinstance(x, int) and not isinstance(x, bool)
                                    and 0 <= x <= 65535 for x in levels)
                            and levels[0] < levels[1]):
                        entry["levels"] = (levels[0], levels[1])
                    else:
                        cfg.problem(key + ".levels", "expected [dark, bright], 0..65535, dark < bright")
                v["leds"].append(entry)
    for key in raw:
        if key not in v:  # (its top-level keys are the defaults')
            cfg.problem(key, "unknown key (ignored)")
    if not v["id"]:
        cfg.problem("id", "missing: the agent cannot report without its id")
    if not v["broker"]["host"]:
        cfg.problem("broker.host", "missing: the agent cannot report without a broker")
    return cfg


def load(path="config.json"):
    """Read and parse config.json; a missing or broken file gives the defaults."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        cfg = Config()
        cfg.problem("config.json", "missing: running on defaults")
        return cfg
    try:
        raw = json.loads(text)
    except ValueError:
        cfg = Config()
        cfg.problem("config.json", "not valid JSON: running on defaults")
        return cfg
    return parse(raw)
