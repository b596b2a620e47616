"""`wanwitness service install/uninstall`: the systemd unit as systemd reads it
(`systemd-analyze verify`, `systemctl --root`), the CLI around it, and its ExecStart run
as a real collector on loopback.

The unit's values are read back with a parser of systemd.syntax(7) written here (not the
module's quoting code run backwards), so a quoting mistake shows up as a wrong argv.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from wanwitness.cli.service import register, service
from wanwitness.errors import UserError
from wanwitness.service import systemd

PYTHON = os.path.abspath(sys.executable)  # the venv's python, not resolved (the venv is its path)
EXE = [PYTHON, "-m", "wanwitness"]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
SYSTEMCTL = shutil.which("systemctl") or "/usr/bin/systemctl"
# What systemd gives a service before Environment= (systemd.exec(5)); no venv activation.
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- reading a unit back (systemd.syntax(7), systemd.service(5) "COMMAND LINES") -----

def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"unexpected continuation line: {raw!r}"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict, section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, (key, values)
    return values[0]


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "'": "'", "s": " "}


def _unescape(text: str, i: int) -> tuple[str, int]:
    """The C escape at text[i] == '\\'; returns (char, next index)."""
    c = text[i + 1]
    if c in _ESCAPES:
        return _ESCAPES[c], i + 2
    if c == "x":
        return chr(int(text[i + 2:i + 4], 16)), i + 4
    if c in "01234567":
        return chr(int(text[i + 1:i + 4], 8)), i + 4
    raise AssertionError(f"unknown escape \\{c} in {text!r}")


def split_items(value: str) -> list[str]:
    """Split a value into items: whitespace-separated, an item may be wrapped whole in
    "..." or '...' (the closing quote followed by whitespace or the end), C escapes."""
    items: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            return items
        out: list[str] = []
        if value[i] in "\"'":
            quote = value[i]
            i += 1
            while True:
                assert i < n, f"unbalanced quoting in {value!r}"
                if value[i] == quote:
                    i += 1
                    break
                if value[i] == "\\":
                    ch, i = _unescape(value, i)
                    out.append(ch)
                else:
                    out.append(value[i])
                    i += 1
            assert i == n or value[i].isspace(), f"text after a closing quote in {value!r}"
        else:
            while i < n and not value[i].isspace():
                assert value[i] not in "\"'", f"quote inside a word in {value!r}"
                if value[i] == "\\":
                    ch, i = _unescape(value, i)
                    out.append(ch)
                else:
                    out.append(value[i])
                    i += 1
        items.append("".join(out))


def specifiers(word: str) -> str:
    """%% is a literal %; this unit is meant to use no other specifier."""
    out, i = [], 0
    while i < len(word):
        if word[i] == "%":
            assert word[i + 1:i + 2] == "%", f"unexpected specifier in {word!r}"
            out.append("%")
            i += 2
        else:
            out.append(word[i])
            i += 1
    return "".join(out)


def expand_variables(word: str, env: dict[str, str]) -> str:
    """$$ is a literal $, ${NAME} is NAME's value; the unit uses no bare $NAME."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        assert m.group(1) is not None, f"bare $ in {word!r}"
        return env.get(m.group(1), "")
    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$", sub, word)


def exec_argv(unit: dict, env: dict[str, str]) -> list[str]:
    """ExecStart= as the argv systemd runs: items, specifiers, then variables in the
    arguments (never in the program path)."""
    words = [specifiers(w) for w in split_items(one(unit, "Service", "ExecStart"))]
    assert words and words[0].startswith("/"), f"program not an absolute path: {words!r}"
    return [words[0]] + [expand_variables(w, env) for w in words[1:]]


def unit_environment(unit: dict) -> dict[str, str]:
    env = {}
    for value in unit["Service"].get("Environment", []):
        for item in split_items(value):
            name, sep, val = specifiers(item).partition("=")
            assert sep, item
            env[name] = val
    return env


# --- tools ------------------------------------------------------------------------------

def need(tool: str) -> None:
    if not os.access(tool, os.X_OK):
        pytest.skip(f"{tool} is not installed")


