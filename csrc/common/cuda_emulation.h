#pragma once
// A host-only stand-in for the parts of CUDA that the .cu launchers use, so that the same
// .cu sources compile as C++ (PYDEFORM_CUDA_EMULATION) and their kernels run on the CPU in
// the tests: tests/cuda_emulation/, README "Developer notes".
//
// A launch runs the grid's blocks one after another. Each block runs as blockDim real threads
// that take turns: one thread runs until it reaches __syncthreads() (or the end of the block),
// then hands over to the next. That fixed schedule makes a race on __shared__ memory (a missing
// __syncthreads) give the same wrong result on every run instead of a rare one. All threads of
// a block must meet at the same __syncthreads() call (same source line) or all end the block;
// anything else (a divergent or missing barrier) fails the launch with a message. A thread that
// never reaches its next barrier (an endless loop) aborts the process after a timeout instead
// of hanging the test run.
//
// __shared__ becomes `static`: one array per kernel instantiation, used by the running block
// only (blocks and launches run one at a time, under a global lock).
// Warp-level primitives (__shfl*, __ballot*, warp-synchronous code) are not emulated: using one
// fails to compile here, which is the point.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// float16 / bfloat16: the CUDA headers' types, which have host implementations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// The CUDA headers define these (and dim3, uint3, cudaError_t, cudaStream_t) for host code too.
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

// Runtime stand-ins for the calls the launchers make: one device (0); streams are ignored
// (launches run to completion in order); no sticky errors (a failed launch throws instead).
extern "C" {
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "invalid device ordinal"; }
}

inline int __ffs(unsigned int v) { return __builtin_ffs(static_cast<int>(v)); }

// atomicAdd on host memory. (Threads take turns, so this is never contended, but it is a real
// atomic so that a sanitizer sees what the GPU does.)
template <typename T> inline T atomicAdd(T* address, T value) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int> ||
                    std::is_same_v<T, unsigned int> || std::is_same_v<T, unsigned long long>,
                "atomicAdd: a type CUDA has no atomicAdd for");
  if constexpr (std::is_integral_v<T>) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
  } else {
    T old, sum;
    __atomic_load(address, &old, __ATOMIC_RELAXED);
    do {
      sum = old + value;
    } while (!__atomic_compare_exchange(address, &old, &sum, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
  }
}

namespace pydeform {
namespace emulation {

// Tests lower this to make the launchers' grid-stride loops run with small sizes (0: off).
inline std::atomic<int64_t> grid_cap{0};
// Seconds a thread may run without reaching a barrier before the process aborts.
inline std::atomic<int> barrier_timeout_s{60};
// Counts for the tests: launches and blocks run so far.
inline std::atomic<int64_t> launches{0}, blocks_run{0};

struct Aborted {};  // unwinds a block's threads after a failed barrier

class Block {
 public:
  Block(const char* kernel, int threads) : kernel_(kernel), n_(threads), wake_(threads), line_(threads, 0) {}

  // Thread `tid` arrives at a barrier: `line` is the __syncthreads() call's source line, or
  // kEnd at the end of the block. Returns when every thread has arrived at the same one.
  static constexpr int kEnd = -1;
  void arrive(int tid, int line, bool last_phase = false) {
    std::unique_lock<std::mutex> lock(mutex_);
    line_[tid] = line;
    if (tid + 1 < n_) {
      pass_to(tid + 1);
    } else {
      for (int t = 0; t < n_; ++t) {
        if (line_[t] != line_[0]) {
          fail("divergent __syncthreads() in block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) +
               "," + std::to_string(blockIdx.z) + "): thread 0 at " + where(line_[0]) + ", thread " +
               std::to_string(t) + " at " + where(line_[t]));
          throw Aborted{};
        }
      }
      if (last_phase) return;
      pass_to(0);
    }
    if (last_phase) return;
    wait_turn(lock, tid);
  }

  void start(int tid) {
    std::unique_lock<std::mutex> lock(mutex_);
    wait_turn(lock, tid);
  }

  void fail(const std::string& what) {
    if (error_.empty()) error_ = what;
    failed_ = true;
    for (auto& cv : wake_) cv.notify_one();
  }
  void fail_locked(const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex_);
    fail(what);
  }
  const std::string& error() const { return error_; }

 private:
  static std::string where(int line) { return line == kEnd ? "the end of the block" : "__syncthreads() on line " + std::to_string(line); }

  void pass_to(int tid) {
    turn_ = tid;
    wake_[tid].notify_one();
  }

  void wait_turn(std::unique_lock<std::mutex>& lock, int tid) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(barrier_timeout_s.load());
    while (turn_ != tid && !failed_) {
      if (wake_[tid].wait_until(lock, deadline) == std::cv_status::timeout && turn_ != tid && !failed_) {
        std::fprintf(stderr,
                     "pydeform CUDA emulation: kernel %s, block (%u,%u,%u): thread %d has not reached __syncthreads() "
                     "or the end of the block within %d s (a deadlock or an endless loop); aborting\n",
                     kernel_, blockIdx.x, blockIdx.y, blockIdx.z, turn_, barrier_timeout_s.load());
        std::fflush(stderr);
        std::abort();
      }
    }
    if (failed_) throw Aborted{};
  }

  const char* kernel_;
  int n_;
  std::mutex mutex_;
  std::vector<std::condition_variable> wake_;
  std::vector<int> line_;
  int turn_ = 0;
  bool failed_ = false;
  std::string error_;
};

inline thread_local Block* current_block = nullptr;
inline thread_local int current_tid = 0;

// The threads that play a block's threads: created once, up to the largest block seen (creating
// 256 threads per launch would cost more than most emulated kernels take), and reused by every
// launch. Never destroyed: at exit they are parked in a wait.
class ThreadPool {
 public:
  static ThreadPool& get() {
    static ThreadPool* pool = new ThreadPool;  // leaked on purpose, see above
    return *pool;
  }

  // Runs job(tid) for tid = 0..n-1, each on its own thread, and returns when all have returned.
  void run(int n, const std::function<void(int)>& job) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (static_cast<int>(threads_.size()) < n) {
      const int id = static_cast<int>(threads_.size());
      threads_.emplace_back([this, id] { work(id); });
      threads_.back().detach();
    }
    job_ = &job;
    active_ = n;
    finished_ = 0;
    ++epoch_;
    start_.notify_all();
    done_.wait(lock, [&] { return finished_ == active_; });
    job_ = nullptr;
  }

 private:
  void work(int id) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return epoch_ != seen && id < active_ && job_ != nullptr; });
      seen = epoch_;
      const std::function<void(int)>* job = job_;
      lock.unlock();
      (*job)(id);
      lock.lock();
      if (++finished_ == active_) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable start_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  int active_ = 0, finished_ = 0;
  uint64_t epoch_ = 0;
};

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

