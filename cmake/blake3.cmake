# BLAKE3: the official C implementation that Debian ships as source in librust-blake3-dev
# (c/ directory of the blake3 crate). Built in place into an object library with its SIMD
# run-time dispatch; nothing is copied into this repository.
file(GLOB _blake3_dirs /usr/share/cargo/registry/blake3-*/c)
list(SORT _blake3_dirs)
list(POP_BACK _blake3_dirs _blake3_default)
set(BLAKE3_DIR "${_blake3_default}" CACHE PATH "BLAKE3 C sources (librust-blake3-dev)")
if(NOT EXISTS "${BLAKE3_DIR}/blake3.h")
  message(FATAL_ERROR "BLAKE3 C sources not found (install librust-blake3-dev: scripts/deps.sh)")
endif()
set(BLAKE3_INCLUDE_DIR ${BLAKE3_DIR})
set(_b3 ${BLAKE3_DIR}/blake3.c ${BLAKE3_DIR}/blake3_dispatch.c ${BLAKE3_DIR}/blake3_portable.c)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  list(APPEND _b3 ${BLAKE3_DIR}/blake3_sse2_x86-64_unix.S ${BLAKE3_DIR}/blake3_sse41_x86-64_unix.S
       ${BLAKE3_DIR}/blake3_avx2_x86-64_unix.S ${BLAKE3_DIR}/blake3_avx512_x86-64_unix.S)
  set(_b3_defs "")
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  list(APPEND _b3 ${BLAKE3_DIR}/blake3_neon.c)
  set(_b3_defs BLAKE3_USE_NEON=1)
else()
  set(_b3_defs BLAKE3_NO_SSE2 BLAKE3_NO_SSE41 BLAKE3_NO_AVX2 BLAKE3_NO_AVX512)
endif()
add_library(vsr_blake3 OBJECT ${_b3})
target_compile_definitions(vsr_blake3 PRIVATE ${_b3_defs})
set_target_properties(vsr_blake3 PROPERTIES POSITION_INDEPENDENT_CODE ON C_VISIBILITY_PRESET hidden)
# Upstream code, built as shipped: its warnings are not ours to fix.
target_compile_options(vsr_blake3 PRIVATE -w)
