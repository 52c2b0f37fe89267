# Resolves LATIM_CUDA (AUTO/ON/OFF) and builds the kernels library when CUDA is on.
include(CheckLanguage)
set(LATIM_WITH_CUDA OFF)
if(LATIM_CUDA STREQUAL "AUTO" OR LATIM_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # 90a: Hopper with its arch-specific instructions (wgmma), used by the LaTIM tile kernel.
    set(CMAKE_CUDA_ARCHITECTURES 90a CACHE STRING "CUDA architectures")
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(LATIM_WITH_CUDA ON)
  elseif(NOT LATIM_CUDA STREQUAL "AUTO")
    message(FATAL_ERROR "LATIM_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER)")
  endif()
endif()

if(LATIM_WITH_CUDA)
  # Hopper (H100/H200) by default; override with -DCMAKE_CUDA_ARCHITECTURES=...
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
    set(CMAKE_CUDA_ARCHITECTURES 90a)
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
  file(GLOB LATIM_KERNEL_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/kernels/*.cu)
  add_library(latim_kernels STATIC ${LATIM_KERNEL_SOURCES})
  target_include_directories(latim_kernels PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/kernels
                                                  ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(latim_kernels PUBLIC CUDA::cudart CUDA::cublas CUDA::cublasLt)
  target_compile_options(latim_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo>)
  # The wgmma tile kernel exists only in sm_90a code; the host side launches it only when
  # the build has that code (and the GPU is compute capability 9.0).
  if("90a" IN_LIST CMAKE_CUDA_ARCHITECTURES OR "90a-real" IN_LIST CMAKE_CUDA_ARCHITECTURES)
    target_compile_definitions(latim_kernels PRIVATE LATIM_SM90A=1)
  endif()
  # For compute-sanitizer runs: instrumented code needs registers, and the wgmma kernel's
  # register hand-over (setmaxnreg) can then wait forever. OFF keeps every warp at the
  # launch bound's 168 registers (the consumers spill, so it is slower).
  option(LATIM_WGMMA_SETMAXNREG "Let the wgmma tile kernel move registers from its producer to its consumers" ON)
  if(NOT LATIM_WGMMA_SETMAXNREG)
    target_compile_definitions(latim_kernels PRIVATE LATIM_NO_SETMAXNREG=1)
  endif()
  # NCCL (shipped with the CUDA toolkit or as libnccl-dev) carries the device buffers of a
  # sequence-sharded GPU forward between ranks; it needs MPI for its bootstrap.
  set(LATIM_WITH_NCCL OFF)
  if(LATIM_MPI)
    find_path(LATIM_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    find_library(LATIM_NCCL_LIB nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    if(LATIM_NCCL_INCLUDE AND LATIM_NCCL_LIB)
      set(LATIM_WITH_NCCL ON)
      add_library(latim_nccl INTERFACE)
      target_include_directories(latim_nccl INTERFACE ${LATIM_NCCL_INCLUDE})
      target_link_libraries(latim_nccl INTERFACE ${LATIM_NCCL_LIB})
      target_compile_definitions(latim_nccl INTERFACE LATIM_HAVE_NCCL=1)
    endif()
  endif()
  message(STATUS "latim: NCCL ${LATIM_WITH_NCCL} ${LATIM_NCCL_LIB}")
  message(STATUS "latim: CUDA backend ON (${CMAKE_CUDA_COMPILER_VERSION}, arch ${CMAKE_CUDA_ARCHITECTURES})")
else()
  message(STATUS "latim: CUDA backend OFF")
endif()