def verify(unit_text: str, workdir: Path, user_mode: bool) -> tuple[int, list[str]]:
    """`systemd-analyze [--user] verify` on the unit: its exit code and its output lines."""
    need(SYSTEMD_ANALYZE)
    unit_dir = workdir / ("verify-user" if user_mode else "verify-system")
    unit_dir.mkdir(exist_ok=True)
    path = unit_dir / systemd.UNIT_NAME
    path.write_text(unit_text)
    env = dict(os.environ)
    cmd = [SYSTEMD_ANALYZE, "verify", str(path)]
    if user_mode:
        # `--user` makes systemd-analyze build a user manager's lookup paths, which need
        # $XDG_RUNTIME_DIR. Here (root in a container, no login session, no systemd
        # running) it is unset and verify fails before reading the unit ("Failed to
        # lookup RuntimeDirectory path: No such device or address"); a private one is
        # all it needs.
        runtime = workdir / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        cmd.insert(1, "--user")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


# Lines systemd prints for settings it does not take (unknown key or section, a value it
# cannot parse and ignores, bad quoting or escapes, a program it cannot run).
PROBLEM = re.compile(r"unknown|ignoring|invalid|unbalanced|not executable|failed|error|bad|"
                     r"deprecated|warning", re.IGNORECASE)


def assert_verified(unit_text: str, workdir: Path, user_mode: bool) -> None:
    rc, lines = verify(unit_text, workdir, user_mode)
    problems = [line for line in lines if PROBLEM.search(line)]
    assert rc == 0 and not problems, "\n".join(lines)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- fixtures ---------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch):
    """A user account of our own: HOME and the XDG dirs in tmp, no WANWITNESS_* leaking in.
    The user service cannot see /tmp (PrivateTmp=) and install refuses paths there, so
    the "private tmp" is tmp_path/tmp for these tests."""
    monkeypatch.setattr(systemd, "PRIVATE_TMP_DIRS", (tmp_path / "tmp",))
    h = types.SimpleNamespace(home=tmp_path / "home", data=tmp_path / "xdg-data",
                              config=tmp_path / "xdg-config", units=tmp_path / "units")
    h.home.mkdir()
    monkeypatch.setenv("HOME", str(h.home))
    monkeypatch.setenv("XDG_DATA_HOME", str(h.data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(h.config))
    for name in list(os.environ):
        if name.startswith("WANWITNESS_"):
            monkeypatch.delenv(name)
    return h


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)


@pytest.fixture
def outside_home_exe(monkeypatch, tmp_path):
    """The system service must not run a program below /home or /root; this venv's python
    may well resolve there (pyenv), so system installs here use a stand-in program."""
    prog = tmp_path / "opt" / "bin" / "python3"
    prog.parent.mkdir(parents=True)
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    monkeypatch.setattr(systemd, "default_exe", lambda: [str(prog), "-m", "wanwitness"])
    return str(prog)


def invoke(*args: str, obj=None):
    return CliRunner().invoke(service, list(args), obj=obj, catch_exceptions=True)


def user_error(result) -> str:
    """The UserError a command raised (cli.main prints it as one line, exit 2)."""
    assert isinstance(result.exception, UserError), (result.exception, result.output)
    message = str(result.exception)
    assert "\n" not in message
    return message


