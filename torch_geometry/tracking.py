"""Geometry tracking inside the training loop.

:class:`GeometryTracker` registers forward hooks on chosen layers while it runs a fixed
probe set through the model at the end of an epoch, and hands the activations to the C++
tracker (``hooks/geometry_tracker.h``), which builds the NNK graphs, computes the metrics
and keeps the history. Python only captures activations; it does not re-implement the
geometry.

Devices: activations stay where the model computes them (its parameters' device). The NNK
graphs and metrics are built there through the operators' dispatcher (CUDA tensors take the
device-generic path), and only per-node metrics and summaries come back to the host. The
probe inputs are kept on the host and moved, batch by batch, to the model's device and
floating dtype *at each capture*, so a model moved with ``.to(device)`` or ``.double()``
after the tracker was made keeps working. float16/bfloat16 activations (AMP) are accepted;
their graphs are computed in float32, never in half precision.
"""
import difflib
import json
import os
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ._compat import original_module
from ._ops import ensure_loaded

_C = ensure_loaded()

Probe = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor], Iterable]


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> Dict[str, nn.Module]:
    """Maps dotted layer names to modules of ``model``; an unknown name raises a
    ``ValueError`` that lists the closest names the model has.

    For a ``torch.compile``d model the names are those of the original model (a leading
    ``_orig_mod.`` is accepted too) and the modules are the original ones: their forward
    hooks run whether the model is called compiled or not."""
    if isinstance(layers, str):
        layers = [layers]
    original = original_module(model)
    modules = dict(original.named_modules())
    out = {}
    for name in layers:
        key = name
        if original is not model and key.startswith("_orig_mod."):
            key = key[len("_orig_mod."):]
        if key not in modules or key == "":
            close = difflib.get_close_matches(key, [m for m in modules if m], n=5, cutoff=0.4)
            hint = f"; closest: {close}" if close else ""
            raise ValueError(f"layer {name!r} is not a module of the model{hint}. "
                             f"Names come from model.named_modules().")
        out[name] = modules[key]
    if not out:
        raise ValueError("layers should name at least one module")
    return out


def materialize_probe(probe: Probe, labels: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Turns a tensor, an ``(x, y)`` pair or an iterable of batches (a DataLoader) into CPU
    tensors ``x [N, ...]`` and ``y [N]`` (or None). The probe *inputs* live on the host like
    the dataset they come from (a model may move between captures); each capture moves one
    batch at a time to the model's device."""
    if isinstance(probe, torch.Tensor):
        x, y = probe, labels
    elif isinstance(probe, (tuple, list)) and len(probe) == 2 and isinstance(probe[0], torch.Tensor):
        x, y = probe[0], probe[1] if labels is None else labels
    else:
        xs, ys = [], []
        for batch in probe:
            if isinstance(batch, torch.Tensor):
                xs.append(batch)
            else:
                xs.append(batch[0])
                if len(batch) > 1:
                    ys.append(batch[1])
        if not xs:
            raise ValueError("probe is empty")
        x = torch.cat(xs)
        y = labels if labels is not None else (torch.cat(ys) if ys else None)
    x = x.detach().cpu()
    if y is not None:
        y = torch.as_tensor(y).detach().cpu()
        # The dtype and values are checked once, by the C++ core that uses them.
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"labels should have shape [{x.shape[0]}] (one per probe input), "
                             f"got {tuple(y.shape)}")
    return x, y


def default_progress(progress: Optional[bool]) -> bool:
    """``progress=None`` means: a tqdm bar only when stderr is a terminal (not in logs of
    batch jobs or CI)."""
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _first_tensor(output):
    """The tensor a layer's output contributes: itself, or the first tensor of a tuple/list
    (e.g. an LSTM's ``(output, (h, c))``). Dicts are refused: track a submodule instead."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    if isinstance(output, dict):
        raise TypeError("a tracked layer returned a dict; track the submodule that produces "
                        "the tensor you want instead")
    raise TypeError(f"a tracked layer returned {type(output).__name__}, not a tensor")


class ActivationCapture:
    """Forward hooks that record copies of the outputs of named layers, detached, on the
    device and in the dtype the layer produced them (nothing is copied to the host).

    Use as a context manager: hooks are removed on exit, exceptions included.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.modules = resolve_layers(model, layers)
        self.outputs: Dict[str, List[torch.Tensor]] = {name: [] for name in self.modules}
        self._handles = []

    def __enter__(self):
        for name, module in self.modules.items():
            def hook(_module, _inputs, output, name=name):
                # A copy: a later in-place layer (ReLU(inplace=True)) would change it.
                self.outputs[name].append(_first_tensor(output).detach().clone())
            self._handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def collect(self) -> Dict[str, torch.Tensor]:
        out = {name: torch.cat(chunks) for name, chunks in self.outputs.items() if chunks}
        for chunks in self.outputs.values():
            chunks.clear()
        return out


