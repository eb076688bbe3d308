"""Speed settings: bf16 autocast, channels_last, torch.compile and fp16 scaling behave like the fp32 path."""

import re
import subprocess
import sys

import pytest
import torch

from esrgan.archs.discriminator import Discriminator_VGG_128
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.archs.vgg import VGGFeatureExtractor
from esrgan.models.esrgan import ESRGANModel, SRModel
from esrgan.options import REPO_ROOT, GanPhaseOpt, OptimOpt, PsnrPhaseOpt

CPU = torch.device("cpu")


def model(device=CPU, **speed) -> ESRGANModel:
    torch.manual_seed(0)
    return ESRGANModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), Discriminator_VGG_128(3, nf=4),
                       VGGFeatureExtractor(feature_layer=4), PsnrPhaseOpt(niter=1, optim_G=OptimOpt(lr=1e-3)),
                       GanPhaseOpt(niter=1), device, **speed)


def batch(device=CPU) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"LQ": torch.rand(2, 3, 32, 32, generator=g).to(device),
            "GT": torch.rand(2, 3, 128, 128, generator=g).to(device)}


def run_steps(m: ESRGANModel, steps: int = 2) -> None:
    for step in range(1, steps + 1):
        m.feed_data(batch(m.device))
        m.optimize_parameters(step)


def test_bf16_autocast_trains_both_phases_with_fp32_weights():
    m = model(precision="bf16")
    run_steps(m)
    assert m.fake.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in m.net_g.parameters())
    assert all(torch.isfinite(v) for k, v in m.log_dict.items() if isinstance(v, torch.Tensor))


def test_bf16_step_stays_close_to_the_fp32_step():
    plain, fast = model(), model(precision="bf16")
    run_steps(plain, 1)
    run_steps(fast, 1)
    for a, b in zip(plain.net_g.parameters(), fast.net_g.parameters(), strict=True):
        assert torch.allclose(a, b, atol=3e-3)


def same_losses_and_close_weights(plain: ESRGANModel, fast: ESRGANModel) -> None:
    """Both phases give the same losses; Adam turns float noise in near-zero gradients into steps of up to lr,
    so the weights are compared at that scale."""
    for step in (1, 2):
        for m in (plain, fast):
            m.feed_data(batch(m.device))
            m.optimize_parameters(step)
        for key, value in plain.log_dict.items():
            assert torch.allclose(torch.as_tensor(value), torch.as_tensor(fast.log_dict[key]), rtol=1e-4), key
    for a, b in zip(plain.net_g.parameters(), fast.net_g.parameters(), strict=True):
        assert torch.allclose(a, b, atol=2e-3)


def test_channels_last_gives_the_same_training_as_the_default_layout():
    plain, fast = model(), model(channels_last=True)
    assert fast.net_g.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    same_losses_and_close_weights(plain, fast)


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        SRModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), PsnrPhaseOpt(niter=1), CPU, precision="fp16")


def test_compiled_training_matches_eager():
    # The "aot_eager" backend traces G, D and VGG through dynamo and autograd like inductor does, without the
    # minutes of C++ code generation a CPU test run cannot afford.
    plain, fast = model(), model()
    fast.compile(backend="aot_eager")
    same_losses_and_close_weights(plain, fast)
    assert list(fast.net_g.state_dict()) == list(plain.net_g.state_dict())  # saved keys stay the seed's


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 gradient scaling runs on CUDA")
def test_fp16_scales_gradients_per_network_and_saves_the_scalers():
    m = model(torch.device("cuda"), precision="fp16")
    run_steps(m)
    assert set(m.amp.scalers) == {"G", "D"}
    assert set(m.state_dict()["scalers"]) == {"G", "D"}


