"""Statistical process control: limits computed by hand, run rules on crafted series, EWMA
and CUSUM against their definitions, capability of known samples, and notebook 04 run
headless against the real stack."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import run_notebook

from workbench.analysis import spc
from workbench.errors import WorkbenchError

# Textbook control chart constants (Montgomery, Introduction to Statistical Quality Control,
# Appendix VI; ASTM E2587), three decimals: n -> (d2, d3).
TEXTBOOK_D = {
    2: (1.128, 0.853), 3: (1.693, 0.888), 4: (2.059, 0.880), 5: (2.326, 0.864),
    6: (2.534, 0.848), 7: (2.704, 0.833), 8: (2.847, 0.820), 9: (2.970, 0.808),
    10: (3.078, 0.797), 11: (3.173, 0.787), 12: (3.258, 0.778), 13: (3.336, 0.770),
    14: (3.407, 0.763), 15: (3.472, 0.756), 16: (3.532, 0.750), 17: (3.588, 0.744),
    18: (3.640, 0.739), 19: (3.689, 0.733), 20: (3.735, 0.729), 21: (3.778, 0.724),
    22: (3.819, 0.720), 23: (3.858, 0.716), 24: (3.895, 0.712), 25: (3.931, 0.708),
}  # fmt: skip
# n -> (A2, D3, D4, c4, A3, B3, B4)
TEXTBOOK_FACTORS = {
    2: (1.880, 0.0, 3.267, 0.7979, 2.659, 0.0, 3.267),
    3: (1.023, 0.0, 2.574, 0.8862, 1.954, 0.0, 2.568),
    5: (0.577, 0.0, 2.114, 0.9400, 1.427, 0.0, 2.089),
    7: (0.419, 0.076, 1.924, 0.9594, 1.182, 0.118, 1.882),
    10: (0.308, 0.223, 1.777, 0.9727, 0.975, 0.284, 1.716),
    15: (0.223, 0.347, 1.653, 0.9823, 0.789, 0.428, 1.572),
    25: (0.153, 0.459, 1.541, 0.9896, 0.606, 0.565, 1.435),
}  # fmt: skip


# --- constants -------------------------------------------------------------------------


def test_range_constants_agree_with_the_textbook_table_for_2_to_25():
    for n, (d2, d3) in TEXTBOOK_D.items():
        got2, got3 = spc.range_constants(n)
        assert got2 == pytest.approx(d2, abs=5e-4), n
        assert got3 == pytest.approx(d3, abs=5e-4), n
    # closed forms for pairs: E|X1 - X2| = 2/sqrt(pi), Var = 2 - 4/pi
    assert spc.range_constants(2)[0] == pytest.approx(2 / math.sqrt(math.pi), rel=1e-9)
    assert spc.range_constants(2)[1] == pytest.approx(math.sqrt(2 - 4 / math.pi), rel=1e-6)


def test_chart_factors_agree_with_the_textbook_table():
    for n, expected in TEXTBOOK_FACTORS.items():
        k = spc.constants(n)
        got = (k["A2"], k["D3"], k["D4"], k["c4"], k["A3"], k["B3"], k["B4"])
        assert got == pytest.approx(expected, abs=1.5e-3), n
    table = spc.constants_table()
    assert list(table.index) == list(range(2, 26))
    assert table.loc[5, "A2"] == pytest.approx(0.577, abs=1e-3)


def test_range_constants_of_a_large_subgroup_match_a_simulation():
    rng = np.random.default_rng(1)
    ranges = np.ptp(rng.normal(size=(100_000, 40)), axis=1)
    d2, d3 = spc.range_constants(40)
    assert d2 == pytest.approx(ranges.mean(), abs=0.01)
    assert d3 == pytest.approx(ranges.std(), abs=0.01)


# --- individuals (I-MR) ----------------------------------------------------------------


def test_individuals_limits_computed_by_hand():
    x = [10.0, 12, 11, 13, 12, 11, 10, 12, 11, 13]  # mean 11.5, moving ranges sum 13 over 9
    i, mr = spc.individuals_chart(x)
    d2 = 2 / math.sqrt(math.pi)
    mr_bar = 13 / 9
    assert i.center == pytest.approx(11.5)
    assert i.sigma == pytest.approx(mr_bar / d2)
    assert i.points["ucl"].iloc[0] == pytest.approx(11.5 + 3 * mr_bar / d2)
    assert i.points["lcl"].iloc[0] == pytest.approx(11.5 - 3 * mr_bar / d2)
    # the textbook shortcut: x-bar +- 2.66 MR-bar, MR chart UCL 3.267 MR-bar
    assert i.points["ucl"].iloc[0] == pytest.approx(11.5 + 2.66 * mr_bar, abs=2e-3)
    assert mr.points["ucl"].iloc[0] == pytest.approx(3.267 * mr_bar, abs=2e-3)
    assert mr.points["lcl"].iloc[0] == 0
    assert np.isnan(mr.points["value"].iloc[0])
    assert mr.points["value"].iloc[1:4].tolist() == [2.0, 1.0, 2.0]
    assert i.counts() == {"WE1": 0, "WE2": 0, "WE3": 0, "WE4": 0}


def test_phase_two_monitors_the_whole_series_against_baseline_limits():
    base = [10.0, 12, 11, 13, 12, 11, 10, 12, 11, 13]
    x = [*base, 11, 12, 20, 12, 11]  # one point far above, after the baseline
    i, _ = spc.individuals_chart(x, baseline=10)
    assert i.center == pytest.approx(11.5)
    assert i.points["baseline"].tolist() == [True] * 10 + [False] * 5
    assert i.violations().index.tolist() == [12]
    assert i.labels().tolist() == [spc.RULES["WE1"]]


def test_revising_the_baseline_drops_a_spike_from_the_limits():
    x = [10.0, 12, 11, 13, 12, 11, 10, 12, 11, 13] * 2
    x[5] = 60.0
    plain, _ = spc.individuals_chart(x)
    revised, _ = spc.individuals_chart(x, revise=True)
    clean, _ = spc.individuals_chart([v for j, v in enumerate(x) if j != 5])
    assert revised.sigma < plain.sigma / 3
    assert revised.center == pytest.approx(np.mean([v for j, v in enumerate(x) if j != 5]))
    assert revised.params["baseline_points"] == 19
    # the moving ranges touching the spike are left out, not joined across it
    assert revised.sigma != pytest.approx(clean.sigma)
    assert revised.violations().index.tolist() == [5]


def test_revising_stops_before_it_eats_an_unstable_baseline(caplog):
    x = np.r_[np.tile([0.0, 0.1], 10), np.linspace(5, 50, 20)]  # half steady, half a ramp
    plain, _ = spc.individuals_chart(x)
    revised, _ = spc.individuals_chart(x, revise=True, name="m-0003/vibration")
    assert revised.params["baseline_points"] == 40 and revised.center == plain.center
    assert "m-0003/vibration: baseline not revised further" in caplog.text


def test_nulls_are_skipped_but_keep_their_timestamps():
    ts = pd.date_range("2026-01-01", periods=14, freq="s", tz="UTC")
    x = [10.0, 12, 11, 13, 12, 11, None, 10, 12, 11, 13, 12, None, 30]
    i, mr = spc.individuals_chart(x, pd.Series(ts), baseline=13)
    assert len(i.points) == 14 and (i.points["x"] == ts).all()
    assert i.center == pytest.approx(np.nanmean(np.array(x[:13], dtype=float)))
    mrs = mr.points["value"]
    assert np.isnan(mrs.iloc[6]) and mrs.iloc[7] == pytest.approx(1.0)  # 10 after 11
    assert mrs.iloc[13] == pytest.approx(18.0)  # 30 after 12, across the null
    assert i.violations()["x"].tolist() == [ts[13]]
    assert not i.points.loc[[6, 12], list(i.flags)].any().any()


def test_a_moving_centre_follows_a_wandering_process_and_still_sees_a_spike():
    rng = np.random.default_rng(9)
    walk = 40 + np.cumsum(rng.normal(0, 0.05, 600))  # a level that wanders
    x = np.round(walk + rng.normal(0, 0.15, 600), 1)  # sensor noise, 0.1 resolution
    x[450] += 25.0
    fixed, _ = spc.individuals_chart(x, baseline=150)
    moving, mr = spc.individuals_chart(x, baseline=150, centre="moving")
    assert fixed.flagged().sum() > 150  # limits from the first minutes do not fit later on
    assert moving.flagged().sum() < 15
    assert moving.points["WE1"].iloc[450] and not moving.flagged().iloc[451]  # no echo
    p = moving.points
    assert p["residual"].to_numpy() == pytest.approx((p["value"] - p["center"]).to_numpy(),
                                                     nan_ok=True)  # fmt: skip
    assert abs(p["center"].iloc[451] - p["center"].iloc[450]) < 1  # the forecast ignored it
    assert moving.center == 0 and mr.params["centre"] == "moving"
    with pytest.raises(WorkbenchError, match="no center="):
        spc.individuals_chart(x, centre="moving", center=40)


def test_a_moving_centre_still_signals_a_ramp_it_lags_behind():
    rng = np.random.default_rng(11)
    x = (
        40
        + rng.normal(0, 0.15, 400)
        + np.where(np.arange(400) > 200, 0.05, 0.0) * (np.arange(400) - 200)
    )  # steady, then warming by 0.05 per reading
    moving, _ = spc.individuals_chart(x, baseline=150, centre="moving", rules="nelson")
    hits = np.flatnonzero(moving.flagged())
    assert len(hits) > 20 and (hits > 200).mean() > 0.95


def test_forecast_weight_is_small_for_noise_and_large_for_a_walk():
    rng = np.random.default_rng(10)
    assert spc.forecast_lambda(rng.normal(size=2000)) <= 0.1
    assert spc.forecast_lambda(np.cumsum(rng.normal(size=2000))) >= 0.9
    noise_with_spikes = rng.normal(size=2000)
    noise_with_spikes[::50] += 40
    assert spc.forecast_lambda(noise_with_spikes) <= 0.1  # spikes do not choose it


def test_chunky_readings_are_refused_with_wheelers_test():
    x = np.r_[np.full(10, 85.6), np.full(10, 85.5)]  # a battery in steps of 0.1
    x[5] = 85.5
    with pytest.raises(WorkbenchError, match=r"^m-0005/battery: the readings move in steps "
                       r"of 0\.1, too coarse"):  # fmt: skip
        spc.individuals_chart(x, name="m-0005/battery")


# --- run rules -------------------------------------------------------------------------


def flags(z, rules):
    z = np.asarray(z, dtype=float)
    return spc.rule_flags(z, z, rules)


def where(z, rule):
    return np.flatnonzero(flags(z, [rule])[rule]).tolist()


def test_we1_flags_exactly_the_point_beyond_three_sigma():
    z = np.zeros(20)
    z[12], z[15] = 3.5, -3.0  # exactly on a limit is not beyond it
    assert where(z, "WE1") == [12]


def test_we2_two_of_three_beyond_two_sigma_on_one_side():
    assert where([0.5, 2.5, 0.1, 2.2, -1.0], "WE2") == [3]
    assert where([2.5, -2.5, 0.0, 2.1, 0.0, 0.0, 2.1], "WE2") == []  # other side; too far apart
    assert where([-2.1, -2.9, -2.5], "WE2") == [1, 2]


def test_we3_four_of_five_beyond_one_sigma_on_one_side():
    assert where([1.5, 1.5, 0.0, 1.5, 1.5, 0.0], "WE3") == [4]
    assert where([1.5, 1.5, 0.0, 1.5, -1.5, 1.5], "WE3") == []


def test_we4_eight_in_a_row_on_one_side_and_nelson_nine():
    assert where([0.5] * 7, "WE4") == []
    assert where([0.5] * 8, "WE4") == [7]
    assert where([-0.2] * 10, "WE4") == [7, 8, 9]  # a run that goes on keeps flagging
    assert where([0.5] * 4 + [0.0] + [0.5] * 4, "WE4") == []  # a point on the line breaks it
    assert where([0.5] * 9, "N2") == [8]


def test_nelson_trend_alternation_stratification_and_mixture():
    assert where([0, 1, 2, 3, 4, 5], "N3") == [5]
    assert where([5, 4, 3, 2, 1], "N3") == []
    assert where([0, 1, 2, 2, 3, 4, 5], "N3") == []  # a tie breaks the trend
    assert where([0.0, 1.0] * 7, "N4") == [13]
    assert where([0.0, 1.0] * 6 + [1.0, 0.0], "N4") == []
    assert where([0.5, -0.5] * 7 + [0.5], "N7") == [14]
    assert where([1.5, -1.5] * 4, "N8") == [7]
    assert where([1.5] * 8, "N8") == []  # all on one side is WE4's business, not a mixture


def test_rule_sets_are_named_and_unknown_rules_say_what_exists():
    assert spc.RULE_SETS["western_electric"] == ("WE1", "WE2", "WE3", "WE4")
    assert list(flags([0.0], "nelson").columns) == [f"N{i}" for i in range(1, 9)]
    assert spc.RULES["WE4"] == "WE4: 8 in a row same side"
    with pytest.raises(WorkbenchError, match="western_electric or nelson"):
        flags([0.0], "westinghouse")


def test_nulls_neither_break_nor_complete_a_run():
    z = [0.5] * 4 + [math.nan] + [0.5] * 4
    assert where(z, "WE4") == [8]


def reference_flags(v, z, rule):
    """The rules as a person would check them, point by point."""
    out = []
    for i in range(len(z)):

        def w(k: int, i: int = i) -> np.ndarray:
            return z[max(0, i - k + 1) : i + 1]

        d = np.diff(v[max(0, i - 13) : i + 1])
        if rule == "WE1":
            hit = abs(z[i]) > 3
        elif rule == "WE2":
            hit = any(z[i] * s > 2 and sum(e * s > 2 for e in w(3)) >= 2 for s in (1, -1))
        elif rule == "WE3":
            hit = any(z[i] * s > 1 and sum(e * s > 1 for e in w(5)) >= 4 for s in (1, -1))
        elif rule == "WE4":
            hit = i >= 7 and (all(e > 0 for e in w(8)) or all(e < 0 for e in w(8)))
        elif rule == "N3":
            dd = np.diff(v[max(0, i - 5) : i + 1])
            hit = i >= 5 and (all(dd > 0) or all(dd < 0))
        elif rule == "N4":
            hit = i >= 13 and all(d[j] * d[j + 1] < 0 for j in range(12))
        elif rule == "N7":
            hit = i >= 14 and all(abs(e) < 1 for e in w(15))
        else:  # N8
            last = w(8)
            hit = (i >= 7 and all(abs(e) > 1 for e in last) and any(e > 1 for e in last)
                   and any(e < -1 for e in last))  # fmt: skip
        out.append(bool(hit))
    return out


def test_vectorised_rules_agree_with_a_point_by_point_reading():
    rng = np.random.default_rng(5)
    v = np.round(rng.normal(size=3000), 1)  # rounding makes ties, as quantised sensors do
    v[1000:1020] += 1.5  # a shift, so the run rules have runs to find
    v[2000:2014] = np.tile([1.2, -1.3], 7)  # a mixture
    v[2500:2520] = np.tile([0.1, 0.2, -0.1, 0.0], 5)  # stratification
    z = v / 0.9
    for rule in ("WE1", "WE2", "WE3", "WE4", "N3", "N4", "N7", "N8"):
        got = spc.rule_flags(v, z, [rule])[rule].tolist()
        assert got == reference_flags(v, z, rule), rule
        assert any(got), rule


# --- X-bar, R and S --------------------------------------------------------------------

GROUPS = [[10.0, 11, 12], [11, 12, 13], [9, 11, 13], [10, 10, 13], [12, 11, 10]]


def test_xbar_r_limits_computed_by_hand():
    g = spc.subgroups(np.ravel(GROUPS), size=3)
    assert g["mean"].tolist() == [11, 12, 11, 11, 11] and g["range"].tolist() == [2, 2, 4, 3, 2]
    xbar, r = spc.xbar_chart(g)
    x_bar, r_bar = 11.2, 2.6
    k = spc.constants(3)
    assert xbar.center == pytest.approx(x_bar)
    assert xbar.points["ucl"].iloc[0] == pytest.approx(x_bar + k["A2"] * r_bar)
    assert xbar.points["ucl"].iloc[0] == pytest.approx(x_bar + 1.023 * r_bar, abs=3e-3)
    assert xbar.points["lcl"].iloc[0] == pytest.approx(x_bar - 1.023 * r_bar, abs=3e-3)
    assert r.points["ucl"].iloc[0] == pytest.approx(2.574 * r_bar, abs=3e-3)
    assert r.points["lcl"].iloc[0] == 0.0
    assert r.center == pytest.approx(r_bar)


def test_xbar_s_limits_computed_by_hand():
    g = spc.subgroups(np.ravel(GROUPS), size=3)
    s_bar = float(np.mean([np.std(grp, ddof=1) for grp in GROUPS]))
    xbar, s = spc.xbar_chart(g, stat="S")
    assert xbar.points["ucl"].iloc[0] == pytest.approx(11.2 + 1.954 * s_bar, abs=3e-3)
    assert s.points["ucl"].iloc[0] == pytest.approx(2.568 * s_bar, abs=3e-3)
    assert s.center == pytest.approx(s_bar)


def test_unequal_subgroups_get_limits_of_their_own():
    g = pd.DataFrame({"x": range(6), "mean": [5.0, 5.2, 4.8, 5.1, 4.9, 5.0],
                      "n": [4, 4, 4, 4, 4, 9],
                      "range": [1.0, 1.2, 0.8, 1.0, 1.0, 1.5]})  # fmt: skip
    xbar, r = spc.xbar_chart(g)
    half = (xbar.points["ucl"] - xbar.center).to_numpy()
    assert half[5] == pytest.approx(half[0] * 2 / 3)  # 3 sigma / sqrt(n): sqrt(4/9)
    assert r.points["center"].iloc[5] == pytest.approx(xbar.sigma * spc.range_constants(9)[0])


def test_time_buckets_as_subgroups_keep_nulls_in_place():
    ts = pd.Series(pd.date_range("2026-01-01", periods=9, freq="s", tz="UTC"))
    g = spc.subgroups([1.0, 2, 3, None, 5, 6, 7, 8, 9], ts, every="3s")
    assert g["n"].tolist() == [3, 2, 3] and g["nulls"].tolist() == [0, 1, 0]
    assert g["x"].tolist() == [ts[0], ts[3], ts[6]]
    assert g["mean"].tolist() == [2.0, 5.5, 8.0]


def test_bucketed_readings_without_a_standard_deviation_cannot_make_an_s_chart():
    g = pd.DataFrame({"x": range(5), "mean": [1.0] * 5, "n": [3] * 5, "range": [1.0] * 5})
    with pytest.raises(WorkbenchError, match="use stat='R'"):
        spc.xbar_chart(g, stat="S")


# --- EWMA and CUSUM --------------------------------------------------------------------


def test_ewma_statistic_and_exact_limits():
    rng = np.random.default_rng(2)
    x = rng.normal(50, 2, 200)
    lam, big_l = 0.1, 2.7
    c = spc.ewma_chart(x, lam=lam, L=big_l, center=50, sigma=2)
    z, expected = 50.0, []
    for v in x:
        z = lam * v + (1 - lam) * z
        expected.append(z)
    assert c.points["value"].to_numpy() == pytest.approx(expected)
    i = np.arange(1, 201)
    half = big_l * 2 * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * i)))
    assert c.points["ucl"].to_numpy() == pytest.approx(50 + half)
    assert c.points["lcl"].to_numpy() == pytest.approx(50 - half)
    assert half[0] == pytest.approx(big_l * 2 * lam)  # first limit: L sigma lambda
    assert half[-1] == pytest.approx(big_l * 2 * math.sqrt(lam / (2 - lam)), rel=1e-6)


def test_ewma_signals_a_small_shift_a_shewhart_chart_misses():
    x = np.r_[np.zeros(30), np.full(30, 1.5)]  # a 1.5-sigma shift from reading 30
    c = spc.ewma_chart(x, center=0, sigma=1)
    i, _ = spc.individuals_chart(x, center=0, sigma=1, rules=["WE1"])
    # after j shifted readings z = 1.5 (1 - 0.8^j); the limit is all but 3 sqrt(0.2/1.8) = 1:
    # j = 4 gives 0.886, j = 5 gives 1.008
    assert int(np.flatnonzero(c.points["EWMA"])[0]) == 30 + 5 - 1
    assert i.counts()["WE1"] == 0


def test_cusum_signals_a_step_at_the_expected_reading():
    x = np.r_[np.full(30, 10.0), np.full(20, 12.0)]  # +1 sigma from reading 30
    c = spc.cusum_chart(x, center=10, sigma=2, k=0.5, h=5)
    # C+ grows by 12 - (10 + 1) = 1 per shifted reading; above H = 10 at the 11th
    assert c.points["upper"].iloc[29] == 0 and c.points["upper"].iloc[39] == pytest.approx(10)
    assert int(np.flatnonzero(c.points["CUSUM+"])[0]) == 40
    assert not c.points["CUSUM-"].any() and c.points["lower"].max() == 0
    down = spc.cusum_chart(-x, center=-10, sigma=2)
    assert int(np.flatnonzero(down.points["CUSUM-"])[0]) == 40


def test_cusum_matches_its_recursion_on_noise():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 5000) + np.r_[np.zeros(2500), np.full(2500, 0.4)]
    c = spc.cusum_chart(x, center=0, sigma=1, k=0.5, h=4)
    hi = lo = 0.0
    ups, downs = [], []
    for v in x:
        hi, lo = max(0.0, v - 0.5 + hi), max(0.0, -0.5 - v + lo)
        ups.append(hi)
        downs.append(lo)
    assert c.points["upper"].to_numpy() == pytest.approx(ups, abs=1e-9)
    assert c.points["lower"].to_numpy() == pytest.approx(downs, abs=1e-9)


# --- capability ------------------------------------------------------------------------


def test_capability_of_a_known_normal_sample():
    x = np.random.default_rng(4).normal(10, 1, 200_000)
    c = spc.capability(x, lsl=7, usl=14)
    assert c.cp == pytest.approx(7 / 6, abs=0.02) and c.pp == pytest.approx(7 / 6, abs=0.02)
    assert c.cpk == pytest.approx(1.0, abs=0.02) and c.ppk == pytest.approx(1.0, abs=0.02)
    upper_only = spc.capability(x, usl=14)
    assert upper_only.cp is None and upper_only.pp is None
    assert upper_only.cpk == pytest.approx(4 / 3, abs=0.02)
    lower_only = spc.capability(x, lsl=7)
    assert lower_only.cpk == pytest.approx(1.0, abs=0.02)


def test_capability_of_a_short_series_computed_by_hand():
    x = [10.0, 12, 11, 13, 12, 11, 10, 12, 11, 12]
    # mean 114 / 10; moving ranges 2 1 2 1 1 1 2 1 1 (average 12 / 9); squared deviations
    # from the mean add up to 8.4, so the sample standard deviation is sqrt(8.4 / 9)
    mean, within, overall = 11.4, (12 / 9) / 1.128379, math.sqrt(8.4 / 9)
    c = spc.capability(x, lsl=8, usl=16)
    assert (c.n, c.beyond, c.stable) == (10, 0, True)
    assert c.mean == pytest.approx(mean) and c.sigma_within == pytest.approx(within, rel=1e-5)
    assert c.cp == pytest.approx(8 / (6 * within), rel=1e-5)  # 1.128
    assert c.cpk == pytest.approx((mean - 8) / (3 * within), rel=1e-5)  # 0.959, the LSL side
    assert c.pp == pytest.approx(8 / (6 * overall))  # 1.380
    assert c.ppk == pytest.approx((mean - 8) / (3 * overall))  # 1.173
    assert round(c.cpk, 3) == 0.959 and round(c.ppk, 3) == 1.173


def test_cpk_uses_within_sigma_and_ppk_the_overall_one():
    x = np.r_[np.zeros(50), np.full(50, 10.0)] + np.tile([0.0, 1.0], 50)  # a step: drifts
    c = spc.capability(x, lsl=-20, usl=30)
    within = (np.abs(np.diff(x)).mean()) / spc.range_constants(2)[0]
    assert c.sigma_within == pytest.approx(within)
    assert c.sigma_overall == pytest.approx(np.std(x, ddof=1))
    assert c.pp == pytest.approx(50 / (6 * np.std(x, ddof=1)))
    # every reading lies beyond mean +- 3 sigma_within: the process is not in control, and
    # a Cpk from its short-term noise would promise what it does not do
    assert (c.beyond, c.stable, c.cp, c.cpk) == (100, False, None, None)
    assert c.ppk == pytest.approx(24.5 / (3 * np.std(x, ddof=1)))


def test_a_stable_process_keeps_its_cpk_despite_a_chance_point_beyond_the_limits():
    x = np.random.default_rng(5).normal(50, 1, 600)
    x[300] = 58.0  # one spike: as many as chance allows, not an unstable process
    c = spc.capability(x, usl=85)
    assert c.beyond >= 1 and c.stable and c.cpk == pytest.approx(35 / 3, rel=0.1)
    wander = 50 + np.cumsum(np.random.default_rng(6).normal(0, 0.3, 600))  # a random walk
    w = spc.capability(wander, usl=85)
    assert not w.stable and w.cpk is None and w.ppk is not None
    assert w.beyond > spc.chance_beyond(600)


def test_summary_gives_cpk_only_for_series_in_control():
    ts = pd.date_range("2026-01-01", periods=200, freq="s")
    rng = np.random.default_rng(7)
    df = pd.concat([
        pd.DataFrame({"machine_id": "m-0001", "sensor_type": "temperature", "ts": ts,
                      "value": rng.normal(40, 0.5, 200)}),
        pd.DataFrame({"machine_id": "m-0002", "sensor_type": "temperature", "ts": ts,
                      "value": 40 + np.cumsum(rng.normal(0, 0.5, 200))}),
    ])  # fmt: skip
    res = spc.chart_per_sensor(df, baseline_s=60, spec_limits={"temperature": (None, 85)})
    rows = res.summary.set_index("machine_id")
    assert bool(rows.loc["m-0001", "stable"]) and rows.loc["m-0001", "cpk"] > 0
    assert not bool(rows.loc["m-0002", "stable"]) and pd.isna(rows.loc["m-0002", "cpk"])
    assert rows.loc["m-0002", "ppk"] > 0


# --- errors ----------------------------------------------------------------------------


def test_errors_say_what_is_wrong_and_where():
    with pytest.raises(WorkbenchError, match=r"^m-0001/pressure: the baseline has 5 non-null "
                       r"readings; a control chart needs at least 10"):  # fmt: skip
        spc.individuals_chart([1.0, 2, 3, None, 4, 5], name="m-0001/pressure")
    for centre in ("fixed", "moving"):
        with pytest.raises(WorkbenchError, match=r"^m-0002/temperature: .*are all 21.5 \(sigma 0"):
            spc.individuals_chart([21.5] * 30, name="m-0002/temperature", centre=centre)
    with pytest.raises(WorkbenchError, match="needs a lower or an upper spec limit"):
        spc.capability(np.arange(20.0))
    with pytest.raises(WorkbenchError, match="LSL=5 and USL=1: need LSL < USL"):
        spc.capability(np.arange(20.0), lsl=5, usl=1)
    with pytest.raises(WorkbenchError, match=r"lam=1\.5 is not valid"):
        spc.ewma_chart(np.arange(20.0), lam=1.5)
    with pytest.raises(WorkbenchError, match="X-bar chart needs at least 5"):
        spc.xbar_chart(spc.subgroups(np.arange(12.0), size=3))
    with pytest.raises(WorkbenchError, match="values are not all numbers"):
        spc.individuals_chart(["a"] * 12)


# --- every machine and sensor; ground truth ---------------------------------------------


def long_frame() -> pd.DataFrame:
    """Two machines, temperature and pressure, 60 s at 1 Hz; m-0002's pressure is stuck."""
    ts = pd.date_range("2026-01-01", periods=60, freq="s", tz="UTC")
    rng = np.random.default_rng(6)
    parts = []
    for machine in ("m-0001", "m-0002"):
        temp = 40 + rng.normal(0, 0.2, 60)
        if machine == "m-0001":
            temp[45] += 5  # a spike
        pressure = np.full(60, 4.0) if machine == "m-0002" else 4 + rng.normal(0, 0.05, 60)
        for sensor, values in (("temperature", temp), ("pressure", pressure)):
            parts.append(pd.DataFrame({"machine_id": machine, "sensor_type": sensor, "ts": ts,
                                       "value": np.round(values, 2)}))  # fmt: skip
    return pd.concat(parts).sort_values(["ts", "machine_id", "sensor_type"], ignore_index=True)


