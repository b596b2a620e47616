"""Home Assistant discovery without a broker: the config keys, the topics, our schema."""

from __future__ import annotations

import jsonschema
import pytest

from tests.ha_discovery_schema import SENSOR
from wanwitness.collector.homeassistant import Topics


@pytest.mark.parametrize("value", ["http://ha:1883", "mqtt://", "mqtt://ha:port"])
def test_bad_broker_is_one_line_naming_the_key(ww, tmp_path, value):
    conf = tmp_path / "config.toml"
    conf.write_text(f'[homeassistant]\nbroker = "{value}"\n')
    result = ww("--config", str(conf), "collect", "--no-web")
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "[homeassistant] broker" in lines[0], result.stderr


def test_topics_name_agents_back():
    topics = Topics("wanwitness", "homeassistant")
    topic = topics.config("binary_sensor", "my-agent_2", "internet")
    assert topic == "homeassistant/binary_sensor/wanwitness_my-agent_2/internet/config"
    assert topics.marked_agent(topic) == "my-agent_2"
    assert topics.marked_agent("homeassistant/binary_sensor/wanwitness/collector/config") is None


GOOD_SENSOR = {"unique_id": "u", "state_topic": "a/b", "device_class": "duration",
               "unit_of_measurement": "s", "state_class": "total"}


@pytest.mark.parametrize("change", [
    {"object_id": "x"},                                           # deprecated: default_entity_id
    {"unit_of_measurement": "sec"},                               # not a duration unit
    {"device_class": "enum", "unit_of_measurement": None},        # enum without options
    {"options": ["a"]},                                           # options without enum
    {"device_class": "timestamp", "unit_of_measurement": None},   # a timestamp has no state class
    {"device_class": "monetary", "unit_of_measurement": "euro"},  # not ISO 4217
    {"state_class": "measurement", "last_reset_value_template": "{{ 1 }}"},
    {"default_entity_id": "binary_sensor.x"},                     # another domain
    {"state_topic": None},                                        # required
])
def test_the_schema_refuses_what_the_docs_do_not_allow(change):
    doc = {k: v for k, v in {**GOOD_SENSOR, **change}.items() if v is not None}
    jsonschema.validate(GOOD_SENSOR, SENSOR)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SENSOR)
