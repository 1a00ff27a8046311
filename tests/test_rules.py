"""Unit tests of the alert rules file: the shipped files load, bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.processor.rules import Rule, RulesError, RuleSet, load_rules, parse_rules, rules_dir

HOT = """
[[rule]]
name = "hot"
kind = "threshold"
sensor = "temperature"
above = 30.0
"""


def write(tmp_path: Path, text: str, name: str = "rules.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rule_toml(**fields: object) -> str:
    """One [[rule]] table; a value of None leaves the field out."""
    lines = ["[[rule]]"]
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, str) and not value.startswith("["):
            value = f'"{value}"'
        elif isinstance(value, bool):
            value = str(value).lower()
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def load_error(tmp_path: Path, text: str) -> RulesError:
    path = write(tmp_path, text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert str(path) in message, message
    return info.value


def assert_names(exc: RulesError, *words: str) -> None:
    message = str(exc)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"\x00\x01\xff\xfe", ["not UTF-8", "0xff", "position 2"]), (b"", ["empty"]),
     (b"# comments only\n", ["empty"])],
)  # fmt: skip
def test_a_file_that_is_not_a_rules_file_is_one_line(tmp_path, content, words):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert_names(info.value, *words)


def test_a_directory_as_rules_file_is_one_line(tmp_path):
    with pytest.raises(RulesError, match="directory"):
        load_rules(tmp_path)


# --- the shipped files -------------------------------------------------------------------


def test_rules_dir_holds_the_shipped_files():
    assert (rules_dir() / "default.toml").is_file()
    assert (rules_dir() / "edge.toml").is_file()


def test_default_rules_load_eight_rules_and_the_model_one_of_them_reads():
    rs = load_rules()
    assert isinstance(rs, RuleSet)
    assert len(rs.rules) == 8
    assert all(isinstance(r, Rule) for r in rs.rules)
    assert {r.name for r in rs.rules} == {
        "spike",
        "runaway",
        "shutdown",
        "level-shift",
        "stuck-sensor",
        "battery-low",
        "no-data",
        "unexplained",
    }
    assert rs.source.endswith("default.toml")
    assert rs.uses_model and "current" in rs.model.load_sensors
    assert "battery" not in rs.modelled_sensors  # a node's power says nothing of its process


def test_default_rules_carry_validation_limits():
    v = load_rules().validation
    assert v.ranges["temperature"] == (-100.0, 1000.0)
    assert v.ranges["battery"] == (0.0, 100.0)
    assert v.max_future_s == 7 * 86_400
    assert v.min_ts_ms == 946_684_800_000  # 2000-01-01T00:00Z


def test_default_spike_rule_is_a_transient_alone_rule():
    spike = next(r for r in load_rules().rules if r.name == "spike")
    assert spike.kind == "anomaly"
    assert spike.max_breaches == 2
    assert spike.alone_s == 3.0
    assert spike.alone_score == 5.0
    assert spike.detects == ("spike",)


def test_default_shutdown_rule_is_per_machine():
    shutdown = next(r for r in load_rules().rules if r.name == "shutdown")
    assert shutdown.per_machine
    assert shutdown.status == (2,)
    assert shutdown.severity == "critical"


def test_edge_rules_are_temperature_above_30_and_battery_below_10():
    rs = load_rules(rules_dir() / "edge.toml")
    by_name = {r.name: r for r in rs.rules}
    assert len(rs.rules) == 2
    hot, flat = by_name["temperature-high"], by_name["battery-low"]
    assert (hot.kind, hot.sensors, hot.above, hot.below) == (
        "threshold",
        ("temperature",),
        30.0,
        None,
    )
    assert (flat.kind, flat.sensors, flat.above, flat.below) == (
        "threshold",
        ("battery",),
        None,
        10.0,
    )


def test_edge_rules_take_the_file_defaults_but_one_low_battery_reading_opens():
    hot, battery = load_rules("edge").rules
    assert (hot.open_after, hot.close_after) == (3, 5)
    assert (battery.open_after, battery.close_after) == (1, 5)  # one reading every 10 s


def test_load_rules_by_bare_name_picks_the_shipped_file():
    rs = load_rules("edge")
    assert rs.source == str(rules_dir() / "edge.toml")
    assert [r.name for r in rs.rules] == ["temperature-high", "battery-low"]


def test_load_rules_none_is_default():
    assert load_rules(None) == load_rules(rules_dir() / "default.toml")


# --- parsing a good file ----------------------------------------------------------------


def test_rule_defaults(tmp_path):
    rule = load_rules(write(tmp_path, HOT)).rules[0]
    assert rule == Rule("hot", "threshold", ("temperature",), above=30.0)
    assert (rule.open_after, rule.close_after, rule.severity) == (3, 5, "warning")
    assert rule.alone_s is None and rule.alone_score == 4.0


def test_defaults_table_applies_to_every_rule(tmp_path):
    text = '[defaults]\nopen_after = 2\nclose_after = 7\nseverity = "critical"\n' + HOT
    rule = load_rules(write(tmp_path, text)).rules[0]
    assert (rule.open_after, rule.close_after, rule.severity) == (2, 7, "critical")


def test_rule_overrides_defaults(tmp_path):
    text = "[defaults]\nopen_after = 2\n" + HOT + "open_after = 4\n"
    assert load_rules(write(tmp_path, text)).rules[0].open_after == 4


def test_open_and_close_after_take_a_duration(tmp_path):
    text = '[defaults]\nclose_after = "5m"\n' + HOT + 'open_after = "30s"\n'
    rule = load_rules(write(tmp_path, text)).rules[0]
    assert (rule.open_after, rule.open_after_s, rule.close_after, rule.close_after_s) == (
        1, 30.0, 1, 300.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("value", "words"),
    [('"soon"', ("open_after", "duration", "'30s'")), ('"0s"', ("open_after", "> 0")),
     ("2.5", ("open_after", "integer"))],
)  # fmt: skip
def test_a_bad_duration_is_named(tmp_path, value, words):
    exc = load_error(tmp_path, HOT + f"open_after = {value}\n")
    assert_names(exc, "'hot'", *words)


def test_a_transient_rule_counts_its_breaches(tmp_path):
    text = HOT + 'open_after = "10s"\nmax_breaches = 2\n'
    assert_names(load_error(tmp_path, text), "max_breaches", "count")


def test_star_sensor_watches_every_sensor():
    rs = parse_rules({"rule": [{"name": "gone", "kind": "null", "sensor": "*"}]})
    rule = rs.rules[0]
    assert rule.sensors == ()
    assert rule.watches("temperature") and rule.watches("eco2")


def test_sensor_list_watches_only_those():
    rs = parse_rules(
        {
            "rule": [
                {
                    "name": "a",
                    "kind": "anomaly",
                    "sensor": ["temperature", "pressure"],
                    "score_above": 5,
                }
            ]
        }
    )
    rule = rs.rules[0]
    assert rule.sensors == ("temperature", "pressure")
    assert rule.watches("pressure") and not rule.watches("battery")


def test_machines_string_or_list_becomes_a_frozenset():
    one = parse_rules({"rule": [{"name": "n", "kind": "null", "machines": "m-1"}]})
    two = parse_rules({"rule": [{"name": "n", "kind": "null", "machines": ["m-1", "m-2"]}]})
    assert one.rules[0].machines == frozenset({"m-1"})
    assert two.rules[0].machines == frozenset({"m-1", "m-2"})


def test_below_and_above_together_are_accepted_when_below_is_lower():
    rs = parse_rules(
        {
            "rule": [
                {"name": "band", "kind": "threshold", "sensor": "battery", "below": 10, "above": 90}
            ]
        }
    )
    assert (rs.rules[0].below, rs.rules[0].above) == (10.0, 90.0)


def test_validation_empty_string_means_no_bound():
    rs = parse_rules({"validation": {"ranges": {"temperature": ["", 100.0]}}})
    assert rs.validation.ranges == {"temperature": (None, 100.0)}


def test_empty_document_is_an_empty_ruleset():
    rs = parse_rules({})
    assert rs.rules == ()
    assert rs.source == "<rules>"


# --- errors ----------------------------------------------------------------------------


def test_rules_error_is_a_config_error():
    assert issubclass(RulesError, ConfigError)
    exc = RulesError("f.toml", "rule 'x'", "broken")
    assert str(exc) == "rules f.toml: rule 'x': broken"
    assert (exc.path, exc.where, exc.problem) == ("f.toml", "rule 'x'", "broken")


def test_unknown_kind(tmp_path):
    exc = load_error(tmp_path, rule_toml(name="r1", kind="magic", sensor="temperature"))
    assert_names(exc, "'r1'", "kind", "'magic'")


def test_unknown_field(tmp_path):
    exc = load_error(tmp_path, HOT + "colour = 'red'\n")
    assert_names(exc, "'hot'", "unknown field", "colour")


def test_unknown_sensor(tmp_path):
    exc = load_error(tmp_path, rule_toml(name="r1", kind="threshold", sensor="smell", above=1))
    assert_names(exc, "'r1'", "sensor", "smell")


def test_missing_name(tmp_path):
    exc = load_error(tmp_path, HOT + rule_toml(kind="threshold", sensor="battery", below=5))
    assert_names(exc, "rule '#2'", "name")


def test_name_with_slash_is_rejected(tmp_path):
    exc = load_error(tmp_path, rule_toml(name="a/b", kind="null"))
    assert_names(exc, "'a/b'", "name", "'/'")


def test_duplicate_name(tmp_path):
    exc = load_error(tmp_path, HOT + HOT)
    assert_names(exc, "'hot'", "name", "twice")


def test_threshold_without_above_or_below(tmp_path):
    exc = load_error(tmp_path, rule_toml(name="r1", kind="threshold", sensor="temperature"))
    assert_names(exc, "'r1'", "threshold", "above", "below")


def test_anomaly_without_score_above(tmp_path):
    exc = load_error(tmp_path, rule_toml(name="r1", kind="anomaly", sensor="temperature"))
    assert_names(exc, "'r1'", "anomaly", "score_above")


def test_status_without_codes(tmp_path):
    exc = load_error(tmp_path, rule_toml(name="r1", kind="status"))
    assert_names(exc, "'r1'", "status")


def test_status_codes_must_be_integers(tmp_path):
    exc = load_error(tmp_path, rule_toml(name="r1", kind="status", status='["2"]'))
    assert_names(exc, "'r1'", "status", "integer")


@pytest.mark.parametrize("value", ["2.5", "0", "-1", "true", '"3"'])
def test_open_after_must_be_a_positive_integer(tmp_path, value):
    exc = load_error(tmp_path, HOT + f"open_after = {value}\n")
    assert_names(exc, "'hot'", "open_after", "integer")


def test_close_after_zero_is_rejected(tmp_path):
    exc = load_error(tmp_path, HOT + "close_after = 0\n")
    assert_names(exc, "'hot'", "close_after")


def test_max_breaches_below_open_after(tmp_path):
    exc = load_error(tmp_path, HOT + "open_after = 3\nmax_breaches = 2\n")
    assert_names(exc, "'hot'", "max_breaches", "open_after")


def test_max_breaches_must_be_an_integer(tmp_path):
    exc = load_error(tmp_path, HOT + "max_breaches = 0\n")
    assert_names(exc, "'hot'", "max_breaches", "integer")


def test_bad_severity(tmp_path):
    exc = load_error(tmp_path, HOT + 'severity = "panic"\n')
    assert_names(exc, "'hot'", "severity", "'panic'")


def test_detects_must_name_fault_kinds(tmp_path):
    exc = load_error(tmp_path, HOT + 'detects = ["spike", "gremlins"]\n')
    assert_names(exc, "'hot'", "detects", "gremlins")
    assert "'spike'" not in str(exc).split("are not")[0]


def test_detects_must_be_strings(tmp_path):
    exc = load_error(tmp_path, HOT + "detects = [1]\n")
    assert_names(exc, "'hot'", "detects")


def test_below_not_below_above(tmp_path):
    exc = load_error(tmp_path, HOT + "below = 30.0\n")
    assert_names(exc, "'hot'", "below", "above")


def test_threshold_must_be_a_number(tmp_path):
    exc = load_error(
        tmp_path, rule_toml(name="r1", kind="threshold", sensor="battery", below="low")
    )
    assert_names(exc, "'r1'", "below", "number")


def test_threshold_must_be_finite():
    with pytest.raises(RulesError, match="above must be a finite number"):
        parse_rules({"rule": [{"name": "r", "kind": "threshold", "above": float("inf")}]})


def test_alone_s_must_be_positive(tmp_path):
    exc = load_error(tmp_path, HOT + "alone_s = 0\n")
    assert_names(exc, "'hot'", "alone_s")


def test_rule_must_be_array_of_tables(tmp_path):
    exc = load_error(tmp_path, '[rule]\nname = "x"\n')
    assert_names(exc, "rule", "[[rule]]")


def test_unknown_top_level_table(tmp_path):
    exc = load_error(tmp_path, "[alerts]\nx = 1\n")
    assert_names(exc, "top level", "alerts")


def test_unknown_default_field(tmp_path):
    exc = load_error(tmp_path, "[defaults]\nabove = 3\n")
    assert_names(exc, "[defaults]", "above")


def test_validation_min_not_below_max(tmp_path):
    exc = load_error(tmp_path, "[validation.ranges]\ntemperature = [100.0, 100.0]\n")
    assert_names(exc, "[validation.ranges] temperature", "min", "max")


def test_validation_unknown_sensor(tmp_path):
    exc = load_error(tmp_path, "[validation.ranges]\nsmell = [0.0, 1.0]\n")
    assert_names(exc, "[validation.ranges] smell", "unknown sensor")


def test_validation_range_needs_two_bounds(tmp_path):
    exc = load_error(tmp_path, "[validation.ranges]\ntemperature = [1.0]\n")
    assert_names(exc, "[validation.ranges] temperature", "[min, max]")


def test_validation_bad_max_future(tmp_path):
    exc = load_error(tmp_path, '[validation]\nmax_future = "soon"\n')
    assert_names(exc, "[validation]", "max_future")


def test_validation_earliest_must_be_a_date(tmp_path):
    exc = load_error(tmp_path, '[validation]\nearliest = "2000"\n')
    assert_names(exc, "[validation] earliest", "date")


def test_validation_unknown_field(tmp_path):
    exc = load_error(tmp_path, "[validation]\nlatest = 3\n")
    assert_names(exc, "[validation]", "latest")


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[[rule]\nname = \n", name="broken.toml")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_rules(missing)
    assert not isinstance(info.value, RulesError)
    assert str(missing) in str(info.value)
    assert info.value.name == "rules_file"


def test_bare_name_that_is_not_shipped_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="rules_file"):
        load_rules("no-such-rules-file")


def test_parse_rules_names_the_given_path():
    with pytest.raises(RulesError) as info:
        parse_rules({"rule": [{"name": "x", "kind": "nope"}]}, "mine.toml")
    assert str(info.value).startswith("rules mine.toml: rule 'x': kind 'nope'")


def test_first_problem_is_reported():
    data = {
        "rule": [
            {"name": "ok", "kind": "null"},
            {"name": "bad1", "kind": "nope"},
            {"name": "bad2", "severity": "nope", "kind": "null"},
        ]
    }
    with pytest.raises(RulesError, match="'bad1'"):
        parse_rules(data)
