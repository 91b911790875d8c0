"""Stage-2 parts: optimiser and schedule, metrics and their log/plot, checkpoints."""
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.errors import UserError
from train_head import checkpoint as ckpt_module
from train_head.checkpoint import load_checkpoint, save_checkpoint
from train_head.heads import HeadSettings, build_head
from train_head.metrics import MetricsLog, plot_curves, pos_weight_from_labels, read_metrics, val_metrics
from train_head.optim import OptimSettings, decay_groups, lr_at, make_optimizer, set_lr


def tiny(**kw) -> HeadSettings:
    return HeadSettings(**{"grid": (2, 3), "channels": 8, "seq_len": 3, "hidden": 32, "mlp_hidden": 32, **kw})


# --- optimiser and schedule -------------------------------------------------------------------

def test_weight_decay_only_on_weight_matrices():
    head = build_head(tiny(kind="lstm", tokens="both"))
    decay, keep = decay_groups(head, 0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    names = {id(p): n for n, p in head.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in keep["params"]}
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert decayed == {"frames.cnn.convs.0.weight", "frames.cnn.convs.3.weight", "frames.cnn.convs.5.weight",
                       "rnn.weight_ih_l0", "rnn.weight_hh_l0", "out.1.weight", "out.4.weight"}
    # the seed's LayerNorm([32, rows, cols]) has a 3-D weight; it is a norm, so it is not decayed
    assert "frames.cnn.convs.2.weight" in kept and head.frames.cnn.convs[2].weight.ndim == 3
    assert all(n.endswith("bias") or ".norm." in n or n.startswith(("out.0", "out.3", "frames.cnn.convs.2"))
               for n in kept)


def test_optimizer_uses_the_groups_and_betas():
    head = build_head(tiny())
    opt = make_optimizer(head, OptimSettings(weight_decay=0.05, betas=(0.8, 0.9)))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    set_lr(opt, 0.123)
    assert all(g["lr"] == 0.123 for g in opt.param_groups)


def test_fused_optimizer_steps_like_the_reference_loop():
    torch.manual_seed(0)
    head, ref = build_head(tiny()), build_head(tiny())
    ref.load_state_dict(head.state_dict())
    fused = make_optimizer(head, OptimSettings(weight_decay=0.05))
    assert fused.defaults["fused"]
    loop = torch.optim.AdamW(decay_groups(ref, 0.05), lr=lr_at(0, OptimSettings()), betas=OptimSettings().betas)
    patch, start = torch.randn(4, 3, 6, 8), [p.detach().clone() for p in head.parameters()]
    for step in range(3):
        for model, opt in ((head, fused), (ref, loop)):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(model(patch), torch.ones(4, 4) * (step % 2)).backward()
            opt.step()
    for a, b in zip(head.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(head.parameters(), start))  # every tensor took the steps


def test_a_torch_without_the_fused_kernel_gets_the_plain_loop(monkeypatch):
    plain = torch.optim.AdamW

    def no_fused(*args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return plain(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    opt = make_optimizer(build_head(tiny()), OptimSettings(weight_decay=0.05))
    assert not opt.defaults["fused"] and [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_schedule_warmup_cosine_floor():
    s = OptimSettings(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert lr_at(0, s) == pytest.approx(1e-3 / 11)
    assert lr_at(9, s) == pytest.approx(1e-3 * 10 / 11)
    assert lr_at(10, s) == pytest.approx(1e-3)  # warmup end: the peak
    assert lr_at(60, s) == pytest.approx((1e-3 + 1e-4) / 2)  # half way down the cosine
    assert lr_at(110, s) == pytest.approx(1e-4)
    assert lr_at(10_000, s) == pytest.approx(1e-4)
    lrs = [lr_at(i, s) for i in range(120)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(0, OptimSettings(lr=2e-3, warmup_steps=0, max_steps=5)) == pytest.approx(2e-3)


def test_schedule_settings_are_checked():
    with pytest.raises(UserError, match="100 warmup steps: must be >= 0 and below --steps 100"):
        OptimSettings(warmup_steps=100, max_steps=100)
    with pytest.raises(UserError, match="^--steps 0: must be at least 1$"):
        OptimSettings(warmup_steps=0, max_steps=0)
    with pytest.raises(UserError, match="min_lr"):
        OptimSettings(lr=1e-4, min_lr=1e-3)


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads, and lose a lot to them on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind,tokens", [("lstm", "patches"), ("gru", "both"), ("none", "cls")])
def test_tiny_head_overfits_a_tiny_batch(kind, tokens, one_thread):
    torch.manual_seed(0)
    s = tiny(kind=kind, tokens=tokens)
    head = build_head(s)
    patch = torch.randn(16, 3, 6, 8)
    cls = torch.randn(16, 3, 8)
    labels = torch.randint(0, 2, (16, 4)).float()
    opt_s = OptimSettings(lr=1e-2, min_lr=1e-3, warmup_steps=10, max_steps=300, weight_decay=0.0)
    opt = make_optimizer(head, opt_s)
    first = None
    for step in range(300):
        set_lr(opt, lr_at(step, opt_s))
        loss = F.binary_cross_entropy_with_logits(head(patch, cls), labels)
        first = loss.item() if first is None else first
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), opt_s.grad_clip)
        opt.step()
    head.eval()
    with torch.no_grad():
        final = val_metrics(head(patch, cls), labels)
    assert first > 0.5
    assert final["val_bce"] < 0.05
    assert final["val_exact_match"] == 1.0


# --- metrics ------------------------------------------------------------------------------------

LABELS = np.array([[1, 0, 0, 0],
                   [1, 1, 0, 0],
                   [0, 0, 0, 1],
                   [1, 0, 0, 1]])
LOGITS = np.array([[2.0, -1.0, -3.0, -2.0],
                   [0.5, 1.5, -2.0, -1.0],
                   [1.0, -0.5, 0.5, 3.0],
                   [-1.0, 0.2, -1.0, 0.3]])


def test_val_metrics_against_hand_computed_values():
    m = val_metrics(torch.tensor(LOGITS), torch.tensor(LABELS))
    p = 1 / (1 + np.exp(-LOGITS))
    bce = -np.mean(LABELS * np.log(p) + (1 - LABELS) * np.log(1 - p))
    assert m["val_bce"] == pytest.approx(bce)
    # predictions at 0.5: [1000], [1100], [1011], [0101]: rows 0 and 1 exactly right
    assert m["val_exact_match"] == pytest.approx(0.5)
    # w: scores 2.0(+) 1.0(-) 0.5(+) -1.0(+) → precision at each positive 1, 2/3, 3/4
    assert m["val_ap_w"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # w predicted [1,1,1,0] vs [1,1,0,1]: tp 2, fp 1, fn 1 → F1 = 4/6
    assert m["val_f1_w"] == pytest.approx(4 / 6)
    # a: only positive (row 1, 1.5) ranks first → AP 1; predicted [0,1,0,1]: tp 1, fp 1 → F1 2/3
    assert m["val_ap_a"] == pytest.approx(1.0)
    assert m["val_f1_a"] == pytest.approx(2 / 3)
    # d: positives rows 2 (3.0) and 3 (0.3), negatives -2.0, -1.0 → AP 1; predicted exactly → F1 1
    assert m["val_ap_d"] == pytest.approx(1.0) and m["val_f1_d"] == pytest.approx(1.0)
    # s never pressed: undefined, not a crash and not a made-up 0
    assert math.isnan(m["val_ap_s"]) and math.isnan(m["val_f1_s"])


def test_val_metrics_prefix_and_shape_check():
    m = val_metrics(LOGITS, LABELS, prefix="train_")
    assert set(m) == {"train_bce", "train_exact_match"} | {f"train_{x}_{k}" for x in ("ap", "f1") for k in "wasd"}
    with pytest.raises(ValueError, match="same shape"):
        val_metrics(LOGITS[:, :3], LABELS[:, :3])


def test_pos_weight_from_label_frequencies_is_clamped():
    labels = np.zeros((100, 4), dtype=np.uint8)
    labels[:80, 0] = 1  # w common: 20/80 → clamped up to 1
    labels[:20, 1] = 1  # a: 80/20 = 4
    labels[:1, 2] = 1  # s rare: 99/1 → clamped to 10
    # d never pressed → 1
    torch.testing.assert_close(pos_weight_from_labels(labels), torch.tensor([1.0, 4.0, 10.0, 1.0]))
    torch.testing.assert_close(pos_weight_from_labels(torch.tensor(labels), max_weight=50.0),
                               torch.tensor([1.0, 4.0, 50.0, 1.0]))


def test_metrics_log_writes_json_lines_and_resumes(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.log(10, train_loss=0.7, lr=np.float32(0.5))
        log.log(20, **val_metrics(LOGITS, LABELS))
        log.log(30, train_loss=0.5)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    rec = json.loads(lines[1])  # strict JSON: nan became null
    assert rec["step"] == 20 and rec["val_ap_s"] is None and rec["val_exact_match"] == 0.5
    assert json.loads(lines[0])["lr"] == 0.5

    with open(path, "a") as f:
        f.write('{"step": 40, "train_lo')  # a crash mid-line
    assert [r["step"] for r in read_metrics(path)] == [10, 20, 30]

    with MetricsLog(path, resume_step=20) as log:
        log.log(30, train_loss=0.4)
    assert [(r["step"], r.get("train_loss")) for r in read_metrics(path)] == [(10, 0.7), (20, None), (30, 0.4)]

    with MetricsLog(path):  # a fresh run starts empty
        pass
    assert path.read_text() == ""


def test_plot_curves_draws_a_png(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    rng = np.random.default_rng(0)
    with MetricsLog(jsonl) as log:
        for step in range(0, 200, 10):
            log.log(step, train_loss=1.0 / (1 + step / 20))
            if step % 50 == 0:
                logits = LOGITS * (1 + step / 50) + rng.normal(0, 0.1, LOGITS.shape)
                log.log(step, **val_metrics(logits, LABELS))
    png = plot_curves(jsonl, tmp_path / "out" / "curves.png")
    image = __import__("matplotlib.image", fromlist=["imread"]).imread(png)
    assert image.shape[:2] == (400, 1400)
    assert image[..., :3].std() > 0.01  # something was drawn
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curves.png"]


def test_plot_curves_refuses_an_empty_log(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text('{"step": 0, "lr": 0.1}\n')
    with pytest.raises(UserError, match="no train_loss or val_bce"):
        plot_curves(jsonl, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()
    with pytest.raises(UserError, match="no such metrics file"):
        plot_curves(tmp_path / "missing.jsonl", tmp_path / "curves.png")


# --- checkpoints --------------------------------------------------------------------------------

def trained_parts():
    torch.manual_seed(0)
    s = tiny(kind="gru", tokens="both")
    head = build_head(s)
    opt = make_optimizer(head, OptimSettings())
    patch, cls = torch.randn(4, 3, 6, 8), torch.randn(4, 3, 8)
    F.binary_cross_entropy_with_logits(head(patch, cls), torch.ones(4, 4)).backward()
    opt.step()
    return s, head, opt, (patch, cls)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    s, head, opt, (patch, cls) = trained_parts()
    pca = np.random.default_rng(0).normal(size=(768, 8)).astype(np.float32)
    path = save_checkpoint(tmp_path / "best.pt", head.state_dict(),
                           settings={"head": s, "optim": OptimSettings(), "seq_stride_s": 0.25,
                                     "out_dir": tmp_path},
                           fingerprint="abc123", step=np.int64(42), optimizer=opt.state_dict(),
                           pca={"components": pca, "mean": np.zeros(768, np.float32)})

    raw = torch.load(path, weights_only=True)  # the plain loader accepts it
    assert raw["fingerprint"] == "abc123" and raw["step"] == 42 and type(raw["step"]) is int
    assert raw["settings"]["head"] == asdict(s)
    assert raw["settings"]["out_dir"] == str(tmp_path)
    assert torch.equal(raw["pca"]["components"], torch.from_numpy(pca))

    loaded = load_checkpoint(path, expected_fingerprint="abc123")
    again = build_head(HeadSettings(**loaded["settings"]["head"]))
    again.load_state_dict(loaded["model"])
    head.eval(), again.eval()
    assert torch.equal(head(patch, cls), again(patch, cls))
    opt2 = make_optimizer(again, OptimSettings(**loaded["settings"]["optim"]))
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_checkpoint_refuses_another_cache(tmp_path):
    s, head, _, _ = trained_parts()
    path = save_checkpoint(tmp_path / "last.pt", head.state_dict(), {"head": s}, fingerprint="cache-A")
    with pytest.raises(UserError) as err:
        load_checkpoint(path, expected_fingerprint="cache-B")
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "cache-A" in message and "cache-B" in message


def test_missing_and_corrupt_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    s, head, _, _ = trained_parts()
    good = save_checkpoint(tmp_path / "good.pt", head.state_dict(), {"head": s}, fingerprint="f")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(UserError, match="not a train_head checkpoint"):
        load_checkpoint(foreign)


def test_failed_save_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    s, head, _, _ = trained_parts()
    path = save_checkpoint(tmp_path / "best.pt", head.state_dict(), {"head": s}, fingerprint="old")
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, head.state_dict(), {"head": s}, fingerprint="new")
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "fresh.pt", head.state_dict(), {"head": s}, fingerprint="new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    assert path.read_bytes() == before
    assert load_checkpoint(path)["fingerprint"] == "old"


def test_unstorable_values_are_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="cannot store object"):
        save_checkpoint(tmp_path / "x.pt", {}, {"callback": object()}, fingerprint="f")
    with pytest.raises(TypeError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", {}, {}, fingerprint="f", model={})
    assert list(tmp_path.iterdir()) == []