def write_config(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- (a) systemd accepts the units ------------------------------------------------------

def test_system_unit_passes_systemd_analyze_verify(tmp_path):
    config = write_config(tmp_path / "config.toml", '[broker]\nlisten = "127.0.0.1:1883"\n')
    text = systemd.render_unit(exe=EXE, config=config, user_mode=False,
                               data_dir=systemd.SYSTEM_DATA_DIR,
                               db=f"sqlite:///{systemd.SYSTEM_DATA_DIR / systemd.DB_FILE}")
    assert_verified(text, tmp_path, user_mode=False)


def test_user_unit_passes_systemd_analyze_user_verify(tmp_path):
    data = tmp_path / "data dir 100% \"mine\""
    text = systemd.render_unit(exe=EXE, config=tmp_path / "my config.toml", user_mode=True,
                               data_dir=data, db=f"sqlite:///{data}/wanwitness.db",
                               writable=[tmp_path / "elsewhere"])
    assert_verified(text, tmp_path, user_mode=True)


def test_verify_check_catches_what_systemd_refuses(tmp_path):
    """The check above can fail: systemd-analyze reports these and assert_verified sees it."""
    good = systemd.render_unit(exe=EXE, config=None, user_mode=False,
                               data_dir=systemd.SYSTEM_DATA_DIR)
    broken = {
        "unknown key": good.replace("[Service]\n", "[Service]\nProtectEverything=yes\n"),
        "bad quoting": good.replace(" collect", ' "collect'),
        "missing program": good.replace(PYTHON, str(tmp_path / "no-such-python")),
        "unknown value": good.replace("ProtectSystem=strict", "ProtectSystem=very"),
    }
    for what, text in broken.items():
        assert text != good, what
        rc, lines = verify(text, tmp_path, user_mode=False)
        assert rc != 0 or any(PROBLEM.search(line) for line in lines), (what, rc, lines)
    # The same for the user manager's reading (an unknown key is only a warning, exit 0).
    user_unit = systemd.render_unit(exe=EXE, config=None, user_mode=True, data_dir=tmp_path)
    rc, lines = verify(user_unit.replace("[Service]\n", "[Service]\nProtectEverything=yes\n"),
                       tmp_path, user_mode=True)
    assert any("Unknown key" in line and "ProtectEverything" in line for line in lines), lines


def test_program_path_quoting_is_read_back_by_systemd(tmp_path):
    """verify fails unless the program exists, so systemd must unquote this path exactly.
    (systemd refuses quotes and backslashes in a program path: render_unit does too.)"""
    weird = tmp_path / "a  dir with spaces, 50% and ;"
    weird.mkdir()
    (weird / "python").symlink_to(PYTHON)
    exe = [str(weird / "python"), "-m", "wanwitness"]
    for user_mode in (False, True):
        text = systemd.render_unit(exe=exe, config=None, user_mode=user_mode,
                                   data_dir=systemd.SYSTEM_DATA_DIR if not user_mode else tmp_path)
        assert_verified(text, tmp_path, user_mode)
        assert exec_argv(parse_unit(text), {})[:3] == exe


def test_user_unit_keeps_to_what_a_user_manager_supports(tmp_path):
    """systemd-analyze --user verify does not know what a per-user manager can do, so this
    checks it from systemd.exec(5) (v252): no system-only settings, and the namespace-based
    ones only together with PrivateUsers=yes."""
    text = systemd.render_unit(exe=EXE, config=None, user_mode=True, data_dir=tmp_path / "d")
    unit = parse_unit(text)
    keys = set(unit["Service"]) | {f"Unit.{k}" for k in unit["Unit"]}
    system_only = {"User", "Group", "DynamicUser", "SupplementaryGroups", "ProtectControlGroups",
                   "ProtectProc", "ProcSubset", "RemoveIPC", "SecureBits", "LogNamespace",
                   "RootImage", "MountImages", "ExtensionImages", "SELinuxContext",
                   "AppArmorProfile", "SmackProcessLabel",
                   # valid, but not what a user service wants: StateDirectory= is below
                   # ~/.config there, and network-online.target is a system unit
                   "StateDirectory", "Unit.After", "Unit.Wants"}
    assert not keys & system_only, keys & system_only
    needs_userns = {"ProtectSystem", "ProtectHome", "ReadWritePaths", "PrivateTmp",
                    "PrivateDevices", "PrivateMounts", "ProtectKernelTunables",
                    "ProtectKernelModules", "ProtectKernelLogs", "ProtectHostname", "ProtectClock",
                    "CapabilityBoundingSet"}
    assert keys & needs_userns
    assert one(unit, "Service", "PrivateUsers") == "yes"
    assert one(unit, "Install", "WantedBy") == "default.target"
    assert one(unit, "Service", "ProtectHome") == "read-only"
    assert split_items(one(unit, "Service", "ReadWritePaths")) == [str(tmp_path / "d")]


def test_system_unit_settings(tmp_path):
    config = write_config(tmp_path / "config.toml")
    unit = parse_unit(systemd.render_unit(exe=EXE, config=config, user_mode=False,
                                          data_dir=systemd.SYSTEM_DATA_DIR,
                                          db="sqlite:////var/lib/wanwitness/w.db"))
    s = unit["Service"]
    expected = {"Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "ProtectHome": "yes", "PrivateTmp": "yes", "DynamicUser": "yes",
                "StateDirectory": "wanwitness", "ProtectKernelTunables": "yes",
                "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
                "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6"}
    assert {k: one(unit, "Service", k) for k in expected} == expected
    assert "RestartSec" in s
    # A corrupt store stops the collector with status 3 (collector/loop.py StoreCorrupt):
    # restarting it every few seconds would only fill the journal.
    from wanwitness.collector.loop import StoreCorrupt
    assert one(unit, "Service", "RestartPreventExitStatus") == str(StoreCorrupt.exit_code) == "3"
    assert "ReadWritePaths" not in s  # StateDirectory= is the one writable place
    assert one(unit, "Unit", "After") == one(unit, "Unit", "Wants") == "network-online.target"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    env = unit_environment(unit)
    assert env["XDG_DATA_HOME"] == "/var/lib" and env["HOME"] == "/var/lib/wanwitness"
    assert all(v.startswith("/var/lib") for k, v in env.items() if k.startswith("XDG_"))
    assert one(unit, "Service", "LoadCredential") == f"config.toml:{config}"
    argv = exec_argv(unit, {"CREDENTIALS_DIRECTORY": "/run/credentials/wanwitness.service"})
    assert argv == EXE + ["--config", "/run/credentials/wanwitness.service/config.toml",
                          "collect", "--db", "sqlite:////var/lib/wanwitness/w.db"]


def test_arguments_survive_quoting(tmp_path):
    """Spaces, quotes, backslashes, % and $ in arguments come back as they went in."""
    nasty = "sqlite:////srv/led ger/\"100%\" 'it''s' \\ $HOME ${X} ;.db"
    text = systemd.render_unit(exe=EXE, config=tmp_path / "c $x %n.toml", user_mode=True,
                               data_dir=tmp_path, db=nasty)
    argv = exec_argv(parse_unit(text), {"HOME": "/wrong", "X": "wrong"})
    assert argv == EXE + ["--config", str(tmp_path / "c $x %n.toml"), "collect", "--db", nasty]
    with pytest.raises(UserError, match="control characters"):
        systemd.render_unit(exe=EXE, config=None, user_mode=True, data_dir=tmp_path, db="a\nb")
    for bad in ("/opt/$v/python", '/opt/"v"/python', "/opt/v's/python", "/opt/v\\/python"):
        with pytest.raises(UserError, match="quotes or backslashes"):
            systemd.render_unit(exe=[bad], config=None, user_mode=True, data_dir=tmp_path)
    with pytest.raises(UserError, match="absolute"):
        systemd.render_unit(exe=["python3"], config=None, user_mode=True, data_dir=tmp_path)
    with pytest.raises(UserError, match="below /var/lib"):
        systemd.render_unit(exe=EXE, config=None, user_mode=False, data_dir=tmp_path)


# --- (b) install / uninstall through the CLI ---------------------------------------------

def test_user_install_writes_the_unit_and_says_what_next(home):
    result = invoke("install", "--user", "--unit-dir", str(home.units))
    assert result.exit_code == 0, result.output
    path = home.units / systemd.UNIT_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in home.units.iterdir()) == [systemd.UNIT_NAME]  # no temp file left
    text = path.read_text()
    assert systemd.MARKER in text.splitlines()
    unit = parse_unit(text)
    data_dir = home.data / "wanwitness"
    assert exec_argv(unit, {}) == EXE + ["collect", "--db", f"sqlite:///{data_dir}/wanwitness.db"]
    assert split_items(one(unit, "Service", "ReadWritePaths")) == [str(data_dir)]
    assert data_dir.is_dir()  # ReadWritePaths= needs it at start
    lines = result.output.splitlines()
    assert lines[0] == f"wrote {path}"
    commands = [line.strip() for line in lines[lines.index("next, run:") + 1:]]
    assert commands == ["systemctl --user daemon-reload", "systemctl --user enable --now wanwitness",
                        f"loginctl enable-linger {systemd._login_name()}"]


