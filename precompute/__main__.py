"""`python -m precompute`: fill a run store for the dashboard (resumable), or `inspect` one.

    python -m precompute                                  # the embedded demo -> runs/demo
    python -m precompute --preset efficientnet-lite0 --dataset ~/pictures
    python -m precompute --config configs/resnet50-imagenet.yaml --dataset /data/imagenet/val --device cuda
    python -m precompute inspect runs/demo [--json]

Errors are one line on stderr with a non-zero exit (``--debug`` shows the traceback). A killed run resumes
when the same command is run again.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sqlite3
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from precompute.config import (
    PRESETS,
    ConfigError,
    RunConfig,
    default_runs_dir,
    parse_ks,
    parse_neurons,
    resolve_config,
)
from pure_core.sources import DatasetError, check_dataset_path, dataset_config_from_string, open_source

EXIT_ERROR = 2
EXIT_BUG = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m precompute",
        description="Precompute PURE results (references, circuit attributions, crops, embeddings, scores) "
                    "into a run store for the dashboard. Without arguments: the embedded demo. "
                    "Also: `python -m precompute inspect DIR [--json]`, "
                    "`python -m precompute purify DIR --out FILE [--neurons 3,5 | --top N] [--k K]`.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="starting configuration (default demo)")
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML config (overrides the preset)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help='torchvision builder ("resnet50"), "timm:<name>", '
                                       '"efficientnet-lite0" or another registered model ("demo")')
    model.add_argument("--weights", help='torchvision weights enum name ("IMAGENET1K_V2", "DEFAULT") or '
                                         '"pretrained" (timm); "none" for random weights')
    model.add_argument("--checkpoint", help="local state-dict file to load into the model")
    model.add_argument("--layer", help="analysed layer L (module name, e.g. layer4)")
    model.add_argument("--lower-layer", help="layer whose channels make the circuits (e.g. layer3)")
    model.add_argument("--depth-layers", metavar="LAYERS",
                       help="also take each neuron's circuits at these deeper layers, e.g. layer2,layer1, to "
                            "chart where its circuit splits (stage 8; --chain sets them)")
    model.add_argument("--chain", metavar="LAYERS",
                       help="analyse a chain of layer pairs, top first, e.g. layer4,layer3,layer2: one store "
                            "per pair (layer4 <- layer3 at --out, layer3 <- layer2 at <out>-layer3, ...), "
                            "every channel of the lower pairs unless --neurons says otherwise, so the "
                            "dashboard links each circuit channel to its own page")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help='image folder (ImageFolder layout or any images), a .txt list of '
                                        'image paths, or a generated kind: "world" / "world:<n_images>"')
    data.add_argument("--n-images", type=int, help="world size, or use only the first n images of a folder")
    data.add_argument("--n-ref", type=int, help="reference images per neuron (default 100; demo 64)")
    data.add_argument("--neurons", help='"all", "0-63" or "1,5,9"')
    method = parser.add_argument_group("method")
    method.add_argument("--embedder", help='"efficientnet-lite0" or "open_clip:<model>/<tag or checkpoint>"')
    method.add_argument("--ks", help="cluster counts, e.g. 2..5 (default) or 2,3")
    method.add_argument("--crop-kernel", type=int, help="smoothing kernel of crops for embedding (default 5)")
    method.add_argument("--crop-threshold", type=float,
                        help="crop threshold for embedding (default 0.01; world presets 0.3)")
    method.add_argument("--crop-side", type=int,
                        help="embedding crops of this many pixels, centred on the relevant part "
                             "(default: the part's own box; world presets 24)")
    method.add_argument("--display-kernel", type=int,
                        help="smoothing kernel of display crops (default 51; world presets 15)")
    method.add_argument("--display-threshold", type=float, help="display crop threshold (default 0.01)")
    method.add_argument("--thumbnail-px", type=int, help="thumbnail side in pixels (default 128)")
    method.add_argument("--seed", type=int, help="seed of k-means (default 0)")
    labels = parser.add_argument_group("labels")
    labels.add_argument("--clip", metavar="SPEC",
                        help='open_clip model naming the crops zero-shot, '
                             '"open_clip:<model>/<tag or checkpoint>" (default open_clip:ViT-B-32/openai; '
                             'skipped without its weights), or "none"')
    labels.add_argument("--vocabulary", metavar="FILE",
                        help="names for the CLIP labels, one per line (default: ImageNet's classes, "
                             "textures, parts and colours)")
    run = parser.add_argument_group("run")
    run.add_argument("--device", choices=["cpu", "cuda", "auto"], help="default auto (cuda when available)")
    run.add_argument("--batch-size", type=int, help="images per forward pass (demo 256, others 32)")
    run.add_argument("--workers", type=int, help="image-loading processes (default: automatic)")
    run.add_argument("--out", help=f"store directory (default {default_runs_dir()}/<preset>, "
                                   "base from $PURE_RUNS_DIR)")
    run.add_argument("--checkpoint-every", type=int, default=None, metavar="BATCHES",
                     help="stage 1: save the scan state every this many batches (default ~2000 images)")
    run.add_argument("--chunk-neurons", type=int, default=16, help="neurons per saved chunk (default 16)")
    run.add_argument("--attribution-strategy", choices=["auto", "per_pair", "per_image"], default="auto",
                     help="stage 2: a forward per (image, neuron) pair, or per unique image with the VJPs "
                          "of all its neurons (default auto: per image when images are shared by >= 2 "
                          "neurons)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def chain_pairs(args: argparse.Namespace) -> list[argparse.Namespace]:
    """The runs of ``--chain L0,L1,...,Ln``: one per pair (L_i <- L_i+1), top first, each with the layers
    below its pair as depth layers (stage 8: where its neurons' circuits split). ``--neurons`` applies to
    every pair (default: the preset's for the top pair, every channel for the lower ones, so that every
    circuit channel has a page). The top pair is stored at ``--out``, each lower pair beside it
    (``<out>-<layer>``), or all under the runs directory by their run ids when no ``--out`` is given."""
    layers = [name.strip() for name in (args.chain or "").split(",") if name.strip()]
    if len(layers) < 2:
        raise ConfigError(f"--chain needs at least two layers, top first (e.g. layer4,layer3), got "
                          f"{args.chain!r}")
    if args.layer is not None or args.lower_layer is not None or args.depth_layers is not None:
        raise ConfigError("--chain names the layers itself: drop --layer, --lower-layer and --depth-layers")
    pairs = []
    for i, (upper, lower) in enumerate(zip(layers, layers[1:], strict=False)):
        pair = argparse.Namespace(**vars(args))
        pair.chain, pair.layer, pair.lower_layer = None, upper, lower
        pair.depth_layers = ",".join(layers[i + 2:]) or None  # where the circuit splits, down the chain
        if i > 0:
            pair.neurons = args.neurons or "all"
            pair.out = None if args.out is None else f"{str(args.out).rstrip('/')}-{upper}"
        pairs.append(pair)
    return pairs


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flag values as a nested config dict (only flags given)."""
    out: dict[str, Any] = {}
    model = {k: getattr(args, k) for k in ("weights", "checkpoint") if getattr(args, k) is not None}
    if args.model is not None:  # another model: the preset's weights/checkpoint do not carry over
        model = {"name": args.model, "weights": None, "checkpoint": None, **model}
    if str(model.get("weights", "")).lower() == "none":
        model["weights"] = None
    if model:
        out["model"] = model
    if args.dataset is not None:
        dataset = dataset_config_from_string(args.dataset)
        out["dataset"] = {"kind": dataset.kind, "path": dataset.path, "n_images": dataset.n_images}
    if args.n_images is not None:
        out.setdefault("dataset", {})["n_images"] = args.n_images
    crop_flags = {"embed_kernel": args.crop_kernel, "embed_threshold": args.crop_threshold,
                  "embed_side": args.crop_side,
                  "display_kernel": args.display_kernel, "display_threshold": args.display_threshold,
                  "thumbnail_px": args.thumbnail_px}
    crop = {key: value for key, value in crop_flags.items() if value is not None}
    if crop:
        out["crop"] = crop
    for key in ("layer", "lower_layer", "n_ref", "neurons", "embedder", "seed", "device", "batch_size",
                "workers", "out", "preset"):
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    if args.ks is not None:
        out["ks"] = parse_ks(args.ks)
    if args.depth_layers is not None:
        out["depth_layers"] = [name.strip() for name in args.depth_layers.split(",") if name.strip()]
    clip = {key: value for key, value in (("model", args.clip), ("vocabulary", args.vocabulary))
            if value is not None}
    if clip:
        out["clip"] = clip
    return out


IDENTITY_FLAGS = ("model", "weights", "checkpoint", "layer", "lower_layer", "dataset", "n_images", "n_ref",
                  "neurons", "embedder", "ks", "crop_kernel", "crop_threshold", "crop_side", "display_kernel",
                  "display_threshold", "thumbnail_px", "seed", "clip", "vocabulary", "depth_layers")


def library_versions() -> dict[str, str]:
    import platform

    from store import SCHEMA_VERSION

    versions = {"python": platform.python_version(), "store_schema": str(SCHEMA_VERSION)}
    for dist in ("pure-explorer", "torch", "torchvision", "timm", "open_clip_torch", "numpy", "scipy",
                 "scikit-learn", "umap-learn", "numba", "pillow", "diskcache"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    device = torch.device(name)
    if device.type == "cuda":  # a resumed run must compute the very floats an uninterrupted one would
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device


def _layer_shapes(model, preprocess, layer: str, lower_layer: str, device) -> tuple[int, int]:
    """(C_L, C_lower) from one dummy forward; checks that `lower_layer` runs before `layer`."""
    import torch

    from pure_core.models import get_layer

    order: list[str] = []
    channels: dict[str, int] = {}

    def hook_for(name):
        def hook(_module, _inputs, output):
            output = output[0] if isinstance(output, (tuple, list)) else output
            order.append(name)
            channels[name] = int(output.shape[1]) if output.dim() >= 2 else 0
            if output.dim() != 4:
                raise ConfigError(f"layer {name!r} gives a {output.dim()}-D output; PURE needs a "
                                  "convolutional (B, C, H, W) layer")
        return hook

    modules = {"layer": get_layer(model, layer), "lower_layer": get_layer(model, lower_layer)}
    handles = [modules[key].register_forward_hook(hook_for(key)) for key in modules]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, preprocess.size, preprocess.size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    if "layer" not in order or "lower_layer" not in order:
        raise ConfigError(f"layer {layer!r} or {lower_layer!r} is not used in the model's forward pass")
    if order.index("lower_layer") > order.index("layer"):
        raise ConfigError(f"--lower-layer {lower_layer!r} runs after --layer {layer!r}; the circuits' layer "
                          "must be below the analysed one")
    return channels["layer"], channels["lower_layer"]


def _default_layers(config: RunConfig, loaded) -> None:
    """Fill ``layer`` / ``lower_layer`` from the built model's `default_layers`, or say which to choose."""
    if loaded.default_layers is not None:
        layer, lower_layer = loaded.default_layers
        config.layer = config.layer or layer
        config.lower_layer = config.lower_layer or lower_layer
    if not config.layer or not config.lower_layer:
        from pure_core.models import layer_names

        names = [name for name in layer_names(loaded.model) if name.count(".") <= 1][:40]
        missing = "--layer" if not config.layer else "--lower-layer"
        raise ConfigError(f"{missing} is required for model {config.model.name!r}; its layers include: "
                          f"{', '.join(names)}")


def _check_embedder_weights(spec: str) -> None:
    """Fail fast when an open_clip embedder's weights are not on disk (before any data is read)."""
    from pure_core import embed

    if spec.startswith(embed.OPEN_CLIP_PREFIX):
        model_name, pretrained, _ = embed.parse_open_clip_spec(spec)
        if pretrained is not None:
            embed.resolve_open_clip_weights(model_name, pretrained)
    elif spec not in embed.EMBEDDER_SPECS:
        raise ConfigError(f"unknown embedder {spec!r}; options: {', '.join(embed.EMBEDDER_SPECS)}")


def _clip_vocabulary_fingerprint(config: RunConfig) -> str | None:
    """Check the CLIP labels' settings before any data is read (an unknown model or tag, an unreadable
    vocabulary file fail here; missing weights only skip the stage) and return the vocabulary's fingerprint
    (None without a CLIP model)."""
    if config.clip.model is None:
        return None
    from precompute.stages.clip_labels import vocabulary
    from pure_core.clip_labels import check_clip_weights
    from pure_core.models import MissingWeightsError
    from pure_core.vocabulary import VocabularyError, vocabulary_fingerprint

    try:
        check_clip_weights(config.clip.model)
    except MissingWeightsError:
        pass  # stage 6 says so in one line and the run goes on
    except ValueError as error:
        raise ConfigError(f"clip: {error}") from None
    try:
        return vocabulary_fingerprint(vocabulary(config))
    except VocabularyError as error:
        raise ConfigError(str(error)) from None


def _default_workers(config: RunConfig, source) -> int:
    if config.workers is not None:
        return max(0, int(config.workers))
    if not source.parallel_loading:
        return 0
    return min(8, max(0, (os.cpu_count() or 1) - 1))


def _embedder_needed(out: Path, run_id: str) -> bool:
    from store import RunStore, StoreError

    if not (out / "cache.db").is_file():
        return True
    try:
        with RunStore.open(out) as existing:
            return not (existing.run_id == run_id and existing.is_stage_done("embeddings"))
    except StoreError:
        return True


def run(args: argparse.Namespace, log=print) -> Path:
    """Resolve the config, check everything that can fail early, then run the missing stages."""
    t_start = time.perf_counter()
    config = resolve_config(args.preset, args.config, _overrides(args))
    import numpy as np
    import torch

    from precompute.distributed import init_group
    from precompute.job import Job
    from precompute.stages import pending_stages, run_stages
    from pure_core.models import ModelSpec, build_model, model_fingerprint
    from store import RunStore, StoreMismatchError, run_id_for

    torch.manual_seed(config.seed)  # seeds random initialisations (e.g. --weights none)
    np.random.seed(config.seed)
    device = _resolve_device(config.device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: a GPU per process
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    group = init_group(device)
    if not group.is_main:  # rank 0 speaks for the job
        log = _silent
    check_dataset_path(config.dataset)  # cheap checks first: nothing below reads data
    loaded = build_model(ModelSpec(config.model.name, config.model.weights, config.model.checkpoint),
                         device=str(device))  # missing weights fail here, in well under a second
    _check_embedder_weights(config.embedder)
    vocabulary_hash = _clip_vocabulary_fingerprint(config)
    model = loaded.model.eval().to(device)
    _default_layers(config, loaded)
    c_layer, c_lower = _layer_shapes(model, loaded.preprocess, config.layer, config.lower_layer, device)
    neurons = parse_neurons(config.neurons, c_layer)
    source = open_source(config.dataset)  # lists the files (an empty folder fails here); reads no image
    fingerprints = {"model": model_fingerprint(model), "dataset": source.fingerprint()}
    if vocabulary_hash is not None:
        fingerprints["clip_vocabulary"] = vocabulary_hash
    identity = config.identity(neurons, fingerprints)
    run_id = run_id_for(identity)
    customized = bool(args.config) or any(getattr(args, flag) is not None for flag in IDENTITY_FLAGS)
    out = Path(config.out) if config.out else default_runs_dir() / (
        f"{config.preset}-{run_id[:8]}" if customized else config.preset)
    args.resolved_out = out  # for error messages

    from pure_core.embed import make_embedder

    embed_batch = 32  # fixed, not --batch-size: a resumed run must embed with the same batches
    embedder = make_embedder(config.embedder, device=str(device), batch_size=embed_batch) \
        if _embedder_needed(out, run_id) else None
    store_config = config.store_config(neurons, len(source))
    store_config["channels"] = {"layer": c_layer, "lower_layer": c_lower}
    if embedder is not None:
        store_config["embedder_name"] = embedder.name
    fresh = not (out / "cache.db").exists()
    if not group.is_main:
        group.barrier()  # rank 0 creates the store (or checks it holds this run) first
    try:
        store = RunStore.create(out, identity, store_config, library_versions())
    except StoreMismatchError as error:
        raise StoreMismatchError(f"{error}{_identity_difference(out, identity)}") from error
    if group.is_main:
        group.barrier()
    try:
        if not pending_stages(store, config):
            log(f"precompute: {out} already holds this run, complete (run {store.run_id})")
            if group.is_main:
                _finalize(store, out, log)
            log(_dashboard_hint(out))
            return out
        checkpoint_every = args.checkpoint_every or max(1, round(2048 / config.batch_size))
        job = Job(config=config, store=store, model=model, preprocess=loaded.preprocess, source=source,
                  neurons=neurons, device=device, categories=loaded.categories,
                  embedder_factory=(lambda: embedder) if embedder is not None else
                  (lambda: make_embedder(config.embedder, device=str(device), batch_size=embed_batch)),
                  progress=not args.no_progress and "PURE_NO_PROGRESS" not in os.environ,
                  checkpoint_every=max(1, checkpoint_every), chunk_neurons=max(1, args.chunk_neurons),
                  image_chunk=max(8, config.batch_size), workers=_default_workers(config, source), log=log,
                  attribution_strategy=args.attribution_strategy, group=group)
        setup_s = time.perf_counter() - t_start
        try:
            run_stages(job)
        except DatasetError:
            if fresh and group.is_main and not any(store.stages_done().values()):  # e.g. every image
                store.close()                                   # unreadable: keep no half-started store
                shutil.rmtree(out, ignore_errors=True)
            raise
        if not group.is_main:
            store.close()
        group.barrier()  # the other ranks have let go of the store
        if group.is_main:
            _finalize(store, out, log)
            _report(store, out, setup_s, time.perf_counter() - t_start, log)
    finally:
        store.close()
        if group.world > 1:
            torch.distributed.destroy_process_group()
    return out


def _finalize(store, out: Path, log) -> None:
    """The store made one self-contained file (`RunStore.finalize`), or a note why not."""
    if not store.finalize():
        log(f"precompute: note: another process (a dashboard?) keeps {out} open, so it stays in SQLite's WAL "
            "mode: complete and readable here, but not yet one file for a read-only mount; run the same "
            "command again once that process is gone")


def _silent(_message: str) -> None:
    """The log of ranks other than 0."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}`` for nested dicts (lists stay leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _identity_difference(out: Path, identity: dict[str, Any]) -> str:
    """``"; settings that differ: n_ref (64 -> 9), ..."``: the run stored at ``out`` against ``identity``."""
    from store import RunStore, StoreError

    try:
        with RunStore.open(out) as existing:
            stored = existing.meta.get("identity") or {}
    except StoreError:
        return ""
    old, new = _flatten(stored), _flatten(identity)
    changed = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    if not changed:
        return ""

    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."

    names = [f"{key.removeprefix('config.')} ({short(old.get(key))} -> {short(new.get(key))})"
             for key in changed[:6]]
    more = f", and {len(changed) - 6} more" if len(changed) > 6 else ""
    return f"; settings that differ: {', '.join(names)}{more}"


def _dashboard_hint(out: Path) -> str:
    """The command that opens the dashboard on the runs folder holding ``out``, and its address."""
    root = out.parent
    flag = "" if root.resolve() == default_runs_dir().resolve() else f" -- --runs-dir {root}"
    return f"  dashboard: streamlit run app/main.py{flag}  (then open http://localhost:8501)"


def _report(store, out: Path, setup_s: float, total_s: float, log) -> None:
    from precompute.job import format_seconds

    seconds = store.stage_seconds()
    from store.schema import Summary

    summary = store.read(Summary).rows
    config = store.config
    log(f"precompute: wrote {out} (run {store.run_id}): {len(summary)} neurons of {config['layer']} x "
        f"{config['n_ref']} references, circuits in {config['lower_layer']}")
    log("  time: setup " + format_seconds(setup_s) + " | "
        + " | ".join(f"{name} {format_seconds(s)}" for name, s in seconds.items())
        + f" | total {format_seconds(total_s)}")
    top = sorted(summary, key=lambda r: r.polysemanticity, reverse=True)[:5]
    if top:
        log("  most polysemantic: " + ", ".join(f"#{r.neuron} ({r.polysemanticity:.3f})" for r in top))
    log(f"  inspect: python -m precompute inspect {out}")
    log(_dashboard_hint(out))


def _one_line(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _is_disk_full(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _user_error_types() -> tuple[type[BaseException], ...]:
    from precompute.job import PrecomputeError
    from store import StoreError

    types: list[type[BaseException]] = [ConfigError, DatasetError, StoreError, PrecomputeError,
                                        FileNotFoundError, ValueError]
    try:
        from pure_core.models import MissingWeightsError, UnknownLayerError

        types += [MissingWeightsError, UnknownLayerError]
    except ImportError:
        pass
    try:
        from pure_core import embed

        types += [t for t in (getattr(embed, name, None) for name in ("MissingWeightsError", "EmbedderError"))
                  if isinstance(t, type)]
    except ImportError:
        pass
    return tuple(types)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "inspect":
        from precompute.inspect import main as inspect_main

        return inspect_main(argv[1:])
    if argv and argv[0] == "purify":
        from precompute.purify import main as purify_main

        return purify_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.chain:
            pairs = chain_pairs(args)
            for i, pair in enumerate(pairs, start=1):
                print(f"chain {i}/{len(pairs)}: {pair.layer} <- circuits in {pair.lower_layer}")
                run(pair)
        else:
            run(args)
        return 0
    except KeyboardInterrupt:
        print("precompute: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        out = getattr(args, "resolved_out", None) or args.out or "the store"
        if _is_disk_full(error):
            print(f"precompute: error: no space left on the device while writing {out} ({_one_line(error)}); "
                  "free some space and run the same command again: it resumes where it stopped",
                  file=sys.stderr)
            return EXIT_ERROR
        if isinstance(error, _user_error_types()):
            print(f"precompute: error: {_one_line(error)}", file=sys.stderr)
            return EXIT_ERROR
        print(f"precompute: error: {type(error).__name__}: {_one_line(error)} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
