"""The target UNet, the weight generator and the batched generated-weights path."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from HyperSORTLib.config import ConfigError, HyperNetConfig, ModelConfig, UNetConfig
from HyperSORTLib.model import (HyperSORTModel, UNet3D, WeightGenerator, batched_forward, choose_forward,
                                init_heads_from_target, looped_forward)
from HyperSORTLib.model.functional import grouped_unet_forward, vmap_forward


def test_reference_unet_size():
    net = UNet3D()  # reference configuration, binary
    params = list(net.parameters())
    assert len(params) == 114
    assert sum(p.numel() for p in params) == 3_327_122


def test_instance_norm_of_one_volume_keeps_its_layout_and_its_values():
    """One volume is normalised as batch_norm (no copy out of channels_last_3d), with
    instance_norm's values: bit for bit in the contiguous layout, to rounding in channels-last."""
    from torch.nn import functional as F
    from HyperSORTLib.model.unet import InstanceNorm3d

    torch.manual_seed(0)
    norm = InstanceNorm3d(8, affine=True)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)

    def expected(x):
        return F.instance_norm(x.contiguous(), weight=norm.weight, bias=norm.bias, eps=norm.eps)

    one, several = torch.randn(1, 8, 12, 10, 6), torch.randn(3, 8, 12, 10, 6)
    assert torch.equal(norm(one), expected(one)) and torch.equal(norm(several), expected(several))
    last = one.contiguous(memory_format=torch.channels_last_3d)
    out = norm(last)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, expected(one), rtol=0, atol=1e-5)
    assert isinstance(UNet3D(channels=(4, 8), convs_per_level=1).encoders[0][0].norm, InstanceNorm3d)


@pytest.mark.parametrize("channels,convs,classes,shape", [
    ((4,), 1, 2, (5, 7, 3)),
    ((4, 8), 2, 3, (8, 12, 16)),
    ((4, 8, 16), 3, 5, (16, 8, 24)),
])
def test_unet_output_shape(channels, convs, classes, shape):
    net = UNet3D(num_classes=classes, channels=channels, convs_per_level=convs)
    assert net(torch.randn(2, 1, *shape)).shape == (2, classes, *shape)


