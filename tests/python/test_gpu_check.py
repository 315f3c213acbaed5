"""benchmarks/gpu_check.py: the smoke run on CPU, and the message without a GPU."""
import importlib.util
import json
import pathlib

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_on_cpu(tmp_path, capsys):
    gpu_check = load_script()
    out = tmp_path / "check.json"
    status = gpu_check.main(["--device", "cpu", "--small", "--no-cpu-baseline", "--json", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    results = json.loads(out.read_text())
    rows = results["correctness_generic"]
    # Every operator was compared, and every comparison passed.
    assert {r["op"] for r in rows} == set(gpu_check.OPS)
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    speed = results["speed_generic"]
    assert [r["data"] for r in speed] == ["fmnist 800 x 784", "fmnist 1500 x 784",
                                          "synthetic 5000 x 16, approximate candidates"]
    assert all(r["nnk_graph_s"] > 0 for r in speed)
    assert "Correctness: CUDA path vs CPU kernel" in printed and "| fmnist 800 x 784 | 10 |" in printed
    training = results["training"]
    assert [r["check"].split(":")[0] for r in training] == [
        "tracker", "tracker epoch", "tracker", "tracker", "select_models on the device vs CPU "
        "copies of the models", "tracker made on the CPU follows the model to the device"]
    assert all(r["ok"] for r in training), [r for r in training if not r["ok"]]
    assert "## Training integration on the device" in printed


def test_checker_reports_a_mismatch(monkeypatch):
    # A device path that returns a wrong error must be reported, not averaged away.
    gpu_check = load_script()
    checker = gpu_check.Checker("cpu")
    real = torch.ops.torch_geometry._generic_nnk_graph

    def wrong(*args):
        nb, w, e = real(*args)
        e = e.clone()
        e[0] += 1e-3
        return nb, w, e
    monkeypatch.setattr(checker, "device_op", lambda name: wrong)
    x = torch.randn(100, 5)
    checker.compare("generic", "random", "nnk_graph", (x, 5, "cosine", None, "mean", None, 1e-10))
    assert checker.rows[0]["ok"] is False and "error max |diff| 1.0e-03" in checker.rows[0]["detail"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_no_gpu_exits_with_a_clear_message(capsys):
    gpu_check = load_script()
    assert gpu_check.main([]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


def test_training_rows_comparison_reports_a_difference():
    gpu_check = load_script()
    row = {"epoch": 0, "layer": "fc", "metric": "degree", "count": 50, "mean": 4.0}
    assert gpu_check.compare_rows([row], [dict(row)])[:2] == (True, 0.0)
    ok, worst, _ = gpu_check.compare_rows([dict(row, mean=4.01)], [row])
    assert not ok and worst == pytest.approx(0.01)
    assert not gpu_check.compare_rows([dict(row, count=49)], [row])[0]
    assert not gpu_check.compare_rows([dict(row, metric="diameter")], [row])[0]
