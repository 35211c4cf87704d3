/* simd_avx2.c -- the engine for x86-64-v3 CPUs (AVX2, FMA); chosen at run time (driver.c). */
#include "internal.h"
#if DBN_MULTI_ISA
#pragma GCC target("arch=x86-64-v3")
#define DBN_ENGINE dbn_run_tasks_avx2
#define DBN_VBYTES 32
#include "engine.inc"
#else
typedef int dbn_no_avx2_engine; /* not an x86-64 GCC build: only the baseline engine */
#endif
