"""Invariance, transfer and geometric stability of small CNN encoders on Fashion-MNIST.

A small-scale analog of the question: does an encoder's invariance to an augmentation, as
the NNK polytope measures it, help a task that should ignore that augmentation and hurt a
task that needs it?

1. Encoders: examples/fashion_mnist.py's FashionCNN, trained with cross-entropy on the first
   `--n-train` training images under one training augmentation each (none; rotations of
   +-15, +-45, +-90 degrees and any angle; horizontal flips; random shifts as crops), the
   same seeds for every augmentation. Two more encoders (no augmentation) on the two
   disjoint halves of the training images, for stability across data subsets.
2. Rotation invariance on held-out images (the test split): torch_geometry.metrics.
   augmentation_invariance of the penultimate features (relu3, 64-d) of `--n-probe` images
   and four rotated copies (-90, -45, 45, 90 degrees): the mean NNK polytope diameter (small
   = invariant) and the mean share of NNK neighbours that are the image's own rotations.
3. Transfer on frozen features: (a) few-shot NNK classification (5-shot, 10-way) of test
   images rotated by a random angle in [-90, 90] with support images rotated the same way
   (invariance should help); (b) the rotation angle in [-90, 90] of a test image from its
   features with NNKRegressor (R^2; invariance should hurt).
4. Spearman and Kendall correlations across encoders between invariance and each task, with
   bootstrap 95% intervals (resampling encoders).
5. Geometric stability (torch_geometry.stability) across the seeds of each augmentation and
   across the disjoint-halves pair, per layer (pool1, pool2, relu3), beside linear CKA.

    nice -n 10 python examples/invariance_study.py

writes docs/results/invariance.md, invariance.json and invariance.png.
"""
import argparse
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import torch_geometry  # noqa: E402
from torch_geometry import metrics  # noqa: E402
from torch_geometry.datasets import load_fashion_mnist  # noqa: E402
from torch_geometry.estimators import NNKRegressor, few_shot_accuracy  # noqa: E402

AUGMENTATIONS = ["none", "rot15", "rot45", "rot90", "rot_any", "flip", "crop"]
PROBE_ANGLES = (-90.0, -45.0, 45.0, 90.0)
LAYERS = ("pool1", "pool2", "relu3")


def affine(img, angle_deg, shift=None):
    """Rotates each image [B, 1, 28, 28] by its angle (degrees) and shifts it by shift [B, 2]
    (in pixels), zero fill."""
    a = angle_deg * math.pi / 180.0
    cos, sin = torch.cos(a), torch.sin(a)
    theta = torch.zeros(img.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    if shift is not None:
        theta[:, :, 2] = shift * 2.0 / 28.0
    grid = F.affine_grid(theta, img.shape, align_corners=False)
    return F.grid_sample(img, grid, align_corners=False, padding_mode="zeros")


def augment(img, kind, gen):
    b = img.shape[0]
    if kind == "none":
        return img
    if kind.startswith("rot"):
        limit = 180.0 if kind == "rot_any" else float(kind[3:])
        return affine(img, (torch.rand(b, generator=gen) * 2 - 1) * limit)
    if kind == "flip":
        flip = torch.rand(b, generator=gen) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), img.flip(3), img)
    if kind == "crop":
        return affine(img, torch.zeros(b), (torch.rand(b, 2, generator=gen) * 2 - 1) * 4)
    raise ValueError(kind)


def train_encoder(x, y, kind, seed, epochs, batch=128):
    from fashion_mnist import FashionCNN

    torch.manual_seed(seed)
    model = FashionCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for s in range(0, x.shape[0], batch):
            idx = order[s:s + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(augment(x[idx], kind, gen)), y[idx]).backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def features(model, img, layer="relu3"):
    out = []
    for s in range(0, img.shape[0], 1000):
        h = model.pool1(model.relu1(model.conv1(img[s:s + 1000])))
        if layer == "pool1":
            out.append(h.flatten(1))
            continue
        h = model.pool2(model.relu2(model.conv2(h)))
        if layer == "pool2":
            out.append(h.flatten(1))
            continue
        out.append(model.relu3(model.fc1(model.flatten(h))))
    return torch.cat(out)


def rank_corr(x, y):
    from scipy.stats import kendalltau, spearmanr
    return float(spearmanr(x, y)[0]), float(kendalltau(x, y)[0])


def bootstrap_ci(x, y, n_boot, seed):
    rng = np.random.default_rng(seed)
    s, t = [], []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if len(np.unique(x[i])) < 3 or len(np.unique(y[i])) < 3:
            continue
        a, b = rank_corr(x[i], y[i])
        s.append(a)
        t.append(b)
    return (float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))), \
        (float(np.percentile(t, 2.5)), float(np.percentile(t, 97.5)))


# Invariance measures: minus the mean polytope diameter (small diameter = invariant) and the
# share of NNK neighbours that are the image's own rotations.
MEASURES = (("diameter", -1.0), ("self_share", 1.0))
TASKS = ("few_shot_rotated", "angle_r2")


