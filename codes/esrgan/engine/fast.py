"""Whole-iteration CUDA-graph capture of the training step (`speed.cuda_graph`).

On a GPU this model is launch-bound: RRDBNet alone runs about a thousand small convolutions forward and backward
per step, and the host cannot issue them as fast as the GPU executes them. A CUDA graph records the device work
of one whole iteration (forward passes, losses, backward passes, Adam, EMA, the non-finite counters) once and
replays it with a single launch. What the model does in graph mode so that a replay equals an eager step:

* inputs are copied into static tensors (`SRModel.feed_data`), so batches must keep one shape (the training
  loader drops the last incomplete batch);
* nothing in the step reads the device from the host: the non-finite checks feed fused Adam's `found_inf`, the
  counters are updated in place, the losses are left on the device;
* Adam is `capturable` with its learning rate as a device tensor that the schedules fill in place (host code,
  outside the graph, as are the schedulers and the logging);
* autocast runs without its weight-cast cache (in eager steps too, so that both compute the same numbers),
  which would otherwise keep capture-time casts.

Each kind of step (the PSNR step, the GAN step with a G update, the D-only GAN step) runs eagerly for a few
warm-up iterations on a side stream (cuDNN autotuning, lazy optimizer state), is captured on its next use and
replayed from then on. The GAN kinds share one memory pool: their graphs replay one after another on one stream,
everything that must outlive a replay (weights, optimizer state, counters) was allocated before capture, and a
step's outputs are read before the next replay (the loss meter copies them). What a step leaves in the pool is
valid only until the next step: its outputs, the parameters' `.grad`, `model.fake`; one kind's replay may
overwrite the other's. Capture is `thread_local`, so that the data loader's pin-memory
thread may keep working meanwhile, and runs on a stream of the training device (which need not be the current
one). fp16 (the gradient scaler's host-side logic) and several processes (DDP) run eagerly instead, with the reason in
the log. So does a kind of step that raises while it is being captured (host code that cannot be recorded, say
in a custom network): it warns once and stays eager. A capture that CUDA itself invalidates (an operation not
allowed while capturing) stops training with the reason, since PyTorch cannot undo all of it in the process.

With `speed.compile` too, the warm-up iterations compile the networks (Inductor's default mode, which fuses the
dense blocks' pointwise work and has no CUDA graphs of its own), and the capture records the compiled kernels:
fusion and one launch per step together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

DEFAULT_WARMUP = 3


def cuda_graph_unsupported(device: torch.device, precision: str, distributed: bool) -> str | None:
    """Why the training step cannot be graph-captured with these settings, or None when it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, training runs on {device}"
    if precision == "fp16":
        return "fp16's gradient scaler decides on the host whether to step; use bf16 (or fp32) with CUDA graphs"
    if distributed:
        return "several processes (DistributedDataParallel) are not graph-captured here"
    return None


