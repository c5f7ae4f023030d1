# hyrt's Debian/Ubuntu packages, in one place. Sourced (not run) by scripts/build.sh, which
# installs them, by scripts/gpu/fetch_deps.sh, which downloads the libraries for the GPU
# machine, and by .ci/run's fresh-root check.
#
# Installed with --no-install-recommends, so everything a build step reads must be named here
# even when another package only *recommends* it: libdnnl-dev's CMake config calls
# find_package(OpenCL), and Debian's libdnnl-dev merely recommends ocl-icd-opencl-dev.

# Compilers and build tools.
hyrt_tool_packages=(cmake ninja-build g++ ccache pkg-config)
# Libraries the library and CLI link against (headers + .so links).
# libbrotli-dev comes with libcpp-httplib-dev anyway (httplib.h includes its headers); it is
# named so that the GPU machine's carried prefix has those headers too (its Ubuntu lacks them).
hyrt_library_packages=(libdnnl-dev ocl-icd-opencl-dev libcli11-dev nlohmann-json3-dev libspng-dev
                        libcpp-httplib-dev libbrotli-dev)
# Test and benchmark frameworks.
hyrt_test_packages=(libgtest-dev libbenchmark-dev)
# The Python package (pip install ., scripts/ci/python.sh): Debian's python3 with what a venv
# and compiling an extension need. Not part of the C++ build, so not in the lists below.
hyrt_python_packages=(python3 python3-venv python3-dev)
# The shared libraries behind hyrt_library_packages, for a machine that unpacks .debs into
# a private prefix instead of installing them (the GPU machine: scripts/gpu/). Debian 12's
# names: the runtime packages carry the library's soname (Debian 13's oneDNN is libdnnl3.6).
hyrt_runtime_packages=(libdnnl2 ocl-icd-libopencl1 libspng0 libcpp-httplib0.11)

hyrt_build_packages=("${hyrt_tool_packages[@]}" "${hyrt_library_packages[@]}"
                     "${hyrt_test_packages[@]}")