def test_unet_takes_any_size_and_rejects_bad_shapes_and_configs():
    net = UNet3D(channels=(4, 8, 16))
    net.check_input_shape((1, 1, 16, 16, 10))  # not multiples of 4: fine
    assert net(torch.randn(1, 1, 13, 9, 6)).shape == (1, 2, 13, 9, 6)
    with pytest.raises(ValueError, match=r"\[B, 1, X, Y, Z\]"):
        net.check_input_shape((1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match=r"\[B, 1, X, Y, Z\]"):
        net.check_input_shape((1, 1, 16, 0, 16))
    with pytest.raises(ConfigError, match="num_classes"):
        UNet3D(num_classes=1)
    with pytest.raises(ConfigError, match="channels"):
        UNet3D(channels=())
    with pytest.raises(ConfigError, match="convs_per_level"):
        UNet3D(convs_per_level=0)


def test_functional_call_with_own_weights_equals_module():
    torch.manual_seed(0)
    net = UNet3D(num_classes=3, channels=(4, 8), convs_per_level=2)
    x = torch.randn(1, 1, 8, 8, 8)
    own = {k: v.detach().clone() for k, v in net.named_parameters()}
    torch.testing.assert_close(functional_call(net, own, (x,)), net(x), rtol=0, atol=0)


def _generator(latent_dim=3, gain=0.1):
    torch.manual_seed(0)
    net = UNet3D(num_classes=3, channels=(4, 8, 16), convs_per_level=2)
    return net, WeightGenerator(net, latent_dim=latent_dim, hidden=(16, 16), head_init_gain=gain)


def test_generator_outputs_every_tensor_with_batch_dim():
    net, gen = _generator()
    weights = gen(torch.randn(5, 3))
    expected = dict(net.named_parameters())
    assert list(weights) == list(expected)
    for name, tensor in weights.items():
        assert tensor.shape == (5, *expected[name].shape)
        assert tensor.abs().max() <= gen.config.output_scale
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        gen(torch.zeros(5, 2))


def test_reference_generator_size():
    gen = WeightGenerator(UNet3D())
    heads = sum(p.numel() for p in gen.heads.parameters())
    assert 165e6 < heads < 175e6  # the reference release's ~170 M head parameters
    assert heads == 3_327_122 * 51


def test_head_bias_reproduces_unet_initialisation():
    net, gen = _generator(gain=0.0)  # zero head weights: output is 5*tanh(bias) for every latent
    weights = gen(torch.randn(2, 3))
    for name, param in net.named_parameters():
        torch.testing.assert_close(weights[name][0], param.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(weights[name][1], param.detach(), rtol=1e-5, atol=1e-6)


def test_head_weights_follow_default_linear_init_times_gain():
    for gain in (1.0, 0.25):
        _, gen = _generator(gain=gain)
        bound = gain / 16 ** 0.5  # trunk width 16
        weights = gen.heads.weight.detach()
        assert float(weights.abs().max()) <= bound
        assert abs(float(weights.std()) - bound / 3 ** 0.5) < 0.02 * bound


def test_latent_changes_every_generated_tensor():
    _, gen = _generator(gain=1.0)
    weights = gen(torch.tensor([[0.5, -0.5, 0.2], [-0.5, 0.5, -0.2]]))
    for name, tensor in weights.items():
        assert not torch.allclose(tensor[0], tensor[1]), name


def _batched_layout(channels_last):
    """The batched pass in one layout: the CPU's (channels-last), the default one (as on CUDA)."""
    return lambda net, weights, x: grouped_unet_forward(net, weights, x, channels_last=channels_last)


class _SubclassedUNet(UNet3D):
    """A UNet3D subclass: batched_forward runs it through vmap, the generic path."""


@pytest.mark.parametrize("shape", [(8, 16, 8), (7, 13, 6)], ids=["divisible", "odd"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("forward", [batched_forward, _batched_layout(True), _batched_layout(False), vmap_forward,
                                     "subclass"],
                         ids=["batched_forward", "channels_last", "default_layout", "vmap", "subclass"])
def test_batched_forward_equals_per_sample_loop(batch, forward, shape):
    # float64, so the comparison measures the algorithm rather than float32 rounding, which a
    # grouped and a plain convolution accumulate in different orders
    net, gen = _generator()
    if forward == "subclass":  # not a UNet3D itself: batched_forward takes the generic vmap path
        net, forward = _SubclassedUNet(num_classes=3, channels=(4, 8, 16), convs_per_level=2), batched_forward
        net.load_state_dict(_generator()[0].state_dict())
    net, gen = net.double(), gen.double()
    z = torch.randn(batch, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(batch, 1, *shape, dtype=torch.float64)
    batched = forward(net, gen(z), x)
    assert batched.shape[2:] == shape
    looped = looped_forward(net, gen(z), x)
    assert batched.is_contiguous()
    torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-10)
    # gradients with respect to the latents and the generator agree as well
    (grad_b, head_b) = torch.autograd.grad(batched.square().mean(), (z, gen.heads.weight))
    (grad_l, head_l) = torch.autograd.grad(looped_forward(net, gen(z), x).square().mean(), (z, gen.heads.weight))
    torch.testing.assert_close(grad_b, grad_l, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(head_b, head_l, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("strategy, device, channels, expected", [
    ("auto", "cpu", (8, 16, 32, 64), "batched"), ("auto", "cpu", (16, 32, 64, 128), "batched"),
    ("auto", "cpu", (32, 64, 128, 256), "loop"), ("auto", "cuda", (16, 32, 64, 128), "loop"),
    ("auto", "cuda", (4, 8), "batched"), ("loop", "cpu", (4, 8), "loop"), ("batched", "cuda", (32, 256), "batched"),
])
def test_forward_strategy_by_device_and_widths(strategy, device, channels, expected):
    assert choose_forward(strategy, device, channels) == expected


def test_forward_strategy_is_checked():
    from HyperSORTLib.config import TrainConfig

    with pytest.raises(ValueError, match="expected one of auto, batched, loop"):
        choose_forward("vmap", "cpu", (4, 8))
    with pytest.raises(ConfigError, match="train.forward: expected 'auto' or 'batched' or 'loop', found 'vmap'"):
        TrainConfig(forward="vmap")


def test_model_forward_follows_its_strategy():
    model = HyperSORTModel(ModelConfig(UNetConfig(num_classes=3, channels=(4, 8), convs_per_level=1),
                                       HyperNetConfig(hidden=(8,))), ["a", "b"]).double()
    x, rows = torch.randn(2, 1, 8, 8, 8, dtype=torch.float64), torch.tensor([0, 1])
    batched = model(x, rows)
    model.forward_strategy = "loop"
    torch.testing.assert_close(model(x, rows), batched, rtol=1e-10, atol=1e-10)


def test_batched_forward_float32_close_to_loop():
    net, gen = _generator()
    z, x = torch.randn(2, 3), torch.randn(2, 1, 16, 16, 16)
    looped = looped_forward(net, gen(z), x).detach()
    scale = float(looped.abs().max())
    torch.testing.assert_close(batched_forward(net, gen(z), x).detach(), looped, rtol=1e-3, atol=1e-4 * scale)


def test_batched_forward_uses_each_samples_own_weights():
    net, gen = _generator()
    x = torch.randn(1, 1, 8, 8, 8).expand(2, -1, -1, -1, -1)
    out = batched_forward(net, gen(torch.tensor([[0.0, 0.0, 0.0], [2.0, -2.0, 1.0]])), x)
    assert not torch.allclose(out[0], out[1])


def test_batched_forward_rejects_mismatched_batch():
    net, gen = _generator()
    with pytest.raises(ValueError, match="one weight set per sample"):
        batched_forward(net, gen(torch.zeros(2, 3)), torch.zeros(3, 1, 8, 8, 8))


def test_init_heads_is_deterministic_under_seed():
    net, gen_a = _generator()
    gen_b = WeightGenerator(net, latent_dim=3, hidden=(16, 16))
    init_heads_from_target(gen_b, [p.detach() for p in net.parameters()])
    torch.testing.assert_close(gen_a.heads.bias, gen_b.heads.bias)


def test_model_decode_matches_batched_path():
    cfg = ModelConfig(UNetConfig(num_classes=3, channels=(4, 8), convs_per_level=1), HyperNetConfig(hidden=(8,)))
    # float64: the two paths sum in different orders, so in float32 a few outputs near zero differ
    # by more than any relative tolerance on some CPUs; in float64 they agree to 1e-10.
    model = HyperSORTModel(cfg, ["a", "b", "c"], latent_init_std=0.5).double()
    x = torch.randn(1, 1, 8, 8, 8, dtype=torch.float64)
    z = model.latents.weight[1]
    torch.testing.assert_close(model.decode(z)(x), model(x, torch.tensor([1])), rtol=1e-7, atol=1e-10)
    assert isinstance(model.decode([0.1, -0.2]), UNet3D)
    with pytest.raises(ValueError, match="2 coordinates"):
        model.decode([0.1, 0.2, 0.3])


def test_model_is_seeded():
    cfg = ModelConfig(UNetConfig(channels=(4,), convs_per_level=1), HyperNetConfig(hidden=(8,)))
    a, b, c = HyperSORTModel(cfg, ["x", "y"], seed=1), HyperSORTModel(cfg, ["x", "y"], seed=1), HyperSORTModel(cfg, ["x", "y"], seed=2)
    for key, value in a.learned_state().items():
        torch.testing.assert_close(value, b.learned_state()[key], rtol=0, atol=0)
    assert not torch.equal(a.learned_state()["latents.weight"], c.learned_state()["latents.weight"])


def test_bad_hypernet_config():
    with pytest.raises(ConfigError, match="latent_dim"):
        HyperNetConfig(latent_dim=0)
    with pytest.raises(ConfigError, match="output_scale"):
        HyperNetConfig(output_scale=0)
    with pytest.raises(ConfigError, match="model.hyper.heads"):
        HyperNetConfig(heads="chunked")
    with pytest.raises(ConfigError, match="model.hyper.head_rank"):
        HyperNetConfig(heads="low_rank", head_rank=0)


def _low_rank(rank=3, gain=1.0, seed=0):
    torch.manual_seed(seed)
    net = UNet3D(num_classes=3, channels=(4, 8, 16), convs_per_level=2)
    return net, WeightGenerator(net, latent_dim=3, hidden=(16, 16), head_init_gain=gain, heads="low_rank",
                                head_rank=rank)


def test_low_rank_reference_generator_is_ten_times_smaller():
    full = 3_327_122 * 51
    gen = WeightGenerator(UNet3D(), heads="low_rank", head_rank=4)
    total = sum(p.numel() for p in gen.parameters())
    trunk = sum(p.numel() for p in gen.trunk[:-1].parameters())
    assert gen.trunk[-1].weight.shape == (4, 50)
    assert total == trunk + 4 * 50 + 3_327_122 * 5
    assert total <= 17e6 and full / total > 10


def test_low_rank_heads_generate_every_tensor_in_a_rank_r_subspace():
    net, gen = _low_rank(rank=3)
    z = torch.randn(12, 3)
    weights = gen(z)
    expected = dict(net.named_parameters())
    assert list(weights) == list(expected)
    for name, tensor in weights.items():
        assert tensor.shape == (12, *expected[name].shape)
        assert tensor.abs().max() <= gen.config.output_scale
    # before the tanh, 12 latents span at most a 3-dimensional affine subspace
    pre = torch.atanh(torch.cat([w.reshape(12, -1) for w in weights.values()], 1).double() / 5)
    centred = pre - pre.mean(0, keepdim=True)
    singular = torch.linalg.svdvals(centred)
    assert singular[2] > 1e-3 * singular[0] and singular[3] < 1e-6 * singular[0]
    # every tensor depends on the latent
    for name, tensor in weights.items():
        assert not torch.allclose(tensor[0], tensor[1]), name


def test_low_rank_heads_start_at_the_unet_initialisation_with_the_full_heads_spread():
    net, gen = _low_rank(gain=0.0)
    for name, param in net.named_parameters():
        torch.testing.assert_close(gen(torch.randn(2, 3))[name][1], param.detach(), rtol=1e-5, atol=1e-6)
    # per generated value, the bottleneck-times-heads product has the variance of full heads
    net, full = _generator(gain=1.0)
    products = []
    for seed in range(4):
        _, low = _low_rank(rank=4, seed=seed)
        products.append((low.heads.weight @ low.trunk[-1].weight).detach())
    product = torch.cat(products)
    target = float(full.heads.weight.detach().var())
    assert abs(float(product.var()) / target - 1) < 0.1


def test_low_rank_model_trains_decodes_and_reloads():
    cfg = ModelConfig(UNetConfig(num_classes=3, channels=(4, 8), convs_per_level=1),
                      HyperNetConfig(hidden=(8,), heads="low_rank", head_rank=2))
    model = HyperSORTModel(cfg, ["a", "b"])
    x = torch.randn(2, 1, 8, 8, 8)
    logits = model(x, model.latents.rows(["a", "b"]))
    logits.square().mean().backward()
    assert model.generator.trunk[-1].weight.grad.abs().sum() > 0
    assert model.latents.weight.grad.abs().sum() > 0
    unet = model.decode(model.latents.weight[0].detach())
    # float32: the decoded UNet runs plain convolutions, the batched pass grouped channels-last ones
    scale = float(logits.detach().abs().max())
    torch.testing.assert_close(unet(x[:1]), logits[:1].detach(), rtol=1e-3, atol=1e-4 * scale)
    # a full-heads model refuses the low-rank state, naming the mismatch
    full = HyperSORTModel(ModelConfig(cfg.unet, HyperNetConfig(hidden=(8,))), ["a", "b"])
    with pytest.raises(ValueError, match="does not match this model"):
        full.load_learned_state(model.learned_state())
    other = HyperSORTModel(cfg, ["a", "b"], seed=5)
    other.load_learned_state(model.learned_state())
    torch.testing.assert_close(other(x, other.latents.rows(["a", "b"])), logits.detach())


def test_low_rank_heads_learn_as_fast_as_full_heads_at_initialisation():
    """An Adam step moves a generated value by about lr * sum(|features the heads read|): the
    low-rank heads' bottleneck features must sum like the full heads' trunk features."""
    torch.manual_seed(0)
    net = UNet3D(num_classes=3, channels=(4, 8, 16), convs_per_level=1)
    low = WeightGenerator(net, latent_dim=2, heads="low_rank", head_rank=4)
    z = 0.05 * torch.randn(256, 2)
    trunk = low.trunk[:-1](z).abs().sum(1)
    bottleneck = low.trunk(z).abs().sum(1)
    assert 0.5 < float((bottleneck / trunk).median().detach()) < 2.0
    # and the speed shows: one Adam step on the heads moves the generated weights alike
    full = WeightGenerator(net, latent_dim=2)
    moved = []
    for gen in (full, low):
        before = torch.cat([w.reshape(256, -1) for w in gen(z).values()], 1).detach()
        opt = torch.optim.Adam(gen.heads.parameters(), lr=1e-3)
        torch.cat([w.reshape(256, -1) for w in gen(z).values()], 1).sum().backward()
        opt.step()
        after = torch.cat([w.reshape(256, -1) for w in gen(z).values()], 1).detach()
        moved.append(float((after - before).abs().mean()))
    assert 0.5 < moved[1] / moved[0] < 2.0, moved
