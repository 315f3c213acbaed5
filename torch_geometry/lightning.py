"""Lightning callbacks: geometry tracking and NNK early stopping in ``lightning.pytorch.Trainer``.

Both wrap the package's own classes (:class:`torch_geometry.GeometryTracker`,
:class:`torch_geometry.NNKEarlyStopping`): this module only connects them to the trainer's
hooks, logger, stop flag and checkpoints. It needs ``lightning`` (``pip install lightning``);
``import torch_geometry`` does not.

Example::

    from lightning.pytorch import Trainer
    from torch_geometry.lightning import GeometryTracking, NNKEarlyStopping

    trainer = Trainer(max_epochs=50, callbacks=[
        GeometryTracking(["features.3", "classifier.1"], (x_probe, y_probe)),
        NNKEarlyStopping("features.3", (x_probe, y_probe), mode="layer", patience=5),
    ])
    trainer.fit(model, train_loader)

Layer names are dotted names from the LightningModule's ``named_modules()``. Under DDP every
rank runs its shard of the probe set and the activations are gathered, so all ranks compute the
same geometry; the stop decision is also reduced across ranks.
"""
from typing import Any, Dict, Optional, Sequence

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "torch_geometry.lightning needs the lightning package: pip install lightning "
        "(or pip install 'torch_geometry[lightning]')") from exc

import torch

from . import callbacks as _callbacks
from .tensorboard import STATISTICS, row_scalars
from .tracking import GeometryTracker, Probe

__all__ = ["GeometryTracking", "NNKEarlyStopping"]


def _log_options(trainer) -> Dict[str, Any]:
    # One value per epoch, identical on every rank (computed from gathered activations); the
    # (exact) mean over ranks only keeps Lightning from warning about unsynchronised values.
    return dict(on_step=False, on_epoch=True, logger=trainer.logger is not None, sync_dist=True)


class _CheckpointedState:
    """Saves the wrapped object's ``state_dict`` in Lightning checkpoints. Lightning reads a
    checkpoint before fitting starts, when the object (built from the LightningModule) does
    not exist yet: the state waits until :meth:`_restore_pending` is called."""

    _pending_state: Optional[Dict[str, torch.Tensor]] = None

    def _stateful(self):
        raise NotImplementedError

    def _restore_pending(self) -> None:
        if self._pending_state is not None:
            self._stateful().load_state_dict(self._pending_state)
            self._pending_state = None

    def state_dict(self) -> Dict[str, Any]:
        target = self._stateful()
        return dict(self._pending_state or {}) if target is None else target.state_dict()

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        target = self._stateful()
        if target is None:
            self._pending_state = dict(state_dict)
        else:
            target.load_state_dict(state_dict)


class GeometryTracking(_CheckpointedState, Callback):
    """Runs a :class:`~torch_geometry.GeometryTracker` at the end of every training epoch and
    logs its history through the LightningModule's logger (``pl_module.log``).

    Logged names (also in ``trainer.callback_metrics``, so ``ModelCheckpoint`` can monitor
    them): ``geometry/<layer>/<metric>`` = mean over the probe nodes, and
    ``geometry/<layer>/<metric>/<statistic>`` for the other ``statistics``.

    Args:
        layers (list[str]): dotted module names of the LightningModule.
        probe (Tensor, (Tensor, Tensor) or DataLoader): probe inputs (and labels).
        labels (Tensor[N], optional): labels when ``probe`` carries none.
        statistics (list[str]): which summary statistics to log, among
            ``("mean", "median", "q25", "q75", "min", "max")``. (default: ``("mean", "median")``)
        **tracker_options: passed on to :class:`~torch_geometry.GeometryTracker` (``k``,
            ``kernel``, ``reduce``, ``every``, ``max_points``, ...); ``progress`` defaults to
            False here (Lightning draws its own bars).

    Attributes:
        tracker (GeometryTracker): created when fitting starts; its ``history`` holds every row.
            Its state is saved in and restored from Lightning checkpoints, so a resumed run
            continues the history.
    """

    def __init__(self, layers: Sequence[str], probe: Probe, labels: Optional[torch.Tensor] = None,
                 statistics: Sequence[str] = ("mean", "median"), **tracker_options: Any):
        unknown = [s for s in statistics if s not in STATISTICS]
        if unknown:
            raise ValueError(f"statistics should be among {STATISTICS}, got {unknown}")
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.probe, self.labels = probe, labels
        self.statistics = tuple(statistics)
        tracker_options.setdefault("progress", False)
        self.tracker_options = tracker_options
        self.tracker: Optional[GeometryTracker] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.layers)

    def _stateful(self):
        return self.tracker

    def on_fit_start(self, trainer, pl_module) -> None:
        self.tracker = GeometryTracker(pl_module, self.layers, self.probe, self.labels,
                                       **self.tracker_options)
        self._restore_pending()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        rows = self.tracker.on_epoch_end(trainer.current_epoch)
        for row in rows or ():
            for name, value in row_scalars(row, self.statistics).items():
                pl_module.log(name, value, **_log_options(trainer))


