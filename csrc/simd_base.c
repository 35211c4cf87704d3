/* simd_base.c -- the engine for any CPU: the compiler's baseline (SSE2 on x86-64). */
#define DBN_ENGINE dbn_run_tasks_base
#define DBN_VBYTES 16
#include "engine.inc"