@pytest.mark.parametrize("parallel", [False, True], ids=["one_after_the_other", "both_at_once"])
def test_the_fast_path_check_trains_both_runs_and_compares_validation_psnr_and_gan_losses(tmp_path, parallel):
    tiny = ["network_G.nf=8", "network_G.nb=1", "network_G.gc=4", "network_D.nf=4", "datasets.train.batch_size=2",
            "datasets.train.n_workers=0", "network_F.allow_random_weights=true"]
    args = [sys.executable, str(REPO_ROOT / "scripts" / "check_fast_path.py"), "-opt",
            str(REPO_ROOT / "options" / "train_demo.yml"), "--psnr-iters", "3", "--gan-iters", "2", "--print-freq",
            "1", "--workdir", str(tmp_path), "--fast", "speed.channels_last=true"] + ["--parallel"] * parallel
    reference = ["--reference", "speed.cudnn_benchmark=false"] if parallel else []  # one run of each kind
    for item in tiny:
        args += ["--set", item]
    result = subprocess.run(args + reference, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "| iteration | fp32 val PSNR | fast val PSNR | difference (dB) |" in out
    assert f"fp32 reference: {'speed.cudnn_benchmark=false' if parallel else 'the plain fp32 eager path'}" in out
    assert ("(both at once): fp32" in out) == parallel and "fast: data wait" in out
    assert "PSNR phase, iteration 3: |difference|" in out and out.rstrip().count("PASS") == 1
    assert "| iteration | l_g_pix fp32 / fast | l_g_fea fp32 / fast | l_g_gan fp32 / fast |" in out
    losses = out[out.index("l_g_pix fp32 / fast"):].splitlines()
    assert [line.split("|")[1].strip() for line in losses[2:]] == ["4", "5"]  # the GAN-phase prints
    assert "| 3 |" in out and "| 5 |" in out[: out.index("PSNR phase, iteration")]  # validations
    for run in ("check_fp32", "check_fast"):
        (options_file,) = (tmp_path / run).glob("options_*.yml")
        assert ("channels_last: true" in options_file.read_text()) == (run == "check_fast")
        assert ("cudnn_benchmark: false" in options_file.read_text()) == (parallel and run == "check_fp32")


def check_fast_path_module():
    """scripts/check_fast_path.py, imported (scripts/ is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_fast_path", REPO_ROOT / "scripts" / "check_fast_path.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    return check


def test_the_fast_path_check_refuses_options_train_py_would_refuse_before_either_run_starts(tmp_path, capsys):
    check = check_fast_path_module()
    base = ["-opt", str(REPO_ROOT / "options" / "train_demo.yml"), "--psnr-iters", "3", "--workdir", str(tmp_path)]
    assert check.main([*base, "--fast", "speed.channels_last=true", "--set", "datasets.val=null"]) == 2
    assert capsys.readouterr().err == ("error: the fp32 run: the option file has no validation set (datasets.val); "
                                       "the check compares validation PSNR\n")
    assert check.main([*base, "--fast", "speed.chanels_last=true"]) == 2
    assert capsys.readouterr().err == (f"error: the fast run: {REPO_ROOT / 'options' / 'train_demo.yml'}: unknown "
                                       "option speed.chanels_last: did you mean speed.channels_last? (given with "
                                       "--set)\n")
    assert list(tmp_path.iterdir()) == []  # no run started


def test_the_fast_path_check_keeps_its_reference_fp32(capsys):
    check = check_fast_path_module()
    for reference, message in ((["speed.precision=bf16"], "the reference run is the fp32 one"),
                               (["cuda_graph=true"], "--reference 'cuda_graph=true': expected speed.<option>=<value>")):
        with pytest.raises(SystemExit) as exit_info:
            check.main(["-opt", "x.yml", "--fast", "speed.precision=bf16", "--reference", *reference])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_runs_going_at_once_stop_together_when_one_fails(tmp_path):
    import time

    check = check_fast_path_module()

    def run(name: str, code: str):
        r = check.Run.__new__(check.Run)
        r.name, r.log, r.start = name, tmp_path / f"{name}.log", time.perf_counter()
        r.log.write_text(f"{name} log\n")
        r.process = subprocess.Popen([sys.executable, "-c", code])
        return r

    runs = {"fp32": run("slow", "import time; time.sleep(60)"), "fast": run("broken", "raise SystemExit(3)")}
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="the broken run failed:\nbroken log"):
        check.wait_all(runs)
    assert time.perf_counter() - start < 20 and runs["fp32"].process.returncode is not None  # stopped, not waited

    # A run that does not stop when asked (a hung device, say) is killed after stop_timeout seconds.
    deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    runs = {"fp32": run("deaf", deaf), "fast": run("broken", "import time; time.sleep(1); raise SystemExit(3)")}
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="the broken run failed"):
        check.wait_all(runs, stop_timeout=1)
    assert time.perf_counter() - start < 20 and runs["fp32"].process.returncode == -9  # SIGKILL


def test_stopping_several_runs_takes_the_stop_timeout_once_not_once_per_run(monkeypatch):
    check = check_fast_path_module()
    clock = [0.0]
    monkeypatch.setattr(check.time, "perf_counter", lambda: clock[0])

    class Deaf:  # ignores SIGTERM; waiting for it lets the (fake) clock run out
        def __init__(self):
            self.waits, self.killed = [], False

        def poll(self):
            return None

        def terminate(self):
            pass

        def wait(self, timeout=None):
            self.waits.append(timeout)
            if timeout is None:
                return -9
            clock[0] += timeout
            raise subprocess.TimeoutExpired("train.py", timeout)

        def kill(self):
            self.killed = True

    runs = [check.Run.__new__(check.Run) for _ in range(2)]
    for r in runs:
        r.process = Deaf()
    check.stop(runs, timeout=30)
    assert [r.process.waits for r in runs] == [[30, None], [0.0, None]] and all(r.process.killed for r in runs)
    assert clock[0] == 30


def test_runs_past_the_time_limit_are_stopped_and_report_how_far_they_got(tmp_path):
    import time

    check = check_fast_path_module()
    runs = {}
    for label in ("fp32", "fast"):
        r = check.Run.__new__(check.Run)
        r.name, r.log, r.start = label, tmp_path / f"{label}.log", time.perf_counter()
        r.log.write_text("2026-12-07 10:00:00 INFO: Run check on cuda x 1\n"
                         "2026-12-07 10:00:05 INFO: iter 50 (psnr) 0.045s/it, data wait 0.1% | l_pix 1.0e-02\n"
                         "2026-12-07 10:00:07 INFO: iter 100 (psnr) 0.044s/it, data wait 0.2% | l_pix 9.0e-03\n"
                         * (label == "fp32"))
        r.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        runs[label] = r
    start = time.perf_counter()
    seconds, stopped = check.wait_all(runs, deadline=start + 1)
    assert stopped and all(run.process.returncode == -15 for run in runs.values())  # SIGTERM: train.py saves
    assert min(seconds.values()) >= 1 and max(seconds.values()) < time.perf_counter() - start + 1 < 20
    assert check.last_report(runs["fp32"].log).endswith("iter 100 (psnr) 0.044s/it, data wait 0.2% | l_pix 9.0e-03")
    assert check.last_report(runs["fast"].log) == "no iteration reported yet"


def test_the_fast_path_check_stops_at_its_time_limit_and_says_how_far_each_run_got(tmp_path):
    args = [sys.executable, str(REPO_ROOT / "scripts" / "check_fast_path.py"), "-opt",
            str(REPO_ROOT / "options" / "train_demo.yml"), "--psnr-iters", "1000", "--workdir", str(tmp_path / "w"),
            "--log-dir", str(tmp_path / "logs"), "--fast", "speed.channels_last=true", "--parallel",
            "--time-limit", "2", "--set", "network_F.allow_random_weights=true"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "INCOMPLETE: stopped at the time limit of 2 s" in result.stdout
    assert re.search(r"\nfp32 run, [2-9] s: ", result.stdout) and re.search(r"\nfast run, [2-9] s: ", result.stdout)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["check_fast.log", "check_fp32.log"]


# ---------------------------------------------------------------------------------------------- CUDA graphs
class RerunGraph:
    """A CUDA graph's stand-in on the CPU: capture records the work (running it once, as the replay right after a
    real capture does), and each later replay runs it again and writes its results into the outputs capture
    returned, as a replay refills a graph's static output tensors."""

    def capture(self, step):
        self.step, self.outputs, self.pending = step, step(), True
        return self.outputs

    def replay(self):
        if self.pending:  # the work of the capture call itself already ran
            self.pending = False
            return
        new = self.step()
        pairs = zip(self.outputs.values(), new.values(), strict=True) if isinstance(new, dict) else [
            (self.outputs, new)]
        for static, value in pairs:
            static.copy_(value)


