"""Recipe changes for the upload model, explored in minutes on a GPU: `robust_long`'s recipe re-written in
PyTorch, many trainings at once, scored on validation here. Not the product (the pipeline trains with
Keras on the CPU, and PyTorch is not in requirements.txt): a way to tell which recipe is worth the CPU
hours before spending them. Three steps, on two machines:

    python benchmarks/torch_recipes.py pack .gpu/data.npz     # here (~5 min): training data, validation uploads
    python3 benchmarks/torch_recipes.py run .gpu/data.npz benchmarks/recipes/round2.txt --out $OUT --deadline 240
                                                              # on the GPU machine, .gpu/ carried there
    python benchmarks/torch_recipes.py score probs.npz ...    # here: the validation table

`pack` also writes the recipe itself (conf/model/robust_long.yaml unless --recipe), which the GPU side
reads. A recipes file (benchmarks/recipes/) has one training per line: a name ending in _s<seed>, and a
JSON object of the seed and changes to the recipe in dotted keys, e.g. `wide12_s1 {"seed": 1,
"train.epochs": 12, "architecture.stages": [[64, 64], [128, 128], [256]]}`; '#' starts a comment line.
`score` prints, per recipe, the mean over its seeds alone and over every pair of seeds averaged (a
two-model ensemble): MNIST validation errors, upload-like validation digits misread, rejected and read
right at the model's own threshold (params.yaml's max_val_rejection quantile, the evaluate stage's rule;
benchmarks/upload_count.py: measure), the pen rows, and held-out non-digits rejected. The test split
plays no part. The PyTorch port gives the same probabilities as the harness that made
docs/robustness.md's table (checked on the CPU); it is not the Keras pipeline, whose own numbers differ.
"""
import argparse
import copy
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- here: what the GPU machine needs, in one file -----------------------------------------------------------

def pack(path, n=2000, seed=1, recipe="robust_long"):
    """The recipe (conf/model/<recipe>.yaml, composed), the pipeline's own training data (MNIST, digits
    drawn as uploads, generated non-digits) and n upload-like validation digits per hard condition
    (benchmarks/rejection_threshold.py), all uint8."""
    from benchmarks.rejection_threshold import upload_like
    from pipeline.params import model_config

    train, val = np.load(ROOT / "data/prepared/train.npz"), np.load(ROOT / "data/prepared/val.npz")
    up_x, up_y, up_c = upload_like(n, seed, val["x"], val["y"])
    np.savez_compressed(
        path, train_x=train["x"], train_y=train["y"],
        up_x=np.load(ROOT / "data/drawn/uploads/train.npy"), up_y=np.load(ROOT / "data/drawn/uploads/train_labels.npy"),
        neg_x=np.load(ROOT / "data/drawn/negatives/train.npy"), val_x=val["x"], val_y=val["y"],
        vneg_x=np.load(ROOT / "data/drawn/negatives/val.npy"),
        vup_x=(up_x * 255).round().astype(np.uint8), vup_y=up_y, vup_c=up_c, recipe=json.dumps(model_config(recipe)))


def with_changes(recipe, changes):
    """The recipe with dotted-key changes applied, e.g. {"train.epochs": 12}; an unknown key is an error."""
    recipe = copy.deepcopy(recipe)
    for key, value in changes.items():
        *path, last = key.split(".")
        node = recipe
        for name in path:
            node = node[name]
        if last not in node:
            raise KeyError(f"{key!r} is not a setting of the recipe")
        node[last] = value
    arch, train = recipe["architecture"], recipe["train"]
    ported = {"kind": "cnn", "kernel": 3, "padding": "same", "batch_norm": True, "head": "flatten", "hidden": 0}
    if any(arch[k] != v for k, v in ported.items()) or (train["optimizer"], train["schedule"]) != ("adamw", "cosine") \
            or not recipe["augment"]["enabled"] or not recipe["reject"]:
        raise ValueError(f"the PyTorch port has only {ported}, AdamW, a cosine schedule, augmentation on and the "
                         f"eleventh class: not {recipe}")
    return recipe


# --- GPU machine: the recipe in PyTorch -----------------------------------------------------------------------

