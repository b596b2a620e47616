"""Test tiers, for tests/ and hwtests/.

`./dev check` runs the fast tier, `pytest -m "not integration"`: pure functions, the
agent under MicroPython, SQLite, click's CliRunner. Everything that needs a service or
a privilege, spawns whole programs or runs for seconds is `integration` and runs in
`./dev test` (CI) only. A test is integration when its module is listed here (or marks
itself), or when it uses PostgreSQL (so a machine without one can still run the fast
tier, and fails only where PostgreSQL is needed).
"""

from __future__ import annotations

import pytest

# Shared fixtures: `mosquitto` (a private broker on a free port).
pytest_plugins = ["testing.brokers", "testing.demo"]

INTEGRATION_MODULES = {
    # real brokers, collector processes, kills and restarts
    "test_collect_e2e.py", "test_broker_embedded.py", "test_broker_mosquitto.py", "test_broker_hardening.py",
    "test_collector_log.py", "test_agent_mqtt_client.py", "test_homeassistant.py",
    "test_notify_collect.py",
    # the real agent on the virtual board, end to end
    "test_agent_e2e.py", "test_outbox_powercut.py", "test_virtual_board.py",
    "test_deploy_errors.py", "test_flash.py",
    # root, network namespaces, the outage lab
    "test_agent_probe_net.py", "test_lab_ci.py", "test_lab_interrupt.py", "test_lab_topology.py",
    "test_lab_peers.py",
    # whole `wanwitness` processes, the wheel, systemd
    "test_wheel.py", "test_service.py",
}
PG_FIXTURES = {"pg_admin", "pg_url"}


def _uses_postgresql(item: pytest.Item) -> bool:
    if PG_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("db_url") == "postgresql"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if (item.path.parent.name == "hwtests" or item.path.name in INTEGRATION_MODULES
                or _uses_postgresql(item)):
            item.add_marker(pytest.mark.integration)
