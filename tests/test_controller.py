import math

import pytest

from data.errors import UserError
from drive.controller import ControllerSettings, decide


def test_proportional_steer_is_delta_times_interval():
    # p(a) - p(d) = 0.6 → a held 0.6 of a 0.2 s interval; d released; w above threshold held, s released
    hold = decide([0.9, 0.7, 0.1, 0.1], 0.2, ControllerSettings(max_steer=1.0))
    assert hold["a"] == pytest.approx(0.12)
    assert hold["d"] == 0
    assert hold["w"] == math.inf
    assert hold["s"] == 0


def test_right_steer_wins_when_d_is_more_probable():
    hold = decide([0.2, 0.25, 0.0, 0.75], 0.1, ControllerSettings())
    assert hold["d"] == pytest.approx(0.05)
    assert hold["a"] == 0
    assert hold["w"] == 0 and hold["s"] == 0


def test_steer_capped_at_max_steer_fraction_of_interval():
    hold = decide([0, 1.0, 0, 0.0], 0.25, ControllerSettings(max_steer=0.4))
    assert hold["a"] == pytest.approx(0.1)
    hold = decide([0, 0.3, 0, 0.1], 0.25, ControllerSettings(max_steer=0.4))  # under the cap: proportional
    assert hold["a"] == pytest.approx(0.05)


def test_steer_gain_scales_the_hold_up_to_the_cap():
    gain = ControllerSettings(steer_gain=1.5, max_steer=0.9)
    assert decide([0, 0.5, 0, 0.1], 0.2, gain)["a"] == pytest.approx(1.5 * 0.4 * 0.2)
    assert decide([0, 0.1, 0, 0.8], 0.2, gain)["d"] == pytest.approx(0.9 * 0.2)  # 1.5 · 0.7 > 0.9: capped
    with pytest.raises(UserError, match="--steer-gain"):
        ControllerSettings(steer_gain=0).check()


def test_equal_steer_probabilities_release_both():
    hold = decide([0.0, 0.8, 0.0, 0.8], 0.3, ControllerSettings())
    assert hold["a"] == 0 and hold["d"] == 0


def test_gas_and_brake_thresholds():
    s = ControllerSettings(gas_threshold=0.6, brake_threshold=0.3)
    assert decide([0.59, 0, 0.29, 0], 0.1, s) == {"w": 0, "a": 0, "s": 0, "d": 0}
    assert decide([0.6, 0, 0.0, 0], 0.1, s)["w"] == math.inf  # threshold itself passes
    assert decide([0.1, 0, 0.3, 0], 0.1, s)["s"] == math.inf


def test_gas_and_brake_never_held_together():
    s = ControllerSettings()
    hold = decide([0.7, 0, 0.9, 0], 0.1, s)
    assert (hold["w"], hold["s"]) == (0, math.inf)
    hold = decide([0.95, 0, 0.9, 0], 0.1, s)
    assert (hold["w"], hold["s"]) == (math.inf, 0)
    hold = decide([0.8, 0, 0.8, 0], 0.1, s)  # a tie goes to gas
    assert (hold["w"], hold["s"]) == (math.inf, 0)


def test_thresholded_variant_holds_full_capped_interval():
    s = ControllerSettings(proportional=False, steer_threshold=0.5, max_steer=0.5)
    assert decide([0, 0.55, 0, 0.1], 0.2, s)["a"] == pytest.approx(0.1)  # full strength, capped at 0.5
    assert decide([0, 0.45, 0, 0.1], 0.2, s)["a"] == 0  # below threshold: proportional would steer
    hold = decide([0, 0.6, 0, 0.9], 0.2, s)  # both pass: the larger side only
    assert hold["d"] == pytest.approx(0.1) and hold["a"] == 0


def test_zero_interval_gives_no_steer():
    assert decide([1, 1, 0, 0], 0.0, ControllerSettings())["a"] == 0


def test_bad_probabilities_and_settings_raise():
    with pytest.raises(ValueError):
        decide([0.5, 0.5, 0.5], 0.1, ControllerSettings())
    with pytest.raises(ValueError):
        decide([0.5, float("nan"), 0.5, 0.5], 0.1, ControllerSettings())
    with pytest.raises(UserError, match="--max-steer"):
        ControllerSettings(max_steer=1.5).check()
    with pytest.raises(UserError, match="--gas-threshold"):
        ControllerSettings(gas_threshold=-0.1).check()


def test_proportional_gas_holds_w_for_its_share_and_yields_to_the_brake():
    gas = ControllerSettings(proportional_gas=True)
    assert decide([0.4, 0, 0, 0], 0.1, gas)["w"] == pytest.approx(0.04)  # tapped below the threshold too
    assert decide([0.995, 0, 0, 0], 0.1, gas)["w"] == math.inf  # held on into the next decision
    assert decide([0.0, 0, 0, 0], 0.1, gas)["w"] == 0.0
    braking = decide([0.6, 0, 0.7, 0], 0.1, gas)
    assert braking["w"] == 0.0 and braking["s"] == math.inf
    assert decide([0.4, 0, 0, 0], 0.1, ControllerSettings())["w"] == 0.0  # the default: by threshold