def test_graphed_steps_warm_up_then_capture_each_kind_once_and_replay_it():
    from esrgan.engine.fast import GraphedSteps

    graphs = []

    def factory():
        graphs.append(RerunGraph())
        return graphs[-1]

    runner = GraphedSteps(CPU, warmup=2, graph_factory=factory)
    counter = torch.zeros(())

    def work():
        counter.add_(1)
        return counter * 10

    results = [runner("a", work).clone() for _ in range(5)]
    assert [r.item() for r in results] == [10, 20, 30, 40, 50]  # every call did the work exactly once
    assert len(graphs) == 1 and runner.calls["a"] == 5
    assert runner("a", work) is runner.outputs["a"]  # replays return the captured (static) outputs
    runner("b", work)
    assert len(graphs) == 1  # "b" is still warming up
    runner.release("a")
    assert "a" not in runner.graphs


def test_a_kind_of_step_whose_capture_fails_warns_once_and_runs_eagerly_from_then_on():
    from esrgan.engine.fast import GraphedSteps

    class FailingGraph:
        def capture(self, step):
            raise RuntimeError("operation not permitted when stream is capturing")

    made, warnings = [], []
    runner = GraphedSteps(CPU, warmup=1, graph_factory=lambda: made.append(FailingGraph()) or made[-1],
                          on_fallback=lambda kind, why: warnings.append((kind, why)))
    counter = torch.zeros(())

    def work():
        counter.add_(1)
        return counter.clone()

    assert [runner("gan_d", work).item() for _ in range(4)] == [1, 2, 3, 4]  # each iteration ran exactly once
    assert len(made) == 1 and not runner.graphs  # one attempt, never retried
    assert warnings == [("gan_d", "RuntimeError: operation not permitted when stream is capturing")]
    assert runner.eager == {"gan_d": warnings[0][1]}


