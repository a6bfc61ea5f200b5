"""corel: connectivity-optimized representation learning and one-class detection from few samples."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _contamination(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be in [0, 0.5], got {text}")
    return value


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def _seed(text: str) -> int:
    """A seed numpy and Lightning take: 0 <= seed < 2**32 (Lightning refused others only once training began)."""
    value = _int_at_least(0)(text)
    if value >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be < 2**32, got {text}")
    return value


def _float_list(minimum: float, inclusive: bool):
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(_float(v) for v in text.split(","))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}") from None
        if any(v < minimum or (v == minimum and not inclusive) for v in values):
            raise argparse.ArgumentTypeError(f"expected numbers {'>=' if inclusive else '>'} {minimum:g}, got {text!r}")
        return values

    return parse


def _layouts(text: str):
    from corel.experiments.ablation import Layout

    try:
        return tuple(Layout.parse(v) for v in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _metric(text: str):
    from corel.topology.distances import metric_name

    try:
        return metric_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _devices(text: str) -> int | str | list[int]:
    """Lightning's devices: "auto", a count (-1 = all), or a comma-separated list of indices."""
    if text == "auto":
        return text
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', a count or a list of device indices like 0,1; got {text!r}") from None
    if len(values) == 1 and "," not in text:
        if values[0] == 0 or values[0] < -1:
            raise argparse.ArgumentTypeError(f"the device count must be >= 1 (or -1 for all), got {text}")
        return values[0]
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"device indices must be >= 0, got {text}")
    return values


def _int_list(minimum: int):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if min(values) < minimum:
            raise argparse.ArgumentTypeError(f"expected integers >= {minimum}, got {text!r}")
        return values

    return parse


def _output_file(text: str) -> Path:
    """A file to write: not an existing folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give the path of a file to write")
    return path


def _output_folder(text: str) -> Path:
    """A folder to write into: not an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder to write into")
    return path


