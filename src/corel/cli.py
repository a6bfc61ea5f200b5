"""The ``corel`` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    import torch

    from corel import ConnectivityLoss

    torch.manual_seed(args.seed)
    z = (0.05 * torch.randn(100, 160)).requires_grad_()
    loss_fn = ConnectivityLoss(eta=2.0, branches=16)
    opt = torch.optim.Adam([z], lr=0.05)
    for step in range(args.steps + 1):
        deaths = loss_fn.death_times(z)
        loss = loss_fn.from_death_times(deaths)
        if step % max(1, args.steps // 5) == 0:
            near = ((deaths - 2.0).abs() <= 0.2).float().mean().item()
            print(f"step {step:4d}  loss {loss.item():8.2f}  death mean {deaths.mean().item():.3f}  within 10% of eta {near:.0%}")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="optimise 16 branches of 100 codes towards death times eta=2")
    demo.add_argument("--steps", type=int, default=200)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
