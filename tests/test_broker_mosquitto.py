"""Generated Mosquitto files (password hashes, ACL, conf.d snippet) on a real Mosquitto 2.x."""

from __future__ import annotations

import base64
import stat
import subprocess
import time
from pathlib import Path

import pytest

from testing.brokers import MOSQUITTO_BIN, ConnectRefused, Mosquitto, MqttClient, free_port
from wanwitness.broker.mosquitto import mosquitto_files, write_mosquitto_config
from wanwitness.broker.passwords import check_password, hash_password, new_secret
from wanwitness.errors import UserError

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO_BIN).exists(), reason="mosquitto is not installed")

PASSWORDS = {"collector": new_secret(), "a": new_secret(), "b": new_secret()}


@pytest.fixture
def broker(tmp_path):
    """Mosquitto running with our generated files, included the way conf.d is."""
    conf_dir = tmp_path / "wanwitness"
    port = free_port()
    write_mosquitto_config(
        conf_dir,
        agents=[("a", hash_password(PASSWORDS["a"])), ("b", hash_password(PASSWORDS["b"]))],
        collector=("collector", hash_password(PASSWORDS["collector"])),
        listen=("127.0.0.1", port),
    )
    # The listener and its limits are the generated file's own.
    m = Mosquitto(tmp_path / "mosquitto", port=port, allow_anonymous=False,
                  extra_conf=f"include_dir {conf_dir}", listener=False)
    m.start()
    yield m
    m.close()


def client(broker, user, client_id=None, **kw) -> MqttClient:
    return MqttClient(broker.url, client_id or f"{user}-{new_secret()[:6]}", username=user,
                      password=PASSWORDS[user], **kw).connect()


def test_our_hash_is_mosquitto_passwd_format(tmp_path):
    pw_file = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw_file), "alice", "s3cret"], check=True)
    hashed = pw_file.read_text().strip().split(":", 1)[1]
    _, seven, iterations, salt_b64, _key = hashed.split("$")
    assert seven == "7"
    ours = hash_password("s3cret", salt=base64.b64decode(salt_b64), iterations=int(iterations))
    assert ours == hashed
    assert check_password("s3cret", hashed)
    assert not check_password("s3cret ", hashed)


def test_check_password_accepts_mosquittos_older_sha512_format(tmp_path):
    pw_file = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-H", "sha512", "-c", "-b", str(pw_file), "bob", "hunter2"], check=True)
    hashed = pw_file.read_text().strip().split(":", 1)[1]
    assert hashed.startswith("$6$")
    assert check_password("hunter2", hashed)
    assert not check_password("hunter3", hashed)


@pytest.mark.parametrize("garbage", ["", "plain", "$7$", "$7$0$AAAA$AAAA", "$7$x$AAAA$AAAA", "$7$101$@@@$AAAA",
                                     "$7$101$AAAA$AAAA", "$6$AAAA", "$9$1$AAAA$AAAA"])
def test_check_password_says_no_to_malformed_hashes(garbage):
    assert check_password("anything", garbage) is False


def test_new_secret_is_random_and_url_safe():
    a, b = new_secret(), new_secret()
    assert a != b and len(a) == 32 and all(c.isalnum() or c in "-_" for c in a)


def test_written_files(tmp_path):
    paths = write_mosquitto_config(tmp_path / "out", [("a", hash_password("a"))], ("collector", hash_password("c")))
    by_name = {p.name: p for p in paths}
    assert set(by_name) == {"passwd", "acl", "wanwitness.conf"}
    assert stat.S_IMODE(by_name["passwd"].stat().st_mode) == 0o600
    conf = by_name["wanwitness.conf"].read_text()
    assert f"password_file {by_name['passwd']}\n" in conf
    assert f"acl_file {by_name['acl']}\n" in conf
    for line in ("allow_anonymous false", "persistence true", "max_queued_messages 100000",
                 "max_inflight_messages 100"):
        assert line + "\n" in conf
    passwd = by_name["passwd"].read_text()
    assert passwd.startswith("collector:$7$101$") and "\na:$7$" in passwd