def test_user_unit_goes_below_xdg_config_home(home, monkeypatch):
    result = invoke("install", "--user")
    assert result.exit_code == 0, result.output
    assert (home.config / "systemd" / "user" / systemd.UNIT_NAME).is_file()
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert systemd.unit_path(True) == home.home / ".config" / "systemd" / "user" / systemd.UNIT_NAME
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/is/ignored")
    assert systemd.unit_path(True) == home.home / ".config" / "systemd" / "user" / systemd.UNIT_NAME
    assert systemd.unit_path(False) == Path("/etc/systemd/system/wanwitness.service")


def test_user_install_follows_the_config_store(home):
    write_config(home.config / "wanwitness" / "config.toml",
                 '[store]\nurl = "postgresql://ww@localhost/ledger"\n')
    result = invoke("install", "--user", "--unit-dir", str(home.units))
    assert result.exit_code == 0, result.output
    argv = exec_argv(parse_unit((home.units / systemd.UNIT_NAME).read_text()), {})
    assert argv == EXE + ["collect"]  # no --db: the config's [store] url decides
    assert "[store] url" in result.output


def test_user_install_makes_a_sqlite_dir_elsewhere_writable(home, tmp_path):
    db_dir = home.home / "ledgers"
    result = invoke("install", "--user", "--unit-dir", str(home.units),
                    "--db", f"sqlite:///{db_dir}/w.db")
    assert result.exit_code == 0, result.output
    unit = parse_unit((home.units / systemd.UNIT_NAME).read_text())
    assert split_items(one(unit, "Service", "ReadWritePaths")) == [str(home.data / "wanwitness"),
                                                                  str(db_dir)]
    assert db_dir.is_dir()


