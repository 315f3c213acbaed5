// Device-generic nnk_graph: the CPU kernel's rules (csrc/cpu/nnk_graph_kernel.cpp,
// csrc/cpu/nnk_solver.h) with the per-node QPs solved a block of nodes at a time by a
// batched Lawson-Hanson active set on [B, k, k] kernel blocks.
#include <torch/library.h>

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

constexpr const char* kOp = "nnk_graph";
// The CPU solver's options (nnk::QPOptions): KKT tolerance off the support, ridge relative
// to the largest diagonal entry (1: kappa(x, x) = 1), and the weight below which a step
// removes an index from the active set.
constexpr double kTol = 1e-10;
constexpr double kRidge = 1e-12;
constexpr double kTiny = 1e-15;

// csrc/cpu/nnk_graph_kernel.cpp's clean_candidates: in range, no self, no repeats, no
// invalid (zero-row) points, packed to the front (order kept) and padded with -1.
at::Tensor clean_candidates(const at::Tensor& cand, const at::Tensor& x, int64_t k,
                            const at::Tensor& valid) {
  const int64_t n = x.size(0);
  TORCH_CHECK(cand.scalar_type() == at::kLong, kOp,
              ": candidates should be int64 indices, got ", cand.scalar_type());
  TORCH_CHECK(cand.dim() == 2 && cand.size(0) == n && cand.size(1) == k, kOp,
              ": candidates should have shape [N, k] = [", n, ", ", k, "], got ", cand.sizes());
  TORCH_CHECK(cand.device() == x.device(), kOp, ": candidates should be on the device of x (",
              x.device(), "), got ", cand.device());
  const at::Tensor range = at::stack({cand.min(), cand.max()}).cpu();
  const int64_t lo = range.data_ptr<int64_t>()[0], hi = range.data_ptr<int64_t>()[1];
  TORCH_CHECK(lo >= -1 && hi < n, kOp, ": candidates should be indices in [0, N) = [0, ", n,
              ") or -1 for padding, got values in [", lo, ", ", hi, "]");
  at::Tensor out = at::empty({n, k}, cand.options());
  // Earlier slots only: a repeat is an entry equal to a usable entry before it.
  const at::Tensor before = at::ones({k, k}, cand.options().dtype(at::kBool)).tril(-1);
  const int64_t rows = rows_for_budget(k * k * 3 + k * 64, n);
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t nr = std::min(rows, n - r0);
    const at::Tensor c = cand.narrow(0, r0, nr);
    const at::Tensor self = at::arange(r0, r0 + nr, c.options()).unsqueeze(1);
    const at::Tensor usable = (c >= 0) & (c != self) &
        valid.index_select(0, c.clamp_min(0).reshape({-1})).view({nr, k}) &
        valid.narrow(0, r0, nr).unsqueeze(1);
    const at::Tensor same = (c.unsqueeze(2) == c.unsqueeze(1)) & before & usable.unsqueeze(1);
    const at::Tensor keep = usable & at::logical_not(same.any(2));
    const at::Tensor order = std::get<1>(stable_sort(at::logical_not(keep).to(at::kByte), false));
    out.narrow(0, r0, nr).copy_(
        c.gather(1, order).masked_fill(at::logical_not(keep.gather(1, order)), -1));
  }
  return out;
}

// [b, k, k]: K on the active rows and columns, ridge added to their diagonal, the identity
// elsewhere, so that a solve leaves inactive entries at 0.
at::Tensor masked_block(const at::Tensor& K, const at::Tensor& active) {
  const at::Tensor both = active.unsqueeze(2) & active.unsqueeze(1);
  const at::Tensor diag = at::where(active, at::full_like(K.select(2, 0), kRidge),
                                    at::ones_like(K.select(2, 0)));
  return at::where(both, K, at::zeros_like(K)) + at::diag_embed(diag);
}

// x[b, j[b]] for a [b, k] tensor.
at::Tensor pick(const at::Tensor& t, const at::Tensor& j) {
  return t.gather(1, j.unsqueeze(1)).squeeze(1);
}

