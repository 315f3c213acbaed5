# Native CUDA kernels of torch_geometry (csrc/cuda/*.cu).
#
# Include from CMakeLists.txt after find_package(Torch):
#   include(cmake/TorchGeometryCUDA.cmake)
# With -DTORCH_GEOMETRY_CUDA=ON (and a CUDA build of torch) it enables the CUDA language
# for architectures 80 and 90 (override with -DTORCH_GEOMETRY_CUDA_ARCHITECTURES=...), adds the .cu
# files to the target torch_geometry and defines TORCH_GEOMETRY_WITH_NATIVE_CUDA for all of
# its sources, so that the device-generic kernels can call the native ones. The native
# kernels stay off at run time until enabled (TORCH_GEOMETRY_NATIVE_CUDA=1 or
# torch.ops.torch_geometry._set_native_cuda(True)): they are unverified until a GPU run has
# compared them with the CPU kernels. OFF (the default) leaves the build untouched.

option(TORCH_GEOMETRY_CUDA "Compile the native CUDA kernels (csrc/cuda/*.cu)" OFF)

if(TORCH_GEOMETRY_CUDA)
  # Torch's CMake config sets CMAKE_CUDA_ARCHITECTURES to OFF (it passes its own
  # TORCH_CUDA_ARCH_LIST flags), so the kernels' architectures have a variable of their own.
  set(TORCH_GEOMETRY_CUDA_ARCHITECTURES "80;90" CACHE STRING
      "CUDA architectures of the native kernels")
  enable_language(CUDA)
  # torch 2.x headers need C++20, and torch's config asks for it; CMake 3.25 does not know
  # nvcc's flag for that dialect ("requires the language dialect CUDA20"): tell it.
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  file(GLOB TG_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/../csrc/cuda/*.cu)

  function(torch_geometry_add_cuda_sources)
    if(NOT TARGET torch_geometry)
      message(FATAL_ERROR "TORCH_GEOMETRY_CUDA: no target torch_geometry to add the CUDA kernels to")
    endif()
    target_sources(torch_geometry PRIVATE ${TG_CUDA_SOURCES})
    target_compile_definitions(torch_geometry PRIVATE TORCH_GEOMETRY_WITH_NATIVE_CUDA)
    target_compile_options(torch_geometry PRIVATE
      $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
    set_property(TARGET torch_geometry PROPERTY CUDA_ARCHITECTURES ${TORCH_GEOMETRY_CUDA_ARCHITECTURES})
    set_property(TARGET torch_geometry PROPERTY CUDA_STANDARD 20)
    message(STATUS "torch_geometry: native CUDA kernels for architectures "
                   "${TORCH_GEOMETRY_CUDA_ARCHITECTURES} (off at run time until enabled)")
  endfunction()

  # The target may be declared after this file is included: add the sources at the end of
  # the directory then.
  if(TARGET torch_geometry)
    torch_geometry_add_cuda_sources()
  else()
    cmake_language(DEFER CALL torch_geometry_add_cuda_sources)
  endif()
endif()