def test_chart_per_sensor_summarises_every_series_and_isolates_bad_ones():
    res = spc.chart_per_sensor(long_frame(), baseline_s=30, spec_limits={"temperature": (30, 50)})
    s = res.summary.set_index(["machine_id", "sensor_type"])
    assert len(s) == 4 and len(res.charts) == 3
    assert "sigma 0" in s.loc[("m-0002", "pressure"), "error"]
    assert s.loc[("m-0002", "pressure"), "error"].startswith("m-0002/pressure: ")
    spike = s.loc[("m-0001", "temperature")]
    assert spike["points"] == 60 and spike["baseline"] == 30 and spike["WE1"] >= 1
    assert res.charts[("m-0001", "temperature")].main.points["WE1"].iloc[45]
    assert 4.0 < spike["cpk"] < 20 and math.isnan(s.loc[("m-0001", "pressure"), "cpk"])
    most = s.xs("temperature", level="sensor_type")["violations"].idxmax()
    assert res.worst("temperature") == (most, "temperature")
    with pytest.raises(WorkbenchError, match="no chart: m-0002/pressure: the 30 baseline"):
        res[("m-0002", "pressure")]


def test_chart_per_sensor_takes_bucketed_readings_as_subgroups():
    raw = long_frame()
    raw["bucket"] = raw["ts"].dt.floor("5s")
    b = raw.groupby(["machine_id", "sensor_type", "bucket"], as_index=False)["value"].agg(
        mean="mean", min="min", max="max", count="count"
    )
    res = spc.chart_per_sensor(b, baseline_s=30, spec_limits={"temperature": (30, 50)})
    row = res.summary.set_index(["machine_id", "sensor_type"]).loc[("m-0001", "temperature")]
    assert row["chart"] == "X-bar R" and row["points"] == 12 and row["baseline"] == 6
    assert "pp" not in res.summary.columns  # the overall sigma needs raw readings
    main = res.charts[("m-0001", "temperature")].main
    assert main.kind == "xbar" and main.span_s == 5.0
    assert res.charts[("m-0001", "temperature")].dispersion.points["OUT"].iloc[9]  # the spike


