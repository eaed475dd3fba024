#!/usr/bin/env bash
# Cross-compiles llama.cpp (vendored in the pinned llama-cpp-python sdist), bua's C++ runtime, its
# C++ tests and bua-predict for aarch64 Linux as static executables, and prints their sizes.
#
#   bash scripts/build-arm64.sh        # last line: BUA_ARM64_BIN=<folder with the binaries>
#
# Needs: aarch64-linux-gnu-gcc/g++ (apt-get install crossbuild-essential-arm64), cmake >= 3.21.
# Run the results with qemu-aarch64 (apt-get install qemu-user) or copy them to an arm64 box.
#
# Cached under ${BUA_CACHE:-~/.cache/bua}/arm64-<llama-cpp-python version>-<hash>/, the hash
# covering the sdist, the cross compiler, the toolchain file and llama.cpp's flags:
#   llama/            llama.cpp installed there (static libraries, headers, CMake package)
#   bua-<hash>/       bua-runtime-tests and bua-predict; this hash adds bua's C++ sources, so an
#                     edit in cpp/ rebuilds a minute of bua, not llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

LLAMA_CPP_PYTHON=0.3.36
LLAMA_SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
TRIPLET=aarch64-linux-gnu
# armv8.2-a + dotprod: the SDOT/UDOT int8 dot products that ggml's quantized matmuls are built on,
# present in every Cortex-A55/A75 and later core (phones since 2017, Raspberry Pi 5's A76, Jetson
# Orin's A78AE, Graviton 2+). Nothing more: fp16 arithmetic is optional in armv8.2-a (and only
# speeds up f16 weights); i8mm, SVE and SME come with Armv8.6/v9 cores and A76/A78/N1 lack them.
# Older cores without dotprod (Pi 4's A72, A53) are refused at load time by
# bua::build_problems() (HWCAP_ASIMDDP), not killed by SIGILL.
ARM_ARCH=armv8.2-a+dotprod
# The same switches as docs/ON_DEVICE.md's Android recipe (ggml's own thread pool, no llamafile
# sgemm), so this build checks that configuration too; static, so one file runs anywhere.
LLAMA_ARGS=(
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=OFF "-DGGML_CPU_ARM_ARCH=$ARM_ARCH"
  -DGGML_OPENMP=OFF -DGGML_LLAMAFILE=OFF -DGGML_BACKEND_DL=OFF -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
)

die() { echo "build-arm64: $*" >&2; exit 1; }
say() { echo "[build-arm64 $(date +%H:%M:%S)] $*"; }

for tool in "$TRIPLET-gcc" "$TRIPLET-g++" "$TRIPLET-strip"; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install crossbuild-essential-arm64"
done
for tool in tar sha256sum flock; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
if [ -x .venv/bin/cmake ]; then cmake=.venv/bin/cmake; else cmake=$(command -v cmake) || die "cmake not found (bua's test extra installs it into .venv)"; fi
generator=()
if [ -x .venv/bin/ninja ]; then generator=(-G Ninja -DCMAKE_MAKE_PROGRAM="$root/.venv/bin/ninja")
elif command -v ninja >/dev/null; then generator=(-G Ninja); fi
jobs=${BUA_ARM64_JOBS:-$(nproc)}
grep -q "\"llama-cpp-python==$LLAMA_CPP_PYTHON\"" pyproject.toml ||
  die "pyproject.toml no longer pins llama-cpp-python==$LLAMA_CPP_PYTHON: update LLAMA_CPP_PYTHON and LLAMA_SDIST_SHA256 here"

cache_root=${BUA_CACHE:-$HOME/.cache/bua}
sdist=${BUA_LLAMA_SDIST:-$cache_root/sdist/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz}
if [ ! -f "$sdist" ]; then
  python=.venv/bin/python; [ -x "$python" ] || python=python3
  say "downloading the llama-cpp-python $LLAMA_CPP_PYTHON sdist"
  # --no-build-isolation: pip reads the sdist's metadata with the scikit-build-core installed
  # here instead of building cmake from source in an isolated environment.
  "$python" -m pip download --quiet --no-deps --no-binary llama-cpp-python --no-build-isolation \
    -d "$(dirname "$sdist")" "llama-cpp-python==$LLAMA_CPP_PYTHON" ||
    die "could not download the sdist; set BUA_LLAMA_SDIST=/path/to/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz"
