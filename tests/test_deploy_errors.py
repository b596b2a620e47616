"""deploy / calibrate / console: the errors a user meets, each one line and exit 2.

The happy paths run against the virtual board on a serial line in hwtests/.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading

import pytest

from testing.cli import one_line_error


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "home.config.json"
    path.write_text(json.dumps({"id": "home", "broker": {"host": "127.0.0.1", "port": 1883},
                                "leds": [{"pin": 34, "role": "internet"}]}))
    return path


@pytest.fixture
def silent_pty():
    """A serial port with nothing behind it that answers (a board without MicroPython)."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    stop = threading.Event()

    def drain():  # swallow what is sent, answer nothing
        while not stop.is_set():
            try:
                os.read(master, 1024)
            except OSError:
                return
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    yield name
    stop.set()
    os.close(slave)
    os.close(master)


@pytest.mark.parametrize("command", [
    ["deploy", "--agent", "home"], ["calibrate", "--agent", "home"], ["console", "--seconds", "1"]])
def test_no_such_port(command, config, tmp_path, ww):
    args = [command[0], "--port", str(tmp_path / "ttyUSB9"), *command[1:]]
    if command[0] != "console":
        args += ["--config", str(config)]
    msg = one_line_error(ww(*args))
    assert f"no such port {tmp_path / 'ttyUSB9'}" in msg


def test_a_port_that_is_not_a_serial_port(config, tmp_path, ww):
    msg = one_line_error(ww("deploy", "--port", str(config), "--agent", "home",
                             "--config", str(config)))
    assert "is not a serial port" in msg


def test_port_busy(config, silent_pty, ww):
    # pyserial's exclusive open is a flock(): another program holding one makes the port busy
    fd = os.open(silent_pty, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        msg = one_line_error(ww("deploy", "--port", silent_pty, "--agent", "home",
                                 "--config", str(config)))
        assert "is in use by another program" in msg
        msg = one_line_error(ww("console", "--port", silent_pty, "--seconds", "1"))
        assert "is in use by another program" in msg
    finally:
        os.close(fd)


def test_no_micropython_on_the_board(config, silent_pty, ww):
    msg = one_line_error(ww("deploy", "--port", silent_pty, "--agent", "home",
                             "--config", str(config)))
    assert f"no MicroPython answers on {silent_pty}" in msg
    assert "wanwitness flash" in msg


def test_config_of_another_agent(config, silent_pty, ww):
    msg = one_line_error(ww("deploy", "--port", silent_pty, "--agent", "garage",
                             "--config", str(config)))
    assert "is the config of agent 'home', not 'garage'" in msg


def test_missing_or_broken_config(tmp_path, silent_pty, ww):
    msg = one_line_error(ww("deploy", "--port", silent_pty, "--agent", "home",
                             "--config", str(tmp_path / "nope.json")))
    assert "not found" in msg and "wanwitness agent add" in msg
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "home",')
    msg = one_line_error(ww("deploy", "--port", silent_pty, "--agent", "home", "--config", str(bad)))
    assert "is not valid JSON" in msg and "line 1" in msg


def test_calibrate_without_sensors(tmp_path, silent_pty, ww):
    path = tmp_path / "home.config.json"
    path.write_text(json.dumps({"id": "home", "leds": []}))
    msg = one_line_error(ww("calibrate", "--port", silent_pty, "--config", str(path)))
    assert "has no LED sensors" in msg


def test_virtual_serial_board_needs_a_flash_image(tmp_path, ww):
    msg = one_line_error(ww("agent", "run", "--virtual", "--serial", str(tmp_path / "tty")))
    assert "--serial needs --flash" in msg


def test_frozen_agent_is_recognised_from_the_boards_module_list():
    from wanwitness.boards.deploy import frozen_agent

    class Link:  # what help('modules') prints on a board, stock and with our manifest
        def __init__(self, text):
            self.text = text

        def exec(self, code, timeout=30):
            assert code == "help('modules')"
            return self.text

    stock = "__main__ gc machine network\nasyncio/core  time uos  json\nPlus any modules on the filesystem\n"
    ours = stock + "app clock config detector led mqtt net outbox probe boot\n"
    assert frozen_agent(Link(stock)) is False
    assert frozen_agent(Link(ours)) is True
