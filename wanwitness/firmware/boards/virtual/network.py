# `network` for the virtual board: a WLAN whose link follows the control file
# ("wifi": "up" | "down", "ssid", "key", "rssi", "ifconfig", "connect_ms",
# "beacon_timeout_ms", "reconnect_ms"; README.md). Sockets are the host's, made to fail
# like lwIP's by lwipsocket.py, which also reads `pm` here (modem sleep).
from micropython import const
from time import ticks_diff, ticks_ms

import board

STA_IF = const(0)
AP_IF = const(1)

# Status values as the esp32 port reports them (network_wlan.c, esp_wifi_types.h)
STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_BEACON_TIMEOUT = const(200)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_ASSOC_FAIL = const(203)
STAT_HANDSHAKE_TIMEOUT = const(204)

AUTH_OPEN = const(0)
AUTH_WPA2_PSK = const(3)

CONNECT_MS = const(300)  # association + DHCP; "connect_ms" in the control file overrides
# The access point's loss is noticed only when no beacon came for the beacon timeout
# (ESP-IDF's default 6 s); a reconnect after a loss takes seconds (scan, auth, DHCP).
BEACON_TIMEOUT_MS = const(6000)  # "beacon_timeout_ms" overrides
RECONNECT_MS = const(2000)       # "reconnect_ms" overrides
DEFAULT_IFCONFIG = ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

_hostname = "wanwitness"
_ifaces = {}


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


def country(code=None):
    return "XX" if code is None else None


def _ap_problem(ssid, key):
    """None when the access point would accept (ssid, key) now, else the STAT_ reason."""
    c = board.control
    if c.get("wifi", "up") != "up":
        return STAT_NO_AP_FOUND
    want = c.get("ssid")
    if want is not None and ssid != want:
        return STAT_NO_AP_FOUND
    want = c.get("key")
    if want is not None and key != want:
        return STAT_WRONG_PASSWORD
    return None


class WLAN:
    IF_STA = const(0)
    IF_AP = const(1)
    PM_NONE = const(0)
    PM_PERFORMANCE = const(1)
    PM_POWERSAVE = const(2)

    def __new__(cls, interface=STA_IF):
        # The esp32 port hands out one object per interface
        if interface not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        w = _ifaces.get(interface)
        if w is None:
            w = object.__new__(cls)
            w._init(interface)
            _ifaces[interface] = w
        return w

    def __init__(self, interface=STA_IF):
        pass

    def _init(self, interface):
        self._if = interface
        self._active = False
        self._want = False        # connect() called and not disconnect()ed
        self._ssid = None
        self._key = None
        self._since = 0           # ticks when the current attempt started
        self._connected = False
        self._status = STAT_IDLE
        self._reconnects = -1     # -1: retry forever, like the esp32 port's default
        self._tries = 0
        self._lost = None         # ticks when the AP went away while connected, else None
        self._was_lost = False    # the current attempt follows a loss: reconnect_ms
        self._cfg = {"pm": self.PM_PERFORMANCE, "txpower": 20, "channel": 1}

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if self._if == STA_IF:
            board.wifi_active = self._active
        if not self._active:
            self._want = False
            self._connected = False
            self._status = STAT_IDLE

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        if ssid is not None:
            self._ssid = ssid
            self._key = key
        self._want = True
        self._connected = False
        self._lost = None
        self._was_lost = False
        self._tries = 0
        self._since = ticks_ms()
        self._status = STAT_CONNECTING

    def disconnect(self):
        self._want = False
        self._connected = False
        self._status = STAT_IDLE

    def _update(self):
        board.poll()
        if not (self._active and self._want):
            return
        now = ticks_ms()
        problem = _ap_problem(self._ssid, self._key)
        if self._connected:
            if problem is None:
                self._lost = None  # back before the beacon timeout: never noticed
                return
            if self._lost is None:  # the last beacon came when the AP went away
                self._lost = board.wifi_changed
            if ticks_diff(now, self._lost) < board.control.get("beacon_timeout_ms",
                                                               BEACON_TIMEOUT_MS):
                return  # no beacon yet, but the station does not know it is gone
            # the AP went away: beacon timeout, then retries
            self._connected = False
            self._status = STAT_BEACON_TIMEOUT
            self._since = now
            self._tries = 0
            self._lost = None
            self._was_lost = True
            return
        wait = board.control.get("reconnect_ms", RECONNECT_MS) if self._was_lost \
            else board.control.get("connect_ms", CONNECT_MS)
        if ticks_diff(now, self._since) < wait:
            return
        if problem is None:
            if self._status != STAT_CONNECTING:  # a retry noticed the AP is back
                self._status = STAT_CONNECTING
                self._since = now
                return
            self._connected = True
            self._was_lost = False
            self._status = STAT_GOT_IP
            return
        # one failed attempt per connect_ms; keep retrying unless `reconnects` runs out
        self._status = problem
        self._since = now
        self._tries += 1
        if 0 <= self._reconnects < self._tries:
            self._want = False

    def isconnected(self):
        self._update()
        return self._connected

    def status(self, param=None):
        self._update()
        if param is None:
            return self._status if self._active else STAT_IDLE
        if param == "rssi":
            if not self._connected:
                raise OSError("not connected")
            return board.control.get("rssi", -60)
        if param == "stations":
            return []
        raise ValueError("unknown status param")

    def ifconfig(self, cfg=None):
        if cfg is not None:
            self._cfg["ifconfig"] = tuple(cfg)
            return None
        if self._if == STA_IF and not self.isconnected():
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        c = self._cfg.get("ifconfig") or board.control.get("ifconfig")
        return tuple(c) if c else DEFAULT_IFCONFIG

    def ipconfig(self, key=None, **kw):
        if kw:
            return None
        ip, mask, gw, _ = self.ifconfig()
        if key == "addr4":
            return (ip, mask)
        if key == "gw4":
            return gw
        if key == "dhcp4":
            return True
        raise ValueError("unknown config param")

    def scan(self):
        board.poll()
        c = board.control
        if c.get("wifi", "up") != "up":
            return []
        ssid = c.get("ssid", "virtual-ap").encode()
        return [(ssid, b"\x02\x00\x00\x00\x00\x01", 6, c.get("rssi", -60), AUTH_WPA2_PSK, False)]

    def config(self, *args, **kw):
        if kw:
            for k, v in kw.items():
                if k == "reconnects":
                    self._reconnects = v
                elif k in ("dhcp_hostname", "hostname"):
                    hostname(v)
                else:
                    self._cfg[k] = v
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        k = args[0]
        if k == "mac":
            mac = bytearray(bytes.fromhex(board.state["unique_id"]))
            if self._if == AP_IF:  # the esp32's AP MAC is the base MAC + 1
                mac[5] = (mac[5] + 1) & 0xFF
            return bytes(mac)
        if k in ("essid", "ssid"):
            return self._ssid or ""
        if k in ("dhcp_hostname", "hostname"):
            return _hostname
        if k == "reconnects":
            return self._reconnects
        if k in self._cfg:
            return self._cfg[k]
        raise ValueError("unknown config param")
