# The board's own Wi-Fi link (network.WLAN): connect, reconnect, RSSI, gateway.
# While the link is down the agent is blind to the line: the app stops feeding probe
# rounds to the detector (our own Wi-Fi loss is not an ISP outage) but keeps watching
# the LEDs and keeps every record in the outbox.
import asyncio
import network
import time

CONNECT_WAIT_MS = 15000
RETRY_MAX_MS = 60000


class Net:
    def __init__(self, ssid, password):
        self.ssid = ssid
        self.password = password
        self.wlan = network.WLAN(network.STA_IF)
        self.changes = 0  # link up/down transitions, for stats
        self._was_up = False
        self.on_change = None  # called with True/False at each link transition

    def up(self):
        try:
            return self.wlan.isconnected()
        except OSError:
            return False

    def pm_off(self):
        # Modem sleep (the esp32 port's default) holds replies until the next DTIM
        # beacon: 100-300 ms on every probe. Off, when this port has the setting.
        pm = getattr(network.WLAN, "PM_NONE", None)
        if pm is not None:
            try:
                self.wlan.config(pm=pm)
            except (OSError, ValueError, TypeError):
                pass

    def rssi(self):
        try:
            return self.wlan.status("rssi")
        except (OSError, ValueError, TypeError):
            return None

    def gateway(self):
        try:
            return self.wlan.ifconfig()[2]
        except (OSError, IndexError):
            return None

    def dns(self):
        # The DNS server DHCP gave (None when down or none)
        try:
            d = self.wlan.ifconfig()[3]
        except (OSError, IndexError):
            return None
        return d if d and d != "0.0.0.0" else None

    async def keep(self, alive):
        # alive(): the app's liveness stamp for the watchdog.
        retry = 1000
        while True:
            alive()
            now_up = self.up()
            if now_up != self._was_up:
                self.changes += 1
                self._was_up = now_up
                if now_up:
                    self.pm_off()  # boot.py may have brought the link up with modem sleep on
                # The console log (`wanwitness console`): events only, never per loop
                print("wifi: up, gateway", self.gateway()) if now_up else print("wifi: down")
                if self.on_change is not None:
                    try:
                        self.on_change(now_up)
                    except Exception as e:  # a bug there must not stop the Wi-Fi task
                        print("wifi: on_change failed:", repr(e))
            if now_up:
                retry = 1000
                await asyncio.sleep_ms(1000)
                continue
            if not self.ssid:
                await asyncio.sleep_ms(1000)  # no Wi-Fi configured: nothing to do
                continue
            try:
                self.wlan.active(True)
                self.pm_off()
                self.wlan.connect(self.ssid, self.password)
            except OSError:
                pass
            start = time.ticks_ms()
            while not self.up() and time.ticks_diff(time.ticks_ms(), start) < CONNECT_WAIT_MS:
                alive()
                await asyncio.sleep_ms(200)
            if not self.up():
                await asyncio.sleep_ms(retry)
                retry = min(retry * 2, RETRY_MAX_MS)