def test_a_capture_that_cuda_invalidated_stops_training_naming_the_first_error(monkeypatch):
    """The stream capture cannot end: the allocator's routing into the pool and the graph's hold on it are released
    by hand (capture_end would have), and the error names the operation that broke the capture."""
    from esrgan.engine import fast

    released = []
    monkeypatch.setattr(torch._C, "_cuda_endAllocateToPool", lambda index, pool: released.append(("end", pool)),
                        raising=False)  # older torch releases lack it
    monkeypatch.setattr(torch._C, "_cuda_releasePool", lambda index, pool: released.append(("release", pool)))

    class InvalidatedGraph:
        def capture_end(self):
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

    first = RuntimeError("CUDA error: operation not permitted when stream is capturing")
    with pytest.raises(fast.CaptureError, match=r"the gan_d step cannot be captured .*operation not permitted when"
                                                r" stream is capturing\)\. Train with speed.cuda_graph: false"):
        fast._end_capture(InvalidatedGraph(), (0, 7), torch.device("cuda", 0), "gan_d", first)
    assert released == [("end", (0, 7)), ("release", (0, 7))]

    class ValidGraph:
        def capture_end(self):
            released.append("ended")

    fast._end_capture(ValidGraph(), (0, 7), torch.device("cuda", 0), "gan_d", first)  # the caller then runs eagerly
    assert released[-1] == "ended"

    class Raising:
        def capture(self, step):
            raise fast.CaptureError("stop")

    runner = fast.GraphedSteps(CPU, warmup=1, graph_factory=Raising)
    runner("psnr", lambda: None)  # the warm-up
    with pytest.raises(fast.CaptureError):  # not turned into an eager fallback
        runner("psnr", lambda: None)


def test_a_captured_first_step_is_refused():
    # Its lazily created optimizer state and counters would be zeroed again by every replay.
    from esrgan.engine.fast import GraphedSteps

    with pytest.raises(ValueError, match="warmup must be at least 1"):
        GraphedSteps(CPU, warmup=0, graph_factory=RerunGraph)


