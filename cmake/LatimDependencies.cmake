# Finds the host dependencies and gathers them in one interface target, latim_deps.
add_library(latim_deps INTERFACE)

find_package(OpenMP REQUIRED COMPONENTS CXX)
target_link_libraries(latim_deps INTERFACE OpenMP::OpenMP_CXX)

# Threaded OpenBLAS (OpenMP flavour, so it shares the OpenMP runtime with our loops)
# runs the plain matrix products of the CPU reference.
find_path(LATIM_CBLAS_INCLUDE cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/openblas /usr/include
  NO_DEFAULT_PATH)
find_library(LATIM_OPENBLAS_LIB NAMES openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/x86_64-linux-gnu
  NO_DEFAULT_PATH)
if(NOT LATIM_CBLAS_INCLUDE OR NOT LATIM_OPENBLAS_LIB)
  message(FATAL_ERROR "OpenBLAS not found: install libopenblas-openmp-dev")
endif()
target_include_directories(latim_deps INTERFACE ${LATIM_CBLAS_INCLUDE})
target_link_libraries(latim_deps INTERFACE ${LATIM_OPENBLAS_LIB} ${CMAKE_DL_LIBS})

find_package(ZLIB REQUIRED)
target_link_libraries(latim_deps INTERFACE ZLIB::ZLIB)
find_package(Threads REQUIRED)
target_link_libraries(latim_deps INTERFACE Threads::Threads)

find_package(nlohmann_json 3.10 REQUIRED)
target_link_libraries(latim_deps INTERFACE nlohmann_json::nlohmann_json)

find_package(Boost 1.74 REQUIRED COMPONENTS program_options)

if(LATIM_MPI)
  find_package(MPI REQUIRED COMPONENTS C)
  target_link_libraries(latim_deps INTERFACE MPI::MPI_C)
  target_compile_definitions(latim_deps INTERFACE LATIM_HAVE_MPI=1 OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
  set(HDF5_PREFER_PARALLEL ON)
endif()
find_package(HDF5 REQUIRED COMPONENTS C)
target_include_directories(latim_deps INTERFACE ${HDF5_INCLUDE_DIRS})
target_link_libraries(latim_deps INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(latim_deps INTERFACE ${HDF5_DEFINITIONS})
if(HDF5_IS_PARALLEL)
  target_compile_definitions(latim_deps INTERFACE LATIM_HDF5_PARALLEL=1)
endif()
message(STATUS "latim: MPI=${LATIM_MPI} HDF5 parallel=${HDF5_IS_PARALLEL} (${HDF5_VERSION})")
