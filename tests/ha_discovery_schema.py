"""A JSON Schema of Home Assistant's MQTT discovery payloads, for the platforms we publish.

Written from Home Assistant's documentation (home-assistant.io, as of 2025.10+):
- integrations/mqtt/ "MQTT Discovery": the config topic
  `<discovery_prefix>/<component>/[<node_id>/]<object_id>/config` (node and object ids
  of `[a-zA-Z0-9_-]`), the `device` map (`identifiers` or `connections` required;
  `name`, `manufacturer`, `model`, `sw_version`, `hw_version`, `via_device`,
  `configuration_url`, ...), the `origin` map (`name` required, `sw_version`,
  `support_url`), `unique_id`, `default_entity_id` (`<domain>.<object id>`; it replaced
  the deprecated `object_id` in 2025.10), `availability` (a list of maps with `topic`
  required) and `availability_mode` (`all`, `any`, `latest`), `entity_category`
  (`config`, `diagnostic`), `qos`.
- integrations/binary_sensor.mqtt/: `state_topic` required; `payload_on`, `payload_off`,
  `value_template`, `device_class`; integrations/binary_sensor/ lists the device classes.
- integrations/sensor.mqtt/: `state_topic` required; `unit_of_measurement`,
  `state_class`, `options` (with device class enum only), `last_reset_value_template`
  (state class total only), `suggested_display_precision`; integrations/sensor/ lists the
  device classes with the units each accepts and which state classes are allowed (enum
  and timestamp: no unit and no state class; monetary: an ISO 4217 currency and at most
  state class total).
- integrations/event.mqtt/: `state_topic` and `event_types` required; device classes
  `button`, `doorbell`, `motion`.
"""

from __future__ import annotations

from typing import Any

TOPIC_RE = r"^[^/#+]+(/[^/#+]+)*/(binary_sensor|sensor|event)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$"

BINARY_SENSOR_CLASSES = [
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window"]

SENSOR_CLASSES = [
    "absolute_humidity", "apparent_power", "aqi", "area", "atmospheric_pressure", "battery",
    "blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide", "conductivity",
    "current", "data_rate", "data_size", "date", "distance", "duration", "energy",
    "energy_distance", "energy_storage", "enum", "frequency", "gas", "humidity", "illuminance",
    "irradiance", "moisture", "monetary", "nitrogen_dioxide", "nitrogen_monoxide",
    "nitrous_oxide", "ozone", "ph", "pm1", "pm10", "pm25", "pm4", "power_factor", "power",
    "precipitation", "precipitation_intensity", "pressure", "reactive_energy",
    "reactive_power", "signal_strength", "sound_pressure", "speed", "sulphur_dioxide",
    "temperature", "timestamp", "volatile_organic_compounds",
    "volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate",
    "volume_storage", "water", "weight", "wind_direction", "wind_speed"]

EVENT_CLASSES = ["button", "doorbell", "motion"]
STATE_CLASSES = ["measurement", "measurement_angle", "total", "total_increasing"]

# The units integrations/sensor/ allows for the device classes we use.
UNITS = {
    "duration": ["d", "h", "min", "s", "ms", "µs"],
    "signal_strength": ["dB", "dBm"],
    "data_size": ["bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB",
                  "YB", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"],
}

_DEVICE = {
    "type": "object",
    "properties": {
        "identifiers": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "connections": {"type": "array", "items": {"type": "array", "items": {"type": "string"},
                                                   "minItems": 2, "maxItems": 2}},
        "name": {"type": "string"}, "manufacturer": {"type": "string"},
        "model": {"type": "string"}, "model_id": {"type": "string"},
        "sw_version": {"type": "string"}, "hw_version": {"type": "string"},
        "serial_number": {"type": "string"}, "suggested_area": {"type": "string"},
        "via_device": {"type": "string"},
        "configuration_url": {"type": "string", "pattern": "^(https?|homeassistant)://"},
    },
    "anyOf": [{"required": ["identifiers"]}, {"required": ["connections"]}],
    "additionalProperties": False,
}

_ORIGIN = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1}, "sw_version": {"type": "string"},
                   "support_url": {"type": "string", "pattern": "^https?://"}},
    "required": ["name"],
    "additionalProperties": False,
}

