"""Lightning callbacks with a real Trainer on CPU: logging, stop epoch, checkpoint resume and a
2-process DDP run."""
import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

HAVE_LIGHTNING = importlib.util.find_spec("lightning") is not None
pytestmark = pytest.mark.skipif(
    not HAVE_LIGHTNING, reason="lightning is not installed in this environment (it is an "
    "optional extra, tested in the torch 2 environment)")

if HAVE_LIGHTNING:
    import lightning.pytorch as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    import torch_geometry
    from torch_geometry.lightning import GeometryTracking, NNKEarlyStopping

    class Classifier(L.LightningModule):
        """A small CNN on 8x8 digit images."""

        def __init__(self, lr=0.1):
            super().__init__()
            self.lr = lr
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(1, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                torch.nn.Linear(6 * 6 * 6, 10))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)


def _digits(n=600):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target[:n], dtype=torch.long)
    return x, y


def _loader(x, y):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=100,
                                       shuffle=False)


def _trainer(tmp_path, max_epochs, callbacks, **kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, callbacks=callbacks,
                     enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=str(tmp_path), **kwargs)


def test_package_imports_without_the_lightning_module():
    # torch_geometry.lightning is imported only on request
    code = "import sys, torch_geometry; print('torch_geometry.lightning' in sys.modules, " \
           "'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_geometry_tracking_logs_the_history(tmp_path):
    torch.manual_seed(0)
    x, y = _digits()
    cb = GeometryTracking(["net.1", "net.3"], (x[:300], y[:300]), k=10,
                          statistics=("mean", "median"))
    trainer = _trainer(tmp_path, 2, [cb], logger=CSVLogger(str(tmp_path), name="run"))
    trainer.fit(Classifier(), _loader(x, y))
    history = cb.tracker.history
    assert {r["epoch"] for r in history} == {0, 1}
    last = {(r["layer"], r["metric"]): r for r in history if r["epoch"] == 1}
    for (layer, metric), row in last.items():
        for stat in ("mean", "median"):
            name = f"geometry/{layer}/{metric}" + ("" if stat == "mean" else "/median")
            logged = float(trainer.callback_metrics[name])
            assert logged == pytest.approx(row[stat], rel=1e-6, nan_ok=True), name
    with open(os.path.join(trainer.logger.log_dir, "metrics.csv")) as f:
        lines = list(csv.DictReader(f))
    seen = set()
    for line in lines:
        for row in history:
            value = line.get(f"geometry/{row['layer']}/{row['metric']}", "")
            if value != "" and int(line["epoch"]) == row["epoch"]:
                assert float(value) == pytest.approx(row["mean"], rel=1e-6, nan_ok=True)
                seen.add((row["epoch"], row["layer"], row["metric"]))
    assert seen == {(r["epoch"], r["layer"], r["metric"]) for r in history}


@pytest.mark.parametrize("mode, patience, check_every, stop", [
    ("layer", 2, 1, 2), ("layer", 3, 1, 3), ("layer", 1, 2, 2), ("channel", 2, 1, 2)])
def test_stop_epoch_on_a_flat_score(tmp_path, mode, patience, check_every, stop):
    # lr = 0: the probe's LOO error is the same at every check, so the first check is the best
    # and training stops after `patience` further checks.
    x, y = _digits(400)
    cb = NNKEarlyStopping("net.1", (x[:300], y[:300]), mode=mode, patience=patience,
                          check_every=check_every, k=10, verbose=False)
    trainer = _trainer(tmp_path, 10, [cb])
    trainer.fit(Classifier(lr=0.0), _loader(x, y))
    assert cb.stopped_epoch == stop
    assert cb.stopper.stopped_epoch == stop
    assert trainer.current_epoch == stop + 1  # the stop epoch was the last one trained


