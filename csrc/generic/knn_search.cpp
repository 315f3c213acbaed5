#include <algorithm>
#include <cmath>
#include <limits>

#include "generic_common.h"
#include "native_cuda.h"

#ifdef TORCH_GEOMETRY_WITH_NATIVE_CUDA
#include "../cuda/native_kernels.h"
#endif

namespace torch_geometry {
namespace generic {

namespace {

// Candidates kept per row beyond k for the exact rescoring (the CPU kernel's margin).
constexpr int64_t kMargin = 8;
// Bounds of a tile's width; within them, tiles are about square and sized by the memory
// budget (rows_for_budget).
constexpr int64_t kMinTileColumns = 256;
constexpr int64_t kMaxTileColumns = 4096;

// Rows [r0, r0 + nr) of the running top-kk: scores of x_q against every valid candidate,
// merged tile by tile. The score of a pair is a[j] * dot + c[j], up to a term of the query
// alone (as in the CPU kernel): cosine dot / ||x_j||, gaussian 2 dot - ||x_j||^2.
std::tuple<at::Tensor, at::Tensor> select_block(
    const PreparedPoints& pts,
    const at::Tensor& a,
    const at::Tensor& c,
    int64_t r0,
    int64_t nr,
    int64_t kk,
    int64_t tile_cols) {
  const at::Tensor& x = pts.x;
  const int64_t n = x.size(0);
  const auto dopt = a.options();
  const auto lopt = dopt.dtype(at::kLong);
  const double ninf = -std::numeric_limits<double>::infinity();
  at::Tensor best_s = at::full({nr, kk}, ninf, dopt);
  at::Tensor best_i = at::full({nr, kk}, -1, lopt);
  const at::Tensor xq = x.narrow(0, r0, nr);
  const at::Tensor rows = at::arange(r0, r0 + nr, lopt).unsqueeze(1);
  const at::Tensor row_ok = pts.valid.narrow(0, r0, nr).unsqueeze(1);
  for (int64_t c0 = 0; c0 < n; c0 += tile_cols) {
    const int64_t nc = std::min(tile_cols, n - c0);
    const at::Tensor cols = at::arange(c0, c0 + nc, lopt);
    at::Tensor v = at::mm(xq, x.narrow(0, c0, nc).t()).to(at::kDouble);
    v.mul_(a.narrow(0, c0, nc)).add_(c.narrow(0, c0, nc));
    const at::Tensor keep =
        row_ok & pts.valid.narrow(0, c0, nc).unsqueeze(0) & (cols.unsqueeze(0) != rows);
    v.masked_fill_(at::logical_not(keep), ninf);
    // Earlier tiles hold smaller indices and come first: a stable sort keeps ties in
    // index order, as the CPU heap's "larger score, then smaller index" does.
    const at::Tensor all_s = at::cat({best_s, v}, 1);
    const at::Tensor all_i = at::cat({best_i, cols.unsqueeze(0).expand({nr, nc})}, 1);
    at::Tensor order = std::get<1>(stable_sort(all_s, /*descending=*/true)).narrow(1, 0, kk);
    best_s = all_s.gather(1, order);
    best_i = all_i.gather(1, order);
  }
  best_i.masked_fill_(best_s == ninf, -1);
  return std::make_tuple(best_s, best_i);
}

} // namespace

at::Tensor raw_scores(const PreparedPoints& pts, Kernel kernel, int64_t r0, const at::Tensor& cand) {
  const at::Tensor& x = pts.x;
  const int64_t nr = cand.size(0), m = cand.size(1), d = x.size(1);
  const at::Tensor present = cand >= 0;
  const at::Tensor flat = cand.clamp_min(0).reshape({-1});
  const at::Tensor xq = x.narrow(0, r0, nr).to(at::kDouble);
  const at::Tensor xc = x.index_select(0, flat).to(at::kDouble).view({nr, m, d});
  at::Tensor raw;
  if (kernel == Kernel::Cosine) {
    const at::Tensor dots = at::bmm(xc, xq.unsqueeze(2)).squeeze(2);
    const at::Tensor scale = pts.inv_norm.narrow(0, r0, nr).unsqueeze(1) *
        pts.inv_norm.index_select(0, flat).view({nr, m});
    raw = (dots * scale).clamp(-1.0, 1.0);
  } else {
    raw = (xc - xq.unsqueeze(1)).square().sum(2);
  }
  return raw.masked_fill(at::logical_not(present), 0.0);
}

std::tuple<at::Tensor, at::Tensor> knn_search(const PreparedPoints& pts, Kernel kernel, int64_t k) {
  const at::Tensor& x = pts.x;
  const int64_t n = x.size(0);
  const int64_t d = x.size(1);
  const bool cosine = kernel == Kernel::Cosine;
  const int64_t kk = std::min(k + kMargin, n - 1);
  const at::Tensor a = cosine ? pts.inv_norm : at::full_like(pts.sq_norm, 2.0);
  const at::Tensor c = cosine ? at::zeros_like(pts.sq_norm) : -pts.sq_norm;
  const auto lopt = x.options().dtype(at::kLong);
  const double ninf = -std::numeric_limits<double>::infinity();

  at::Tensor index = at::full({n, k}, -1, lopt);
  at::Tensor score = at::zeros({n, k}, x.options().dtype(at::kDouble));
  // A tile is about square, sized by the budget: per score, the tile in x's dtype and in
  // float64, its mask, and the merged scores with their sort (values, indices, copies).
  const int64_t elem = static_cast<int64_t>(x.element_size());
  const int64_t per_score = elem + 8 + 1 + 8 * 5;
  const int64_t scores = rows_for_budget(per_score, n * n);
  const int64_t side = static_cast<int64_t>(std::sqrt(static_cast<double>(scores)));
  const int64_t tile_cols = std::min(n, std::max<int64_t>(kMinTileColumns, std::min(kMaxTileColumns, side)));
  const int64_t select_rows = rows_for_budget((tile_cols + kk) * per_score, n);
  // Per query row of the rescoring: kk gathered candidate rows in float64, twice.
  const int64_t rescore_rows = rows_for_budget(kk * d * 8 * 2 + 1, n);
  const int64_t rows = std::min(select_rows, rescore_rows);
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t nr = std::min(rows, n - r0);
    at::Tensor cand;
#ifdef TORCH_GEOMETRY_WITH_NATIVE_CUDA
    if (use_native_cuda(x) && x.is_contiguous() && kk <= 256) {
      cand = cuda::knn_select(x, a, c, pts.valid, r0, nr, kk);
    }
#endif
    if (!cand.defined()) {
      cand = std::get<1>(select_block(pts, a, c, r0, nr, kk, tile_cols));
    }
    // Exact rescoring in float64: the GEMM only chose the kk candidates.
    const at::Tensor present = cand >= 0;
    const at::Tensor raw = raw_scores(pts, kernel, r0, cand);
    at::Tensor rank = cosine ? raw : -raw;  // larger is better
    rank = rank.masked_fill(at::logical_not(present), ninf);
    // Best k by (score descending, index ascending): order by index, then a stable sort
    // on the score.
    const at::Tensor by_index =
        std::get<1>(stable_sort(cand.masked_fill(at::logical_not(present), n), false));
    const at::Tensor rank_i = rank.gather(1, by_index);
    const at::Tensor order =
        by_index.gather(1, std::get<1>(stable_sort(rank_i, true))).narrow(1, 0, k);
    const at::Tensor chosen = present.gather(1, order);
    index.narrow(0, r0, nr).copy_(cand.gather(1, order).masked_fill(at::logical_not(chosen), -1));
    score.narrow(0, r0, nr).copy_(raw.gather(1, order).masked_fill(at::logical_not(chosen), 0.0));
  }
  return std::make_tuple(index, score);
}

at::Tensor euclidean_candidates(const at::Tensor& x, const at::Tensor& valid, int64_t k) {
  PreparedPoints pts = prepare_points(x, Kernel::Gaussian);
  pts.valid = valid;
  return std::get<0>(knn_search(pts, Kernel::Gaussian, k));
}

} // namespace generic
} // namespace torch_geometry
