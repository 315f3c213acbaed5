// libFuzzer target: torch.ops.torch_geometry.nnk_symmetrize on fuzzed directed graphs.
//
// Input bytes -> N <= 10 nodes, k <= 5 slots per node, neighbour indices (mostly valid, with
// -1 padding, self-loops, repeats and out-of-range values), weights (0, ordinary values,
// ties, denormals, and negative / NaN / Inf ones), errors (with ties), a dtype and a mode.
// A graph the DESIGN calls invalid must be refused with a c10::Error; a valid one must give
// exactly the edge list of a naive O(N k^2) reference written from DESIGN §2 here.
// Faults already reported and not fixed yet can be tolerated through TG_FUZZ_KNOWN_FAULTS
// (see fuzz_common.h); a violated property prints the graph and aborts.
#include <fuzzer/FuzzedDataProvider.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "csrc/nnk_symmetrize.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

struct Graph {
  int64_t n = 0, k = 0;
  std::vector<int64_t> nb;  // n * k
  std::vector<double> w;    // n * k
  std::vector<double> err;  // n
  bool dbl = true;          // weights float64 (else float32)
  bool err_dbl = true;      // error float64 (else float32)
  std::string mode;
};

struct Edge {
  int64_t src, dst;
  double w;
};

double weight_value(FuzzedDataProvider& fdp) {
  switch (fdp.ConsumeIntegralInRange<int>(0, 11)) {
    case 0: case 1: case 2: return 0.0;
    case 3: return 0.5;
    case 4: return 1.0;
    case 5: return 0.25;
    case 6: return std::numeric_limits<double>::denorm_min();
    case 7: return 1e-30;
    case 8: return fdp.ConsumeIntegralInRange<int>(1, 1000) / 1000.0;
    case 9: return -0.5;
    case 10: return std::numeric_limits<double>::quiet_NaN();
    default: return std::numeric_limits<double>::infinity();
  }
}

Graph make_graph(FuzzedDataProvider& fdp) {
  Graph g;
  g.n = fdp.ConsumeIntegralInRange<int64_t>(0, 10);
  g.k = fdp.ConsumeIntegralInRange<int64_t>(0, 5);
  static const char* modes[] = {"none", "max", "mean", "min_error", "min_error", "Max"};
  g.mode = modes[fdp.ConsumeIntegralInRange<int>(0, 5)];
  g.dbl = fdp.ConsumeBool();
  g.err_dbl = fdp.ConsumeIntegralInRange<int>(0, 3) != 0 ? g.dbl : !g.dbl;
  for (int64_t e = 0; e < g.n * g.k; ++e) {
    const int kind = fdp.ConsumeIntegralInRange<int>(0, 15);
    int64_t j;
    if (kind < 11) j = fdp.ConsumeIntegralInRange<int64_t>(0, std::max<int64_t>(g.n - 1, 0));
    else if (kind < 14) j = -1;
    else if (kind == 14) j = g.n;  // one past the end
    else j = -2;
    g.nb.push_back(j);
    g.w.push_back(weight_value(fdp));
  }
  for (int64_t i = 0; i < g.n; ++i) {
    // Few distinct values, so that ties between endpoints are common.
    const int kind = fdp.ConsumeIntegralInRange<int>(0, 9);
    g.err.push_back(kind == 9 ? std::numeric_limits<double>::quiet_NaN() : kind / 8.0);
  }
  return g;
}

// Rounds to the weights' dtype, as the operator stores them.
double as_dtype(double v, bool dbl) { return dbl ? v : static_cast<double>(static_cast<float>(v)); }

// What the DESIGN says about the graph: empty = valid, else why it must be refused.
std::string invalid_reason(const Graph& g) {
  if (g.mode != "none" && g.mode != "max" && g.mode != "mean" && g.mode != "min_error") return "mode";
  for (int64_t i = 0; i < g.n; ++i) {
    for (int64_t l = 0; l < g.k; ++l) {
      const int64_t j = g.nb[i * g.k + l];
      const double w = as_dtype(g.w[i * g.k + l], g.dbl);
      if (j < -1 || j >= g.n) return "index";
      if (!std::isfinite(w) || w < 0) return "weight";
      if (j == i) return "self";
    }
  }
  for (int64_t i = 0; i < g.n; ++i) {
    for (int64_t l = 0; l < g.k; ++l) {
      const int64_t j = g.nb[i * g.k + l];
      if (j < 0 && as_dtype(g.w[i * g.k + l], g.dbl) > 0) return "padding_weight";
      for (int64_t l2 = 0; l2 < l; ++l2) {
        if (j >= 0 && g.nb[i * g.k + l2] == j) return "repeat";
      }
    }
  }
  // The error vector is part of the graph: the operators' one checker refuses a non-finite
  // error in every mode, not only where min_error reads it.
  for (double e : g.err) {
    if (!std::isfinite(e)) return "error_nan";
  }
  return "";
}

