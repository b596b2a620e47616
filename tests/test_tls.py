"""MQTT over TLS end to end: `broker tls init`'s certificates, the embedded broker's and
Mosquitto's TLS listeners, the board config `agent add` writes, and the agent verifying
the broker on MicroPython (the unix port's mbedTLS, as on an ESP32).

The agent's own client (agent/mqtt.py) runs under MicroPython: as the whole agent on the
virtual board for delivery, and as tests/mpy/tls_probe.py where the test needs to see every
connection attempt. A refused certificate is shown to a scripted TLS server that records
what each connection carried. Loopback only.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509

from testing.brokers import MOSQUITTO_BIN, Mosquitto
from testing.cli import one_line_error
from testing.collector import CollectorProcess
from testing.demo import query
from testing.mpy import micropython, mpy_path
from wanwitness import store as s
from wanwitness.boards.board_config import problems
from wanwitness.broker.mosquitto import write_mosquitto_config
from wanwitness.broker.passwords import hash_password
from wanwitness.broker.tls import TlsFiles, default_hosts, san_names, write_server_cert
from wanwitness.cli.collect import plain_mqtt_warnings
from wanwitness.demo import Demo
from wanwitness.loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "mpy" / "tls_probe.py"
HEAP = "64K"  # an ESP32's initial GC heap


def tls_dir(ww) -> Path:
    """Where `broker tls init` writes by default: tls/ beside the (default) config file."""
    return Path(ww.home) / ".config" / "wanwitness" / "tls"


def tls_init(ww, *args: str) -> TlsFiles:
    proc = ww("broker", "tls", "init", *args)
    assert proc.returncode == 0, proc.stderr
    directory = Path(args[args.index("--dir") + 1]) if "--dir" in args else tls_dir(ww)
    return TlsFiles(directory)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# --- broker tls init ------------------------------------------------------------------------

def test_tls_init_makes_a_ca_and_a_server_certificate_for_this_machine_and_given_hosts(ww):
    proc = ww("broker", "tls", "init", "--host", "192.0.2.7", "--host", "MQTT.home.arpa")
    assert proc.returncode == 0, proc.stderr
    files = TlsFiles(tls_dir(ww))
    for path in files.all():
        assert str(path) in proc.stdout  # it says where everything went
    assert "tls_listen" in proc.stdout and "agent add" in proc.stdout  # and what comes next
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files.all()}
    assert modes == {"ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600}
    names = san_names(files.cert)
    assert set(names) == {*default_hosts(), "192.0.2.7", "mqtt.home.arpa"}
    assert {socket.gethostname(), "localhost", "127.0.0.1", "::1"} <= set(names)
    ca, server = load(files.ca_cert), load(files.cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server.verify_directly_issued_by(ca)  # raises if the CA did not sign it


def test_tls_init_refuses_to_overwrite_and_force_keeps_the_ca(ww):
    files = tls_init(ww)
    before = {p: p.read_bytes() for p in files.all()}
    again = ww("broker", "tls", "init", "--host", "192.0.2.8")
    assert "already has ca.crt, ca.key, server.crt, server.key" in one_line_error(again)
    assert "--force" in again.stderr
    assert {p: p.read_bytes() for p in files.all()} == before
    assert "give --force with it" in one_line_error(ww("broker", "tls", "init", "--new-ca"))

    forced = ww("broker", "tls", "init", "--force", "--host", "192.0.2.8")
    assert forced.returncode == 0, forced.stderr
    assert files.ca_cert.read_bytes() == before[files.ca_cert]  # boards keep trusting it
    assert files.cert.read_bytes() != before[files.cert]
    assert "192.0.2.8" in san_names(files.cert)
    load(files.cert).verify_directly_issued_by(load(files.ca_cert))

    anew = ww("broker", "tls", "init", "--force", "--new-ca")
    assert anew.returncode == 0, anew.stderr
    assert files.ca_cert.read_bytes() != before[files.ca_cert]
    load(files.cert).verify_directly_issued_by(load(files.ca_cert))


def test_tls_init_names_a_bad_host_and_an_unwritable_directory(ww, tmp_path):
    bad = ww("broker", "tls", "init", "--host", "my broker!")
    assert one_line_error(bad) == "wanwitness: --host 'my broker!': not a host name or an IP address"
    assert not tls_dir(ww).exists()  # nothing written
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    stuck = ww("broker", "tls", "init", "--dir", str(blocker / "tls"))
    assert one_line_error(stuck).startswith(f"wanwitness: cannot write the TLS files in {blocker / 'tls'}")


# --- configuration: agent add, mosquitto-config, the collector ----------------------------

def test_agent_add_writes_tls_port_8883_and_the_ca_once_the_broker_has_a_certificate(ww, tmp_path):
    db = f"sqlite:///{tmp_path}/w.db"
    plain = ww("agent", "add", "attic", "--db", db, "--out", str(tmp_path / "attic.json"),
               "--broker-host", "192.0.2.10")
    assert plain.returncode == 0, plain.stderr
    broker = json.loads((tmp_path / "attic.json").read_text())["broker"]
    assert (broker["tls"], broker["port"], "ca" in broker) == (False, 1883, False)

    files = tls_init(ww, "--host", "192.0.2.10")
    proc = ww("agent", "add", "kitchen", "--db", db, "--out", str(tmp_path / "kitchen.json"),
              "--broker-host", "192.0.2.10")
    assert proc.returncode == 0, proc.stderr
    assert "over TLS" in proc.stdout
    board = json.loads((tmp_path / "kitchen.json").read_text())
    assert board["broker"]["tls"] is True and board["broker"]["port"] == 8883
    assert board["broker"]["ca"] == files.ca_cert.read_text()
    assert problems(board) == []  # the agent's own rules (deploy checks them) accept it

    # A name the certificate does not carry: the board would refuse the broker, so no agent.
    wrong = ww("agent", "add", "cellar", "--db", db, "--out", str(tmp_path / "cellar.json"),
               "--broker-host", "192.0.2.99")
    line = one_line_error(wrong)
    assert "not valid for '192.0.2.99'" in line and "--host 192.0.2.99" in line
    assert "cellar" not in ww("agent", "list", "--db", db).stdout


def test_tls_listen_off_keeps_boards_on_plain_mqtt_and_bad_values_are_named(ww, tmp_path):
    tls_init(ww)
    conf = ww.home / ".config" / "wanwitness" / "config.toml"
    conf.write_text('[broker]\ntls_listen = "off"\n')
    proc = ww("agent", "add", "attic", "--db", f"sqlite:///{tmp_path}/w.db",
              "--out", str(tmp_path / "attic.json"), "--broker-host", "localhost")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "attic.json").read_text())["broker"]["tls"] is False
    conf.write_text('[broker]\ntls_listen = "everywhere"\n')
    assert "tls_listen: expected HOST:PORT such as 0.0.0.0:8883, or \"off\"" in one_line_error(
        ww("config", "show"))


def test_mosquitto_config_gets_a_tls_listener_with_the_certificates(ww, tmp_path):
    db = f"sqlite:///{tmp_path}/w.db"
    assert ww("agent", "add", "a1", "--db", db, "--out", str(tmp_path / "a1.json")).returncode == 0
    without = ww("broker", "mosquitto-config", "--db", db, "--out", str(tmp_path / "plain"))
    assert without.returncode == 0, without.stderr
    assert "certfile" not in (tmp_path / "plain" / "wanwitness.conf").read_text()
    files = tls_init(ww)
    proc = ww("broker", "mosquitto-config", "--db", db, "--out", str(tmp_path / "mq"))
    assert proc.returncode == 0, proc.stderr
    conf = (tmp_path / "mq" / "wanwitness.conf").read_text()
    tail = conf[conf.index("listener 8883"):]
    for line in ("listener 8883", f"cafile {files.ca_cert}", f"certfile {files.cert}",
                 f"keyfile {files.key}", "require_certificate false"):
        assert line + "\n" in tail, conf
    assert "user mosquitto" in proc.stdout  # the key must be readable by Mosquitto


def test_plain_mqtt_reachable_from_the_network_is_warned_about_by_address():
    listening = [("mqtt", "0.0.0.0:1883"), ("mqtt", "[::]:1883"), ("mqtt", "192.0.2.5:1883"),
                 ("mqtt", "127.0.0.1:1883"), ("mqtt", "[::1]:1883"), ("mqtts", "0.0.0.0:8883")]
    warnings = plain_mqtt_warnings(listening, tls=False)
    assert warnings == [
        f"WARNING: plain MQTT on {where}: agents' passwords and records cross the network in "
        "clear; use TLS: wanwitness broker tls init"
        for where in ("0.0.0.0:1883 (every interface)", "[::]:1883 (every interface)", "192.0.2.5:1883")]
    with_tls = plain_mqtt_warnings([("mqtt", "0.0.0.0:1883"), ("mqtts", "0.0.0.0:8883")], tls=True)
    assert len(with_tls) == 1 and 'listen = "127.0.0.1:1883"' in with_tls[0]
    assert plain_mqtt_warnings([("mqtt", "127.0.0.1:1883"), ("mqtts", "0.0.0.0:8883")], tls=True) == []


@pytest.mark.integration
def test_collect_prints_each_listener_it_really_has(ww, tmp_path):
    workdir = tmp_path / "collector"
    tls_init(ww, "--dir", str(workdir / "tls"))  # tls/ beside the collector's config file
    plain_port, tls_port = free_port(), free_port()
    collector = CollectorProcess(workdir, f"sqlite:///{tmp_path}/w.db", listen=("127.0.0.1", plain_port),
                                 extra_env={"WANWITNESS_BROKER_TLS_LISTEN": f"127.0.0.1:{tls_port}"})
    collector.start()
    try:
        banner = next(line for line in collector.log().splitlines() if "embedded broker" in line)
        assert (f"embedded broker listening on mqtt://127.0.0.1:{plain_port}, "
                f"mqtts://127.0.0.1:{tls_port}") in banner
        assert "WARNING" not in collector.log()  # nothing plain beyond loopback
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
            context = ssl.create_default_context(cafile=str(workdir / "tls" / "ca.crt"))
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        collector.stop()


# --- the agent on MicroPython ----------------------------------------------------------------

class TlsSpy:
    """A TLS server on 127.0.0.1 that serves a given certificate and records, for every
    connection, how its handshake ended and which application bytes arrived after it."""

    def __init__(self, files: TlsFiles):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(files.cert), str(files.key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections: queue.Queue[tuple[str, bytes]] = queue.Queue()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    self.connections.put(("handshake done", tls.recv(4096)))
            except (ssl.SSLError, OSError) as exc:
                self.connections.put((getattr(exc, "reason", None) or str(exc), b""))
                conn.close()

    def seen(self) -> list[tuple[str, bytes]]:
        got = []
        while not self.connections.empty():
            got.append(self.connections.get())
        return got

    def close(self) -> None:
        self.sock.close()


def run_probe(port: int, ca: Path, secs: int = 20, **args: str) -> tuple[list[tuple[str, dict]], str]:
    """tests/mpy/tls_probe.py under MicroPython: its events and its whole output."""
    argv = [f"port={port}", f"ca={ca}", f"secs={secs}", *(f"{k}={v}" for k, v in args.items())]
    env = dict(os.environ, MICROPYPATH=mpy_path())
    proc = subprocess.run([micropython(), "-X", f"heapsize={HEAP}", str(PROBE), *argv], env=env,
                          cwd=PROBE.parent, capture_output=True, text=True, timeout=secs + 30)
    events = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "EV":
            events.append((parts[1], dict(p.split("=", 1) for p in parts[2:] if "=" in p)))
    return events, proc.stdout + proc.stderr


@pytest.mark.integration
@pytest.mark.parametrize(("served", "reason"), [
    ("another CA's certificate", "The certificate is not correctly signed by the trusted CA"),
    ("our CA's certificate for another name", "The certificate Common Name (CN) does not match"),
])
def test_the_agent_refuses_a_broker_it_cannot_verify_and_never_sends_connect(ww, tmp_path, served, reason):
    ours = tls_init(ww, "--dir", str(tmp_path / "ours"))
    if served.startswith("another CA"):
        other = tls_init(ww, "--dir", str(tmp_path / "other"))  # made the same way, elsewhere
    else:
        other = write_server_cert(ours, tmp_path / "renamed", ["mqtt.example.net"])
    spy = TlsSpy(other)
    try:
        events, output = run_probe(spy.port, ours.ca_cert, secs=4, user="probe", password="secret")
        time.sleep(0.5)
        seen = spy.seen()
    finally:
        spy.close()
    names = [name for name, _ in events]
    assert "connected" not in names and names[-1] == "gave_up", output
    errors = [fields["err"].replace("_", " ") for name, fields in events if name == "backoff"]
    assert len(errors) >= 3, output  # it keeps trying ...
    assert all(e.startswith("OSError: TLS: the broker's certificate is refused: " + reason)
               for e in errors), errors  # ... and says why each time
    assert f"mqtt: cannot connect: OSError: TLS: the broker's certificate is refused: {reason}" in output
    # The broker's side: every attempt ended in the handshake, and not one byte of MQTT
    # (CONNECT carries the password) ever arrived.
    assert all(outcome != "handshake done" and data == b"" for outcome, data in seen), seen
    # The agent says why with a TLS alert (the last attempt may be cut short by the exit).
    alerts = [o for o, _ in seen if o in ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE")]
    assert len(alerts) >= 3, seen


def tls_board(demo: Demo, port: int, ca: Path) -> None:
    """The demo's board config with the broker settings `agent add` writes for TLS."""
    board = json.loads(demo.board_config.read_text())
    board["broker"].update(port=port, tls=True, ca=ca.read_text())
    assert problems(board) == []
    demo.board_config.write_text(json.dumps(board))


