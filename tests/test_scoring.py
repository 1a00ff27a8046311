"""Scoring a run's alerts against its ground truth: pure cases."""

from workbench.processor.scoring import Alert, Fault, fault_outcomes, score

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