@pytest.mark.parametrize(("settings", "reason"), [
    ({"device": CPU}, "CUDA graphs need a CUDA device"),
    ({"precision": "fp16"}, "fp16's gradient scaler decides on the host"),
    ({"distributed": True}, "several processes"),
])
def test_settings_that_cannot_be_captured_say_why(settings, reason):
    from esrgan.engine.fast import cuda_graph_unsupported

    args = {"device": torch.device("cuda"), "precision": "bf16", "distributed": False} | settings
    assert reason in cuda_graph_unsupported(**args)
    assert cuda_graph_unsupported(torch.device("cuda"), "bf16", False) is None


def graph_ready_model(precision: str = "fp32") -> ESRGANModel:
    """Learning rates that float32 holds exactly (graph mode keeps them as float32 device tensors), so that both
    modes compute the same numbers."""
    torch.manual_seed(0)
    return ESRGANModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), Discriminator_VGG_128(3, nf=4),
                       VGGFeatureExtractor(feature_layer=4), PsnrPhaseOpt(niter=3, optim_G=OptimOpt(lr=2**-10)),
                       GanPhaseOpt(niter=5, D_update_ratio=2, optim_G=OptimOpt(lr=2**-13),
                                   optim_D=OptimOpt(lr=2**-13)), CPU, ema_decay=0.9, precision=precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_mode_trains_like_eager_mode_with_static_inputs_device_lrs_and_in_place_counters(precision):
    """Bit for bit, in bf16 too: autocast keeps no cast cache in either mode (a cache would add the D step's
    real and fake gradients of a weight in bf16 in one mode only)."""
    from esrgan.engine.fast import GraphedSteps

    plain, graphed = graph_ready_model(precision), graph_ready_model(precision)
    graphed.use_step_runner(GraphedSteps(CPU, warmup=1, graph_factory=RerunGraph))
    lr = graphed.optimizers["G"].param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and graphed.optimizers["G"].param_groups[0]["capturable"]
    for step in range(1, 9):  # 3 PSNR steps, then GAN steps with and without a G update (D_update_ratio 2)
        g = torch.Generator().manual_seed(step)
        data = {"LQ": torch.rand(2, 3, 32, 32, generator=g), "GT": torch.rand(2, 3, 128, 128, generator=g)}
        for m in (plain, graphed):
            m.feed_data(data)
            m.optimize_parameters(step)
        if step == 1:
            static = (graphed.lq, graphed.gt, graphed.skipped["G"])
        assert plain.log_dict.keys() == graphed.log_dict.keys()
        for key, value in plain.log_dict.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(graphed.log_dict[key])), (step, key)
    assert (graphed.lq, graphed.gt, graphed.skipped["G"]) == static  # the same tensors, refilled in place
    assert graphed.optimizers["G"].param_groups[0]["lr"] is lr
    assert set(graphed.run_step.graphs) == {"psnr", "gan_g_d", "gan_d"}
    for a, b in zip(plain.networks().values(), graphed.networks().values(), strict=True):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), key
    # A checkpoint of a graph-mode run is an ordinary one: numeric learning rates, capturable off.
    group = graphed.state_dict()["optimizers"]["G"]["param_groups"][0]
    assert isinstance(group["lr"], float) and group["capturable"] is False
    assert group["lr"] == plain.state_dict()["optimizers"]["G"]["param_groups"][0]["lr"]