def test_bad_names_are_user_errors():
    h = hash_password("x")
    with pytest.raises(UserError, match="not a valid agent id"):
        mosquitto_files([("a/b", h)], ("collector", h))
    with pytest.raises(UserError, match="used twice"):
        mosquitto_files([("a", h), ("a", h)], ("collector", h))
    with pytest.raises(UserError, match="used twice"):
        mosquitto_files([("collector", h)], ("collector", h))
    with pytest.raises(UserError, match="format"):
        mosquitto_files([("a", "plaintext")], ("collector", h))
    with pytest.raises(UserError, match="prefix"):
        mosquitto_files([("a", h)], ("collector", h), prefix="ww/#")


def test_wrong_password_unknown_user_and_anonymous_are_refused(broker):
    with pytest.raises(ConnectRefused):
        MqttClient(broker.url, "x1", username="a", password="wrong").connect()
    with pytest.raises(ConnectRefused):
        MqttClient(broker.url, "x2", username="nobody", password=PASSWORDS["a"]).connect()
    with pytest.raises(ConnectRefused):
        MqttClient(broker.url, "x3").connect()
    # ... while the right password (our hash in the password file) is accepted.
    client(broker, "a").close()


def test_agent_publishes_its_records_and_the_collector_receives_them(broker):
    with client(broker, "collector") as col, client(broker, "a") as a:
        assert col.subscribe("wanwitness/#", 1) == 1
        a.publish("wanwitness/a/rec", b'{"seq": 1}', qos=1)
        msg = col.get()
        assert (msg.topic, msg.payload, msg.qos) == ("wanwitness/a/rec", b'{"seq": 1}', 1)


def test_agent_cannot_publish_as_another_agent(broker):
    with client(broker, "collector") as col, client(broker, "a") as a:
        col.subscribe("wanwitness/#", 1)
        a.publish("wanwitness/b/rec", b"forged")
        a.publish("wanwitness/b/status", b"offline", retain=True)
        a.publish("elsewhere/x", b"outside the prefix")
        a.publish("wanwitness/a/rec", b"barrier")  # same client, so it arrives after the others would
        got = col.get_until("wanwitness/a/rec")
        assert [(m.topic, m.payload) for m in got] == [("wanwitness/a/rec", b"barrier")]


def test_agent_reads_only_its_own_ack(broker):
    with client(broker, "collector") as col, client(broker, "a") as a:
        for topic in ("wanwitness/b/ack", "wanwitness/+/ack", "wanwitness/#", "#"):
            a.subscribe(topic, 1)  # may be granted or refused; what matters is what arrives
        col.publish("wanwitness/b/ack", b'{"seq": 7}', retain=True)
        col.publish("wanwitness/b/rec", b"not for A")
        col.publish("wanwitness/a/ack", b'{"seq": 3}', retain=True)
        got = a.get_until("wanwitness/a/ack")
        assert {m.topic for m in got} == {"wanwitness/a/ack"}
        # A later subscriber gets its own retained ack, and only that.
        with client(broker, "a") as a2:
            a2.subscribe("wanwitness/+/ack", 1)
            a2.subscribe("wanwitness/a/ack", 1)
            got = a2.get_until("wanwitness/a/ack")
            assert {(m.topic, m.payload) for m in got} == {("wanwitness/a/ack", b'{"seq": 3}')}


def test_collector_reads_everything_including_wills(broker):
    with client(broker, "collector") as col:
        col.subscribe("wanwitness/#", 1)
        a = client(broker, "a", will=("wanwitness/a/status", b"offline", 1, True))
        with client(broker, "b") as b:
            a.publish("wanwitness/a/rec", b"a1")
            b.publish("wanwitness/b/rec", b"b1")
            a.drop()  # vanishes: Mosquitto publishes A's will
            seen = {(m.topic, m.payload) for m in col.get_until("wanwitness/a/status")}
            seen |= {(m.topic, m.payload) for m in col.drain()}
            if ("wanwitness/b/rec", b"b1") not in seen:
                seen |= {(m.topic, m.payload) for m in col.get_until("wanwitness/b/rec")}
        assert {("wanwitness/a/rec", b"a1"), ("wanwitness/b/rec", b"b1"),
                ("wanwitness/a/status", b"offline")} <= seen


