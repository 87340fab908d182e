import pytest
import torch
import torch.nn.functional as F

from mofusion.config import DenoiserConfig
from mofusion.denoiser import MotionUNet1D, nearest_upsample_kernel, timestep_embedding
from mofusion.errors import MofusionError


def small(**kw: object) -> MotionUNet1D:
    cfg = DenoiserConfig(
        feature_dim=11, channels=[16, 32, 32], time_dim=32, cond_dim=8, heads=2, dropout=0.0, **kw
    )
    return MotionUNet1D(cfg)


def test_output_has_the_input_shape_and_starts_as_the_identity() -> None:
    model = small()
    x = torch.randn(3, 11, 24)
    out = model(x, torch.tensor([0, 500, 999]))
    assert out.shape == x.shape
    # zero-initialised output convolution + identity input skip: eps_hat = x_t at initialisation
    assert torch.allclose(out, x, atol=1e-6)


def test_lengths_must_fit_the_downsampling() -> None:
    model = small()
    assert model.length_multiple == 4
    with pytest.raises(MofusionError, match="multiple of 4"):
        model(torch.randn(1, 11, 30), torch.tensor([1]))


def test_null_condition_and_dropping() -> None:
    model = small()
    for p in model.parameters():  # leave the zero initialisation so the condition matters
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(2, 11, 8), torch.tensor([3, 3])
    cond = torch.randn(2, 5, 8)
    uncond = model(x, t)
    conditioned = model(x, t, cond)
    dropped = model(x, t, cond, None, torch.tensor([True, False]))
    assert not torch.allclose(uncond, conditioned)
    assert torch.allclose(dropped[0], uncond[0], atol=1e-6)
    assert torch.allclose(dropped[1], conditioned[1], atol=1e-6)


def test_condition_mask_hides_padding_tokens() -> None:
    model = small()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(1, 11, 8), torch.tensor([3])
    cond = torch.randn(1, 4, 8)
    mask = torch.tensor([[True, True, False, False]])
    other = cond.clone()
    other[:, 2:] = 100.0
    assert torch.allclose(model(x, t, cond, mask), model(x, t, other, mask), atol=1e-5)


def test_gradients_reach_cross_attention() -> None:
    model = small()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    out = model(torch.randn(2, 11, 8), torch.tensor([1, 2]), torch.randn(2, 3, 8))
    out.square().mean().backward()
    grads = [p.grad for n, p in model.named_parameters() if "attention" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_timestep_embedding_is_sinusoidal() -> None:
    emb = timestep_embedding(torch.tensor([0.0, 10.0]), 8)
    assert torch.allclose(emb[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))
    assert torch.allclose(emb[1, 0], torch.cos(torch.tensor(10.0)))


def test_sampling_cache_gives_the_plain_forward() -> None:
    """The step tables and the prompt's folded attention (query projection, keys, mask, values and
    output projection in three tensors) compute what the plain forward does, padding included."""
    model = small().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 11, 16)
    cond = torch.randn(3, 5, 8)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3, [True] + [False] * 4])
    steps = torch.tensor([999, 500, 0])
    with torch.no_grad():
        cache = model.precompute(steps, cond, mask, 3)
        for row, step in enumerate(steps):
            plain = model(x, step.repeat(3), cond, mask)
            cached = model(x, None, cache=cache, step=torch.tensor([row]))
            assert torch.allclose(cached, plain, atol=1e-5), (cached - plain).abs().max()
        # the padding stays hidden: other values behind the mask give the same prompt tensors' output
        other = cond.clone()
        other[1, 2:] = 100.0
        again = model(x, None, cache=model.precompute(steps, other, mask, 3), step=torch.tensor([1]))
        assert torch.allclose(again[1], model(x, steps[1].repeat(3), cond, mask)[1], atol=1e-5)
    weights, bias, values = cache.prompt[0]
    assert weights.shape == (3, 2 * 5, 16) and bias.shape == (3, 2 * 5, 1) and values.shape == (3, 16, 2 * 5)
    assert torch.isinf(bias[2, 1:5]).all() and torch.isinf(bias[2, 6:]).all()  # both heads' padding


@pytest.mark.parametrize("pooled", [False, True])
def test_copies_of_the_input_run_the_condition_free_part_once(pooled: bool) -> None:
    """``copies=2`` on x equals the forward of x twice over, each half with its rows of the condition
    (guidance's conditional and null passes), with or without a pooled condition bias."""
    model = small(cond_pooled=pooled).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, cond = torch.randn(2, 11, 16), torch.randn(4, 5, 8)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2] * 2)
    with torch.no_grad():
        cache = model.precompute(torch.tensor([700]), cond, mask, 4)
        twice = model(torch.cat((x, x)), None, cache=cache, step=torch.tensor([0]))
        once = model(x, None, cache=cache, step=torch.tensor([0]), copies=2)
    assert once.shape == twice.shape == (4, 11, 16)
    assert torch.allclose(once, twice, atol=1e-6)
    assert not torch.allclose(once[:2], once[2:], atol=1e-3)  # the halves' conditions differ
    with pytest.raises(MofusionError, match="copies"):
        model(x, torch.tensor([1, 2]), copies=2)
    # guidance combines the copies before the output convolution: the guided output of x's rows
    with torch.no_grad():
        guided = model(x, None, cache=cache, step=torch.tensor([0]), copies=2, guidance=2.5)
    assert guided.shape == (2, 11, 16)
    assert torch.allclose(guided, once[2:] + 2.5 * (once[:2] - once[2:]), atol=1e-5)
    with pytest.raises(MofusionError, match="copies=2"):
        model(x, None, cache=cache, step=torch.tensor([0]), guidance=2.5)


def test_nearest_upsample_kernel_equals_doubling_then_convolving() -> None:
    # by hand: w = [1, 2, 3], h = [1, 10] doubled to [1, 1, 10, 10], convolved with zero padding:
    # 2 + 3, 1 + 2 + 30, 1 + 20 + 30, 10 + 20; the kernel is [w2, w1 + w2, w0 + w1, w0]
    weight = torch.tensor([[[1.0, 2.0, 3.0]]])
    kernel = nearest_upsample_kernel(weight)
    assert kernel.tolist() == [[[3.0, 5.0, 3.0, 1.0]]]
    h = torch.tensor([[[1.0, 10.0]]])
    assert F.conv_transpose1d(h, kernel, stride=2, padding=1).tolist() == [[[5.0, 33.0, 51.0, 30.0]]]
    weight, bias, h = torch.randn(5, 7, 3), torch.randn(5), torch.randn(2, 7, 9)
    plain = F.conv1d(F.interpolate(h, scale_factor=2.0, mode="nearest"), weight, bias, padding=1)
    folded = F.conv_transpose1d(h, nearest_upsample_kernel(weight), bias, stride=2, padding=1)
    assert torch.allclose(folded, plain, atol=1e-5)