def _model_device(model: nn.Module) -> Tuple[torch.device, Optional[torch.dtype]]:
    """Where the model's tensors are, and their floating dtype (None if it has none); read
    at every probe pass, so that it follows ``.to(device)`` / ``.double()`` / ``.half()``."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    for t in model.buffers():
        return t.device, None
    return torch.device("cpu"), None


def run_probe(model: nn.Module, layers: Sequence[str], x: torch.Tensor, batch_size: int = 500,
              progress: bool = False, desc: str = "probe") -> Dict[str, torch.Tensor]:
    """Runs ``x`` (any device) through ``model`` in eval mode under no_grad and returns each
    layer's activations ``[N, ...]`` on the device the model produced them on. Each batch is
    moved to the model's current device; floating inputs take its current floating dtype (a
    model moved by ``.to(device)`` / ``.double()`` / ``.half()`` after the probe was taken).
    The model's train/eval mode is restored after."""
    was_training = model.training
    device, dtype = _model_device(model)
    if dtype is None or not x.is_floating_point():
        dtype = x.dtype
    model.eval()
    try:
        with torch.no_grad(), ActivationCapture(model, layers) as cap:
            starts = range(0, x.shape[0], batch_size)
            if progress:
                from tqdm import tqdm
                starts = tqdm(starts, desc=desc, leave=False, unit="batch")
            for s in starts:
                model(x[s:s + batch_size].to(device, dtype))
            return cap.collect()
    finally:
        model.train(was_training)


