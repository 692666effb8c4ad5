"""Helpers of ``scripts/gpu_check.sh``: synthetic CIFAR-shaped batch files, and one timed epoch of the CIFAR
ResNet-18 layerwise experiment (docs/experiments.md E2, paper scale) with its memory, plus the GPU-hour estimates of the
paper-scale sweeps derived from the measured times.

    python scripts/gpu_check.py write-cifar DIR [--train 50000] [--test 10000] [--seed 0]
    python scripts/gpu_check.py cifar-epoch --data-dir DIR --device cuda [--width 64] [--out epoch.json]
    python scripts/gpu_check.py estimate --epoch epoch.json --e1 DIR/e1.jsonl [--out estimates.json]

The synthetic data are uniformly random pixels and labels: the epoch's time and memory are those of real CIFAR
(same shapes, same batch size), its accuracy is meaningless (chance).
"""
from __future__ import annotations

import json
import pickle
import resource
import sys
import time
from pathlib import Path

import numpy as np

from theory.atomic import atomic_write_text
from theory.cli import ArgumentParser, dumps, run_main
from theory.validation import check_positive_int


def write_cifar(directory, train: int, test: int, seed: int) -> list[str]:
    """CIFAR-10 python batch files (data_batch_1..5, test_batch) of uniformly random uint8 pixels and labels."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [train // 5 + (1 if i < train % 5 else 0) for i in range(5)]
    written = []
    for name, n in [(f"data_batch_{i + 1}", sizes[i]) for i in range(5)] + [("test_batch", test)]:
        batch = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, size=n)], "batch_label": "synthetic"}
        with open(directory / name, "wb") as fh:  # the standard CIFAR format is a pickle; we only write it
            pickle.dump(batch, fh, protocol=2)
        written.append(str(directory / name))
    return written


def cifar_epoch(data_dir, device_name: str, width: int, scheme: str = "balanced", density: float = 0.1) -> dict:
    """One epoch of the paper-scale layerwise config (ResNet-18, ``scheme`` at ``density``, seed 0) on
    ``data_dir``: wall seconds, images per second, peak memory (CUDA allocator, or the process's max RSS)."""
    import torch

    from experiments.infra.device import describe_device, resolve_device
    from experiments.e2_layerwise import EXPERIMENT

    device = resolve_device(device_name)
    (config,) = [c for c in EXPERIMENT.configs("paper", 1, data_dir=str(data_dir))
                 if c["scheme"] == scheme and c["density"] == density]
    paper_epochs = config["train"]["epochs"]
    config = dict(config, architecture=dict(config["architecture"], width=width),
                  train=dict(config["train"], epochs=1))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    metrics = EXPERIMENT.run(config, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    from experiments.infra.data import cifar_task

    n_train = len(cifar_task(data_dir).y_train)
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"device": describe_device(device), "data_dir": str(data_dir), "width": width, "scheme": scheme, "density": density,
            "train_images": n_train, "epoch_seconds_incl_eval": round(seconds, 3),
            "images_per_second": round(n_train / seconds, 1), "peak_memory_bytes": int(memory),
            "memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process max RSS",
            "paper_epochs": paper_epochs, "test_accuracy_on_random_labels": metrics["test_accuracy"]}


def estimate(epoch: dict, e1_records: list[dict]) -> dict:
    """GPU-hours of the paper-scale sweeps from the measured epoch and E1 runs (linear in epochs and images;
    E1: mean measured run time × the number of paper-scale runs)."""
    from experiments.e1_three_layer import EXPERIMENT as E1
    from experiments.e2_layerwise import EXPERIMENT as E2
    from experiments.e3_imp import EXPERIMENT as E3
    from experiments.e4_edgepopup import EXPERIMENT as E4

    scale = 50000 / epoch["train_images"] * (64 / epoch["width"]) ** 2  # full CIFAR-10, full width (≈ FLOPs)
    per_epoch = epoch["epoch_seconds_incl_eval"] * scale
    out = {"epoch_seconds_full_cifar10_width64": round(per_epoch, 2),
           "assumption": "every CIFAR epoch costs the measured one (scaled to 50000 images and width 64); "
                         "batch 128 (edge-popup) and IMP's sparser levels are counted as full-cost epochs"}
    hours = {}
    for name, exp in (("layerwise", E2), ("imp", E3), ("edgepopup", E4)):
        configs = exp.configs("paper", None, data_dir=epoch["data_dir"])
        epochs = sum(c["train"]["epochs"] * c.get("levels", 0) + c.get("final_epochs", c["train"]["epochs"])
                     for c in configs)
        hours[name] = {"runs": len(configs), "epochs": epochs, "gpu_hours": round(epochs * per_epoch / 3600, 1)}
    if e1_records:
        mean = float(np.mean([r["wall_seconds"] for r in e1_records]))
        runs = len(E1.configs("paper"))
        hours["e1"] = {"runs": runs, "measured_runs": len(e1_records), "mean_run_seconds": round(mean, 2),
                       "gpu_hours": round(runs * mean / 3600, 2)}
    out["experiments"] = hours
    return out


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write-cifar", help="write synthetic CIFAR-10 batch files")
    w.add_argument("directory")
    w.add_argument("--train", type=int, default=50000)
    w.add_argument("--test", type=int, default=10000)
    w.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("cifar-epoch", help="time one epoch of the paper-scale layerwise ResNet-18")
    e.add_argument("--data-dir", required=True)
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    e.add_argument("--width", type=int, default=64, help="ResNet-18 base width (paper: 64)")
    e.add_argument("--out", default=None)
    s = sub.add_parser("estimate", help="GPU-hours of the paper-scale sweeps from measured times")
    s.add_argument("--epoch", required=True, help="JSON written by cifar-epoch")
    s.add_argument("--e1", default=None, help="results file of the measured E1 runs")
    s.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.command == "write-cifar":
        paths = write_cifar(args.directory, check_positive_int(args.train, "train"),
                            check_positive_int(args.test, "test"), args.seed)
        print(f"wrote {len(paths)} synthetic CIFAR-10 batch files to {args.directory}")
        return 0
    if args.command == "cifar-epoch":
        result = cifar_epoch(args.data_dir, args.device, check_positive_int(args.width, "width"))
    else:
        epoch = json.loads(Path(args.epoch).read_text())
        records = [json.loads(line) for line in Path(args.e1).read_text().splitlines() if line.strip()] \
            if args.e1 and Path(args.e1).exists() else []
        result = estimate(epoch, records)
    text = dumps(result)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
