"""Specification of the option files: schema, error messages, YAML quirks, cross-field checks, overrides, paths."""

import copy
import os
from pathlib import Path

import pytest
import yaml

from esrgan.options import (
    REPO_ROOT,
    OptionError,
    TrainOptions,
    apply_overrides,
    load_options,
    load_yaml,
    parse_options,
)
from esrgan.options import TestOptions as OptionsOfTest  # not `TestOptions`: pytest would try to collect it

OPTIONS_DIR = REPO_ROOT / "options"
DEMO_TRAIN = "datasets/demo/train"
DEMO_VAL = "datasets/demo/val"


def minimal_train() -> dict:
    """The smallest valid raw TrainOptions tree (model esrgan, GT_size 128, both phases), on the demo data."""
    return {
        "name": "spec",
        "model": "esrgan",
        "scale": 4,
        "datasets": {
            "train": {"dataroot_GT": DEMO_TRAIN, "dataroot_LQ": None, "GT_size": 128},
            "val": {"dataroot_GT": str(REPO_ROOT / DEMO_VAL)},
        },
        "train": {"psnr": {"niter": 10}, "gan": {"niter": 10}},
    }


def with_value(raw: dict, dotted: str, value) -> dict:
    """A copy of `raw` with `dotted` set to `value` (sections created as needed)."""
    raw = copy.deepcopy(raw)
    *sections, leaf = dotted.split(".")
    node = raw
    for part in sections:
        node = node.setdefault(part, {})
    node[leaf] = value
    return raw


def error_of(raw: dict, cls: type = TrainOptions, **kwargs) -> str:
    with pytest.raises(OptionError) as info:
        parse_options(cls, raw, **kwargs)
    return str(info.value)


def test_the_minimal_options_parse():
    options = parse_options(TrainOptions, minimal_train())
    assert options.name == "spec"
    assert options.total_iters == 20


# ------------------------------------------------------------------------------------------ unknown keys
def test_unknown_key_suggests_the_same_name_in_another_section():
    message = error_of(with_value(minimal_train(), "train.pixel_weigth", 1))
    assert "unknown option train.pixel_weigth" in message
    assert "did you mean train.gan.pixel_weight" in message


def test_misspelled_top_level_section_suggests_the_section():
    raw = minimal_train()
    raw["netwrk_G"] = {"nf": 32}
    message = error_of(raw)
    assert "unknown option netwrk_G" in message
    assert "did you mean network_G" in message


def test_a_key_of_several_sections_suggests_each_of_them():
    message = error_of(with_value(minimal_train(), "train.niter", 10))
    assert "unknown option train.niter: did you mean train.psnr.niter or train.gan.niter?" in message


def test_a_section_name_in_capitals_suggests_the_section_as_spelled_here():
    raw = minimal_train()
    raw["NETWORK_G"] = {"nf": 32}
    assert "unknown option NETWORK_G: did you mean network_G?" in error_of(raw)


def test_misspelled_key_suggests_the_nearest_key_of_the_same_section():
    message = error_of(with_value(minimal_train(), "train.gan.gan_wieght", 1e-3))
    assert "unknown option train.gan.gan_wieght" in message
    assert "did you mean train.gan.gan_weight" in message


def test_a_key_that_differs_only_in_case_is_suggested_before_nearer_spellings():
    raw = with_value(minimal_train(), "datasets.train.dataroot_gt", "x")
    raw["network_d"] = {"nf": 32}
    assert error_of(raw) == ("2 unknown options:\n"
                             "  unknown option datasets.train.dataroot_gt: did you mean datasets.train.dataroot_GT?\n"
                             "  unknown option network_d: did you mean network_D?")


def test_every_unknown_key_is_listed_at_once_with_basicsrs_names_translated():
    raw = minimal_train() | {"model_type": "ESRGANModel", "num_gpu": 1}
    raw = with_value(with_value(raw, "datasets.train.gt_size", 128), "datasets.train.batch_size_per_gpu", 16)
    raw = with_value(raw, "train.total_iter", 400000)
    lines = error_of(raw).splitlines()
    assert lines[0] == "5 unknown options:"
    assert lines[1:] == [  # in the file's order
        "  unknown option datasets.train.gt_size: did you mean datasets.train.GT_size?",
        "  unknown option datasets.train.batch_size_per_gpu (a BasicSR name): use datasets.train.batch_size",
        "  unknown option train.total_iter (a BasicSR name): use train.psnr.niter + train.gan.niter (both phases "
        "run in one run)",
        "  unknown option model_type (a BasicSR name): use model (esrgan or sr)",
        "  unknown option num_gpu (a BasicSR name): not needed: train on several GPUs with torchrun "
        "--nproc_per_node=N train.py -opt ..."]


def test_a_key_yaml_reads_as_null_or_a_boolean_is_named_as_written():
    raw = minimal_train() | {None: 3, True: 4}
    assert error_of(raw) == ("2 unknown options:\n"
                             "  unknown option null: valid keys here are name, model, scale, device, datasets, "
                             "network_G, network_D, network_F, path, train, logger, speed, metric_options\n"
                             "  unknown option true: valid keys here are name, model, scale, device, datasets, "
                             "network_G, network_D, network_F, path, train, logger, speed, metric_options")


def test_unknown_keys_inside_named_test_sets_are_found():
    raw = {"name": "t", "path": {"pretrain_model_G": "x.pth"},
           "datasets": {"a": {"dataroot_GT": "x", "metricz": ["psnr"]}}}
    assert error_of(raw, OptionsOfTest, check_paths=False) == "unknown option datasets.a.metricz: did you mean " \
                                                              "datasets.a.metrics?"


# ------------------------------------------------------------------------------------------ types
def test_wrong_type_for_an_integer_names_the_key_and_the_value():
    message = error_of(with_value(minimal_train(), "train.val_freq", "abc"))
    assert "train.val_freq" in message
    assert "'abc'" in message


def test_an_integer_is_not_a_boolean():
    message = error_of(with_value(minimal_train(), "datasets.train.use_flip", 3))
    assert "datasets.train.use_flip" in message
    assert "true or false" in message
    assert "3" in message


def test_a_literal_with_a_wrong_value_lists_the_choices():
    message = error_of(with_value(minimal_train(), "train.gan.gan_type", "wgan"))
    assert "train.gan.gan_type" in message
    assert "'wgan'" in message
    assert "'gan', 'ragan', 'lsgan'" in message


@pytest.mark.parametrize("key, value, message", [
    # The right name in another section beats a near name in this one (logger.save_freq).
    ("logger.val_freq", 100, "unknown option logger.val_freq: did you mean train.val_freq?"),
    ("val", {"val_freq": 100}, "unknown option val (a BasicSR name): use train.val_freq and train.val_metrics"),
    ("train.psnr.optim_G.betas", [0.9, 0.99], "unknown option train.psnr.optim_G.betas (a BasicSR name): use beta1 "
                                              "and beta2"),
    ("datasets.train.type", "PairedImageDataset", "unknown option datasets.train.type (a BasicSR name): not needed "
                                                  "here"),
])
def test_basicsr_habits_get_the_right_suggestion(key, value, message):
    assert error_of(with_value(minimal_train(), key, value)).startswith(message)


