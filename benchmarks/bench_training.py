"""Training throughput of the paper's autoencoder (batch 100, 3x32x32) on this machine.

Times a full optimisation step (forward, backward, Adam) with lambda = 20 and lambda = 0, in the
memory format the trainer uses (channels-last) and the plain one, and the connectivity loss alone
(forward + backward of 16 branches x 100 codes), and prints its share of the lambda = 20 step.
    python benchmarks/bench_training.py [--steps 30]
"""

from __future__ import annotations

import argparse

import torch

from corel import BranchedAutoencoder, ConnectivityLoss
from timing import timed


def step_time(lam: float, channels_last: bool, steps: int, device: str = "cpu", backend: str = "auto",
              compile_mode: str | None = None) -> float:
    """Seconds per optimisation step of the paper's autoencoder on a batch of 100 images, the
    connectivity loss on H0 engine ``backend`` unchecked (as ``corel train`` runs it: no host
    synchronisation), through torch.compile in ``compile_mode`` if given."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = BranchedAutoencoder().to(device, memory_format=fmt)
    loss_fn = ConnectivityLoss(eta=2.0, branches=16, backend=backend, check=False)
    if compile_mode is not None:
        loss_fn = torch.compile(loss_fn, mode=compile_mode, fullgraph=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(100, 3, 32, 32, device=device).contiguous(memory_format=fmt)

    def step() -> None:
        z, r = model(x)
        loss = (r - x).abs().flatten(1).sum(1).mean()
        if lam > 0:
            loss = loss + lam * loss_fn(z)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(step, steps, warmup=3, cuda=device != "cpu")[0]


def loss_time(steps: int, device: str = "cpu", backend: str = "auto", codes: int = 100, branches: int = 16,
              dims: int = 10, compile_mode: str | None = None, check: bool = True) -> float:
    """Seconds for the connectivity loss (forward + backward) of ``branches`` x ``codes`` codes x
    ``dims`` dims; with ``compile_mode``, through torch.compile in that mode (compiled in the
    warmup); ``check=False`` as training runs it (no host synchronisation)."""
    z = torch.randn(codes, branches * dims, device=device, requires_grad=True)
    loss_fn = ConnectivityLoss(eta=2.0, branches=branches, backend=backend, check=check)
    if compile_mode is not None:
        loss_fn = torch.compile(loss_fn, mode=compile_mode, fullgraph=True)

    def step() -> None:
        # no accumulation into z.grad: under CUDA graphs the last gradient is an output of the
        # backward graph, which its next replay overwrites
        z.grad = None
        loss_fn(z).backward()

    return timed(step, steps, warmup=3, cuda=device != "cpu")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 100")
    loss = loss_time(args.steps * 10)
    for channels_last in (True, False):
        t20, t0 = step_time(20.0, channels_last, args.steps), step_time(0.0, channels_last, args.steps)
        name = "channels-last" if channels_last else "contiguous"
        print(f"{name:>13}: lambda=20 {t20 * 1e3:6.1f} ms/step ({100 / t20:6.0f} img/s), lambda=0 {t0 * 1e3:6.1f} "
              f"ms/step ({100 / t0:6.0f} img/s); connectivity loss fwd+bwd {loss * 1e3:.2f} ms = "
              f"{100 * loss / t20:.1f}% of the step; 50 CIFAR-10 epochs ~ {t20 * 500 * 50 / 60:.0f} min")


if __name__ == "__main__":
    main()