// theta_ij of node i's row (0 when j is not listed), and whether it is listed.
std::pair<double, bool> lookup(const Graph& g, int64_t i, int64_t j) {
  for (int64_t l = 0; l < g.k; ++l) {
    if (g.nb[i * g.k + l] == j) return {as_dtype(g.w[i * g.k + l], g.dbl), true};
  }
  return {0.0, false};
}

std::vector<Edge> reference(const Graph& g) {
  std::vector<Edge> out;
  for (int64_t i = 0; i < g.n; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      if (i == j) continue;
      const auto ij = lookup(g, i, j), ji = lookup(g, j, i);
      double w = 0.0;
      if (g.mode == "none") {
        w = ij.first;
      } else if (g.mode == "max") {
        w = std::max(ij.first, ji.first);
      } else if (g.mode == "mean") {
        w = 0.5 * (ij.first + ji.first);
      } else if (ij.second && ji.second) {
        const double ei = as_dtype(g.err[i], g.dbl), ej = as_dtype(g.err[j], g.dbl);
        w = ei < ej ? ij.first : (ej < ei ? ji.first : std::max(ij.first, ji.first));
      }
      w = as_dtype(w, g.dbl);
      if (w > 0) out.push_back({i, j, w});
    }
  }
  return out;  // sorted by (src, dst) by construction
}

[[noreturn]] void fail(const Graph& g, const std::string& what) {
  std::fprintf(stderr, "fuzz_nnk_symmetrize: %s\nmode=%s N=%ld k=%ld weights=%s error=%s\n",
               what.c_str(), g.mode.c_str(), static_cast<long>(g.n), static_cast<long>(g.k),
               g.dbl ? "float64" : "float32", g.err_dbl ? "float64" : "float32");
  for (int64_t i = 0; i < g.n; ++i) {
    std::fprintf(stderr, "  %ld: err %.17g |", static_cast<long>(i), g.err[i]);
    for (int64_t l = 0; l < g.k; ++l) {
      std::fprintf(stderr, " %ld:%.17g", static_cast<long>(g.nb[i * g.k + l]), g.w[i * g.k + l]);
    }
    std::fprintf(stderr, "\n");
  }
  std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  const Graph g = make_graph(fdp);
  const auto wtype = g.dbl ? at::kDouble : at::kFloat;
  const at::Tensor nb = at::tensor(g.nb, at::kLong).reshape({g.n, g.k});
  const at::Tensor w = at::tensor(g.w, at::kDouble).to(wtype).reshape({g.n, g.k});
  const at::Tensor err = at::tensor(g.err, at::kDouble).to(g.err_dbl ? at::kDouble : at::kFloat);
  const std::string why = invalid_reason(g);

  at::Tensor ei, ew;
  try {
    std::tie(ei, ew) = torch_geometry::ops::nnk_symmetrize(nb, w, err, g.mode);
  } catch (const c10::Error& e) {
    if (why.empty()) fail(g, std::string("a valid graph was refused: ") + e.what_without_backtrace());
    return 0;
  }
  if (!why.empty()) {
    // Faults already reported: tolerated while their names are in TG_FUZZ_KNOWN_FAULTS.
    if (tg_fuzz::known_fault("symmetrize_" + why)) return 0;
    fail(g, "an invalid graph (" + why + ") was accepted");
  }
  const std::vector<Edge> want = reference(g);
  if (ei.scalar_type() != at::kLong || ei.dim() != 2 || ei.size(0) != 2 ||
      ew.scalar_type() != wtype || ew.dim() != 1 || ew.size(0) != ei.size(1)) {
    fail(g, "edge_index / edge_weight have the wrong shape or dtype");
  }
  if (ew.size(0) != static_cast<int64_t>(want.size())) {
    fail(g, "got " + std::to_string(ew.size(0)) + " edges, the reference " +
                std::to_string(want.size()));
  }
  const at::Tensor got_w = ew.to(at::kDouble);
  for (size_t a = 0; a < want.size(); ++a) {
    const int64_t s = ei[0][a].item<int64_t>(), t = ei[1][a].item<int64_t>();
    const double v = got_w[a].item<double>();
    if (s != want[a].src || t != want[a].dst || v != want[a].w) {
      fail(g, "edge " + std::to_string(a) + ": got (" + std::to_string(s) + ", " +
                  std::to_string(t) + ", " + std::to_string(v) + "), the reference (" +
                  std::to_string(want[a].src) + ", " + std::to_string(want[a].dst) + ", " +
                  std::to_string(want[a].w) + ")");
    }
  }
  return 0;
}
