"""Scoring a run's alerts against its ground truth: pure cases."""

from workbench.processor.scoring import Alert, Fault, alert_outcomes, fault_outcomes, score

END = 600_000  # the run's last reading


def test_a_fault_still_going_on_at_the_end_is_open_not_missed():
    faults = [
        Fault("drift", "m-1", "temperature", 100_000, 250_000),  # over, caught
        Fault("drift", "m-2", "temperature", 300_000, 400_000),  # over, missed
        Fault("drift", "m-3", "pressure", 560_000, END),  # still walking off at the end
    ]
    alerts = [Alert("level-shift", "m-1", "temperature", 240_000, 240_000, ("drift",))]
    s = score(alerts, faults, run_end_ts=END)["drift"]
    assert (s["faults"], s["detected"], s["open_at_end"], s["recall"]) == (3, 1, 1, 0.5)
    # without the run's end, the open one counts as a miss, as it used to
    assert score(alerts, faults)["drift"]["recall"] == round(1 / 3, 3)
    outcomes = fault_outcomes(alerts, faults, END)
    assert [o["open_at_end"] for o in outcomes] == [False, False, True]


def test_an_open_fault_caught_before_the_end_is_a_detection():
    faults = [Fault("failure", "m-1", None, 500_000, END)]
    alerts = [Alert("shutdown", "m-1", None, 520_000, 522_000, ("failure",))]
    s = score(alerts, faults, run_end_ts=END)["failure"]
    assert (s["detected"], s["open_at_end"], s["recall"]) == (1, 0, 1.0)


# -- a failure's degradation: part of the failure, not a kind of its own --------------------

DEGRADATION = Fault("degradation", "m-1", None, 100_000, 400_000)  # ends where it begins
FAILURE = Fault("failure", "m-1", None, 400_000, 490_000)


def test_an_alert_during_a_degradation_explains_it_and_catches_the_failure_early():
    alerts = [Alert("unexplained", "m-1", "vibration", 300_000, 305_000,
                    ("drift", "failure", "stuck"))]  # fmt: skip
    s = score(alerts, [DEGRADATION, FAILURE], run_end_ts=END)
    assert "degradation" not in s  # not scored: no rule has to catch it
    f = s["failure"]
    assert (f["faults"], f["detected"], f["early"], f["recall"], f["precision"]) == (
        1, 1, 1, 1.0, 1.0
    )  # fmt: skip
    assert f["mean_delay_s"] == 0.0  # caught before the runaway began
    assert s["drift"]["precision"] is None and s["drift"]["alerts"] == 0  # not a wrong drift
    (outcome,) = alert_outcomes(alerts, [DEGRADATION, FAILURE])
    assert outcome["explains"] == ["failure"]  # not a false alarm
    (failure,) = fault_outcomes(alerts, [DEGRADATION, FAILURE], END)
    assert failure["early"] and failure["rule"] == "unexplained" and failure["delay_s"] == 0.0


def test_a_degradation_that_no_rule_catches_weighs_on_no_recall():
    alerts = [Alert("shutdown", "m-1", None, 470_000, 472_000, ("failure",))]
    s = score(alerts, [DEGRADATION, FAILURE], run_end_ts=END)
    assert set(s) == {"failure"}
    assert (s["failure"]["recall"], s["failure"]["early"], s["failure"]["mean_delay_s"]) == (
        1.0, 0, 72.0
    )  # fmt: skip
    assert [o["kind"] for o in fault_outcomes(alerts, [DEGRADATION, FAILURE], END)] == ["failure"]


def test_a_degradation_explains_only_alerts_aimed_at_failures():
    alerts = [Alert("spike", "m-1", "vibration", 200_000, 200_000, ("spike",)),
              Alert("unexplained", "m-2", "vibration", 200_000, 205_000, ("failure",))]  # fmt: skip
    assert [o["explains"] for o in alert_outcomes(alerts, [DEGRADATION, FAILURE])] == [[], []]
    s = score(alerts, [DEGRADATION, FAILURE])
    assert s["spike"]["precision"] == 0.0 and s["failure"]["precision"] == 0.0
    assert s["failure"]["detected"] == 0


def test_a_degradation_still_under_way_at_the_end_explains_alerts_but_has_no_failure():
    open_one = Fault("degradation", "m-1", None, 300_000, END)
    alerts = [Alert("unexplained", "m-1", "temperature", 500_000, 505_000, ("failure",))]
    s = score(alerts, [open_one], run_end_ts=END)
    assert s["failure"]["faults"] == 0 and s["failure"]["precision"] == 1.0


def test_a_rule_aimed_at_degradations_is_scored_on_them():
    alerts = [Alert("wear", "m-1", "vibration", 350_000, 360_000, ("degradation",))]
    s = score(alerts, [DEGRADATION, FAILURE], run_end_ts=END)
    d = s["degradation"]
    assert (d["faults"], d["detected"], d["recall"], d["precision"]) == (1, 1, 1.0, 1.0)
    assert s["failure"]["detected"] == 0  # a rule not aimed at failures catches none
