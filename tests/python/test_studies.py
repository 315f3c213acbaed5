"""Smoke tests of the two studies (examples/early_stopping_study.py and
examples/model_selection_study.py) on their --quick configurations."""
import importlib.util
import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT

EXAMPLES = ROOT / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec.loader.exec_module(module)          # must not train, parse argv or write anything
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def _run(script, out, *extra):
    cmd = [sys.executable, str(EXAMPLES / script), "--quick", "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert out.is_file() and out.with_suffix(".json").is_file()
    return out.read_text(), json.loads(out.with_suffix(".json").read_text())


def _table_rows(md, header_start):
    """Rows (lists of cells) of the markdown table whose header starts with header_start."""
    lines = md.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_early_stopping_study_quick(tmp_path):
    study = _load("early_stopping_study")
    md, data = _run("early_stopping_study.py", tmp_path / "es.md")
    assert "--quick" in md and "threads" in md and "torch " in md
    assert {(r["noise"], r["seed"]) for r in data["runs"]} == {
        (n, s) for n in (0.0, 0.2) for s in (0, 1)}
    for run in data["runs"]:
        assert len(run["A"]["curve"]) == len(run["B"]["curve"]) == 3
        row = run["A"]["curve"][-1]
        for key in ("nnk_relu3_k10", "nnk_relu3_k15", "nnk_relu2_k10", "knn_relu3_k10"):
            assert 0.0 <= row[key] <= 1.0, key
        assert len(row["channel_loo"]) == 8
    for noise in ("0 %", "20 %", "both"):
        assert f"## Methods, label noise {noise}" in md
    methods = [r[0] for r in _table_rows(md, "| method | test accuracy")]
    for p in study.PATIENCES:
        for m in ("nnk-layer", "nnk-layer auto", "val-error", "val-loss", "train-acc plateau",
                  "holdout-retrain"):
            assert f"{m} p{p}" in methods
    assert "oracle (hindsight, Run A)" in methods and "fixed budget" in methods
    noisy = [r["actual_noise"] for r in data["runs"] if r["noise"] == 0.2]
    assert all(abs(v - 0.2) < 0.01 for v in noisy)
    # The report regenerates from the log alone, identically, and keeps the hand-written
    # sections of the report it replaces.
    again = tmp_path / "again.md"
    cmd = [sys.executable, str(EXAMPLES / "early_stopping_study.py"), "--from-log",
           str(tmp_path / "es.json"), "--out", str(again)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=120)
    assert again.read_text() == md
    edited = md.replace(study.INTERPRETATION_PLACEHOLDER, "Read by hand.").replace(
        study.DEVIATIONS_PLACEHOLDER, "- fewer seeds")
    again.write_text(edited)
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=120)
    assert again.read_text() == edited


def test_early_stopping_study_add_seeds(tmp_path):
    """--add-seeds runs only the (noise, seed) pairs a log lacks, with the log's
    configuration, Run C included where the log has it: a removed seed comes back as it was
    (training is deterministic on the CPU), the others are kept untouched."""
    out = tmp_path / "es.md"
    _, full = _run("early_stopping_study.py", out)
    kept = [r for r in full["runs"] if r["seed"] == 0]
    partial = dict(full, runs=kept)
    out.with_suffix(".json").write_text(json.dumps(partial))
    md, data = _run("early_stopping_study.py", out, "--add-seeds")
    assert "seeds added by" in md
    assert data["runs"][:len(kept)] == kept
    assert sorted((r["noise"], r["seed"]) for r in data["runs"]) == sorted(
        (r["noise"], r["seed"]) for r in full["runs"])
    for run in data["runs"][len(kept):]:
        was = next(r for r in full["runs"] if (r["noise"], r["seed"]) == (run["noise"], run["seed"]))
        assert [e["test_acc"] for e in run["A"]["curve"]] == [e["test_acc"] for e in was["A"]["curve"]]
        assert [e["val_err"] for e in run["B"]["curve"]] == [e["val_err"] for e in was["B"]["curve"]]
        assert run["C"]["min_delta 0"]["test_acc"] == was["C"]["min_delta 0"]["test_acc"]


