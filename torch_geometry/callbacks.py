"""Validation-free early stopping and model selection by NNK leave-one-out error.

The decisions and state live in C++ (``hooks/early_stopping.h``), shared with LibTorch
trainers; this module captures the probe activations and keeps frozen channels frozen.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ._ops import ensure_loaded
from .tracking import Probe, capture_probe, materialize_probe, resolve_layers

_C = ensure_loaded()

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _producing_conv(model: nn.Module, layer: str) -> Tuple[str, nn.Module]:
    """The conv that produces ``layer``'s channels: the layer itself if it is a conv, else
    the last conv before it in ``model.named_modules()`` order."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, _CONVS):
            last = (name, module)
        if name == layer:
            if last is None:
                raise ValueError(f"no convolution at or before layer {layer!r}: pass conv= "
                                 f"the module whose output channels should be frozen")
            return last
    raise ValueError(f"layer {layer!r} is not a module of the model")


class NNKEarlyStopping:
    """Stops training when the NNK leave-one-out error of a probe set stops improving,
    without a validation set (all labelled data can be used for training).

    Call :meth:`step` at the end of every epoch; it returns True when training should stop::

        es = NNKEarlyStopping(model, "conv2", (x_probe, y_probe), mode="channel", optimizer=opt)
        for epoch in range(max_epochs):
            train_one_epoch(model, opt)
            if es.step(epoch):
                break

    Args:
        model (nn.Module): the model being trained.
        layer (str): dotted name of the monitored module. ``mode="channel"`` needs an output
            ``[N, C, H, W]`` (a conv, or the ReLU/pooling after it).
        probe (Tensor, (Tensor, Tensor) or DataLoader): probe inputs (and labels), e.g. a
            stratified subset of the *training* data.
        labels (Tensor[N], optional): labels when ``probe`` carries none.
        mode (str): ``"channel"`` (one patience counter per channel; a channel that stops
            improving is restored to its best weights and frozen; training stops when all
            are frozen) or ``"layer"`` (one counter for the layer). (default: ``"channel"``)
        patience (int): checks without improvement before freezing/stopping. (default: 5)
        min_delta (float): an improvement must lower the error by more than this. (default: 0)
        check_every (int): check every ``check_every`` epochs. (default: 1)
        k (int): NNK candidates per node. (default: 25)
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        restore_best_weights (bool): restore best weights when freezing (channel mode) or
            stopping (layer mode: every parameter of the model). (default: True)
        verbose (bool): print freezes and the stop. (default: True)
        conv (str, optional): the conv whose output channels are frozen (channel mode);
            default: ``layer`` if it is a conv, else the last conv before it.
        optimizer (Optimizer, optional): when given, frozen channels are re-imposed right
            after each of its steps; otherwise before each forward pass of the conv and at
            every :meth:`step`. Either way a frozen channel's parameters never change as seen
            by the model, whatever the optimiser (momentum, Adam moments, weight decay).
        max_points (int): probe inputs kept (stratified by label). (default: 2000)
        reduce (str): layer mode, conv maps -> ``"flatten"`` or ``"avgpool"``. (default: ``"flatten"``)

    Attributes:
        frozen_channels (list[int]), stopped_epoch (int, -1 while running), best_score
        (float), wait_count (list[int]), last_scores (list[float]), stop_reason (str).
    """

    def __init__(self, model: nn.Module, layer: str, probe: Probe,
                 labels: Optional[torch.Tensor] = None, mode: str = "channel", patience: int = 5,
                 min_delta: float = 0.0, check_every: int = 1, k: int = 25, kernel: str = "cosine",
                 restore_best_weights: bool = True, verbose: bool = True, conv: Optional[str] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, max_points: int = 2000,
                 reduce: str = "flatten", batch_size: int = 500, progress: bool = False,
                 seed: int = 0):
        if not isinstance(check_every, int) or check_every <= 0:
            raise ValueError(f"check_every should be a positive integer, got {check_every!r}")
        self.model = model
        self.layer = layer
        resolve_layers(model, [layer])
        x, y = materialize_probe(probe, labels)
        if y is None:
            raise ValueError("NNKEarlyStopping needs labels: pass (x, y) as probe or labels=")
        subset = _C.probe_subset(x.shape[0], int(max_points), y, int(seed))
        self.probe_x, self.probe_y = x[subset], y[subset]
        if self.probe_x.shape[0] <= k:
            raise ValueError(f"the probe set has {self.probe_x.shape[0]} inputs; it needs more "
                             f"than k = {k}")
        self.check_every = check_every
        self.verbose = verbose
        self.batch_size = batch_size
        self.progress = progress
        options = _C.EarlyStoppingOptions()
        options.mode, options.patience, options.min_delta = mode, int(patience), float(min_delta)
        options.k, options.kernel, options.reduce = int(k), kernel, reduce
        options.restore_best_weights = bool(restore_best_weights)
        self._core = _C.NNKEarlyStoppingCore(options)
        self._core.set_labels(self.probe_y)
        self._hooks = []
        if mode == "channel":
            if conv is None:
                self.conv_name, self.conv = _producing_conv(model, layer)
            else:
                self.conv_name, self.conv = conv, resolve_layers(model, [conv])[conv]
            params = [p for p in (self.conv.weight, self.conv.bias) if p is not None]
            self._hooks.append(self.conv.register_forward_pre_hook(lambda *_: self._core.enforce()))
        else:
            self.conv_name, self.conv = None, None
            params = list(model.parameters())
        self._core.watch([p.data for p in params])
        if optimizer is not None and mode == "channel":
            if hasattr(optimizer, "register_step_post_hook"):  # torch >= 2.0
                self._hooks.append(optimizer.register_step_post_hook(lambda *_: self._core.enforce()))
            else:
                step = optimizer.step

                def step_then_enforce(*args, **kwargs):
                    out = step(*args, **kwargs)
                    self._core.enforce()
                    return out

                optimizer.step = step_then_enforce
        self._reported = set()

    def step(self, epoch: int) -> bool:
        """Checks the probe set at the end of ``epoch`` (every ``check_every`` epochs).
        Returns True when training should stop."""
        self._core.enforce()
        if self._core.should_stop:
            return True
        if epoch % self.check_every != 0:
            return False
        acts = capture_probe(self.model, [self.layer], self.probe_x, self.batch_size,
                             progress=self.progress, desc="nnk early stopping")[self.layer]
        stop = self._core.step(int(epoch), acts)
        if self.verbose:
            self._report(epoch)
        return stop

    def _report(self, epoch: int):
        new = [c for c in self.frozen_channels if c not in self._reported]
        if new:
            self._reported.update(new)
            print(f"[NNKEarlyStopping] epoch {epoch}: froze channels {new} of {self.conv_name} "
                  f"({len(self.frozen_channels)}/{len(self._core.best_scores)} frozen)")
        if self._core.should_stop:
            print(f"[NNKEarlyStopping] stop at epoch {self.stopped_epoch}: {self.stop_reason} "
                  f"(best LOO error {self.best_score:.4f})")

    def remove(self):
        """Removes the forward pre-hook / optimizer hook (frozen channels are then no longer
        re-imposed)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    @property
    def frozen_channels(self) -> List[int]:
        return list(self._core.frozen_channels)

    @property
    def stopped_epoch(self) -> int:
        return self._core.stopped_epoch

    @property
    def best_score(self) -> float:
        return self._core.best_score

    @property
    def wait_count(self) -> List[int]:
        return list(self._core.wait_counts)

    @property
    def last_scores(self) -> List[float]:
        return list(self._core.last_scores)

    @property
    def stop_reason(self) -> str:
        return self._core.stop_reason

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The callback's state (counters, best scores, best-weight snapshots) as tensors."""
        return dict(self._core.state_dict())

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self._core.load_state_dict(dict(state))
        self._reported = set(self.frozen_channels)
        self._core.enforce()