def test_fault_coverage_against_ground_truth():
    res = spc.chart_per_sensor(long_frame(), baseline_s=30)
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    at = lambda s: t0 + pd.Timedelta(seconds=s)  # noqa: E731
    truth = pd.DataFrame({
        "event_id": [1, 2, 3, 4],
        "kind": ["spike", "drift", "failure", "loss"],
        "machine_id": ["m-0001", "m-0002", "m-0001", "m-0001"],
        "sensor_type": ["temperature", "temperature", None, "temperature"],
        "start_ts": [at(45), at(10), at(40), at(45)],
        "end_ts": [at(45), at(20), at(50), at(45)],
    })  # fmt: skip
    cov = spc.fault_coverage(res, truth)
    assert cov["kind"].tolist() == ["spike", "drift", "failure"]  # loss does not change values
    assert cov["flagged"].tolist() == [True, False, True]
    assert cov.loc[0, "delay_s"] == 0 and "WE1" in cov.loc[0, "first_rules"]
    assert cov.loc[2, "sensors"] == "pressure,temperature"  # machine-wide
    by_kind = spc.coverage_by_kind(cov).set_index("kind")
    assert by_kind.loc["spike", "share"] == 1.0 and by_kind.loc["drift", "share"] == 0.0
    assert len(spc.faults_on(truth, "m-0001", "pressure")) == 1  # the machine-wide failure
    share = spc.violations_in_faults(res, truth)
    assert 0 < share <= 1


