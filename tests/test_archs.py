"""RRDBNet, Discriminator_VGG_128 and the VGG feature extractor: sizes, keys, shapes, init, weights."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esrgan.archs.discriminator import Discriminator_VGG_128
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.archs.vgg import (
    CONV5_4,
    FEATURE_LAYERS,
    VGGFeatureExtractor,
    WeightsUnavailableError,
    load_vgg_state_dict,
    torchvision_cache_file,
)


def published_esrgan_keys(nb: int = 23) -> list[str]:
    """The key list of the published RRDB_ESRGAN_x4.pth, written out from its layout."""
    keys = ["conv_first.weight", "conv_first.bias"]
    for i in range(nb):
        for k in (1, 2, 3):
            for j in (1, 2, 3, 4, 5):
                keys += [f"RRDB_trunk.{i}.RDB{k}.conv{j}.weight", f"RRDB_trunk.{i}.RDB{k}.conv{j}.bias"]
    for name in ("trunk_conv", "upconv1", "upconv2", "HRconv", "conv_last"):
        keys += [f"{name}.weight", f"{name}.bias"]
    return keys


def test_default_rrdbnet_has_the_papers_parameter_count():
    net = RRDBNet(3, 3, 64, 23, gc=32)
    assert sum(p.numel() for p in net.parameters()) == 16_697_987


def test_default_rrdbnet_state_dict_keys_are_the_published_ones_in_order():
    assert list(RRDBNet(3, 3, 64, 23, gc=32).state_dict()) == published_esrgan_keys()


def test_dense_block_shapes_follow_the_growth_channels():
    sd = RRDBNet(3, 3, 64, 1, gc=32).state_dict()
    assert sd["RRDB_trunk.0.RDB1.conv1.weight"].shape == (32, 64, 3, 3)
    assert sd["RRDB_trunk.0.RDB1.conv4.weight"].shape == (32, 64 + 3 * 32, 3, 3)
    assert sd["RRDB_trunk.0.RDB1.conv5.weight"].shape == (64, 64 + 4 * 32, 3, 3)


@pytest.mark.parametrize(("scale", "size"), [(4, (2, 3, 40, 28)), (2, (2, 3, 20, 14))])
def test_output_shape_is_scale_times_the_input(scale, size):
    net = RRDBNet(3, 3, nf=8, nb=1, gc=4, scale=scale)
    assert net(torch.rand(2, 3, 10, 7)).shape == size


def test_scale_2_has_a_single_upsampling_stage():
    keys = RRDBNet(3, 3, nf=8, nb=1, gc=4, scale=2).state_dict()
    assert "upconv1.weight" in keys and "upconv2.weight" not in keys


def test_unsupported_scale_is_rejected_with_the_supported_ones():
    with pytest.raises(ValueError, match="scale 2 or 4, got 3"):
        RRDBNet(scale=3)


def test_dense_block_init_is_kaiming_scaled_by_a_tenth_with_zero_bias_and_the_other_convs_keep_torchs():
    """As in the original code: the five convs of every dense block get Kaiming normal (fan_in) * 0.1 and zero
    biases; conv_first, trunk_conv, the upsampling convs, HRconv and conv_last keep PyTorch's default
    (uniform, std 1 / sqrt(3 fan_in), non-zero biases)."""
    torch.manual_seed(0)
    net = RRDBNet(3, 3, 64, 2, gc=32)
    dense = {name: m for name, m in net.named_modules() if ".RDB" in name and isinstance(m, torch.nn.Conv2d)}
    assert len(dense) == 2 * 3 * 5
    for name, conv in dense.items():
        fan_in = conv.weight[0].numel()  # 576 to 1,728 for conv1 to conv5 (at least 18,432 weights each)
        assert conv.weight.std().item() == pytest.approx(0.1 * math.sqrt(2.0 / fan_in), rel=0.03), name
        assert torch.count_nonzero(conv.bias) == 0, name
    others = ["conv_first", "trunk_conv", "upconv1", "upconv2", "HRconv", "conv_last"]
    for name in others:
        conv = getattr(net, name)
        fan_in = conv.weight[0].numel()
        assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.08), name
        assert torch.count_nonzero(conv.bias) == conv.bias.numel(), name


def test_rrdbnet_residual_scaling_is_0_2():
    rrdb = RRDBNet(3, 3, 4, 1, gc=2).RRDB_trunk[0]
    for rdb in (rrdb.RDB1, rrdb.RDB2, rrdb.RDB3):
        rdb.conv5.weight.data.zero_()
        rdb.conv5.bias.data.fill_(1.0)  # every dense block then adds 0.2 * 1 to its input
    x = torch.zeros(1, 4, 3, 3)
    # RDB outputs 0.2, 0.4, 0.6; RRDB returns 0.6 * 0.2 + 0 = 0.12
    assert torch.allclose(rrdb(x), torch.full_like(x, 0.12))


def seed_rrdbnet_forward(net: RRDBNet, x: torch.Tensor) -> torch.Tensor:
    """The forward pass as the seed code writes it (`x5 * 0.2 + x`), on the same modules."""
    def rdb(m, x):
        x1 = F.leaky_relu(m.conv1(x), 0.2)
        x2 = F.leaky_relu(m.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(m.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(m.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        return m.conv5(torch.cat((x, x1, x2, x3, x4), 1)) * 0.2 + x

    fea = net.conv_first(x)
    trunk = fea
    for block in net.RRDB_trunk:
        trunk = rdb(block.RDB3, rdb(block.RDB2, rdb(block.RDB1, trunk))) * 0.2 + trunk
    fea = fea + net.trunk_conv(trunk)
    fea = F.leaky_relu(net.upconv1(F.interpolate(fea, scale_factor=2, mode="nearest")), 0.2)
    fea = F.leaky_relu(net.upconv2(F.interpolate(fea, scale_factor=2, mode="nearest")), 0.2)
    return net.conv_last(F.leaky_relu(net.HRconv(fea), 0.2))


def test_rrdbnet_computes_the_seed_forward_pass():
    torch.manual_seed(0)
    net = RRDBNet(3, 3, 16, 3, gc=8)
    for p in net.parameters():  # weights far from the small init, so that every term matters
        p.data.normal_(0, 0.1)
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        expected = seed_rrdbnet_forward(net, x)
        assert torch.allclose(net(x), expected, rtol=1e-5, atol=1e-6)
        assert expected.abs().mean() > 0.1


def test_a_dense_block_forward_dispatches_14_operators():
    """5 convolutions (bias included), 4 in-place LeakyReLUs, 4 concatenations and one scaled residual add: the
    launch count that makes this model launch-bound on a GPU (RRDBNet nb 23 runs 69 of these per forward)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: Counter[str] = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func)] += 1
            return func(*args, **(kwargs or {}))

    block, x = RRDBNet(3, 3, 8, 1, gc=4).RRDB_trunk[0].RDB1, torch.rand(1, 8, 6, 6)
    with torch.no_grad(), Count() as count:
        block(x)
    assert count.ops == {"aten.convolution.default": 5, "aten.leaky_relu_.default": 4, "aten.cat.default": 4,
                         "aten.add.Tensor": 1}