def correlations(runs, n_boot):
    main_runs = [r for r in runs if r["subset"] == "all"]
    corr = {"n": len(main_runs)}
    for measure, sign in MEASURES:
        inv = sign * np.array([r[measure] for r in main_runs])
        for task in TASKS:
            y = np.array([r[task] for r in main_runs])
            s, t = rank_corr(inv, y)
            s_ci, t_ci = bootstrap_ci(inv, y, n_boot, seed=0)
            corr[f"{measure}:{task}"] = dict(spearman=s, kendall=t, spearman_ci=s_ci, kendall_ci=t_ci)
    return corr


def evaluate_encoder(model, x_te, y_te, args, gen_seed):
    gen = torch.Generator().manual_seed(gen_seed)
    probe = x_te[:args.n_probe]
    f0 = features(model, probe)
    aug = [features(model, affine(probe, torch.full((probe.shape[0],), a))) for a in PROBE_ANGLES]
    inv = metrics.augmentation_invariance(f0, aug, k=args.k)
    # Task pools: the rest of the test split, each image rotated by a random angle.
    rest_x, rest_y = x_te[args.n_probe:], y_te[args.n_probe:]
    angles = (torch.rand(rest_x.shape[0], generator=gen) * 2 - 1) * 90.0
    f_rot = features(model, affine(rest_x, angles))
    half = rest_x.shape[0] // 2
    fs = few_shot_accuracy(f_rot[:half], rest_y[:half], f_rot[half:], rest_y[half:], shots=(5,),
                           episodes=args.episodes, queries_per_class=30, k=args.k, seed=gen_seed)
    reg = NNKRegressor(k=args.k).fit(f_rot[:half], angles[:half].numpy())
    r2 = reg.score(f_rot[half:], angles[half:].numpy())
    return {"diameter": float(inv["diameter"].double().mean()),
            "self_share": float(inv["self_share"].mean()),
            "few_shot_rotated": fs[5]["mean"], "few_shot_ci95": fs[5]["ci95"],
            "angle_r2": float(r2)}