def test_a_section_spelled_in_another_case_is_checked_inside_too():
    """BasicSR's network_g holds BasicSR's names: all of them are listed in the same run."""
    raw = minimal_train() | {"network_g": {"type": "RRDBNet", "num_feat": 64, "nb": 23}}
    assert error_of(raw).splitlines() == [
        "3 unknown options:",
        "  unknown option network_g: did you mean network_G?",
        "  unknown option network_g.type (a BasicSR name): not needed here: the section says what it builds "
        "(network_G.which_model_G and network_D.which_model_D name the architectures; datasets are paired GT/LQ "
        "sets)",
        "  unknown option network_g.num_feat (a BasicSR name): use network_G.nf / network_D.nf"]


@pytest.mark.parametrize("key, value, message", [
    ("train.lr_G", 1e-4, "unknown option train.lr_G (a name of the original ESRGAN code): use "
                         "train.psnr.optim_G.lr and train.gan.optim_G.lr"),
    ("train.lr_steps", [50000], "unknown option train.lr_steps (a name of the original ESRGAN code): use "
                                "train.<phase>.scheduler.milestones (counted from the start of each phase)"),
    ("datasets.train.dataroot_HR", DEMO_TRAIN, "unknown option datasets.train.dataroot_HR (a name of the original "
                                               "ESRGAN code): use dataroot_GT"),
    ("datasets.train.mode", "LQGT", "unknown option datasets.train.mode (a name of the original ESRGAN code): not "
                                    "needed: datasets are paired GT/LQ sets"),
    ("network_G.scale", 4, "unknown option network_G.scale: did you mean scale?"),
    ("mode", "esrgan", "unknown option mode: did you mean model?"),  # mmsr's datasets.*.mode only there
])
def test_the_original_codes_names_get_their_counterpart(key, value, message):
    assert error_of(with_value(minimal_train(), key, value)).startswith(message)


@pytest.mark.parametrize("key, value, message", [
    ("datasets.train.data_type", "img", "datasets.train.data_type: 'img' is not one of 'auto', 'folder', 'lmdb'; "
                                        "'img' is written 'folder' here"),
    ("train.gan.gan_type", "vanilla", "train.gan.gan_type: 'vanilla' is not one of 'gan', 'ragan', 'lsgan'; "
                                      "'vanilla' is written 'gan' here"),
    ("train.gan.gan_type", "hinge", "train.gan.gan_type: 'hinge' is not one of 'gan', 'ragan', 'lsgan'"),
    ("train.gan.gan_type", "ragn", "train.gan.gan_type: 'ragn' is not one of 'gan', 'ragan', 'lsgan'; did you mean "
                                   "ragan?"),
])
def test_values_of_other_codes_get_their_counterpart(key, value, message):
    assert error_of(with_value(minimal_train(), key, value)) == message


@pytest.mark.parametrize("key, value, message", [
    ("speed.tf32", False, "speed.tf32: False is not one of 'conv', 'all', 'none' (YAML reads yes, no, on, off, true "
                          "and false as booleans): quote the value, e.g. 'on'"),
    ("network_G.nb", None, "network_G.nb: ~ (null) is not a value of this option: give one (or leave the key out, "
                           "where the option has a default)"),
    ("train.manual_seed", 10**20, "train.manual_seed: 100000000000000000000 is out of range; it must be in "
                                  "[0, 4294967295]"),
    # as written, not as its 301 digits
    ("network_G.nf", "1e300", "network_G.nf: 1e300 is out of range; it must be in [1, 1024]"),
])
def test_a_boolean_or_null_or_too_large_value_is_named_as_such(key, value, message):
    assert error_of(with_value(minimal_train(), key, value)) == message


def test_integers_beyond_2_to_the_53_are_read_exactly():
    raw = apply_overrides(minimal_train(), ["logger.print_freq=9007199254740993", "train.gan.niter=1e3"])
    o = parse_options(TrainOptions, raw, check_paths=False)
    assert o.logger.print_freq == 2**53 + 1 and o.train.gan.niter == 1000


def test_basicsr_names_in_a_test_option_file_point_to_the_test_options():
    raw = {"name": "t", "model_type": "ESRGANModel", "num_gpu": 1, "path": {"pretrain_model_G": "g.pth"},
           "datasets": {"a": {"dataroot_GT": DEMO_VAL}}, "val": {"save_img": True, "metrics": {"psnr": {}}}}
    assert error_of(raw, OptionsOfTest, check_paths=False).splitlines()[1:] == [
        "  unknown option model_type (a BasicSR name): not needed: test.py tests the generator of "
        "path.pretrain_model_G",
        "  unknown option num_gpu (a BasicSR name): not needed: test.py runs on one device (device: cuda:N)",
        "  unknown option val (a BasicSR name): not needed: each test set is scored by its datasets.<set>.metrics"]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("datasets.train.lq_size", 32, "unknown option datasets.train.lq_size (a traiNNer-redux name): use "
                                   "datasets.train.GT_size, the HR patch: lq_size x scale (128, the discriminator's "
                                   "input)"),
    ("use_amp", True, "unknown option use_amp (a traiNNer-redux name): use speed.precision: fp16 (bf16 with "
                      "amp_bf16)"),
    ("logger.save_checkpoint_format", "safetensors", "unknown option logger.save_checkpoint_format (a traiNNer-redux "
                                                     "name): use logger.save_safetensors: true"),
    ("fast_matmul", True, "unknown option fast_matmul (a traiNNer-redux name): use speed.tf32: all"),
])
def test_trainner_redux_names_get_their_counterpart(key, value, message):
    assert error_of(with_value(minimal_train(), key, value)).startswith(message)


def test_trainner_redux_names_in_a_test_option_file_point_to_the_test_options():
    raw = {"name": "t", "use_amp": True, "use_channels_last": True, "path": {"pretrain_model_G": "g.pth"},
           "datasets": {"a": {"dataroot_GT": DEMO_VAL}}}
    assert error_of(raw, OptionsOfTest, check_paths=False).splitlines()[1:] == [
        "  unknown option use_amp (a traiNNer-redux name): use test.precision: fp16 (bf16 with amp_bf16)",
        "  unknown option use_channels_last (a traiNNer-redux name): use test.channels_last"]


def test_basicsr_tile_names_point_to_the_tile_options():
    raw = {"name": "t", "path": {"pretrain_model_G": "g.pth"}, "datasets": {"a": {"dataroot_GT": DEMO_VAL}},
           "test": {"tile_size": 256, "tile_pad": 10}}
    assert error_of(raw, OptionsOfTest, check_paths=False) == (
        "2 unknown options:\n  unknown option test.tile_size (a BasicSR name): use test.tile (LR pixels)\n"
        "  unknown option test.tile_pad (a BasicSR name): use test.tile_overlap (LR pixels)")
    assert error_of(with_value(minimal_train(), "train.tile_size", 64)) == (
        "unknown option train.tile_size (a BasicSR name): use train.val_tile (LR pixels)")


# ------------------------------------------------------------------------------------------ ranges
def test_batch_size_zero_is_out_of_range():
    message = error_of(with_value(minimal_train(), "datasets.train.batch_size", 0))
    assert "datasets.train.batch_size" in message
    assert ">= 1" in message