def test_queued_records_survive_a_mosquitto_restart(broker):
    # "persistence true" in the snippet: what waits for an offline collector is not lost
    # when Mosquitto restarts cleanly.
    col = client(broker, "collector", "collector", clean_session=False, manual_ack=True)
    col.subscribe("wanwitness/#", 1)
    col.disconnect()
    with client(broker, "a") as a:
        for i in range(3):
            a.publish("wanwitness/a/rec", f"r{i}")
    broker.stop()
    broker.start()
    col = client(broker, "collector", "collector", clean_session=False, manual_ack=True)
    assert col.session_present
    got = [col.get() for _ in range(3)]
    assert [m.payload for m in got] == [b"r0", b"r1", b"r2"]
    for m in got:
        col.ack(m)
    col.close()


@pytest.fixture
def broker3(tmp_path):
    """The generated files for three collectors (`broker mosquitto-config --collectors 3`)."""
    conf_dir = tmp_path / "wanwitness"
    port = free_port()
    write_mosquitto_config(
        conf_dir, agents=[("a", hash_password(PASSWORDS["a"]))],
        collector=("collector", hash_password(PASSWORDS["collector"])),
        listen=("127.0.0.1", port), collectors=3)
    m = Mosquitto(tmp_path / "mosquitto", port=port, allow_anonymous=False,
                  extra_conf=f"include_dir {conf_dir}", listener=False)
    m.start()
    yield m
    m.close()


def test_three_collectors_each_with_a_user_share_the_records_and_stay_connected(broker3):
    # The snippet binds a client id to its user: three collectors need three users,
    # which --collectors 3 makes (collector, collector-2, collector-3, one password).
    cols = [MqttClient(broker3.url, f"{u}-{new_secret()[:6]}", username=u,
                       password=PASSWORDS["collector"]).connect()
            for u in ("collector", "collector-2", "collector-3")]
    try:
        for c in cols:
            assert c.subscribe("$share/collectors/wanwitness/+/rec", 1) == 1
        with client(broker3, "a") as a:
            for i in range(30):
                a.publish("wanwitness/a/rec", b'{"seq": %d}' % i, qos=1)
            a.publish("wanwitness/a/hb", b"barrier", qos=1)
        got: list[bytes] = []
        deadline = time.monotonic() + 10
        while len(got) < 30 and time.monotonic() < deadline:
            for c in cols:
                got += [m.payload for m in c.drain()]
            time.sleep(0.05)
        assert sorted(got) == sorted(b'{"seq": %d}' % i for i in range(30))   # each once
        assert all(c.client.is_connected() for c in cols)
    finally:
        for c in cols:
            c.close()


def test_two_collectors_on_one_user_push_each_other_off(broker3):
    # Why each collector needs a user of its own: the second login of a user takes the
    # first one's place (use_username_as_clientid), whatever client id it asked for.
    first = client(broker3, "collector")
    try:
        with client(broker3, "collector"):
            deadline = time.monotonic() + 5
            while first.client.is_connected() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not first.client.is_connected()
    finally:
        first.close()


def test_collector_users_are_checked_against_the_agents(tmp_path):
    with pytest.raises(UserError, match="'collector-2' is used twice"):
        mosquitto_files([("collector-2", hash_password("x"))], ("collector", hash_password("y")),
                        collectors=2)
    with pytest.raises(UserError, match="collectors: 0 is not 1..64"):
        mosquitto_files([], ("collector", hash_password("y")), collectors=0)
    files = mosquitto_files([], ("collector", hash_password("y")), collectors=2,
                            directory=tmp_path)
    assert [ln.split(":")[0] for ln in files["passwd"].splitlines()] == ["collector", "collector-2"]
    assert "user collector-2\ntopic readwrite wanwitness/#\n" in files["acl"]
