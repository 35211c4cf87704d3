/* vec_math.h -- vector math of the engine (engine.inc): exp, expm1, logistic, tanh and Darknet's
 * element-wise activations (AlexeyAB's src/activations.h definitions), on vectors. exp is a
 * Cephes-style polynomial (about 1 ulp) with two-step scaling, so no libm call sits in a loop; tanh,
 * elu and selu go through expm1 (no cancellation near 0), mish and gelu through exact identities that
 * avoid cancellation: tanh(softplus(x)) = n/(n + 2) with n = e^x (e^x + 2), and
 * 1 + tanh(u) = 2 * logistic(2u). NaN stays NaN wherever Darknet's expression keeps it.
 * As vec.h, per engine translation unit (DBN_VBYTES).
 */
#ifndef DARKNET_BN_VEC_MATH_H
#define DARKNET_BN_VEC_MATH_H

#include "darknet_bn.h"
#include "vec.h"

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

/* Calls CALL(x, act) with the activation as a constant (x passed through), so each activation gets its
 * own loop. */
#define DBN_WITH_ACT(act, CALL, x)                                                           \
    switch (act) {                                                                           \
    case DBN_ACT_LEAKY: CALL(x, DBN_ACT_LEAKY); break;                                       \
    case DBN_ACT_RELU: CALL(x, DBN_ACT_RELU); break;                                         \
    case DBN_ACT_RELU6: CALL(x, DBN_ACT_RELU6); break;                                       \
    case DBN_ACT_LOGISTIC: CALL(x, DBN_ACT_LOGISTIC); break;                                 \
    case DBN_ACT_TANH: CALL(x, DBN_ACT_TANH); break;                                         \
    case DBN_ACT_ELU: CALL(x, DBN_ACT_ELU); break;                                           \
    case DBN_ACT_SELU: CALL(x, DBN_ACT_SELU); break;                                         \
    case DBN_ACT_GELU: CALL(x, DBN_ACT_GELU); break;                                         \
    case DBN_ACT_SWISH: CALL(x, DBN_ACT_SWISH); break;                                       \
    case DBN_ACT_MISH: CALL(x, DBN_ACT_MISH); break;                                         \
    case DBN_ACT_HARD_MISH: CALL(x, DBN_ACT_HARD_MISH); break;                               \
    default: CALL(x, DBN_ACT_LINEAR); break;                                                 \
    }

#endif