def _device(text: str) -> str:
    """A torch device that exists here (cpu, cuda, cuda:1, mps)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (cpu, cuda, cuda:1, ...)") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: corel encodes on cpu, cuda or mps devices")
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text}: torch sees {torch.cuda.device_count()} CUDA devices here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: torch sees no MPS device here")
    return text


def _accelerator(text: str) -> str:
    """Lightning's accelerator; "gpu"/"cuda"/"mps" only where torch sees one (Lightning would fail
    with a traceback)."""
    import torch

    wanted = text.lower()
    if wanted in ("gpu", "cuda") and not (torch.cuda.is_available() or (wanted == "gpu" and torch.backends.mps.is_available())):
        raise argparse.ArgumentTypeError(f"{text}: torch sees no GPU here (use cpu or auto)")
    if wanted == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: torch sees no MPS device here (use cpu or auto)")
    return text


def _add_data_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    from corel.experiments.datasets import DATASETS

    p.add_argument("--data", choices=DATASETS, default=default, required=default is None, help="dataset name")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder (or file) holding the dataset; default $COREL_DATA or ~/.cache/corel/data")
    p.add_argument("--no-download", dest="download", action="store_false", help="never try to download")


def _add_train_args(p: argparse.ArgumentParser, grid: bool = False) -> None:
    """Training flags; ``grid``: lambda and the branch layout are lists (corel ablate)."""
    from corel.topology.h0 import BACKENDS

    g = p.add_argument_group("training (defaults: the authors' setup)")
    g.add_argument("--epochs", type=_int_at_least(1), default=50, help="training epochs")
    g.add_argument("--batch-size", type=_int_at_least(2), default=100, help="images per step (per device)")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    g.add_argument("--eta", type=_positive_float, default=2.0, help="connectivity scale, in latent units of --metric")
    if grid:
        g.add_argument("--lam", type=_float_list(0.0, True), default=(0.0, 1.0, 10.0, 20.0, 40.0),
                       help="weights of the connectivity loss, e.g. 0,1,10,20,40")
        g.add_argument("--layout", type=_layouts, default=None,
                       help="branch layouts <branches>x<dims>, e.g. 16x10,1x160,32x10 (default 16x10)")
    else:
        g.add_argument("--lam", type=_non_negative_float, default=20.0, help="weight of the connectivity loss")
    g.add_argument("--metric", type=_metric, default="l1", help="latent metric: l1, l2, linf or a number p >= 1")
    g.add_argument("--seed", type=_seed, default=0, help="random seed")
    g.add_argument("--arch", choices=("conv", "mlp"), default=None, help="default: conv for 32x32 images, else mlp")
    if not grid:
        g.add_argument("--branches", type=_int_at_least(1), default=16, help="latent branches")
        g.add_argument("--branch-dim", type=_int_at_least(1), default=10, help="dimensions per branch")
    g.add_argument("--filters", type=_int_list(1), default=None, help="conv channels / MLP widths, e.g. 32,64,128")
    g.add_argument("--init", choices=("layer", "block"), default="layer",
                   help="latent maps start with the whole layer's fan-in (the authors') or one block's")
    g.add_argument("--accelerator", type=_accelerator, default="auto", help="Lightning accelerator: auto, cpu, gpu")
    g.add_argument("--devices", type=_devices, default="auto", help="Lightning devices: auto, a count, or a list like 0,1")
    g.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (the default for several devices)")
    g.add_argument("--num-nodes", type=_int_at_least(1), default=1, help="machines (Lightning)")
    g.add_argument("--h0-backend", choices=BACKENDS, default="auto",
                   help="engine of the connectivity loss's persistence: auto (compiled kernel on CPU, triton on "
                        "NVIDIA GPUs where triton runs, Borůvka elsewhere), native, torch, or triton (fused GPU kernels; "
                        "needs triton); all give the same results")
    g.add_argument("--compile-loss", action="store_true",
                   help="compile the connectivity loss (torch.compile; CUDA graphs on GPUs: faster steps after ~20 s of "
                        "compilation; not reproducible bit for bit; not with --h0-backend native)")


def _train_config(args: argparse.Namespace, lam: float | None = None):
    from corel.experiments.training import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, eta=args.eta,
                       lam=args.lam if lam is None else lam, metric=args.metric, seed=args.seed)


def _architecture(args: argparse.Namespace) -> dict:
    """The network flags, as keyword arguments of workflows.default_model_config."""
    return {"branches": args.branches, "branch_dim": args.branch_dim, "filters": args.filters, "arch": args.arch,
            "init": args.init}


def _trainer_kwargs(args: argparse.Namespace) -> dict:
    return {"accelerator": args.accelerator, "devices": args.devices, "num_nodes": args.num_nodes,
            "strategy": args.strategy, "h0_backend": args.h0_backend, "compile_loss": args.compile_loss}


def _backbone(spec: str):
    """--backbone: a shipped backbone's name, a backbone file, or a training checkpoint (.ckpt)."""
    if spec.endswith(".ckpt"):  # an unfinished run's checkpoint
        from corel.experiments.training import backbone_from_checkpoint

        return backbone_from_checkpoint(spec)
    from corel.detection.backbone import resolve_backbone

    return resolve_backbone(spec)


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars unless --quiet, and only on a terminal: in a redirected log they are noise
    (Lightning's goes to stdout, tqdm's to stderr)."""
    return not args.quiet and sys.stdout.isatty() and sys.stderr.isatty()


def _train(args: argparse.Namespace) -> int:
    from corel.experiments.datasets import load_dataset
    from corel.experiments.workflows import default_model_config, train_backbone

    config = _train_config(args)
    if args.resume and not any((args.out / name).exists() for name in ("checkpoints", "backbone.pt", "summary.json")):
        raise FileNotFoundError(f"nothing to resume in {args.out}: no run there (start one without --resume)")
    data = load_dataset(args.data, args.data_dir, download=args.download)
    model_config = default_model_config(data, **_architecture(args))
    train_backbone(data, args.out, model_config, config, resume=args.resume, progress=_progress(args),
                   **_trainer_kwargs(args))
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:  # under DDP every process runs this command
        print(f"backbone in {args.out / 'backbone.pt'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from corel.experiments.datasets import load_dataset
    from corel.experiments.reports import protocol_markdown
    from corel.experiments.workflows import class_reports, encode_splits, evaluate_backbone

    backbone = _backbone(args.backbone)
    data = load_dataset(args.data, args.data_dir, download=args.download)
    codes = encode_splits(backbone, data)
    results = evaluate_backbone(backbone, data, args.out, ns=args.n, draws=args.draws, seed=args.seed,
                                radius=args.radius, progress=_progress(args), codes=codes)
    for result in results.values():
        print(protocol_markdown(result))
    if args.report:
        class_reports(backbone, data, args.out, n=args.n[0], seed=args.seed, radius=args.radius, codes=codes)
    print(f"reports written to {args.out}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from corel.experiments.workflows import reproduce

    results = reproduce(args.protocol, args.out, args.data_dir, eval_data_dir=args.eval_data_dir, ns=args.n,
                        draws=args.draws, seed=args.seed, architecture=_architecture(args), config=_train_config(args),
                        download=args.download, progress=_progress(args), **_trainer_kwargs(args))
    if results:  # empty in the processes Lightning started for other devices: the first one reports
        print((args.out / "summary.md").read_text())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from corel.experiments.reports import protocol_markdown
    from corel.experiments.workflows import demo

    results = demo(args.out, quick=args.quick, seed=args.seed, progress=False)
    for label, r in results.items():
        print(f"\n## {label}\n{protocol_markdown(r)}")
    means = ", ".join(f"{label}: {r.mean:.2f}" for label, r in results.items())
    print(f"mean AUROC x 100 ({means}); reports and plots in {args.out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from corel.experiments.datasets import load_dataset
    from corel.experiments.workflows import compare

    backbone = _backbone(args.backbone) if args.backbone else None
    data = load_dataset(args.data, args.data_dir, download=args.download)
    methods = [m.strip() for m in args.methods.split(",")]
    compare(methods, data, args.out, backbone=backbone, n=args.n, draws=args.draws, seed=args.seed, small=args.small,
            classes=args.classes, test_size=args.test_size, device=args.device, compute=not args.report_only,
            progress=_progress(args))
    print((args.out / f"compare_{data.name}_n{args.n}.md").read_text())
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from corel.experiments.ablation import Layout, ablate
    from corel.experiments.datasets import load_dataset
    from corel.experiments.workflows import default_model_config

    data = load_dataset(args.data, args.data_dir, download=args.download)
    report = ablate(data, args.out, args.layout or (Layout(16, 10),), args.lam,
                    model_config=default_model_config(data, 16, 10, args.filters, args.arch, args.init),
                    config=_train_config(args, lam=0.0), radii=args.radius, ns=args.n, draws=args.draws,
                    seed=args.seed, progress=_progress(args), **_trainer_kwargs(args))
    print(report.read_text())
    print(f"tables and charts in {args.out}")
    return 0


def _report_failures(failed: list[tuple[str, str]]) -> None:
    if failed:
        log = logging.getLogger("corel")
        log.warning("%d images could not be read and were left out:", len(failed))
        for name, why in failed:
            log.warning("  %s (%s)", name, why)


def _fit(args: argparse.Namespace) -> int:
    from corel.experiments.novelty import fit, write_report

    backbone = _backbone(args.backbone) if args.backbone.endswith(".ckpt") else args.backbone
    model, failed = fit(args.images, backbone, contamination=args.contamination, radius=args.radius,
                        resize=args.resize, strict=args.strict, device=args.device)
    _report_failures(failed)
    model.save(args.out)
    det = model.detector
    below = int((model.train_scores < det.offset_).sum())  # scores are counts: ties can keep it under contamination
    print(f"fitted on {len(model.names)} images (radius {det.radius_:g}); {below} of them ({below / len(model.names):.1%}) "
          f"score below the threshold {max(det.offset_, 0.0):.4g} (each counted against the others); model in {args.out}")
    if args.report:
        print(f"report in {write_report(model, args.report)}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from corel.experiments.novelty import (
        NoveltyModel,
        read_label_file,
        read_labels,
        score,
        write_report,
        write_scores,
    )

    model = NoveltyModel.load(args.model)
    if args.labels:
        read_label_file(args.labels)  # a bad label file fails now, not after scoring
    scored = score(model, args.images, chunk=args.chunk, strict=args.strict, progress=_progress(args))
    labels = read_labels(args.labels, scored.names) if args.labels else None
    _report_failures(scored.failed)
    fitted = {os.path.realpath(name) for name in model.names}
    refitted = sum(os.path.realpath(name) in fitted for name in scored.names)
    if refitted:
        logging.getLogger("corel").warning(
            "%d of the scored images are ones the model was fitted on: each also counts itself (one per branch), so "
            "they look more normal than new images would; the fit report (corel fit --report) scores them "
            "against the others", refitted)
    write_scores(scored, model.detector.offset_, args.out)
    novel = int((scored.scores < model.detector.offset_).sum())
    print(f"{len(scored.scores)} images scored: {novel} novel, {len(scored.scores) - novel} normal; scores in {args.out}")
    if labels is not None:
        from corel.experiments.reports import auroc_percent

        auroc = auroc_percent(labels, scored.scores)
        print(f"AUROC x 100 against {args.labels}: " + (f"{auroc:.2f}" if auroc is not None else
                                                          "undefined (every image has the same label)"))
    if args.report:
        print(f"report in {write_report(model, args.report, scored, labels)}")
    return 0


def _analyze_batch_size(args: argparse.Namespace) -> int:
    from corel.topology.theory import batch_size_for_tolerance, tolerance_for_batch_size

    if args.batch_size is not None:
        t = tolerance_for_batch_size(args.batch_size, args.dim, args.eta)
        print(f"batch size {args.batch_size}, branch dim {args.dim}, eta {args.eta}: death times can all lie within "
              f"+-{t:.3f} eta, i.e. [{max(0.0, args.eta * (1 - t)):.3f}, {args.eta * (1 + t):.3f}]")  # deaths >= 0
    else:
        b = batch_size_for_tolerance(args.dim, args.eta, args.tolerance)
        print(f"branch dim {args.dim}, eta {args.eta}, death times within +-{args.tolerance} eta: batch size <= "
              + (f"{b:,}" if b < 10**9 else f"{b:.3e}"))
    return 0


def _analyze_densification(args: argparse.Namespace) -> int:
    from corel.experiments.datasets import load_dataset
    from corel.experiments.workflows import analyze_backbone_densification

    result = analyze_backbone_densification(_backbone(args.backbone), load_dataset(args.data, args.data_dir,
                                            download=args.download), args.out, batch_size=args.batch_size,
                                            num_samples=args.num_samples, seed=args.seed)
    print((args.out / "densification.csv").read_text())
    return 0 if result is not None else 1


class _DefaultsShown(argparse.HelpFormatter):
    """Help that states each option's default, unless its text already does."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.nargs == 0  # flags: their "default" is the opposite state
                or action.default in (None, argparse.SUPPRESS) or "default" in text):
            return text
        shown = (",".join(map(str, action.default)) or "none") if isinstance(action.default, (tuple, list)) \
            else action.default
        return f"{text} (default: {shown})".strip()


