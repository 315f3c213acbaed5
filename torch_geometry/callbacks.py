"""Validation-free early stopping and model selection by NNK leave-one-out error.

The decisions and state live in C++ (``hooks/early_stopping.h``), shared with LibTorch
trainers; this module captures the probe activations and keeps frozen channels frozen.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from . import _compat
from ._ops import ensure_loaded
from .tracking import DISTRIBUTED_MIN_POINTS, Probe, capture_probe, default_progress, \
    materialize_probe, resolve_layers, run_probe, _block_of_rank, _sharded_graphs_enabled

_C = ensure_loaded()

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Normalisations with one (weight, bias) per channel: their affine parameters are frozen with
# the conv. Those that pool statistics over several channels make a frozen channel's output
# follow the others: refused.
_PER_CHANNEL_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_CROSS_CHANNEL_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _subtree_end(names: List[str], i: int) -> int:
    """Index one past the last descendant of ``names[i]`` in ``named_modules()`` order."""
    prefix = names[i] + "." if names[i] else ""
    j = i + 1
    while j < len(names) and names[j].startswith(prefix):
        j += 1
    return j


def _resolve_frozen_modules(model: nn.Module, layer: str, channels: int,
                            conv: Optional[str] = None) -> Tuple[str, List[str]]:
    """The conv that produces ``layer``'s ``channels`` output channels, and the
    per-channel normalisation layers between it and the layer's output, by dotted name.

    Without ``conv``: ``layer`` itself if it is a conv; for a container (a block, a
    ``Sequential``), the last conv inside it with ``out_channels == channels``; otherwise the
    last such conv before ``layer`` in ``named_modules()`` order (e.g. the conv before a
    ReLU or pooling layer)."""
    modules = list(model.named_modules())
    names = [n for n, _ in modules]
    at = names.index(layer)
    end = _subtree_end(names, at)

    def matching(indices):
        return [i for i in indices if isinstance(modules[i][1], _CONVS)
                and modules[i][1].out_channels == channels]

    if conv is not None:
        resolve_layers(model, [conv])
        ci = names.index(conv)
        if not isinstance(modules[ci][1], _CONVS):
            raise ValueError(f"conv={conv!r} is a {type(modules[ci][1]).__name__}, not a "
                             f"Conv1d/2d/3d")
        if modules[ci][1].out_channels != channels:
            raise ValueError(f"conv={conv!r} has {modules[ci][1].out_channels} output channels "
                             f"but layer {layer!r} outputs {channels}")
    else:
        found = matching(range(end - 1, at - 1, -1)) or matching(range(at - 1, -1, -1))
        if not found:
            raise ValueError(
                f"no convolution with {channels} output channels at, inside or before layer "
                f"{layer!r} (whose output has {channels} channels): pass conv= the module whose "
                f"output channels should be frozen, or use mode='layer'")
        ci = found[0]
    norms = []
    for i in range(ci + 1, max(end, ci + 1)):
        module = modules[i][1]
        if isinstance(module, _CROSS_CHANNEL_NORMS):
            raise ValueError(
                f"{names[i]!r} ({type(module).__name__}) normalises across channels after "
                f"{names[ci]!r}: a frozen channel's output would keep moving with the other "
                f"channels. Watch a layer before it, or use mode='layer'")
        if isinstance(module, _PER_CHANNEL_NORMS) and module.num_features == channels:
            norms.append(names[i])
    return names[ci], norms


class _Enforce:
    """The hook that re-imposes frozen channels (forward pre-hook of the conv, optimizer
    step post-hook). A small class rather than a closure so that ``torch.save(model)`` and
    ``copy.deepcopy(model)`` work: a pickled or copied hook is inert, the callback (with its
    C++ state) stays with the original model."""

    def __init__(self, callback: "NNKEarlyStopping"):
        self.callback = callback

    def __call__(self, *_):
        if self.callback is not None:
            self.callback.enforce()

    def __getstate__(self):
        return {"callback": None}


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


class NNKEarlyStopping:
    """Stops training when the NNK leave-one-out error of a probe set stops improving,
    without a validation set (all labelled data can be used for training).

    Call :meth:`step` at the end of every epoch; it returns True when training should stop,
    and :meth:`finish` after the loop (when the budget ran out first, it returns the model to
    its last improving check, as a stop does)::

        es = NNKEarlyStopping(model, "conv2", (x_probe, y_probe), mode="channel", optimizer=opt)
        for epoch in range(max_epochs):
            train_one_epoch(model, opt)
            if es.step(epoch):
                break
        es.finish(epoch)

    Args:
        model (nn.Module): the model being trained.
        layer (str): dotted name of the monitored module. ``mode="channel"`` needs an output
            ``[N, C, H, W]`` (a conv, the ReLU/pooling after it, or a block/``Sequential``
            ending in one).
        probe (Tensor, (Tensor, Tensor) or DataLoader): probe inputs (and labels), e.g. a
            stratified subset of the *training* data.
        labels (Tensor[N], optional): labels when ``probe`` carries none.
        mode (str): ``"channel"`` (one patience counter per channel, channel-wise DeepNNK: a
            channel that stops improving is frozen; training stops when all are frozen) or
            ``"layer"`` (one counter for the layer, DeepNNK). (default: ``"channel"``)
        patience (int): checks without improvement before freezing/stopping. (default: 5)
        min_delta (float or "auto"): a check improves when its score is lower than the best
            so far by more than this. ``"auto"``: by more than the binomial standard error of
            a leave-one-out error measured on N probe nodes, ``sqrt(e * (1 - e) / N)`` with
            e the best score so far, so that a change within the probe's own sampling noise
            never counts as an improvement. (default: 0)
        smoothing (int): the score of a check is the mean of the last ``smoothing`` checks'
            leave-one-out errors (per channel or for the layer; fewer at the first checks);
            1 = off. (default: 1)
        check_every (int): check at epochs with ``epoch % check_every == 0``. (default: 1)
        k (int): NNK candidates per node. (default: 25)
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        candidate_metric (str): how each node's k candidates are ranked before the kernel
            weighs them: ``"kernel"`` (by kernel similarity) or ``"euclidean"`` (by L2
            distance on the raw activations, as the published DeepNNK code does).
            (default: ``"kernel"``)
        restore_best_weights (bool, optional): channel mode: a channel being frozen returns to
            its best check's weights instead of being frozen where it stands (default False:
            frozen in place, as published). Layer mode: restore the best check's weights on
            stop (default True), i.e. ``restore_on_stop="best"`` or ``"none"``.
        restore_on_stop (str, optional): what the model returns to when training stops:
            ``"last_improvement"`` (its state, parameters and buffers, at the last check at
            which any channel, or the layer, improved: the published channel-wise method's
            model), ``"best"`` (layer mode: the best check, the same check) or ``"none"``.
            (default: ``"last_improvement"`` in channel mode, ``"best"`` in layer mode)
        verbose (bool): print freezes and the stop. (default: True)
        conv (str, optional): the conv whose output channels are frozen (channel mode).
            Default: ``layer`` if it is a conv; for a container, the last conv inside it whose
            ``out_channels`` equal the layer's output channels; else the last such conv
            before ``layer``. BatchNorm/InstanceNorm layers between that conv and the layer's
            output have their per-channel weight and bias frozen too (their running
            statistics, which are not trained, keep updating in train mode). GroupNorm,
            LayerNorm and LocalResponseNorm there are refused: they mix channels. In a
            residual block the output also carries the skip path, which is not frozen.
        optimizer (Optimizer, optional): when given, frozen channels are re-imposed right
            after each of its steps (``register_step_post_hook`` on torch >= 2, a step
            wrapper on older torch). Without it they are re-imposed before each forward pass
            of the conv and at every :meth:`step`, so *between* an optimiser step and the next
            forward or :meth:`step` the model's tensors hold moved values: save checkpoints
            after :meth:`step` (or call :meth:`enforce`), or pass ``optimizer=``.
            Either way the parameters are looked up through the model each time, so moving
            the model (``.double()``, ``.to(...)``, ``.to(memory_format=...)``) or loading a
            state dict into it keeps frozen channels frozen.
        max_points (int, optional): probe inputs kept (stratified by label); None = the whole
            probe (the published runs use every labelled training image). (default: 2000)
        reduce (str, optional): layer mode, conv maps -> ``"avgpool"`` or ``"flatten"``.
            (default: the package's one default, ``torch_geometry._C.DEFAULT_REDUCE``,
            ``"avgpool"``, as for :class:`~torch_geometry.GeometryTracker`)
        progress (bool, optional): tqdm bar during the probe pass. (default: on when stderr
            is a terminal)
        distributed_min_points (int, optional): under torch.distributed, a probe of at least
            this many inputs is scored on graphs built across the ranks (the layer's, or one
            per channel; :func:`torch_geometry.distributed.nnk_graph`, the exact search as a
            ring over the shards; each rank scores its own rows and the errors are summed),
            with no activations gathered; the scores equal the single-process ones. Needs the
            cosine kernel and ``candidate_metric="kernel"``. None = never. (default: 20000)

    Under ``torch.distributed`` every rank probes its shard, the activations are gathered,
    and the decision is taken on rank 0's scores (broadcast), so every rank freezes the same
    channels and stops at the same epoch even where their kernels round differently (from
    ``distributed_min_points`` probe inputs: the sharded graphs above, no gather).

    Attributes:
        frozen_channels (list[int]), stopped_epoch (int, -1 while running), best_score
        (float), wait_count (list[int]), last_scores (list[float]: the last check's
        leave-one-out errors), smoothed_scores (list[float]: what it compared),
        last_improvement_epoch (int, -1 before the first check), stop_reason (str).
    """

    def __init__(self, model: nn.Module, layer: str, probe: Probe,
                 labels: Optional[torch.Tensor] = None, mode: str = "channel", patience: int = 5,
                 min_delta: Union[float, str] = 0.0, check_every: int = 1, k: int = 25,
                 kernel: str = "cosine", restore_best_weights: Optional[bool] = None,
                 verbose: bool = True, conv: Optional[str] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None,
                 max_points: Optional[int] = 2000, reduce: Optional[str] = None,
                 batch_size: int = 500, progress: Optional[bool] = None, seed: int = 0,
                 smoothing: int = 1, restore_on_stop: Optional[str] = None,
                 candidate_metric: str = "kernel",
                 distributed_min_points: Optional[int] = DISTRIBUTED_MIN_POINTS):
        if not isinstance(check_every, int) or check_every <= 0:
            raise ValueError(f"check_every should be a positive integer, got {check_every!r}")
        if isinstance(min_delta, str) and min_delta != "auto":
            raise ValueError(f"min_delta should be a number >= 0 or \"auto\", got {min_delta!r}")
        self.model = model
        self.layer = layer
        resolve_layers(model, [layer])
        x, y = materialize_probe(probe, labels)
        if y is None:
            raise ValueError("NNKEarlyStopping needs labels: pass (x, y) as probe or labels=")
        keep = x.shape[0] if max_points is None else int(max_points)
        subset = _C.probe_subset(x.shape[0], keep, y, int(seed))
        self.probe_x, self.probe_y = x[subset], y[subset]
        if self.probe_x.shape[0] <= k:
            raise ValueError(f"the probe set has {self.probe_x.shape[0]} inputs; it needs more "
                             f"than k = {k}")
        self.check_every = check_every
        self.distributed_min_points = distributed_min_points
        self.verbose = verbose
        self.batch_size = batch_size
        self.progress = default_progress(progress)
        options = _C.EarlyStoppingOptions()
        options.mode, options.patience = mode, int(patience)
        if isinstance(min_delta, str):
            options.auto_min_delta = True
        else:
            options.min_delta = float(min_delta)
        options.smoothing = int(smoothing)
        options.k, options.kernel, options.candidate_metric = int(k), kernel, candidate_metric
        if reduce is not None:
            options.reduce = reduce
        if restore_best_weights is not None:
            options.restore_best_weights = bool(restore_best_weights)
        options.restore_on_stop = restore_on_stop
        self._core = _C.NNKEarlyStoppingCore(options)
        self._core.set_labels(self.probe_y)
        self._hooks = []
        self.conv_name, self.conv, self.norm_names = None, None, []
        if mode == "channel":
            shape = run_probe(model, [layer], self.probe_x[:2], 2)[layer].shape
            if len(shape) < 3:
                raise RuntimeError(
                    f"NNKEarlyStopping: channel mode needs conv activations [N, C, H, W], "
                    f"layer {layer!r} outputs shape {tuple(shape)}; use mode=\"layer\" for "
                    f"other layers")
            self.conv_name, self.norm_names = _resolve_frozen_modules(model, layer, shape[1], conv)
            self.conv = model.get_submodule(self.conv_name)
            self._hooks.append(self.conv.register_forward_pre_hook(_Enforce(self)))
        self._core.watch(self._current_params(), self._current_extra())
        if optimizer is not None and mode == "channel":  # layer mode freezes nothing
            self._hooks.append(_compat.register_step_post_hook(optimizer, _Enforce(self)))
        self._reported = set()

    def _current_params(self) -> List[torch.Tensor]:
        """The watched parameters' current tensors, looked up through the model: moving a
        model replaces them (``p.data``), so a reference kept from before would freeze a
        tensor the model no longer uses."""
        if self.conv_name is None:
            return [p.data for p in self.model.parameters()]
        out = []
        for name in [self.conv_name] + self.norm_names:
            module = self.model.get_submodule(name)
            for attr in ("weight", "bias"):
                p = module._parameters.get(attr)
                if p is None and isinstance(getattr(module, attr, None), torch.Tensor):
                    raise RuntimeError(
                        f"NNKEarlyStopping: {name}.{attr} is computed from other parameters "
                        f"(torch.nn.utils parametrizations or weight_norm), so freezing its "
                        f"channels cannot hold; remove the re-parametrisation or use "
                        f"mode=\"layer\"")
                if p is not None:
                    out.append(p.data)
        return out

    def _watched_names(self) -> List[str]:
        if self.conv_name is None:
            return [n for n, _ in self.model.named_parameters()]
        return [f"{m}.{a}" for m in [self.conv_name] + self.norm_names for a in ("weight", "bias")]

    def _current_extra(self) -> List[torch.Tensor]:
        """The rest of the model's state (other parameters, buffers), looked up through the
        model for the same reason: restored with the watched parameters on stop."""
        watched = set(self._watched_names())
        return ([p.data for n, p in self.model.named_parameters() if n not in watched]
                + [b for _, b in self.model.named_buffers()])

    def _rebind(self):
        self._core.rebind(self._current_params(), self._current_extra())

    def enforce(self):
        """Rewrites the parameters of frozen channels with their frozen values (the hooks
        call it after every optimiser step / before every forward of the conv)."""
        self._rebind()
        self._core.enforce()

    def _score(self, activations: torch.Tensor) -> List[float]:
        """This check's scores; under torch.distributed, rank 0's on every rank."""
        scores = self._core.score(activations)
        if _distributed():
            import torch.distributed as dist

            t = torch.tensor(scores, dtype=torch.float64)
            dist.broadcast(t, src=0)
            scores = t.tolist()
        return scores

    def _sharded(self) -> bool:
        o = self._core.options
        return _sharded_graphs_enabled(self.probe_x.shape[0], self.distributed_min_points,
                                       o.kernel, o.candidate_metric)

    def _sharded_score(self) -> List[float]:
        """The scores of a check with the probe sharded over the ranks: each rank runs its
        block of the probe, builds the graph(s) of the layer (layer mode) or of every channel
        (channel mode) across the ranks, scores its own rows, and the 0/1 errors are summed
        over the ranks: the single-process scores, with no activations gathered."""
        o = self._core.options
        n = self.probe_x.shape[0]
        index = _block_of_rank(n)
        acts = run_probe(self.model, [self.layer], self.probe_x[index], self.batch_size,
                         progress=self.progress, desc="nnk early stopping")[self.layer]
        if o.mode == "layer":
            points = [_C.reduce_activations(acts, o.reduce)]
        else:
            if acts.dim() < 3:
                raise RuntimeError(
                    f"NNKEarlyStopping: channel mode needs conv activations [N, C, H, W], "
                    f"layer {self.layer!r} outputs shape {tuple(acts.shape)}")
            a = acts.detach()
            if a.dtype not in (torch.float32, torch.float64):
                a = a.float()                   # as the core scores float16/bfloat16
            points = [a[:, c].reshape(a.shape[0], -1) for c in range(a.shape[1])]
        return _sharded_loo_errors(points, index, n, self.probe_y, int(o.k))

    def step(self, epoch: int) -> bool:
        """Checks the probe set at the end of ``epoch`` (every ``check_every`` epochs).
        Returns True when training should stop."""
        self.enforce()
        if self._core.should_stop:
            return True
        if epoch % self.check_every != 0:
            return False
        if self._sharded():
            scores = self._sharded_score()
        else:
            acts = capture_probe(self.model, [self.layer], self.probe_x, self.batch_size,
                                 progress=self.progress, desc="nnk early stopping")[self.layer]
            scores = self._score(acts)
            del acts
        stop = self._core.update(int(epoch), scores)
        if self.verbose:
            self._report(epoch)
        return stop

    def finish(self, epoch: int) -> bool:
        """Ends training that ran out of epochs without a stop: the model returns to what
        ``restore_on_stop`` names, as at a stop (``"last_improvement"``: its parameters and
        buffers at the last check at which any channel, or the layer, improved; the published
        channel-wise method returns that model whether or not every channel froze), and the
        callback reads as stopped at ``epoch``. Call it after the training loop::

            for epoch in range(max_epochs):
                train_one_epoch(model, opt)
                if es.step(epoch):
                    break
            es.finish(epoch)   # does nothing when step() stopped training

        Returns True when the model was restored (False after a stop, before the first
        check, or with ``restore_on_stop="none"``)."""
        self._rebind()
        restored = bool(self._core.finish(int(epoch)))
        self.enforce()
        if self.verbose and restored:
            print(f"[NNKEarlyStopping] {self.stop_reason}; model restored to epoch "
                  f"{self.last_improvement_epoch} ({self._core.options.restore_on_stop})")
        return restored

    def _report(self, epoch: int):
        new = [c for c in self.frozen_channels if c not in self._reported]
        if new:
            self._reported.update(new)
            print(f"[NNKEarlyStopping] epoch {epoch}: froze channels {new} of {self.conv_name} "
                  f"({len(self.frozen_channels)}/{len(self._core.best_scores)} frozen)")
        if self._core.should_stop:
            restored = self._core.options.restore_on_stop
            detail = ("" if restored == "none" or "non-finite" in self.stop_reason else
                      f"; model restored to epoch {self.last_improvement_epoch} ({restored})")
            print(f"[NNKEarlyStopping] stop at epoch {self.stopped_epoch}: {self.stop_reason} "
                  f"(best LOO error {self.best_score:.4f}){detail}")

    def remove(self):
        """Removes the forward pre-hook and the optimizer hook (on torch < 2 the optimizer's
        own step comes back); frozen channels are then no longer re-imposed."""
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
    def smoothed_scores(self) -> List[float]:
        return list(self._core.smoothed_scores)

    @property
    def last_improvement_epoch(self) -> int:
        return self._core.last_improvement_epoch

    @property
    def stop_reason(self) -> str:
        return self._core.stop_reason

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The callback's state (counters, best scores, best-weight snapshots) as tensors."""
        return dict(self._core.state_dict())

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Restores :meth:`state_dict`; a state that does not fit (keys, sizes, this mode or
        channel count) is refused with the callback unchanged."""
        self._rebind()
        self._core.load_state_dict(dict(state))
        self._reported = set(self.frozen_channels)
        self.enforce()


def _sharded_loo_errors(points: List[torch.Tensor], index: torch.Tensor, n: int,
                        labels: torch.Tensor, k: int) -> List[float]:
    """Mean NNK leave-one-out errors of graphs built across the ranks of torch.distributed.

    ``points[i]`` holds this rank's rows (probe positions ``index`` of ``n``) of the i-th
    point set; each graph comes from :func:`torch_geometry.distributed.nnk_graph` (cosine
    kernel), each rank scores its own rows against the full ``labels`` and the 0/1 errors are
    summed over the ranks (exact in float64), so every rank returns the single-process means.
    Non-finite points on any rank give NaN for that set (every rank agrees)."""
    import torch.distributed as dist

    from . import distributed as tg_dist

    y = labels.cpu()
    num_classes = int(y.max()) + 1
    finite = torch.tensor([1.0 if bool(torch.isfinite(p).all()) else 0.0 for p in points],
                          dtype=torch.float64)
    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    sums = torch.zeros(len(points), dtype=torch.float64)
    for i, p in enumerate(points):
        if finite[i] < 1:
            continue
        g = tg_dist.nnk_graph(p.contiguous(), k)
        if index.numel():
            # The op scores a graph on all n nodes: this rank's rows in place, others empty.
            nbr = torch.full((n, g.neighbors.shape[1]), -1, dtype=torch.long)
            w = torch.zeros((n, g.neighbors.shape[1]), dtype=g.weights.dtype)
            nbr[index], w[index] = g.neighbors.cpu(), g.weights.cpu()
            hard, _ = torch.ops.torch_geometry.nnk_loo_error(nbr, w, y, num_classes)
            sums[i] = hard[index].sum()
    dist.all_reduce(sums)
    return [float("nan") if finite[i] < 1 else float(sums[i] / n) for i in range(len(points))]


def select_models(models: Dict[str, nn.Module], probe: Probe, labels: Optional[torch.Tensor] = None,
                  layer: str = "", k: int = 25, kernel: str = "cosine",
                  reduce: Optional[str] = None,
                  max_points: Optional[int] = 2000, batch_size: int = 500, seed: int = 0,
                  candidate_metric: str = "kernel",
                  distributed_min_points: Optional[int] = DISTRIBUTED_MIN_POINTS
                  ) -> List[Tuple[str, float]]:
    """Ranks models (or checkpoints) by the NNK leave-one-out error of ``layer``'s activations
    on a probe set of *training* data: no validation data needed.

    Each model's activations stay on that model's device (the probe batches are moved to its
    current device and floating dtype) and its graph is built there; only the LOO error
    comes back. float16/bfloat16 activations (AMP) are accepted; the graph is computed in
    float32.

    Args:
        models (dict[str, nn.Module]): candidates; ``layer`` must exist in each.
        probe, labels: as in :class:`NNKEarlyStopping`.
        layer (str): dotted module name (e.g. the penultimate layer).
        k (int): NNK candidates per node. (default: 25)
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        reduce (str, optional): conv maps -> ``"avgpool"`` or ``"flatten"``. (default:
            ``torch_geometry._C.DEFAULT_REDUCE``)
        max_points (int, optional): probe inputs kept (stratified by label); None = the
            whole probe. (default: 2000)
        candidate_metric (str): ``"kernel"`` or ``"euclidean"`` (L2 ranking of each node's
            candidates on the reduced activations, as the published DeepNNK code).
            (default: ``"kernel"``)
        distributed_min_points (int, optional): under torch.distributed, from this many
            probe inputs each model's graph is built across the ranks and each rank scores
            its block of the probe (nothing gathered; cosine kernel, kernel-ranked
            candidates). None = never. (default: 20000)

    Returns:
        list[(name, loo_error)], lowest error first.
    """
    if not models:
        raise ValueError("models is empty")
    x, y = materialize_probe(probe, labels)
    if y is None:
        raise ValueError("select_models needs labels: pass (x, y) as probe or labels=")
    keep = x.shape[0] if max_points is None else int(max_points)
    subset = _C.probe_subset(x.shape[0], keep, y, int(seed))
    x, y = x[subset], y[subset]
    reduce = _C.DEFAULT_REDUCE if reduce is None else reduce
    if _sharded_graphs_enabled(x.shape[0], distributed_min_points, kernel, candidate_metric):
        # Each model's graph built across the ranks; nothing gathered (see NNKEarlyStopping).
        index = _block_of_rank(x.shape[0])
        scored = []
        for name, model in models.items():
            resolve_layers(model, [layer])
            acts = run_probe(model, [layer], x[index], batch_size)[layer]
            err = _sharded_loo_errors([_C.reduce_activations(acts, reduce)], index,
                                      x.shape[0], y, int(k))[0]
            if err != err:
                raise RuntimeError(f"rank_models: model \"{name}\" has non-finite activations")
            scored.append((name, err))
        return sorted(scored, key=lambda t: t[1])       # stable: ties keep their order
    names, acts = [], []
    for name, model in models.items():
        resolve_layers(model, [layer])
        acts.append(capture_probe(model, [layer], x, batch_size)[layer])
        names.append(name)
    return [(n, float(e)) for n, e in _C.rank_models(names, acts, y, int(k), kernel, reduce,
                                                      candidate_metric)]
