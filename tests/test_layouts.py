"""Specification of the published ESRGAN weight layouts (``esrgan.archs.layouts``), of loading them into the
configured generator, and of the convert_weights.py and net_interp.py scripts."""

import logging
import pathlib
import runpy
import sys
import warnings

import pytest
import torch

from esrgan.archs.discriminator import Discriminator_VGG_128
from esrgan.archs.layouts import (
    detect_layout,
    from_esrgan,
    infer_hparams,
    interpolate_states,
    load_generator_state,
    read_weights_file,
    to_esrgan,
    unwrap,
)
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.models.networks import infer_generator_options, load_weights, read_state_dict
from esrgan.options import REPO_ROOT

LAYOUT_CASES = [("esrgan", 4), ("esrgan", 2), ("old", 4), ("old", 2), ("basicsr", 4)]


def tiny_net(scale: int = 4, nf: int = 8, nb: int = 2, gc: int = 4, in_nc: int = 3, out_nc: int = 3,
             seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(in_nc, out_nc, nf=nf, nb=nb, gc=gc, scale=scale).eval()


def non_block_keys(sd: dict) -> list[str]:
    return [k for k in sd if "RDB" not in k and "rdb" not in k]


def script(name: str):
    return runpy.run_path(str(REPO_ROOT / "scripts" / name))["main"]


# ------------------------------------------------------------------------------------------ layouts
def test_old_arch_x4_keys_follow_the_flattened_sequential():
    old = from_esrgan(tiny_net(scale=4).state_dict(), "old")
    assert non_block_keys(old) == ["model.0.weight", "model.0.bias", "model.1.sub.2.weight", "model.1.sub.2.bias",
                                   "model.3.weight", "model.3.bias", "model.6.weight", "model.6.bias",
                                   "model.8.weight", "model.8.bias", "model.10.weight", "model.10.bias"]
    assert list(old)[2:4] == ["model.1.sub.0.RDB1.conv1.0.weight", "model.1.sub.0.RDB1.conv1.0.bias"]


def test_old_arch_x2_has_one_upsampling_stage():
    old = from_esrgan(tiny_net(scale=2).state_dict(), "old")
    assert non_block_keys(old) == ["model.0.weight", "model.0.bias", "model.1.sub.2.weight", "model.1.sub.2.bias",
                                   "model.3.weight", "model.3.bias", "model.5.weight", "model.5.bias",
                                   "model.7.weight", "model.7.bias"]


def test_basicsr_keys():
    basicsr = from_esrgan(tiny_net(scale=4).state_dict(), "basicsr")
    assert non_block_keys(basicsr) == ["conv_first.weight", "conv_first.bias", "conv_body.weight", "conv_body.bias",
                                       "conv_up1.weight", "conv_up1.bias", "conv_up2.weight", "conv_up2.bias",
                                       "conv_hr.weight", "conv_hr.bias", "conv_last.weight", "conv_last.bias"]
    assert list(basicsr)[-12:-10] == ["body.1.rdb3.conv5.weight", "body.1.rdb3.conv5.bias"]


@pytest.mark.parametrize(("layout", "scale"), LAYOUT_CASES)
def test_each_layout_is_detected_and_converts_back_to_the_same_tensors_in_our_order(layout, scale):
    ours = tiny_net(scale=scale).state_dict()
    theirs = from_esrgan(ours, layout)
    assert detect_layout(theirs) == layout
    back = to_esrgan(theirs)
    assert list(back) == list(ours)
    assert all(back[k] is ours[k] for k in ours)


def test_conversion_puts_the_keys_in_our_order_whatever_the_order_of_the_file():
    ours = tiny_net().state_dict()
    shuffled = dict(reversed(from_esrgan(ours, "basicsr").items()))
    assert list(to_esrgan(shuffled)) == list(ours)


@pytest.mark.parametrize(("layout", "scale"), LAYOUT_CASES)
def test_a_file_in_each_layout_loads_into_a_network_with_identical_outputs(tmp_path, layout, scale):
    net = tiny_net(scale=scale)
    theirs = from_esrgan(net.state_dict(), layout)
    torch.save({"params": theirs} if layout == "basicsr" else theirs, tmp_path / "g.pth")
    state, hparams, _ = load_generator_state(tmp_path / "g.pth")
    loaded = RRDBNet(**hparams).eval()
    loaded.load_state_dict(state)
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_the_description_names_the_layout_and_the_wrapper(tmp_path):
    torch.save({"params_ema": from_esrgan(tiny_net().state_dict(), "old")}, tmp_path / "g.pth")
    assert load_generator_state(tmp_path / "g.pth")[2] == "old-arch layout, params_ema"


def test_unknown_keys_are_refused_with_a_few_of_them():
    with pytest.raises(ValueError, match="no single known ESRGAN generator layout") as info:
        detect_layout({"encoder.weight": torch.zeros(1), "decoder.weight": torch.zeros(1)})
    assert "the file has 2 keys: encoder.weight, decoder.weight" in str(info.value)


def test_keys_outside_the_network_are_refused_by_name():
    old = from_esrgan(tiny_net().state_dict(), "old") | {"model.1.sub.0.RDB1.extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"1 keys of the old-arch layout have no counterpart in RRDBNet: "
                                         r"model\.1\.sub\.0\.RDB1\.extra\.weight$"):
        to_esrgan(old)


def test_an_old_arch_model_with_another_upsampling_is_refused():
    old = from_esrgan(tiny_net(scale=4).state_dict(), "old") | {"model.13.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"last layer is model\.13 \(that of an x8 RRDBNet, with three "
                                         r"upsampling stages\): RRDBNet has conv_last at model\.7"):
        to_esrgan(old)


@pytest.mark.parametrize("layout", ["basicsr", "old", "esrgan"])
@pytest.mark.parametrize(("in_nc", "scale"), [(12, 2), (48, 1)])
def test_basicsr_pixel_unshuffle_models_are_refused_in_every_layout(in_nc, scale, layout):
    # BasicSR's x2 (x1) RRDBNet: pixel-unshuffle by 2 (4), so conv_first sees 4 (16) x 3 channels; upsampling x4.
    # chaiNNer and spandrel also pass these around under the old-arch keys.
    weights = from_esrgan(tiny_net(in_nc=in_nc, scale=4).state_dict(), layout)
    with pytest.raises(ValueError, match=f"BasicSR / Real-ESRGAN x{scale} weights: conv_first takes {in_nc} = "
                                         f"{in_nc // 3} x 3 channels .* no pixel-unshuffle"):
        to_esrgan(weights)


def test_x8_esrgan_plus_and_srvgg_weights_are_refused_by_name():
    x8 = tiny_net().state_dict() | {"upconv3.weight": torch.zeros(8, 8, 3, 3), "upconv3.bias": torch.zeros(8)}
    with pytest.raises(ValueError, match=r"have no counterpart in RRDBNet: upconv3\.weight, upconv3\.bias\. A "
                                         r"third upsampling conv makes an x8 RRDBNet: this RRDBNet upscales x2 or "
                                         r"x4 \(the paper's x4\)$"):
        to_esrgan(x8)
    plus = from_esrgan(tiny_net().state_dict(), "old") | {"model.1.sub.0.RDB1.conv1x1.weight": torch.zeros(4, 8, 1, 1)}
    with pytest.raises(ValueError, match=r"conv1x1\.weight\. The 1x1 convs in the dense blocks are ESRGAN\+'s"):
        to_esrgan(plus)
    srvgg = {f"body.{i}.{p}": torch.zeros(1) for i in range(4) for p in ("weight", "bias")}
    with pytest.raises(ValueError, match=r"^these are SRVGGNetCompact weights \(Real-ESRGAN's "
                                         r"realesr-animevideov3 / realesr-general models"):
        detect_layout(srvgg)


def test_an_mmediting_checkpoint_gives_its_ema_generator_and_its_discriminator(tmp_path):
    # mmediting / mmagic save the whole model: generator (BasicSR's layout), its EMA and the discriminator.
    generator, ema, d = tiny_net(seed=1).state_dict(), tiny_net(seed=2).state_dict(), Discriminator_VGG_128(3, 4)
    whole = ({f"generator.{k}": v for k, v in from_esrgan(generator, "basicsr").items()}
             | {f"generator_ema.{k}": v for k, v in from_esrgan(ema, "basicsr").items()}
             | {f"discriminator.module.{k}": v for k, v in d.state_dict().items()})
    torch.save({"meta": {"epoch": 3}, "state_dict": whole}, tmp_path / "iter_400000.pth")
    state, hparams, description = load_generator_state(tmp_path / "iter_400000.pth")
    assert description == "BasicSR layout, state_dict, its 'generator_ema.' keys"
    assert hparams == {"in_nc": 3, "out_nc": 3, "nf": 8, "nb": 2, "gc": 4, "scale": 4}
    assert list(state) == list(ema) and all(torch.equal(state[k], v) for k, v in ema.items())
    torch.save({"state_dict": {k: v for k, v in whole.items() if not k.startswith("generator_ema.")}},
               tmp_path / "no_ema.pth")
    state = load_generator_state(tmp_path / "no_ema.pth")[0]
    assert all(torch.equal(state[k], v) for k, v in generator.items())
    fresh = Discriminator_VGG_128(3, 4)
    load_weights(fresh, tmp_path / "iter_400000.pth", what="discriminator")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in d.state_dict().items())


def test_an_x2_network_has_no_basicsr_layout():
    with pytest.raises(ValueError, match="an x2 RRDBNet has no BasicSR layout"):
        from_esrgan(tiny_net(scale=2).state_dict(), "basicsr")


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"scale": 4}, {"in_nc": 3, "out_nc": 3, "nf": 8, "nb": 2, "gc": 4, "scale": 4}),
    ({"scale": 2}, {"in_nc": 3, "out_nc": 3, "nf": 8, "nb": 2, "gc": 4, "scale": 2}),
    ({"scale": 4, "nf": 16, "nb": 3, "gc": 8}, {"in_nc": 3, "out_nc": 3, "nf": 16, "nb": 3, "gc": 8, "scale": 4}),
    ({"scale": 2, "nf": 4, "nb": 1, "gc": 2, "in_nc": 1, "out_nc": 2},
     {"in_nc": 1, "out_nc": 2, "nf": 4, "nb": 1, "gc": 2, "scale": 2}),
])
def test_hyperparameters_are_read_from_the_shapes(kwargs, expected):
    assert infer_hparams(tiny_net(**kwargs).state_dict()) == expected


