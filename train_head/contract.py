"""The contract between training and driving: what a checkpoint promises the agent that drives with it.

train_head writes a DriveContract into every checkpoint; drive.agent reads it back and makes features the
way stage 1 stored them (backbone, weights, preprocessing, reduction with its PCA), feeds sequences the way
the sampler drew them (timing, layers), and starts the controller from the stored defaults. The
controller's settings and their checks live here, once: train_head checks them before storing them and
drive before driving (train_head may not import drive; drive imports this).

Old checkpoints (format 1: an untyped dict with seq_len/stride_s beside the sampler, a controller of five
fields) are converted when read.
"""
import dataclasses
from dataclasses import asdict, dataclass, field, fields

from cache.reduce import Reduction
from cache.sampler import SamplerSettings
from cache.store import LAST
from data.errors import require
from extract_features.preprocess import PreprocessSettings
from train_head.heads import HeadSettings


@dataclass
class ControllerSettings:
    """Key probabilities → key holds (drive.controller.decide); stored in the checkpoint as drive's defaults."""

    max_steer: float = 1.0  # a/d are held for at most this fraction of the decision interval
    steer_gain: float = 1.0  # proportional steering holds a/d for gain · |p(a) - p(d)| of the interval
    gas_threshold: float = 0.5  # w held while p(w) >= this
    brake_threshold: float = 0.5  # s held while p(s) >= this
    steer_threshold: float = 0.5  # thresholded variant only: a/d pressed while p >= this
    proportional: bool = True  # False: a/d by threshold (for comparison), held for max_steer · interval
    proportional_gas: bool = False  # True: w held for p(w) · interval (partial throttle), not by threshold

    def __post_init__(self):
        """Checked when made: train_head before a checkpoint stores them, drive before the first decision."""
        self.check()

    def check(self) -> None:
        require(0.0 <= self.max_steer <= 1.0, "--max-steer", self.max_steer, "a fraction of the interval in [0, 1]")
        require(self.steer_gain > 0, "--steer-gain", self.steer_gain, "> 0")
        for name in ("gas_threshold", "brake_threshold", "steer_threshold"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"--{name.replace('_', '-')}", value, "a probability in [0, 1]")

    def with_overrides(self, **overrides) -> "ControllerSettings":
        """These settings with the overrides whose value is not None."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class DriveContract:
    """Everything drive needs besides the head's weights."""

    backbone: str  # extract_features backbone name
    weights_digest: str  # the backbone weights the features came from; drive refuses others
    weights_label: str  # how they are named to the user (a random backbone says so)
    weights_source: str  # where extraction found them (drive's default --weights)
    precision: str  # "fp32", "bf16" or "int8": the backbone's precision at extraction
    preprocess: PreprocessSettings
    reduction: Reduction
    sampler: SamplerSettings  # sequence timing (seq_len, stride_s, label_shift_s) and the blocks read
    head: HeadSettings
    controller: ControllerSettings  # drive's defaults
    profile: str  # the game profile the recordings were made with (frame size, fps)
    projection: dict | None = None  # PCA of the last block {"mean", "components"}; None without PCA
    layer_projections: dict = field(default_factory=dict)  # PCA of earlier blocks, by block number

    @property
    def seq_len(self) -> int:
        return self.sampler.seq_len

    @property
    def stride_s(self) -> float:
        return self.sampler.stride_s

    @property
    def label_shift_s(self) -> float:
        return self.sampler.label_shift_s

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.sampler.layers)

    def checkpoint_entries(self) -> dict:
        """The checkpoint entries save_checkpoint takes: settings, projection, layer_projections."""
        settings = {f.name: getattr(self, f.name) for f in fields(self)
                    if f.name not in ("projection", "layer_projections")}
        return {"settings": {k: asdict(v) if dataclasses.is_dataclass(v) else v for k, v in settings.items()},
                "projection": self.projection, "layer_projections": dict(self.layer_projections)}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "DriveContract":
        """A checkpoint read by train_head.checkpoint.load_checkpoint → its contract (format 1 converted)."""
        s = ckpt["settings"]
        sampler = {**_known(SamplerSettings, s["sampler"]), **_format1_timing(s)}
        sampler["layers"] = tuple(sampler.get("layers", (LAST,)))  # format 1 from before layers: the last block
        return cls(
            backbone=s["backbone"], weights_digest=s["weights_digest"], weights_label=s["weights_label"],
            weights_source=s["weights_source"], precision=s.get("precision", "fp32"),
            preprocess=PreprocessSettings(**{k: tuple(v) if isinstance(v, list) else v
                                             for k, v in _known(PreprocessSettings, s["preprocess"]).items()}),
            reduction=Reduction(**_known(Reduction, s["reduction"])),
            sampler=SamplerSettings(**sampler), head=HeadSettings(**s["head"]),
            controller=ControllerSettings(**_known(ControllerSettings, s.get("controller", {}))),
            profile=s["profile"], projection=ckpt.get("projection"),
            layer_projections={int(k): v for k, v in (ckpt.get("layer_projections") or {}).items()})


def _known(cls, values: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _format1_timing(s: dict) -> dict:
    """Format 1 stored the timing the agent read beside the sampler too; that copy was the one read."""
    return {k: s[k] for k in ("seq_len", "stride_s", "label_shift_s") if k in s}