def test_a_hundred_thousand_readings_are_charted_whole():
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, 100_000)
    x[rng.random(x.size) < 0.01] = np.nan
    x[60_000] = 9.0
    i, _ = spc.individuals_chart(x, baseline=1000, rules="nelson")
    assert len(i.points) == 100_000 and i.points["N1"].iloc[60_000]
    assert abs(i.sigma - 1) < 0.1


# --- the notebook ------------------------------------------------------------------------


def test_spc_notebook_runs_headless_and_catches_the_injected_spikes(kernel_env, tmp_path):
    result = run_notebook("04_spc", tmp_path, machines=2, duration_s=120, seed=3,
                          chaos={"spike": 0.02}, baseline_s=40, bucket_s=5)  # fmt: skip
    assert result["run_id"]
    machine, sensor = result["charted"].split("/")
    assert sensor == "temperature" and machine in ("m-0001", "m-0002")
    assert result["points"] == 120  # one temperature reading a second, none lost
    assert result["series"] == 2 * 5 and result["subgroups"] == 120 // 5
    assert result["centre"] == "moving"
    v = result["violations"]
    assert set(v) == {"WE1", "WE2", "WE3", "WE4", "any"}
    # a temperature follows load through a thermal lag: fixed limits flag far more points
    assert result["violations_fixed_centre"]["any"] > 2 * v["any"]
    assert v["WE1"] >= 1 and max(v["WE1"], v["WE4"]) <= v["any"] <= sum(v.values()) - v["any"]
    cap = result["capability"]  # temperature, USL 85 C: one-sided, so no Cp or Pp
    assert cap["cp"] is None and cap["pp"] is None and cap["ppk"] > 0
    # a temperature that follows load is not in control against its noise: no Cpk then
    assert (cap["cpk"] is not None) == cap["stable"] and result["cpk"] == cap["cpk"]
    caught = result["faults_caught"]
    assert caught["episodes"] >= 3  # spikes on temperature, vibration and pressure
    assert caught["by_kind"] == {"spike": 1.0}  # every spike breaks WE1
    assert 0 < result["violations_in_faults"] <= 1
