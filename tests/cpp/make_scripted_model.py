"""Writes the TorchScript fixture of the ctest round trip (CMake runs it as a ctest fixture).

Usage: python make_scripted_model.py OUT_DIR

OUT_DIR/model.pt     a scripted module whose forward(x, labels, maps) calls every
                     torch.ops.torch_geometry operator
OUT_DIR/expected.pt  a scripted container: buffers x, labels, maps (the inputs) and
                     out_0 ... out_{n-1} (what Python got), attribute num_outputs
tests/cpp/jit_scripted_model.cpp loads both with torch::jit::load and compares.
"""
import os
import sys
from typing import Tuple

import torch

import torch_geometry  # noqa: F401  (registers torch.ops.torch_geometry)

Tensor = torch.Tensor


class GeometryModel(torch.nn.Module):
    def __init__(self, k: int, num_classes: int):
        super().__init__()
        self.k = k
        self.num_classes = num_classes

    def forward(self, x: Tensor, labels: Tensor, maps: Tensor) -> Tuple[
            Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
            Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
            Tensor]:
        ops = torch.ops.torch_geometry
        nbr, w, err = ops.nnk_graph(x, self.k, "cosine", None, "mean", None, 1e-10)
        ei, ew = ops.nnk_symmetrize(nbr, w, err, "min_error")
        degree, diameter, local_dim, log_volume, curvature = ops.manifold_metrics(
            x, nbr, w, "cosine", 0.05)
        hard, soft = ops.nnk_loo_error(nbr, w, labels, self.num_classes)
        smooth = ops.label_smoothness(nbr, w, labels)
        knn, sim = ops.knn_graph(x, self.k, "gaussian", None, "mean")
        gn, gw, ge = ops.nnk_graph(x, self.k, "gaussian", None, "mean", None, 1e-10)
        jaccard, weighted = ops.neighborhood_overlap(nbr, w, gn, gw)
        cn, cw, ce = ops.channel_nnk_graph(maps, self.k, "cosine", 1e-10)
        co = ops.channel_overlap(cn, cw)
        return (nbr, w, err, ei, ew, degree, diameter, local_dim, log_volume, curvature,
                hard, soft, torch.tensor([smooth], dtype=torch.float64), knn, sim, jaccard,
                weighted, cn, cw, ce, co)


class Container(torch.nn.Module):
    def __init__(self, tensors):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t)

    def forward(self) -> int:
        return 0


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(7)
    n, k, classes = 240, 10, 3
    labels = torch.arange(n) % classes
    x = torch.randn(classes, 16, dtype=torch.float64)[labels] + 0.8 * torch.randn(
        n, 16, dtype=torch.float64)
    maps = torch.relu(torch.randn(n, 4, 5, 5))
    model = torch.jit.script(GeometryModel(k, classes))
    model.save(os.path.join(out_dir, "model.pt"))
    outputs = model(x, labels, maps)
    tensors = {"x": x, "labels": labels, "maps": maps}
    tensors.update({f"out_{i}": t for i, t in enumerate(outputs)})
    container = Container(tensors)
    container.num_outputs = len(outputs)
    torch.jit.script(container).save(os.path.join(out_dir, "expected.pt"))
    print(f"wrote {out_dir}/model.pt and expected.pt ({len(outputs)} outputs)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_scripted_model.py OUT_DIR")
    main(sys.argv[1])
