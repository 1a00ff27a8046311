import json

import fastavro
import pytest

from workbench.schemas import READING, DecodeError, codec_for, schema_dir, sensor_types

RECORD = {
    "machine_id": "m-0042",
    "ts": 1_767_225_600_123,
    "sensor_type": "vibration",
    "value": 2.75,
    "status_code": 3,
    "seq": 99,
}


def test_reading_schema_has_the_fields_of_the_design():
    raw = json.loads((schema_dir() / "reading.avsc").read_text())
    fields = {f["name"]: f["type"] for f in raw["fields"]}
    assert set(fields) >= {"machine_id", "ts", "sensor_type", "value", "status_code", "seq"}
    assert fields["ts"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["value"] == ["null", "double"]
    assert {"temperature", "vibration", "pressure", "battery"} <= set(sensor_types())
    assert "unknown" not in sensor_types()  # the reader default, dead-lettered


def test_round_trip_keeps_every_field_and_millisecond_time():
    assert READING.decode(READING.encode(RECORD)) == RECORD


def test_null_value_round_trips():
    rec = RECORD | {"value": None}
    assert READING.decode(READING.encode(rec))["value"] is None


def test_encoding_is_avro_single_object_encoding():
    data = READING.encode(RECORD)
    assert data[:2] == b"\xc3\x01" and data[2:10] == READING.fingerprint
    # the body is plain Avro that any Avro reader decodes with the schema as written
    from io import BytesIO

    body = fastavro.schemaless_reader(BytesIO(data[10:]), fastavro.parse_schema(READING.raw), None)
    assert body["machine_id"] == "m-0042"


def test_codecs_are_parsed_once():
    assert codec_for("reading") is READING


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no C3 01 marker"),
        (b"\x00\x01\x02", "no C3 01 marker"),
        (b"\xc3\x01" + b"\x00" * 8 + b"abc", "wrong schema"),
        (READING.encode(RECORD)[:14], "corrupt reading body"),
        (READING.encode(RECORD) + b"\x00\x00", "bytes left after the record"),
    ],
)
def test_bad_messages_say_what_is_wrong(data, reason):
    with pytest.raises(DecodeError, match=reason):
        READING.decode(data)


def test_missing_schema_file_is_a_clear_error():
    from workbench.errors import SchemaError

    with pytest.raises(SchemaError, match="no schema file"):
        codec_for("does-not-exist")
