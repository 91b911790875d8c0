"""Property tests of every numeric option: each settings dataclass takes the valid values and refuses the
others (NaN included) with the project's error, whose message starts with the user-facing flag."""
import math
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from cache.reduce import Reduction
from cache.sampler import MAX_SECONDS, SamplerSettings
from data.errors import UserError
from data.legacy import ImportSettings
from data.profiles import load_profile
from data.recorder import RecorderSettings
from data.split import SplitSettings
from drive.carracing.game import MAX_LATENCY_S, check_latency
from extract_features.selection import MAX_BLOCK_ROWS, ExtractSettings
from drive.carracing.demo import DemoSettings
from train_head.optim import OptimSettings
from train_head.contract import ControllerSettings
from train_head.train import TrainSettings

NAN = st.just(math.nan)


def floats(lo=None, hi=None, **kw):
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False, **kw)


def positive_ints():
    return st.integers(1, 10 ** 6)


def below_one():
    return st.integers(-10 ** 6, 0)


def share():
    return floats(0.0, 1.0)


def not_share():
    return floats(1.0, 1e9, exclude_min=True) | floats(-1e9, 0.0, exclude_max=True) | NAN


def positive(hi=1e6):
    return floats(0.0, hi, exclude_min=True)


def not_positive():
    return floats(-1e9, 0.0) | NAN


# (settings factory, field, flag, valid values, invalid values)
OPTIONS = [
    (Reduction, "fps", "--fps", positive(1000), not_positive() | floats(1000, 1e9, exclude_min=True)),
    (Reduction, "pca_dim", "--pca", positive_ints(), below_one()),
    (partial(ExtractSettings, [Path("r")], Path("c")), "block_rows", "--block-rows", st.integers(1, MAX_BLOCK_ROWS),
     below_one() | st.integers(MAX_BLOCK_ROWS + 1, 10 ** 12)),
    (partial(ExtractSettings, [Path("r")], Path("c")), "batch_size", "--batch-size", positive_ints(), below_one()),
    (SamplerSettings, "seq_len", "--seq-len", positive_ints(), below_one()),
    (SamplerSettings, "stride_s", "--stride", positive(MAX_SECONDS), not_positive() | floats(MAX_SECONDS, 1e9, exclude_min=True)),
    (SamplerSettings, "label_shift_s", "--label-shift", floats(0.0, MAX_SECONDS),
     floats(-1e9, 0.0, exclude_max=True) | floats(MAX_SECONDS, 1e9, exclude_min=True) | NAN),
    (SamplerSettings, "batch_size", "--batch-size", positive_ints(), below_one()),
    (SamplerSettings, "seed", "--seed", st.integers(0, 2 ** 32), st.integers(-2 ** 32, -1)),
    (SplitSettings, "seed", "--seed", st.integers(0, 2 ** 32), st.integers(-2 ** 32, -1)),
    (SplitSettings, "val_fraction", "--val-fraction", floats(0.0, 1.0, exclude_max=True), not_share() | st.just(1.0)),
    (partial(OptimSettings, warmup_steps=0), "max_steps", "--steps", positive_ints(), below_one()),
    (partial(OptimSettings, min_lr=0.0), "lr", "--lr", positive(10.0), not_positive() | floats(10.0, 1e9, exclude_min=True)),
    (partial(TrainSettings, Path("c"), Path("o")), "eval_every", "--eval-every", positive_ints(), below_one()),
    (partial(TrainSettings, Path("c"), Path("o")), "patience", "--patience", st.integers(0, 10 ** 6), st.integers(-10 ** 6, -1)),
    (ControllerSettings, "max_steer", "--max-steer", share(), not_share()),
    (ControllerSettings, "steer_gain", "--steer-gain", positive(), not_positive()),
    (ControllerSettings, "gas_threshold", "--gas-threshold", share(), not_share()),
    (ControllerSettings, "brake_threshold", "--brake-threshold", share(), not_share()),
    (ControllerSettings, "steer_threshold", "--steer-threshold", share(), not_share()),
    (ImportSettings, "fps", "--fps", floats(1.0, 1000.0), floats(-1e9, 1.0, exclude_max=True) | NAN | floats(1000, 1e9, exclude_min=True)),
    (ImportSettings, "stuck_pad_frames", "--stuck-pad-frames", st.integers(0, 10 ** 6), st.integers(-10 ** 6, -1)),
    (partial(RecorderSettings, Path("o"), load_profile("gta5")), "fps", "--fps", floats(1.0, 1000.0),
     floats(-1e9, 1.0, exclude_max=True) | NAN),
    (partial(RecorderSettings, Path("o"), load_profile("gta5")), "pad_seconds", "--pad-seconds", floats(0.0, 1e6),
     floats(-1e9, 0.0, exclude_max=True) | NAN),
    (partial(RecorderSettings, Path("o"), load_profile("gta5")), "discard_seconds", "--discard-seconds",
     floats(0.0, 1e6), floats(-1e9, 0.0, exclude_max=True) | NAN),
    (partial(RecorderSettings, Path("o"), load_profile("gta5")), "max_seconds", "--minutes", positive(), not_positive()),
    (DemoSettings, "minutes", "--minutes", positive(), not_positive()),
    (DemoSettings, "dagger_rounds", "--dagger-rounds", st.integers(0, 100), st.integers(-100, -1)),
    (DemoSettings, "dagger_minutes", "--dagger-minutes", positive(), not_positive()),
    (DemoSettings, "steps", "--steps", positive_ints(), below_one()),
    (DemoSettings, "tracks", "--tracks", positive_ints(), below_one()),
    (DemoSettings, "threads", "--threads", positive_ints(), below_one()),
    (DemoSettings, "workers", "--workers", positive_ints(), below_one()),
    (DemoSettings, "seed", "--seed", st.integers(0, 2**31), st.integers(-100, -1)),
    (check_latency, "latency", "--latency", positive(MAX_LATENCY_S),
     not_positive() | floats(MAX_LATENCY_S, 1e12, exclude_min=True)),
]


@pytest.mark.parametrize("make, field, flag, valid, invalid", OPTIONS,
                         ids=[f"{getattr(o[0], 'func', o[0]).__name__}.{o[1]}" for o in OPTIONS])
@settings(max_examples=30, deadline=None)  # never timed: the machine may be busy
@given(data=st.data())
def test_valid_values_pass_invalid_ones_name_the_flag(make, field, flag, valid, invalid, data):
    make(**{field: data.draw(valid, label="valid")})
    value = data.draw(invalid, label="invalid")
    with pytest.raises(UserError) as refused:
        make(**{field: value})
    assert str(refused.value).startswith(f"{flag} ") and "\n" not in str(refused.value)
