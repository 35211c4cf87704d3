/* simd_avx512.c -- the engine for x86-64-v4 CPUs (AVX-512 F/BW/CD/DQ/VL); chosen at run time (driver.c). */
#include "internal.h"
#if DBN_MULTI_ISA
#pragma GCC target("arch=x86-64-v4,prefer-vector-width=512")
#define DBN_ENGINE dbn_run_tasks_avx512
#define DBN_VBYTES 64
#include "engine.inc"
#else
typedef int dbn_no_avx512_engine; /* not an x86-64 GCC build: only the baseline engine */
#endif
