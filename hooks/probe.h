// The probe set: a fixed subset of the training data that geometry is measured on.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace torch_geometry {
namespace hooks {

// Indices of a subset of `n` inputs of at most `max_points`, fixed by `seed`, returned
// sorted ([M] int64). With labels ([n] integer), the subset is stratified: each class keeps
// its share of the data (largest-remainder rounding), so rare classes are not lost. With
// n <= max_points every index is returned.
at::Tensor probe_subset(
    int64_t n,
    int64_t max_points,
    const c10::optional<at::Tensor>& labels,
    uint64_t seed = 0);

} // namespace hooks
} // namespace torch_geometry
