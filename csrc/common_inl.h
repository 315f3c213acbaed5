// Template definitions of common.h.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

namespace torch_geometry {

template <typename F>
void parallel_chunks(int64_t n, int64_t chunk, const F& body) {
  if (n <= 0) {
    return;
  }
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int64_t workers = std::min<int64_t>(chunks, at::get_num_threads());
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    // A worker (one per thread, or all of them in turn when run serially) takes chunks
    // until none is left.
    for (int64_t w = w0; w < w1; ++w) {
      for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
        body(c * chunk, std::min(n, (c + 1) * chunk));
      }
    }
  });
}

} // namespace torch_geometry
