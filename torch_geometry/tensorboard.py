"""The tracker's history as scalars for TensorBoard and for training loggers.

One history row (one metric of one layer at one epoch) becomes the scalars

- ``geometry/<layer>/<metric>``: the mean over the probe nodes;
- ``geometry/<layer>/<metric>/<statistic>`` for median, q25, q75, min and max;

at global step = epoch. :meth:`torch_geometry.GeometryTracker.log_to` writes them with any
writer that has TensorBoard's ``add_scalar(tag, value, global_step)``
(``torch.utils.tensorboard.SummaryWriter``, tensorboardX); the Lightning callback logs the
same names.
"""
from typing import Any, Dict, Iterable, Sequence

STATISTICS = ("mean", "median", "q25", "q75", "min", "max")


def row_scalars(row: Dict[str, Any], statistics: Sequence[str] = STATISTICS) -> Dict[str, float]:
    """The scalars of one history row, tag -> value (NaN stays NaN: a metric without values)."""
    base = f"geometry/{row['layer']}/{row['metric']}"
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown:
        raise ValueError(f"statistics should be among {STATISTICS}, got {unknown}")
    return {base if s == "mean" else f"{base}/{s}": float(row[s]) for s in statistics}


def write_history(writer: Any, rows: Iterable[Dict[str, Any]],
                  statistics: Sequence[str] = STATISTICS) -> int:
    """Writes every row's scalars with ``writer.add_scalar`` at step = the row's epoch, then
    flushes the writer. Returns the number of scalars written."""
    if not callable(getattr(writer, "add_scalar", None)):
        raise TypeError("writer should have add_scalar(tag, value, global_step), e.g. "
                        f"torch.utils.tensorboard.SummaryWriter; got {type(writer).__name__}")
    written = 0
    for row in rows:
        for tag, value in row_scalars(row, statistics).items():
            writer.add_scalar(tag, value, global_step=int(row["epoch"]))
            written += 1
    if callable(getattr(writer, "flush", None)):
        writer.flush()
    return written