def test_fit_end_without_a_stop_returns_the_last_improvement_model(tmp_path):
    # The budget ends before any channel runs out of patience: at fit end the module is
    # back at its state (parameters and buffers) of the last check at which a channel improved.
    x, y = _digits(400)
    torch.manual_seed(0)
    model = Classifier(lr=0.3)
    cb = NNKEarlyStopping("net.1", (x[:300], y[:300]), mode="channel", patience=50, k=10,
                          verbose=False)
    states = {}

    # Scripted scores of the 6 channels: the last improvement is at epoch 1.
    script = [[0.5] * 6, [0.4] * 6, [0.45] * 6, [0.41] * 6, [0.42] * 6]

    class Record(L.Callback):
        def on_fit_start(self, trainer, pl_module):       # after cb created its stopper
            cb.stopper._score = lambda acts: list(script[trainer.current_epoch])

        def on_train_epoch_end(self, trainer, pl_module):
            states[trainer.current_epoch] = {k: v.clone() for k, v in
                                             pl_module.state_dict().items()}

    trainer = _trainer(tmp_path, 5, [cb, Record()])
    trainer.fit(model, _loader(x, y))
    last = cb.stopper.last_improvement_epoch
    assert cb.stopped_epoch == -1                  # this callback did not stop training
    assert cb.stopper.stopped_epoch == 4 and "training ended at epoch 4" in cb.stopper.stop_reason
    assert last == 1
    for key, value in states[last].items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not torch.equal(states[4]["net.0.weight"], states[last]["net.0.weight"])
    # finish_at_fit_end=False leaves the module as the last epoch left it.
    torch.manual_seed(0)
    model = Classifier(lr=0.3)
    cb = NNKEarlyStopping("net.1", (x[:300], y[:300]), mode="channel", patience=50, k=10,
                          verbose=False, finish_at_fit_end=False)
    states.clear()
    _trainer(tmp_path, 5, [cb, Record()]).fit(model, _loader(x, y))
    assert cb.stopper.stopped_epoch == -1
    for key, value in states[4].items():
        assert torch.equal(model.state_dict()[key], value), key


def _state_equal(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key


def _fit_with_checkpoints(tmp_path, name, max_epochs, ckpt_path=None):
    x, y = _digits()
    torch.manual_seed(0)
    model = Classifier(lr=0.3)
    # finish_at_fit_end=False: the interrupted fit keeps its last state in memory, which is
    # what this test compares with the checkpoint (finish() is tested on its own below).
    cb = NNKEarlyStopping("net.1", (x[:300], y[:300]), mode="channel", patience=2, k=10,
                          verbose=False, finish_at_fit_end=False)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / name), save_last=True, every_n_epochs=1)
    trainer = _trainer(tmp_path, max_epochs, [cb, ckpt], enable_checkpointing=True)
    trainer.fit(model, _loader(x, y), ckpt_path=ckpt_path)
    return trainer, cb, model


def test_checkpoint_resume_restores_the_state_and_the_stop(tmp_path):
    _, straight, straight_model = _fit_with_checkpoints(tmp_path, "straight", 12)
    assert straight.stopped_epoch >= 3, "the reference run should stop after the resume point"

    _, first, _ = _fit_with_checkpoints(tmp_path, "first", 2)
    last = str(tmp_path / "first" / "last.ckpt")
    saved = torch.load(last, weights_only=False)["callbacks"][first.state_key]
    _state_equal(saved, first.stopper.state_dict())
    assert saved["counters"][2] == 2  # the checkpoint holds both checks (epochs 0 and 1)

    # restoring alone (no epoch left to train) gives back exactly the saved state
    _, restored, _ = _fit_with_checkpoints(tmp_path, "restored", 2, ckpt_path=last)
    _state_equal(restored.stopper.state_dict(), saved)
    assert restored.stopper.frozen_channels == first.stopper.frozen_channels

    # resuming training stops where the uninterrupted run stopped, in the same state
    _, resumed, resumed_model = _fit_with_checkpoints(tmp_path, "resumed", 12, ckpt_path=last)
    assert resumed.stopped_epoch == straight.stopped_epoch
    _state_equal(resumed.stopper.state_dict(), straight.stopper.state_dict())
    for p, q in zip(resumed_model.parameters(), straight_model.parameters()):
        assert torch.equal(p, q)