def test_adam_beta1_of_one_or_more_is_out_of_range():
    message = error_of(with_value(minimal_train(), "train.gan.optim_G.beta1", 1.0))
    assert "train.gan.optim_G.beta1" in message
    assert "1.0" in message
    assert "in [0, 0.999999]" in message


@pytest.mark.parametrize("key, value, where, bounds", [
    ("train.psnr.scheduler.periods", [100, 0], "[1]", ">= 1"),  # a cycle of 0 iterations divides by zero
    ("train.gan.scheduler.milestones", [-5], "[0]", ">= 1"),
    ("train.gan.scheduler.restart_weights", [-0.5], "[0]", ">= 0"),
    ("train.manual_seed", 2**32, "", "in [0, 4294967295]"),  # NumPy's seeds
])
def test_list_items_and_seeds_out_of_range_name_their_key(key, value, where, bounds):
    message = error_of(with_value(minimal_train(), key, value))
    assert message.startswith(f"{key}{where}: ") and f"out of range; it must be {bounds}" in message


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "..\\x"])
def test_a_run_name_must_be_one_folder_name(name):
    # The run's folder <root>/<name> is moved aside when it exists: "" or "." would move the whole root.
    assert error_of(with_value(minimal_train(), "name", name)).startswith(f"name: {name!r} is not a folder name")


def test_a_test_set_name_must_be_one_folder_name():
    raw = {"name": "t", "path": {"pretrain_model_G": "g.pth"}, "datasets": {"a": {"dataroot_GT": DEMO_VAL,
                                                                               "name": "Set5/"}}}
    assert error_of(raw, OptionsOfTest, check_paths=False).startswith(
        "datasets.a.name: 'Set5/' is not a folder name")


def test_two_test_sets_of_one_name_are_refused():
    raw = {"name": "t", "path": {"pretrain_model_G": "g.pth"},
           "datasets": {"a": {"dataroot_GT": DEMO_VAL, "name": "Set5"}, "b": {"dataroot_GT": DEMO_TRAIN,
                                                                             "name": "Set5"}}}
    assert error_of(raw, OptionsOfTest, check_paths=False) == (
        "datasets.b.name: 'Set5' is also the name of datasets.a; each test set's results go to "
        "results/<name>/<set name>, so give each its own")
    del raw["datasets"]["b"]["name"]  # named after its key
    assert [ds.name for ds in parse_options(OptionsOfTest, raw, check_paths=False).datasets.values()] == ["Set5", "b"]


