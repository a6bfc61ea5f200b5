"""Training the branched autoencoder with reconstruction + lambda * connectivity loss (Lightning).

Model (:class:`ConnectivityAutoencoder`), data (:class:`ImageDataModule`) and trainer are separate, as
Lightning intends; :func:`train` wires them for the CLI and for users who just want a backbone.

A run folder holds ``checkpoints/last.ckpt`` (rewritten atomically after every epoch, with the
run's settings), ``logs/version_k/metrics.csv`` (one per start or resume) and, when finished,
``backbone.pt``, ``summary.json`` and ``death_times.png``.  A resume continues from the newest
checkpoint and is refused when any setting differs; a finished run is never trained over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from corel._io import atomic_torch_save, atomic_write_json, safe_torch_load
from corel.detection.backbone import Backbone
from corel.detection.images import unit_float
from corel.detection.models import AutoencoderConfig, BranchedAutoencoder
from corel.topology.distances import check_scale, metric_name
from corel.topology.h0 import check_backend
from corel.topology.losses import ConnectivityLoss


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the authors' (Hofer et al., ICML 2019).

    eta: connectivity scale (latent units of ``metric``); lam: weight of the connectivity loss
    (0 = plain AE); batch_size: per device (the connectivity loss sees one device's batch).
    """

    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-3
    eta: float = 2.0
    lam: float = 20.0
    metric: str | float = "l1"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if not 0 <= self.seed < 2 ** 32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch size must be >= 2 (the connectivity loss needs pairs), got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        check_scale(self.eta, "eta")
        if not self.lam >= 0:
            raise ValueError(f"lambda must be >= 0, got {self.lam}")
        object.__setattr__(self, "metric", metric_name(self.metric))