def test_discriminator_parameter_count_and_keys():
    net = Discriminator_VGG_128(3, 64)
    # conv0_0 + conv0_1/bn0_1 + four stages of (3x3 conv, bn, 4x4 conv, bn) + linear1 + linear2, by hand
    expected = (1792 + 65536 + 128 + 73728 + 256 + 262144 + 256 + 294912 + 512 + 1048576 + 512
                + 1179648 + 1024 + 4194304 + 1024 + 2359296 + 1024 + 4194304 + 1024 + 819300 + 101)
    assert sum(p.numel() for p in net.parameters()) == expected == 14_499_401
    params = [k for k, _ in net.named_parameters()]
    assert params[:4] == ["conv0_0.weight", "conv0_0.bias", "conv0_1.weight", "bn0_1.weight"]
    assert params[-4:] == ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]
    assert "conv1_0.bias" not in params  # only conv0_0 has a bias


def test_discriminator_gives_one_logit_per_128_patch():
    assert Discriminator_VGG_128(3, 8)(torch.rand(2, 3, 128, 128)).shape == (2, 1)


def seed_discriminator_forward(net: Discriminator_VGG_128, x: torch.Tensor) -> torch.Tensor:
    """The seed's Discriminator_VGG_128 forward written out: 3x3 conv with bias, then (4x4 stride-2 conv, BN),
    then four stages of (3x3 conv, BN, 4x4 stride-2 conv, BN), each followed by LeakyReLU(0.2); then two linear
    layers with a LeakyReLU between them. BN in training mode: batch statistics, biased variance, eps 1e-5."""
    p = dict(net.named_parameters())

    def bn(t: torch.Tensor, name: str) -> torch.Tensor:
        mean = t.mean(dim=(0, 2, 3), keepdim=True)
        var = t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        return (t - mean) / torch.sqrt(var + 1e-5) * p[f"{name}.weight"].view(1, -1, 1, 1) + \
            p[f"{name}.bias"].view(1, -1, 1, 1)

    def lrelu(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t >= 0, t, 0.2 * t)

    fea = lrelu(F.conv2d(x, p["conv0_0.weight"], p["conv0_0.bias"], padding=1))
    fea = lrelu(bn(F.conv2d(fea, p["conv0_1.weight"], stride=2, padding=1), "bn0_1"))
    for stage in range(1, 5):
        fea = lrelu(bn(F.conv2d(fea, p[f"conv{stage}_0.weight"], padding=1), f"bn{stage}_0"))
        fea = lrelu(bn(F.conv2d(fea, p[f"conv{stage}_1.weight"], stride=2, padding=1), f"bn{stage}_1"))
    fea = lrelu(F.linear(fea.reshape(x.shape[0], -1), p["linear1.weight"], p["linear1.bias"]))
    return F.linear(fea, p["linear2.weight"], p["linear2.bias"])