def wait_for_records(demo: Demo, n: int, timeout: float = 60) -> None:
    """Until the ledger holds n of the agent's records (the boot record and what follows)."""
    deadline = time.monotonic() + timeout
    while True:
        have = query(demo, sa.select(sa.func.count()).select_from(s.records))[0][0]
        if have >= n:
            return
        assert time.monotonic() < deadline, f"only {have} record(s) stored; see {demo.workdir}"
        time.sleep(0.25)


@pytest.mark.integration
def test_the_agent_reports_over_tls_to_the_embedded_broker(ww, tmp_path, demo, monkeypatch):
    files = tls_init(ww, "--dir", str(tmp_path / "tls"))
    tls_port = free_port()
    # The collector's own config: its embedded broker serves TLS with these files.
    monkeypatch.setenv("WANWITNESS_BROKER_TLS_LISTEN", f"127.0.0.1:{tls_port}")
    monkeypatch.setenv("WANWITNESS_BROKER_TLS_CERT", str(files.cert))
    monkeypatch.setenv("WANWITNESS_BROKER_TLS_KEY", str(files.key))
    d = demo()
    d.setup()
    tls_board(d, tls_port, files.ca_cert)
    d.start()  # returns once the agent's boot record is in the ledger
    wait_for_records(d, 3)
    log = (d.workdir / "collector.log").read_text()
    assert f"mqtts://127.0.0.1:{tls_port}" in log
    assert "cannot connect" not in (d.workdir / "agent.log").read_text()


