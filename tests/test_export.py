"""Specification of scripts/export.py: safetensors, ONNX and TorchScript exports of a (tiny) generator."""

import runpy
import subprocess
import sys
import warnings

import pytest
import torch

from esrgan.archs.layouts import from_esrgan
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.options import REPO_ROOT


def export_main():
    return runpy.run_path(str(REPO_ROOT / "scripts" / "export.py"))["main"]


@pytest.fixture
def tiny(tmp_path):
    """An x2 nf 8, nb 1, gc 4 generator saved in the old-arch layout (exports read any layout)."""
    torch.manual_seed(0)
    net = RRDBNet(3, 3, nf=8, nb=1, gc=4, scale=2).eval()
    torch.save(from_esrgan(net.state_dict(), "old"), tmp_path / "g.pth")
    return net


def test_torchscript_export_runs_any_input_size_like_the_network(tmp_path, tiny, capsys):
    assert export_main()([str(tmp_path / "g.pth"), "--format", "torchscript", "-o", str(tmp_path / "g.pt")]) == 0
    assert "TorchScript output matches PyTorch on a 23x17 input" in capsys.readouterr().out
    x = torch.rand(2, 3, 9, 14)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        assert torch.equal(torch.jit.load(tmp_path / "g.pt")(x), tiny(x))


def test_an_export_that_cannot_be_written_says_so_in_one_line(tmp_path, tiny, capsys):
    (tmp_path / "taken").write_text("a file where a folder would be made")
    out = tmp_path / "taken" / "g.pt"
    assert export_main()([str(tmp_path / "g.pth"), "--format", "torchscript", "-o", str(out)]) == 1
    assert capsys.readouterr().err == f"error: cannot write {out}: File exists ({tmp_path / 'taken'})\n"


@pytest.mark.parametrize("fmt, name", [("torchscript", "g.pt"), ("safetensors", "g.safetensors")])
def test_an_export_to_a_full_disk_says_so_in_one_line_and_leaves_no_temporary(tmp_path, tiny, capsys, full_disk,
                                                                               fmt, name):
    """torch.jit.save's own writer aborted the process (an uncaught C++ exception) on a full disk."""
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    full_disk()
    assert export_main()([str(tmp_path / "g.pth"), "--format", fmt, "-o", str(tmp_path / name)]) == 1
    assert capsys.readouterr().err == f"error: cannot write {tmp_path / name}: No space left on device\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pth"]


def test_safetensors_export_holds_the_weights_and_hyperparameters(tmp_path, tiny):
    safetensors = pytest.importorskip("safetensors")
    assert export_main()([str(tmp_path / "g.pth"), "--format", "safetensors", "-o", str(tmp_path / "g.safetensors")]) \
        == 0
    with safetensors.safe_open(tmp_path / "g.safetensors", framework="pt") as fh:
        assert fh.metadata() == {"in_nc": "3", "out_nc": "3", "nf": "8", "nb": "1", "gc": "4", "scale": "2",
                                 "layout": "esrgan"}
        assert list(fh.keys()) == sorted(tiny.state_dict())
        assert all(torch.equal(fh.get_tensor(k), v) for k, v in tiny.state_dict().items())


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_refuses_to_overwrite_its_input_or_write_over_a_folder(tmp_path, tiny, capsys, fmt):
    before = (tmp_path / "g.pth").read_bytes()
    assert export_main()([str(tmp_path / "g.pth"), "--format", fmt, "-o", str(tmp_path / "g.pth")]) == 1
    assert f"error: refusing to overwrite the input {tmp_path / 'g.pth'}; write to another file" in \
        capsys.readouterr().err
    assert (tmp_path / "g.pth").read_bytes() == before
    (tmp_path / "out").mkdir()
    assert export_main()([str(tmp_path / "g.pth"), "--format", fmt, "-o", str(tmp_path / "out")]) == 1
    assert f"error: {tmp_path / 'out'} is a folder; give the file to write" in capsys.readouterr().err


def test_safetensors_export_needs_the_safetensors_suffix(tmp_path, tiny, capsys):
    assert export_main()([str(tmp_path / "g.pth"), "--format", "safetensors", "-o", str(tmp_path / "g.pth2")]) == 1
    assert "must end in .safetensors" in capsys.readouterr().err


def test_safetensors_export_without_the_package_says_how_to_install_it(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    out = tmp_path / "g.safetensors"
    assert export_main()([str(tmp_path / "g.pth"), "--format", "safetensors", "-o", str(out)]) == 1
    assert "pip install safetensors" in capsys.readouterr().err
    assert not out.exists()


def test_onnx_export_has_dynamic_height_and_width(tmp_path, tiny, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    assert export_main()([str(tmp_path / "g.pth"), "--format", "onnx", "-o", str(tmp_path / "g.onnx")]) == 0
    assert "onnxruntime output matches PyTorch on a 23x17 input" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 5, 5), (2, 3, 12, 7)]:
        x = torch.rand(*shape)
        got = torch.from_numpy(session.run(None, {"lr": x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, tiny(x), rtol=0, atol=1e-4)


def test_onnx_export_without_onnxruntime_says_it_was_not_checked(tmp_path, tiny, capsys, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert export_main()([str(tmp_path / "g.pth"), "--format", "onnx", "-o", str(tmp_path / "g.onnx")]) == 0
    assert "outputs not checked against PyTorch (onnxruntime is not installed)" in capsys.readouterr().out
    assert (tmp_path / "g.onnx").stat().st_size > 0


def test_onnx_export_without_onnx_says_how_to_install_it(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert export_main()([str(tmp_path / "g.pth"), "--format", "onnx", "-o", str(tmp_path / "g.onnx")]) == 1
    assert "ONNX export needs the optional onnx and onnxscript packages: pip install onnx onnxscript" \
        in capsys.readouterr().err
    assert not (tmp_path / "g.onnx").exists()


def test_export_runs_from_another_directory(tmp_path, tiny):
    (tmp_path / "elsewhere").mkdir()
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "export.py"), "../g.pth", "--format",
                             "torchscript", "-o", "g.pt"], cwd=tmp_path / "elsewhere", capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "../g.pth: old-arch layout, raw state dict, nf=8, nb=1, gc=4, scale 2 (in_nc=3, out_nc=3)" in result.stdout
    assert (tmp_path / "elsewhere" / "g.pt").exists()


def test_export_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        export_main()(["--help"])
    assert info.value.code == 0
    assert "--format {safetensors,onnx,torchscript}" in capsys.readouterr().out
