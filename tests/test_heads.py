"""Heads: the seed's layer shapes for every kind/token/sequence-length combination, and behaviour."""
import itertools

import pytest
import torch
from torch import nn

from data.errors import UserError
from train_head.heads import HEADS, KINDS, TOKENS, ConcatHead, HeadSettings, RecurrentHead, TransformerHead, build_head

SEED_GRID, VIT_B = (13, 18), 768
SEED_KINDS = [kind for kind, head in HEADS.items() if head in (RecurrentHead, ConcatHead)]  # the seed's CNN heads
COMBOS = list(itertools.product(SEED_KINDS, TOKENS, (1, 2, 3)))


def tokens_for(s: HeadSettings, batch: int = 2, seq: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    seq = s.seq_len if seq is None else seq
    patch = torch.randn(batch, seq, s.grid[0] * s.grid[1], s.channels, generator=g)
    cls = torch.randn(batch, seq, s.cls_dim, generator=g)
    return patch, cls


@pytest.mark.parametrize("kind,tokens,seq_len", COMBOS)
def test_seed_layer_shapes(kind, tokens, seq_len):
    s = HeadSettings(kind=kind, tokens=tokens, grid=SEED_GRID, channels=VIT_B, seq_len=seq_len)
    head = build_head(s)
    cnn_out = 8 * 13 * 18
    feat = {"patches": cnn_out, "cls": VIT_B, "both": cnn_out + VIT_B}[tokens]

    if tokens == "cls":
        assert head.frames.cnn is None
    else:
        convs = head.frames.cnn.convs
        conv_layers = [m for m in convs if isinstance(m, nn.Conv2d)]
        assert [tuple(c.weight.shape) for c in conv_layers] == [(32, 768, 5, 5), (16, 32, 5, 5), (8, 16, 3, 3)]
        assert [c.padding for c in conv_layers] == [(2, 2), (2, 2), (1, 1)]
        assert [type(m) for m in convs] == [nn.Conv2d, nn.ReLU, nn.LayerNorm, nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU]
        assert convs[2].normalized_shape == (32, 13, 18)
        assert head.frames.cnn.norm.normalized_shape == (cnn_out,)
    assert head.frames.out_dim == feat

    if kind == "none":
        assert isinstance(head, ConcatHead)
        assert tuple(head.mix[0].weight.shape) == (384, seq_len * feat)
    else:
        rnn = head.rnn
        assert isinstance(rnn, nn.LSTM if kind == "lstm" else nn.GRU)
        assert (rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bias) == (feat, 384, 1, False)
        assert sorted(n for n, _ in rnn.named_parameters()) == ["weight_hh_l0", "weight_ih_l0"]
        gates = 4 if kind == "lstm" else 3
        assert tuple(rnn.weight_ih_l0.shape) == (gates * 384, feat)

    out = head.out
    assert [type(m) for m in out] == [nn.LayerNorm, nn.Linear, nn.ReLU, nn.LayerNorm, nn.Linear]
    assert out[0].normalized_shape == (384,) and out[3].normalized_shape == (384,)
    assert tuple(out[1].weight.shape) == (384, 384) and tuple(out[4].weight.shape) == (4, 384)

    patch, cls = tokens_for(s)
    logits = head(patch if s.uses_patches else None, cls if s.uses_cls else None)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()


def small(**kw) -> HeadSettings:
    return HeadSettings(**{"grid": (3, 4), "channels": 6, "hidden": 16, "mlp_hidden": 8, **kw})


@pytest.mark.parametrize("kind", KINDS)
def test_every_frame_of_the_sequence_matters(kind):
    torch.manual_seed(0)
    s = small(kind=kind, tokens="patches", seq_len=3)
    head = build_head(s).eval()
    patch, _ = tokens_for(s)
    base = head(patch)
    for t in range(3):
        changed = patch.clone()
        changed[:, t] += 1.0
        assert not torch.allclose(head(changed), base), f"frame {t} has no effect"


def test_samples_in_a_batch_are_independent():
    torch.manual_seed(0)
    s = small(kind="lstm", tokens="both")
    head = build_head(s).eval()
    patch, cls = tokens_for(s, batch=3)
    full = head(patch, cls)
    alone = torch.cat([head(patch[i:i + 1], cls[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(full, alone, rtol=1e-5, atol=1e-5)


def test_token_choice_decides_what_is_read():
    torch.manual_seed(0)
    patch, cls = tokens_for(small())
    patches_head = build_head(small(tokens="patches")).eval()
    assert torch.equal(patches_head(patch, None), patches_head(patch, cls + 5))  # CLS ignored
    cls_head = build_head(small(tokens="cls")).eval()
    assert torch.equal(cls_head(None, cls), cls_head(patch + 5, cls))  # patches ignored
    both_head = build_head(small(tokens="both")).eval()
    assert not torch.allclose(both_head(patch, cls), both_head(patch, cls + 1))
    assert not torch.allclose(both_head(patch, cls), both_head(patch + 1, cls))
    with pytest.raises(ValueError, match="needs cls tokens"):
        both_head(patch, None)


def test_patch_tokens_are_laid_out_row_major_on_the_grid():
    s = small(tokens="patches", channels=1, grid=(3, 4))
    head = build_head(s)
    seen = []
    head.frames.cnn.convs[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    patch = torch.arange(12.0).reshape(1, 1, 12, 1).expand(1, 3, 12, 1)
    head(patch)
    grid = seen[0]  # (B*T, C, rows, cols)
    assert grid.shape == (3, 1, 3, 4)
    assert torch.equal(grid[0, 0], torch.arange(12.0).reshape(3, 4))


def test_cls_channels_may_differ_from_patch_channels():
    s = small(tokens="both", channels=6, cls_channels=10)
    head = build_head(s)
    patch, cls = tokens_for(s)
    assert cls.shape[-1] == 10
    assert head(patch, cls).shape == (2, 4)
    assert head.rnn.input_size == 8 * 12 + 10


def test_wrong_shapes_are_named():
    s = small(kind="none", seq_len=3)
    head = build_head(s)
    patch, _ = tokens_for(s, seq=2)
    with pytest.raises(ValueError, match="seq_len=3"):
        head(patch)
    with pytest.raises(ValueError, match=r"patch tokens must have shape \(B, T, 12, 6\)"):
        head(torch.zeros(2, 3, 12, 7))
    assert isinstance(build_head(small(kind="gru")), RecurrentHead)


def test_settings_reject_unknown_values_and_accept_a_stored_grid():
    with pytest.raises(UserError, match="head kind 'mamba' is unknown; use one of lstm, gru, none, transformer"):
        HeadSettings(kind="mamba")
    with pytest.raises(UserError, match=r"width 100 \(--transformer-width\) must be a multiple of its 3 heads"):
        HeadSettings(kind="transformer", width=100, heads=3)
    with pytest.raises(UserError, match="head tokens"):
        HeadSettings(tokens="registers")
    assert HeadSettings(grid=[13, 18]).grid == (13, 18)


def test_every_kind_is_built_as_registered():
    for kind in KINDS:
        assert type(build_head(small(kind=kind, depth=1, width=8, heads=2))) is HEADS[kind]


@pytest.mark.parametrize("tokens", TOKENS)
def test_transformer_head_reads_all_tokens_of_all_frames_with_their_places(tokens):
    torch.manual_seed(0)
    s = small(kind="transformer", tokens=tokens, seq_len=3, depth=2, width=16, heads=4)
    head = build_head(s).eval()
    assert isinstance(head, TransformerHead)
    assert len(head.encoder.layers) == 2 and head.encoder.layers[0].self_attn.num_heads == 4
    per_frame = (12 if s.uses_patches else 0) + (1 if s.uses_cls else 0)
    assert head.space.shape == (per_frame, 16) and head.time.shape == (3, 1, 16)
    seen = []
    head.encoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    patch, cls = tokens_for(s)
    base = head(patch, cls)
    assert base.shape == (2, 4) and seen[0] == (2, 1 + 3 * per_frame, 16)  # the read-out CLS + every token
    if s.uses_patches:  # swapping two patches of one frame changes the output: space positions count
        swapped = patch.clone()
        swapped[:, 1, [0, 5]] = patch[:, 1, [5, 0]]
        assert not torch.allclose(head(swapped, cls), base, atol=1e-5)
    # swapping two frames changes the output: time positions count
    order = [1, 0, 2]
    assert not torch.allclose(head(patch[:, order], cls[:, order]), base, atol=1e-5)
    with pytest.raises(ValueError, match="seq_len=3"):
        head(patch[:, :2], cls[:, :2])


def test_lstm_inference_runs_pytorchs_own_kernel_and_gives_the_same_logits():
    """oneDNN's LSTM repacks its weights every call (slow for the live loop's one sequence): inference switches
    it off for the RNN alone and back on after; training keeps it; the logits agree either way."""
    torch.manual_seed(0)
    head = RecurrentHead(HeadSettings(kind="lstm", grid=(2, 3), channels=8, hidden=16, mlp_hidden=8)).eval()
    seen = []
    head.rnn.register_forward_pre_hook(lambda module, args: seen.append(torch.backends.mkldnn.enabled))
    patch = torch.randn(2, 3, 6, 8)
    with torch.inference_mode():
        fast = head(patch)
    assert seen == [False] and torch.backends.mkldnn.enabled
    with torch.no_grad():
        steps, _ = head.rnn(head.frames(patch, None))  # the module as it runs in training: oneDNN where built in
        reference = head.out(steps[:, -1])
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    head(patch).sum().backward()
    assert seen[-1] == torch.backends.mkldnn.enabled
