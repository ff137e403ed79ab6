#pragma once
// OpenMP loops with the thread count Python passes (torch.get_num_threads()), so that
// torch.set_num_threads governs pydeform's kernels too.
#include <cstdint>
#include <exception>
#include <mutex>

namespace pydeform {

// An exception must not leave an OpenMP region (std::terminate would end the Python process,
// e.g. on std::bad_alloc): the first one a task throws is kept and rethrown after the loop.
class FirstError {
 public:
  template <typename F> void run(F& body, int64_t i) noexcept {
    try {
      body(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
};

template <typename F> void parallel_for(int64_t n, int num_threads, F&& body) {
#if defined(PYDEFORM_WITH_OPENMP)
  if (num_threads > 1 && n > 1) {
    FirstError error;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) error.run(body, i);
    error.rethrow();
    return;
  }
#else
  (void)num_threads;
#endif
  for (int64_t i = 0; i < n; ++i) body(i);
}

// The same with tasks handed out one at a time as threads finish: for tasks of uneven cost,
// or cores shared with other work. Only for bodies whose results do not depend on which
// thread runs which task.
template <typename F> void parallel_for_dynamic(int64_t n, int num_threads, F&& body) {
#if defined(PYDEFORM_WITH_OPENMP)
  if (num_threads > 1 && n > 1) {
    FirstError error;
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) error.run(body, i);
    error.rethrow();
    return;
  }
#else
  (void)num_threads;
#endif
  for (int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace pydeform
