"""The feature cache on disk (Zarr v3): one group per source episode, one subgroup per variant.

    CACHE/                   attrs: format, fingerprint, spec (backbone, weights, preprocessing,
                             augmentation, reduction, block size), grid, channels
      pca/mean, pca/components          (only with a PCA reduction)
      episodes/<id>/         attrs: recording path, source digest, kind
        rows    int64 (T',)             cache row -> recording row (labels stay in the recording)
        <variant>/patch  (T', P, C')    fp16, or int8 with <variant>/scale (T', P) fp16
        <variant>/cls    (T', C)        fp16
        <variant>/registers (T', R, C)  fp16, when the backbone has registers
        <variant>/patch_bN, scale_bN    patch tokens of earlier block N (0-based), reduced like patch: only
                                        for the blocks in spec.layers (extract_features --layers)
      pca_bN/mean, pca_bN/components    the PCA of block N's tokens (only with a PCA reduction and layers)
        <variant>/done   (n_blocks,)    1 once a block is written: resumable, block by block

Tokens are stored uncompressed: they do not compress, and decompression would slow stage 2. Their chunk
files are then plain rows of bytes, which `read_rows` reads straight into the result.
"""
import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.codecs import BytesCodec
from zarr.storage import LocalStore

from cache.buffers import empty_array
from cache.reduce import Projection, Reduction
from data.errors import UserError, disk_error

FORMAT = "gta-drive-features"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CacheSpec:
    """Everything that decides the cached numbers. Its hash is the cache fingerprint."""

    backbone: str
    weights_digest: str
    weights_label: str
    weights_source: str  # what --weights said (official, a path, random): where drive finds them again
    preprocess: dict
    precision: str  # "fp32", "bf16" (autocast) or "int8" (dynamic, CPU): the backbone's, which moves the tokens slightly
    augment: str  # the augmentation spec's stable text form
    augment_seed: int
    reduction: dict
    block_rows: int  # extraction and augmentation block: all frames in a block share one transform
    grid: tuple[int, int]  # patch rows, cols
    channels: int  # backbone width
    registers: int
    layers: tuple[int, ...] = ()  # earlier blocks (0-based) whose patch tokens are stored beside the last's
    hud: str = "keep"  # "distort": augmentation moved the HUD (minimap) like any other pixels (an ablation)

    def fingerprint(self) -> str:
        parts = asdict(self)
        parts.pop("weights_label")  # the digest decides; label and source are for people and drive
        parts.pop("weights_source")
        if not parts["layers"]:  # caches made before layers existed keep their fingerprint
            parts.pop("layers")
        if parts["hud"] == "keep":  # ... and so do caches made before the hud setting
            parts.pop("hud")
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def random_backbone_note(spec: dict) -> str:
    """'' for trained weights; for a randomly initialised backbone a line naming it, which every output file
    made from this cache (metrics, tables, plots) carries so no result is mistaken for real features."""
    label = spec.get("weights_label", "")
    return f"backbone {spec.get('backbone')}: {label}" if "RANDOM" in label else ""


LAST = -1  # the last block, in layer choices (its tokens are the arrays 'patch' and 'scale')


def layer_arrays(layer: int) -> tuple[str, str]:
    """(patch, scale) array names of a block's tokens; LAST is the backbone's output."""
    return ("patch", "scale") if layer == LAST else (f"patch_b{layer}", f"scale_b{layer}")


def episode_id(recording: Path, roots: list[Path]) -> str:
    """A stable name for a recording: its path below its recordings root, '/' -> '__'."""
    for root in roots:
        if recording.is_relative_to(root) and recording != root:
            return str(recording.relative_to(root)).replace(os.sep, "__")
    return recording.name