class ConnectivityAutoencoder(L.LightningModule):
    """Branched autoencoder trained with L1 reconstruction (summed per image, averaged over the batch)
    plus ``lam`` times the connectivity loss of each batch's codes (per device batch under DDP).

    Batches are uint8 images (B, *input_shape); they become [0, 1] floats on the device.
    ``compile_loss``: the connectivity loss through torch.compile with CUDA graphs (see :func:`train`).
    Logs per epoch: recon, connectivity, loss and the death-time statistics death_mean, death_std,
    death_min, death_max and death_near_eta (fraction within [0.9 eta, 1.1 eta]).
    """

    def __init__(self, model_config: dict, eta: float = 2.0, lam: float = 20.0, metric: str = "l1", lr: float = 1e-3,
                 h0_backend: str = "auto", compile_loss: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.model = BranchedAutoencoder(AutoencoderConfig.from_dict(model_config))
        # unchecked: no host synchronisation per step; a diverged batch gives a non-finite loss,
        # counted on the device and reported at the end of the epoch (see check_diverged)
        self.connectivity = ConnectivityLoss(eta, metric, self.model.config.branches, backend=h0_backend, check=False)
        self.compile_loss = compile_loss
        self._compiled: Any = None  # made at the first step: a compiled function cannot be pickled (ddp_spawn)
        self.lam = lam
        self.lr = lr
        self._channels_last = self.model.config.kind == "conv"
        self.epoch_deaths: list[Tensor] = []  # on the device: no host sync per step
        self.nonfinite_batches = torch.zeros((), dtype=torch.long)  # this epoch's, on the device
        self.run_record: dict[str, Any] = {}  # written into every checkpoint (see train)

    def configure_model(self) -> None:
        # ~1.4x faster convolutions on CPU (oneDNN), no effect on results.  Here, before DDP wraps the
        # model: converted later (on_fit_start), its gradients' strides no longer matched DDP's buckets
        # (a warning per process at the first step, and slower gradient copies)
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)

    def on_train_epoch_start(self) -> None:
        self.epoch_deaths = []
        self.nonfinite_batches = torch.zeros((), dtype=torch.long, device=self.device)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        x = unit_float(batch)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z, recon_x = self.model(x)
        recon = (recon_x - x).abs().flatten(1).sum(dim=1).mean()
        if self.lam > 0:
            deaths, connectivity = self._deaths_and_loss(z)
            loss = recon + self.lam * connectivity
        else:  # still measured, so the ablation logs the same statistics
            with torch.no_grad():
                deaths, connectivity = self._deaths_and_loss(z)
            loss = recon
        # a copy: a CUDA graph's outputs are overwritten by its next replay
        self.epoch_deaths.append(deaths.detach().flatten().clone())
        self.nonfinite_batches += ~torch.isfinite(loss.detach())
        log = dict(on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self.log("recon", recon, prog_bar=True, **log)
        self.log("connectivity", connectivity, prog_bar=True, **log)
        self.log("loss", loss, **log)
        return loss

    def _deaths_and_loss(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The death times (branches, b-1) of codes ``z`` (b, D) and their connectivity loss,
        compiled if asked: on a GPU the loss's ~100 small launches cost more host time than the
        autoencoder's step, and with CUDA graphs forward and backward are one replay each."""
        if not self.compile_loss:
            return self._eager_deaths_and_loss(z)
        if self._compiled is None:
            self._compiled = torch.compile(self._eager_deaths_and_loss, mode="reduce-overhead", fullgraph=True)
        return self._compiled(z)

    def _eager_deaths_and_loss(self, z: Tensor) -> tuple[Tensor, Tensor]:
        deaths = self.connectivity.death_times(z)
        return deaths, self.connectivity.from_death_times(deaths)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_compiled": None}  # compiled again where it is unpickled

    def check_diverged(self) -> None:
        """ValueError when a batch of this epoch, on any device, had a NaN or inf loss: the
        checkpoint of the epoch before is then kept, not overwritten by diverged weights."""
        bad = int(self.trainer.strategy.reduce(self.nonfinite_batches, reduce_op="sum"))  # once per epoch
        if bad:
            raise ValueError(f"training diverged: the loss was NaN or inf in {bad} of {self.trainer.num_training_batches}"
                             f" batches of epoch {self.current_epoch} (codes or reconstructions turned NaN or inf); "
                             f"the checkpoint of the epoch before is kept; lower the learning rate or lambda")

    def last_epoch_deaths(self) -> Tensor:
        """The death times of the epoch that ran last (this device's batches), on the CPU."""
        return torch.cat(self.epoch_deaths).cpu() if self.epoch_deaths else torch.zeros(0)

    def on_train_epoch_end(self) -> None:
        if not self.epoch_deaths:
            return
        for name, value in death_statistics(self.last_epoch_deaths(), self.connectivity.eta).items():
            self.log(f"death_{name}", value, sync_dist=True, reduce_fx=name if name in ("min", "max") else "mean")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        deaths = self.last_epoch_deaths()
        stats = death_statistics(deaths, self.connectivity.eta) if len(deaths) else None
        checkpoint["corel"] = {**self.run_record, "last_epoch_deaths": stats}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


def death_statistics(deaths: Tensor, eta: float) -> dict[str, float]:
    """mean, std, min, max of death times and the fraction within [0.9 eta, 1.1 eta]."""
    d = deaths.double()
    return {
        "mean": d.mean().item(),
        "std": d.std().item() if d.numel() > 1 else 0.0,
        "min": d.min().item(),
        "max": d.max().item(),
        "near_eta": ((d >= 0.9 * eta) & (d <= 1.1 * eta)).double().mean().item(),
    }


class _InMemoryImages(Dataset):
    """uint8 images held in memory (on the training device); fetched a whole batch at a time."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]

    def __getitems__(self, indices: list[int]) -> Tensor:
        index = torch.as_tensor(indices)
        if self.images.is_cuda:  # from pinned memory the copy is asynchronous: no wait for the GPU
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        return self.images[index]


def _whole_batch(batch: Tensor) -> Tensor:
    return batch


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch, derived from (seed, epoch) only: a resumed run sees the
    same order as an uninterrupted one.  Lightning calls :meth:`set_epoch`.

    Under DDP device ``rank`` of ``world_size`` takes every world_size-th index of the same
    permutation: the devices see disjoint samples and equally many of them.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size, self.epoch = size, seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.world_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)
        return iter(order[self.rank: len(self) * self.world_size: self.world_size].tolist())


class ImageDataModule(L.LightningDataModule):
    """Shuffled, drop-last mini-batches of ``batch_size`` uint8 training images (N, *input_shape) per
    device.  The images are moved once to the training device (no worker processes, no per-step copy)."""

    def __init__(self, images: np.ndarray, batch_size: int = 100, seed: int = 0):
        super().__init__()
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise ValueError(f"training images must be a uint8 array, got {getattr(images, 'dtype', type(images))}")
        if len(images) < batch_size:
            raise ValueError(f"{len(images)} training images are fewer than one batch of {batch_size}")
        self.images, self.batch_size, self.seed = images, batch_size, seed

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if len(self.images) // world < self.batch_size:
            raise ValueError(f"{len(self.images)} training images over {world} devices are fewer than one batch "
                             f"of {self.batch_size} per device")
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        images = torch.from_numpy(np.ascontiguousarray(self.images))
        if device.type != "cpu":
            images = images.to(device)
        sampler = BatchSampler(EpochShuffleSampler(len(images), self.seed, rank, world), self.batch_size,
                               drop_last=True)
        return DataLoader(_InMemoryImages(images), batch_sampler=sampler, collate_fn=_whole_batch)


class _RunReport(Callback):
    """Logs the per-epoch wall time and throughput, then writes the epoch's checkpoint (through the
    trainer, so every device takes part and the run's checkpoint IO writes it) with the run's seconds
    so far: ``seconds_before`` (the earlier sessions', up to the checkpoint resumed from) plus this one's."""

    def __init__(self, checkpoint: Path, seconds_before: float = 0.0) -> None:
        self.checkpoint = checkpoint
        self.interrupted = False
        self.seconds_before = seconds_before
        self._start = self._fit_start = time.perf_counter()

    def fit_seconds(self) -> float:
        """Seconds of training of the whole run, every session counted up to its last checkpoint."""
        return self.seconds_before + time.perf_counter() - self._fit_start

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        images = trainer.num_training_batches * trainer.datamodule.batch_size * trainer.world_size
        pl_module.log("epoch_seconds", seconds, rank_zero_only=True)
        pl_module.log("images_per_second", images / max(seconds, 1e-9), rank_zero_only=True)
        pl_module.check_diverged()
        pl_module.run_record["fit_seconds"] = self.fit_seconds()
        trainer.save_checkpoint(self.checkpoint)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.interrupted = isinstance(exception, KeyboardInterrupt)
        if self.interrupted and trainer.is_global_zero:  # the one place that knows the epoch
            saved = f"epoch {trainer.current_epoch} is kept" if self.checkpoint.exists() else "no epoch had finished"
            logging.getLogger("corel").warning("interrupted in epoch %d (%s): the run continues from there when "
                                               "started again (corel train: with --resume)",
                                               trainer.current_epoch + 1, saved)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically beside their target (corel._io) and read with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(Path(path))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True``; a damaged one raises ValueError."""
    try:
        ckpt = safe_torch_load(path, "checkpoint")
    except ValueError as e:
        raise ValueError(f"{e}; delete it to restart, or resume from an earlier copy") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        raise ValueError(f"checkpoint {path} is not a corel training checkpoint")
    return ckpt


def newest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint in ``folder`` with the most training steps, and its content; None if none."""
    found = [(path, load_checkpoint(path)) for path in sorted(folder.glob("*.ckpt"))] if folder.is_dir() else []
    if not found:
        return None
    return max(found, key=lambda item: (item[1].get("global_step", -1), item[1]["epoch"]))


def images_digest(images: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of a uint8 image array and its shape: identifies the training data."""
    digest = hashlib.sha256(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()[:16]


def run_settings(images: np.ndarray, model_config: AutoencoderConfig, config: TrainConfig,
                 info: dict | None = None) -> dict[str, Any]:
    """Everything that makes two runs the same run, except the number of epochs."""
    train = {k: v for k, v in asdict(config).items() if k != "epochs"}
    data = {"train_images": int(len(images)), "digest": images_digest(images), **(info or {})}
    return json.loads(json.dumps({"model": model_config.to_dict(), "train": train, "data": data}))


def settings_differences(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """'name: stored -> wanted' for every leaf that differs between two settings trees."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key, "(missing)"), wanted.get(key, "(missing)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silences Lightning's advertisements, device banners and the warnings a user cannot act on."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in (".*does not have many workers.*", ".*_pytree.*", ".*is smaller than the logging interval.*",
                            ".*Checkpoint directory .* exists and is not empty.*", ".*LeafSpec.*",
                            # per-epoch values are logged on rank 0 only, on purpose (the loss is per device)
                            ".*sync_dist=True.*"):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _interruption_raised(report: _RunReport) -> Iterator[None]:
    """Ctrl-C leaves the block as KeyboardInterrupt, with the SIGINT handler it found.  Lightning
    answers Ctrl-C by ignoring SIGINT for the rest of the process and calling ``sys.exit(1)``: a
    notebook's kernel could no longer be interrupted, and the CLI exited 1 instead of 130."""
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    handler = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        yield
    except SystemExit:
        if not report.interrupted:
            raise
        raise KeyboardInterrupt from None
    finally:
        if main_thread and handler is not None:
            signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def _torch_flags_kept() -> Iterator[None]:
    """Restores torch's deterministic-algorithms mode, the cuBLAS workspace setting and cuDNN's
    autotuning flag afterwards: Lightning's ``deterministic=True`` sets all three for the whole
    process and leaves them so (the caller's later work would run torch's slower deterministic
    kernels, or lose the autotuning it had asked for)."""
    mode = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    autotune = torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = autotune
        torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


def _finish(out: Path, backbone: Backbone, info: dict[str, Any], seconds: float | None,
            stats: dict[str, float] | None, deaths: Tensor | None, lam: float) -> None:
    """Writes the finished run's backbone.pt, summary.json and, with the deaths, death_times.png."""
    backbone.save(out / "backbone.pt")
    if deaths is not None and len(deaths):
        from corel.topology.plots import death_time_histogram

        death_time_histogram(deaths.numpy(), backbone.eta, out / "death_times.png",
                             title=f"0-dim death times, last epoch (lambda={lam:g})")
    atomic_write_json(out / "summary.json", {**info, "fit_seconds": seconds, "final_epoch_deaths": stats,
                                             "backbone_fingerprint": backbone.fingerprint})


def train(
    images: np.ndarray,
    out_dir: str | os.PathLike,
    model_config: AutoencoderConfig = AutoencoderConfig(),
    config: TrainConfig = TrainConfig(),
    *,
    resume: bool = False,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
    strategy: str = "auto",
    h0_backend: str = "auto",
    compile_loss: bool = False,
    progress: bool = True,
    info: dict | None = None,
) -> Backbone:
    """Trains a backbone on uint8 ``images`` (N, *input_shape) into the run folder ``out_dir`` (see
    the module docstring) and returns it.

    ``resume=True`` continues the run in ``out_dir`` from its newest checkpoint, losing at most
    the unfinished epoch; it is refused when a setting (architecture, optimisation, data) differs
    from the stored one, and ``config.epochs`` may only grow.  A finished run with nothing left to
    do is left unchanged: its backbone is returned and the log (logger "corel") says so.
    ``info``: metadata about the data (e.g. its name), also part of the settings.  ``h0_backend``:
    the H0 engine of the connectivity loss (:func:`~corel.topology.h0.h0_persistence`); every
    engine gives the same results, so it is not a setting and a resume may change it.
    ``compile_loss``: the connectivity loss through ``torch.compile`` with CUDA graphs (for GPUs,
    where it saves most of the loss's time; tens of seconds of compilation first).  The same trees;
    the compiled sums may round differently and add gradients with atomics, so such a run is not
    reproducible bit for bit; a resume may change it.  Not with ``h0_backend="native"`` (refused:
    the compiled kernel cannot be traced).
    """
    check_backend(h0_backend)  # before any work: "triton" without a GPU would fail at the first step
    if compile_loss and h0_backend == "native":
        raise ValueError("compile_loss needs an H0 engine torch.compile can trace: 'auto', 'torch' or 'triton', "
                         "not 'native' (the compiled kernel runs outside the graph)")
    out = Path(out_dir)
    settings = run_settings(images, model_config, config, info)
    info = {**(info or {}), "train_images": int(len(images)), "model": model_config.to_dict(), "train": asdict(config),
            "settings": settings}
    newest = newest_checkpoint(out / "checkpoints")
    finished = (out / "backbone.pt").exists() or (out / "summary.json").exists()
    complete = (out / "summary.json").exists()  # _finish writes it last: a kill before it left backbone.pt alone
    if not resume and (newest is not None or finished):
        raise FileExistsError(f"{out} already holds a run; resume it (--resume) or choose another output folder")
    ckpt_path = None
    if newest is not None:
        ckpt_path, ckpt = newest
        stored = ckpt.get("corel", {}).get("settings")
        if stored is None:
            raise ValueError(f"checkpoint {ckpt_path} holds no run settings (written by another program or an older "
                             "corel); it cannot be resumed safely")
        changed = settings_differences(stored, settings)
        if changed:
            raise ValueError(f"{out} was started with other settings; resuming would mix two runs. "
                             f"Differences (stored -> now): {'; '.join(changed)}")
        done = ckpt["epoch"] + 1
        if done > config.epochs:
            raise ValueError(f"{out} has already trained {done} epochs, more than the {config.epochs} asked for")
        if done == config.epochs:
            if not complete:  # stopped between its last checkpoint and the last final file: write them
                backbone = backbone_from_checkpoint(ckpt_path, ckpt)
                backbone.info = {**info, "epochs_completed": done}
                _finish(out, backbone, backbone.info, ckpt["corel"].get("fit_seconds"),
                        ckpt["corel"].get("last_epoch_deaths"), None, config.lam)
            return _nothing_to_do(out, done)
    elif finished and resume:
        summary = _read_summary(out)
        stored = summary.get("settings")
        changed = settings_differences(stored, settings) if stored is not None else ["settings: not recorded"]
        if changed:
            raise ValueError(f"{out} holds a finished run with other settings: {'; '.join(changed)}")
        if summary.get("epochs_completed") == config.epochs:
            return _nothing_to_do(out, config.epochs)
        raise ValueError(f"{out} holds a finished run of {summary.get('epochs_completed')} epochs and no checkpoint "
                         f"to continue it to {config.epochs}; choose another output folder")

    L.seed_everything(config.seed, workers=True, verbose=False)
    module = ConnectivityAutoencoder(model_config.to_dict(), config.eta, config.lam, config.metric, config.lr,
                                     h0_backend, compile_loss)
    module.run_record = {"settings": settings}
    data = ImageDataModule(images, config.batch_size, config.seed)
    # a resumed run's seconds include its earlier sessions' (summary.json's fit_seconds counted the last one only)
    report = _RunReport(out / "checkpoints" / "last.ckpt", ckpt["corel"].get("fit_seconds", 0.0) if ckpt_path else 0.0)
    with quiet_lightning(), _torch_flags_kept(), _interruption_raised(report):
        trainer = L.Trainer(
            max_epochs=config.epochs,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            # a fresh logs/version_k per (re)start: the CSV logger would otherwise delete earlier rows
            logger=CSVLogger(out, name="logs"),
            callbacks=[report],
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=False,  # _RunReport writes the one checkpoint, atomically
            enable_progress_bar=progress,
            enable_model_summary=False,
            use_distributed_sampler=False,  # EpochShuffleSampler splits the data across devices itself
            log_every_n_steps=1,  # every value is logged per epoch; no step interval to wait for
            deterministic=accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()),
        )
        # the devices split every batch of the epoch's order among them: another count trains another run
        module.run_record["world_size"] = trainer.world_size
        stored_world = ckpt["corel"].get("world_size") if ckpt_path is not None else None
        if stored_world is not None and stored_world != trainer.world_size:
            raise ValueError(f"{out} was started on {stored_world} device(s) (devices x nodes), not "
                             f"{trainer.world_size}; resuming would mix two runs (each device trains on its own "
                             "share of every epoch's batches)")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    seconds = report.fit_seconds()
    backbone = Backbone(module.model.cpu().eval(), config.eta, config.metric,
                        {**info, "epochs_completed": trainer.current_epoch})
    if trainer.is_global_zero:
        deaths = module.last_epoch_deaths()
        _finish(out, backbone, backbone.info, seconds, death_statistics(deaths, config.eta) if len(deaths) else None,
                deaths, config.lam)
    return backbone


def _nothing_to_do(out: Path, epochs: int) -> Backbone:
    logging.getLogger("corel").info("%s holds a finished run of %d epochs: nothing to do", out, epochs)
    return Backbone.load(out / "backbone.pt")


def _read_summary(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{out} has a backbone but no readable summary.json ({e}); choose another output folder") from e


def backbone_from_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any] | None = None) -> Backbone:
    """The backbone inside a training checkpoint (e.g. checkpoints/last.ckpt of an unfinished run);
    ``ckpt``: its content, when already read."""
    path = Path(path)
    if ckpt is None:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        ckpt = load_checkpoint(path)
    try:
        hp = ckpt["hyper_parameters"]
        module = ConnectivityAutoencoder(**hp)
        module.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise ValueError(f"checkpoint {path} does not hold a corel autoencoder ({type(e).__name__}: {e})") from e
    info = {"checkpoint": str(path), "epochs_completed": ckpt["epoch"] + 1}
    return Backbone(module.model.eval(), hp["eta"], hp["metric"], info)