class GraphedSteps:
    """Runs each kind of step eagerly `warmup` times, then captures it on its next call and replays it after.

    `graph_factory` and `stream_context` exist for tests on machines without CUDA; in training they are
    torch.cuda.CUDAGraph and a side stream.
    """

    def __init__(self, device: torch.device, warmup: int = DEFAULT_WARMUP,
                 graph_factory: Callable[[], Any] | None = None,
                 on_fallback: Callable[[str, str], None] | None = None) -> None:
        if warmup < 1:
            # Fused Adam's state and the health counters are created lazily by the first step: captured, every
            # replay would zero them again.
            raise ValueError(f"GraphedSteps: warmup must be at least 1 eager step, got {warmup}")
        self.device = device
        self.warmup = warmup
        self.calls: Counter[str] = Counter()
        self.graphs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.eager: dict[str, str] = {}  # kinds whose capture failed: why (they run eagerly from then on)
        self._on_fallback = on_fallback
        self._pools: dict[str, Any] = {}  # by phase: "psnr", "gan"
        self._graph_factory = graph_factory or torch.cuda.CUDAGraph
        on_gpu = graph_factory is None
        self._side = torch.cuda.Stream(device) if on_gpu else None  # warm-up
        self._capture = torch.cuda.Stream(device) if on_gpu else None

    def __call__(self, key: str, step: Callable[[], Any]) -> Any:
        """Run `step` (device work only) for a step of kind `key`; returns its outputs (static once captured)."""
        self.calls[key] += 1
        if key in self.graphs:
            self.graphs[key].replay()
            return self.outputs[key]
        if key in self.eager or self.calls[key] <= self.warmup:
            return self._eager(step)
        graph = self._graph_factory()
        try:
            outputs = self._record(graph, key, step)
        except CaptureError:
            raise
        except Exception as error:
            # Capture only records work, so nothing of this iteration has run yet: it runs eagerly now.
            self.eager[key] = f"{type(error).__name__}: {error}"
            if self._on_fallback is not None:
                self._on_fallback(key, self.eager[key])
            return self._eager(step)
        self.graphs[key], self.outputs[key] = graph, outputs
        graph.replay()  # capturing records the work without running it: this iteration still has to happen
        return outputs

    def _record(self, graph: Any, key: str, step: Callable[[], Any]) -> Any:
        """Capture `step` into `graph` (on the GPU: what `torch.cuda.graph` does, written out so that a failure
        can be told apart and cleaned up). A step that raises inside a capture CUDA still holds valid has only
        recorded work: the capture is ended and discarded and the error propagates (the caller runs the step
        eagerly). A capture that CUDA invalidated (an operation not allowed while capturing) cannot end, and
        PyTorch's allocators are then left routing memory to its pool: that raises CaptureError, which stops
        training."""
        if self._capture is None:
            return graph.capture(step)
        phase = key.split("_")[0]
        pool = self._pools.get(phase) or torch.cuda.graph_pool_handle()
        with torch.cuda.device(self.device):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            with torch.cuda.stream(self._capture):
                graph.capture_begin(pool=pool, capture_error_mode="thread_local")
                try:
                    outputs = step()
                except BaseException as error:
                    _end_capture(graph, pool, self.device, key, error)
                    raise
                _end_capture(graph, pool, self.device, key, None)
        self._pools.setdefault(phase, pool)
        return outputs

    def release(self, key: str) -> None:
        """Free a graph that will not run again (the PSNR step once the GAN phase has started, the D-only step
        after D_init_iters) and hand its memory back."""
        if self.graphs.pop(key, None) is not None:
            self.outputs.pop(key, None)
            if not any(k.split("_")[0] == key.split("_")[0] for k in self.graphs):
                self._pools.pop(key.split("_")[0], None)
            if self._capture is not None:
                torch.cuda.empty_cache()

    def _eager(self, step: Callable[[], Any]) -> Any:
        if self._side is None:
            return step()
        # Warm-up on a side stream, as capture requires (torch.cuda.graphs documentation).
        self._side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._side):
            outputs = step()
        torch.cuda.current_stream(self.device).wait_stream(self._side)
        return outputs


class CaptureError(RuntimeError):
    """A CUDA-graph capture that CUDA invalidated: not recoverable within the process."""


def _end_capture(graph: torch.cuda.CUDAGraph, pool: tuple[int, int], device: torch.device, key: str,
                 error: BaseException | None) -> None:
    """End a capture; when CUDA invalidated it, release what `capture_end` would have (the allocator's routing
    into the pool and the graph's hold on it) and raise CaptureError naming the first error."""
    try:
        graph.capture_end()
        return
    except Exception as end_error:
        cause = error or end_error
    index = device.index if device.index is not None else torch.cuda.current_device()
    # Both calls in one try: torch 2.11 needs both (its capture_end raises before it stops the routing and its
    # reset releases only ended captures); from 2.12 the routing is already stopped, the first call raises and
    # the second is skipped, as it must be, since 2.14's reset releases the pool itself (a second release would
    # free the GAN kinds' shared pool under the other graph).
    try:
        torch._C._cuda_endAllocateToPool(index, pool)
        torch._C._cuda_releasePool(index, pool)
    except Exception:  # the capture's own error is the one to report
        pass
    raise CaptureError(f"speed.cuda_graph: the {key} step cannot be captured in a CUDA graph "
                       f"({type(cause).__name__}: {cause}). Train with speed.cuda_graph: false, resuming from the "
                       "last checkpoint (path.resume_state or --auto-resume).") from cause
