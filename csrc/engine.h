/* engine.h -- the tasks of a job (see internal.h), written once and compiled once per instruction set.
 *
 * simd_base.c, simd_avx2.c and simd_avx512.c each define DBN_ENGINE (the function name) and DBN_VBYTES
 * (the vector width in bytes: 16, 32, 64), set their target, and include this file. The loops use GCC
 * vector extensions (`vf`, DBN_VBYTES/4 floats), so one text gives SSE2, AVX2 and AVX-512 code.
 *
 * Accuracy: reductions accumulate float lanes for DBN_FOLD steps (32 adds per lane), then fold them
 * into double lanes; sums are of values around a per-channel shift (internal.h), so they stay small.
 * Tensors are [batch, c, spatial]: element (b, ch, s) at (b*c + ch)*spatial + s.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#if (defined(__x86_64__) || defined(__i386__)) && !defined(DBN_PORTABLE)
#include <immintrin.h>
#define DBN_X86 1
#else
#define DBN_X86 0   /* plain C: no intrinsics (non-temporal stores become plain stores) */
#endif

#define NV (DBN_VBYTES / 4)                      /* floats per vector */
#define DBN_FOLD 32                              /* float adds per lane before folding into double */
#define DBN_FOLD_ROWS 32                         /* block mode: rows between folds */

typedef float vf __attribute__((vector_size(DBN_VBYTES)));
typedef float vf_u __attribute__((vector_size(DBN_VBYTES), aligned(4), may_alias));
typedef double vd __attribute__((vector_size(2 * DBN_VBYTES)));

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

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Runs shorter than this are not worth aligning their stores for. */
#define DBN_PEEL_MIN (8 * NV)

/* The last m < NV values of a run in one masked vector (AVX-512), so short runs (small planes) do
 * not end in a scalar loop. MASKED_TAIL(expr) computes y = expr from vf `xa` (= a[j..]) and, for
 * BWD, `xb` (= b[j..]), and stores the m values to out (and out2). */
#if DBN_X86 && DBN_VBYTES == 64
#define DBN_HAS_MASKED_TAIL 1
#define MASKED_TAIL(expr)                                                                   \
    do {                                                                                    \
        const __mmask16 mk_ = (__mmask16)((1u << (m - j)) - 1u);                            \
        const vf xa = (vf)_mm512_maskz_loadu_ps(mk_, a + j);                                \
        const vf xb = TAIL_B(mk_);                                                          \
        (void)xb;                                                                           \
        const vf y_ = (expr);                                                               \
        _mm512_mask_storeu_ps(out + j, mk_, (__m512)y_);                                    \
        if (out2) _mm512_mask_storeu_ps(out2 + j, mk_, (__m512)y_);                         \
        j = m;                                                                              \
    } while (0)
#else
#define DBN_HAS_MASKED_TAIL 0
#endif

/* ------------------------------------------------------------------------------------------------
 * Darknet's element-wise activations (AlexeyAB's src/activations.h definitions), on vectors. exp is a
 * Cephes-style polynomial (about 1 ulp) with two-step scaling, so no libm call sits in a loop; tanh,
 * elu and selu go through expm1 (no cancellation near 0), mish and gelu through exact identities that
 * avoid cancellation: tanh(softplus(x)) = n/(n + 2) with n = e^x (e^x + 2), and
 * 1 + tanh(u) = 2 * logistic(2u). NaN stays NaN wherever Darknet's expression keeps it. */

typedef int32_t vi __attribute__((vector_size(DBN_VBYTES)));

