// torch_geometry out of sample: NNK neighbourhoods of new points among a reference set and
// NNK interpolation of reference values (also callable as
// torch.ops.torch_geometry.nnk_neighbors / nnk_interpolate).
#pragma once

#include "csrc/nnk_neighbors.h"
