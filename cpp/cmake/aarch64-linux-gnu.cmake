# Cross-compiling for 64-bit Arm Linux (Raspberry Pi 5, Jetson, Graviton, ...) with Debian's
# gcc-aarch64-linux-gnu (`apt-get install crossbuild-essential-arm64`). Used by
# scripts/build-arm64.sh; any aarch64-linux-gnu toolchain with the same triplet works.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(BUA_CROSS_TRIPLET aarch64-linux-gnu CACHE STRING "GNU triplet of the cross compilers")
set(CMAKE_C_COMPILER ${BUA_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${BUA_CROSS_TRIPLET}-g++)

# Headers and libraries from the target sysroot only; programs (cmake's helpers) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/${BUA_CROSS_TRIPLET})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# try_run() checks and ctest run target binaries through the emulator when it is installed.
find_program(BUA_QEMU_AARCH64 qemu-aarch64)
if(BUA_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${BUA_QEMU_AARCH64} -L /usr/${BUA_CROSS_TRIPLET})
endif()