class NNKEarlyStopping(_CheckpointedState, Callback):
    """Validation-free early stopping (:class:`torch_geometry.NNKEarlyStopping`) for Lightning:
    checks the NNK leave-one-out error of a probe set at the end of training epochs, freezes
    channels (``mode="channel"``) and sets ``trainer.should_stop``. Its state is saved in and
    restored from Lightning checkpoints.

    Args:
        layer (str): dotted module name of the LightningModule.
        probe (Tensor, (Tensor, Tensor) or DataLoader): probe inputs and labels (training data).
        labels (Tensor[N], optional): labels when ``probe`` carries none.
        finish_at_fit_end (bool): when fitting ends without a stop by this callback (the
            epoch budget ran out), call :meth:`torch_geometry.NNKEarlyStopping.finish`: the
            module returns to what ``restore_on_stop`` names, as the published method returns
            its last-improvement model. Checkpoints saved during the fit hold the state
            before it, so resuming from them continues the run. (default: True)
        **options: passed on to :class:`torch_geometry.NNKEarlyStopping` (``mode``,
            ``patience``, ``min_delta`` (a number or ``"auto"``), ``smoothing``,
            ``check_every``, ``k``, ``candidate_metric``, ``restore_best_weights``,
            ``restore_on_stop``, ``max_points`` (None = the whole probe), ``verbose``, ...).
            The optimizer is the trainer's when it has exactly one. With
            ``restore_on_stop="last_improvement"`` (channel mode's default) the
            LightningModule's parameters and buffers return to the last improving check when
            this callback stops training, and also when fitting ends without a stop
            (:meth:`torch_geometry.NNKEarlyStopping.finish`).

    Logs ``nnk_early_stopping/best_loo_error`` (the best check so far) and, in channel mode,
    ``nnk_early_stopping/frozen_channels`` after every check.

    Attributes:
        stopper (torch_geometry.NNKEarlyStopping): created when fitting starts.
        stopped_epoch (int): the epoch at which this callback stopped training, -1 while running.
    """

    def __init__(self, layer: str, probe: Probe, labels: Optional[torch.Tensor] = None,
                 finish_at_fit_end: bool = True, **options: Any):
        self.layer = layer
        self.finish_at_fit_end = bool(finish_at_fit_end)
        self.probe, self.labels = probe, labels
        self.options = options
        self.stopper: Optional[_callbacks.NNKEarlyStopping] = None
        self.stopped_epoch = -1
        self._last_epoch: Optional[int] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer, mode=self.options.get("mode", "channel"))

    def on_fit_start(self, trainer, pl_module) -> None:
        optimizers = trainer.optimizers
        options = dict(self.options)
        options.setdefault("optimizer", optimizers[0] if len(optimizers) == 1 else None)
        self.stopper = _callbacks.NNKEarlyStopping(pl_module, self.layer, self.probe,
                                                   self.labels, **options)
        self._last_epoch = None         # no epoch trained in this fit yet
        self._restore_pending()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = self._last_epoch = trainer.current_epoch
        stop = self.stopper.step(epoch)
        # every rank takes the decision of any rank, as Lightning's EarlyStopping does
        stop = trainer.strategy.reduce_boolean_decision(bool(stop), all=False)
        if self.stopper.last_scores:
            pl_module.log("nnk_early_stopping/best_loo_error", float(self.stopper.best_score),
                          **_log_options(trainer))
            if self.stopper.conv is not None:
                pl_module.log("nnk_early_stopping/frozen_channels",
                              float(len(self.stopper.frozen_channels)), **_log_options(trainer))
        if stop and not trainer.should_stop:
            self.stopped_epoch = epoch
        trainer.should_stop = trainer.should_stop or stop

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.stopper is not None:
            # The budget ran out without a stop: the model returns to what restore_on_stop
            # names, as at a stop (a no-op after this callback stopped training, and when
            # this fit trained no epoch).
            if self.finish_at_fit_end and self._last_epoch is not None:
                self.stopper.finish(self._last_epoch)
            self.stopper.remove()

    def _stateful(self):
        return self.stopper