def test_an_option_file_that_is_a_folder_or_not_utf8_is_named(tmp_path):
    with pytest.raises(OptionError, match=rf"option file {tmp_path} is a folder; give the YAML file"):
        load_options(TrainOptions, tmp_path)
    (tmp_path / "latin1.yml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(OptionError, match=r"latin1\.yml: not UTF-8 text .*save the option file as UTF-8"):
        load_options(TrainOptions, tmp_path / "latin1.yml")


# ------------------------------------------------------------------------------------------ YAML quirks
def test_exponent_without_a_dot_is_a_string_to_pyyaml_and_accepted_as_a_float():
    value = yaml.safe_load("lr: 1e-4")["lr"]
    assert value == "1e-4"  # YAML 1.1 needs `1.0e-4`; PyYAML gives the string
    options = parse_options(TrainOptions, with_value(minimal_train(), "train.gan.optim_G.lr", value))
    assert options.train.gan.optim_G.lr == 1e-4
    assert type(options.train.gan.optim_G.lr) is float


def test_integral_exponent_notation_is_accepted_for_integers():
    value = yaml.safe_load("val_freq: 5e3")["val_freq"]
    options = parse_options(TrainOptions, with_value(minimal_train(), "train.val_freq", value))
    assert options.train.val_freq == 5000
    assert type(options.train.val_freq) is int


def test_a_fraction_is_rejected_for_an_integer():
    message = error_of(with_value(minimal_train(), "train.val_freq", 5.5))
    assert "train.val_freq" in message
    assert "expected an integer" in message


@pytest.mark.parametrize("text", [".inf", ".nan", "1e400"])
def test_a_non_finite_number_is_an_option_error_for_an_integer(text):
    value = yaml.safe_load(f"v: {text}")["v"]
    message = error_of(with_value(minimal_train(), "train.val_freq", value))
    assert "train.val_freq" in message


@pytest.mark.parametrize("text", [".inf", ".nan", "1e400"])
def test_a_non_finite_number_is_an_option_error_for_a_float(text):
    value = yaml.safe_load(f"lr: {text}")["lr"]
    message = error_of(with_value(minimal_train(), "train.gan.optim_G.lr", value))
    assert message.endswith(f"train.gan.optim_G.lr: expected a finite number, got {value!r}")


# ------------------------------------------------------------------------------------------ cross-field checks
def test_gt_size_must_be_a_multiple_of_the_scale():
    message = error_of(with_value(minimal_train(), "datasets.train.GT_size", 130))
    assert "datasets.train.GT_size" in message
    assert "not a multiple of scale 4" in message


def test_model_esrgan_needs_the_discriminator_input_size():
    message = error_of(with_value(minimal_train(), "datasets.train.GT_size", 96))
    assert "datasets.train.GT_size" in message
    assert "discriminator" in message
    assert "128" in message


def test_model_sr_takes_any_gt_size_that_is_a_multiple_of_the_scale():
    raw = with_value(minimal_train(), "model", "sr")
    raw = with_value(with_value(raw, "train.gan.niter", 0), "datasets.train.GT_size", 96)
    assert parse_options(TrainOptions, raw).datasets.train.GT_size == 96


def test_a_missing_dataroot_folder_names_the_key_and_the_path(tmp_path):
    missing = tmp_path / "no_such_folder"
    message = error_of(with_value(minimal_train(), "datasets.train.dataroot_GT", str(missing)))
    assert "datasets.train.dataroot_GT" in message
    assert str(missing) in message


def test_a_missing_pretrained_model_says_how_to_resume_without_it(tmp_path):
    gone = tmp_path / "RRDB_PSNR_x4.pth"
    message = error_of(with_value(minimal_train(), "path.pretrain_model_G", str(gone)))
    assert message.startswith(f"path.pretrain_model_G: file {gone} does not exist (relative paths start at ")
    assert message.endswith("; a run resumed from a training state takes its weights from there: to resume "
                            "without the file, add --set path.pretrain_model_G=~ (a new run would then start from "
                            "random weights)")


def test_a_dataroot_that_is_a_file_says_to_give_its_folder(tmp_path):
    image = tmp_path / "img.png"
    image.write_bytes(b"")
    message = error_of(with_value(minimal_train(), "datasets.val.dataroot_GT", str(image)))
    assert message.endswith(f"datasets.val.dataroot_GT: {image} is a file; give the folder (of images, or an LMDB) "
                            "that holds it")


def test_missing_folders_are_not_checked_without_check_paths(tmp_path):
    missing = str(tmp_path / "no_such_folder")
    options = parse_options(TrainOptions, with_value(minimal_train(), "datasets.val.dataroot_LQ", missing),
                            check_paths=False)
    assert options.datasets.val.dataroot_LQ == missing


def test_model_sr_with_a_gan_phase_is_rejected():
    message = error_of(with_value(minimal_train(), "model", "sr"))
    assert "train.gan.niter" in message
    assert "'sr'" in message


def test_scale_3_is_rejected():
    raw = with_value(with_value(minimal_train(), "model", "sr"), "train.gan.niter", 0)
    message = error_of(with_value(with_value(raw, "scale", 3), "datasets.train.GT_size", 129))
    assert "scale" in message
    assert "not supported" in message


def test_an_esrgan_patch_larger_than_the_discriminators_input_is_refused():
    assert error_of(with_value(minimal_train(), "datasets.train.GT_size", 192)) == (
        "datasets.train.GT_size: 192 differs from the discriminator's input size 128 (network_D.which_model_D = "
        "discriminator_vgg_128)")


def test_validation_metrics_without_psnr_are_refused_since_psnr_picks_the_best_model():
    assert error_of(with_value(minimal_train(), "train.val_metrics", ["ssim"])) == (
        "train.val_metrics: ['ssim'] lacks psnr, which picks the best model; add it")


def test_a_feature_layer_beyond_the_vgg19_in_use_is_rejected():
    message = error_of(with_value(minimal_train(), "network_F.feature_layer", 37))
    assert "network_F.feature_layer: 37 is not a layer of VGG19 (0 to 36; conv5_4 before its ReLU is 34)" in message
    raw = with_value(with_value(minimal_train(), "network_F.feature_layer", 49), "network_F.use_bn", True)
    assert parse_options(TrainOptions, raw).network_F.feature_layer == 49
    assert "0 to 52" in error_of(with_value(raw, "network_F.feature_layer", 53))


def test_cosine_annealing_without_periods_is_rejected():
    message = error_of(with_value(minimal_train(), "train.psnr.scheduler", {"type": "CosineAnnealingRestartLR"}))
    assert "train.psnr.scheduler.periods" in message



def test_numbers_given_to_string_options_keep_how_they_were_written():
    # YAML 1.1 reads 0123 as octal 83, 1.10 as 1.1 and 1:30 as 90: a string option gets the text as written.
    raw = {**minimal_train(), **load_yaml("name: 0123")}
    raw["train"] |= load_yaml("ema_decay: 0.9990\nval_freq: 0x10")
    raw["datasets"]["val"] |= load_yaml("name: 1:30")
    options = parse_options(TrainOptions, raw)
    assert (options.name, options.datasets.val.name) == ("0123", "1:30")
    assert (options.train.ema_decay, options.train.val_freq) == (0.999, 16)  # numeric options: plain numbers
    assert (type(options.train.ema_decay), type(options.train.val_freq)) == (float, int)
    assert yaml.safe_dump({"n": options.train.val_freq}) == "n: 16\n"
    test_raw = {"name": 1.10, **load_yaml("path: {pretrain_model_G: x.pth}\ndatasets: {007: {dataroot_GT: x}}")}
    tested = parse_options(OptionsOfTest, test_raw, check_paths=False)
    assert list(tested.datasets) == ["007"]
    assert parse_options(OptionsOfTest, apply_overrides(test_raw, ["name=1.10"]), check_paths=False).name == "1.10"
    # A set's key is its name as written, so that --set reaches it.
    tested = parse_options(OptionsOfTest, apply_overrides(test_raw, ["datasets.007.metrics=[psnr]"]), check_paths=False)
    assert list(tested.datasets) == ["007"] and tested.datasets["007"].metrics == ["psnr"]
    assert list(load_yaml("{on: 1, 1.50: 2, 0x1F: 3}")) == ["on", "1.50", "0x1F"]


def test_a_boolean_given_to_a_string_option_says_to_quote_it():
    assert error_of({**minimal_train(), **load_yaml("name: yes")}) == (
        "name: expected a string, got True (YAML reads yes, no, on, off, true and false as booleans): quote the "
        "value, e.g. 'on'")


# ------------------------------------------------------------------------------------------ --set overrides
def test_override_values_are_parsed_as_yaml():
    raw = apply_overrides(minimal_train(), ["train.gan.niter=7", "datasets.train.dataroot_LQ=~",
                                            "train.psnr.scheduler.milestones=[1, 2]", "name=run 2"])
    assert raw["train"]["gan"]["niter"] == 7
    assert isinstance(raw["train"]["gan"]["niter"], int)  # a number, not the string "7"
    assert raw["datasets"]["train"]["dataroot_LQ"] is None
    assert raw["train"]["psnr"]["scheduler"]["milestones"] == [1, 2]
    assert raw["name"] == "run 2"


def test_an_override_that_yaml_would_cut_at_a_comment_says_to_quote_it():
    with pytest.raises(OptionError) as info:
        apply_overrides(minimal_train(), ["name=run #2"])
    assert str(info.value) == "--set name: YAML would drop '#2' as a comment; quote the value, e.g. " \
                              "--set 'name=\"run #2\"'"
    with pytest.raises(OptionError, match=r"would drop '# x' as a comment; remove it$"):  # quoting makes a string
        apply_overrides(minimal_train(), ["train.psnr.scheduler.milestones=[1, 2] # x"])
    assert apply_overrides(minimal_train(), ['name="run #2"', "datasets.val.name=val#2"])["name"] == "run #2"


def test_override_creates_missing_sections():
    assert apply_overrides({}, ["train.gan.optim_D.lr=2e-4"]) == {"train": {"gan": {"optim_D": {"lr": "2e-4"}}}}


def test_override_without_an_equals_sign_is_an_option_error():
    with pytest.raises(OptionError, match=r"expected dotted\.key=value"):
        apply_overrides(minimal_train(), ["train.gan.niter"])


def test_override_with_an_empty_key_or_invalid_yaml_is_an_option_error():
    with pytest.raises(OptionError, match=r"--set '=5': expected dotted\.key=value"):
        apply_overrides(minimal_train(), ["=5"])
    with pytest.raises(OptionError, match=r"--set 'train\.\.niter=5': expected dotted\.key=value"):
        apply_overrides(minimal_train(), ["train..niter=5"])
    with pytest.raises(OptionError, match=r"--set train\.psnr\.scheduler\.milestones: '\[100, 200' is not valid "
                                          r"YAML \(while parsing a flow sequence\)"):
        apply_overrides(minimal_train(), ["train.psnr.scheduler.milestones=[100, 200"])


def test_a_test_set_set_to_null_is_left_out():
    raw = {"name": "t", "path": {"pretrain_model_G": "x.pth"},
           "datasets": {"a": {"dataroot_GT": "x"}, "b": {"dataroot_GT": "y"}}}
    options = parse_options(OptionsOfTest, apply_overrides(raw, ["datasets.b=null"]), check_paths=False)
    assert list(options.datasets) == ["a"]


def test_a_folder_given_as_the_resume_state_says_what_to_give():
    assert error_of(with_value(minimal_train(), "path.resume_state", str(REPO_ROOT / "options"))) == (
        f"path.resume_state: {REPO_ROOT / 'options'} is a folder, not a file: give one of its "
        "training_state/<iter>.state files, or train with --auto_resume")


def test_training_networks_take_three_channels():
    for key in ("network_G.in_nc", "network_G.out_nc", "network_D.in_nc"):
        assert error_of(with_value(minimal_train(), key, 1)) == (
            f"{key}: 1, but training reads every image as RGB (gray ones are replicated to 3 channels): set it to 3")


def test_override_below_a_plain_value_is_an_option_error():
    with pytest.raises(OptionError, match="'name' holds a value"):
        apply_overrides(minimal_train(), ["name.sub=1"])


def test_overrides_are_validated_like_the_file():
    message = error_of(apply_overrides(minimal_train(), ["train.gan.nitr=5"]))
    assert "unknown option train.gan.nitr" in message
    assert "did you mean train.gan.niter" in message


# ------------------------------------------------------------------------------------------ paths
def test_relative_paths_resolve_against_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = parse_options(TrainOptions, minimal_train())
    assert options.datasets.train.dataroot_GT == str(REPO_ROOT / DEMO_TRAIN)
    assert options.path.experiments_root == str(REPO_ROOT / "experiments")


def test_a_copy_installed_without_the_repository_resolves_against_the_current_directory(tmp_path):
    """As after a plain `pip install .`: the package in site-packages, no checkout around it."""
    import shutil
    import subprocess
    import sys

    site, work = tmp_path / "site-packages", tmp_path / "work"
    shutil.copytree(REPO_ROOT / "codes" / "esrgan", site / "esrgan")
    (work / "data").mkdir(parents=True)
    code = ("from esrgan.options import REPO_ROOT, IN_CHECKOUT, TrainOptions, parse_options\n"
            "raw = {'name': 'r', 'model': 'sr', 'datasets': {'train': {'dataroot_GT': 'data'}},\n"
            "       'train': {'psnr': {'niter': 1}}}\n"
            "o = parse_options(TrainOptions, raw)\n"
            "print(IN_CHECKOUT, REPO_ROOT, o.datasets.train.dataroot_GT, o.path.experiments_root)")
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=os.environ | {"PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", str(work.resolve()), str((work / "data").resolve()), str((work / "experiments").resolve())]


def test_absolute_paths_are_kept():
    options = parse_options(TrainOptions, minimal_train())
    assert options.datasets.val.dataroot_GT == str(REPO_ROOT / DEMO_VAL)


# ------------------------------------------------------------------------------------------ load_options
def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_key_given_twice_in_one_section_is_refused_with_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys: a second train: section would silently replace the first."""
    path = tmp_path / "twice.yml"
    path.write_text("name: a\ntrain:\n  manual_seed: 1\nmodel: sr\ntrain:\n  manual_seed: 3\n", encoding="utf-8")
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, path)
    assert str(info.value) == (f"{path}: the key 'train' is given twice in one section (lines 2 and 5); YAML would "
                               "keep only the last one: merge the two")
    # A merge key's entries may be overridden: that is what it is for (also where the merged mapping merges
    # another one itself, and is anchored deeper than where it is merged in).
    assert load_yaml("adam: &a {lr: 1, beta1: 2}\ngan:\n  <<: *a\n  lr: 3\n") == {
        "adam": {"lr": 1, "beta1": 2}, "gan": {"lr": 3, "beta1": 2}}
    nested = "a: &a {k: 0, j: 5}\nx:\n  b: &b {<<: *a, k: 1}\nc:\n  <<: *b\n  k: 2\n"
    assert load_yaml(nested) == yaml.safe_load(nested)
    with pytest.raises(OptionError, match=r"the key 'lr' is given twice in one section \(line 1\)"):
        load_yaml("{lr: 1, lr: 2}")
    for wrong in ("x: !!map [1]", "x: !!map foo"):  # SafeLoader's own refusal, not a crash
        with pytest.raises(yaml.YAMLError, match="expected a mapping node"):
            load_yaml(wrong)


def test_an_unknown_key_given_with_set_says_so(tmp_path):
    path = write_yaml(tmp_path / "ok.yml", minimal_train())
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, path, ["train.psnr.optim_G.lrr=1"])
    assert str(info.value) == (f"{path}: unknown option train.psnr.optim_G.lrr: did you mean "
                               "train.psnr.optim_G.lr? (given with --set)")
    with pytest.raises(OptionError) as info:  # a misspelled section that --set made
        load_options(TrainOptions, path, ["trian.gan.niter=5"])
    assert str(info.value) == f"{path}: unknown option trian: did you mean train? (given with --set)"
    with pytest.raises(OptionError, match=r"^--set train.psnr.optim_G: the key 'lr' is given twice"):
        load_options(TrainOptions, path, ["train.psnr.optim_G={lr: 1, lr: 2}"])


def test_a_wrong_value_given_with_set_says_so_and_one_from_the_file_does_not(tmp_path):
    path = write_yaml(tmp_path / "ok.yml", with_value(minimal_train(), "train.psnr.niter", -3))
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, path, ["train.gan.niter=-1", "train.psnr.scheduler.milestones=[1, -2]"])
    assert str(info.value) == (
        f"{path}: 3 problems with the options:\n"
        "  train.psnr.niter: -3 is out of range; it must be >= 0\n"
        "  train.psnr.scheduler.milestones[1]: -2 is out of range; it must be >= 1 (given with --set)\n"
        "  train.gan.niter: -1 is out of range; it must be >= 0 (given with --set)")
    with pytest.raises(OptionError) as info:  # a check across options, after the values
        load_options(TrainOptions, write_yaml(tmp_path / "ok.yml", minimal_train()), ["datasets.train.GT_size=130"])
    assert str(info.value) == f"{path}: datasets.train.GT_size: 130 is not a multiple of scale 4 (given with --set)"


def test_a_wrong_list_item_given_with_set_says_so(tmp_path):
    path = write_yaml(tmp_path / "ok.yml", minimal_train())
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, path, ["train.psnr.scheduler.milestones=[5, often]"])
    assert str(info.value) == (f"{path}: train.psnr.scheduler.milestones[1]: expected an integer, got 'often' "
                               "(given with --set)")


def test_a_wrong_value_inside_a_section_given_with_set_says_so(tmp_path):
    path = write_yaml(tmp_path / "ok.yml", minimal_train())
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, path, ["train.gan={niter: -1}"])
    assert str(info.value) == f"{path}: train.gan.niter: -1 is out of range; it must be >= 0 (given with --set)"


def test_every_problem_of_a_file_is_listed_at_once():
    raw = with_value(with_value(minimal_train(), "train.val_freq", "often"), "datasets.train.batch_size", 0)
    raw = with_value(raw, "logger.print_frq", 10)
    assert error_of(raw).splitlines() == [
        "3 problems with the options:",
        "  unknown option logger.print_frq: did you mean logger.print_freq?",
        "  datasets.train.batch_size: 0 is out of range; it must be >= 1",
        "  train.val_freq: expected an integer, got 'often'"]


def test_every_wrong_item_of_a_list_is_listed():
    assert error_of(with_value(minimal_train(), "train.val_metrics", ["psnr", "PSNR", "fid"])).splitlines() == [
        "2 problems with the options:",
        "  train.val_metrics[1]: 'PSNR' is not one of 'psnr', 'ssim', 'niqe', 'lpips'; did you mean psnr?",
        "  train.val_metrics[2]: 'fid' is not one of 'psnr', 'ssim', 'niqe', 'lpips'"]
    raw = {"name": "t", "path": {"pretrain_model_G": "g.pth", "interp_gan_model": "h.pth"},
           "datasets": {"a": {"dataroot_GT": DEMO_VAL}}, "test": {"interp_alphas": [1.5, 0.5, -1]}}
    assert error_of(raw, OptionsOfTest, check_paths=False).splitlines() == [
        "2 problems with the options:",
        "  test.interp_alphas[0]: 1.5 is out of range; it must be in [0, 1]",
        "  test.interp_alphas[2]: -1 is out of range; it must be in [0, 1]"]


@pytest.mark.parametrize("device", ["gpu", "cuda0", "cuda:x", "CPU", "cuda:01", "cuda:\u0661"])
def test_a_device_that_is_not_written_as_one_is_listed_with_the_other_problems(tmp_path, device):
    path = write_yaml(tmp_path / "o.yml", minimal_train())
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, path, [f"device={device}", "train.val_freq=often"])
    assert str(info.value).splitlines() == [
        f"{path}: 2 problems with the options:",
        f"  device: {device!r} is not a device; use auto, cpu, cuda or cuda:N (given with --set)",
        "  train.val_freq: expected an integer, got 'often' (given with --set)"]
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:10"):
        assert parse_options(TrainOptions, with_value(minimal_train(), "device", device)).device == device


@pytest.mark.parametrize(("text", "message"), [
    ("", "the file holds no options (it is empty, or only comments)"),
    ("# only a comment\n", "the file holds no options (it is empty, or only comments)"),
    ("name: a\ntrain:\n\tniter: 1\n", "not valid YAML (indent with spaces: YAML does not allow tabs): "),
    ("name: a\ntest: {tile: 0}\n", "is a test option file (it has a test section); train.py takes a training "
                                     "option file, such as options/train_ESRGAN.yml"),
    ("name: a\npath: {results_root: r}\n", "is a test option file (it has path.results_root); "),
    ("name: a\ndatasets: {set5: {dataroot_GT: x}, set14: {dataroot_GT: y}}\n",
     "is a test option file (it has test sets (set5, set14) and no train section); "),
])
def test_files_that_are_no_training_option_file_say_what_they_are(tmp_path, text, message):
    path = tmp_path / "o.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, path)
    assert str(info.value).startswith(f"{path}{':' if not message.startswith('is ') else ''} {message}")


def test_a_training_file_of_a_training_set_alone_is_not_taken_for_a_test_option_file(tmp_path):
    """datasets.train is a training set even without a train section (all of its options left to the defaults
    or to --set): the message is about the training options, not about the kind of file."""
    path = tmp_path / "o.yml"
    path.write_text(f"name: a\ndatasets: {{train: {{dataroot_GT: {DEMO_TRAIN}}}}}\n", encoding="utf-8")
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, path)
    assert str(info.value) == (f"{path}: train.gan.niter: model 'esrgan' needs a GAN phase (niter > 0); use model "
                               "sr for PSNR-only training")


def test_a_training_file_with_a_test_key_is_not_taken_for_a_test_option_file():
    with pytest.raises(OptionError, match=r"unknown option path\.results_root: valid keys here are"):
        load_options(TrainOptions, OPTIONS_DIR / "train_demo.yml", ["path.results_root=r"])


def test_the_test_option_files_given_to_train_py_are_named_as_such():
    for name in ("test.yml", "test_demo.yml"):
        with pytest.raises(OptionError, match=rf"{name} is a test option file \(it has "):
            load_options(TrainOptions, OPTIONS_DIR / name)


def test_a_training_option_file_given_to_test_py_is_named_as_such():
    with pytest.raises(OptionError, match=r"train_demo\.yml is a training option file \(it has a train, network_D "
                                          r"or logger section\); test\.py takes a test option file"):
        load_options(OptionsOfTest, OPTIONS_DIR / "train_demo.yml")


@pytest.mark.parametrize(("override", "hint"), [("datasets.Set14=null", "datasets.set14"),
                                                ("datasets.SET5=~", "datasets.set5")])
def test_leaving_out_a_test_set_the_file_does_not_have_is_refused(tmp_path, override, hint):
    # A set that an earlier --set made may be left out again; a value that is not YAML gets apply_overrides' word.
    (tmp_path / "g.pth").write_bytes(b"")  # only its existence is checked here
    assert list(load_options(OptionsOfTest, OPTIONS_DIR / "test_demo.yml", [
        f"datasets.new.dataroot_GT={REPO_ROOT / DEMO_VAL}", "datasets.new=null",
        f"path.pretrain_model_G={tmp_path / 'g.pth'}"]).datasets) == ["demo_val", "demo_photos"]
    with pytest.raises(OptionError, match=r"^--set datasets.new: '\{dataroot_GT: x' is not valid YAML"):
        load_options(OptionsOfTest, OPTIONS_DIR / "test.yml", ["datasets.new={dataroot_GT: x"])
    with pytest.raises(OptionError) as info:
        load_options(OptionsOfTest, OPTIONS_DIR / "test.yml", [override])
    key = override.split("=")[0]
    assert str(info.value) == (f"--set {override}: there is no test set {key} to leave out "
                               f"(the file's are set5, set14); did you mean {hint}?")


def test_leaving_out_a_test_set_by_its_name_suggests_the_key_that_holds_it(tmp_path):
    path = write_yaml(tmp_path / "t.yml", {"name": "t", "path": {"pretrain_model_G": "g.pth"}, "datasets": {
        "bsd": {"name": "BSD100", "dataroot_GT": DEMO_VAL}, "s14": {"name": "Set14", "dataroot_GT": DEMO_VAL}}})
    with pytest.raises(OptionError) as info:
        load_options(OptionsOfTest, path, ["datasets.Set14=null"])
    assert str(info.value) == ("--set datasets.Set14=null: there is no test set datasets.Set14 to leave out (the "
                               "file's are bsd, s14); did you mean datasets.s14?")


def test_an_empty_optional_path_is_left_out_and_a_required_string_needs_a_value():
    raw = with_value(minimal_train(), "datasets.train.dataroot_LQ", "")
    assert parse_options(TrainOptions, raw).datasets.train.dataroot_LQ is None
    assert error_of(with_value(minimal_train(), "datasets.train.dataroot_GT", "")) == \
        "datasets.train.dataroot_GT: a GT folder is required"
    assert error_of(with_value(minimal_train(), "name", None)) == (
        "name: ~ (null) is not a value of this option: give one (or leave the key out, where the option has a "
        "default)")


def test_load_options_prefixes_the_file_name(tmp_path):
    path = write_yaml(tmp_path / "bad.yml", with_value(minimal_train(), "train.pixel_weigth", 1))
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, path)
    assert str(info.value).startswith(f"{path}: unknown option train.pixel_weigth")


def test_load_options_applies_overrides(tmp_path):
    path = write_yaml(tmp_path / "ok.yml", minimal_train())
    assert load_options(TrainOptions, path, ["train.gan.niter=7"]).train.gan.niter == 7


def test_load_options_of_a_missing_file_is_an_option_error(tmp_path):
    path = tmp_path / "nowhere.yml"
    with pytest.raises(OptionError, match="does not exist") as info:
        load_options(TrainOptions, path)
    assert str(path) in str(info.value)


def test_a_relative_option_file_missing_here_names_the_directory_and_the_repository_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError) as info:
        load_options(TrainOptions, "options/train_demo.yml")
    assert str(info.value) == (f"option file options/train_demo.yml does not exist (relative to the current "
                               f"directory {tmp_path}); did you mean {REPO_ROOT / 'options' / 'train_demo.yml'}?")


def test_load_options_of_a_yaml_list_is_an_option_error(tmp_path):
    path = write_yaml(tmp_path / "list.yml", ["name", "scale"])
    with pytest.raises(OptionError, match="top level must be a mapping") as info:
        load_options(TrainOptions, path)
    assert str(path) in str(info.value)


def test_load_options_of_invalid_yaml_is_an_option_error(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(OptionError, match="not valid YAML"):
        load_options(TrainOptions, path)


# ------------------------------------------------------------------------------------------ the shipped files
def test_the_demo_option_file_parses_with_path_checks():
    options = load_options(TrainOptions, OPTIONS_DIR / "train_demo.yml")
    assert options.datasets.train.dataroot_GT == str(REPO_ROOT / DEMO_TRAIN)
    assert options.model == "esrgan"


@pytest.mark.parametrize("path", sorted(OPTIONS_DIR.glob("train_*.yml")), ids=lambda p: p.name)
def test_every_train_option_file_parses(path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(parse_options(TrainOptions, raw, check_paths=False), TrainOptions)


@pytest.mark.parametrize("path", sorted(OPTIONS_DIR.glob("test*.yml")), ids=lambda p: p.name)
def test_every_test_option_file_parses(path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(parse_options(OptionsOfTest, raw, check_paths=False), OptionsOfTest)


# ------------------------------------------------------------------------------------------ defaults
def test_defaults_are_the_papers():
    options = parse_options(TrainOptions, minimal_train())
    assert (options.network_G.nf, options.network_G.nb, options.network_G.gc) == (64, 23, 32)
    assert options.network_F.feature_layer is None  # conv5_4 before its ReLU, for either VGG19 (test_archs)
    assert (options.network_F.use_bn, options.network_F.use_input_norm) == (False, True)
    assert (options.datasets.train.batch_size, options.datasets.train.use_flip, options.datasets.train.use_rot) \
        == (16, True, True)
    psnr, gan = options.train.psnr, options.train.gan
    assert (psnr.pixel_criterion, psnr.optim_G.lr, psnr.scheduler.gamma) == ("l1", 2e-4, 0.5)
    assert (gan.pixel_criterion, gan.feature_criterion, gan.gan_type) == ("l1", "l1", "ragan")
    assert (gan.pixel_weight, gan.feature_weight, gan.gan_weight) == (1e-2, 1.0, 5e-3)
    assert (gan.optim_G.lr, gan.optim_D.lr, gan.scheduler.gamma) == (1e-4, 1e-4, 0.5)
    assert (gan.D_update_ratio, gan.D_init_iters) == (1, 0)
    # Adam (0.9, 0.999): the paper's and the 2018 code's (its SRRaGAN_model.py); mmsr's and BasicSR's files say 0.99
    assert (gan.optim_G.beta1, gan.optim_G.beta2, gan.optim_G.weight_decay) == (0.9, 0.999, 0.0)
    assert (psnr.optim_G.beta1, psnr.optim_G.beta2, gan.optim_D.beta2) == (0.9, 0.999, 0.999)


def test_a_psnr_optimizer_section_given_without_lr_keeps_the_phases_default_lr():
    raw = minimal_train()
    raw["train"]["psnr"]["optim_G"] = {"beta2": 0.99}  # as --set train.psnr.optim_G.beta2=0.99 makes it
    assert parse_options(TrainOptions, raw).train.psnr.optim_G.lr == 2e-4
    assert parse_options(TrainOptions, minimal_train()).train.psnr.optim_G.lr == 2e-4


def test_the_papers_option_file_gives_every_training_option():
    """options/train_ESRGAN.yml is where a user reads what can be set: every key of the schema is in it, but the
    cosine schedule's, which a commented-out alternative shows."""
    from esrgan.options import _schema_keys

    text = (OPTIONS_DIR / "train_ESRGAN.yml").read_text(encoding="utf-8")

    def paths(tree: dict, prefix: str = "") -> set[str]:
        return {p for k, v in tree.items() for p in {f"{prefix}{k}"} | (
            paths(v, f"{prefix}{k}.") if isinstance(v, dict) else set())}

    missing = set(_schema_keys(TrainOptions)) - paths(yaml.safe_load(text))
    cosine = {f"train.{phase}.scheduler.{key}" for phase in ("psnr", "gan")
              for key in ("periods", "restart_weights", "eta_min")}
    assert missing == cosine
    assert "# scheduler: {type: CosineAnnealingRestartLR, periods: [" in text and "restart_weights: [" in text
    assert "eta_min: " in text


def test_the_papers_option_file_holds_the_papers_schedule():
    """options/train_ESRGAN.yml, by the numbers of ../shared/ESRGAN.md: batch 16 of 128x128 GT patches; PSNR phase
    L1 at 2e-4 halved every 200k iterations; GAN phase 400k iterations at 1e-4 for G and D, halved at 50k,
    100k, 200k and 300k; Adam (0.9, 0.999); eta 1e-2, w_fea 1, lambda 5e-3; VGG19 conv5_4 before its ReLU."""
    raw = yaml.safe_load((OPTIONS_DIR / "train_ESRGAN.yml").read_text(encoding="utf-8"))
    o = parse_options(TrainOptions, raw, check_paths=False)  # the DIV2K LMDBs are not prepared here
    assert (o.model, o.scale, o.datasets.train.batch_size, o.datasets.train.GT_size) == ("esrgan", 4, 16, 128)
    assert (o.network_G.nf, o.network_G.nb, o.network_G.gc, o.network_D.nf) == (64, 23, 32, 64)
    assert (o.network_F.feature_layer, o.network_F.use_bn, o.network_F.weights) == (None, False, "imagenet")
    psnr, gan = o.train.psnr, o.train.gan
    assert (psnr.pixel_criterion, psnr.optim_G.lr, psnr.scheduler.gamma) == ("l1", 2e-4, 0.5)
    assert psnr.scheduler.milestones == list(range(200_000, psnr.niter, 200_000))
    assert gan.niter == 400_000 and gan.scheduler.milestones == [50_000, 100_000, 200_000, 300_000]
    assert (gan.optim_G.lr, gan.optim_D.lr, gan.scheduler.gamma) == (1e-4, 1e-4, 0.5)
    for adam in (psnr.optim_G, gan.optim_G, gan.optim_D):
        assert (adam.beta1, adam.beta2) == (0.9, 0.999)
    assert (gan.pixel_weight, gan.feature_weight, gan.gan_weight, gan.gan_type) == (1e-2, 1.0, 5e-3, "ragan")
    assert (gan.pixel_criterion, gan.feature_criterion) == ("l1", "l1")


def test_set_changes_only_the_key_it_names_where_the_file_shares_a_section_through_an_alias(tmp_path):
    (tmp_path / "train.yml").write_text(
        f"name: t\ndatasets:\n  train: {{dataroot_GT: {DEMO_TRAIN}}}\n"
        "train:\n  gan:\n    niter: 5\n    optim_G: &adam {lr: 0.0001, beta1: 0.5}\n    optim_D: *adam\n")
    o = load_options(TrainOptions, tmp_path / "train.yml", ["train.gan.optim_G.lr=0.5"])
    assert (o.train.gan.optim_G.lr, o.train.gan.optim_D.lr) == (0.5, 0.0001)
    assert o.train.gan.optim_D.beta1 == 0.5  # what the alias shares stays shared
    raw = load_yaml("name: t\npath: {pretrain_model_G: g.pth}\ndatasets:\n"
                    "  a: &shared {dataroot_GT: datasets/demo/val}\n  b: *shared\n")
    raw = apply_overrides(raw, ["datasets.b.degradation=cv2_bicubic"])
    tested = parse_options(OptionsOfTest, raw, check_paths=False)
    assert (tested.datasets["a"].degradation, tested.datasets["b"].degradation) == ("matlab_bicubic", "cv2_bicubic")


@pytest.mark.parametrize(("cls", "key", "message"), [
    (TrainOptions, "path.experiments_root", "path.experiments_root: '' is not a path; give one (or leave the key out "
                                            "for 'experiments')"),
    (OptionsOfTest, "path.results_root", "path.results_root: '' is not a path; give one (or leave the key out for "
                                         "'results')"),
    (OptionsOfTest, "path.pretrain_model_G", "path.pretrain_model_G: '' is not a path; give one"),
])
def test_an_empty_path_with_a_default_or_required_is_refused_not_read_as_the_current_folder(cls, key, message):
    raw = minimal_train() if cls is TrainOptions else {
        "name": "t", "path": {"pretrain_model_G": "g.pth"}, "datasets": {"a": {"dataroot_GT": DEMO_VAL}}}
    assert error_of(with_value(raw, key, ""), cls, check_paths=False) == message
    # an optional path left empty is left out
    assert parse_options(TrainOptions, with_value(minimal_train(), "path.pretrain_model_D", "")
                         ).path.pretrain_model_D is None


def test_a_name_too_long_for_the_files_named_after_it_is_refused():
    assert error_of(with_value(minimal_train(), "name", "n" * 201)) == (
        "name: 201 bytes long; give a name of at most 200 (it names folders and files, e.g. train_<name>_<time>.log)")
    assert parse_options(TrainOptions, with_value(minimal_train(), "name", "n" * 200)).name == "n" * 200


def test_a_name_is_measured_in_bytes_not_characters():
    assert error_of(with_value(minimal_train(), "name", "\u00e9" * 101)) == (
        "name: 202 bytes long; give a name of at most 200 (it names folders and files, e.g. train_<name>_<time>.log)")


@pytest.mark.parametrize("name", ["summary.csv", "test_x_261207-101010.log", "options_1.yml"])
def test_a_test_set_named_as_a_file_test_py_writes_is_refused(name):
    raw = {"name": "t", "path": {"pretrain_model_G": "g.pth"}, "datasets": {name: {"dataroot_GT": DEMO_VAL}}}
    assert error_of(raw, OptionsOfTest, check_paths=False) == (
        f"datasets.{name}.name: {name!r} is also the name of a file test.py writes into results/<name>/ beside the "
        "sets' folders; give the set another name")


@pytest.mark.parametrize(("key", "value", "bounds"), [
    ("network_G.nf", 100000, "[1, 1024]"), ("network_G.nb", 10**20, "[1, 1000]"), ("network_G.gc", 2048, "[1, 1024]"),
    ("network_D.nf", 1024, "[1, 512]"), ("network_G.in_nc", 10**9, "[1, 64]"),
])
def test_network_sizes_are_bounded_so_that_a_typo_does_not_exhaust_memory_or_hang(key, value, bounds):
    message = f"{key}: {value} is out of range; it must be in {bounds}"
    assert error_of(with_value(minimal_train(), key, value)) == message


def test_an_output_root_or_run_folder_that_is_a_file_is_refused_by_its_key(tmp_path):
    (tmp_path / "file").write_text("")
    assert error_of(with_value(minimal_train(), "path.experiments_root", str(tmp_path / "file"))) == (
        f"path.experiments_root: {tmp_path / 'file'} is a file; the results go to a folder there, so give another "
        "folder")
    raw = {"name": "file", "path": {"pretrain_model_G": "g.pth", "results_root": str(tmp_path)},
           "datasets": {"a": {"dataroot_GT": DEMO_VAL}}}
    assert error_of(raw, OptionsOfTest, check_paths=False) == (
        f"name: {tmp_path / 'file'} is a file; the results go to a folder there, so give another name")


def test_a_vgg_weights_name_in_other_case_is_not_taken_for_a_file():
    assert error_of(with_value(minimal_train(), "network_F.weights", "ImageNet")) == (
        "network_F.weights: 'ImageNet' is not a file; did you mean 'imagenet'?")


def test_a_vgg_weights_file_named_like_a_keyword_in_other_case_is_taken_for_the_file(tmp_path):
    (tmp_path / "ImageNet").write_bytes(b"weights")
    raw = with_value(minimal_train(), "network_F.weights", "ImageNet")
    raw["datasets"]["train"]["dataroot_GT"] = str(REPO_ROOT / DEMO_TRAIN)
    assert parse_options(TrainOptions, raw, root=tmp_path).network_F.weights == str(tmp_path / "ImageNet")


def test_restart_weights_must_be_one_per_period():
    raw = with_value(minimal_train(), "train.psnr.scheduler", {"type": "CosineAnnealingRestartLR",
                                                              "periods": [5, 5], "restart_weights": [1.0]})
    assert error_of(raw) == ("train.psnr.scheduler.restart_weights: 1 weights for 2 periods; give one per period "
                             "or none")


def test_milestones_that_do_not_increase_are_refused():
    assert error_of(with_value(minimal_train(), "train.gan.scheduler.milestones", [5, 5])) == (
        "train.gan.scheduler.milestones: [5, 5] do not increase; give each iteration once, in order (PyTorch would "
        "apply gamma at a repeated one once per repetition)")


def test_a_yaml_alias_to_a_node_that_holds_it_is_refused_by_key():
    raw = load_yaml("name: t\ntrain:\n  psnr:\n    scheduler:\n      milestones: &m [*m]\n")
    with pytest.raises(OptionError, match=r"^train\.psnr\.scheduler\.milestones\[0\]: the YAML alias here refers to "
                                          r"a node that holds it; an option cannot hold itself$"):
        apply_overrides(raw, [])


def test_the_resolved_options_are_written_whole_or_not_at_all(tmp_path, full_disk):
    """A full disk left an empty options_<time>.yml, with an error that named no file."""
    from esrgan.options import dump_yaml

    o = parse_options(TrainOptions, minimal_train())
    dump_yaml(o, tmp_path / "options.yml")
    assert yaml.safe_load((tmp_path / "options.yml").read_text())["name"] == "spec"
    full_disk()
    with pytest.raises(OSError) as info:
        dump_yaml(o, tmp_path / "options_2.yml")
    assert str(info.value) == f"[Errno 28] No space left on device: '{tmp_path / 'options_2.yml'}'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["options.yml"]