// Batched Lawson-Hanson over nodes that each run the CPU solver's steps: an outer step
// (entering candidate by the largest gradient above kTol; skipped when its Schur complement
// is below half the ridge, i.e. numerically dependent on the active set) and inner steps
// (solve on the active set; if infeasible, step back to the boundary and drop the blocking
// index). A node is done when no candidate enters. Every node of the block runs until it
// satisfies KKT; nodes advance independently, one step per round.
//   K [B, k, k] float64 (1 on the diagonal), b [B, k] float64, present [B, k] bool.
// Returns theta [B, k] float64.
at::Tensor solve_block(const at::Tensor& K, const at::Tensor& b, const at::Tensor& present) {
  const int64_t nb = K.size(0), k = K.size(1);
  const auto lopt = b.options().dtype(at::kLong);
  const double ninf = -std::numeric_limits<double>::infinity();
  at::Tensor theta = at::zeros_like(b);
  at::Tensor active = at::zeros_like(present);
  at::Tensor skipped = at::zeros_like(present);
  at::Tensor w = b.clone();
  at::Tensor phase = at::zeros({nb}, lopt);  // 0 outer, 1 inner, 2 done
  at::Tensor first = at::zeros({nb}, present.options());
  at::Tensor entering = at::zeros({nb}, lopt);
  at::Tensor iters = at::zeros({nb}, lopt);
  const at::Tensor max_iter = present.sum(1) * 5 + 20;

  auto update_w = [&](const at::Tensor& idx) {
    const at::Tensor t = theta.index_select(0, idx);
    const at::Tensor g = at::bmm(K.index_select(0, idx), t.unsqueeze(2)).squeeze(2);
    w.index_copy_(0, idx, b.index_select(0, idx) - g - kRidge * t);
  };

  const int64_t max_rounds = (5 * k + 20) * (k + 2) + 10;
  for (int64_t round = 0; round < max_rounds; ++round) {
    // Outer step.
    const at::Tensor oidx = (phase == 0).nonzero().squeeze(1);
    if (oidx.numel() > 0) {
      const at::Tensor act = active.index_select(0, oidx);
      const at::Tensor wo = w.index_select(0, oidx);
      const at::Tensor can = present.index_select(0, oidx) & at::logical_not(act) &
          at::logical_not(skipped.index_select(0, oidx)) & (wo > kTol);
      const at::Tensor stop = at::logical_not(can.any(1)) |
          (iters.index_select(0, oidx) >= max_iter.index_select(0, oidx));
      phase.index_copy_(0, oidx, at::where(stop, at::full_like(stop, 2, lopt), at::zeros_like(stop, lopt)));
      const at::Tensor go = at::logical_not(stop).nonzero().squeeze(1);
      if (go.numel() > 0) {
        const at::Tensor idx = oidx.index_select(0, go);
        const at::Tensor j = wo.index_select(0, go)
                                 .masked_fill(at::logical_not(can.index_select(0, go)), ninf)
                                 .argmax(1);
        iters.index_add_(0, idx, at::ones_like(idx));
        // Schur complement of j against the active block.
        const at::Tensor a = act.index_select(0, go);
        const at::Tensor Ki = K.index_select(0, idx);
        const at::Tensor L = std::get<0>(cholesky_ex(masked_block(Ki, a)));
        const at::Tensor kj =
            Ki.gather(2, j.view({-1, 1, 1}).expand({-1, k, 1})).squeeze(2).masked_fill(at::logical_not(a), 0.0);
        const at::Tensor y = at::cholesky_solve(kj.unsqueeze(2), L, /*upper=*/false).squeeze(2);
        const at::Tensor pivot = 1.0 + kRidge - (kj * y).sum(1);
        const at::Tensor ok = pivot > 0.5 * kRidge;
        const at::Tensor onehot = at::zeros_like(a).scatter_(1, j.unsqueeze(1), true);
        active.index_copy_(0, idx, a | (onehot & ok.unsqueeze(1)));
        skipped.index_copy_(0, idx, skipped.index_select(0, idx) | (onehot & at::logical_not(ok).unsqueeze(1)));
        phase.index_copy_(0, idx, ok.to(at::kLong));
        first.index_copy_(0, idx, ok | first.index_select(0, idx));
        entering.index_copy_(0, idx, at::where(ok, j, entering.index_select(0, idx)));
      }
    }
    // Inner step.
    const at::Tensor iidx = (phase == 1).nonzero().squeeze(1);
    if (iidx.numel() == 0) {
      if (oidx.numel() == 0) {
        break;
      }
      continue;
    }
    const at::Tensor a = active.index_select(0, iidx);
    const at::Tensor Ki = K.index_select(0, iidx);
    at::Tensor L, info;
    std::tie(L, info) = cholesky_ex(masked_block(Ki, a));
    const at::Tensor rhs = b.index_select(0, iidx).masked_fill(at::logical_not(a), 0.0);
    const at::Tensor z = at::cholesky_solve(rhs.unsqueeze(2), L, /*upper=*/false).squeeze(2);
    const at::Tensor t = theta.index_select(0, iidx);
    const at::Tensor positive = z > 0;
    const at::Tensor feasible = (positive | at::logical_not(a)).all(1);
    const at::Tensor j = entering.index_select(0, iidx);
    const at::Tensor fst = first.index_select(0, iidx);
    const at::Tensor j_onehot = at::zeros_like(a).scatter_(1, j.unsqueeze(1), true);
    // The entering index cannot take a positive weight on its first solve: a numerically
    // degenerate direction; skip it rather than cycle.
    const at::Tensor degenerate =
        at::logical_not(feasible) & fst & at::logical_not(pick(positive, j));
    const at::Tensor stepping = at::logical_not(feasible) & at::logical_not(degenerate);
    // Step from theta towards z until the first active weight reaches zero.
    const at::Tensor blocking = a & at::logical_not(positive);
    const at::Tensor denom = t - z;
    // t / (t - z); 0 / 0 (t = z = 0) blocks nothing, as NaN does in the CPU solver.
    const at::Tensor ratio = at::where(blocking & (denom > 0), t / denom.clamp_min(1e-300),
                                       at::full_like(t, 2.0));
    at::Tensor alpha, hit;
    std::tie(alpha, hit) = ratio.min(1);
    const at::Tensor hits = alpha < 1.0;
    alpha = alpha.clamp_max(1.0);
    const at::Tensor moved = at::where(a, t + alpha.unsqueeze(1) * (z - t), t);
    const at::Tensor hit_onehot =
        at::zeros_like(a).scatter_(1, hit.unsqueeze(1), true) & hits.unsqueeze(1);
    const at::Tensor removed = a & (hit_onehot | (moved <= kTiny));

    const at::Tensor st = stepping.unsqueeze(1);
    const at::Tensor fe = feasible.unsqueeze(1);
    const at::Tensor dg = degenerate.unsqueeze(1);
    at::Tensor new_theta = at::where(fe, at::where(a, z, t), t);
    new_theta = at::where(st, moved.masked_fill(removed, 0.0), new_theta);
    at::Tensor new_active = at::where(dg, a & at::logical_not(j_onehot), a);
    new_active = at::where(st, a & at::logical_not(removed), new_active);
    // The active set grew: a candidate skipped against the old set may now be independent
    // of it, so it gets another chance.
    const at::Tensor grew = feasible & pick(a, j);
    at::Tensor sk = skipped.index_select(0, iidx);
    sk = at::where(grew.unsqueeze(1), at::zeros_like(sk), sk) | (dg & j_onehot);
    const at::Tensor emptied = stepping & at::logical_not(new_active.any(1));
    const at::Tensor leave = feasible | degenerate | emptied;
    // A block that does not factorise (rounding only: every block passed the Schur test)
    // ends the node with the weights it has.
    const at::Tensor broken = info != 0;
    theta.index_copy_(0, iidx, at::where(broken.unsqueeze(1), t, new_theta));
    active.index_copy_(0, iidx, at::where(broken.unsqueeze(1), a, new_active));
    skipped.index_copy_(0, iidx, sk);
    first.index_copy_(0, iidx, fst & at::logical_not(stepping));
    phase.index_copy_(0, iidx,
                      at::where(broken, at::full_like(j, 2),
                                at::where(leave, at::zeros_like(j), at::ones_like(j))));
    const at::Tensor left = (leave & at::logical_not(broken)).nonzero().squeeze(1);
    if (left.numel() > 0) {
      update_w(iidx.index_select(0, left));
    }
  }
  return theta;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_graph_generic(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel_name,
    optional<double> sigma,
    c10::string_view sigma_mode,
    const optional<at::Tensor>& candidates,
    double threshold,
    c10::string_view candidate_metric) {
  return nnk_graph(x, k, kernel_name, sigma, sigma_mode, candidates, threshold, candidate_metric);
}

} // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> nnk_graph(
    const at::Tensor& x,
    int64_t k,
    c10::string_view kernel_name,
    optional<double> sigma,
    c10::string_view sigma_mode,
    const optional<at::Tensor>& candidates,
    double threshold,
    c10::string_view candidate_metric) {
  const Kernel kernel = parse_kernel(kernel_name, kOp);
  const CandidateMetric metric = parse_candidate_metric(candidate_metric, kOp);
  const SigmaMode mode = parse_sigma(kernel, sigma, sigma_mode, kOp);
  check_points(x, kOp);
  check_k(k, x.size(0), kOp);
  TORCH_CHECK(std::isfinite(threshold) && threshold >= 0, kOp,
              ": threshold should be a finite number >= 0, got ", threshold);

  const int64_t n = x.size(0), d = x.size(1);
  const bool cosine = kernel == Kernel::Cosine;
  const PreparedPoints pts = prepare_points(x, kernel);
  at::Tensor cand, raw;
  const bool given = candidates.has_value() && candidates->defined();
  const bool euclidean = !given && metric == CandidateMetric::Euclidean && cosine;
  if (given || euclidean) {
    cand = given ? clean_candidates(*candidates, x, k, pts.valid)
                 : euclidean_candidates(x, pts.valid, k);
    raw = at::empty({n, k}, pts.sq_norm.options());
    const int64_t rows = rows_for_budget(k * d * 8 * 2 + 1, n);
    for (int64_t r0 = 0; r0 < n; r0 += rows) {
      const int64_t nr = std::min(rows, n - r0);
      raw.narrow(0, r0, nr).copy_(raw_scores(pts, kernel, r0, cand.narrow(0, r0, nr)));
    }
  } else {
    // The Gaussian kernel ranks by L2 distance already: both metrics are this search.
    std::tie(cand, raw) = knn_search(pts, kernel, k);
  }
  const at::Tensor present_all = cand >= 0;
  at::Tensor sig = at::ones({n}, raw.options());
  if (kernel == Kernel::Gaussian) {
    const at::Tensor far = raw.masked_fill(at::logical_not(present_all), -1.0).amax(1);
    sig = resolve_sigma(mode, sigma.value_or(0.0), far);
  }
  // Rows in float64 for the kernel blocks: unit rows (cosine), or rows centred on the mean
  // (gaussian: distances do not change, and the expansion |a|^2 + |b|^2 - 2 a.b loses less).
  const at::Tensor mean = cosine ? at::Tensor() : x.sum(0, /*keepdim=*/false, at::kDouble) / static_cast<double>(n);
  const double dup_tol = x.scalar_type() == at::kFloat ? 1e-12 : 1e-24;

  at::Tensor nbr_out = at::empty({n, k}, cand.options());
  at::Tensor w_out = at::empty({n, k}, x.options());
  at::Tensor err_out = at::empty({n}, x.options());
  // Per node of a block: gathered rows (twice), kernel block and the solver's copies of it.
  const int64_t rows = rows_for_budget(k * d * 8 * 3 + k * k * 8 * 12, n);
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t nr = std::min(rows, n - r0);
    const at::Tensor cb = cand.narrow(0, r0, nr);
    const at::Tensor present = cb >= 0;
    const at::Tensor absent = at::logical_not(present);
    const at::Tensor flat = cb.clamp_min(0).reshape({-1});
    at::Tensor xc = x.index_select(0, flat).to(at::kDouble).view({nr, k, d});
    at::Tensor xi = x.narrow(0, r0, nr).to(at::kDouble);
    if (cosine) {
      xc = xc * pts.inv_norm.index_select(0, flat).view({nr, k, 1});
      xi = xi * pts.inv_norm.narrow(0, r0, nr).unsqueeze(1);
    } else {
      xc = xc - mean;
      xi = xi - mean;
    }
    const at::Tensor gram = at::bmm(xc, xc.transpose(1, 2));
    at::Tensor raw_kk;
    if (cosine) {
      raw_kk = gram.clamp(-1.0, 1.0);
    } else {
      const at::Tensor sq = at::diagonal(gram, 0, 1, 2);
      raw_kk = (sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * gram).clamp_min(0.0);
    }
    const at::Tensor s = sig.narrow(0, r0, nr);
    at::Tensor K = kernel_value(kernel, raw_kk, s.view({nr, 1, 1}));
    K = K.masked_fill(absent.unsqueeze(2) | absent.unsqueeze(1), 0.0);
    K.diagonal(0, 1, 2).fill_(1.0);
    const at::Tensor r = raw.narrow(0, r0, nr);
    const at::Tensor bvec = kernel_value(kernel, r, s.unsqueeze(1)).masked_fill(absent, 0.0);

    // Exact duplicates of x_i (kappa = 1), decided in float64 as the CPU kernel does.
    const at::Tensor dist = (xc - xi.unsqueeze(1)).square().sum(2);
    at::Tensor dup;
    if (cosine) {
      dup = (r >= 1.0 - 1e-4) & (dist <= dup_tol);
    } else {
      const at::Tensor scale = at::maximum(
          pts.sq_norm.narrow(0, r0, nr).unsqueeze(1), pts.sq_norm.index_select(0, flat).view({nr, k}));
      dup = (r <= 1e-4 * scale) & (dist <= dup_tol * scale);
    }
    dup = dup & present;
    const at::Tensor has_dup = dup.any(1);
    const at::Tensor m = present.sum(1);
    const at::Tensor solve = at::logical_not(has_dup) & (m > 0);

    at::Tensor theta = dup.to(at::kDouble);
    const at::Tensor sidx = solve.nonzero().squeeze(1);
    if (sidx.numel() > 0) {
      const at::Tensor Ks = K.index_select(0, sidx);
      const at::Tensor bs = bvec.index_select(0, sidx);
      at::Tensor ts;
#ifdef TORCH_GEOMETRY_WITH_NATIVE_CUDA
      if (use_native_cuda(x) && k <= 128) {
        ts = cuda::nnk_solve(Ks, bs, m.index_select(0, sidx).to(at::kInt), kTol, kRidge);
      } else {
        ts = solve_block(Ks, bs, present.index_select(0, sidx));
      }
#else
      ts = solve_block(Ks, bs, present.index_select(0, sidx));
#endif
      ts = ts.masked_fill(ts <= threshold, 0.0);
      theta.index_copy_(0, sidx, ts);
    }
    const at::Tensor lin = (theta * bvec).sum(1);
    const at::Tensor quad = (theta * at::bmm(K, theta.unsqueeze(2)).squeeze(2)).sum(1);
    at::Tensor err = (1.0 - 2.0 * lin + quad).clamp(0.0, 1.0);
    err = at::where(has_dup, at::zeros_like(err), err);
    err = at::where(m == 0, at::ones_like(err), err);

    // Weight descending, then similarity descending, then index ascending; padding last.
    const at::Tensor by_index = std::get<1>(stable_sort(cb.masked_fill(absent, n), false));
    const at::Tensor sim_key = bvec.masked_fill(absent, -1.0).gather(1, by_index);
    const at::Tensor o1 = by_index.gather(1, std::get<1>(stable_sort(sim_key, true)));
    const at::Tensor t_key = theta.masked_fill(absent, -1.0).gather(1, o1);
    const at::Tensor order = o1.gather(1, std::get<1>(stable_sort(t_key, true)));
    nbr_out.narrow(0, r0, nr).copy_(cb.gather(1, order));
    w_out.narrow(0, r0, nr).copy_(theta.gather(1, order).masked_fill(absent.gather(1, order), 0.0));
    err_out.narrow(0, r0, nr).copy_(err);
  }
  return std::make_tuple(nbr_out, w_out, err_out);
}

TORCH_LIBRARY_FRAGMENT(torch_geometry, m) {
  m.def(
      "_generic_nnk_graph(Tensor x, int k, str kernel_name=\"cosine\", float? sigma=None, "
      "str sigma_mode=\"mean\", Tensor? candidates=None, float threshold=1e-10, "
      "str candidate_metric=\"kernel\") -> "
      "(Tensor neighbors, Tensor weights, Tensor error)");
}

TORCH_LIBRARY_IMPL(torch_geometry, CompositeExplicitAutograd, m) {
  m.impl("_generic_nnk_graph", &nnk_graph_generic);
}

TORCH_LIBRARY_IMPL(torch_geometry, CUDA, m) {
  m.impl("nnk_graph", &nnk_graph_generic);
}

} // namespace generic
} // namespace torch_geometry
