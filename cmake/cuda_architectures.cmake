# The default CUDA architectures for the nvcc that was found: cubins for the newest
# architectures that nvcc can build, plus PTX of the newest of them so that later GPUs can JIT.
# (sm_86/89 run the sm_80 cubin, sm_120's PTX serves what comes after Blackwell.)
# Used when neither CMAKE_CUDA_ARCHITECTURES nor CUDAARCHS is set. Tested with the version as
# input: tests/cmake/test_cuda_architectures.cmake (cmake -P).

# pydeform_default_cuda_architectures(<nvcc version, e.g. 12.4> <out var>): the list, or "" when
# that nvcc is too old for pydeform (C++17 device code needs CUDA 11).
function(pydeform_default_cuda_architectures version out_var)
  if(version VERSION_LESS 11.0)
    set(archs "")
  elseif(version VERSION_LESS 11.1)
    set(archs "75-real;80")                    # 11.0: up to Ampere A100
  elseif(version VERSION_LESS 11.8)
    set(archs "75-real;80-real;86")            # 11.1-11.7: + sm_86
  elseif(version VERSION_LESS 12.8)
    set(archs "75-real;80-real;90-real;90")    # 11.8-12.7: + Hopper
  else()
    set(archs "75-real;80-real;90-real;100-real;120")  # 12.8+: + Blackwell
  endif()
  set(${out_var} "${archs}" PARENT_SCOPE)
endfunction()

# pydeform_nvcc_version(<nvcc path> <out var>): "major.minor" from `nvcc --version`, or "".
function(pydeform_nvcc_version nvcc out_var)
  execute_process(COMMAND ${nvcc} --version OUTPUT_VARIABLE text ERROR_QUIET RESULT_VARIABLE rc)
  set(version "")
  if(rc EQUAL 0 AND text MATCHES "release ([0-9]+\\.[0-9]+)")
    set(version ${CMAKE_MATCH_1})
  endif()
  set(${out_var} "${version}" PARENT_SCOPE)
endfunction()