_AVAILABILITY = {
    "type": "array", "minItems": 1,
    "items": {"type": "object",
              "properties": {"topic": {"type": "string", "minLength": 1},
                             "payload_available": {"type": "string"},
                             "payload_not_available": {"type": "string"},
                             "value_template": {"type": "string"}},
              "required": ["topic"], "additionalProperties": False},
}

_COMMON: dict[str, Any] = {
    "name": {"type": ["string", "null"]},
    "unique_id": {"type": "string", "minLength": 1},
    "device": _DEVICE,
    "origin": _ORIGIN,
    "availability": _AVAILABILITY,
    "availability_topic": {"type": "string"},
    "availability_mode": {"enum": ["all", "any", "latest"]},
    "entity_category": {"enum": ["config", "diagnostic"]},
    "enabled_by_default": {"type": "boolean"},
    "icon": {"type": "string"},
    "qos": {"enum": [0, 1, 2]},
    "state_topic": {"type": "string", "minLength": 1, "pattern": "^[^#+]+$"},
    "value_template": {"type": "string"},
    "json_attributes_topic": {"type": "string"},
    "json_attributes_template": {"type": "string"},
    "encoding": {"type": "string"},
}

# object_id is deprecated (2025.10): not allowed here, default_entity_id instead.
_NOT_BOTH_AVAILABILITY = {"not": {"required": ["availability", "availability_topic"]}}


def _platform(domain: str, properties: dict[str, Any], required: list[str],
              rules: list[dict[str, Any]]) -> dict[str, Any]:
    props = {**_COMMON, **properties,
             "default_entity_id": {"type": "string", "pattern": rf"^{domain}\.[a-z0-9_]+$"}}
    return {"type": "object", "properties": props, "required": ["unique_id", *required],
            "additionalProperties": False, "allOf": [_NOT_BOTH_AVAILABILITY, *rules]}


def _if_class(cls: str, then: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"properties": {"device_class": {"const": cls}}, "required": ["device_class"]},
            "then": then}


BINARY_SENSOR = _platform("binary_sensor", {
    "device_class": {"enum": BINARY_SENSOR_CLASSES},
    "payload_on": {"type": "string"}, "payload_off": {"type": "string"},
    "expire_after": {"type": "integer", "minimum": 1}, "off_delay": {"type": "integer", "minimum": 1},
    "force_update": {"type": "boolean"},
}, ["state_topic"], [])

SENSOR = _platform("sensor", {
    "device_class": {"enum": SENSOR_CLASSES},
    "state_class": {"enum": STATE_CLASSES},
    "unit_of_measurement": {"type": "string", "minLength": 1},
    "options": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
    "last_reset_value_template": {"type": "string"},
    "suggested_display_precision": {"type": "integer", "minimum": 0},
    "expire_after": {"type": "integer", "minimum": 1}, "force_update": {"type": "boolean"},
}, ["state_topic"], [
    # options only with device class enum, and enum needs them
    {"if": {"required": ["options"]},
     "then": {"properties": {"device_class": {"const": "enum"}}, "required": ["device_class"]}},
    _if_class("enum", {"required": ["options"],
                       "not": {"anyOf": [{"required": ["unit_of_measurement"]},
                                         {"required": ["state_class"]}]}}),
    _if_class("timestamp", {"not": {"anyOf": [{"required": ["unit_of_measurement"]},
                                              {"required": ["state_class"]}]}}),
    *[_if_class(cls, {"properties": {"unit_of_measurement": {"enum": units}},
                      "required": ["unit_of_measurement"]}) for cls, units in UNITS.items()],
    _if_class("monetary", {"properties": {"unit_of_measurement": {"pattern": "^[A-Z]{3}$"},
                                          "state_class": {"const": "total"}},
                           "required": ["unit_of_measurement"]}),
    # last_reset only for state class total
    {"if": {"required": ["last_reset_value_template"]},
     "then": {"properties": {"state_class": {"const": "total"}}, "required": ["state_class"]}},
])

EVENT = _platform("event", {
    "device_class": {"enum": EVENT_CLASSES},
    "event_types": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                    "uniqueItems": True},
}, ["state_topic", "event_types"], [])

SCHEMAS = {"binary_sensor": BINARY_SENSOR, "sensor": SENSOR, "event": EVENT}


def schema_for(topic: str) -> dict[str, Any]:
    """The schema of the platform a config topic names (`<prefix>/<component>/.../config`)."""
    return SCHEMAS[topic.split("/")[-4]]