def select_models(models: Dict[str, nn.Module], probe: Probe, labels: Optional[torch.Tensor] = None,
                  layer: str = "", k: int = 25, kernel: str = "cosine", reduce: str = "flatten",
                  max_points: int = 2000, batch_size: int = 500, seed: int = 0
                  ) -> List[Tuple[str, float]]:
    """Ranks models (or checkpoints) by the NNK leave-one-out error of ``layer``'s activations
    on a probe set of *training* data: no validation data needed.

    Args:
        models (dict[str, nn.Module]): candidates; ``layer`` must exist in each.
        probe, labels: as in :class:`NNKEarlyStopping`.
        layer (str): dotted module name (e.g. the penultimate layer).

    Returns:
        list[(name, loo_error)], lowest error first.
    """
    if not models:
        raise ValueError("models is empty")
    x, y = materialize_probe(probe, labels)
    if y is None:
        raise ValueError("select_models needs labels: pass (x, y) as probe or labels=")
    subset = _C.probe_subset(x.shape[0], int(max_points), y, int(seed))
    x, y = x[subset], y[subset]
    names, acts = [], []
    for name, model in models.items():
        resolve_layers(model, [layer])
        acts.append(capture_probe(model, [layer], x, batch_size)[layer])
        names.append(name)
    return [(n, float(e)) for n, e in _C.rank_models(names, acts, y, int(k), kernel, reduce)]