def test_the_size_cannot_be_inferred_without_its_key_tensors():
    sd = tiny_net().state_dict()
    del sd["conv_last.weight"]
    with pytest.raises(ValueError, match=r"cannot tell the RRDBNet size: conv_last\.weight missing"):
        infer_hparams(sd)


# ------------------------------------------------------------------------------------------ unwrap
def test_unwrap_prefers_params_ema_over_params():
    ema, raw = {"a": torch.ones(1)}, {"a": torch.zeros(1)}
    assert unwrap({"params": raw, "params_ema": ema}) == (ema, "params_ema")
    assert unwrap({"params": raw}) == (raw, "params")


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_unwrap_accepts_the_other_wrappers_next_to_training_bookkeeping(wrapper):
    sd = {"a": torch.ones(1)}
    assert unwrap({wrapper: sd, "epoch": 3}) == (sd, wrapper)


def test_unwrap_strips_the_data_parallel_prefix():
    t = torch.ones(1)
    assert unwrap({"module.conv_first.weight": t}) == ({"conv_first.weight": t},
                                                       "raw state dict, 'module.' prefix removed")
    assert unwrap({"conv_first.weight": t}) == ({"conv_first.weight": t}, "raw state dict")


def test_unwrap_refuses_what_is_not_a_state_dict():
    with pytest.raises(ValueError, match=r"not a state dict: 2 entries are not tensors \(epoch, net_g\)"):
        unwrap({"epoch": 3, "net_g": {"a": torch.ones(1)}, "a": torch.ones(1)})
    with pytest.raises(ValueError, match="expected a state dict, found list"):
        unwrap([torch.ones(1)])


