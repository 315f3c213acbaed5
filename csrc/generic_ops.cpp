// The device-generic kernels (csrc/generic/), compiled through this one file until the
// build globs csrc/generic/*.cpp itself.
#include "generic/channel_nnk_kernel.cpp"
#include "generic/generic_common.cpp"
#include "generic/graph_overlap_kernel.cpp"
#include "generic/knn_graph_kernel.cpp"
#include "generic/knn_search.cpp"
#include "generic/label_metrics_kernel.cpp"
#include "generic/manifold_metrics_kernel.cpp"
#include "generic/native_cuda.cpp"
#include "generic/nnk_graph_kernel.cpp"
#include "generic/nnk_symmetrize_kernel.cpp"