@pytest.mark.integration
@pytest.mark.skipif(not Path(MOSQUITTO_BIN).exists(), reason="mosquitto is not installed")
def test_the_agent_reports_over_tls_to_mosquitto_with_the_same_certificates(ww, tmp_path, demo):
    files = tls_init(ww, "--dir", str(tmp_path / "tls"))
    tls_port = free_port()
    collector = ("wanwitness-collector", "collector-secret")
    d = demo()
    d.setup()
    tls_board(d, tls_port, files.ca_cert)
    conf_dir = tmp_path / "mq-conf"
    write_mosquitto_config(conf_dir, [("demo", hash_password(d.agent_password))],
                           (collector[0], hash_password(collector[1])),
                           listen=("127.0.0.1", d.broker_port),
                           tls_files=(files.ca_cert, files.cert, files.key),
                           tls_listen=("127.0.0.1", tls_port))
    m = Mosquitto(tmp_path / "mq", port=d.broker_port, allow_anonymous=False, listener=False,
                  extra_conf=f"include_dir {conf_dir}")
    m.start()
    try:
        d.external = collector  # the collector on Mosquitto's plain loopback listener
        d.start()
        wait_for_records(d, 3)
        assert "cannot connect" not in (d.workdir / "agent.log").read_text()
        assert f"port {tls_port}" in m.log_tail(200)  # Mosquitto opened the TLS listener
    finally:
        d.stop()
        m.stop()


