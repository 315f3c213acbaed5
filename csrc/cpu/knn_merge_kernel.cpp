#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "../common.h"
#include "knn_search.h"
#include "simd_dot.h"

namespace torch_geometry {
namespace ops {

namespace {

// The exact search's order (knn_search.cpp): larger cos first, then the smaller
// id.
bool better(const std::pair<double, int64_t>& p, const std::pair<double, int64_t>& q) {
  return p.first > q.first || (p.first == q.first && p.second < q.second);
}

void check_ids(const at::Tensor& ids, int64_t n, const char* name) {
  TORCH_CHECK(ids.scalar_type() == at::kLong && ids.dim() == 1 && ids.size(0) == n,
              "knn_merge: ", name, " should be int64 of shape [", n, "], got ", ids.scalar_type(),
              " of shape ", ids.sizes());
  TORCH_CHECK(ids.device().is_cpu(), "knn_merge: ", name, " should be on the CPU, got ",
              ids.device());
}

template <typename scalar_t>
void merge_impl(const cpu::PreparedPoints& q, const int64_t* qid, const cpu::PreparedPoints& p,
                const int64_t* pid, const int64_t* R, int64_t L, int64_t k, int64_t* out_i,
                double* out_s) {
  const int64_t m = q.x.size(0), d = q.x.size(1);
  const scalar_t* Q = q.x.data_ptr<scalar_t>();
  const scalar_t* P = p.x.data_ptr<scalar_t>();
  at::parallel_for(0, m, 64, [&](int64_t i0, int64_t i1) {
    std::vector<const scalar_t*> ptrs(L);
    std::vector<scalar_t> raw(L);
    std::vector<std::pair<double, int64_t>> cand(L);
    std::vector<int64_t> seen;
    for (int64_t i = i0; i < i1; ++i) {
      int64_t cnt = 0;
      seen.clear();
      if (q.valid[i]) {
        for (int64_t l = 0; l < L; ++l) {
          const int64_t r = R[i * L + l];
          if (r < 0 || !p.valid[r] || pid[r] == qid[i] ||
              std::find(seen.begin(), seen.end(), r) != seen.end()) {
            continue;
          }
          seen.push_back(r);
          cand[cnt].second = pid[r];
          ptrs[cnt++] = P + r * d;
        }
      }
      cpu::dot_many(Q + i * d, ptrs.data(), static_cast<int>(cnt), d, raw.data());
      for (int64_t l = 0; l < cnt; ++l) {
        const int64_t r = seen[l];
        // The same expression as the exact search's rescoring, for the same
        // bits.
        cand[l].first = std::min(
            1.0, std::max(-1.0, static_cast<double>(raw[l]) * (q.inv_norm[i] * p.inv_norm[r])));
      }
      std::sort(cand.begin(), cand.begin() + cnt, better);
      for (int64_t l = 0; l < k; ++l) {
        const bool have = l < cnt;
        out_i[i * k + l] = have ? cand[l].second : -1;
        out_s[i * k + l] = have ? cand[l].first : 0.0;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> knn_merge_kernel(const at::Tensor& queries,
                                                    const at::Tensor& query_ids,
                                                    const at::Tensor& points,
                                                    const at::Tensor& point_ids,
                                                    const at::Tensor& rows, int64_t k) {
  const char* op = "knn_merge";
  check_points(queries, op);
  check_points(points, op);
  TORCH_CHECK(points.scalar_type() == queries.scalar_type(), op,
              ": points should have the dtype of queries (", queries.scalar_type(), "), got ",
              points.scalar_type());
  TORCH_CHECK(points.size(1) == queries.size(1), op, ": points should have D = ", queries.size(1),
              " columns like queries, got ", points.size(1));
  TORCH_CHECK(k >= 1, op, ": k should be >= 1, got ", k);
  const int64_t m = queries.size(0), c = points.size(0);
  check_ids(query_ids, m, "query_ids");
  check_ids(point_ids, c, "point_ids");
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.dim() == 2 && rows.size(0) == m &&
                  rows.device().is_cpu(),
              op, ": rows should be int64 [M, L] = [", m, ", L] on the CPU, got ",
              rows.scalar_type(), " of shape ", rows.sizes(), " on ", rows.device());
  const at::Tensor r = rows.contiguous();
  if (r.numel() > 0) {
    const int64_t lo = r.min().item<int64_t>(), hi = r.max().item<int64_t>();
    TORCH_CHECK(lo >= -1 && hi < c, op, ": rows should index points, in [0, ", c,
                ") or -1 for padding, got values in [", lo, ", ", hi, "]");
  }
  const at::Tensor qi = query_ids.contiguous(), pi = point_ids.contiguous();
  const cpu::PreparedPoints q = cpu::prepare_points(queries, Kernel::Cosine);
  const cpu::PreparedPoints p = cpu::prepare_points(points, Kernel::Cosine);
  at::Tensor index = at::empty({m, k}, queries.options().dtype(at::kLong));
  at::Tensor score = at::empty({m, k}, queries.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(queries.scalar_type(), "knn_merge", [&] {
    merge_impl<scalar_t>(q, qi.data_ptr<int64_t>(), p, pi.data_ptr<int64_t>(),
                         r.data_ptr<int64_t>(), r.size(1), k, index.data_ptr<int64_t>(),
                         score.data_ptr<double>());
  });
  return std::make_tuple(index, score);
}

}  // namespace

TORCH_LIBRARY_IMPL(torch_geometry, CPU, m) {
  m.impl("_knn_merge", &knn_merge_kernel);
}

}  // namespace ops
}  // namespace torch_geometry