def test_compiled_networks_in_captured_steps_train_like_compiled_ones_and_compile_only_while_warming_up():
    """speed.compile with speed.cuda_graph: each kind of step compiles during its warm-up; its capture and replays
    (re-run here by the stand-in graph) hit the compiled code without compiling again."""
    from torch._dynamo.utils import counters

    from esrgan.engine.fast import GraphedSteps

    def run(graphed: bool) -> tuple[ESRGANModel, list[int]]:
        torch._dynamo.reset()
        m = graph_ready_model()
        m.compile(backend="aot_eager")
        m.use_step_runner(GraphedSteps(CPU, warmup=1, graph_factory=RerunGraph) if graphed else m.run_step)
        compiled_per_step = []
        for step in range(1, 9):  # kinds: psnr x3, then gan_d, gan_g_d, gan_d, gan_g_d, gan_d
            g = torch.Generator().manual_seed(step)
            m.feed_data({"LQ": torch.rand(2, 3, 32, 32, generator=g), "GT": torch.rand(2, 3, 128, 128, generator=g)})
            before = counters["stats"]["unique_graphs"]
            m.optimize_parameters(step)
            compiled_per_step.append(counters["stats"]["unique_graphs"] - before)
        return m, compiled_per_step

    plain, _ = run(graphed=False)
    graphed, compiled = run(graphed=True)
    assert set(graphed.run_step.graphs) == {"psnr", "gan_g_d", "gan_d"}
    assert compiled[0] > 0 and compiled[3] > 0 and compiled[4] > 0  # each kind's warm-up step compiles
    assert compiled[1:3] == [0, 0] and compiled[5:] == [0, 0, 0]  # captures and replays do not
    for key, value in plain.log_dict.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(graphed.log_dict[key])), key
    for a, b in zip(plain.networks().values(), graphed.networks().values(), strict=True):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), key


def test_graph_mode_needs_one_batch_shape():
    from esrgan.engine.fast import GraphedSteps

    m = graph_ready_model()
    m.use_step_runner(GraphedSteps(CPU, graph_factory=RerunGraph))
    m.feed_data(batch())
    with pytest.raises(ValueError, match=r"speed.cuda_graph: a batch of shape \(1, 3, 32, 32\) after batches of "
                                         r"\(2, 3, 32, 32\)"):
        m.feed_data({k: v[:1] for k, v in batch().items()})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize(("precision", "compiled"), [("fp32", False), ("bf16", False), ("bf16", True)],
                         ids=["fp32", "bf16", "bf16_compiled"])
def test_captured_steps_on_the_gpu_train_like_eager_steps(precision, compiled):
    """Both phases and both GAN kinds, a learning-rate milestone, EMA, and batches from a pinned-memory loader with
    workers (its pin thread keeps running while steps are captured); the networks eager or compiled (Inductor).

    With eager networks and deterministic cuDNN algorithms a replayed step is the eager step, bit for bit: every
    logged loss and every weight, buffer and EMA value (the evidence that lets the GPU quality check take fp32 with
    speed.cuda_graph as its plain fp32 reference). Compiled networks are compared with a tolerance."""
    from torch.utils.data import DataLoader, TensorDataset

    from esrgan.data.loader import prefetch_to_device
    from esrgan.engine.fast import GraphedSteps
    from esrgan.options import SchedulerOpt

    cuda = torch.device("cuda", torch.cuda.current_device())
    exact = not compiled

    def build() -> ESRGANModel:
        torch.manual_seed(0)
        return ESRGANModel(RRDBNet(3, 3, nf=8, nb=1, gc=4), Discriminator_VGG_128(3, nf=4),
                           VGGFeatureExtractor(feature_layer=4),
                           PsnrPhaseOpt(niter=6, optim_G=OptimOpt(lr=2**-10),
                                        scheduler=SchedulerOpt(milestones=[5], gamma=0.5)),
                           GanPhaseOpt(niter=14, D_update_ratio=2, optim_G=OptimOpt(lr=2**-13),
                                       optim_D=OptimOpt(lr=2**-13)), cuda, ema_decay=0.9, precision=precision)

    # 20 batches: 6 PSNR steps, then 14 GAN steps whose two kinds (sharing one memory pool) alternate, each
    # replayed several times after its capture.
    g = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.rand(40, 3, 32, 32, generator=g), torch.rand(40, 3, 128, 128, generator=g))
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    # Any operation of the step without a deterministic algorithm warns (rather than fails), naming itself.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        plain, graphed = build(), build()
        if compiled:  # both, so that the two differ only in the capture (Inductor's kernels round unlike eager ones)
            plain.compile()
            graphed.compile()
        graphed.use_step_runner(GraphedSteps(cuda, warmup=2))
        logs: dict[str, list[dict[str, torch.Tensor]]] = {"plain": [], "graphed": []}
        for name, m in (("plain", plain), ("graphed", graphed)):
            loader = DataLoader(data, batch_size=2, num_workers=2, pin_memory=True)
            for step, batch in enumerate(prefetch_to_device(({"LQ": a, "GT": b} for a, b in loader), cuda), 1):
                m.feed_data(batch)
                m.optimize_parameters(step)
                logs[name].append({k: torch.as_tensor(v).clone() for k, v in m.log_dict.items()})
        torch.cuda.synchronize()
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
    assert graphed.run_step.eager == {}  # no capture fell back to eager
    assert set(graphed.run_step.graphs) == {"psnr", "gan_g_d", "gan_d"}
    assert graphed.optimizers["G_psnr"].param_groups[0]["lr"].item() == 2**-11  # the milestone reached the graph
    assert len(logs["graphed"]) == 20 and [log.keys() for log in logs["plain"]] == [
        log.keys() for log in logs["graphed"]]
    if exact:
        for step, (a, b) in enumerate(zip(logs["plain"], logs["graphed"], strict=True), 1):
            for key, value in a.items():
                assert torch.equal(value, b[key]), (step, key, value, b[key])
    for a, b in zip(plain.networks().values(), graphed.networks().values(), strict=True):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            if exact:
                assert torch.equal(x, y), key
            elif x.is_floating_point():
                assert torch.allclose(x, y, rtol=1e-2, atol=1e-4), key
    assert int(graphed.health()["skipped_G"]) == 0


