#include "blas_threads.h"

#include <ATen/Parallel.h>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

namespace torch_geometry {
namespace cpu {

namespace {

struct OpenBlasThreads {
  int (*get)() = nullptr;
  void (*set)(int) = nullptr;
};

// openblas_{get,set}_num_threads from the already loaded OpenBLAS, if any (RTLD_NOLOAD:
// never loads a library).
OpenBlasThreads find_openblas() {
  OpenBlasThreads f;
#if defined(__unix__) || defined(__APPLE__)
  // RTLD_DEFAULT finds it when OpenBLAS is in the global scope, the other two when torch
  // loaded it locally (through the libblas.so.3 alternative on Debian).
  void* handles[] = {RTLD_DEFAULT, dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD),
                     dlopen("libblas.so.3", RTLD_LAZY | RTLD_NOLOAD)};
  for (void* h : handles) {
    auto get = reinterpret_cast<int (*)()>(dlsym(h, "openblas_get_num_threads"));
    auto set = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"));
    if (get != nullptr && set != nullptr) {
      f.get = get;
      f.set = set;
      break;
    }
  }
#endif
  return f;
}

const OpenBlasThreads& openblas() {
  static const OpenBlasThreads f = find_openblas();
  return f;
}

} // namespace

BlasThreadsGuard::BlasThreadsGuard() {
  const OpenBlasThreads& f = openblas();
  if (f.get == nullptr || at::in_parallel_region()) {
    return;
  }
  const int want = at::get_num_threads();
  const int have = f.get();
  if (want >= 1 && have != want) {
    f.set(want);
    previous_ = have;
  }
}

BlasThreadsGuard::~BlasThreadsGuard() {
  if (previous_ > 0) {
    openblas().set(previous_);
  }
}

} // namespace cpu
} // namespace torch_geometry
