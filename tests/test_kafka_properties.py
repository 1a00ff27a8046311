"""``WORKBENCH_KAFKA_<NAME>``: librdkafka properties read by Settings, checked by librdkafka when
an Endpoint is made, refused where the workbench decides, and never shown when secret."""

import json
import logging
import subprocess

import pytest
from conftest import WORKBENCH, cli_env, isolated_settings

from workbench import kafka
from workbench.config import Settings
from workbench.errors import BrokerUnavailable, ConfigError
from workbench.kafka_properties import KafkaProperties
from workbench.producer import RecordProducer
from workbench.stack import Endpoints

SECRET = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=s3cr3t-value"

CLOUD = {
    "WORKBENCH_BOOTSTRAP_SERVERS": "ns.servicebus.windows.net:9093",
    "WORKBENCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "WORKBENCH_KAFKA_SASL_MECHANISM": "PLAIN",
    "WORKBENCH_KAFKA_SASL_USERNAME": "$ConnectionString",
    "WORKBENCH_KAFKA_SASL_PASSWORD": SECRET,
}


def test_every_workbench_kafka_variable_is_a_property_and_round_trips():
    env = CLOUD | {
        "WORKBENCH_KAFKA_SSL_CA_LOCATION": "probe",
        "WORKBENCH_KAFKA_LOG_LEVEL": "3",  # log_level: one of librdkafka's underscored names
        "WORKBENCH_KAFKA_CLIENT_ID": " ",  # empty: not set
    }
    s = Settings.from_env(env)
    assert s.bootstrap_servers == "ns.servicebus.windows.net:9093"
    assert dict(s.kafka_properties) == {
        "log_level": "3",
        "sasl.mechanism": "PLAIN",
        "sasl.password": SECRET,
        "sasl.username": "$ConnectionString",
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": "probe",
    }
    out = s.to_env()
    assert out["WORKBENCH_KAFKA_LOG_LEVEL"] == "3"
    assert out["WORKBENCH_KAFKA_SASL_PASSWORD"] == SECRET
    assert "WORKBENCH_KAFKA_CLIENT_ID" not in out and "WORKBENCH_KAFKA_PROPERTIES" not in out
    assert Settings.from_env(out) == s
    assert hash(Settings.from_env(out)) == hash(s)


@pytest.mark.parametrize(
    ("variable", "instead"),
    [
        ("WORKBENCH_KAFKA_BOOTSTRAP_SERVERS", "WORKBENCH_BOOTSTRAP_SERVERS"),
        ("WORKBENCH_KAFKA_GROUP_ID", "WORKBENCH_CONSUMER_GROUP"),
        ("WORKBENCH_KAFKA_ENABLE_AUTO_COMMIT", "commits offsets once the sinks hold the data"),
        ("WORKBENCH_KAFKA_ACKS", "once every replica has it"),
        ("WORKBENCH_KAFKA_REQUEST_REQUIRED_ACKS", "once every replica has it"),
    ],
)
def test_what_the_workbench_decides_is_refused_naming_what_decides_it(variable, instead):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({variable: "1"})
    assert str(err.value).startswith(f"{variable}='1' is not valid") and instead in str(err.value)


def test_tls_or_sasl_without_an_external_broker_is_refused():
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"WORKBENCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert "WORKBENCH_KAFKA_SECURITY_PROTOCOL" in str(err.value)
    assert "WORKBENCH_BOOTSTRAP_SERVERS" in str(err.value)
    # plaintext, or tuning, is fine for the embedded broker
    s = Settings.from_env({"WORKBENCH_KAFKA_SECURITY_PROTOCOL": "plaintext",
                           "WORKBENCH_KAFKA_LINGER_MS": "5"})  # fmt: skip
    assert s.embedded_broker and s.kafka_properties["linger.ms"] == "5"


@pytest.mark.parametrize(
    ("properties", "variable", "shown", "expected"),
    [
        ({"foo.bar": "1"}, "WORKBENCH_KAFKA_FOO_BAR", "***",
         'No such configuration property: "foo.bar"'),
        ({"sasl.pasword": "hunter2"}, "WORKBENCH_KAFKA_SASL_PASWORD", "***",
         "property librdkafka knows"),
        ({"security.protocol": "TLS"}, "WORKBENCH_KAFKA_SECURITY_PROTOCOL", "TLS",
         'Invalid value "TLS"'),
        ({"linger.ms": "soon"}, "WORKBENCH_KAFKA_LINGER_MS", "soon", "queue.buffering.max.ms"),
        ({"sasl.mechanism": "PLAN", "security.protocol": "SASL_SSL"},
         "WORKBENCH_KAFKA_SASL_MECHANISM", "PLAN", "Unsupported SASL mechanism: PLAN"),
        ({"security.protocol": "SSL", "ssl.ca.location": "/no/such/ca.pem"},
         "WORKBENCH_KAFKA_SSL_CA_LOCATION", "/no/such/ca.pem", "a file or folder that exists"),
    ],
)  # fmt: skip
def test_a_property_librdkafka_refuses_is_a_config_error_naming_its_variable(
    properties, variable, shown, expected
):
    with pytest.raises(ConfigError) as err:
        kafka.Endpoint("broker:9093", properties)
    message = str(err.value)
    assert message.startswith(f"{variable}='{shown}' is not valid"), message
    assert expected in message and "\n" not in message
    assert "hunter2" not in message


