// Which instruction sets the loaded llama.cpp was compiled with, and whether this CPU has them.
// llama.cpp reports its CPU backend's compile-time instruction sets in its system info; a build
// that uses one this CPU lacks dies with SIGILL at the first matmul, so we refuse it up front.
#include <cctype>
#include <string>
#include <vector>

#include "bua/runtime.h"
#include "llama.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace bua {

namespace {

#if defined(__x86_64__) || defined(__i386__)
struct X86Features {
    unsigned l1_ecx = 0, l7_ebx = 0, l7_ecx = 0, l7s1_eax = 0;
    unsigned long long xcr0 = 0;  // register state the OS saves: AVX needs YMM, AVX-512 ZMM too

    X86Features() {
        unsigned a, b, c, d;
        if (__get_cpuid(1, &a, &b, &c, &d)) l1_ecx = c;
        if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) { l7_ebx = b; l7_ecx = c; }
        if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) l7s1_eax = a;
        if (l1_ecx & (1u << 27)) {  // OSXSAVE: xgetbv is available
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
        }
    }
    bool ymm() const { return (xcr0 & 0x6) == 0x6; }
    bool zmm() const { return ymm() && (xcr0 & 0xe0) == 0xe0; }
};

// The system-info name -> whether this CPU and OS can run it.
bool x86_has(const std::string& name, const X86Features& f) {
    auto bit = [](unsigned reg, int i) { return (reg >> i) & 1u; };
    if (name == "SSE3") return bit(f.l1_ecx, 0);
    if (name == "SSSE3") return bit(f.l1_ecx, 9);
    if (name == "AVX") return bit(f.l1_ecx, 28) && f.ymm();
    if (name == "F16C") return bit(f.l1_ecx, 29) && f.ymm();
    if (name == "FMA") return bit(f.l1_ecx, 12) && f.ymm();
    if (name == "AVX2") return bit(f.l7_ebx, 5) && f.ymm();
    if (name == "BMI2") return bit(f.l7_ebx, 8);
    if (name == "AVX_VNNI") return bit(f.l7s1_eax, 4) && f.ymm();
    // ggml's AVX512 switch compiles with AVX512 F, CD, VL, DQ and BW.
    if (name == "AVX512")
        return bit(f.l7_ebx, 16) && bit(f.l7_ebx, 28) && bit(f.l7_ebx, 31) && bit(f.l7_ebx, 17) &&
               bit(f.l7_ebx, 30) && f.zmm();
    if (name == "AVX512_VBMI") return bit(f.l7_ecx, 1) && f.zmm();
    if (name == "AVX512_VNNI") return bit(f.l7_ecx, 11) && f.zmm();
    if (name == "AVX512_BF16") return bit(f.l7s1_eax, 5) && f.zmm();
    return true;  // not an instruction set (e.g. REPACK, LLAMAFILE, OPENMP)
}
#elif defined(__aarch64__) && defined(__linux__)
// Linux and Android report arm64 extensions in the auxiliary vector.
bool arm_has(const std::string& name) {
    const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    if (name == "DOTPROD") return hw & HWCAP_ASIMDDP;
    if (name == "FP16_VA") return hw & HWCAP_FPHP;
    if (name == "SVE") return hw & HWCAP_SVE;
#ifdef HWCAP2_I8MM
    if (name == "MATMUL_INT8") return hw2 & HWCAP2_I8MM;
#endif
#ifdef HWCAP2_SME
    if (name == "SME") return hw2 & HWCAP2_SME;
#endif
    (void)hw2;
    return true;  // NEON and FP are baseline arm64; the rest are not instruction sets
}
#endif

// "CPU : SSE3 = 1 | AVX = 1 | ..." -> the names set to 1.
std::vector<std::string> enabled_names(const std::string& info) {
    std::vector<std::string> names;
    size_t pos = 0;
    while ((pos = info.find(" = 1", pos)) != std::string::npos) {
        size_t start = pos;
        while (start > 0 && (std::isupper(static_cast<unsigned char>(info[start - 1])) ||
                             std::isdigit(static_cast<unsigned char>(info[start - 1])) || info[start - 1] == '_'))
            --start;
        if (start < pos) names.emplace_back(info.substr(start, pos - start));
        pos += 4;
    }
    return names;
}

}  // namespace

std::string system_info() { return llama_print_system_info(); }

std::vector<std::string> build_problems() { return build_problems(system_info()); }

std::vector<std::string> build_problems(const std::string& info) {
    std::vector<std::string> problems;
    for (const std::string& name : enabled_names(info)) {
        if (name.rfind("AMX", 0) == 0) {
            problems.push_back(name + ": ggml's AMX backend is compiled in; it crashes (SIGILL) on CPUs with AMX");
            continue;
        }
#if defined(__x86_64__) || defined(__i386__)
        static const X86Features features;
        const bool supported = x86_has(name, features);
#elif defined(__aarch64__) && defined(__linux__)
        const bool supported = arm_has(name);
#else
        const bool supported = true;  // no runtime feature query here (e.g. Apple: fixed per SDK target)
#endif
        if (!supported)
            problems.push_back(name + ": llama.cpp was compiled for it, but this CPU (or its OS) does not support it");
    }
    return problems;
}

}  // namespace bua