def test_user_install_refuses_paths_in_the_private_tmp(home, tmp_path):
    tmp = tmp_path / "tmp"
    config = write_config(tmp / "config.toml")
    units = ["--unit-dir", str(home.units)]
    msg = user_error(invoke("install", "--user", *units, "--config", str(config)))
    assert str(config) in msg and "private /tmp" in msg
    msg = user_error(invoke("install", "--user", *units, "--db", f"sqlite:///{tmp}/w.db"))
    assert "private /tmp" in msg
    with pytest.raises(UserError, match="private /tmp"):
        systemd.install(user_mode=True, unit_dir=home.units, data_dir=tmp / "data")
    assert not home.units.exists()


def test_global_config_option_is_used(home, tmp_path):
    config = write_config(home.home / "ww.toml", '[broker]\nprefix = "house"\n')
    result = invoke("install", "--user", "--unit-dir", str(home.units),
                    obj=types.SimpleNamespace(config_path=config))
    assert result.exit_code == 0, result.output
    argv = exec_argv(parse_unit((home.units / systemd.UNIT_NAME).read_text()), {})
    assert argv[3:6] == ["--config", str(config), "collect"]


def test_system_install(home, tmp_path, as_root, outside_home_exe):
    config = write_config(tmp_path / "etc" / "config.toml", '[broker]\nlisten = "0.0.0.0:1883"\n')
    result = invoke("install", "--config", str(config), "--unit-dir", str(home.units))
    assert result.exit_code == 0, result.output
    path = home.units / systemd.UNIT_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    unit = parse_unit(path.read_text())
    assert one(unit, "Service", "DynamicUser") == "yes"
    assert one(unit, "Service", "LoadCredential") == f"config.toml:{config}"
    argv = exec_argv(unit, {"CREDENTIALS_DIRECTORY": "/C"})
    assert argv == [outside_home_exe, "-m", "wanwitness", "--config", "/C/config.toml", "collect",
                    "--db", "sqlite:////var/lib/wanwitness/wanwitness.db"]
    lines = result.output.splitlines()
    commands = [line.strip() for line in lines[lines.index("next, run as root:") + 1:]]
    assert commands == ["systemctl daemon-reload", "systemctl enable --now wanwitness"]
    assert "readable by root only" in result.output