def test_a_secret_is_never_in_an_error_about_it(tmp_path):
    """A key that cannot be loaded: the error names the variable of the key file, and
    neither its passphrase nor an inline key's text is in it."""
    key = tmp_path / "client.key"
    key.write_text("not a key")
    with pytest.raises(ConfigError) as err:
        kafka.Endpoint("broker:9093", {"security.protocol": "SSL", "ssl.key.location": str(key),
                                       "ssl.key.password": "s3cret-pass"})  # fmt: skip
    assert "WORKBENCH_KAFKA_SSL_KEY_LOCATION" in str(err.value)
    assert "s3cret-pass" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        kafka.Endpoint("broker:9093", {"security.protocol": "SSL",
                                       "ssl.key.pem": "-----s3cret-key-text-----"})  # fmt: skip
    assert str(err.value).startswith("WORKBENCH_KAFKA_SSL_KEY_PEM='***' is not valid")
    assert "s3cret-key-text" not in str(err.value)


def test_secrets_are_redacted_in_reprs_and_the_bootstrap_alone_in_messages():
    s = Settings.from_env(CLOUD)
    broker = kafka.Endpoint(s.bootstrap_servers, s.kafka_properties)
    for shown in (repr(s), repr(broker), str(broker), repr(Endpoints(broker, ""))):
        assert SECRET not in shown and "s3cr3t" not in shown
    assert "'sasl.password': '***'" in repr(broker)
    assert "'sasl.username': '$ConnectionString'" in repr(s)
    assert str(broker) == "ns.servicebus.windows.net:9093"
    assert KafkaProperties({"sasl.password": "x"}).redacted() == {"sasl.password": "***"}


def test_nothing_the_clients_log_or_raise_holds_the_password(caplog):
    """librdkafka at its most talkative (debug=all, its configuration dump included), a
    broker that is not there: the password is in no log line and not in the error."""
    broker = kafka.Endpoint("127.0.0.1:1", {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": "me", "sasl.password": SECRET, "debug": "all",
    })  # fmt: skip
    with caplog.at_level(logging.DEBUG), pytest.raises(BrokerUnavailable) as err:
        kafka.check_broker(broker, timeout_s=1)
    assert "sasl.password" in caplog.text  # the dump was logged ...
    assert SECRET not in caplog.text and "s3cr3t" not in caplog.text  # ... without it
    assert "127.0.0.1:1" in str(err.value) and SECRET not in str(err.value)


def test_a_client_made_from_bare_bootstrap_servers_is_refused():
    """A string carries no properties: a call site that passes one fails at once, saying
    what to pass, instead of talking to a cloud broker without its credentials."""
    with pytest.raises(TypeError, match=r"Endpoints\.broker"):
        RecordProducer("127.0.0.1:9", "t", "r")
    with pytest.raises(TypeError, match=r"Endpoints\.broker"):
        kafka.make_consumer("127.0.0.1:9", "g", 6000)
    with pytest.raises(TypeError, match=r"kafka\.Endpoint"):
        Endpoints("127.0.0.1:9", "")


def test_status_shows_the_properties_with_secrets_hidden(tmp_path):
    cloud = Settings.from_env(CLOUD).kafka_properties
    settings = isolated_settings(tmp_path / "state", bootstrap_servers="127.0.0.1:1",
                                 database_url="postgresql://u@127.0.0.1:1/x",
                                 connect_timeout_s=1.0, kafka_properties=cloud)  # fmt: skip
    for args in (["status"], ["status", "--json"]):
        proc = subprocess.run([WORKBENCH, *args], env=cli_env(settings), capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 1  # nothing answers
        assert SECRET not in proc.stdout + proc.stderr and "s3cr3t" not in proc.stdout
    assert json.loads(proc.stdout)["broker"]["properties"] == {
        "sasl.mechanism": "PLAIN",
        "sasl.password": "***",
        "sasl.username": "$ConnectionString",
        "security.protocol": "SASL_SSL",
    }


def test_a_misspelt_property_stops_any_command_with_one_line(tmp_path):
    settings = isolated_settings(tmp_path / "state")
    env = cli_env(settings, WORKBENCH_KAFKA_LINGER_MX="5")
    proc = subprocess.run([WORKBENCH, "status"], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        "workbench: error: WORKBENCH_KAFKA_LINGER_MX='***' is not valid: expected a property "
        'librdkafka knows (No such configuration property: "linger.mx"; see its '
        "CONFIGURATION.md)\n"
    )
