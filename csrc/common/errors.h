#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace pydeform {

// Python validated the arguments already; these re-checks make a wrong call from Python
// raise instead of reading out of bounds. pybind11 turns invalid_argument into ValueError.
inline void check_arg(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("pydeform._C: " + what);
}

inline void check_sizes_positive(std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes) check_arg(s > 0, "every size must be positive");
}

inline void check_pointer(std::uintptr_t p, const char* name) {
  check_arg(p != 0, std::string("null pointer for ") + name);
}

}  // namespace pydeform