def _track_with_checkpoints(tmp_path, name, max_epochs, ckpt_path=None):
    x, y = _digits()
    torch.manual_seed(0)
    cb = GeometryTracking(["net.1", "net.3"], (x[:300], y[:300]), k=10)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / name), save_last=True, every_n_epochs=1)
    trainer = _trainer(tmp_path, max_epochs, [cb, ckpt], enable_checkpointing=True)
    trainer.fit(Classifier(lr=0.3), _loader(x, y), ckpt_path=ckpt_path)
    return cb


def test_geometry_tracking_resumes_its_history_from_a_checkpoint(tmp_path):
    straight = _track_with_checkpoints(tmp_path, "straight", 4)
    first = _track_with_checkpoints(tmp_path, "first", 2)
    last = str(tmp_path / "first" / "last.ckpt")
    saved = torch.load(last, weights_only=False)["callbacks"][first.state_key]
    _state_equal(saved, first.tracker.state_dict())
    resumed = _track_with_checkpoints(tmp_path, "resumed", 4, ckpt_path=last)
    # the resumed tracker holds epochs 0-1 from the checkpoint and 2-3 of its own, exactly as
    # the uninterrupted run (epoch_overlap at epoch 2 needs the checkpoint's graphs)
    assert {r["epoch"] for r in resumed.tracker.history} == {0, 1, 2, 3}
    assert json.dumps(resumed.tracker.history) == json.dumps(straight.tracker.history)


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    import lightning.pytorch as L
    sys.path.insert(0, os.environ["TEST_DIR"])
    from test_lightning import Classifier, _digits, _loader
    from torch_geometry.lightning import GeometryTracking, NNKEarlyStopping

    if __name__ == "__main__":
        out = sys.argv[1]
        x, y = _digits(400)
        rank = int(os.environ.get("LOCAL_RANK", 0))
        # Different patience per rank: the ranks would stop at different epochs on their own
        # (and the later one would then wait forever in the next gradient all-reduce); the
        # reduced decision stops both at the earlier one.
        stop = NNKEarlyStopping("net.1", (x[:300], y[:300]), mode="layer", k=10,
                                patience=(2, 4)[rank], verbose=False)
        track = GeometryTracking(["net.3"], (x[:300], y[:300]), k=10)
        torch.manual_seed(0)
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=8,
                            callbacks=[stop, track], logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(Classifier(lr=0.0), _loader(x, y))
        with open(f"{out}.{trainer.global_rank}.json", "w") as f:
            json.dump({"stopped_epoch": stop.stopped_epoch,
                       "own_stop": stop.stopper.stopped_epoch,
                       "reason": stop.stopper.stop_reason,
                       "current_epoch": trainer.current_epoch,
                       "history": track.tracker.history}, f)
""")


def test_ddp_ranks_stop_at_the_same_epoch(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = str(tmp_path / "rank")
    env = dict(os.environ, TEST_DIR=os.path.dirname(__file__), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(script), out], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = []
    for r in (0, 1):
        with open(f"{out}.{r}.json") as f:
            ranks.append(json.load(f))
    # rank 0 (patience 2) stops itself at epoch 2; rank 1 (patience 4) is stopped with it
    assert [r["stopped_epoch"] for r in ranks] == [2, 2]
    # Rank 1 did not stop on its own: training ended for it at epoch 2 (finish() at fit end).
    assert [r["own_stop"] for r in ranks] == [2, 2]
    assert "has not improved" in ranks[0]["reason"]
    assert "training ended at epoch 2" in ranks[1]["reason"]
    assert [r["current_epoch"] for r in ranks] == [3, 3]
    # both ranks computed the same geometry from the gathered probe activations
    assert json.dumps(ranks[0]["history"]) == json.dumps(ranks[1]["history"])  # NaN-safe
    assert {row["epoch"] for row in ranks[0]["history"]} == {0, 1, 2}
