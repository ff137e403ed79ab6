# cmake [-DWORK_DIR=<scratch dir>] -P tests/cmake/test_cuda_architectures.cmake: the default architecture list per nvcc
# version (run by tests/test_build_config.py).
include(${CMAKE_CURRENT_LIST_DIR}/../../cmake/cuda_architectures.cmake)

function(expect version expected)
  pydeform_default_cuda_architectures(${version} got)
  if(NOT got STREQUAL expected)
    message(FATAL_ERROR "nvcc ${version}: expected '${expected}', got '${got}'")
  endif()
endfunction()

expect(10.2 "")
expect(11.0 "75-real;80")
expect(11.4 "75-real;80-real;86")
expect(11.8 "75-real;80-real;90-real;90")
expect(12.1 "75-real;80-real;90-real;90")
expect(12.6 "75-real;80-real;90-real;90")
expect(12.8 "75-real;80-real;90-real;100-real;120")
expect(12.9 "75-real;80-real;90-real;100-real;120")
expect(13.0 "75-real;80-real;90-real;100-real;120")

# The version parser on nvcc's own output format, through a stand-in nvcc script.
if(NOT WORK_DIR)
  set(WORK_DIR ${CMAKE_CURRENT_BINARY_DIR})
endif()
set(fake ${WORK_DIR}/fake_nvcc.sh)
file(WRITE ${fake} "#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\necho 'Cuda compilation tools, release 12.4, V12.4.131'\n")
file(CHMOD ${fake} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
pydeform_nvcc_version(${fake} parsed)
file(REMOVE ${fake})
if(NOT parsed STREQUAL "12.4")
  message(FATAL_ERROR "nvcc --version parsing: expected 12.4, got '${parsed}'")
endif()
message(STATUS "cuda_architectures: all cases pass")