def _gather_rows(t: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
    """All-gathers this rank's rows ``t`` (positions ``index`` in the full probe set) and
    returns the full ``[total, ...]`` tensor on every rank, on ``t``'s device (NCCL gathers
    CUDA tensors, gloo CPU ones). Shards may differ in size."""
    import torch.distributed as dist

    world = dist.get_world_size()
    dev = t.device
    index = index.to(dev)
    n_local = torch.tensor([t.shape[0]], dtype=torch.long, device=dev)
    sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(world)]
    dist.all_gather(sizes, n_local)
    longest = int(max(s.item() for s in sizes))   # world scalars
    pad = torch.zeros((longest - t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype, device=dev)
    padded = torch.cat([t, pad])
    idx_padded = torch.cat([index, torch.full((longest - index.shape[0],), -1, dtype=torch.long,
                                              device=dev)])
    chunks = [torch.zeros_like(padded) for _ in range(world)]
    idx_chunks = [torch.zeros_like(idx_padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    dist.all_gather(idx_chunks, idx_padded)
    out = torch.zeros((total,) + tuple(t.shape[1:]), dtype=t.dtype, device=dev)
    for c, i in zip(chunks, idx_chunks):
        keep = i >= 0
        out[i[keep]] = c[keep]
    return out


def capture_probe(model: nn.Module, layers: Sequence[str], x: torch.Tensor, batch_size: int = 500,
                  progress: bool = False, desc: str = "probe") -> Dict[str, torch.Tensor]:
    """Activations of ``layers`` for the whole probe set ``x``, on the model's device. Under
    torch.distributed each rank runs its shard (a contiguous block) and the
    activations are all-gathered, so every rank returns the same tensors. Shards are
    contiguous blocks in rank order (as in :func:`sharded_probe_graphs`, so that both paths
    run the same forward passes and see the same activations bit for bit)."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    n = x.shape[0]
    if not distributed:
        return run_probe(model, layers, x, batch_size, progress=progress, desc=desc)
    index = _block_of_rank(n)
    acts = run_probe(model, layers, x[index], batch_size, progress=progress, desc=desc)
    return {name: _gather_rows(a, index, n) for name, a in acts.items()}


#: Probe size from which the tracker, early stopping and model selection build their graphs
#: across the ranks of torch.distributed (``torch_geometry.distributed.nnk_graph``) instead of
#: gathering every activation to every rank.
DISTRIBUTED_MIN_POINTS = 20000


def _sharded_graphs_enabled(n: int, min_points: Optional[int], kernel: str,
                            candidate_metric: str) -> bool:
    """Whether a probe of ``n`` inputs takes the sharded path: under torch.distributed with
    more than one rank, ``n >= min_points`` (None = never), and the options the distributed
    graph reproduces bit for bit (cosine kernel, kernel-ranked candidates)."""
    import torch.distributed as dist

    return (min_points is not None and n >= int(min_points)
            and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and kernel == "cosine" and candidate_metric == "kernel")


def _block_of_rank(n: int) -> torch.Tensor:
    """Probe positions of this rank in the sharded path: contiguous blocks in rank order, so
    that the distributed graph's global node indices are probe positions."""
    import torch.distributed as dist

    return torch.arange(n).tensor_split(dist.get_world_size())[dist.get_rank()]


def sharded_probe_graphs(model: nn.Module, layers: Sequence[str], x: torch.Tensor, k: int,
                         reduce: str, batch_size: int = 500, progress: bool = False,
                         desc: str = "probe"):
    """The probe's NNK graphs built across the ranks of torch.distributed.

    Each rank runs its contiguous block of the probe set, reduces the activations as the
    tracker does (``reduce``) and calls ``torch_geometry.distributed.nnk_graph`` (cosine
    kernel, kernel-ranked candidates): the exact search runs as a ring over the shards, so
    no rank holds another rank's activations for it, and each rank ends with the graph of
    its own rows, bit for bit the rows of the single-process graph.

    Returns ``(points, graphs)``: per layer the reduced points and ``(neighbors, weights,
    error)`` (None where some rank had non-finite activations), all-gathered to ``[N, ...]``
    on every rank (the reduced points, not the raw activations, travel)."""
    import torch.distributed as dist

    from . import distributed as tg_dist

    n = x.shape[0]
    index = _block_of_rank(n)
    acts = run_probe(model, layers, x[index], batch_size, progress=progress, desc=desc)
    points, graphs = {}, {}
    for name in layers:
        local = _C.reduce_activations(acts.pop(name), reduce)
        # Non-finite activations on any rank: no graph (the distributed search refuses
        # them); the caller reports them as in the single-process path. Every rank agrees.
        finite = torch.tensor([1.0 if bool(torch.isfinite(local).all()) else 0.0],
                              device=local.device)
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        points[name] = _gather_rows(local, index, n)
        if finite.item() < 1:
            graphs[name] = None
            continue
        g = tg_dist.nnk_graph(local, k)
        graphs[name] = tuple(_gather_rows(t.to(local.device), index, n)
                             for t in (g.neighbors, g.weights, g.error))
    return points, graphs


class GeometryTracker:
    """Tracks the geometry of chosen layers' activations across epochs.

    Three lines in a training loop::

        tracker = torch_geometry.GeometryTracker(model, ["conv1", "conv2", "fc1"], (x, y))
        for epoch in range(epochs):
            train_one_epoch(...)
            tracker.on_epoch_end(epoch)          # NNK graphs + metrics per layer
        tracker.to_json("runs/a/history.json"); tracker.plot("runs/a/geometry.png")

    Args:
        model (nn.Module): the model; activations are captured with forward hooks that exist
            only during the probe pass.
        layers (list[str]): dotted names from ``model.named_modules()``, in model order.
        probe (Tensor[N, ...], (Tensor, Tensor) or DataLoader): the probe inputs (and labels).
        labels (Tensor[N], optional): integer labels, when ``probe`` carries none; enable
            ``loo_error``, ``loo_soft_error`` and ``label_smoothness``.
        k (int): NNK candidates per node. (default: 25)
        kernel (str): ``"cosine"`` or ``"gaussian"``. (default: ``"cosine"``)
        candidate_metric (str): how each node's k candidates are ranked before the kernel
            weighs them: ``"kernel"`` (kernel similarity) or ``"euclidean"`` (L2 distance on
            the reduced activations, as the published DeepNNK code does). (default:
            ``"kernel"``)
        reduce (str, optional): conv maps ``[N, C, H, W]`` -> ``"avgpool"`` (``[N, C]``) or
            ``"flatten"`` (``[N, C*H*W]``). (default: the package's one default,
            ``torch_geometry._C.DEFAULT_REDUCE`` = ``"avgpool"``, shared with early stopping
            and model selection so that a layer gets one LOO error)
        every (int): track every ``every``-th epoch (epochs with ``epoch % every == 0``).
        max_points (int): probe inputs kept (a fixed subset, stratified by label). (default: 2000)
        batch_size (int): probe batch size. (default: 500)
        progress (bool, optional): tqdm bar during the probe pass. (default: on when stderr
            is a terminal)
        seed (int): seed of the probe subset. (default: 0)
        alpha (float): Fukunaga-Olsen threshold of ``local_dim``. (default: 0.05)
        distributed_min_points (int, optional): under torch.distributed, a probe of at least
            this many inputs has its graphs built across the ranks
            (:func:`torch_geometry.distributed.nnk_graph`: the exact search as a ring over
            the ranks' shards) instead of gathering every layer's activations to every rank
            and building the whole graph on each; only the reduced points and the graphs are
            gathered, and the history is the same bit for bit. Needs the cosine kernel and
            ``candidate_metric="kernel"`` (other options take the gathering path). None =
            never. (default: ``DISTRIBUTED_MIN_POINTS`` = 20000)

    Calling :meth:`on_epoch_end` again for the last recorded epoch records nothing and
    returns that epoch's rows; :meth:`state_dict` / :meth:`load_state_dict` resume a run
    (history and the graphs the next ``epoch_overlap`` compares with).

    Under ``torch.distributed``, each rank runs its shard of the probe set and every rank
    computes the same history: below ``distributed_min_points`` inputs the activations are
    gathered to every rank and each builds the graphs; from there on the graphs are built
    across the ranks (:func:`sharded_probe_graphs`) and only the reduced points and the graphs
    are gathered.

    Devices: the activations stay on the model's device and the graphs are built there (CUDA
    tensors take the operators' device-generic path); only per-node metrics and summaries
    come to the host, and the labels are copied to the device once. The probe inputs follow
    the model's device and floating dtype at each capture, so moving the model with
    ``.to(device)`` or ``.double()`` after creating the tracker is fine. float16/bfloat16
    activations (AMP) are accepted and their graphs computed in float32.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], probe: Probe,
                 labels: Optional[torch.Tensor] = None, k: int = 25, kernel: str = "cosine",
                 reduce: Optional[str] = None, every: int = 1, max_points: int = 2000,
                 batch_size: int = 500, progress: Optional[bool] = None, seed: int = 0,
                 alpha: float = 0.05, candidate_metric: str = "kernel",
                 distributed_min_points: Optional[int] = DISTRIBUTED_MIN_POINTS):
        if isinstance(layers, str):
            layers = [layers]
        if not isinstance(every, int) or every <= 0:
            raise ValueError(f"every should be a positive integer, got {every!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k should be a positive integer, got {k!r}")
        self.model = model
        self.layers = list(layers)
        resolve_layers(model, self.layers)
        x, y = materialize_probe(probe, labels)
        subset = _C.probe_subset(x.shape[0], int(max_points), y, int(seed))
        self.probe_x = x[subset]
        self.probe_y = None if y is None else y[subset]
        if self.probe_x.shape[0] <= k:
            raise ValueError(f"the probe set has {self.probe_x.shape[0]} inputs; it needs more "
                             f"than k = {k} (pass more data or a smaller k)")
        self.every = every
        self.batch_size = batch_size
        self.progress = default_progress(progress)
        self.distributed_min_points = distributed_min_points
        self._kernel, self._candidate_metric, self._k = kernel, candidate_metric, int(k)
        self._reduce = _C.DEFAULT_REDUCE if reduce is None else reduce
        options = _C.TrackerOptions()
        options.k, options.kernel, options.alpha = int(k), kernel, float(alpha)
        options.candidate_metric = candidate_metric
        if reduce is not None:
            options.reduce = reduce
        self._core = _C.GeometryTrackerCore(self.layers, options)
        if self.probe_y is not None:
            self._core.set_labels(self.probe_y)

    # -- context manager: hooks live only inside the probe pass; close() is for symmetry
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Nothing stays registered between probe passes; kept for the context manager."""

    def capture(self) -> Dict[str, torch.Tensor]:
        """Runs the probe set (this rank's shard under torch.distributed) and returns each
        layer's activations for the whole probe set ``[N, ...]`` on the model's device."""
        return capture_probe(self.model, self.layers, self.probe_x, self.batch_size,
                             progress=self.progress, desc="geometry probe")

    def _sharded(self) -> bool:
        return _sharded_graphs_enabled(self.probe_x.shape[0], self.distributed_min_points,
                                       self._kernel, self._candidate_metric)

    def on_epoch_end(self, epoch: int) -> Optional[List[dict]]:
        """Measures the geometry at the end of ``epoch`` (if ``epoch % every == 0``).

        Returns the summary rows of this epoch (``epoch, layer, metric, mean, median, q25,
        q75, ...``), or None for an epoch that is not tracked.
        """
        if epoch % self.every != 0:
            return None
        if self._core.last_epoch == epoch:  # already recorded: no second probe pass
            return self._core.step(int(epoch), {})
        if self._sharded():
            acts, graphs = sharded_probe_graphs(
                self.model, self.layers, self.probe_x, self._k, self._reduce, self.batch_size,
                progress=self.progress, desc="geometry probe")
            graphs = {name: g for name, g in graphs.items() if g is not None}
        else:
            acts, graphs = self.capture(), {}
        try:
            return self._core.step(int(epoch), acts, graphs)
        finally:
            del acts, graphs

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The tracker's state as tensors (for ``torch.save`` with a checkpoint): the
        history and the last recorded epoch's graphs."""
        return dict(self._core.state_dict())

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Restores :meth:`state_dict` into a tracker built with the same layers and options
        (and probe set); a state that does not fit is refused and the tracker unchanged."""
        self._core.load_state_dict(dict(state))

    @property
    def history(self) -> List[dict]:
        """One dict per epoch x layer x metric: ``epoch, layer, metric, count, mean, median,
        q25, q75, min, max``."""
        return self._core.history

    def to_json(self, path: Optional[str] = None) -> str:
        """The history as JSON text (options, layers, rows); also written to ``path``."""
        return _write(self._core.to_json(), path)

    def to_csv(self, path: Optional[str] = None) -> str:
        """The history as CSV text (one row per epoch x layer x metric); also written to
        ``path``."""
        return _write(self._core.to_csv(), path)

    def log_to(self, writer, epoch: Optional[int] = None) -> int:
        """Writes the history (or only ``epoch``'s rows) as scalars to a TensorBoard
        ``SummaryWriter``: ``geometry/<layer>/<metric>`` = the mean over the probe nodes,
        ``geometry/<layer>/<metric>/<statistic>`` for median, q25, q75, min and max, at
        global step = epoch. Returns the number of scalars written.

        Example::

            writer = torch.utils.tensorboard.SummaryWriter("runs/a")
            for epoch in range(epochs):
                train_one_epoch(...)
                if tracker.on_epoch_end(epoch):
                    tracker.log_to(writer, epoch)
        """
        from .tensorboard import write_history

        rows = self.history if epoch is None else [r for r in self.history if r["epoch"] == epoch]
        return write_history(writer, rows)

    def plot(self, path: str, metrics: Optional[Sequence[str]] = None,
             title: Optional[str] = None) -> str:
        """Draws the history as a PNG grid (one panel per metric, one line per layer)."""
        from .plotting import plot_history

        return plot_history(self.history, path, metrics=metrics, title=title)


def _write(text: str, path: Optional[str]) -> str:
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return text


def load_history(path: str) -> List[dict]:
    """Reads the ``history`` list of a JSON file written by :meth:`GeometryTracker.to_json`;
    anything else raises a ``ValueError`` that says what was expected."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    rows = data.get("history") if isinstance(data, dict) else data
    required = ("epoch", "layer", "metric", "mean")
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and all(k in r for k in required) for r in rows):
        raise ValueError(f"{path}: expected {{\"history\": [{{epoch, layer, metric, mean, ...}}, "
                         f"...]}} as GeometryTracker.to_json writes it")
    return rows