static inline vf vsel(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vf vabs(vf x) { return (vf)((vi)x & 0x7fffffff); }

static inline vf vexp(vf x)
{
    const vi nan = x != x, over = x > 88.72283935546875f, under = x < -104.0f;
    vf xc = vsel(over | under | nan, vsplat(0.0f), x);
    const vf t = xc * 1.44269504088896341f;
    const vf nf = (t + 12582912.0f) - 12582912.0f;            /* round to nearest */
    const vf r = (xc - nf * 0.693359375f) - nf * -2.12194440e-4f;
    vf p = vsplat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    vf y = p * (r * r) + r + 1.0f;
    const vi n = __builtin_convertvector(nf, vi), h = n >> 1;  /* 2^n = 2^h * 2^(n-h): both normal */
    y = y * (vf)((h + 127) << 23) * (vf)((n - h + 127) << 23);
    y = vsel(over, vsplat(__builtin_inff()), y);
    y = vsel(under, vsplat(0.0f), y);
    return vsel(nan, x, y);
}

static inline vf vexpm1(vf x)
{
    const vf big = vexp(x) - 1.0f;
    vf p = x * (1.0f / 40320) + (1.0f / 5040);
    p = p * x + (1.0f / 720);
    p = p * x + (1.0f / 120);
    p = p * x + (1.0f / 24);
    p = p * x + (1.0f / 6);
    p = p * x + 0.5f;
    const vf small = p * (x * x) + x;
    return vsel(vabs(x) < 0.34657359f, small, big);
}

static inline vf vlogistic(vf x)   /* e^-|x| never overflows: 1/(1 + e) for x >= 0, e/(1 + e) below */
{
    const vf e = vexp(-vabs(x)), l = 1.0f / (1.0f + e);
    return vsel(x >= 0.0f, l, e * l);
}

static inline vf vtanh(vf x)
{
    const vf a = vabs(x);
    const vf em = vexpm1(2.0f * vsel(a > 9.0f, vsplat(9.0f), a));  /* tanh(9) rounds to 1 */
    const vf t = em / (em + 2.0f);
    return (vf)((vi)t | ((vi)x & (int32_t)0x80000000));          /* the sign of x */
}

static inline vf vact(vf x, int act)
{
    switch (act) {
    case DBN_ACT_LEAKY:   /* (x > 0) ? x : .1x is max(x, .1x), NaN and -0 included */
#if DBN_X86 && DBN_VBYTES == 64
        return (vf)_mm512_max_ps((__m512)x, (__m512)(0.1f * x));
#elif DBN_X86 && DBN_VBYTES == 32
        return (vf)_mm256_max_ps((__m256)x, (__m256)(0.1f * x));
#elif DBN_X86 && DBN_VBYTES == 16
        return (vf)_mm_max_ps((__m128)x, (__m128)(0.1f * x));
#else
        return vsel(x > 0.0f, x, 0.1f * x);
#endif
    case DBN_ACT_RELU: return x * vsel(x > 0.0f, vsplat(1.0f), vsplat(0.0f));
    case DBN_ACT_RELU6: {
        const vf t = vsel(x > 0.0f, x, vsplat(0.0f));
        return vsel(t < 6.0f, t, vsplat(6.0f));
    }
    case DBN_ACT_LOGISTIC: return vlogistic(x);
    case DBN_ACT_TANH: return vtanh(x);
    case DBN_ACT_ELU: return vsel(x >= 0.0f, x, vexpm1(x));
    case DBN_ACT_SELU: return vsel(x >= 0.0f, 1.0507f * x, (1.0507f * 1.6732f) * vexpm1(x));
    case DBN_ACT_GELU: return x * vlogistic(2.0f * (0.797885f * x + 0.035677f * (x * x * x)));
    case DBN_ACT_SWISH: return x * vlogistic(x);
    case DBN_ACT_MISH: {
        const vf e = vexp(vsel(x > 20.0f, vsplat(0.0f), x));
        const vf n = e * (e + 2.0f);
        return vsel(x > 20.0f, x, x * (n / (n + 2.0f)));
    }
    case DBN_ACT_HARD_MISH:
        return vsel(x > 0.0f, x, vsel(x > -2.0f, x * x * 0.5f + x, vsplat(0.0f)));
    default: return x;
    }
}

/* AFFINE then the activation over a run of m values (inference): out = act((a - k)*p + q). A
 * vector loop; the ragged ends go through the same vector code on a padded copy. */
static inline void act_partial(const float *a, float *out, int64_t m, vf kv, vf pv, vf qv, int act)
{
    float t[NV] = {0};
    memcpy(t, a, (size_t)m * sizeof *t);
    vstore(t, vact((vload(t) - kv) * pv + qv, act));
    memcpy(out, t, (size_t)m * sizeof *t);
}

#define DBN_INLINE static inline __attribute__((always_inline))

/* Calls `call` with the activation as a constant, so each activation gets its own loop. */
#define DBN_WITH_ACT(act, call)                                                              \
    switch (act) {                                                                           \
    case DBN_ACT_LEAKY: call(DBN_ACT_LEAKY); break;                                          \
    case DBN_ACT_RELU: call(DBN_ACT_RELU); break;                                            \
    case DBN_ACT_RELU6: call(DBN_ACT_RELU6); break;                                          \
    case DBN_ACT_LOGISTIC: call(DBN_ACT_LOGISTIC); break;                                    \
    case DBN_ACT_TANH: call(DBN_ACT_TANH); break;                                            \
    case DBN_ACT_ELU: call(DBN_ACT_ELU); break;                                              \
    case DBN_ACT_SELU: call(DBN_ACT_SELU); break;                                            \
    case DBN_ACT_GELU: call(DBN_ACT_GELU); break;                                            \
    case DBN_ACT_SWISH: call(DBN_ACT_SWISH); break;                                          \
    case DBN_ACT_MISH: call(DBN_ACT_MISH); break;                                            \
    case DBN_ACT_HARD_MISH: call(DBN_ACT_HARD_MISH); break;                                  \
    default: call(DBN_ACT_LINEAR); break;                                                    \
    }

DBN_INLINE void run_affine_act_k(const float *a, float *out, int64_t m, float k, float p, float q, int act, int nt)
{
    const vf kv = vsplat(k), pv = vsplat(p), qv = vsplat(q);
    int64_t j = 0;
    if (m >= DBN_PEEL_MIN && !aligned_v(out)) {   /* at most NV - 1 values, and never past m: a pointer
                                                    * that is not 4-byte aligned does not align here */
        j = min64((int64_t)((DBN_VBYTES - (uintptr_t)out % DBN_VBYTES) / 4), m);
        act_partial(a, out, j, kv, pv, qv, act);
    }
    if (nt && aligned_v(out + j))
        for (; j + NV <= m; j += NV) vstream(out + j, vact((vload(a + j) - kv) * pv + qv, act));
    else
        for (; j + NV <= m; j += NV) vstore(out + j, vact((vload(a + j) - kv) * pv + qv, act));
#if DBN_HAS_MASKED_TAIL
    float *const out2 = NULL;
#define TAIL_B(mk) ((vf){0})
    if (j < m) MASKED_TAIL(vact((xa - kv) * pv + qv, act));
#undef TAIL_B
#endif
    if (j < m) act_partial(a + j, out + j, m - j, kv, pv, qv, act);
}

static void run_affine_act(const float *a, float *out, int64_t m, float k, float p, float q, int act, int nt)
{
#define CALL(A) run_affine_act_k(a, out, m, k, p, q, A, nt)
    DBN_WITH_ACT(act, CALL)
#undef CALL
}

/* The same with per-element coefficients. */
DBN_INLINE void run_affine_x_act_k(const float *a, float *out, int64_t m, const float *k, const float *p,
                                   const float *q, int act)
{
    int64_t j = 0;
    for (; j + NV <= m; j += NV)
        vstore(out + j, vact((vload(a + j) - vload(k + j)) * vload(p + j) + vload(q + j), act));
    if (j < m) {
        float t[4][NV] = {{0}};
        memcpy(t[0], a + j, (size_t)(m - j) * sizeof(float));
        memcpy(t[1], k + j, (size_t)(m - j) * sizeof(float));
        memcpy(t[2], p + j, (size_t)(m - j) * sizeof(float));
        memcpy(t[3], q + j, (size_t)(m - j) * sizeof(float));
        vstore(t[0], vact((vload(t[0]) - vload(t[1])) * vload(t[2]) + vload(t[3]), act));
        memcpy(out + j, t[0], (size_t)(m - j) * sizeof(float));
    }
}

static void run_affine_x_act(const float *a, float *out, int64_t m, const float *k, const float *p, const float *q,
                             int act)
{
#define CALL(A) run_affine_x_act_k(a, out, m, k, p, q, A)
    DBN_WITH_ACT(act, CALL)
#undef CALL
}

/* ------------------------------------------------------------------------------------------------
 * Lane mode: one channel, its values [i0, i1) in runs of at most `spatial` contiguous floats. */

typedef struct {
    vf f0a, f0b, f1a, f1b;      /* float lanes: two vectors per sum */
    vd d0, d1;                  /* double lanes */
    double t0, t1;              /* scalar tails */
    int steps;                  /* float adds per lane since the last fold */
} lanes;

static inline void lanes_init(lanes *L)
{
    L->f0a = L->f0b = L->f1a = L->f1b = (vf){0};
    L->d0 = L->d1 = (vd){0};
    L->t0 = L->t1 = 0.0;
    L->steps = 0;
}

static inline void lanes_fold(lanes *L)
{
    L->d0 += VWIDEN(L->f0a) + VWIDEN(L->f0b);
    L->d1 += VWIDEN(L->f1a) + VWIDEN(L->f1b);
    L->f0a = L->f0b = L->f1a = L->f1b = (vf){0};
    L->steps = 0;
}

/* SUM2 over one run: s0 += (a - k), s1 += (a - k)^2. */
static inline void lanes_sum2(lanes *L, const float *restrict a, int64_t m, float k)
{
    const vf kv = vsplat(k);
    int64_t j = 0;
    while (m - j >= 2 * NV) {
        int64_t steps = min64((m - j) / (2 * NV), DBN_FOLD - L->steps);
        vf f0a = L->f0a, f0b = L->f0b, f1a = L->f1a, f1b = L->f1b;
        for (int64_t e = j + steps * 2 * NV; j < e; j += 2 * NV) {
            vf u = vload(a + j) - kv, v = vload(a + j + NV) - kv;
            f0a += u; f1a += u * u;
            f0b += v; f1b += v * v;
        }
        L->f0a = f0a; L->f0b = f0b; L->f1a = f1a; L->f1b = f1b;
        L->steps += (int)steps;
        if (L->steps == DBN_FOLD) lanes_fold(L);
    }
    for (; j < m; ++j) {
        double d = (double)a[j] - (double)k;
        L->t0 += d;
        L->t1 += d * d;
    }
}

/* DOT2 over one run: s0 += b, s1 += b*(a - k). */
static inline void lanes_dot2(lanes *L, const float *restrict a, const float *restrict b, int64_t m, float k)
{
    const vf kv = vsplat(k);
    int64_t j = 0;
    while (m - j >= 2 * NV) {
        int64_t steps = min64((m - j) / (2 * NV), DBN_FOLD - L->steps);
        vf f0a = L->f0a, f0b = L->f0b, f1a = L->f1a, f1b = L->f1b;
        for (int64_t e = j + steps * 2 * NV; j < e; j += 2 * NV) {
            vf bu = vload(b + j), bv = vload(b + j + NV);
            f0a += bu; f1a += bu * (vload(a + j) - kv);
            f0b += bv; f1b += bv * (vload(a + j + NV) - kv);
        }
        L->f0a = f0a; L->f0b = f0b; L->f1a = f1a; L->f1b = f1b;
        L->steps += (int)steps;
        if (L->steps == DBN_FOLD) lanes_fold(L);
    }
    for (; j < m; ++j) {
        double bj = b[j];
        L->t0 += bj;
        L->t1 += bj * ((double)a[j] - (double)k);
    }
}

static void reduce_lane(const dbn_job *job, int64_t ch, int64_t i0, int64_t i1, float k, double *s0, double *s1)
{
    const int64_t C = job->plan.c, S = job->plan.spatial;
    lanes L;
    lanes_init(&L);
    for (int64_t i = i0; i < i1;) {
        const int64_t bi = i / S, s = i % S, m = min64(S - s, i1 - i);
        const int64_t off = (bi * C + ch) * S + s;
        if (job->reduce == DBN_R_SUM2)
            lanes_sum2(&L, job->a + off, m, k);
        else
            lanes_dot2(&L, job->a + off, job->b + off, m, k);
        i += m;
    }
    lanes_fold(&L);
    *s0 = vd_sum(&L.d0) + L.t0;
    *s1 = vd_sum(&L.d1) + L.t1;
}

/* AFFINE over one run: out = (a - k)*p + q. */
static inline void run_affine(const float *a, float *out, float *out2, int64_t m, float k, float p, float q, int nt)
{
    const vf kv = vsplat(k), pv = vsplat(p), qv = vsplat(q);
    int64_t j = 0;
    if (m >= DBN_PEEL_MIN)
        for (; j < m && !aligned_v(out + j); ++j) {   /* aligned stores (a split store costs two); bounded:
                                                          * a pointer that is not 4-byte aligned never aligns */
            float y = (a[j] - k) * p + q;
            out[j] = y;
            if (out2) out2[j] = y;
        }
    if (nt && aligned_v(out + j)) {
        const int both = out2 && aligned_v(out2 + j);
        for (; j + NV <= m; j += NV) {
            vf y = (vload(a + j) - kv) * pv + qv;
            vstream(out + j, y);
            if (both) vstream(out2 + j, y);
            else if (out2) vstore(out2 + j, y);
        }
    } else if (out2) {
        for (; j + NV <= m; j += NV) {
            vf y = (vload(a + j) - kv) * pv + qv;
            vstore(out + j, y);
            vstore(out2 + j, y);
        }
    } else {
        for (; j + NV <= m; j += NV) vstore(out + j, (vload(a + j) - kv) * pv + qv);
    }
#if DBN_HAS_MASKED_TAIL
#define TAIL_B(mk) ((vf){0})
    if (j < m) MASKED_TAIL((xa - kv) * pv + qv);
#undef TAIL_B
#endif
    for (; j < m; ++j) {
        float y = (a[j] - k) * p + q;
        out[j] = y;
        if (out2) out2[j] = y;
    }
}

/* BWD over one run: out = b*p + (a - k)*q + r. */
static inline void run_bwd(const float *a, const float *b, float *out, float *out2, int64_t m, float k, float p,
                           float q, float r, int nt)
{
    const vf kv = vsplat(k), pv = vsplat(p), qv = vsplat(q), rv = vsplat(r);
    int64_t j = 0;
    if (m >= DBN_PEEL_MIN)
        for (; j < m && !aligned_v(out + j); ++j) {
            float y = b[j] * p + ((a[j] - k) * q + r);
            out[j] = y;
            if (out2) out2[j] = y;
        }
    if (nt && aligned_v(out + j)) {
        const int both = out2 && aligned_v(out2 + j);
        for (; j + NV <= m; j += NV) {
            vf y = vload(b + j) * pv + ((vload(a + j) - kv) * qv + rv);
            vstream(out + j, y);
            if (both) vstream(out2 + j, y);
            else if (out2) vstore(out2 + j, y);
        }
    } else if (out2) {
        for (; j + NV <= m; j += NV) {
            vf y = vload(b + j) * pv + ((vload(a + j) - kv) * qv + rv);
            vstore(out + j, y);
            vstore(out2 + j, y);
        }
    } else {
        for (; j + NV <= m; j += NV) vstore(out + j, vload(b + j) * pv + ((vload(a + j) - kv) * qv + rv));
    }
#if DBN_HAS_MASKED_TAIL
#define TAIL_B(mk) ((vf)_mm512_maskz_loadu_ps((mk), b + j))
    if (j < m) MASKED_TAIL(xb * pv + ((xa - kv) * qv + rv));
#undef TAIL_B
#endif
    for (; j < m; ++j) {
        float y = b[j] * p + ((a[j] - k) * q + r);
        out[j] = y;
        if (out2) out2[j] = y;
    }
}

/* Two rows (a and a + rs) of m values with the same per-element coefficients: one coefficient load
 * serves both (short rows: the coefficients are the traffic). act: the activation (AFFINE only). */
DBN_INLINE void run_x2_k(int bwd, int act, const float *a, const float *b, float *out, float *out2, int64_t rs,
                         int64_t m, const float *k, const float *p, const float *q, const float *r)
{
    int64_t j = 0;
    for (; j + NV <= m; j += NV) {
        const vf kk = vload(k + j), pp = vload(p + j), qq = vload(q + j);
        vf y0, y1;
        if (bwd) {
            const vf rr = vload(r + j);
            y0 = vload(b + j) * pp + ((vload(a + j) - kk) * qq + rr);
            y1 = vload(b + rs + j) * pp + ((vload(a + rs + j) - kk) * qq + rr);
        } else {
            y0 = (vload(a + j) - kk) * pp + qq;
            y1 = (vload(a + rs + j) - kk) * pp + qq;
            if (act) {
                y0 = vact(y0, act);
                y1 = vact(y1, act);
            }
        }
        vstore(out + j, y0);
        vstore(out + rs + j, y1);
        if (out2) {
            vstore(out2 + j, y0);
            vstore(out2 + rs + j, y1);
        }
    }
    if (j < m && act) {   /* the ragged end through the same vector code, padded */
        for (int64_t o = 0; o <= rs; o += rs) {
            float t[4][NV] = {{0}};
            memcpy(t[0], a + o + j, (size_t)(m - j) * sizeof(float));
            memcpy(t[1], k + j, (size_t)(m - j) * sizeof(float));
            memcpy(t[2], p + j, (size_t)(m - j) * sizeof(float));
            memcpy(t[3], q + j, (size_t)(m - j) * sizeof(float));
            vstore(t[0], vact((vload(t[0]) - vload(t[1])) * vload(t[2]) + vload(t[3]), act));
            memcpy(out + o + j, t[0], (size_t)(m - j) * sizeof(float));
        }
        return;
    }
    for (; j < m; ++j)
        for (int64_t o = 0; o <= rs; o += rs) {
            const float y = bwd ? b[o + j] * p[j] + ((a[o + j] - k[j]) * q[j] + r[j]) : (a[o + j] - k[j]) * p[j] + q[j];
            out[o + j] = y;
            if (out2) out2[o + j] = y;
        }
}

static void run_x2(int bwd, int act, const float *a, const float *b, float *out, float *out2, int64_t rs, int64_t m,
                   const float *k, const float *p, const float *q, const float *r)
{
    if (bwd) {
        run_x2_k(1, 0, a, b, out, out2, rs, m, k, p, q, r);
        return;
    }
#define CALL(A) run_x2_k(0, A, a, b, out, out2, rs, m, k, p, q, r)
    DBN_WITH_ACT(act, CALL)
#undef CALL
}

static void map_lane(const dbn_job *job, int64_t ch, int64_t i0, int64_t i1, float k, float p, float q, float r)
{
    const int64_t C = job->plan.c, S = job->plan.spatial;
    for (int64_t i = i0; i < i1;) {
        const int64_t bi = i / S, s = i % S, m = min64(S - s, i1 - i);
        const int64_t off = (bi * C + ch) * S + s;
        float *o2 = job->out2 ? job->out2 + off : NULL;
        if (job->act)
            run_affine_act(job->a + off, job->out + off, m, k, p, q, job->act, job->nt);
        else if (job->map == DBN_M_AFFINE)
            run_affine(job->a + off, job->out + off, o2, m, k, p, q, job->nt);
        else
            run_bwd(job->a + off, job->b + off, job->out + off, o2, m, k, p, q, r, job->nt);
        i += m;
    }
}

/* ------------------------------------------------------------------------------------------------
 * Block mode: channels [c0, c0+nc) of small planes; rows [r0, r1) of nc*spatial contiguous values,
 * per-element accumulators (acc[j*spatial + s] belongs to channel c0 + j). */

static void reduce_block(const dbn_job *job, int64_t c0, int64_t nc, int64_t r0, int64_t r1, const float *k,
                         double *s0, double *s1)
{
    const int64_t C = job->plan.c, S = job->plan.spatial, L = nc * S;
    float kv[DBN_TILE_MAX], f0[DBN_TILE_MAX], f1[DBN_TILE_MAX];
    double d0[DBN_TILE_MAX], d1[DBN_TILE_MAX];
    for (int64_t j = 0; j < nc; ++j)
        for (int64_t s = 0; s < S; ++s) kv[j * S + s] = k[j];
    memset(f0, 0, (size_t)L * sizeof *f0);
    memset(f1, 0, (size_t)L * sizeof *f1);
    memset(d0, 0, (size_t)L * sizeof *d0);
    memset(d1, 0, (size_t)L * sizeof *d1);
    const int64_t rs = C * S;   /* row stride */
    int rows = 0;
    for (int64_t bi = r0; bi < r1;) {
        const float *a = job->a + (bi * C + c0) * S;
        const float *b = job->b ? job->b + (bi * C + c0) * S : NULL;
        int step = 1;
        if (bi + 4 <= r1 && rows + 4 <= DBN_FOLD_ROWS) {   /* four rows per accumulator update */
            step = 4;
            if (job->reduce == DBN_R_SUM2) {
                for (int64_t l = 0; l < L; ++l) {
                    const float d0 = a[l] - kv[l], d1 = a[rs + l] - kv[l], d2 = a[2 * rs + l] - kv[l],
                                d3 = a[3 * rs + l] - kv[l];
                    f0[l] += (d0 + d1) + (d2 + d3);
                    f1[l] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
                }
            } else {
                for (int64_t l = 0; l < L; ++l) {
                    const float k = kv[l];
                    f0[l] += (b[l] + b[rs + l]) + (b[2 * rs + l] + b[3 * rs + l]);
                    f1[l] += (b[l] * (a[l] - k) + b[rs + l] * (a[rs + l] - k))
                             + (b[2 * rs + l] * (a[2 * rs + l] - k) + b[3 * rs + l] * (a[3 * rs + l] - k));
                }
            }
        } else if (job->reduce == DBN_R_SUM2) {
            for (int64_t l = 0; l < L; ++l) {
                float d = a[l] - kv[l];
                f0[l] += d;
                f1[l] += d * d;
            }
        } else {
            for (int64_t l = 0; l < L; ++l) {
                f0[l] += b[l];
                f1[l] += b[l] * (a[l] - kv[l]);
            }
        }
        bi += step;
        rows += step;
        if (rows == DBN_FOLD_ROWS || bi == r1) {
            for (int64_t l = 0; l < L; ++l) {
                d0[l] += f0[l];
                d1[l] += f1[l];
                f0[l] = 0.0f;
                f1[l] = 0.0f;
            }
            rows = 0;
        }
    }
    for (int64_t j = 0; j < nc; ++j) {
        double t0 = 0.0, t1 = 0.0;
        for (int64_t s = 0; s < S; ++s) {
            t0 += d0[j * S + s];
            t1 += d1[j * S + s];
        }
        s0[j] = t0;
        s1[j] = t1;
    }
}

static void map_block(const dbn_job *job, int64_t c0, int64_t nc, int64_t r0, int64_t r1, const float *k,
                      const float *p, const float *q, const float *r)
{
    const int64_t C = job->plan.c, S = job->plan.spatial, L = nc * S;
    if (S >= 2 * NV) {  /* rows of whole vectors per channel: run per channel, coefficients splatted */
        for (int64_t bi = r0; bi < r1; ++bi)
            for (int64_t j = 0; j < nc; ++j) {
                const int64_t off = (bi * C + c0 + j) * S;
                float *o2 = job->out2 ? job->out2 + off : NULL;
                if (job->act)
                    run_affine_act(job->a + off, job->out + off, S, k[j], p[j], q[j], job->act, job->nt);
                else if (job->map == DBN_M_AFFINE)
                    run_affine(job->a + off, job->out + off, o2, S, k[j], p[j], q[j], job->nt);
                else
                    run_bwd(job->a + off, job->b + off, job->out + off, o2, S, k[j], p[j], q[j], r[j], job->nt);
            }
        return;
    }
    float kv[DBN_TILE_MAX], pv[DBN_TILE_MAX], qv[DBN_TILE_MAX], rv[DBN_TILE_MAX];
    for (int64_t j = 0; j < nc; ++j)
        for (int64_t s = 0; s < S; ++s) {
            kv[j * S + s] = k[j];
            pv[j * S + s] = p[j];
            qv[j * S + s] = q[j];
            rv[j * S + s] = r ? r[j] : 0.0f;
        }
    for (int64_t bi = r0; bi < r1; ++bi) {
        const int64_t off = (bi * C + c0) * S;
        const float *a = job->a + off;
        float *out = job->out + off, *out2 = job->out2 ? job->out2 + off : NULL;
        if (bi + 1 < r1) {
            run_x2(job->map == DBN_M_BWD, job->act, a, job->b ? job->b + off : NULL, out, out2, C * S, L, kv, pv, qv,
                   rv);
            ++bi;
            continue;
        }
        if (job->act) {   /* the last row, alone */
            run_affine_x_act(a, out, L, kv, pv, qv, job->act);
            continue;
        }
        if (job->map == DBN_M_AFFINE) {
            if (out2)
                for (int64_t l = 0; l < L; ++l) out2[l] = out[l] = (a[l] - kv[l]) * pv[l] + qv[l];
            else
                for (int64_t l = 0; l < L; ++l) out[l] = (a[l] - kv[l]) * pv[l] + qv[l];
        } else {
            const float *b = job->b + off;
            if (out2)
                for (int64_t l = 0; l < L; ++l) out2[l] = out[l] = b[l] * pv[l] + ((a[l] - kv[l]) * qv[l] + rv[l]);
            else
                for (int64_t l = 0; l < L; ++l) out[l] = b[l] * pv[l] + ((a[l] - kv[l]) * qv[l] + rv[l]);
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * Flat tasks: element ranges [e0, e1) of the tensor, in memory order. */

/* Per-element coefficients (plan.expand): AFFINE / BWD over m values with coefficient arrays. */
static inline void run_affine_x(const float *a, float *out, float *out2, int64_t m, const float *k,
                                const float *p, const float *q, int nt)
{
    int64_t j = 0;
    for (; j < m && !aligned_v(out + j); ++j) {
        float y = (a[j] - k[j]) * p[j] + q[j];
        out[j] = y;
        if (out2) out2[j] = y;
    }
    const int both = out2 && aligned_v(out2 + j), ntv = nt && aligned_v(out + j);   /* streams: aligned only */
    for (; j + NV <= m; j += NV) {
        vf y = (vload(a + j) - vload(k + j)) * vload(p + j) + vload(q + j);
        if (ntv) vstream(out + j, y); else vstore(out + j, y);
        if (out2) {
            if (nt && both) vstream(out2 + j, y); else vstore(out2 + j, y);
        }
    }
    for (; j < m; ++j) {
        float y = (a[j] - k[j]) * p[j] + q[j];
        out[j] = y;
        if (out2) out2[j] = y;
    }
}

static inline void run_bwd_x(const float *a, const float *b, float *out, float *out2, int64_t m, const float *k,
                             const float *p, const float *q, const float *r, int nt)
{
    int64_t j = 0;
    for (; j < m && !aligned_v(out + j); ++j) {
        float y = b[j] * p[j] + ((a[j] - k[j]) * q[j] + r[j]);
        out[j] = y;
        if (out2) out2[j] = y;
    }
    const int both = out2 && aligned_v(out2 + j), ntv = nt && aligned_v(out + j);
    for (; j + NV <= m; j += NV) {
        vf y = vload(b + j) * vload(p + j) + ((vload(a + j) - vload(k + j)) * vload(q + j) + vload(r + j));
        if (ntv) vstream(out + j, y); else vstore(out + j, y);
        if (out2) {
            if (nt && both) vstream(out2 + j, y); else vstore(out2 + j, y);
        }
    }
    for (; j < m; ++j) {
        float y = b[j] * p[j] + ((a[j] - k[j]) * q[j] + r[j]);
        out[j] = y;
        if (out2) out2[j] = y;
    }
}

/* Where a flat position e falls: its offset in its plane (s) and its channel (ch). Runs never cross a
 * plane, so the next run's position follows without a division. */
typedef struct {
    int64_t s, ch;
} flatpos;

static inline flatpos flat_at(int64_t e, int64_t S, int64_t C)
{
    const flatpos p = {e % S, (e / S) % C};
    return p;
}

static inline void flat_advance(flatpos *p, int64_t m, int64_t S, int64_t C)
{
    p->s += m;
    if (p->s == S) {
        p->s = 0;
        if (++p->ch == C) p->ch = 0;
    }
}

/* map_flat with an activation, specialized per activation (AFFINE, inference). */
DBN_INLINE void map_flat_act_k(const dbn_job *job, int64_t e0, int64_t e1, int act)
{
    const int64_t C = job->plan.c, S = job->plan.spatial, row = C * S;
    if (!job->plan.expand) {
        flatpos at = flat_at(e0, S, C);
        for (int64_t e = e0; e < e1;) {
            const int64_t m = min64(S - at.s, e1 - e), ch = at.ch;
            run_affine_act_k(job->a + e, job->out + e, m, job->k[ch], job->p[ch], job->q[ch], act, job->nt);
            e += m;
            flat_advance(&at, m, S, C);
        }
        return;
    }
    for (int64_t e = e0; e < e1;) {
        const int64_t o = e % row;
        int64_t m;
        if (o == 0 && row <= DBN_EXPAND_MAX && e + 2 * row <= e1) {
            m = 2 * row;
            run_x2_k(0, act, job->a + e, NULL, job->out + e, NULL, row, row, job->k, job->p, job->q, NULL);
        } else {
            m = min64(row - o, e1 - e);
            run_affine_x_act_k(job->a + e, job->out + e, m, job->k + o, job->p + o, job->q + o, act);
        }
        e += m;
    }
}

static void map_flat(const dbn_job *job, int64_t e0, int64_t e1)
{
    const int64_t C = job->plan.c, S = job->plan.spatial, row = C * S;
    const int bwd = job->map == DBN_M_BWD;
    if (job->act) {
#define CALL(A) map_flat_act_k(job, e0, e1, A)
        DBN_WITH_ACT(job->act, CALL)
#undef CALL
        return;
    }
    if (!job->plan.expand) {
        flatpos at = flat_at(e0, S, C);
        for (int64_t e = e0; e < e1;) {
            float *o2 = job->out2 ? job->out2 + e : NULL;
            const int64_t m = min64(S - at.s, e1 - e), ch = at.ch;
            if (bwd)
                run_bwd(job->a + e, job->b + e, job->out + e, o2, m, job->k[ch], job->p[ch], job->q[ch],
                        job->r[ch], job->nt);
            else
                run_affine(job->a + e, job->out + e, o2, m, job->k[ch], job->p[ch], job->q[ch], job->nt);
            e += m;
            flat_advance(&at, m, S, C);
        }
        return;
    }
    for (int64_t e = e0; e < e1;) {   /* per-element coefficients, row by row (two at once when whole) */
        float *o2 = job->out2 ? job->out2 + e : NULL;
        const int64_t o = e % row;
        int64_t m;
        if (o == 0 && row <= DBN_EXPAND_MAX && e + 2 * row <= e1) {
            m = 2 * row;
            run_x2(bwd, 0, job->a + e, bwd ? job->b + e : NULL, job->out + e, o2, row, row, job->k, job->p, job->q,
                   job->r);
        } else {
            m = min64(row - o, e1 - e);
            if (bwd)
                run_bwd_x(job->a + e, job->b + e, job->out + e, o2, m, job->k + o, job->p + o, job->q + o,
                          job->r + o, job->nt);
            else
                run_affine_x(job->a + e, job->out + e, o2, m, job->k + o, job->p + o, job->q + o, job->nt);
        }
        e += m;
    }
}

/* Partial sums of a flat range, per channel (lane mode: runs of at least DBN_LANE_MIN_SPATIAL):
 * s0[ch], s1[ch] receive the sums of this range's values of channel ch (others stay 0). */
static void reduce_flat(const dbn_job *job, int64_t e0, int64_t e1, const float *k, double *s0, double *s1)
{
    const int64_t C = job->plan.c, S = job->plan.spatial;
    flatpos at = flat_at(e0, S, C);
    for (int64_t e = e0; e < e1;) {
        const int64_t ch = at.ch, m = min64(S - at.s, e1 - e);
        lanes L;
        lanes_init(&L);
        if (job->reduce == DBN_R_SUM2)
            lanes_sum2(&L, job->a + e, m, k[ch]);
        else
            lanes_dot2(&L, job->a + e, job->b + e, m, k[ch]);
        lanes_fold(&L);
        s0[ch] += vd_sum(&L.d0) + L.t0;
        s1[ch] += vd_sum(&L.d1) + L.t1;
        e += m;
        flat_advance(&at, m, S, C);
    }
}

/* ------------------------------------------------------------------------------------------------ */

static void reduce_range(const dbn_job *job, int64_t c0, int64_t nc, int64_t i0, int64_t i1, const float *k,
                         double *s0, double *s1)
{
    if (job->plan.tile == 1) {
        for (int64_t j = 0; j < nc; ++j) reduce_lane(job, c0 + j, i0, i1, k[j], s0 + j, s1 + j);
    } else {
        const int64_t S = job->plan.spatial;
        reduce_block(job, c0, nc, i0 / S, i1 / S, k, s0, s1);
    }
}

static void map_range(const dbn_job *job, int64_t c0, int64_t nc, int64_t i0, int64_t i1, const float *k,
                      const float *p, const float *q, const float *r)
{
    if (job->plan.tile == 1) {
        for (int64_t j = 0; j < nc; ++j) map_lane(job, c0 + j, i0, i1, k[j], p[j], q[j], r ? r[j] : 0.0f);
    } else {
        const int64_t S = job->plan.spatial;
        map_block(job, c0, nc, i0 / S, i1 / S, k, p, q, r);
    }
}

void DBN_ENGINE(const dbn_job *job, int64_t t0, int64_t t1)
{
    const dbn_plan *pl = &job->plan;
    const int64_t n = pl->batch * pl->spatial, total = n * pl->c;
    for (int64_t t = t0; t < t1; ++t) {
        if (job->phase == DBN_PHASE_REDUCE_FLAT || job->phase == DBN_PHASE_MAP_FLAT) {
            const int64_t e0 = t * pl->flat_chunk, e1 = min64(e0 + pl->flat_chunk, total);
            if (job->phase == DBN_PHASE_MAP_FLAT) {
                map_flat(job, e0, e1);
            } else {
                double *s0 = job->part0 + t * pl->c, *s1 = job->part1 + t * pl->c;
                memset(s0, 0, (size_t)pl->c * sizeof *s0);
                memset(s1, 0, (size_t)pl->c * sizeof *s1);
                reduce_flat(job, e0, e1, job->k, s0, s1);
            }
            continue;
        }
        const int64_t c0 = (t / pl->nchunks) * pl->tile, nc = min64(pl->tile, pl->c - c0);
        const int64_t i0 = (t % pl->nchunks) * pl->chunk, i1 = min64(i0 + pl->chunk, n);
        if (job->phase == DBN_PHASE_FUSED) {
            float k[DBN_TILE_MAX], p[DBN_TILE_MAX], q[DBN_TILE_MAX], r[DBN_TILE_MAX];
            double s0[DBN_TILE_MAX], s1[DBN_TILE_MAX];
            dbn_fill_shifts(job, c0, nc, k);
            if (job->reduce != DBN_R_NONE) reduce_range(job, c0, nc, i0, i1, k, s0, s1);
            job->coef(job, c0, nc, job->reduce != DBN_R_NONE ? s0 : NULL, s1, k, p, q, r);
            if (job->map != DBN_M_NONE) map_range(job, c0, nc, i0, i1, k, p, q, r);
        } else {   /* DBN_PHASE_REDUCE_GRID */
            reduce_range(job, c0, nc, i0, i1, job->k + c0, job->part0 + t * pl->tile, job->part1 + t * pl->tile);
        }
    }
#if DBN_X86
    if (job->nt) _mm_sfence();   /* order the non-temporal stores before anyone reads them */
#endif
}
