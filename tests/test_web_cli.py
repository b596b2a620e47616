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