def _with_defaults_shown(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _DefaultsShown
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _with_defaults_shown(child)


def build_parser() -> argparse.ArgumentParser:
    from corel.experiments.protocol import PROTOCOLS

    parser = argparse.ArgumentParser(prog="corel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a backbone with reconstruction + lambda * connectivity loss")
    _add_data_args(p)
    _add_train_args(p)
    p.add_argument("--out", type=_output_folder, required=True, help="run folder (checkpoints, logs, backbone.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="one-class AUROC per class of a dataset with a trained backbone")
    p.add_argument("--backbone", required=True,
                   help="a shipped backbone (cifar10), a backbone.pt written by `corel train`, or a run's checkpoints/*.ckpt")
    _add_data_args(p)
    p.add_argument("-n", type=_int_list(1), default=(120,), help="samples per class, e.g. 80,120,500")
    p.add_argument("--draws", type=_int_at_least(1), default=5, help="random draws per class")
    p.add_argument("--radius", type=_positive_float, default=None, help="ball radius (default: the backbone's eta)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed")
    p.add_argument("--out", type=_output_folder, required=True, help="folder for CSV/JSON/Markdown/PNG reports")
    p.add_argument("--report", action="store_true",
                   help="also one HTML page per class (first draw, first n): images, scores, ROC curve and AUROC")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("reproduce", help="run a paper protocol end to end (train if needed, then evaluate)")
    p.add_argument("protocol", choices=list(PROTOCOLS), help="; ".join(f"{k}: {v.description}" for k, v in PROTOCOLS.items()))
    p.add_argument("--data-dir", type=Path, default=None, help="folder holding the training dataset")
    p.add_argument("--eval-data-dir", type=Path, default=None, help="folder holding the evaluation dataset, if elsewhere")
    p.add_argument("--no-download", dest="download", action="store_false", help="never try to download")
    _add_train_args(p)
    p.add_argument("-n", type=_int_list(1), default=(120,), help="samples per class, e.g. 80,120,500")
    p.add_argument("--draws", type=_int_at_least(1), default=5, help="random draws per class")
    p.add_argument("--out", type=_output_folder, required=True,
                   help="run folder; a finished backbone there is reused, a killed training or evaluation continues "
                        "(refused when the settings differ)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("compare", help="corel and the baselines on identical draws: one table and one chart")
    _add_data_args(p)
    p.add_argument("--methods", default="corel,ocsvm_cae,deep_svdd,dagmm,dsebm,geom",
                   help="comma-separated: corel, ocsvm_cae, deep_svdd, dagmm, dsebm, geom")
    p.add_argument("--backbone", default=None,
                   help="backbone for method corel: cifar10 (shipped), a backbone.pt, or a run's checkpoints/*.ckpt")
    p.add_argument("-n", type=_int_at_least(1), default=120, help="samples per class")
    p.add_argument("--draws", type=_int_at_least(1), default=5, help="random draws per class")
    p.add_argument("--seed", type=_seed, default=0, help="random seed")
    p.add_argument("--small", action="store_true", help="CPU-sized baseline networks (GEOM: a small net)")
    p.add_argument("--classes", type=_int_list(0), default=None, help="comma-separated class indices (default: all)")
    p.add_argument("--test-size", type=_int_at_least(2), default=None,
                   help="score a stratified random subset of this many test images, the same for every method "
                        "(default: the whole test split)")
    p.add_argument("--device", type=_device, default="cpu", help="where the baselines run: cpu, cuda, cuda:1, ...")
    p.add_argument("--out", type=_output_folder, required=True,
                   help="run folder; finished (method, class, draw) cells are kept there, so a rerun resumes")
    p.add_argument("--report-only", action="store_true",
                   help="compute nothing: write the table from the finished cells (means over the classes every "
                        "method finished)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_compare)

    p = sub.add_parser("fit", help="fit a novelty detector on a folder of normal images (pretrained backbone)")
    p.add_argument("images", help="a folder of image files (jpg, png, bmp; searched recursively), a list file of "
                                  "paths (.txt, or .csv with a path column; relative to the list's folder), or an .npz")
    p.add_argument("--out", type=_output_file, required=True, help="the model file to write, e.g. model.corel")
    p.add_argument("--backbone", default="cifar10",
                   help="cifar10 (shipped, the default), a backbone.pt, or a run's checkpoints/*.ckpt")
    p.add_argument("--contamination", type=_contamination, default=0.1,
                   help="fraction of the fitted images to call novel, in [0, 0.5]: sets the threshold (default 0.1)")
    p.add_argument("--radius", type=_positive_float, default=None, help="ball radius (default: the backbone's eta)")
    p.add_argument("--resize", choices=("bilinear", "box"), default="bilinear",
                   help="filter that brings images to the backbone's size after a central square crop")
    p.add_argument("--device", type=_device, default=None, help="where the backbone encodes: cpu, cuda, ...")
    p.add_argument("--report", type=_output_file, default=None, help="also write an HTML report of the fitted images")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error (default: left out, listed)")
    p.set_defaults(func=_fit)

    p = sub.add_parser("score", help="score images with a model from corel fit: CSV, and an HTML report")
    p.add_argument("model", type=Path, help="the model file written by corel fit")
    p.add_argument("images", help="a folder of image files (searched recursively), a list file of paths (relative "
                                  "to the list's folder), or an .npz")
    p.add_argument("--out", type=_output_file, required=True, help="CSV to write: path, score, normal/novel, rank")
    p.add_argument("--report", type=_output_file, default=None, help="also write an HTML report (and its PNGs beside it)")
    p.add_argument("--labels", type=Path, default=None,
                   help="CSV with columns path,label: label normal or novel (or scikit-learn's 1 / -1), paths "
                        "relative to the CSV's folder; prints the AUROC and adds the ROC curve to the report")
    p.add_argument("--chunk", type=_int_at_least(1), default=1000, help="images decoded and scored at a time")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error (default: listed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_score)

    p = sub.add_parser("ablate", help="the paper's ablations: lambda x branch layout, radius and sample-count sweeps")
    _add_data_args(p)
    _add_train_args(p, grid=True)
    p.add_argument("--radius", type=_float_list(0.0, False), default=(),
                   help="also evaluate every backbone with these ball radii, e.g. 0.5,1,1.5,2,3,5, at n = 120 (or at "
                        "the first -n when 120 is not among them)")
    p.add_argument("-n", type=_int_list(1), default=(120,),
                   help="evaluate every backbone with radius = eta at these samples per class, e.g. 10,50,120,500")
    p.add_argument("--draws", type=_int_at_least(1), default=5, help="random draws per class")
    p.add_argument("--out", type=_output_folder, required=True,
                   help="the ablation folder: every finished training and evaluation is kept there, so a rerun "
                        "continues; several processes may share it (each trains on one device: start one per GPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_ablate)

    p = sub.add_parser("analyze", help="the paper's theory: batch-size guideline, densification of death times")
    tools = p.add_subparsers(dest="tool", required=True, metavar="TOOL")
    t = tools.add_parser("batch-size", help="metric-entropy batch-size guideline for a branch (and the reverse)")
    t.add_argument("--dim", type=_int_at_least(1), default=10, help="branch dimension")
    t.add_argument("--eta", type=_positive_float, default=2.0, help="connectivity scale")
    t.add_argument("--tolerance", type=_non_negative_float, default=0.1, help="relative: death times in eta*(1 +- t)")
    t.add_argument("--batch-size", type=_int_at_least(2), default=None, help="reverse: the tolerance this batch allows")
    t.set_defaults(func=_analyze_batch_size)
    t = tools.add_parser("densification", help="death times of N >> b encoded samples, per branch")
    t.add_argument("--backbone", required=True, help="cifar10 (shipped), a backbone.pt, or a run's checkpoints/*.ckpt")
    _add_data_args(t)
    t.add_argument("--batch-size", type=_int_at_least(2), default=100, help="the training batch size b")
    t.add_argument("--num-samples", type=_int_at_least(2), default=None, help="largest N (default: all training images)")
    t.add_argument("--seed", type=_seed, default=0, help="random seed")
    t.add_argument("--out", type=_output_folder, required=True)
    t.set_defaults(func=_analyze_densification)

    p = sub.add_parser("demo", help="the whole method on sklearn's bundled digits, with and without the loss")
    p.add_argument("--out", type=_output_folder, default=Path("runs/demo"), help="folder for reports and plots")
    p.add_argument("--quick", action="store_true", help="a few epochs and one draw (seconds; used by the tests)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed")
    p.set_defaults(func=_demo)
    _with_defaults_shown(parser)
    return parser


def _log_to_stderr() -> None:
    """corel's own messages (logger "corel", e.g. "nothing to do") go to stderr, without decoration."""
    log = logging.getLogger("corel")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    try:  # Ctrl-C while the heavy libraries load: no traceback
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        sys.exit(130)
    _log_to_stderr()
    try:
        return args.func(args)
    except (ValueError, OSError, NotImplementedError, ImportError) as e:  # OSError: a folder not writable, a full disk
        parser.exit(2, f"corel {args.command}: error: {e}\n")
    except KeyboardInterrupt:  # (an interrupted training has said where it stopped and how to go on)
        kept = args.command in {"reproduce", "compare", "ablate", "demo"}  # those that resume from --out
        again = "; finished work is kept in --out: run the same command to continue" if kept else ""
        # the processes Lightning started for other devices (LOCAL_RANK or NODE_RANK > 0) leave the word to the first
        first = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
        parser.exit(130, f"corel {args.command}: interrupted{again}\n" if first else None)


if __name__ == "__main__":
    sys.exit(main())
