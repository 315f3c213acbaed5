// torch_geometry: NNK graphs and manifold graph metrics for LibTorch programs.
//
// One include for C++ users: `#include <torch_geometry/torch_geometry.h>` after
// `find_package(TorchGeometry)` and linking `TorchGeometry::TorchGeometry`.
#pragma once

// Operators (each also callable as torch.ops.torch_geometry.<name>).
#include "csrc/channel_nnk.h"
#include "csrc/graph_overlap.h"
#include "csrc/knn_graph.h"
#include "csrc/label_metrics.h"
#include "csrc/manifold_metrics.h"
#include "csrc/nnk_graph.h"
#include "csrc/nnk_neighbors.h"  // out of sample: nnk_neighbors, nnk_interpolate
#include "csrc/nnk_symmetrize.h"

// Training state for LibTorch trainers.
#include "hooks/early_stopping.h"
#include "hooks/geometry_tracker.h"
#include "hooks/probe.h"
#include "hooks/summary.h"
#include "hooks/tap.h"