def train(data_path, cfg, out):
    """One training of the packed recipe with cfg's changes (dotted keys; also seed and deadline); saves
    its softmax on validation digits, validation non-digits and validation uploads to `out`."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def build(stages, dropout, classes=11):  # pipeline/models.py: cnn, with Keras' batch-norm settings
        layers, c = [], 1
        for stage in stages:
            for f in stage:
                layers += [nn.Conv2d(c, f, 3, padding=1, bias=False), nn.BatchNorm2d(f, eps=1e-3, momentum=0.01), nn.ReLU()]
                c = f
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(dropout), nn.LazyLinear(classes))

    def warp(x, rot, shift, scale, elastic):  # pipeline/augment.py: random_warp
        b = x.shape[0]
        angle = (torch.rand(b, device=x.device) * 2 - 1) * rot * math.pi / 180
        zoom = 1 + (torch.rand(b, device=x.device) * 2 - 1) * scale
        c, s = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        t = (torch.rand(b, 2, device=x.device) * 2 - 1) * shift * 2 / 28  # pixels -> affine_grid's [-1, 1]
        theta = torch.stack([torch.stack([c, -s, t[:, 0]], 1), torch.stack([s, c, t[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, x.shape, align_corners=False)
        if elastic:  # a smooth field: uniform on a 4x4 grid, upsampled bicubically (torch's cubic, not TF's)
            field = (torch.rand(b, 2, 4, 4, device=x.device) * 2 - 1) * elastic * 2 / 28
            grid = grid + F.interpolate(field, size=(28, 28), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def stroke(x, steps):  # pipeline/augment.py: random_stroke (3x3 max/min filters at 4x, half a pixel a step)
        big = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
        versions, grown, shrunk = [x], big, big
        for _ in range(steps):
            grown, shrunk = F.max_pool2d(grown, 3, 1, 1), -F.max_pool2d(-shrunk, 3, 1, 1)
            versions += [F.avg_pool2d(grown, 4), F.avg_pool2d(shrunk, 4)]
        which = torch.randint(0, len(versions), (x.shape[0],), device=x.device)
        return torch.stack(versions, 1)[torch.arange(x.shape[0], device=x.device), which]

    torch.backends.cudnn.benchmark = True
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(cfg["seed"])
    d = np.load(data_path)
    recipe = with_changes(json.loads(str(d["recipe"])), {k: v for k, v in cfg.items() if "." in k})
    arch, hyper, augment = recipe["architecture"], recipe["train"], recipe["augment"]
    to_tensor = lambda a: torch.tensor(a, dtype=torch.float32, device=dev)[:, None] / 255  # noqa: E731
    X = to_tensor(np.concatenate([d["train_x"], d["up_x"], d["neg_x"]]))
    Y = torch.tensor(np.concatenate([d["train_y"], d["up_y"], np.full(len(d["neg_x"]), 10)]), dtype=torch.long, device=dev)
    VX = to_tensor(np.concatenate([d["val_x"], d["vneg_x"]]))
    VY = torch.tensor(np.concatenate([d["val_y"], np.full(len(d["vneg_x"]), 10)]), device=dev)

    model = build(arch["stages"], dropout=arch["dropout"]).to(dev)
    model(X[:2])  # materialise the lazy head before the optimiser sees the parameters
    base_lr, batch, epochs = hyper["learning_rate"], hyper["batch_size"], hyper["epochs"]
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=hyper["weight_decay"], eps=1e-7)
    steps = math.ceil(len(X) / batch)
    total, warm, step = epochs * steps, int(hyper["warmup_epochs"] * steps), 0

    def lr_at(step):  # linear warm-up from a tenth, then cosine to 0 (pipeline/train.py: optimizer)
        if step < warm:
            return base_lr * (0.1 + 0.9 * step / warm)
        return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

    def predict(x):
        with torch.no_grad():
            return torch.cat([F.softmax(model(x[i:i + 2000]), 1) for i in range(0, len(x), 2000)])

    best, t0, deadline = -1.0, time.time(), cfg.get("deadline", math.inf)
    for epoch in range(1, epochs + 1):
        if time.time() > deadline:
            print(f"deadline: stopped before epoch {epoch} of {epochs}", flush=True)
            break
        model.train()
        for idx in torch.randperm(len(X), device=dev).split(batch):
            xb = warp(X[idx], augment["rotation_deg"], augment["shift_px"], augment["scale"], augment["elastic"])
            xb = stroke(xb, augment["stroke"])
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(xb), Y[idx], label_smoothing=hyper["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        accuracy = float((predict(VX).argmax(1) == VY).float().mean())
        if accuracy > best:  # keep the best epoch on validation, as pipeline/train.py does
            best, best_epoch, best_state = accuracy, epoch, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {epoch} val_accuracy {accuracy:.4f} {time.time() - t0:.0f}s", flush=True)
    model.load_state_dict(best_state)
    model.eval()
    probs = {k: predict(to_tensor(d[k])).cpu().numpy() for k in ("val_x", "vneg_x", "vup_x")}
    np.savez_compressed(out, val=probs["val_x"], vneg=probs["vneg_x"], up=probs["vup_x"])
    print(json.dumps({"cfg": cfg, "best_val_accuracy": best, "best_epoch": best_epoch, "epochs_run": epoch,
                      "seconds": round(time.time() - t0, 1)}), flush=True)


def run_all(data_path, recipes, out_dir, deadline_s):
    """Every training in `recipes` at once (one process each: each alone leaves the GPU mostly idle), each
    told to start no epoch after deadline_s; then out_dir/probs.npz of them all and out_dir/log.txt."""
    out_dir, work = Path(out_dir), Path(tempfile.mkdtemp())
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + deadline_s
    jobs = []
    for line in Path(recipes).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, changes = line.split(maxsplit=1)
            cfg = {**json.loads(changes), "deadline": deadline}
            with open(work / f"{name}.log", "w") as log:
                jobs.append((name, subprocess.Popen(
                    [sys.executable, __file__, "train", data_path, json.dumps(cfg), str(work / f"{name}.npz")],
                    stdout=log, stderr=subprocess.STDOUT)))
    merged, logs = {}, []
    for name, job in jobs:
        job.wait()
        logs.append(f"== {name}\n" + (work / f"{name}.log").read_text())
        print(f"== {name}: {logs[-1].strip().splitlines()[-1]}", flush=True)
        if job.returncode == 0:
            merged.update({f"{name}__{k}": v for k, v in np.load(work / f"{name}.npz").items()})
    (out_dir / "log.txt").write_text("".join(logs))
    np.savez_compressed(out_dir / "probs.npz", **merged)


# --- here: the validation table -------------------------------------------------------------------------------

def metrics(p, d, quantile):
    """One model's (or an average's) softmax on the packed validation sets -> the table's figures, at the
    threshold that rejects `quantile` of MNIST validation digits."""
    from benchmarks.upload_count import measure

    return measure([p["val"], p["vneg"], p["up"]], d["val_y"], d["vup_y"], d["vup_c"], quantile)


def table(data_path, prob_files):
    from pipeline.params import load

    quantile = load(ROOT / "params.yaml")["evaluate"]["max_val_rejection"]  # the evaluate stage's rule
    d = np.load(data_path)
    runs = {}
    for f in prob_files:
        for key, value in np.load(f).items():
            name, part = key.split("__")
            runs.setdefault(name, {})[part] = value
    recipes = {}
    for name in sorted(runs):
        recipes.setdefault(name.rsplit("_s", 1)[0], []).append(name)

    def mean(groups):
        rows = [metrics({k: np.mean([runs[n][k] for n in g], 0) for k in ("val", "vneg", "up")}, d, quantile)
                for g in groups]
        return {k: np.mean([r[k] for r in rows]) for k in rows[0]}, len(rows)

    lines = []
    for recipe, names in recipes.items():
        for label, groups in (("one model", [[n] for n in names]), ("pairs averaged", list(itertools.combinations(names, 2)))):
            if groups:
                m, n = mean(groups)
                lines.append((f"{recipe}, {label} (mean of {n})", m))
    keys = list(lines[0][1])
    counts = ("MNIST val errors", "uploads misread", "uploads rejected")  # means of counts; the rest are shares
    print("| recipe | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    for label, m in lines:
        print(f"| {label} | " + " | ".join(f"{m[k]:.1f}" if k in counts else f"{m[k]:.2%}" for k in keys) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("data")
    p.add_argument("--n", type=int, default=2000, help="upload-like validation digits per condition")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--recipe", default="robust_long", help="a file name in conf/model/")
    p = sub.add_parser("run")
    p.add_argument("data")
    p.add_argument("recipes")
    p.add_argument("--out", default="runs")
    p.add_argument("--deadline", type=float, default=300, help="seconds after which no training starts an epoch")
    p = sub.add_parser("train")  # one training; `run` starts these
    p.add_argument("data")
    p.add_argument("cfg")
    p.add_argument("out")
    p = sub.add_parser("score")
    p.add_argument("probs", nargs="+")
    p.add_argument("--data", default=".gpu/data.npz")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.data, args.n, args.seed, args.recipe)
    elif args.command == "run":
        run_all(args.data, args.recipes, args.out, args.deadline)
    elif args.command == "train":
        train(args.data, json.loads(args.cfg), args.out)
    else:
        table(args.data, args.probs)


if __name__ == "__main__":
    main()