def test_a_training_state_given_as_weights_says_which_file_to_give(tmp_path):
    state = {"iter": 5, "phase": "psnr", "model": {"networks": {"G": tiny_net().state_dict()}, "optimizers": {},
                                                  "schedulers": {}, "scalers": {}}}
    torch.save(state, tmp_path / "5.state")
    with pytest.raises(ValueError, match=r"this is a training state \(training_state/<iter>\.state, of iteration 5\), "
                                         r"not weights: give the generator saved beside it, models/<iter>_G\.pth"):
        load_generator_state(tmp_path / "5.state")


# ------------------------------------------------------------------------------------------ reading files
class Payload:
    """Unpickling this creates `marker`: a stand-in for code that a crafted .pth runs when loaded."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_the_crafted_file_really_runs_code_when_unpickled_without_restrictions(tmp_path):
    torch.save({"conv_first.weight": Payload(tmp_path / "ran")}, tmp_path / "evil.pth")
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert (tmp_path / "ran").exists()


def test_a_file_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path):
    torch.save({"conv_first.weight": Payload(tmp_path / "pwned")}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"refusing to unpickle .*evil\.pth: it is not a plain weights file "
                                         r"\(it asks for (builtins\.)?getattr\)"):
        load_generator_state(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_code_and_torchscript_archives_are_refused_by_name_without_torchs_advice_to_unpickle_anyway(tmp_path,
                                                                                                   code_running_pickle):
    torch.save({"conv_first.weight": code_running_pickle}, tmp_path / "shell.pth")
    with pytest.raises(ValueError, match=r"refusing to unpickle .*shell\.pth: it is not a plain weights file "
                                         r"\(it asks for (posix|nt|os)\.system\)") as refused:
        read_weights_file(tmp_path / "shell.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation
        torch.jit.script(torch.nn.Conv2d(3, 3, 3)).save(str(tmp_path / "g.torchscript"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"g\.torchscript: it is a TorchScript archive .* not a weights file; "
                                             r"use the \.pth or \.safetensors file") as archive:
            read_weights_file(tmp_path / "g.torchscript")
    assert [str(w.message) for w in caught] == []
    for error in (refused, archive):
        assert "weights_only" not in str(error.value)


def test_safetensors_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    (tmp_path / "g.safetensors").write_bytes(b"unused")
    with pytest.raises(ValueError, match="needs the optional safetensors package: pip install safetensors"):
        read_weights_file(tmp_path / "g.safetensors")
    (tmp_path / "g.pth").write_bytes((2).to_bytes(8, "little") + b"{}")  # a safetensors file by its content
    with pytest.raises(ValueError, match=r"g\.pth is a safetensors file: reading it needs the optional safetensors "
                                         "package"):
        read_weights_file(tmp_path / "g.pth")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 3")  # torch's note on protocol 3, which it reads
@pytest.mark.parametrize(("legacy", "protocol"), [(False, 2), (True, 2), (True, 3)])
def test_the_format_is_read_from_the_content_so_renamed_files_load(tmp_path, legacy, protocol):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    sd = tiny_net().state_dict()
    safetensors_torch.save_file(sd, tmp_path / "renamed.pth")
    torch.save(sd, tmp_path / "renamed.safetensors", _use_new_zipfile_serialization=not legacy,
               pickle_protocol=protocol)
    for name in ("renamed.pth", "renamed.safetensors"):
        state, _ = read_weights_file(tmp_path / name)
        assert sorted(state) == sorted(sd) and all(torch.equal(state[k], sd[k]) for k in sd)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read weights file .*nothing\.pth"):
        read_weights_file(tmp_path / "nothing.pth")


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "the file is empty"),
    (b"hello world", r"it is not a torch\.save or \.safetensors file \(KeyError: 101\)"),
    (b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}", r"it is not a torch\.save file \(Unsupported operand 147\)$"),
])
def test_a_file_that_is_not_a_weights_file_is_named_with_the_reason(tmp_path, content, reason):
    (tmp_path / "g.pth").write_bytes(content)
    with pytest.raises(ValueError, match=r"cannot read weights file .*g\.pth: " + reason) as info:
        read_weights_file(tmp_path / "g.pth")
    assert "weights_only=False" not in str(info.value)  # never the advice to unpickle without restrictions


def test_an_incomplete_generator_file_is_refused_naming_the_gap(tmp_path):
    sd = tiny_net(nb=4).state_dict()
    del sd["RRDB_trunk.0.RDB2.conv3.weight"]
    for key in [k for k in sd if k.startswith(("RRDB_trunk.1.", "RRDB_trunk.2."))]:
        del sd[key]  # blocks 0 and 3 only: still read as 4 blocks, from the highest index
    sd["trunk_conv.bias"] = torch.zeros(5)
    torch.save(sd, tmp_path / "g.pth")
    with pytest.raises(ValueError, match=r"g\.pth: incomplete weights for an RRDBNet with nf=8, nb=4, gc=4, scale 4 "
                                         r".*: 61 missing keys: RRDB_trunk\.0\.RDB2\.conv3\.weight, "
                                         r"RRDB_trunk\.1\.RDB1\.conv1\.weight, .*; 1 tensors of another shape "
                                         r"\(file vs network\): trunk_conv\.bias \(5,\) vs \(8,\)"):
        load_generator_state(tmp_path / "g.pth")
    assert load_generator_state(tmp_path / "g.pth", complete=False)[1]["nb"] == 4  # for non-strict loading
    assert script("convert_weights.py")([str(tmp_path / "g.pth"), str(tmp_path / "out.pth"), "--to", "old"]) == 1
    assert not (tmp_path / "out.pth").exists()


def test_discriminator_weights_given_as_a_generator_are_named_as_such(tmp_path):
    torch.save(Discriminator_VGG_128(3, nf=4).state_dict(), tmp_path / "6_D.pth")
    with pytest.raises(ValueError, match=r"6_D\.pth: these are discriminator weights .*path\.pretrain_model_D"):
        load_generator_state(tmp_path / "6_D.pth")


# ------------------------------------------------------------------------------------------ networks.py
def test_read_state_dict_converts_and_logs_the_layout(tmp_path, package_log):
    net = tiny_net()
    torch.save({"params_ema": {f"module.{k}": v for k, v in from_esrgan(net.state_dict(), "old").items()}},
               tmp_path / "g.pth")
    with package_log.at_level(logging.INFO, logger="esrgan.models.networks"):
        state = read_state_dict(tmp_path / "g.pth")
    assert list(state) == list(net.state_dict())
    assert "old-arch layout, params_ema, 'module.' prefix removed, nf=8, nb=2, gc=4, scale 4" in package_log.text


def test_load_weights_fills_the_generator_from_another_layout(tmp_path):
    net = tiny_net(scale=2)
    torch.save(from_esrgan(net.state_dict(), "old"), tmp_path / "g.pth")
    fresh = tiny_net(scale=2, seed=1)
    load_weights(fresh, tmp_path / "g.pth", what="generator")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in net.state_dict().items())


def test_a_mismatch_lists_the_tensors_and_says_what_the_file_holds(tmp_path):
    torch.save(from_esrgan(tiny_net(nb=2).state_dict(), "basicsr"), tmp_path / "g.pth")
    with pytest.raises(ValueError) as info:
        load_weights(RRDBNet(3, 3, nf=8, nb=1, gc=8), tmp_path / "g.pth", what="generator")
    message = str(info.value)
    assert "30 unexpected keys: RRDB_trunk.1.RDB1.conv1.weight" in message
    assert "tensors of another shape (file vs network): RRDB_trunk.0.RDB1.conv1.weight (4, 8, 3, 3) vs (8, 8, 3, 3)" \
        in message
    assert message.endswith("The file holds nf=8, nb=2, gc=4, scale 4 (in_nc=3, out_nc=3): set the network_G "
                            "options and scale to match (in a test option file, leave nf, nb and gc out, or set "
                            "them to ~, to read them from the weights).")


@pytest.mark.parametrize(("head", "kind"), [(b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff\xe0", "JPEG"),
                                           (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WebP"), (b"BM6\x00", "BMP"),
                                           (b"II*\x00\x08", "TIFF"), (b"MM\x00*\x00", "TIFF"), (b"GIF89a", "GIF")])
def test_an_image_given_as_weights_is_named_as_an_image(tmp_path, head, kind):
    (tmp_path / "photo.pth").write_bytes(head + bytes(64))
    with pytest.raises(ValueError) as info:
        load_weights(tiny_net(), tmp_path / "photo.pth", what="generator")
    assert str(info.value) == (f"cannot read weights file {tmp_path / 'photo.pth'}: it is a {kind} image, not "
                               "weights; give a .pth or .safetensors weights file")


def test_the_discriminator_is_unwrapped_but_not_renamed(tmp_path):
    torch.manual_seed(0)
    d = Discriminator_VGG_128(3, 4)
    torch.save({"params": {f"module.{k}": v for k, v in d.state_dict().items()}}, tmp_path / "d.pth")
    fresh = Discriminator_VGG_128(3, 4)
    load_weights(fresh, tmp_path / "d.pth", what="discriminator")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in d.state_dict().items())


def test_a_generator_file_given_for_the_discriminator_says_so(tmp_path):
    torch.save(tiny_net().state_dict(), tmp_path / "6_G.pth")
    with pytest.raises(ValueError, match=r"do not fit the configured discriminator \(Discriminator_VGG_128\): "
                                         r"\d+ missing keys: conv0_0\.weight.*It is a generator's file: give a "
                                         r"discriminator's \(models/<iter>_D\.pth\) here\.$"):
        load_weights(Discriminator_VGG_128(3, 4), tmp_path / "6_G.pth", what="discriminator")
    with pytest.raises(ValueError, match="It is a generator's file"):  # sharing no tensor: refused without strict too
        load_weights(Discriminator_VGG_128(3, 4), tmp_path / "6_G.pth", strict=False, what="discriminator")


def test_without_strict_load_what_is_left_out_is_logged(tmp_path, package_log):
    source = tiny_net(nb=2, seed=1)
    torch.save(source.state_dict(), tmp_path / "g.pth")
    net = tiny_net(nb=1, seed=2)
    load_weights(net, tmp_path / "g.pth", strict=False, what="generator")
    assert torch.equal(net.conv_first.weight, source.conv_first.weight)
    (warning,) = {r.getMessage() for r in package_log.records if r.levelno == logging.WARNING}
    assert warning.startswith(f"{tmp_path / 'g.pth'}: strict_load is false, so these are left out (the network "
                              "keeps its initial values for missing keys): 30 unexpected keys: "
                              "RRDB_trunk.1.RDB1.conv1.weight, ")
    with pytest.raises(ValueError, match=r": 47 tensors of another shape \(file vs network\): conv_first\.weight "
                                         r"\(8, 3, 3, 3\) vs \(4, 3, 3, 3\)"):  # shapes still have to agree
        load_weights(tiny_net(nf=4, gc=4), tmp_path / "g.pth", strict=False, what="generator")


def test_generator_options_are_inferred_from_a_file(tmp_path):
    torch.save(from_esrgan(tiny_net(scale=2, nf=4, nb=3, gc=2).state_dict(), "old"), tmp_path / "g.pth")
    assert infer_generator_options(tmp_path / "g.pth") == {"in_nc": 3, "out_nc": 3, "nf": 4, "nb": 3, "gc": 2,
                                                           "scale": 2}


# ------------------------------------------------------------------------------------------ convert_weights.py
@pytest.mark.parametrize("layout", ["basicsr", "old"])
def test_convert_weights_round_trip_keeps_tensors_and_key_order(tmp_path, layout):
    ours = tiny_net().state_dict()
    torch.save(ours, tmp_path / "ours.pth")
    convert = script("convert_weights.py")
    assert convert([str(tmp_path / "ours.pth"), str(tmp_path / "theirs.pth"), "--to", layout]) == 0
    assert convert([str(tmp_path / "theirs.pth"), str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(back) == list(ours)
    assert all(torch.equal(back[k], v) for k, v in ours.items())


def test_convert_weights_wraps_basicsr_as_params(tmp_path):
    torch.save(tiny_net().state_dict(), tmp_path / "ours.pth")
    assert script("convert_weights.py")([str(tmp_path / "ours.pth"), str(tmp_path / "b.pth"), "--to", "basicsr"]) == 0
    assert list(torch.load(tmp_path / "b.pth", weights_only=True)) == ["params"]


def test_convert_weights_writes_safetensors_with_the_hyperparameters(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    ours = tiny_net(scale=2).state_dict()
    torch.save(ours, tmp_path / "ours.pth")
    assert script("convert_weights.py")([str(tmp_path / "ours.pth"), str(tmp_path / "g.safetensors")]) == 0
    with safetensors.safe_open(tmp_path / "g.safetensors", framework="pt") as fh:
        assert fh.metadata() == {"in_nc": "3", "out_nc": "3", "nf": "8", "nb": "2", "gc": "4", "scale": "2",
                                 "layout": "esrgan"}
    state, hparams, description = load_generator_state(tmp_path / "g.safetensors")
    assert description == "ESRGAN layout, raw state dict"
    assert hparams == {"in_nc": 3, "out_nc": 3, "nf": 8, "nb": 2, "gc": 4, "scale": 2}
    assert all(torch.equal(state[k], v) for k, v in ours.items())


def test_convert_weights_reports_a_refused_file(tmp_path, capsys):
    torch.save({"unrelated.weight": torch.zeros(1)}, tmp_path / "x.pth")
    assert script("convert_weights.py")([str(tmp_path / "x.pth"), str(tmp_path / "y.pth")]) == 1
    assert "no single known ESRGAN generator layout" in capsys.readouterr().err
    assert not (tmp_path / "y.pth").exists()


# ------------------------------------------------------------------------------------------ net_interp.py
@pytest.fixture
def psnr_and_gan(tmp_path):
    """A 'PSNR' model in the old arch and a 'GAN' model in the BasicSR layout, both x4 nf 8 nb 2 gc 4."""
    psnr, gan = tiny_net(seed=1).state_dict(), tiny_net(seed=2).state_dict()
    torch.save(from_esrgan(psnr, "old"), tmp_path / "psnr.pth")
    torch.save({"params_ema": from_esrgan(gan, "basicsr")}, tmp_path / "gan.pth")
    return psnr, gan


def test_interpolation_ends_are_the_inputs_and_the_middle_is_the_mean(tmp_path, psnr_and_gan):
    psnr, gan = psnr_and_gan
    argv = ["--psnr", str(tmp_path / "psnr.pth"), "--gan", str(tmp_path / "gan.pth"), "--alpha", "0", "0.5", "1",
            "-o", str(tmp_path / "out")]
    assert script("net_interp.py")(argv) == 0
    outputs = {alpha: torch.load(tmp_path / "out" / f"interp_{alpha}.pth", weights_only=True)
               for alpha in ("0", "0.5", "1")}
    assert all(list(o) == list(psnr) for o in outputs.values())
    assert all(torch.equal(outputs["0"][k], v) for k, v in psnr.items())
    assert all(torch.equal(outputs["1"][k], v) for k, v in gan.items())
    assert all(torch.equal(outputs["0.5"][k], (psnr[k] + gan[k]) / 2) for k in psnr)


def test_interpolation_follows_the_papers_formula(tmp_path, psnr_and_gan):
    psnr, gan = psnr_and_gan
    argv = ["--psnr", str(tmp_path / "psnr.pth"), "--gan", str(tmp_path / "gan.pth"), "--alpha", "0.8",
            "-o", str(tmp_path / "interp_08.pth")]
    assert script("net_interp.py")(argv) == 0
    out = torch.load(tmp_path / "interp_08.pth", weights_only=True)
    assert torch.equal(out["conv_last.weight"], 0.2 * psnr["conv_last.weight"] + 0.8 * gan["conv_last.weight"])


def test_a_half_precision_model_is_blended_in_float32(tmp_path, psnr_and_gan):
    """A float16 model (one of the two, or both): the blend is computed (and written) in float32, so test.py's
    sweep, which blends into its float32 network, tests exactly the file net_interp.py writes."""
    psnr, gan = psnr_and_gan
    torch.save({k: v.half() for k, v in gan.items()}, tmp_path / "gan16.pth")
    argv = ["--psnr", str(tmp_path / "psnr.pth"), "--gan", str(tmp_path / "gan16.pth"), "--alpha", "0.3",
            "-o", str(tmp_path / "interp.pth")]
    assert script("net_interp.py")(argv) == 0
    out = torch.load(tmp_path / "interp.pth", weights_only=True)
    expected = {k: 0.7 * v + 0.3 * gan[k].half().float() for k, v in psnr.items()}
    assert {v.dtype for v in out.values()} == {torch.float32}
    assert all(torch.equal(out[k], v) for k, v in expected.items())
    blend = interpolate_states(psnr, {k: v.half() for k, v in gan.items()}, 0.3)
    assert all(torch.equal(v, expected[k]) for k, v in blend.items())
    both_half = interpolate_states({k: v.half() for k, v in psnr.items()}, {k: v.half() for k, v in gan.items()}, 0.3)
    assert all(v.dtype == torch.float32 and torch.equal(v, 0.7 * psnr[k].half().float() + 0.3 * gan[k].half().float())
               for k, v in both_half.items())


def test_interpolation_outputs_can_follow_a_pattern(tmp_path, psnr_and_gan):
    argv = ["--psnr", str(tmp_path / "psnr.pth"), "--gan", str(tmp_path / "gan.pth"), "--alpha", "0.2", "0.9",
            "-o", str(tmp_path / "models" / "esrgan_{alpha}.pth")]
    assert script("net_interp.py")(argv) == 0
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["esrgan_0.2.pth", "esrgan_0.9.pth"]


def test_one_alpha_into_a_new_folder_named_with_a_slash(tmp_path, psnr_and_gan):
    argv = ["--psnr", str(tmp_path / "psnr.pth"), "--gan", str(tmp_path / "gan.pth"), "--alpha", "0.5",
            "-o", f"{tmp_path / 'interp'}/"]
    assert script("net_interp.py")(argv) == 0
    assert [p.name for p in (tmp_path / "interp").iterdir()] == ["interp_0.5.pth"]


def test_weight_scripts_that_cannot_write_say_so_in_one_line(tmp_path, psnr_and_gan, capsys):
    (tmp_path / "taken").write_text("a file where a folder would be made")
    psnr, gan = str(tmp_path / "psnr.pth"), str(tmp_path / "gan.pth")
    argv = ["--psnr", psnr, "--gan", gan, "--alpha", "0.2", "0.5", "-o", str(tmp_path / "taken")]
    assert script("net_interp.py")(argv) == 1
    assert capsys.readouterr().err == (f"error: cannot write {tmp_path / 'taken' / 'interp_0.2.pth'}: File exists "
                                       f"({tmp_path / 'taken'})\n")
    assert script("convert_weights.py")([psnr, str(tmp_path / "taken" / "b.pth"), "--to", "basicsr"]) == 1
    assert capsys.readouterr().err == (f"error: cannot write {tmp_path / 'taken' / 'b.pth'}: File exists "
                                       f"({tmp_path / 'taken'})\n")


def test_interpolation_refuses_different_networks_listing_the_differences(tmp_path, capsys):
    torch.save(tiny_net(nb=1).state_dict(), tmp_path / "a.pth")
    torch.save(tiny_net(nb=2, gc=8).state_dict(), tmp_path / "b.pth")
    argv = ["--psnr", str(tmp_path / "a.pth"), "--gan", str(tmp_path / "b.pth"), "--alpha", "0.8",
            "-o", str(tmp_path / "out.pth")]
    assert script("net_interp.py")(argv) == 1
    err = capsys.readouterr().err
    assert "are not the same network (57 differences): RRDB_trunk.1.RDB1.conv1.weight only in the GAN model;" in err
    assert not (tmp_path / "out.pth").exists()


def test_neither_script_overwrites_its_input(tmp_path, psnr_and_gan, capsys):
    before = {name: (tmp_path / name).read_bytes() for name in ("psnr.pth", "gan.pth")}
    argv = ["--psnr", str(tmp_path / "psnr.pth"), "--gan", str(tmp_path / "gan.pth"), "--alpha", "0.8",
            "-o", str(tmp_path / "x" / ".." / "gan.pth")]  # the GAN model, spelled otherwise
    assert script("net_interp.py")(argv) == 1
    assert "refusing to overwrite an input model with a blend" in capsys.readouterr().err
    psnr = str(tmp_path / "psnr.pth")
    assert script("convert_weights.py")([psnr, psnr, "--to", "basicsr"]) == 1
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert script("convert_weights.py")([psnr, str(tmp_path), "--to", "basicsr"]) == 1
    assert f"error: {tmp_path} is a folder; give the file to write" in capsys.readouterr().err
    assert before == {name: (tmp_path / name).read_bytes() for name in ("psnr.pth", "gan.pth")}


def test_interpolation_refuses_alpha_outside_0_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        script("net_interp.py")(["--psnr", "a", "--gan", "b", "--alpha", "1.5", "-o", str(tmp_path)])
    assert info.value.code == 2
    assert "must be between 0 (the PSNR model) and 1 (the GAN model), got 1.5" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["convert_weights.py", "net_interp.py"])
def test_script_help_exits_0(name, capsys):
    with pytest.raises(SystemExit) as info:
        script(name)(["--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out
