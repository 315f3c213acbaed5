"""Geometry plots and the plot command line: one colour per layer, clear errors."""
import json
import subprocess
import sys

import matplotlib
import pytest

from torch_geometry.plotting import draw_history, plot_history

matplotlib.use("Agg")


def rows(epochs, layers, metrics, skip=()):
    out = []
    for e in epochs:
        for i, layer in enumerate(layers):
            for m in metrics:
                if (layer, m) in skip:
                    continue
                v = 0.1 * e + i
                out.append({"epoch": e, "layer": layer, "metric": m, "count": 10, "mean": v,
                            "median": v, "q25": v - 0.05, "q75": v + 0.05, "min": v - 1,
                            "max": v + 1})
    return out


def lines_by_label(ax):
    return {line.get_label(): line.get_color() for line in ax.get_lines()}


def test_each_layer_has_one_colour_in_every_panel_and_in_the_legend():
    layers = ["conv1", "conv2", "fc"]
    # The first layer has no layer_overlap (nothing before it): the case that shifted colours.
    history = rows([0, 1, 2], layers, ["degree", "layer_overlap"],
                   skip={("conv1", "layer_overlap")})
    fig = draw_history(history)
    degree, overlap = fig.axes[0], fig.axes[1]
    assert degree.get_title() == "degree" and overlap.get_title() == "layer_overlap"
    colours = lines_by_label(degree)
    assert set(colours) == set(layers) and len(set(colours.values())) == 3
    assert lines_by_label(overlap) == {l: colours[l] for l in ["conv2", "fc"]}
    # The y values follow the layer too (conv2 = 1 + 0.1 epoch).
    conv2 = [l for l in overlap.get_lines() if l.get_label() == "conv2"][0]
    assert list(conv2.get_ydata()) == pytest.approx([1.0, 1.1, 1.2])
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == layers
    handles = getattr(legend, "legend_handles", None) or legend.legendHandles  # matplotlib < 3.7
    assert [h.get_color() for h in handles] == [colours[l] for l in layers]
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_a_one_epoch_plot_has_one_tick_at_that_epoch():
    fig = draw_history(rows([4], ["a", "b"], ["degree"]))
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [4]
    lo, hi = ax.get_xlim()
    assert lo < 4 < hi and hi - lo == pytest.approx(1.0)
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_unknown_metrics_are_refused_with_the_known_ones():
    history = rows([0], ["a"], ["degree", "error"])
    with pytest.raises(ValueError, match=r"unknown metrics \['degre'\]; the history has "
                                         r"\['degree', 'error'\]"):
        draw_history(history, metrics=["degre"])


def cli(*args):
    return subprocess.run([sys.executable, "-m", "torch_geometry", "plot", *args],
                          capture_output=True, text=True)


def test_cli_errors_are_clear(tmp_path):
    good = tmp_path / "history.json"
    good.write_text(json.dumps({"history": rows([0, 1], ["a"], ["degree"])}))
    out = cli(str(good), "--metrics", "nope", "--out", str(tmp_path / "x.png"))
    assert out.returncode == 2 and "unknown metrics ['nope']" in out.stderr
    assert "Traceback" not in out.stderr
    for name, text in [("bad.json", "not json {"), ("list.json", "[1, 2]"),
                       ("bin.json", b"\xff\xfe\x00".decode("latin-1"))]:
        path = tmp_path / name
        path.write_text(text, encoding="latin-1")
        out = cli(str(path))
        assert out.returncode == 2, (name, out.stderr)
        assert "is not a history JSON file" in out.stderr and "Traceback" not in out.stderr
    out = cli(str(good), "--out", str(tmp_path / "ok.png"))
    assert out.returncode == 0 and (tmp_path / "ok.png").stat().st_size > 5_000
    assert plot_history(json.loads(good.read_text())["history"], str(tmp_path / "p.png"))