def test_system_install_refuses_what_the_service_could_not_use(home, tmp_path, as_root,
                                                              outside_home_exe, monkeypatch):
    units = ["--unit-dir", str(home.units)]
    config = write_config(tmp_path / "c.toml", '[store]\nurl = "sqlite:////srv/ww/ledger.db"\n')
    msg = user_error(invoke("install", "--config", str(config), *units))
    assert "/var/lib/wanwitness" in msg and "postgresql://" in msg
    msg = user_error(invoke("install", *units, "--db", "postgresql://ww:secret@db/ledger"))
    assert "password" in msg and "[store] url" in msg
    msg = user_error(invoke("install", *units, "--db", "sqlite:///relative.db"))
    assert "absolute" in msg
    msg = user_error(invoke("install", *units, "--db", "mysql://db/x"))
    assert "unsupported" in msg
    msg = user_error(invoke("install", *units, "--config", str(tmp_path / "missing.toml")))
    assert "missing.toml" in msg and "no such file" in msg
    broken = write_config(tmp_path / "broken.toml", "[brokr]\n")
    msg = user_error(invoke("install", *units, "--config", str(broken)))
    assert "broken.toml" in msg and "brokr" in msg
    # A program below a home directory: ProtectHome= hides it from the system service.
    monkeypatch.setattr(systemd, "HOME_DIRS", (tmp_path,))
    msg = user_error(invoke("install", *units))
    assert "--user" in msg and str(tmp_path) in msg
    assert not home.units.exists()


def test_system_mode_needs_root(home, monkeypatch, outside_home_exe):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for command in ("install", "uninstall"):
        msg = user_error(invoke(command, "--unit-dir", str(home.units)))
        assert "sudo" in msg and "--user" in msg and "root" in msg
    assert not home.units.exists()
    assert invoke("install", "--user", "--unit-dir", str(home.units)).exit_code == 0


def test_foreign_unit_is_not_replaced_without_force(home):
    path = home.units / systemd.UNIT_NAME
    foreign = "[Service]\nExecStart=/usr/bin/true\n"
    write_config(path, foreign)
    msg = user_error(invoke("install", "--user", "--unit-dir", str(home.units)))
    assert str(path) in msg and "--force" in msg
    assert path.read_text() == foreign
    result = invoke("install", "--user", "--force", "--unit-dir", str(home.units))
    assert result.exit_code == 0, result.output
    assert systemd.MARKER in path.read_text().splitlines()
    assert "systemctl --user restart wanwitness" in result.output


def test_masked_unit_is_not_replaced_without_force(home):
    home.units.mkdir()
    (home.units / systemd.UNIT_NAME).symlink_to("/dev/null")
    msg = user_error(invoke("install", "--user", "--unit-dir", str(home.units)))
    assert "masked" in msg
    assert (home.units / systemd.UNIT_NAME).is_symlink()


def test_reinstall_replaces_our_own_unit(home):
    assert invoke("install", "--user", "--unit-dir", str(home.units)).exit_code == 0
    result = invoke("install", "--user", "--unit-dir", str(home.units), "--db", "postgresql://db/x")
    assert result.exit_code == 0, result.output
    argv = exec_argv(parse_unit((home.units / systemd.UNIT_NAME).read_text()), {})
    assert argv[-2:] == ["--db", "postgresql://db/x"]
    assert "systemctl --user restart wanwitness" in result.output


def test_uninstall(home):
    assert invoke("install", "--user", "--unit-dir", str(home.units)).exit_code == 0
    result = invoke("uninstall", "--user", "--unit-dir", str(home.units))
    assert result.exit_code == 0, result.output
    assert not (home.units / systemd.UNIT_NAME).exists()
    lines = result.output.splitlines()
    commands = [line.strip() for line in lines[lines.index("next, run:") + 1:]]
    assert commands == ["systemctl --user disable --now wanwitness", "systemctl --user daemon-reload"]
    msg = user_error(invoke("uninstall", "--user", "--unit-dir", str(home.units)))
    assert "nothing to uninstall" in msg