class CachedEpisode:
    def __init__(self, group: zarr.Group, block_rows: int):
        self.group = group
        self.id = group.basename
        self.attrs = dict(group.attrs)
        self.recording = Path(self.attrs["recording"])
        self.digest = self.attrs["source_digest"]
        self.rows = group["rows"][:]
        self.block_rows = block_rows
        self.variants = list(self.attrs["variants"])

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block_rows)

    def block_range(self, block: int) -> tuple[int, int]:
        return block * self.block_rows, min(self.n_rows, (block + 1) * self.block_rows)

    def done(self, variant: str) -> np.ndarray:
        return self.group[f"{variant}/done"][:].astype(bool)

    def complete(self) -> bool:
        return all(self.done(v).all() for v in self.variants)

    def damage(self) -> str | None:
        """What is wrong with the token chunk files on disk, or None: a missing one (zarr would read it as
        zeros) or one of the wrong size. One stat per chunk; chunks of a cache made elsewhere than a local
        disk are not checked."""
        for variant in self.variants:
            for name, array in self.group[variant].arrays():
                folder = _raw_chunk_folder(array)
                if name == "done" or folder is None:
                    continue
                size = array.chunks[0] * int(np.prod(array.shape[1:])) * array.dtype.itemsize
                for chunk in range(-(-array.shape[0] // array.chunks[0])):
                    key = array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))
                    try:
                        found = (folder / key).stat().st_size
                    except FileNotFoundError:
                        return f"{variant}/{name} chunk {key} is missing"
                    if found != size:
                        return f"{variant}/{name} chunk {key} holds {found} bytes, not {size}"
        return None

    def write_block(self, variant: str, block: int, arrays: dict[str, np.ndarray]) -> None:
        """Write one block of every array, then mark it done (a kill in between redoes the block)."""
        start, stop = self.block_range(block)
        for name, values in arrays.items():  # zeros too: a missing chunk file then always means damage
            self.group[f"{variant}/{name}"].with_config({"write_empty_chunks": True})[start:stop] = values
        self.group[f"{variant}/done"][block] = 1

    def read(self, variant: str, start: int = 0, stop: int | None = None,
             names: tuple[str, ...] = ("patch", "scale", "cls")) -> dict[str, np.ndarray]:
        """Stored arrays of rows [start, stop), one contiguous read each."""
        group = self.group[variant]
        return {name: read_rows(group[name], start, stop) for name in names if name in group}

    def read_spans(self, spans: list[tuple[str, int, int]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Rows [start, stop) of each (variant, start, stop), one span after the other in one array per name."""
        groups = [self.group[variant] for variant, _, _ in spans]
        total = sum(stop - start for _, start, stop in spans)
        out = {}
        for name in (n for n in names if n in groups[0]):
            arrays = [group[name] for group in groups]
            out[name] = empty_array((total, *arrays[0].shape[1:]), arrays[0].dtype)
            offset = 0
            for array, (_, start, stop) in zip(arrays, spans):
                read_rows(array, start, stop, out=out[name][offset:offset + stop - start])
                offset += stop - start
        return out


def read_rows(array: zarr.Array, start: int = 0, stop: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """array[start:stop] along axis 0, into `out` when given. Uncompressed arrays on a local disk are read
    from their chunk files straight into the result: zarr's own read copies every chunk twice and runs at a
    fraction of the disk's speed. Anything else is read by zarr."""
    start, stop, _ = slice(start, stop).indices(array.shape[0])
    stop = max(start, stop)
    if out is None:
        out = empty_array((stop - start, *array.shape[1:]), array.dtype)
    if out.shape != (stop - start, *array.shape[1:]) or out.dtype != array.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous {array.dtype} array of shape {(stop - start, *array.shape[1:])}")
    folder = _raw_chunk_folder(array)
    if folder is None:
        out[...] = array[start:stop]
        return out
    row_bytes = out[:1].nbytes if len(out) else 0
    chunk_rows = array.chunks[0]
    flat = memoryview(out.reshape(-1).view(np.uint8))
    for chunk in range(start // chunk_rows, -(-stop // chunk_rows)):
        lo, hi = max(start, chunk * chunk_rows), min(stop, (chunk + 1) * chunk_rows)
        key = array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))
        target = flat[(lo - start) * row_bytes:(hi - start) * row_bytes]
        if not _read_chunk_rows(folder / key, (lo - chunk * chunk_rows) * row_bytes, chunk_rows * row_bytes, target):
            out[lo - start:hi - start] = array[lo:hi]  # absent (all fill value) or unexpected: zarr knows
    return out


def _raw_chunk_folder(array: zarr.Array) -> Path | None:
    """The folder of the array's chunk files when each holds whole rows as raw native-order bytes."""
    meta, store = array.metadata, array.store_path.store
    raw = (meta.zarr_format == 3 and isinstance(store, LocalStore) and array.dtype.kind in "biuf"
           and len(meta.codecs) == 1 and isinstance(meta.codecs[0], BytesCodec)
           and (meta.codecs[0].endian is None or meta.codecs[0].endian.value == sys.byteorder)
           and not meta.storage_transformers and tuple(array.chunks[1:]) == tuple(array.shape[1:]))
    return Path(store.root) / array.store_path.path if raw else None


def _read_chunk_rows(path: Path, offset: int, chunk_bytes: int, target: memoryview) -> bool:
    """Fill target from the chunk file at offset; False when the file is absent or not one full chunk."""
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        return False
    with f:
        if os.fstat(f.fileno()).st_size != chunk_bytes:
            return False
        f.seek(offset)
        while target.nbytes:
            n = f.readinto(target)
            if not n:
                return False
            target = target[n:]
    return True


def _pca_groups(layers: tuple[int, ...]) -> list[tuple[int, str]]:
    return [(LAST, "pca")] + [(layer, f"pca_b{layer}") for layer in layers]


class FeatureCache:
    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self.group = group
        self.attrs = dict(group.attrs)
        self.fingerprint = self.attrs["fingerprint"]
        self.spec = self.attrs["spec"]
        self.block_rows = int(self.spec["block_rows"])
        self.grid = tuple(self.spec["grid"])
        self.layers = tuple(int(n) for n in self.spec.get("layers", ()))  # earlier blocks stored
        self.projections = {layer: Projection(torch.from_numpy(group[f"{name}/mean"][:]),
                                              torch.from_numpy(group[f"{name}/components"][:]))
                            for layer, name in _pca_groups(self.layers) if name in group}
        self.projection = self.projections.get(LAST)  # the last block's

    @property
    def reduction(self) -> Reduction:
        return Reduction(**self.spec["reduction"])

    @property
    def stored_channels(self) -> int:
        return self.projection.components.shape[0] if self.projection is not None else int(self.spec["channels"])

    @classmethod
    def open(cls, path: str | Path) -> "FeatureCache":
        path = Path(path)
        try:
            group = zarr.open_group(path, mode="r+")
            if group.attrs.get("format") != FORMAT:
                raise ValueError("not a feature cache")
        except Exception:
            raise UserError(f"{path}: not a feature cache; make one with `python -m extract_features`") from None
        return cls(path, group)

    @classmethod
    def create_or_open(cls, path: str | Path, spec: CacheSpec, projections: dict[int, Projection] | None = None) -> "FeatureCache":
        """Open the cache at path, refusing one made with other settings; create it if absent.
        projections: the PCA of each stored block (LAST and spec.layers), when the reduction has one.

        Creation is atomic (built beside, then renamed), so shards racing to create it agree.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UserError(f"--cache {path}: is a file; give a folder for the feature cache")
        empty = path.is_dir() and not any(path.iterdir())  # a folder made beforehand becomes the cache
        if empty or not path.exists():
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
            try:
                group = zarr.open_group(tmp, mode="w-", zarr_format=3)
                group.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                                    "fingerprint": spec.fingerprint(), "spec": asdict(spec)})
                for layer, name in _pca_groups(spec.layers):
                    if projections and layer in projections:
                        group.create_array(f"{name}/mean", data=projections[layer].mean.numpy())
                        group.create_array(f"{name}/components", data=projections[layer].components.numpy())
                group.create_group("episodes")
            except OSError as e:  # full or read-only disk: leave nothing half-made behind
                shutil.rmtree(tmp, ignore_errors=True)
                raise disk_error(e, path) from None
            try:
                if empty:
                    path.rmdir()
                os.rename(tmp, path)
            except OSError:  # another shard created it first
                shutil.rmtree(tmp, ignore_errors=True)
        cache = cls.open(path)
        if cache.fingerprint != spec.fingerprint():
            theirs, ours = cache.spec, asdict(spec)
            diff = [k for k in ours if json.dumps(ours[k], sort_keys=True) != json.dumps(theirs.get(k), sort_keys=True)]
            raise UserError(f"{path}: made with other settings (differs in {', '.join(diff)}; fingerprint "
                            f"{cache.fingerprint}, asked {spec.fingerprint()}); use another --cache directory")
        return cache

    def episodes(self) -> list[CachedEpisode]:
        """Every fully set-up source episode (its blocks may still be missing)."""
        found = (self.episode(name) for name in sorted(self.group["episodes"].group_keys()))
        return [ep for ep in found if ep is not None]

    def episode(self, episode_id: str) -> CachedEpisode | None:
        group = self.group["episodes"]
        if episode_id not in group or "recording" not in group[episode_id].attrs:
            return None
        return CachedEpisode(group[episode_id], self.block_rows)

    def remove_episode(self, episode_id: str) -> None:
        shutil.rmtree(self.path / "episodes" / episode_id, ignore_errors=True)

    def add_episode(self, episode_id: str, recording: Path, digest: str, kind: str, rows: np.ndarray,
                    variants: list[str]) -> CachedEpisode:
        """Create the (empty) arrays of one source episode; blocks are filled by write_block."""
        n, (gr, gc) = len(rows), self.grid
        p, c, full = gr * gc, self.stored_channels, int(self.spec["channels"])
        block = self.block_rows
        group = self.group["episodes"].create_group(episode_id)
        group.create_array("rows", data=np.asarray(rows, dtype=np.int64))
        int8 = self.spec["reduction"]["dtype"] == "int8"
        for v in variants:
            for patch, scale in map(layer_arrays, (LAST, *self.layers)):
                group.create_array(f"{v}/{patch}", shape=(n, p, c), chunks=(block, p, c),
                                   dtype="int8" if int8 else "float16", compressors=None)
                if int8:
                    group.create_array(f"{v}/{scale}", shape=(n, p), chunks=(block, p), dtype="float16", compressors=None)
            group.create_array(f"{v}/cls", shape=(n, full), chunks=(block, full), dtype="float16", compressors=None)
            if self.spec["registers"]:
                r = int(self.spec["registers"])
                group.create_array(f"{v}/registers", shape=(n, r, full), chunks=(block, r, full),
                                   dtype="float16", compressors=None)
            group.create_array(f"{v}/done", shape=(-(-n // block),), chunks=(4096,), dtype="uint8", fill_value=0)
        # attributes last: an episode group without them is half-made and is rebuilt
        group.attrs.update({"recording": str(recording), "source_digest": digest, "kind": kind,
                            "variants": list(variants)})
        return CachedEpisode(group, block)
