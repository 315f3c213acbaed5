// libFuzzer target: NNKEarlyStopping::load_state_dict on mutated state dicts.
//
// Input bytes -> options (mode, patience, restore_best_weights), 0-3 checks on seeded random
// activations to reach a real state, then a state dict with fuzzed mutations (keys dropped,
// values replaced by tensors of other lengths, dtypes, shapes and values: NaN, Inf, huge,
// negative, non-UTF-8 stop reasons; snapshots of other shapes; extra snapshots). Then:
//   * load_state_dict either throws a c10::Error, and the object keeps its previous state
//     (state_dict() unchanged) and still steps cleanly, or
//   * it loads, and step(), enforce(), mask_gradients(), to_json() and state_dict() run
//     without any error, to_json() is valid UTF-8, and frozen channels keep their values
//     through enforce().
// Any other exception, a crash or a sanitizer report fails. Faults already reported and not
// fixed yet can be tolerated through TG_FUZZ_KNOWN_FAULTS (see fuzz_common.h).
#include <fuzzer/FuzzedDataProvider.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "hooks/early_stopping.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using torch_geometry::hooks::EarlyStoppingOptions;
using torch_geometry::hooks::NNKEarlyStopping;
using State = std::map<std::string, at::Tensor>;

constexpr int64_t kN = 12, kC = 3;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_early_stopping_state: %s\n", what.c_str());
  std::abort();
}

bool same_state(const State& a, const State& b) {
  if (a.size() != b.size()) return false;
  for (const auto& kv : a) {
    auto it = b.find(kv.first);
    if (it == b.end()) return false;
    const at::Tensor& x = kv.second;
    const at::Tensor& y = it->second;
    if (x.sizes() != y.sizes() || x.scalar_type() != y.scalar_type()) return false;
    if (!at::equal(x.isnan(), y.isnan())) return false;
    if (!at::equal(at::nan_to_num(x), at::nan_to_num(y))) return false;
  }
  return true;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const int extra = c < 0x80 ? 0 : c >= 0xC2 && c < 0xE0 ? 1 : c >= 0xE0 && c < 0xF0 ? 2
                      : c >= 0xF0 && c < 0xF5 ? 3 : -1;
    if (extra < 0 || i + extra >= s.size()) return false;
    for (int e = 1; e <= extra; ++e) {
      if ((static_cast<unsigned char>(s[i + e]) & 0xC0) != 0x80) return false;
    }
    i += extra + 1;
  }
  return true;
}

double fuzz_double(FuzzedDataProvider& fdp) {
  switch (fdp.ConsumeIntegralInRange<int>(0, 9)) {
    case 0: return std::numeric_limits<double>::quiet_NaN();
    case 1: return std::numeric_limits<double>::infinity();
    case 2: return -1.0;
    case 3: return 1e300;
    case 4: return 0.0;
    default: return fdp.ConsumeIntegralInRange<int>(0, 100) / 100.0;
  }
}

int64_t fuzz_int(FuzzedDataProvider& fdp) {
  // A loaded check counter of INT64_MAX overflows at the next step (UB): held back while
  // that fault is open.
  const bool extremes = !tg_fuzz::known_fault("state_counter_overflow");
  switch (fdp.ConsumeIntegralInRange<int>(0, 9)) {
    case 0: return -1;
    case 1: return extremes ? std::numeric_limits<int64_t>::max() : 1000000;
    case 2: return extremes ? std::numeric_limits<int64_t>::min() : -1000000;
    case 3: return 200 + fdp.ConsumeIntegralInRange<int64_t>(0, 1000);  // not a byte
    default: return fdp.ConsumeIntegralInRange<int64_t>(-3, 10);
  }
}