def test_uninstall_leaves_a_foreign_unit_alone(home):
    path = write_config(home.units / systemd.UNIT_NAME, "[Service]\nExecStart=/usr/bin/true\n")
    msg = user_error(invoke("uninstall", "--user", "--unit-dir", str(home.units)))
    assert str(path) in msg
    assert path.read_text() == "[Service]\nExecStart=/usr/bin/true\n"


def test_printed_commands_enable_and_disable_the_unit(home, tmp_path, as_root, outside_home_exe):
    """The printed systemctl commands, run offline on a root directory (`--root`; `--now`
    needs a running manager): enable hooks the unit into multi-user.target, disable after
    uninstall unhooks it."""
    need(SYSTEMCTL)
    root = tmp_path / "root"
    unit_dir = root / "etc" / "systemd" / "system"
    result = invoke("install", "--unit-dir", str(unit_dir))
    assert result.exit_code == 0, result.output
    wants = unit_dir / "multi-user.target.wants" / systemd.UNIT_NAME

    def run(command: str) -> None:
        args = command.split()
        assert args[0] == "systemctl"
        args = [a for a in args[1:] if a != "--now"]
        proc = subprocess.run([SYSTEMCTL, f"--root={root}", *args], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    run("systemctl enable --now wanwitness")
    assert "systemctl enable --now wanwitness" in result.output
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/wanwitness.service"
    result = invoke("uninstall", "--unit-dir", str(unit_dir))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    commands = [line.strip() for line in lines[lines.index("next, run as root:") + 1:]]
    assert commands == ["systemctl disable --now wanwitness", "systemctl daemon-reload"]
    run(commands[0])
    assert not os.path.lexists(wants)


def test_environment_the_service_will_not_see_is_mentioned(home, monkeypatch):
    monkeypatch.setenv("WANWITNESS_DB", "postgresql://db/x")
    result = invoke("install", "--user", "--unit-dir", str(home.units))
    assert result.exit_code == 0, result.output
    assert "WANWITNESS_DB" in result.output and "does not see" in result.output


def test_register_adds_the_group():
    group = click.Group("wanwitness")
    register(group)
    assert group.commands["service"] is service


# --- (c) the unit's ExecStart runs a collector -------------------------------------------

@pytest.mark.parametrize("user_mode", [True, False], ids=["user", "system"])
def test_exec_start_runs_a_collector(tmp_path, user_mode):
    port = free_port()
    config = write_config(tmp_path / "config.toml",
                          f'[broker]\nlisten = "127.0.0.1:{port}"\n[collector]\nlog_level = "info"\n')
    db_path = tmp_path / "x.db"
    text = systemd.render_unit(exe=EXE, config=config, user_mode=user_mode,
                               data_dir=tmp_path if user_mode else systemd.SYSTEM_DATA_DIR,
                               db=f"sqlite:///{db_path}")
    unit = parse_unit(text)
    # The environment systemd would give it: a bare PATH, the unit's Environment=, and for
    # the system unit the credentials directory holding LoadCredential='s copy.
    env = {"PATH": SERVICE_PATH, "LANG": "C.UTF-8",
           "HOME": str(tmp_path / "home") if user_mode else "/"}
    env.update(unit_environment(unit))
    if not user_mode:
        cred_id, _, source = one(unit, "Service", "LoadCredential").partition(":")
        creds = tmp_path / "credentials"
        creds.mkdir()
        shutil.copyfile(source, creds / cred_id)
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    argv = exec_argv(unit, env)
    assert argv[:3] == EXE and "collect" in argv

    log_path = tmp_path / "collector.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = False
        while proc.poll() is None and not ready:
            text_so_far = log_path.read_text(errors="replace")
            ready = "wanwitness collector" in text_so_far and "connected to" in text_so_far
            if ready:
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    pass  # its embedded broker takes connections on the configured port
            else:
                try:
                    proc.wait(0.05)
                except subprocess.TimeoutExpired:
                    pass
        assert ready, f"collector exited with {proc.returncode}:\n{log_path.read_text()}"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_path.read_text(errors="replace")
    assert rc == 0, output
    assert f"store sqlite:///{db_path}" in output
    assert f"embedded broker listening on mqtt://127.0.0.1:{port}," in output
    assert "stopped:" in output
    assert db_path.is_file()
