// torch_geometry: NNK graphs and manifold graph metrics for LibTorch programs.
//
// One include for C++ users: `#include <torch_geometry/torch_geometry.h>` after
// `find_package(TorchGeometry)` and linking `TorchGeometry::TorchGeometry`.
#pragma once

#include "csrc/knn_graph.h"
#include "csrc/nnk_graph.h"
#include "csrc/nnk_symmetrize.h"