def test_discriminator_computes_the_seed_forward_pass():
    torch.manual_seed(0)
    net = Discriminator_VGG_128(3, nf=4).double()
    for name, param in net.named_parameters():
        if name.startswith("bn"):  # away from the initial 1 / 0, so that a skipped BN shows
            torch.nn.init.uniform_(param, 0.5, 1.5) if name.endswith("weight") else torch.nn.init.normal_(param)
    x = torch.rand(3, 3, 128, 128, dtype=torch.float64)
    expected = seed_discriminator_forward(net, x)
    assert torch.allclose(net.train()(x), expected, rtol=1e-10, atol=1e-12)


def test_discriminator_rejects_other_sizes_naming_the_option():
    with pytest.raises(ValueError, match="GT_size"):
        Discriminator_VGG_128(3, 8)(torch.rand(1, 3, 96, 96))


def test_vgg_extractor_stops_at_conv5_4_before_its_relu():
    net = VGGFeatureExtractor(feature_layer=34)
    assert len(net.features) == 35
    assert isinstance(net.features[34], nn.Conv2d) and net.features[34].out_channels == 512
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 512, 2, 2)
    assert net(torch.rand(1, 3, 32, 32)).min() < 0  # no ReLU after the last conv


def test_vgg_extractor_defaults_to_conv5_4_of_either_vgg19():
    plain, with_bn = VGGFeatureExtractor(), VGGFeatureExtractor(use_bn=True)
    assert (len(plain.features), len(with_bn.features)) == (35, 50)
    for net in (plain, with_bn):
        last = net.features[-1]
        assert isinstance(last, nn.Conv2d) and (last.in_channels, last.out_channels) == (512, 512)
        assert sum(isinstance(m, nn.Conv2d) for m in net.features) == 16  # conv5_4: the sixteenth conv
    with pytest.raises(ValueError, match=r"feature_layer: 37 is not a layer of VGG19 \(0 to 36"):
        VGGFeatureExtractor(37)


def test_vgg_extractor_is_frozen_and_stays_in_eval_mode():
    net = VGGFeatureExtractor(feature_layer=4, use_bn=True)
    net.train()
    assert not net.training and not net.features.training
    assert not any(p.requires_grad for p in net.parameters())


def test_vgg_input_normalisation_uses_imagenet_statistics():
    torch.manual_seed(0)
    net = VGGFeatureExtractor(feature_layer=0)
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = F.conv2d((x - mean) / std, net.features[0].weight, net.features[0].bias, padding=1)
    assert torch.allclose(net(x), expected, atol=1e-5)
    raw = VGGFeatureExtractor(feature_layer=0, use_input_norm=False)
    assert torch.allclose(raw(x), F.conv2d(x, raw.features[0].weight, raw.features[0].bias, padding=1), atol=1e-6)