def test_finished_graphs_are_released_at_the_phase_switch_and_after_d_init_iters():
    from esrgan.engine.fast import GraphedSteps
    from esrgan.engine.trainer import _release_finished_graphs
    from esrgan.options import TrainOptions

    o = TrainOptions(name="x")
    o.train.psnr.niter, o.train.gan.D_init_iters = 3, 2
    runner = GraphedSteps(CPU, graph_factory=RerunGraph)
    runner.graphs = {"psnr": RerunGraph(), "gan_d": RerunGraph(), "gan_g_d": RerunGraph()}
    kept = []
    for step in range(1, 8):
        _release_finished_graphs(runner, o, step)
        kept.append(sorted(runner.graphs))
    assert kept[:3] == [["gan_d", "gan_g_d", "psnr"]] * 3
    assert kept[3:5] == [["gan_d", "gan_g_d"]] * 2  # GAN steps 1-2: D only (D_init_iters)
    assert kept[5:] == [["gan_g_d"]] * 2  # from GAN step 3 on, every step updates G


def test_with_a_d_update_ratio_the_d_only_graph_is_kept_after_d_init_iters():
    """With D_update_ratio 2, every other GAN step after D_init_iters is D-only: its graph stays captured."""
    from esrgan.engine.fast import GraphedSteps
    from esrgan.engine.trainer import _release_finished_graphs
    from esrgan.options import TrainOptions

    o = TrainOptions(name="x")
    o.train.psnr.niter, o.train.gan.D_init_iters, o.train.gan.D_update_ratio = 3, 2, 2
    runner = GraphedSteps(CPU, graph_factory=RerunGraph)
    runner.graphs = {"psnr": RerunGraph(), "gan_d": RerunGraph(), "gan_g_d": RerunGraph()}
    for step in range(1, 10):
        _release_finished_graphs(runner, o, step)
    assert sorted(runner.graphs) == ["gan_d", "gan_g_d"]


def test_a_released_graph_hands_its_memory_pool_back_only_when_no_graph_of_its_phase_is_left():
    """The GAN kinds share one pool: releasing the D-only step must leave it to the G+D step that still replays."""
    from esrgan.engine.fast import GraphedSteps

    runner = GraphedSteps(CPU, graph_factory=RerunGraph)
    runner.graphs = {"psnr": RerunGraph(), "gan_d": RerunGraph(), "gan_g_d": RerunGraph()}
    runner.outputs = {key: {"loss": key} for key in runner.graphs}
    runner._pools = {"psnr": "psnr pool", "gan": "gan pool"}
    runner.release("gan_d")
    assert runner._pools == {"psnr": "psnr pool", "gan": "gan pool"} and sorted(runner.outputs) == ["gan_g_d", "psnr"]
    runner.release("psnr")
    assert runner._pools == {"gan": "gan pool"}
    runner.release("gan_g_d")
    assert runner._pools == {} and runner.graphs == {} and runner.outputs == {}


