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
    rows = _table_rows(md, "| label noise | method |")
    labels = [study.METHOD_LABELS[m] for m in study.METHODS]
    for noise in ("0 %", "20 %"):
        got = [r[1] for r in rows if r[0] == noise]
        assert sorted(got) == sorted(labels), (noise, got)
    for r in rows:
        acc = float(r[2].split("±")[0])
        assert 0.0 <= acc <= 1.0
        assert re.fullmatch(r"\d+/\d+", r[4])
    assert {(r["noise"], m) for r in data["runs"] for m in r["results"]} == {
        (n, m) for n in (0.0, 0.2) for m in study.METHODS}
    noisy = [r["actual_noise"] for r in data["runs"] if r["noise"] == 0.2]
    assert all(abs(v - 0.2) < 0.01 for v in noisy)


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
    rows = _table_rows(md, "| model |")
    assert sorted(r[0] for r in rows) == sorted(study.MODELS) and len(rows) >= 6
    for r in rows:
        assert all(0.0 <= float(v) <= 1.0 for v in r[2:6])
    taus = _table_rows(md, "| ranking by |")
    assert len(taus) == 3 and any(r[0].startswith("NNK") for r in taus)
    assert any(r[0].startswith("kNN") for r in taus)
    for r in taus:
        assert -1.0 <= float(r[1]) <= 1.0


def test_knn_loo_error_matches_brute_force():
    import torch
    study = _load("model_selection_study")
    torch.manual_seed(0)
    x = torch.randn(120, 6)
    y = torch.randint(0, 3, (120,))
    k = 7
    xn = torch.nn.functional.normalize(x, dim=1)
    sim = xn @ xn.t()
    sim.fill_diagonal_(-float("inf"))
    nbr = sim.topk(k, dim=1).indices
    wrong = 0
    for i in range(120):
        votes = torch.bincount(y[nbr[i]], minlength=3).double()
        votes += torch.zeros(3, dtype=torch.float64).scatter_add_(
            0, y[nbr[i]], sim[i, nbr[i]].double()) * 1e-6   # ties: summed similarity
        wrong += int(votes.argmax() != y[i])
    assert study.knn_loo_error(x, y, k) == pytest.approx(wrong / 120)