def test_a_whole_torchvision_vgg19_file_loads_into_shorter_extractors(tmp_path):
    """torchvision's files hold every layer and the classifier: the extractor takes the layers up to its
    feature_layer (for vgg19_bn, conv5_4 is 49 and the batch norm at 50 is left out) and ignores the rest."""
    x = torch.rand(1, 3, 32, 32)
    for use_bn in (False, True):
        torch.manual_seed(2)
        whole = VGGFeatureExtractor(feature_layer=FEATURE_LAYERS[use_bn] - 1, use_bn=use_bn)
        for module in whole.features:
            if isinstance(module, nn.BatchNorm2d):  # not the identity, so that loading them shows
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
        path = tmp_path / f"vgg19{'_bn' if use_bn else ''}.pth"
        classifier = {"classifier.0.weight": torch.zeros(8, 4), "classifier.0.bias": torch.zeros(8)}
        torch.save({f"features.{k}": v for k, v in whole.features.state_dict().items()} | classifier, path)
        state = load_vgg_state_dict(str(path), use_bn=use_bn, allow_random=False)
        normalised = (x - whole.mean) / whole.std
        for layer in (CONV5_4[use_bn], 4):
            net = VGGFeatureExtractor(feature_layer=layer, use_bn=use_bn, state_dict=state)
            assert torch.equal(net(x), whole.features[: layer + 1](normalised)), (use_bn, layer)


def test_vgg_weights_load_from_a_local_features_file(tmp_path):
    torch.manual_seed(1)
    source = VGGFeatureExtractor(feature_layer=34)
    path = tmp_path / "vgg_features.pth"
    torch.save({f"features.{k}": v for k, v in source.features.state_dict().items()}, path)
    state = load_vgg_state_dict(str(path), use_bn=False, allow_random=False)
    loaded = VGGFeatureExtractor(feature_layer=34, state_dict=state)
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded(x), source(x))


def test_missing_vgg_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(WeightsUnavailableError, match=r"nope\.pth"):
        load_vgg_state_dict(str(tmp_path / "nope.pth"), use_bn=False, allow_random=False)


def test_vgg_weights_of_the_other_variant_are_refused_with_the_reason():
    plain = VGGFeatureExtractor().features.state_dict()
    with pytest.raises(ValueError, match=r"do not fit torchvision's VGG19 with batch norm \(use_bn true\): "
                                         r"\d+ missing keys: 1\.weight"):
        VGGFeatureExtractor(use_bn=True, state_dict=plain)


def test_vgg_file_wrapped_or_not_a_state_dict(tmp_path):
    torch.manual_seed(1)
    source = VGGFeatureExtractor(feature_layer=4)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"features.{k}": v for k, v in source.features.state_dict().items()}}, wrapped)
    loaded = VGGFeatureExtractor(feature_layer=4, state_dict=load_vgg_state_dict(str(wrapped), False, False))
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x), source(x))
    text = tmp_path / "notes.pth"
    text.write_text("hello world")
    with pytest.raises(WeightsUnavailableError, match=r"network_F\.weights: cannot read weights file .*notes\.pth: "
                                                      r"it is not a torch\.save"):
        load_vgg_state_dict(str(text), use_bn=False, allow_random=False)


def test_a_broken_cached_vgg_download_says_to_delete_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = torchvision_cache_file(use_bn=False)
    assert cached.is_relative_to(tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(WeightsUnavailableError, match=r"vgg19-dcbb9e9d\.pth.*broken download: delete it"):
        load_vgg_state_dict("imagenet", use_bn=False, allow_random=True)


def test_batch_norm_vgg_weights_without_num_batches_tracked_load(tmp_path):
    """torchvision's vgg19_bn file predates BatchNorm's num_batches_tracked: batch norm fills it in."""
    source = VGGFeatureExtractor(feature_layer=10, use_bn=True)
    old = {f"features.{k}": v for k, v in source.features.state_dict().items() if "num_batches_tracked" not in k}
    loaded = VGGFeatureExtractor(feature_layer=10, use_bn=True, state_dict=old)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x), source(x))


def test_random_vgg_weights_need_explicit_permission():
    assert load_vgg_state_dict("random", use_bn=False, allow_random=True) is None
    with pytest.raises(WeightsUnavailableError, match="allow_random_weights"):
        load_vgg_state_dict("random", use_bn=False, allow_random=False)
