"""The command line as a user meets it: exit codes, one-line errors.

In the test process (testing/cli.py: `main()` under click's CliRunner) unless a test needs
a separate process; those say why."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import sys

import click
import pytest

from testing.cli import one_clear_line
from wanwitness import __version__
from wanwitness import cli as cli_module
from wanwitness import config as cfg


def _all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, prefix + (name,))


@pytest.mark.integration
def test_python_m_wanwitness_itself_version_and_a_one_line_error(ww):
    """A process of its own: `python -m wanwitness` (its __main__, a real exit status), and
    the in-process runs of the other tests print and exit the same as it does."""
    version = ww.process("--version")
    assert (version.returncode, version.stdout, version.stderr) == (0, f"wanwitness, version {__version__}\n", "")
    inproc = ww("--version")
    assert (inproc.returncode, inproc.stdout, inproc.stderr) == (0, version.stdout, "")
    error = ww.process("verify", "--db", "nonsense")
    assert error.returncode == 2 and error.stdout == ""
    assert one_clear_line(error).startswith("wanwitness: --db: database URL 'nonsense' is not a database URL")
    inproc = ww("verify", "--db", "nonsense")
    assert (inproc.returncode, inproc.stdout, inproc.stderr) == (2, "", error.stderr)


def test_an_in_process_run_leaves_no_trace_and_reads_no_user_config(ww, tmp_path):
    def state():
        return os.getcwd(), dict(os.environ), sys.stdout, sys.stderr, logging.getLogger().handlers[:]
    before = state()
    proc = ww("config", "path", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == f"{ww.home / '.config' / 'wanwitness' / 'config.toml'}\n"
    assert state() == before


def test_every_command_has_help_text():
    missing = [" ".join(path) for path, command in _all_commands(cli_module.cli)
               if not (command.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("content,expected", [
    ('[broker]\nlisten = "nowhere"\n', "[broker] listen: expected HOST:PORT"),
    ('[broker]\nlisen = "127.0.0.1:1883"\n', "unknown key [broker] lisen"),
    ('[brokr]\nurl = ""\n', "unknown section [brokr]"),
    ('[collector]\nbatch_max = "many"\n', "[collector] batch_max: expected an integer"),
    ('[store]\nurl = 5\n', "[store] url: expected a string"),
    ("[broker\nurl = 1\n", "config error:"),
])
def test_a_bad_config_file_is_one_line_naming_the_key_and_exit_2(ww, tmp_path, content, expected):
    path = tmp_path / "config.toml"
    path.write_text(content)
    proc = ww("--config", str(path), "verify", "--db", f"sqlite:///{tmp_path}/x.db")
    assert proc.returncode == 2
    line = one_clear_line(proc)
    assert expected in line and str(path) in line


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[broker]\nprefix = "fromfile"\n')
    conf = cfg.load(path, env={"WANWITNESS_BROKER_PREFIX": "fromenv"})
    assert conf.broker.prefix == "fromenv"
    assert cfg.load(path, env={}).broker.prefix == "fromfile"
    with pytest.raises(cfg.ConfigError, match="environment WANWITNESS_BROKER_URL"):
        cfg.load(path, env={"WANWITNESS_BROKER_URL": "http://x"})


def test_config_path_and_example(ww, tmp_path):
    proc = ww("config", "path", env={"WANWITNESS_CONFIG": str(tmp_path / "c.toml")})
    assert proc.returncode == 0 and proc.stdout.strip() == str(tmp_path / "c.toml")
    proc = ww("config", "path", env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert proc.stdout.strip() == str(tmp_path / "xdg" / "wanwitness" / "config.toml")
    example = ww("config", "example").stdout
    import re
    lines = [re.sub(r"^# (\w+ = )", r"\1", line) for line in example.splitlines()]
    (tmp_path / "ex.toml").write_text("\n".join(lines) + "\n")
    assert sum(1 for line in lines if " = " in line and not line.startswith("#")) >= 12
    # Every key of the example, uncommented, is a valid config.
    cfg.load(tmp_path / "ex.toml", env={})


def test_agent_add_writes_the_board_config_and_refuses_duplicates(ww, tmp_path):
    db = f"sqlite:///{tmp_path}/w.db"
    out = tmp_path / "kitchen.json"
    proc = ww("agent", "add", "kitchen", "--db", db, "--out", str(out), "--broker-host",
              "192.0.2.10", "--broker-port", "1884", "--wifi-ssid", "home")
    assert proc.returncode == 0, proc.stderr
    board = json.loads(out.read_text())
    assert board["id"] == "kitchen" and board["broker"]["host"] == "192.0.2.10"
    assert board["broker"]["port"] == 1884 and board["broker"]["user"] == "kitchen"
    assert len(board["broker"]["password"]) >= 24 and board["wifi"]["ssid"] == "home"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds a password
    again = ww("agent", "add", "kitchen", "--db", db, "--out", str(tmp_path / "k2.json"))
    assert again.returncode == 2 and "already exists" in one_clear_line(again)
    bad = ww("agent", "add", "Kitchen/1", "--db", db)
    assert bad.returncode == 2 and "agent name" in one_clear_line(bad)
    listed = ww("agent", "list", "--db", db)
    assert "kitchen" in listed.stdout and "never" in listed.stdout


def test_agent_add_names_the_brokers_to_fail_over_to(ww, tmp_path):
    db = f"sqlite:///{tmp_path}/w.db"
    out = tmp_path / "hall.json"
    proc = ww("agent", "add", "hall", "--db", db, "--out", str(out), "--broker-host", "192.0.2.10",
              "--broker-port", "1884", "--broker-other", "192.0.2.11",
              "--broker-other", "broker3.example.net:8883")
    assert proc.returncode == 0, proc.stderr
    assert "tries 192.0.2.11:1884, then broker3.example.net:8883" in proc.stdout
    board = json.loads(out.read_text())
    assert board["broker"]["others"] == [{"host": "192.0.2.11", "port": 1884},
                                         {"host": "broker3.example.net", "port": 8883}]
    for bad, why in (("a b", "expected HOST or HOST:PORT"), ("host:99999", "the port must be 1-65535"),
                     ("[::1]:1883", "expected HOST or HOST:PORT")):
        refused = ww("agent", "add", "other", "--db", db, "--out", str(tmp_path / "o.json"),
                     "--broker-other", bad)
        assert refused.returncode == 2 and why in one_clear_line(refused), refused.stderr
    many = ww("agent", "add", "other", "--db", db, *sum((["--broker-other", f"h{i}"] for i in range(4)), []))
    assert many.returncode == 2 and "at most 3 more brokers" in one_clear_line(many)


def test_broker_mosquitto_config_writes_files_for_every_agent(ww, tmp_path):
    db = f"sqlite:///{tmp_path}/w.db"
    for name in ("a1", "a2"):
        assert ww("agent", "add", name, "--db", db, "--out", str(tmp_path / f"{name}.json")).returncode == 0
    proc = ww("broker", "mosquitto-config", "--db", db, "--out", str(tmp_path / "mq"))
    assert proc.returncode == 0, proc.stderr
    passwd = (tmp_path / "mq" / "passwd").read_text()
    assert passwd.count("$7$") == 3  # two agents and the collector
    acl = (tmp_path / "mq" / "acl").read_text()
    writes = sorted(line for line in acl.splitlines() if line.startswith("pattern write"))
    assert writes == [f"pattern write wanwitness/%u/{t}" for t in ("hb", "rec", "status")]
    assert "pattern read wanwitness/%u/ack" in acl and "/%u/#" not in acl
    # several collectors: a broker user each, the same password, and how to start them
    three = ww("broker", "mosquitto-config", "--db", db, "--out", str(tmp_path / "mq3"),
               "--collectors", "3")
    assert three.returncode == 0, three.stderr
    users = [ln.split(":")[0] for ln in (tmp_path / "mq3" / "passwd").read_text().splitlines()]
    assert users == ["wanwitness-collector", "wanwitness-collector-2", "wanwitness-collector-3",
                     "a1", "a2"]
    assert "WANWITNESS_BROKER_USERNAME=wanwitness-collector-2 wanwitness collect --shared" in three.stdout
    bad = ww("broker", "mosquitto-config", "--db", db, "--collectors", "0")
    assert bad.returncode == 2 and "--collectors" in bad.stderr


@pytest.mark.integration
def test_collect_on_a_busy_port_says_so_and_how_to_choose_another(ww, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        # a process: collect calls logging.basicConfig, binds a port and starts threads
        proc = ww.process("collect", "--db", f"sqlite:///{tmp_path}/w.db", "--listen", f"127.0.0.1:{port}",
                          "--no-web")
    assert proc.returncode == 2
    line = [x for x in proc.stderr.splitlines() if x.startswith("wanwitness:")][0]
    assert f"127.0.0.1:{port} is already in use" in line
    assert "--listen 127.0.0.1:11883" in line and "[broker] listen" in line
    assert f"--broker mqtt://127.0.0.1:{port}" in line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,expected", [
    (("verify", "--db", "nonsense"), "not a database URL"),
    (("verify", "--db", "mysql://x/y"), "unsupported database"),
    (("verify", "--db", "postgresql://nobody@127.0.0.1:1/x"), "cannot open the database"),
    (("outages", "--since", "yesterday-ish"), "--since 'yesterday-ish': not a date/time"),
    pytest.param(("collect", "--broker", "http://example"), "--broker: expected mqtt://",
                 marks=pytest.mark.integration),  # a process (see below)
    (("agent", "revoke", "ghost"), "no agent named 'ghost'"),
])
def test_wrong_arguments_give_one_clear_line_and_exit_2(ww, tmp_path, args, expected):
    if "--db" not in args:
        args = args + ("--db", f"sqlite:///{tmp_path}/w.db")
    # collect calls logging.basicConfig (process-wide) before it checks --broker: a process
    proc = ww.process(*args) if args[0] == "collect" else ww(*args)
    assert proc.returncode == 2
    assert expected in one_clear_line(proc)


@pytest.mark.parametrize("command", [("verify",), ("outages",), ("quarantine", "list"),
                                     ("ticket", "list")])
def test_reading_commands_refuse_a_store_that_is_not_there(ww, tmp_path, command):
    """A mistyped --db path must not become a new, empty store that reports "ok"."""
    typo = tmp_path / "wanwitnes.db"
    proc = ww(*command, "--db", f"sqlite:///{typo}")
    assert proc.returncode == 2
    line = one_clear_line(proc)
    assert line.startswith("wanwitness: --db: no store at ") and str(typo) in line
    assert not typo.exists() and list(tmp_path.iterdir()) == []


def test_reading_commands_refuse_an_empty_postgresql_database(ww, pg_url):
    proc = ww("outages", "--db", pg_url)
    assert proc.returncode == 2
    assert "holds no wanwitness store" in one_clear_line(proc)
    from wanwitness.store import open_store
    open_store(pg_url).dispose()          # a store made by a writing command ...
    assert ww("outages", "--db", pg_url).returncode == 0   # ... is then read


def test_verify_prints_the_chains_and_checkpoints_or_names_the_broken_link(ww, tmp_path):
    from tests.test_ingest import batch
    from wanwitness.collector.agents import add_agent
    from wanwitness.collector.ingest import Ingestor, Message
    from wanwitness.store import open_store
    db = f"sqlite:///{tmp_path}/w.db"
    st = open_store(db)
    add_agent(st, "a1")
    Ingestor(st).ingest([Message("wanwitness/a1/rec", batch([1, 2, 3]), 1000)])
    ok = ww("verify", "--db", db)
    assert ok.returncode == 0 and ok.stdout == "ok: 3 link(s) in 1 agent chain(s); 0 checkpoint(s); 0 stamp(s)\n"
    made = ww("ledger", "checkpoint", "--db", db)
    assert made.returncode == 0 and made.stdout.startswith("made checkpoint 1 at ")
    assert ": 1 agent(s), 3 link(s), root " in made.stdout
    again = ww("ledger", "checkpoint", "--db", db)
    assert again.returncode == 0 and again.stdout.startswith("unchanged since checkpoint 1 at ")
    ok = ww("ledger", "verify", "--db", db)
    assert ok.returncode == 0 and "1 checkpoint(s), the newest 1 at " in ok.stdout
    with st.engine.begin() as c:
        c.exec_driver_sql("UPDATE records SET body = replace(body, 'stats', 'stata') WHERE seq = 2")
    st.dispose()
    broken = ww("ledger", "verify", "--db", db)
    assert broken.returncode == 1
    assert broken.stderr.startswith("BROKEN at agent a1 link 2 (seq 2): hash mismatch")
    assert "Traceback" not in broken.stderr


def test_every_config_section_has_its_typed_form_with_the_same_keys(tmp_path):
    """SCHEMA (what the file may hold) and the typed sections (what the code reads) list
    the same keys: a key added to one and not the other fails here, not at run time."""
    import dataclasses
    conf = cfg.Config(tmp_path / "c.toml", {s: {k: d for k, (_c, d, _h) in keys.items()}
                                             for s, keys in cfg.SCHEMA.items()})
    assert set(cfg.SECTIONS) == set(cfg.SCHEMA)
    for section, keys in cfg.SCHEMA.items():
        typed = getattr(conf, section)
        assert [f.name for f in dataclasses.fields(typed)] == list(keys), section
        for key in keys:
            assert getattr(typed, key) == conf.get(section, key)


def test_agent_revoke_tells_a_mosquitto_user_how_to_disconnect_it(ww, tmp_path):
    db = f"sqlite:///{tmp_path}/w.db"
    assert ww("agent", "add", "porch", "--db", db, "--out", str(tmp_path / "p.json")).returncode == 0
    embedded = ww("agent", "revoke", "porch", "--db", db)
    assert embedded.returncode == 0 and "mosquitto" not in embedded.stdout.lower()
    conf = tmp_path / "c.toml"
    conf.write_text('[broker]\nurl = "mqtt://192.0.2.5:1883"\n')
    external = ww("agent", "revoke", "porch", "--db", db, env={"WANWITNESS_CONFIG": str(conf)})
    assert external.returncode == 0
    assert "wanwitness broker mosquitto-config" in external.stdout and "reload" in external.stdout


def test_broker_limits_from_the_config_reach_the_mosquitto_config(ww, tmp_path):
    db = f"sqlite:///{tmp_path}/w.db"
    conf = tmp_path / "c.toml"
    conf.write_text('[broker]\nlisten = "127.0.0.1:1884"\nmax_packet = 5000\nmax_connections = 10\n')
    env = {"WANWITNESS_CONFIG": str(conf)}
    proc = ww("broker", "mosquitto-config", "--db", db, "--out", str(tmp_path / "mq"), env=env)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "mq" / "wanwitness.conf").read_text()
    assert "max_packet_size 5000\n" in text and "listener 1884 127.0.0.1\n" in text
    assert "max_connections 10\n" in text
    bad = tmp_path / "bad.toml"
    bad.write_text("[broker]\nmax_packet = 10\n")
    refused = ww("broker", "mosquitto-config", "--db", db, env={"WANWITNESS_CONFIG": str(bad)})
    assert refused.returncode == 2 and "[broker] max_packet" in one_clear_line(refused)
