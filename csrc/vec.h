/* vec.h -- vector basics of the engine (engine.inc): the vector types, load/store/splat, non-temporal
 * stores, alignment, select/abs and partial vectors (the ends of runs). GCC vector extensions: `vf` holds
 * DBN_VBYTES/4 floats, so one text gives SSE2, AVX2 and AVX-512 code.
 *
 * Not a shared header: its types depend on DBN_VBYTES (16, 32 or 64), which each engine's translation
 * unit (simd_*.c) defines before it includes engine.inc; one engine per translation unit.
 */
#ifndef DARKNET_BN_VEC_H
#define DARKNET_BN_VEC_H

#ifndef DBN_VBYTES
#error "vec.h: define DBN_VBYTES (the vector width in bytes: 16, 32 or 64) first"
#endif

#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && !defined(DBN_PORTABLE)
#include <immintrin.h>
#define DBN_X86 1
#else
#define DBN_X86 0   /* plain C: no intrinsics (non-temporal stores become plain stores) */
#endif

#define NV (DBN_VBYTES / 4)                      /* floats per vector */

typedef float vf __attribute__((vector_size(DBN_VBYTES)));
typedef float vf_u __attribute__((vector_size(DBN_VBYTES), aligned(4), may_alias));
typedef double vd __attribute__((vector_size(2 * DBN_VBYTES)));
typedef int32_t vi __attribute__((vector_size(DBN_VBYTES)));

static inline vf vload(const float *p) { return *(const vf_u *)p; }
static inline void vstore(float *p, vf v) { *(vf_u *)p = v; }
static inline vf vsplat(float x) { return (vf){0} + x; }
#define VWIDEN(v) __builtin_convertvector((v), vd)   /* a macro: wide vectors never cross a call */

static inline double vd_sum(const vd *v)
{
    double s = 0.0;
    for (int l = 0; l < NV; ++l) s += (*v)[l];
    return s;
}

/* Non-temporal store of one vector; p must be DBN_VBYTES-aligned. */
static inline void vstream(float *p, vf v)
{
#if DBN_X86 && DBN_VBYTES == 64
    _mm512_stream_ps(p, (__m512)v);
#elif DBN_X86 && DBN_VBYTES == 32
    _mm256_stream_ps(p, (__m256)v);
#elif DBN_X86 && DBN_VBYTES == 16
    _mm_stream_ps(p, (__m128)v);
#else
    vstore(p, v);
#endif
}

static inline int aligned_v(const float *p) { return ((uintptr_t)p % DBN_VBYTES) == 0; }

/* Lane-wise select: a where mask, else b (mask lanes all ones or all zeros, as comparisons give). AVX2:
 * one blend (the and/andnot/or form is three instructions). AVX-512: the bitwise form, which GCC turns
 * into two masked instructions on the comparison's mask register (a blend from the vector mask would
 * convert the mask register to a vector and back: four). */
static inline vf vsel(vi mask, vf a, vf b)
{
#if DBN_X86 && DBN_VBYTES == 32
    return (vf)_mm256_blendv_ps((__m256)b, (__m256)a, (__m256)mask);
#else
    return (vf)(((vi)a & mask) | ((vi)b & ~mask));
#endif
}
static inline vf vabs(vf x) { return (vf)((vi)x & 0x7fffffff); }
static inline vf vnabs(vf x) { return (vf)((vi)x | (int32_t)0x80000000); }   /* -|x|, one instruction */

/* max(lo, x) and min(hi, x) lane by lane, x's NaN kept: x86's max/min return their second operand
 * when either is NaN, so one instruction each (the compare-and-select form elsewhere). */
static inline vf vmax_lo(vf lo, vf x)
{
#if DBN_X86 && DBN_VBYTES == 64
    return (vf)_mm512_max_ps((__m512)lo, (__m512)x);
#elif DBN_X86 && DBN_VBYTES == 32
    return (vf)_mm256_max_ps((__m256)lo, (__m256)x);
#elif DBN_X86 && DBN_VBYTES == 16
    return (vf)_mm_max_ps((__m128)lo, (__m128)x);
#else
    return vsel(x < lo, lo, x);
#endif
}
static inline vf vmin_hi(vf hi, vf x)
{
#if DBN_X86 && DBN_VBYTES == 64
    return (vf)_mm512_min_ps((__m512)hi, (__m512)x);
#elif DBN_X86 && DBN_VBYTES == 32
    return (vf)_mm256_min_ps((__m256)hi, (__m256)x);
#elif DBN_X86 && DBN_VBYTES == 16
    return (vf)_mm_min_ps((__m128)hi, (__m128)x);
#else
    return vsel(x > hi, hi, x);
#endif
}

/* Partial vectors, for the ends of runs: vload_part gives the n < NV values at p in the first lanes
 * (the others zero), vstore_part stores the first n lanes of v. One masked instruction on AVX-512
 * (DBN_MASKED 1: a partial vector is as cheap as a whole one, so short runs -- small planes -- do not
 * end in a scalar loop); AVX2's maskload / maskstore (the activation's ends); a padded copy elsewhere. */
#if DBN_X86 && DBN_VBYTES == 64
#define DBN_MASKED 1
static inline vf vload_part(const float *p, int64_t n)
{
    return (vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}
static inline void vstore_part(float *p, vf v, int64_t n)
{
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), (__m512)v);
}
#elif DBN_X86 && DBN_VBYTES == 32
#define DBN_MASKED 0   /* the linear ends keep their scalar loop (masked ends not measured there) */
static inline __m256i vmask_part(int64_t n)   /* lanes 0..n-1 set */
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf vload_part(const float *p, int64_t n)   /* masked-off lanes are zero and not read */
{
    return (vf)_mm256_maskload_ps(p, vmask_part(n));
}
static inline void vstore_part(float *p, vf v, int64_t n)
{
    _mm256_maskstore_ps(p, vmask_part(n), (__m256)v);
}
#else
#define DBN_MASKED 0
static inline vf vload_part(const float *p, int64_t n)
{
    float t[NV] = {0};
    memcpy(t, p, (size_t)n * sizeof *t);
    return vload(t);
}
static inline void vstore_part(float *p, vf v, int64_t n)
{
    float t[NV];
    vstore(t, v);
    memcpy(p, t, (size_t)n * sizeof *t);
}
#endif

#endif
