# Sanitizer and fuzzing builds of the C++ library and its tests, in a build tree of their own
# (scripts/sanitize.sh and scripts/fuzz.sh configure, build and run them).
#
#   -DTORCH_GEOMETRY_SANITIZE="address;undefined"
#       instruments our code (the library, the GoogleTest suite, the fuzz targets) with the
#       listed sanitizers; libtorch and the system libraries are not instrumented. Any report
#       aborts the program (no recovery), so a test that trips a sanitizer fails.
#   -DTORCH_GEOMETRY_BUILD_FUZZERS=ON
#       also builds one libFuzzer program per tests/fuzz/fuzz_*.cpp (clang only); the library
#       gets libFuzzer's coverage instrumentation so that the fuzzer is guided through it.
#
# Included from the top-level CMakeLists.txt after find_package(Torch) and before the first
# target, so that the flags reach every target of the project.

set(TORCH_GEOMETRY_SANITIZE "" CACHE STRING
    "Sanitizers for our code and tests, e.g. \"address;undefined\" (empty: none)")
option(TORCH_GEOMETRY_BUILD_FUZZERS "Build the libFuzzer targets of tests/fuzz (clang)" OFF)

if(TORCH_GEOMETRY_BUILD_FUZZERS AND NOT TORCH_GEOMETRY_SANITIZE)
  # A fuzzer without sanitizers only finds crashes, not the memory errors before them.
  set(TORCH_GEOMETRY_SANITIZE "address;undefined")
endif()

if(TORCH_GEOMETRY_SANITIZE)
  foreach(_tg_san IN LISTS TORCH_GEOMETRY_SANITIZE)
    if(NOT _tg_san MATCHES "^(address|undefined|leak)$")
      message(FATAL_ERROR "TORCH_GEOMETRY_SANITIZE: expected a list of address, undefined, "
                          "leak; got \"${_tg_san}\" in \"${TORCH_GEOMETRY_SANITIZE}\"")
    endif()
  endforeach()
  if("address" IN_LIST TORCH_GEOMETRY_SANITIZE AND "leak" IN_LIST TORCH_GEOMETRY_SANITIZE)
    # AddressSanitizer already contains the leak checker.
    list(REMOVE_ITEM TORCH_GEOMETRY_SANITIZE leak)
  endif()
  string(REPLACE ";" "," _tg_san_flags "${TORCH_GEOMETRY_SANITIZE}")
  message(STATUS "torch_geometry: sanitizers ${_tg_san_flags}")
  add_compile_options(-fsanitize=${_tg_san_flags} -fno-sanitize-recover=all
                      -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=${_tg_san_flags})
endif()

if(TORCH_GEOMETRY_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TORCH_GEOMETRY_BUILD_FUZZERS needs clang (libFuzzer), got "
                        "${CMAKE_CXX_COMPILER_ID}: configure with -DCMAKE_CXX_COMPILER=clang++")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
  file(GLOB _tg_fuzz_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_*.cpp)
  foreach(_tg_src IN LISTS _tg_fuzz_sources)
    get_filename_component(_tg_name ${_tg_src} NAME_WE)
    add_executable(${_tg_name} ${_tg_src})
    target_include_directories(${_tg_name} PRIVATE ${PROJECT_SOURCE_DIR})
    # The library target is defined after this file is included: names resolve at generation.
    target_link_libraries(${_tg_name} PRIVATE torch_geometry Eigen3::Eigen)
    target_link_options(${_tg_name} PRIVATE -fsanitize=fuzzer)
  endforeach()
endif()
