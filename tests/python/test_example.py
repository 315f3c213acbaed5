"""The main job, examples/fashion_mnist.py, end to end on a tiny configuration."""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "fashion_mnist.py"
LAYERS = ["pool1", "pool2", "relu3"]


def _run(tmp_path, *extra):
    cmd = [sys.executable, str(EXAMPLE), "--epochs", "2", "--train-size", "1000",
           "--test-size", "2000", "--probe-size", "200", "--k", "10", "--name", "tiny",
           "--out-dir", str(tmp_path), "--no-progress", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout, tmp_path / "tiny"


def test_fashion_mnist_example_writes_sane_outputs(tmp_path):
    stdout, run = _run(tmp_path)
    for name in ("history.json", "history.csv", "geometry.png", "training.json", "report.txt"):
        assert (run / name).is_file(), f"{name} missing; stdout:\n{stdout}"

    data = json.loads((run / "history.json").read_text())
    history = data["history"] if isinstance(data, dict) else data
    loo = {(r["epoch"], r["layer"]): r["mean"] for r in history if r["metric"] == "loo_error"}
    assert sorted(loo) == sorted((e, l) for e in (1, 2) for l in LAYERS)
    assert all(0.0 <= v <= 1.0 for v in loo.values())
    drift = {(r["epoch"], r["layer"]): r["mean"] for r in history
             if r["metric"] == "epoch_overlap" and r["mean"] is not None}
    assert {(2, l) for l in LAYERS} <= set(drift)
    assert all(0.0 <= drift[(2, l)] <= 1.0 for l in LAYERS)

    assert (run / "history.csv").read_text().splitlines()[0].startswith("epoch,layer,metric")
    png = (run / "geometry.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    training = json.loads((run / "training.json").read_text())
    assert [e["epoch"] for e in training["epochs"]] == [1, 2]
    # 10 classes: chance is 0.1; two epochs on 1000 images get well above it.
    assert training["final_test_acc"] > 0.4
    assert all(0 < e["test_acc"] <= 1 for e in training["epochs"])

    report = (run / "report.txt").read_text()
    assert "test accuracy" in report
    assert f"{training['final_test_acc']:.4f}" in report
    for layer in LAYERS:
        assert layer in report
    assert "loo_error" in report and "epoch_overlap" in report
    assert stdout.count("loo_error [") == 2  # one line per epoch


def test_fashion_mnist_example_without_early_stopping(tmp_path):
    stdout, run = _run(tmp_path, "--epochs", "1", "--early-stopping", "none",
                       "--layers", "conv1", "fc1")
    history = json.loads((run / "history.json").read_text())["history"]
    assert {r["layer"] for r in history} == {"conv1", "fc1"}
    assert "early stopping: none" in (run / "report.txt").read_text()


def test_model_importable_without_side_effects():
    spec = importlib.util.spec_from_file_location("fashion_mnist_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)      # must not train, parse argv or write anything
    model = module.FashionCNN()
    names = dict(model.named_modules())
    assert set(module.DEFAULT_LAYERS) <= set(names)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_bad_flags_are_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--probe-size", "10", "--k", "25",
                           "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--probe-size" in proc.stderr
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--es-probe-size", "25", "--k", "25",
                           "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--es-probe-size" in proc.stderr