def test_patience_rule_replay_on_scripted_scores():
    study = _load("early_stopping_study")
    scores = [0.5, 0.4, 0.41, 0.39, 0.395, 0.40, 0.42, 0.38]
    # patience 3: improvements at epochs 2 and 4, then 3 epochs without one -> stop at 7.
    assert study.last_improvement(scores, 3) == (7, 4, True)
    assert study.last_improvement(scores, 5) == (8, 8, False)
    # "auto": the standard error of 0.4 on 100 points is 0.049, so 0.39 and 0.38 do not
    # count as improvements over 0.4: stop at 5 with the model of epoch 2.
    assert study.last_improvement(scores, 3, "auto", 100) == (5, 2, True)
    # Equal to the best is no improvement.
    assert study.last_improvement([0.5, 0.5, 0.5, 0.5], 2) == (3, 1, True)
    # Accuracies (higher is better).
    assert study.last_improvement([0.1, 0.3, 0.2, 0.25], 2, lower_is_better=False) == (4, 2, True)


def test_bootstrap_interval_and_tau():
    study = _load("early_stopping_study")
    lo, hi = study.bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert study.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert study.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert study.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert study.kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0


def test_label_noise_only_flips_the_requested_share():
    import torch
    study = _load("early_stopping_study")
    y = torch.arange(1000) % 10
    noisy = study.add_label_noise(y, 0.2, seed=3)
    assert int((noisy != y).sum()) == 200           # every flip lands on a different class
    assert torch.equal(study.add_label_noise(y, 0.0, seed=3), y)
    assert torch.equal(noisy, study.add_label_noise(y, 0.2, seed=3))


def test_model_selection_study_quick(tmp_path):
    study = _load("model_selection_study")
    md, data = _run("model_selection_study.py", tmp_path / "ms.md")
    assert "--quick" in md and "threads" in md
    assert len(data["models"]) == 2 * len(study.CONFIGS)
    rows = _table_rows(md, "| model | seed |")
    assert sorted(r[0] for r in rows) == sorted(list(study.CONFIGS) * 2)
    for r in rows:
        assert all(0.0 <= float(v) <= 1.0 for v in r[2:])
    taus = _table_rows(md, "| ranking by |")
    assert len(taus) == len(study.signal_names([10, 15]))
    for r in taus:
        tau, ci = r[1].split(" ", 1)
        lo, hi = (float(v) for v in ci.strip("[]").split(","))
        assert -1.0 <= lo <= hi <= 1.0 and -1.0 <= float(tau) <= 1.0
    again = tmp_path / "again.md"
    cmd = [sys.executable, str(EXAMPLES / "model_selection_study.py"), "--from-log",
           str(tmp_path / "ms.json"), "--out", str(again)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=120)
    assert again.read_text() == md


def test_knn_loo_error_matches_brute_force():
    import numpy as np
    import torch
    study = _load("early_stopping_study")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 6)) * rng.uniform(0.3, 3.0, (120, 1))
    y = rng.integers(0, 3, 120)
    k = 7
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    wrong = 0
    for i in range(120):
        nbr = sorted((j for j in range(120) if j != i), key=lambda j: (d2[i, j], j))[:k]
        votes = np.bincount(y[nbr], minlength=3)
        wrong += int(votes.argmax() != y[i])          # argmax: ties to the lowest class
    got = study.knn_loo(torch.from_numpy(x), torch.from_numpy(y), k, "euclidean")
    assert got == pytest.approx(wrong / 120)


def test_hand_written_sections_survive_regeneration(tmp_path):
    study = _load("early_stopping_study")
    report = tmp_path / "r.md"
    assert study.hand_written(str(report), "## Interpretation") == ""
    report.write_text(f"# T\n\n{study.DEVIATIONS_HEADING}\n\n- 3 seeds\n- 1,000 images\n\n"
                      f"## Methods\n\n| a |\n\n## Interpretation\n\nIt works.\nTwo lines.\n")
    assert study.hand_written(str(report), study.DEVIATIONS_HEADING) == "- 3 seeds\n- 1,000 images"
    assert study.hand_written(str(report), "## Interpretation") == "It works.\nTwo lines."
    report.write_text(f"## Interpretation\n\n{study.INTERPRETATION_PLACEHOLDER}\n")
    assert study.hand_written(str(report), "## Interpretation") == ""