// Runs `body` (the kernel call) for every thread of every block of the grid.
inline void launch(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
  // The limits a GPU enforces at launch (cudaErrorInvalidConfiguration there).
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || block.z > 64 ||
      grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535 || shared_bytes > 48 * 1024)
    throw std::runtime_error(std::string("pydeform CUDA emulation: invalid launch configuration for ") + kernel +
                             ": grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," +
                             std::to_string(grid.z) + "), block (" + std::to_string(block.x) + "," +
                             std::to_string(block.y) + "," + std::to_string(block.z) + ")");
  std::lock_guard<std::mutex> serial(launch_mutex());
  const int n = static_cast<int>(threads);
  Block state(kernel, n);
  ThreadPool::get().run(n, [&](int tid) {
    current_block = &state;
    current_tid = tid;
    threadIdx = {tid % block.x, (tid / block.x) % block.y, tid / (block.x * block.y)};
    blockDim = block;
    gridDim = grid;
    try {
      state.start(tid);
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) {
            blockIdx = {x, y, z};
            body();
            if (tid == 0) ++blocks_run;
            const bool last = x + 1 == grid.x && y + 1 == grid.y && z + 1 == grid.z;
            state.arrive(tid, Block::kEnd, last);
          }
    } catch (const Aborted&) {
    } catch (const std::exception& e) {
      state.fail_locked(std::string("exception in kernel ") + kernel + ": " + e.what());
    }
    current_block = nullptr;
  });
  ++launches;
  if (!state.error().empty())
    throw std::runtime_error(std::string("pydeform CUDA emulation: kernel ") + kernel + ": " + state.error());
}

}  // namespace emulation
}  // namespace pydeform

// The block barrier; the default argument records the call site, so that threads meeting at
// different __syncthreads() calls are reported instead of silently pairing up.
inline void __syncthreads(int line = __builtin_LINE()) {
  pydeform::emulation::current_block->arrive(pydeform::emulation::current_tid, line);
}