fi
echo "$LLAMA_SDIST_SHA256  $sdist" | sha256sum --check --quiet - ||
  die "$sdist: sha256 differs from the llama-cpp-python $LLAMA_CPP_PYTHON sdist on PyPI"

toolchain=$root/cpp/cmake/aarch64-linux-gnu.cmake
llama_key=$( { echo "$LLAMA_SDIST_SHA256"; "$TRIPLET-g++" --version | head -1; cat "$toolchain"; printf '%s\n' "${LLAMA_ARGS[@]}"; } | sha256sum | cut -c1-12)
cache=$cache_root/arm64-$LLAMA_CPP_PYTHON-$llama_key
bua_sources=(CMakeLists.txt $(find cpp/include cpp/src cpp/examples cpp/tests -type f | sort))
bua_key=$( { echo "$llama_key"; for f in "${bua_sources[@]}"; do echo "$f"; cat "$f"; done; } | sha256sum | cut -c1-12)
bin=$cache/bua-$bua_key
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one build per cache folder; a second caller waits and then reuses it

if [ ! -f "$cache/llama/.done" ]; then
  start=$SECONDS
  rm -rf "$cache/llama" "$cache/work-llama"
  mkdir -p "$cache/work-llama"
  say "extracting vendor/llama.cpp from $(basename "$sdist")"
  tar -xzf "$sdist" -C "$cache/work-llama" --strip-components=3 "llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp"
  say "building llama.cpp for $TRIPLET ($ARM_ARCH) with $jobs jobs"
  "$cmake" -S "$cache/work-llama" -B "$cache/work-llama/build" "${generator[@]}" \
    -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_INSTALL_PREFIX="$cache/llama" "${LLAMA_ARGS[@]}" >"$cache/llama-configure.log" 2>&1 ||
    die "llama.cpp configure failed, see $cache/llama-configure.log"
  "$cmake" --build "$cache/work-llama/build" -j "$jobs" >"$cache/llama-build.log" 2>&1 ||
    die "llama.cpp build failed, see $cache/llama-build.log"
  "$cmake" --install "$cache/work-llama/build" >/dev/null
  rm -rf "$cache/work-llama"
  touch "$cache/llama/.done"
  say "llama.cpp built in $((SECONDS - start)) s"
fi

if [ ! -f "$bin/.done" ]; then
  start=$SECONDS
  rm -rf "$bin" "$cache/work-bua"
  say "building bua-runtime-tests and bua-predict for $TRIPLET"
  "$cmake" -S "$root" -B "$cache/work-bua" "${generator[@]}" -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
    -DCMAKE_BUILD_TYPE=Release -DBUA_BUILD_TESTS=ON -DBUA_BUILD_EXAMPLES=ON \
    -Dllama_DIR="$cache/llama/lib/cmake/llama" -Dggml_DIR="$cache/llama/lib/cmake/ggml" \
    -DCMAKE_EXE_LINKER_FLAGS=-static >"$cache/bua-configure.log" 2>&1 ||
    die "bua configure failed, see $cache/bua-configure.log"
  "$cmake" --build "$cache/work-bua" -j "$jobs" --target bua-runtime-tests bua-predict >"$cache/bua-build.log" 2>&1 ||
    die "bua build failed, see $cache/bua-build.log"
  mkdir -p "$bin"
  for exe in bua-runtime-tests bua-predict; do
    "$TRIPLET-strip" -o "$bin/$exe" "$cache/work-bua/$exe"
  done
  rm -rf "$cache/work-bua"
  touch "$bin/.done"
  say "bua built in $((SECONDS - start)) s"
fi

say "static aarch64 executables (stripped), built with -march=$ARM_ARCH for ggml's CPU kernels:"
for exe in bua-runtime-tests bua-predict; do
  stat -c '%s %n' "$bin/$exe" | awk -v n="$exe" '{ printf "  %-18s %10d bytes (%.1f MiB)\n", n, $1, $1 / 1048576 }'
done
echo "BUA_ARM64_BIN=$bin"