at::Tensor fuzz_tensor(FuzzedDataProvider& fdp) {
  const int64_t len = fdp.ConsumeIntegralInRange<int64_t>(0, 6);
  const int dtype = fdp.ConsumeIntegralInRange<int>(0, 4);
  at::Tensor t;
  if (dtype <= 1) {
    std::vector<double> v;
    for (int64_t i = 0; i < len; ++i) v.push_back(fuzz_double(fdp));
    t = at::tensor(v, at::kDouble).to(dtype == 0 ? at::kDouble : at::kFloat);
  } else {
    std::vector<int64_t> v;
    for (int64_t i = 0; i < len; ++i) v.push_back(fuzz_int(fdp));
    t = at::tensor(v, at::kLong);
    if (dtype == 3) t = t.to(at::kInt);
    if (dtype == 4) t = t.to(at::kBool);
  }
  switch (fdp.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: return len % 2 == 0 ? t.reshape({2, len / 2}) : t.unsqueeze(0);  // 2-D
    case 1: return at::cat({t, t}).slice(0, 0, 2 * len, 2);                  // strided
    default: return t;
  }
}

void mutate(FuzzedDataProvider& fdp, State& s) {
  static const char* keys[] = {"best_scores",     "last_scores",       "wait",
                               "frozen_epoch",    "counters",          "stop_reason",
                               "recent_scores",   "best_params.0",     "best_params.1",
                               "best_params.2",   "improved_params.0", "improved_params.1",
                               "improved_extra.0"};
  const std::string key = keys[fdp.ConsumeIntegralInRange<int>(0, 12)];
  const bool snapshot = key.rfind("best_params.", 0) == 0 || key.rfind("improved_", 0) == 0;
  switch (fdp.ConsumeIntegralInRange<int>(0, 5)) {
    case 0:
      s.erase(key);
      break;
    case 1:
      if (snapshot) {
        // A snapshot of another shape or dtype.
        const int64_t c = fdp.ConsumeIntegralInRange<int64_t>(0, kC + 1);
        s[key] = fdp.ConsumeBool() ? at::full({c, 1, 2, 2}, fuzz_double(fdp), at::kDouble)
                                   : at::zeros({c}, at::kFloat);
      } else {
        s[key] = fuzz_tensor(fdp);
      }
      break;
    case 2: {
      // One value changed in place, the length kept.
      auto it = s.find(key);
      if (it != s.end() && it->second.numel() > 0 && !snapshot) {
        at::Tensor t = it->second.clone();
        const int64_t at_ = fdp.ConsumeIntegralInRange<int64_t>(0, t.numel() - 1);
        if (at::isFloatingType(t.scalar_type())) {
          t.view(-1)[at_] = fuzz_double(fdp);
        } else {
          // A value the dtype can hold (filling a uint8/bool/int32 tensor with an int64 out
          // of its range throws inside ATen, which is the harness's fault, not a finding).
          int64_t v = fuzz_int(fdp);
          switch (t.scalar_type()) {
            case at::kBool: v &= 1; break;
            case at::kByte: v &= 0xFF; break;
            case at::kChar: v = static_cast<int8_t>(v); break;
            case at::kShort: v = static_cast<int16_t>(v); break;
            case at::kInt: v = static_cast<int32_t>(v); break;
            default: break;
          }
          t.view(-1)[at_] = v;
        }
        s[key] = t;
      }
      break;
    }
    case 3: {
      // A stop reason of arbitrary values (non-ASCII, non-UTF-8, not bytes at all).
      std::vector<int64_t> r;
      const int64_t len = fdp.ConsumeIntegralInRange<int64_t>(0, 8);
      for (int64_t i = 0; i < len; ++i) r.push_back(fdp.ConsumeIntegralInRange<int64_t>(-300, 300));
      s["stop_reason"] = at::tensor(r, at::kLong);
      break;
    }
    case 4: {
      auto it = s.find(key);
      if (it != s.end() && it->second.numel() > 0) s[key] = it->second.slice(0, 0, -1).clone();
      break;
    }
    default: {
      // Usually the four counters of the state (checks, stopped epoch, reason length,
      // last improvement), sometimes another count.
      std::vector<int64_t> c = {fuzz_int(fdp), fuzz_int(fdp), fuzz_int(fdp)};
      if (fdp.ConsumeIntegralInRange<int>(0, 3) != 0) c.push_back(fuzz_int(fdp));
      s["counters"] = at::tensor(c, at::kLong);
      break;
    }
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  EarlyStoppingOptions opt;
  opt.mode = fdp.ConsumeBool() ? "channel" : "layer";
  opt.patience = fdp.ConsumeIntegralInRange<int64_t>(1, 3);
  opt.k = 3;
  opt.restore_best_weights = fdp.ConsumeBool();
  opt.smoothing = fdp.ConsumeIntegralInRange<int64_t>(1, 3);
  opt.auto_min_delta = fdp.ConsumeBool();
  // Every restore rule the mode accepts ("best" is the layer mode's alone).
  switch (fdp.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: break;  // the mode's default
    case 1: opt.restore_on_stop = std::string("last_improvement"); break;
    default: opt.restore_on_stop = std::string(opt.mode == "layer" ? "best" : "none"); break;
  }
  if (opt.mode == "layer" && opt.restore_on_stop.has_value()) {
    // Layer mode reads restore_best_weights as "restore on stop": the two must agree.
    opt.restore_best_weights = *opt.restore_on_stop != "none";
  }
  const int checks = fdp.ConsumeIntegralInRange<int>(0, 3);
  const uint64_t seed = fdp.ConsumeIntegral<uint8_t>();

  at::manual_seed(seed);
  // The conv producing kC channels (weight, bias) and the probe set's labels.
  at::Tensor weight = at::randn({kC, 1, 2, 2}, at::kFloat).requires_grad_();
  at::Tensor bias = at::randn({kC}, at::kFloat).requires_grad_();
  weight.mutable_grad() = at::ones_like(weight);
  bias.mutable_grad() = at::ones_like(bias);
  const at::Tensor labels = at::arange(kN, at::kLong).remainder(3);
  auto activations = [&]() { return at::randn({kN, kC, 2, 2}, at::kFloat); };

  NNKEarlyStopping cb(opt);
  cb.set_labels(labels);
  cb.watch({weight.detach(), bias.detach()});
  int64_t epoch = 0;
  for (int c = 0; c < checks; ++c) cb.step(epoch++, activations());

  State state = cb.state_dict();
  const int mutations = fdp.ConsumeIntegralInRange<int>(1, 4);
  for (int m = 0; m < mutations; ++m) mutate(fdp, state);

  const State before = cb.state_dict();
  bool loaded = true;
  try {
    cb.load_state_dict(state);
  } catch (const c10::Error&) {
    loaded = false;
  }
  if (!loaded) {
    if (tg_fuzz::known_fault("state_rejected_load_partial")) return 0;
    if (!same_state(before, cb.state_dict())) {
      fail("a rejected load_state_dict changed the state");
    }
  }
  try {
    cb.step(epoch++, activations());
    cb.enforce();
    cb.mask_gradients();
    for (int64_t c : cb.frozen_channels()) {
      // enforce() re-imposed the frozen values; a second call changes nothing.
      cb.enforce();
      if (!at::equal(weight.detach()[c], cb.state_dict().at("best_params.0")[c].to(at::kFloat)) &&
          !tg_fuzz::known_fault("state_frozen_values")) {
        fail("a frozen channel does not hold its frozen weights after enforce()");
      }
    }
    const std::string js = cb.to_json();
    if (!valid_utf8(js) && !tg_fuzz::known_fault("state_json_utf8")) {
      fail("to_json() is not valid UTF-8 after loading a state");
    }
    cb.state_dict();
  } catch (const c10::Error& e) {
    if (!(loaded && tg_fuzz::known_fault("state_loaded_unchecked"))) {
      fail(std::string(loaded ? "after a successful load" : "after a rejected load") +
           ", step/enforce threw: " + e.what_without_backtrace());
    }
  }
  return 0;
}