def write_report(out_dir, runs, stab, corr, args, total_s):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(AUGMENTATIONS, plt.cm.tab10.colors))
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    xlabels = {"diameter": "mean NNK polytope diameter among rotations (small = invariant)",
               "self_share": "share of NNK neighbours that are own rotations"}
    for row, (measure, _) in enumerate(MEASURES):
        for col, (task, label) in enumerate((("few_shot_rotated", "5-shot accuracy, rotated images"),
                                             ("angle_r2", "rotation angle R^2 (NNKRegressor)"))):
            ax = axes[row, col]
            for r in runs:
                if r["augmentation"] in colors and r["subset"] == "all":
                    ax.scatter(r[measure], r[task], color=colors[r["augmentation"]],
                               label=r["augmentation"])
            ax.set_xlabel(xlabels[measure], fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            h, lab = ax.get_legend_handles_labels()
            uniq = dict(zip(lab, h))
            ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "invariance.png", dpi=110)

    lines = ["# Rotation invariance, transfer and stability of small CNN encoders (Fashion-MNIST)", "",
             "Generated by `" + " ".join(["nice -n 10 python examples/invariance_study.py"]
                                        + list(getattr(args, "command", sys.argv[1:])))
             + f"` in {total_s / 60:.1f} min"
             + (f" (tables and plot regenerated from its log by `--from-json {args.from_json}`)."
                if args.from_json else "."), "",
             f"Setup: FashionCNN encoders trained {args.epochs} epoch(s) (Adam, lr 1e-3, batch 128) on "
             f"the first {args.n_train} training images, seeds {args.seeds}, one training augmentation "
             f"each. Invariance: {args.n_probe} test images and their rotations by "
             f"{', '.join(str(int(a)) for a in PROBE_ANGLES)} degrees, NNK graph (cosine, k = {args.k}) "
             f"on relu3 features. Tasks on the other {10000 - args.n_probe if args.n_test is None else args.n_test - args.n_probe} "
             f"test images, each rotated by a random angle in [-90, 90]: (a) 5-shot 10-way NNK "
             f"classification, {args.episodes} episodes, 30 queries per class; (b) angle regression "
             f"by NNKRegressor (k = {args.k}) fitted on one half, R^2 on the other.", "",
             "| augmentation | seed | diameter | self-share | 5-shot acc (rotated) | angle R^2 |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        if r["subset"] != "all":
            continue
        lines.append(f"| {r['augmentation']} | {r['seed']} | {r['diameter']:.4f} | "
                     f"{r['self_share']:.3f} | {r['few_shot_rotated']:.4f} | {r['angle_r2']:.3f} |")
    lines += ["", f"Correlations across the {corr['n']} encoders between invariance (- mean "
              f"diameter, or self-share) and each task (bootstrap 95% intervals over encoders, "
              f"{args.n_boot} resamples):", "",
              "| invariance | task | Spearman | 95% CI | Kendall | 95% CI |",
              "|---|---|---|---|---|---|"]
    for measure, _ in MEASURES:
        for task in TASKS:
            c = corr[f"{measure}:{task}"]
            lines.append(f"| {'- diameter' if measure == 'diameter' else measure} | {task} | "
                         f"{c['spearman']:+.3f} | [{c['spearman_ci'][0]:+.2f}, "
                         f"{c['spearman_ci'][1]:+.2f}] | {c['kendall']:+.3f} | "
                         f"[{c['kendall_ci'][0]:+.2f}, {c['kendall_ci'][1]:+.2f}] |")
    lines += ["", "Geometric stability (mean NNK neighbourhood overlap of the same "
              f"{args.n_stab} test images, k = 10) and linear CKA, per layer:", "",
              "| pair | layer | Jaccard | weighted | linear CKA |", "|---|---|---|---|---|"]
    for s in stab:
        lines.append(f"| {s['pair']} | {s['layer']} | {s['jaccard']:.3f} | {s['weighted']:.3f} | "
                     f"{s['cka']:.3f} |")
    lines += ["", "![invariance](invariance.png)", "", "## Reading", "", "INTERPRETATION", ""]
    path = out_dir / "invariance.md"
    old = path.read_text() if path.exists() else ""
    if "## Reading" in old and "INTERPRETATION" not in old:
        # Keep the written interpretation when only the tables are regenerated.
        lines = lines[:lines.index("## Reading")] + [old[old.index("## Reading"):].rstrip("\n"), ""]
    path.write_text("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=6000)
    p.add_argument("--n-test", type=int, default=None, help="test images used (default: all)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n-probe", type=int, default=400)
    p.add_argument("--n-stab", type=int, default=1000)
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--augmentations", nargs="+", default=AUGMENTATIONS)
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument("--from-json", default=None,
                   help="regenerate the tables and plot from a saved invariance.json")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    if args.from_json:
        saved = json.loads(pathlib.Path(args.from_json).read_text())
        for key, value in saved["args"].items():
            if key not in ("from_json", "out"):
                setattr(args, key, value)
        args.command = saved.get("command", [])
        corr = correlations(saved["runs"], args.n_boot)
        saved["correlations"] = corr
        (out / "invariance.json").write_text(json.dumps(saved, indent=1))
        write_report(out, saved["runs"], saved["stability"], corr, args, saved["seconds"])
        return 0
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # one core: the machine is shared
    x_tr, y_tr = load_fashion_mnist("train", n=args.n_train, flatten=False)
    x_te, y_te = load_fashion_mnist("test", n=args.n_test, flatten=False)
    x_tr, x_te = x_tr.float().view(-1, 1, 28, 28), x_te.float().view(-1, 1, 28, 28)
    if x_tr.max() > 1:
        x_tr, x_te = x_tr / 255.0, x_te / 255.0
    runs, models = [], {}
    jobs = [(a, s, "all") for a in args.augmentations for s in args.seeds]
    jobs += [("none", args.seeds[0], "half_a"), ("none", args.seeds[0], "half_b")]
    half = args.n_train // 2
    for aug, seed, subset in jobs:
        sl = {"all": slice(None), "half_a": slice(0, half), "half_b": slice(half, None)}[subset]
        model = train_encoder(x_tr[sl], y_tr[sl], aug, seed, args.epochs)
        models[(aug, seed, subset)] = model
        r = dict(augmentation=aug, seed=seed, subset=subset)
        r.update(evaluate_encoder(model, x_te, y_te, args, gen_seed=1000 + seed))
        runs.append(r)
        print(json.dumps(r), f"{time.perf_counter() - t0:.0f}s", flush=True)
    corr = correlations(runs, args.n_boot)
    probe = x_te[args.n_probe:args.n_probe + args.n_stab]
    stab = []
    pairs = [(f"seeds {args.seeds[0]} vs {args.seeds[1]}, {a}", (a, args.seeds[0], "all"),
              (a, args.seeds[1], "all")) for a in args.augmentations if len(args.seeds) > 1]
    pairs.append(("disjoint halves, none", ("none", args.seeds[0], "half_a"),
                  ("none", args.seeds[0], "half_b")))
    for name, ka, kb in pairs:
        for layer in LAYERS:
            st = torch_geometry.stability([features(models[ka], probe, layer),
                                           features(models[kb], probe, layer)], k=10)
            stab.append(dict(pair=name, layer=layer, jaccard=st["mean_jaccard"],
                             weighted=st["mean_weighted"], cka=st["mean_cka"]))
    total = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "invariance.json").write_text(json.dumps(
        dict(args={**vars(args), "out": os.path.relpath(args.out, ROOT)}, command=sys.argv[1:], runs=runs, correlations=corr, stability=stab, seconds=total), indent=1))
    write_report(out, runs, stab, corr, args, total)
    print(f"done in {total / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
