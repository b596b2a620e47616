"""`wanwitness collect` with its web UI, and `wanwitness web password`, as processes."""

from __future__ import annotations

import socket

import pytest
import requests

from testing.cli import one_clear_line
from testing.collector import CollectorProcess
from wanwitness.loopback import free_port

pytestmark = pytest.mark.integration


def test_off_loopback_without_a_password_collect_refuses_to_start(ww, tmp_path):
    port = free_port()
    proc = ww.process("collect", "--db", f"sqlite:///{tmp_path}/w.db", "--listen",
                      f"127.0.0.1:{free_port()}", "--tls-listen", "off", "--web", f"0.0.0.0:{port}",
                      timeout=60)
    assert proc.returncode == 2
    line = one_clear_line(proc)
    assert f"refusing to serve the web UI on 0.0.0.0:{port} without a password" in line
    assert "wanwitness web password" in line and "--no-web" in line


def test_a_busy_web_port_is_one_clear_line(ww, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = ww.process("collect", "--db", f"sqlite:///{tmp_path}/w.db", "--listen",
                          f"127.0.0.1:{free_port()}", "--tls-listen", "off",
                          "--web", f"127.0.0.1:{port}", timeout=60)
    assert proc.returncode == 2
    line = one_clear_line(proc)
    assert f"cannot serve the web UI on 127.0.0.1:{port}: the port is already in use" in line
    assert "--web HOST:PORT" in line and "--no-web" in line


@pytest.mark.parametrize("args, expected", [
    (("--web", "8765"), "--web: expected HOST:PORT"),
    (("--web", "127.0.0.1:8765", "--no-web"), "--web and --no-web: choose one"),
])
def test_wrong_web_options_are_one_clear_line(ww, tmp_path, args, expected):
    proc = ww.process("collect", "--db", f"sqlite:///{tmp_path}/w.db", *args, timeout=60)
    assert proc.returncode == 2
    assert expected in one_clear_line(proc)


def test_with_a_password_collect_serves_off_loopback_and_asks_for_it(ww, tmp_path):
    db = f"sqlite:///{tmp_path}/w.db"
    short = ww.process("web", "password", "--stdin", "--db", db, input="short\n")
    assert short.returncode == 2 and "at least 8 characters" in one_clear_line(short)
    done = ww.process("web", "password", "--stdin", "--db", db, input="correct horse\n")
    assert done.returncode == 0, done.stderr
    assert ww.process("agent", "add", "home", "--db", db, "--out", str(tmp_path / "b.json")).returncode == 0
    web_port = free_port()
    col = CollectorProcess(tmp_path / "col", db, listen=("127.0.0.1", free_port()),
                           web=("0.0.0.0", web_port), extra_env={"HOME": str(ww.home)})
    col.start()
    try:
        base = f"http://127.0.0.1:{web_port}"
        assert f"web UI on http://127.0.0.1:{web_port}/" in col.log()
        http = requests.Session()
        assert http.get(base + "/api/v1/agents", timeout=30).status_code == 401
        token = http.get(base + "/api/v1/session", timeout=30).json()["csrf"]
        r = http.post(base + "/api/v1/login", json={"password": "correct horse"},
                      headers={"X-CSRF-Token": token}, timeout=30)
        assert r.status_code == 200, r.text
        [agent] = http.get(base + "/api/v1/agents", timeout=30).json()
        assert agent["id"] == "home" and agent["state"] == "never_seen"
    finally:
        col.stop()
    assert "Traceback" not in col.log()


def test_with_a_certificate_the_web_ui_is_served_over_https_with_secure_cookies(ww, tmp_path):
    from wanwitness.broker.tls import init_tls
    files, _kept = init_tls(tmp_path / "tls", ["127.0.0.1"])
    db = f"sqlite:///{tmp_path}/w.db"
    assert ww.process("web", "password", "--stdin", "--db", db, input="correct horse\n").returncode == 0
    web_port = free_port()
    config = f'[web]\ntls_cert = "{files.cert}"\ntls_key = "{files.key}"\n'
    col = CollectorProcess(tmp_path / "col", db, listen=("127.0.0.1", free_port()),
                           web=("0.0.0.0", web_port), collector_conf=config)
    col.start()
    try:
        assert f"web UI on https://127.0.0.1:{web_port}/" in col.log()
        base = f"https://127.0.0.1:{web_port}"
        # verify= on the call: requests prefers REQUESTS_CA_BUNDLE to a session's verify
        r = requests.get(base + "/api/v1/session", timeout=30, verify=str(files.ca_cert))
        assert r.status_code == 200
        cookie = r.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{web_port}/api/v1/session", timeout=10)
    finally:
        col.stop()
    assert "Traceback" not in col.log()


def test_half_a_certificate_is_one_clear_line(ww, tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    config = tmp_path / "c.toml"
    config.write_text(f'[web]\ntls_cert = "{cert}"\n')
    proc = ww.process("--config", str(config), "collect", "--db", f"sqlite:///{tmp_path}/w.db",
                      timeout=60)
    assert proc.returncode == 2
    assert "[web] tls_cert and tls_key: set both" in one_clear_line(proc)


def test_collect_serves_prometheus_the_metrics_of_its_ingest_with_the_token(ww, tmp_path):
    import json
    import time

    from testing.brokers import MqttClient
    from tests.test_web_metrics import promtool_check, samples, value

    db = f"sqlite:///{tmp_path}/w.db"
    assert ww.process("web", "password", "--stdin", "--db", db, input="correct horse\n").returncode == 0
    short = ww.process("web", "metrics-token", "--stdin", "--db", db, input="short\n")
    assert short.returncode == 2 and "at least 16 characters" in one_clear_line(short)
    made = ww.process("web", "metrics-token", "--db", db)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert len(token) >= 40 and "credentials_file" in made.stderr
    assert ww.process("agent", "add", "home", "--db", db, "--out", str(tmp_path / "b.json")).returncode == 0
    password = json.loads((tmp_path / "b.json").read_text())["broker"]["password"]
    broker_port, web_port = free_port(), free_port()
    col = CollectorProcess(tmp_path / "col", db, listen=("127.0.0.1", broker_port),
                           web=("0.0.0.0", web_port), extra_env={"HOME": str(ww.home)})
    col.start()
    try:
        url = f"http://127.0.0.1:{web_port}/metrics"
        assert requests.get(url, timeout=30).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        before = samples(requests.get(url, headers=bearer, timeout=30).text)
        assert value(before, "wanwitness_messages_quarantined_total", reason="invalid_batch") == 0
        assert value(before, "wanwitness_agent_line_state", agent="home", state="never_seen") == 1
        board = MqttClient(f"mqtt://127.0.0.1:{broker_port}", "home", username="home",
                           password=password).connect()
        try:
            board.publish("wanwitness/home/rec", b'{"v":1,"agent":"home","boot":1,"recs":"x"}')
        finally:
            board.close()
        deadline = time.monotonic() + 30
        while True:
            r = requests.get(url, headers=bearer, timeout=30)
            after = samples(r.text)
            if value(after, "wanwitness_messages_quarantined_total", reason="invalid_batch") >= 1:
                break
            assert time.monotonic() < deadline, "the quarantined message was not counted"
            time.sleep(0.2)
        assert value(after, "wanwitness_messages_quarantined_total", reason="invalid_batch") == 1
        assert value(after, "wanwitness_ingest_commit_duration_seconds_count") >= 1
        assert value(after, "process_cpu_seconds_total") > 0
        promtool_check(r.text)
        # --remove: the token no longer opens it.
        assert ww.process("web", "metrics-token", "--remove", "--db", db).returncode == 0
        assert requests.get(url, headers=bearer, timeout=30).status_code == 401
    finally:
        col.stop()
    assert "Traceback" not in col.log()