@pytest.mark.parametrize(("tf32", "conv", "matmul"), [("conv", True, False), ("all", True, True),
                                                       ("none", False, False)])
def test_backend_flags_follow_the_speed_options(tf32, conv, matmul):
    from esrgan.engine.trainer import configure_backends

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        configure_backends(cudnn_benchmark=True, deterministic=False, tf32=tf32)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (conv, matmul)
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    finally:
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def test_tf32_option_is_checked():
    from esrgan.options import OptionError, TrainOptions, load_options

    demo = REPO_ROOT / "options" / "train_demo.yml"
    assert load_options(TrainOptions, demo).speed.tf32 == "conv"
    with pytest.raises(OptionError, match=r"speed\.tf32: .convolutions. is not one of .conv., .all., .none."):
        load_options(TrainOptions, demo, ["speed.tf32=convolutions"])


def test_a_training_run_with_captured_steps_ends_with_the_eager_runs_weights(tmp_path, monkeypatch):
    """speed.cuda_graph through train.py's loop, with RerunGraph standing in for CUDA graphs: warm-up, capture and
    replays of each kind of step, the phase switch (the PSNR graph freed), D_init_iters (the D-only graph freed
    once G trains at every step), validation, checkpoints and EMA end with the eager run's weights, bit for bit
    (given learning rates that float32 holds exactly)."""
    import yaml

    from esrgan.engine import checkpoint, trainer
    from esrgan.engine.fast import GraphedSteps
    from esrgan.options import TrainOptions, apply_overrides, parse_options

    runners = []

    class StandIn(GraphedSteps):
        def __init__(self, device, warmup=3, on_fallback=None):
            super().__init__(device, warmup, graph_factory=RerunGraph, on_fallback=on_fallback)
            runners.append(self)

    def run(name: str, graphed: bool):
        demo = REPO_ROOT / "datasets" / "demo"
        settings = {"name": name, "path.experiments_root": str(tmp_path), "device": "cpu",
                    "speed.cuda_graph": graphed, "datasets.train.dataroot_GT": str(demo / "val"),
                    "datasets.val.dataroot_GT": str(demo / "val"), "datasets.train.batch_size": 2,
                    "datasets.train.n_workers": 0, "network_G.nf": 8, "network_G.nb": 1, "network_G.gc": 4,
                    "network_D.nf": 4, "network_F.feature_layer": 8, "logger.use_tb_logger": False,
                    "train.psnr.niter": 6, "train.gan.niter": 10, "train.gan.D_init_iters": 5,
                    "train.ema_decay": 0.9, "train.val_freq": 4, "logger.save_freq": 5, "logger.print_freq": 3,
                    # Rates float32 holds exactly: a captured step reads its rate from a float32 tensor.
                    "train.psnr.optim_G.lr": 2**-12, "train.gan.optim_G.lr": 2**-13, "train.gan.optim_D.lr": 2**-13}
        raw = yaml.safe_load((REPO_ROOT / "options" / "train_demo.yml").read_text())
        apply_overrides(raw, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                              for k, v in settings.items()])
        return trainer.train(parse_options(TrainOptions, raw))

    plain = run("plain", graphed=False)
    monkeypatch.setattr(trainer, "cuda_graph_unsupported", lambda *args: None)
    monkeypatch.setattr(trainer, "GraphedSteps", StandIn)
    graphed = run("graphed", graphed=True)

    (runner,) = runners
    assert runner.calls == {"psnr": 6, "gan_d": 5, "gan_g_d": 5} and not runner.eager
    assert set(runner.graphs) == {"gan_g_d"}  # captured at its 4th step; psnr and gan_d were freed
    a, b = (checkpoint.load_training_state(r / "training_state" / "16.state")["model"]["networks"]
            for r in (plain, graphed))
    assert list(a) == ["G", "G_ema", "D"]
    for net, state in a.items():
        for key, value in state.items():
            assert torch.equal(value, b[net][key]), f"{net}.{key}"