@pytest.mark.integration
def test_the_agent_on_its_board_refuses_the_embedded_broker_with_another_cas_certificate(
        ww, tmp_path, demo, monkeypatch):
    served = tls_init(ww, "--dir", str(tmp_path / "served"))
    trusted = tls_init(ww, "--dir", str(tmp_path / "trusted"))  # another CA, made the same way
    tls_port = free_port()
    monkeypatch.setenv("WANWITNESS_BROKER_TLS_LISTEN", f"127.0.0.1:{tls_port}")
    monkeypatch.setenv("WANWITNESS_BROKER_TLS_CERT", str(served.cert))
    monkeypatch.setenv("WANWITNESS_BROKER_TLS_KEY", str(served.key))
    d = demo()
    d.setup()
    tls_board(d, tls_port, trusted.ca_cert)
    d.start_collector()
    d.start_agent()
    agent_log = d.workdir / "agent.log"
    reason = ("mqtt: cannot connect: OSError: TLS: the broker's certificate is refused: "
              "The certificate is not correctly signed by the trusted CA")
    deadline = time.monotonic() + 60
    while reason not in (agent_log.read_text() if agent_log.exists() else ""):
        assert time.monotonic() < deadline, agent_log.read_text() if agent_log.exists() else "no agent log"
        time.sleep(0.25)
    time.sleep(5)  # a few more attempts
    log = (d.workdir / "collector.log").read_text()
    assert "agent demo online" not in log and "login" not in log.lower(), log  # no CONNECT came
    assert "record 1 boot" in agent_log.read_text()  # it records on, into its outbox
    assert d.counts() == (0, 0)
