"""The demo model: a small ResNet-style CNN trained on the synthetic world, cached as a checkpoint.

``python -m synthetic`` trains it (a few minutes on 2 CPU cores, about 98 % test accuracy) and prints time
and accuracy; `load_demo_model` loads it, training first when the checkpoint is missing or outdated. The
checkpoint lives at ``$PURE_CACHE_DIR/demo_model.pt`` (default ``~/.cache/pure-explorer``).

What makes its channels planted and PURE-separable (measured with ``benchmarks/bench_ground_truth.py``):

- `DEMO_LAYER` (``block4``) has one *planted* channel per class (channels ``0 .. n_classes - 1``) and
  `n_free` more. `ClassScores` reads planted channel c one-to-one into logit c (a weight times its global
  max), so channel c is class c's detector and a union class puts its two concepts into one channel; the
  free channels reach every logit through an ordinary linear layer on their spatial mean. The layer is
  wider than the number of classes, so the activation baseline (a reference's vector over all channels)
  is not starved by construction.
- Global *max* pooling of the planted channels, an L1 penalty on their maps (``sparsity``) and label
  smoothing: the channels fire on the object and stay near zero elsewhere, and both concepts of a union
  reach similar top activations, so the top references mix them.
- `DEMO_LOWER_LAYER` (``block3``): the two shapes of a union share their fill, so the circuits at the
  stem and ``block1`` (small receptive fields that see a patch of the fill) mix them; they part deeper.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pure_core.models import Preprocessing
from pure_core.paths import cache_dir
from synthetic.world import CLASSES, SyntheticWorld

DEMO_LAYER = "block4"
DEMO_LOWER_LAYER = "block3"
DEMO_SIZE_PX = 64
DEMO_FREE_CHANNELS = 32
# Per-channel pixel mean/std of the world in [0, 1] (`synthetic.world.world_mean_std()`, rounded).
DEMO_MEAN = (0.442, 0.438, 0.432)
DEMO_STD = (0.195, 0.187, 0.200)
# Bump when the world or the net changes so that cached checkpoints are retrained, never silently reused.
DEMO_VERSION = 3

# One world seed per split: independent random streams for training, held-out test and references.
SPLIT_SEEDS = {"train": 0, "test": 1, "reference": 2}
SPLIT_SIZES = {"train": 20_000, "test": 2_000, "reference": 3_000}

TRAIN_DEFAULTS = {"epochs": 8, "batch_size": 128, "lr": 4e-3, "weight_decay": 5e-4, "sparsity": 0.5,
                  "label_smoothing": 0.1}


# -- the network -------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (projected) shortcut, then ReLU.

    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ClassScores(nn.Module):
    """Logits from the last block's maps (B, n_classes + n_free, H, W) -> (B, n_classes).

    Planted channel c feeds logit c alone: ``weight_c * max(maps_c) + bias_c`` (a diagonal layer on the
    global max), so it stays class c's detector and a union class plants its two concepts in it. The free
    channels feed every logit through a linear layer on their spatial mean.
    """

    def __init__(self, n_classes: int, n_free: int):
        super().__init__()
        self.n_classes, self.n_free = n_classes, n_free
        self.weight = nn.Parameter(torch.ones(n_classes))
        self.bias = nn.Parameter(torch.zeros(n_classes))
        self.free = nn.Linear(n_free, n_classes) if n_free else None

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        logits = maps[:, :self.n_classes].amax(dim=(2, 3)) * self.weight + self.bias
        if self.free is not None:
            logits = logits + self.free(maps[:, self.n_classes:].mean(dim=(2, 3)))
        return logits


class DemoNet(nn.Module):
    """stem -> block1..block4 -> fc on (B, 3, 64, 64) inputs; `block4` has `n_classes + n_free` channels.

    Widths (stem, block1, block2, block3) = `widths`; spatial sizes at 64 px: stem 32, block1 16, block2 8,
    block3 8, block4 8. Channels ``0 .. n_classes - 1`` of block4 are the planted class detectors (`fc` is
    `ClassScores`).
    """

    def __init__(self, n_classes: int = len(CLASSES), n_free: int = DEMO_FREE_CHANNELS,
                 widths: tuple[int, int, int, int] = (16, 32, 64, 64)):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.n_classes, self.n_free = n_classes, n_free
        self.widths = tuple(widths)
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU())
        self.block1 = BasicBlock(w0, w1, stride=2)
        self.block2 = BasicBlock(w1, w2, stride=2)
        self.block3 = BasicBlock(w2, w3, stride=1)
        self.block4 = BasicBlock(w3, n_classes + n_free, stride=1)
        self.fc = ClassScores(n_classes, n_free)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> block4 maps (B, n_classes + n_free, H/8, W/8)."""
        return self.block4(self.block3(self.block2(self.block1(self.stem(x)))))

    def head(self, maps: torch.Tensor) -> torch.Tensor:
        """block4 maps -> logits (B, n_classes)."""
        return self.fc(maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# -- data ----------------------------------------------------------------------------------------------
# The demo net's preprocessing: 64 px in, 64 px out, the world's mean/std.
DEMO_PREPROCESSING = Preprocessing(size=DEMO_SIZE_PX, resize=DEMO_SIZE_PX, mean=DEMO_MEAN, std=DEMO_STD,
                                   interpolation="bilinear")


def demo_dataset(split: str = "reference", n_images: int | None = None, transform=None,
                 cache: bool = False) -> SyntheticWorld:
    """The world split the demo uses (`SPLIT_SEEDS`): "train", "test" or "reference" (default sizes
    `SPLIT_SIZES`)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_SEEDS)}")
    n = SPLIT_SIZES[split] if n_images is None else n_images
    return SyntheticWorld(n, seed=SPLIT_SEEDS[split], size_px=DEMO_SIZE_PX, transform=transform, cache=cache)


def world_tensor(world: SyntheticWorld, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of `world` as (n, 3, H, W) uint8 and labels (n,) int64 (normalise with `normalize`)."""
    arrays = world.arrays(progress=progress)
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(world.labels())
    return images, labels


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float normalised like `DEMO_PREPROCESSING.to_tensor`."""
    return DEMO_PREPROCESSING.normalize(images_uint8.float() / 255.0)


def batches(images_uint8: torch.Tensor, batch_size: int = 256):
    """Consecutive normalised (B, 3, H, W) batches (what `collect_references` expects)."""
    for start in range(0, len(images_uint8), batch_size):
        yield normalize(images_uint8[start:start + batch_size])


# -- training ----------------------------------------------------------------------------------------
def default_checkpoint_path() -> Path:
    return cache_dir() / "demo_model.pt"


@torch.no_grad()
def accuracy(model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 500) -> float:
    """Label accuracy of `model` on (n, 3, H, W) uint8 images."""
    was_training = model.training
    model.eval()
    correct = 0
    for start, x in zip(range(0, len(labels), batch_size), batches(images_uint8, batch_size), strict=True):
        correct += int((model(x).argmax(1) == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(labels))


def train_demo_model(path: str | os.PathLike | None = None, seed: int = 0, n_train: int | None = None,
                     epochs: int | None = None, n_test: int | None = None, progress: bool = True,
                     log: Callable[[str], None] | None = print, **train_overrides: Any) -> Path:
    """Train `DemoNet` on the world's train split and save a checkpoint at `path`; returns the path.

    Deterministic for `seed` (weights, data order); the checkpoint holds ``state_dict`` and ``meta``
    (seed, accuracy, world params, train time, version).
    """
    path = Path(path) if path is not None else default_checkpoint_path()
    unknown = set(train_overrides) - set(TRAIN_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown training options {sorted(unknown)}; known: {sorted(TRAIN_DEFAULTS)}")
    cfg = {**TRAIN_DEFAULTS, **train_overrides}
    if epochs is not None:
        cfg["epochs"] = epochs
    log = log or (lambda _msg: None)
    t0 = time.perf_counter()
    train_world = demo_dataset("train", n_train)
    test_world = demo_dataset("test", n_test)
    x_train, y_train = world_tensor(train_world, progress=progress)
    x_test, y_test = world_tensor(test_world)
    data_s = time.perf_counter() - t0
    log(f"drew {len(y_train)} train + {len(y_test)} test images in {data_s:.1f} s")

    torch.manual_seed(seed)
    model = DemoNet(n_classes=train_world.n_classes)
    order_rng = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(y_train) // cfg["batch_size"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], pct_start=0.25,
                                                total_steps=cfg["epochs"] * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg["epochs"] * steps_per_epoch, desc="training demo net", unit="step")
    model.train()
    for epoch in range(cfg["epochs"]):
        perm = torch.randperm(len(y_train), generator=order_rng)
        for step in range(steps_per_epoch):
            idx = perm[step * cfg["batch_size"]:(step + 1) * cfg["batch_size"]]
            maps = model.features(normalize(x_train[idx]))
            # L1 on the planted maps keeps the class channels silent off the object (sparse, local circuits)
            sparsity = maps[:, :model.n_classes].mean()
            loss = loss_fn(model.head(maps), y_train[idx]) + cfg["sparsity"] * sparsity
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    train_s = time.perf_counter() - t0
    test_acc = accuracy(model, x_test, y_test)
    log(f"trained in {train_s:.1f} s; test accuracy {test_acc:.2%} on {len(y_test)} held-out images")
    meta = {
        "version": DEMO_VERSION,
        "seed": seed,
        "accuracy": test_acc,
        "train_time_s": train_s,
        "train": {**cfg, "n_train": len(y_train)},
        "world": {"train": train_world.params, "test": test_world.params,
                  "classes": [list(c.concepts) for c in train_world.classes]},
        "arch": {"n_classes": model.n_classes, "n_free": model.n_free, "widths": list(model.widths)},
        "layer": DEMO_LAYER,
        "lower_layer": DEMO_LOWER_LAYER,
        "mean": DEMO_MEAN,
        "std": DEMO_STD,
        "torch": str(torch.__version__),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint ``{"state_dict", "meta"}``."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def _is_current(path: Path) -> bool:
    try:
        return read_checkpoint(path)["meta"].get("version") == DEMO_VERSION
    except Exception:  # unreadable or foreign file: retrain
        return False


def _arch_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    return {"n_classes": arch["n_classes"], "n_free": arch["n_free"], "widths": tuple(arch["widths"])}


def load_demo_model(path: str | os.PathLike | None = None, train_if_missing: bool = True,
                    progress: bool = True) -> DemoNet:
    """The trained demo net in eval mode, from `path` (default `default_checkpoint_path()`).

    When the file is missing (or from an older `DEMO_VERSION`) it is trained first if `train_if_missing`,
    else `FileNotFoundError` says how to make it. ``model.demo_meta`` holds the checkpoint's metadata.
    """
    path = Path(path) if path is not None else default_checkpoint_path()
    if not path.exists() or not _is_current(path):
        if not train_if_missing:
            where = "" if path == default_checkpoint_path() else f" --path {path}"
            raise FileNotFoundError(f"demo model checkpoint {path} is missing or outdated; "
                                    f"train it with `python -m synthetic{where}`")
        train_demo_model(path, progress=progress, log=print if progress else None)
    ckpt = read_checkpoint(path)
    meta = ckpt["meta"]
    model = DemoNet(**_arch_kwargs(meta["arch"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    model.demo_meta = meta
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synthetic",
                                     description="Train the synthetic world's demo net (CPU, a few minutes).")
    parser.add_argument("--path", default=None, help=f"checkpoint path (default {default_checkpoint_path()})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="override TRAIN_DEFAULTS, e.g. sparsity=0.1")
    args = parser.parse_args(argv)
    overrides = {k: type(TRAIN_DEFAULTS[k])(v) for k, v in (kv.split("=") for kv in args.set)}
    path = train_demo_model(args.path, seed=args.seed, n_train=args.n_train, epochs=args.epochs,
                            progress=not args.no_progress, **overrides)
    meta = read_checkpoint(path)["meta"]
    print(f"saved {path}: accuracy {meta['accuracy']:.2%}, train time {meta['train_time_s']:.1f} s")

