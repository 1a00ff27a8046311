from pathlib import Path

import pytest

from workbench.config import Settings, project_root
from workbench.errors import ConfigError


def test_defaults_use_the_embedded_stack_in_the_project():
    s = Settings.from_env({})
    assert s.embedded_broker and s.embedded_database
    assert s.state_dir == project_root() / ".workbench"
    assert s.topics == (
        "telemetry.raw",
        "telemetry.clean",
        "telemetry.alerts",
        "telemetry.deadletter",
        "telemetry.chaos",
    )


def test_every_field_is_read_from_its_environment_variable():
    env = {
        "WORKBENCH_BOOTSTRAP_SERVERS": "kafka:9092",
        "WORKBENCH_DATABASE_URL": "postgresql://u:p@db:5432/w",
        "WORKBENCH_STATE_DIR": "/tmp/somewhere",
        "WORKBENCH_TOPIC_RAW": "raw",
        "WORKBENCH_PARTITIONS": "12",
        "WORKBENCH_BATCH_MAX_WAIT_S": "0.25",
        "WORKBENCH_BROKER_PORT": "19092",
    }
    s = Settings.from_env(env)
    assert s.bootstrap_servers == "kafka:9092" and not s.embedded_broker
    assert s.database_url == "postgresql://u:p@db:5432/w" and not s.embedded_database
    assert s.state_dir == Path("/tmp/somewhere")
    assert (s.topic_raw, s.partitions, s.batch_max_wait_s, s.broker_port) == (
        "raw",
        12,
        0.25,
        19092,
    )


def test_overrides_win_over_the_environment():
    s = Settings.from_env({"WORKBENCH_PARTITIONS": "2"}, partitions=6)
    assert s.partitions == 6


def test_empty_url_means_embedded():
    assert Settings.from_env({"WORKBENCH_DATABASE_URL": " "}).embedded_database


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WORKBENCH_PARTITIONS", "0", "whole number >= 1"),
        ("WORKBENCH_BATCH_SIZE", "1e3", "whole number >= 1"),
        ("WORKBENCH_BROKER_PORT", "70000", "TCP port"),
        ("WORKBENCH_CONNECT_TIMEOUT_S", "-1", "number > 0"),
        ("WORKBENCH_DATABASE_URL", "mysql://x@y/z", "postgresql://"),
        ("WORKBENCH_TOPIC_RAW", "  ", "non-empty"),
    ],
)
def test_bad_values_name_the_variable_and_what_was_expected(name, value, expected):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({name: value})
    assert name in str(err.value) and expected in str(err.value)


def test_the_state_horizons_are_settings_that_reach_the_engine():
    """The two settings that size a processor's state in memory: read from the environment,
    refused when negative, and handed to the engine (and a checkpoint's header) as given."""
    from workbench.errors import ConfigError
    from workbench.processor.state import EngineConfig
    from workbench.processor.windows import WindowConfig

    s = Settings.from_env({"WORKBENCH_ROLLING_HISTORY_S": "120",
                           "WORKBENCH_CORRECTION_HORIZON_S": "0"})  # fmt: skip
    assert (s.rolling_history_s, s.correction_horizon_s) == (120.0, 0.0)
    assert Settings.from_env({}).rolling_history_s == 60.0
    with pytest.raises(ConfigError, match="WORKBENCH_ROLLING_HISTORY_S='-1'"):
        Settings.from_env({"WORKBENCH_ROLLING_HISTORY_S": "-1"})
    config = EngineConfig(WindowConfig(correction_horizon_s=s.correction_horizon_s),
                          rolling_history_s=s.rolling_history_s)  # fmt: skip
    assert config.header()["correction_horizon_s"] == 0.0
    assert config.header()["rolling_history_s"] == 120.0


def test_a_processor_builds_its_engine_from_the_settings():
    from workbench.bench import NullSink
    from workbench.kafka import Endpoint
    from workbench.processor.loop import Processor

    s = Settings.from_env({"WORKBENCH_ROLLING_HISTORY_S": "90",
                           "WORKBENCH_CORRECTION_HORIZON_S": "30"})  # fmt: skip
    processor = Processor(s, Endpoint("127.0.0.1:9"), "postgresql://nobody@127.0.0.1:9/none",
                          sink=NullSink())  # fmt: skip
    try:
        assert processor.config.rolling_history_s == 90.0
        assert processor.config.windows.correction_horizon_s == 30.0
    finally:
        processor.close()
