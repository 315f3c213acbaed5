// The one place where the device-generic kernels meet differences between the torch
// versions they build against (Debian's 1.13 and PyPI's 2.x).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace torch_geometry {
namespace generic {

// c10::optional is std::optional from torch 2.4 on; the name works in both.
template <typename T>
using optional = c10::optional<T>;

// Sort along dim 1 keeping the order of equal elements (ties broken by position). The
// stable overload takes an optional<bool> in both versions; the wrapper keeps call sites
// free of that detail.
inline std::tuple<at::Tensor, at::Tensor> stable_sort(
    const at::Tensor& values,
    bool descending) {
  return at::sort(values, optional<bool>(true), /*dim=*/1, descending);
}

// Batched lower Cholesky factor without throwing on a non positive definite block: info[b]
// is 0 where block b factorised.
inline std::tuple<at::Tensor, at::Tensor> cholesky_ex(const at::Tensor& a) {
  return at::linalg_cholesky_ex(a, /*upper=*/false, /*check_errors=*/false);
}

} // namespace generic
} // namespace torch_geometry
