"""The training step captured once as a CUDA graph and replayed for every batch.

These small U-Nets are bound by kernel launches on a GPU, not by arithmetic: on an H100 the
reference U-Net trained at 18.3k images/s eagerly and 31.5k under torch.compile's CUDA graphs
(benchmarks/RESULTS.md, "GPU"). Capturing the whole step (batch gather, noise, forward, backward,
gradient clipping, AdamW, EMA) by hand gives the replay without torch.compile's compile time,
which would cost more than a short trial trains.

What the step must allow (``trainables.train_loop`` builds it so):
- static shapes: full batches only (the sampler drops the last partial one);
- no host syncs: AdamW with ``capturable=True`` and a tensor learning rate (ReduceLROnPlateau
  fills it in place), the EMA decay as a device tensor;
- randomness from the default CUDA generator, which is graph-safe: each replay draws fresh
  noise, and a ``torch.manual_seed`` between replays applies to the next one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_capturable(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """Switch an optimizer (fresh or just loaded from a checkpoint) to graph-safe updates:
    capturable, learning rate and step counters as device tensors."""
    for group in opt.param_groups:
        group["capturable"] = True
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
    for state in opt.state.values():
        if "step" in state:
            state["step"] = state["step"].to(device=device, dtype=torch.float32)


class GraphedStep:
    """`step(idx, n) -> loss` run as a CUDA graph: `idx` are the batch's indices into the data
    on the device, `n` the optimizer step number (for the EMA warm-up). The first `warmup` calls
    run eagerly on a side stream (allocations settle, AdamW creates its state); the next call
    captures the step and every call replays it. The returned loss tensor is the graph's own
    output, overwritten by the next call: read or accumulate it before calling again."""

    def __init__(self, fn: StepFn, zero_grad: Callable[[], None], batch: int,
                 device: torch.device, warmup: int = 3):
        self.fn, self.zero_grad, self.warmup = fn, zero_grad, warmup
        self.idx = torch.zeros(batch, dtype=torch.long, device=device)
        self.n = torch.zeros((), device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None

    def __call__(self, idx: torch.Tensor, n: int) -> torch.Tensor:
        self.idx.copy_(idx)
        self.n.fill_(n)
        if self.graph is None:
            if self.warmup > 0:
                self.warmup -= 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self.zero_grad()
                    loss = self.fn(self.idx, self.n)
                torch.cuda.current_stream().wait_stream(side)
                return loss
            # Gradients are None at capture, so the captured backward writes them afresh (no
            # accumulation across replays, no zero_grad inside the graph).
            self.zero_grad()
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: a Ray Train worker runs this in a thread of its own
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.loss = self.fn(self.idx, self.n)
        self.graph.replay()
        return self.loss
