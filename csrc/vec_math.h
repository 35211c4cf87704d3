/* vec_math.h -- vector math of the engine (engine.inc): exp, expm1, logistic, tanh, erfc, Darknet's
 * element-wise activations (AlexeyAB's src/activations.h definitions) and PyTorch's hardswish and GELU,
 * and their derivatives (vgrad_y from the output, vgrad_x at the input; docs/backward.md), on vectors. exp is a
 * degree-6 polynomial after a Cody-Waite reduction (about 1 ulp), its range handled by clamps and an
 * exactly rounded scaling instead of compares and selects, so no libm call sits in a loop; tanh,
 * elu and selu go through expm1 (no cancellation near 0), mish and gelu through exact identities that
 * avoid cancellation: tanh(softplus(x)) = n/(n + 2) with n = e^x (e^x + 2), and
 * 1 + tanh(u) = 2 * logistic(2u). Swish, the logistic and gelu's forward take the logistic from
 * vlogistic_c: one formula for both signs with no select, a degree-5 polynomial (docs/performance.md,
 * section 12).
 * NaN stays NaN wherever Darknet's expression keeps it.
 * As vec.h, per engine translation unit (DBN_VBYTES).
 */
#ifndef DARKNET_BN_VEC_MATH_H
#define DARKNET_BN_VEC_MATH_H

#include "darknet_bn.h"
#include "vec.h"

/* e^r for |r| <= ln2/2 (and a little beyond): a degree-6 polynomial, minimax for the relative error
 * (2e-9), in Horner form: 0.9 ulp evaluated in float32 (six FMAs; Cephes' expf polynomial took eight). */
static inline vf vexp_poly(vf r)
{
    vf p = vsplat(1.3843623456e-03f);
    p = p * r + 8.3741797134e-03f;
    p = p * r + 4.1668005288e-02f;
    p = p * r + 1.6666431725e-01f;
    p = p * r + 4.9999994040e-01f;
    p = p * r + 1.0f;
    return p * r + 1.0f;
}

/* The two steps of both exps below, on x already clamped: n = round(x log2 e) as 1.5 2^23 + n (t: the
 * integer in the low bits of a float), r = x - n ln 2 in two parts (Cody-Waite), y = e^r. */
#define DBN_EXP_REDUCE(xc)                                                                   \
    const vf t = (xc) * 1.44269504088896341f + 12582912.0f, nf = t - 12582912.0f;           \
    const vf y = vexp_poly(((xc) - nf * 0.693359375f) - nf * -2.12194440e-4f)

/* e^x. x is clamped to [-104, 89] (its NaN kept, vec.h), where e^-104 rounds to 0 and e^89 overflows:
 * the scaling y 2^n then gives 0 and inf beyond, exactly rounded (subnormal results included), with no
 * compare or select; NaN passes through the arithmetic. */
static inline vf vexp(vf x)
{
    const vf xc = vmin_hi(vsplat(89.0f), vmax_lo(vsplat(-104.0f), x));
    DBN_EXP_REDUCE(xc);
#if DBN_X86 && DBN_VBYTES == 64
    return (vf)_mm512_scalef_ps((__m512)y, (__m512)nf);         /* y 2^n, one rounding */
#else
    const vi n = (vi)t - 0x4B400000, h = n >> 1;                 /* 2^n = 2^h * 2^(n-h): both normal */
    return y * (vf)((h + 127) << 23) * (vf)((n - h + 127) << 23);   /* the first product exact */
#endif
}

/* e^x for x <= 40 (or NaN): vexp's bits where both apply, one clamp and (AVX2, SSE2) a cheaper scaling:
 * 2^(n + 64) is normal for n <= 63, so y 2^n = (y 2^(n+64)) 2^-64 with the first product exact and one
 * rounding. The logistic's e^-|x| and mish's e^min(x, 20). */
static inline vf vexp_lo(vf x)
{
    const vf xc = vmax_lo(vsplat(-104.0f), x);
    DBN_EXP_REDUCE(xc);
#if DBN_X86 && DBN_VBYTES == 64
    return (vf)_mm512_scalef_ps((__m512)y, (__m512)nf);
#else
    return y * (vf)(((vi)t - 0x4B400000 + (127 + 64)) << 23) * 0x1p-64f;
#endif
}
#undef DBN_EXP_REDUCE

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

/* 1/v for v in [1, 2^100] (normal, positive). AVX-512: the hardware's 14-bit reciprocal estimate refined
 * by one Newton step to about 2^-28 -- within an ulp of the division, at a fraction of its cost (a 512-bit
 * division is the slowest instruction of the logistic). Elsewhere the division (AVX2: two Newton steps
 * on rcpps measured no faster). */
static inline vf vrcp(vf v)
{
#if DBN_X86 && DBN_VBYTES == 64
    vf r = (vf)_mm512_rcp14_ps((__m512)v);
    r = r + r * (1.0f - v * r);
#else
    const vf r = 1.0f / v;
#endif
    return r;
}

/* Darknet's leaky, (x > 0) ? x : a*x, and its derivative (y > 0) ? 1 : a. AVX-512: a compare into a mask
 * register, then one masked multiply (one blend); vsel's bitwise form made GCC emit the compare, the
 * multiply and two masked xors (docs/performance.md, section 6). The same operations on the same values:
 * the same bits (x NaN: not > 0, so a*x, NaN, as the select gives). */
static inline vf vleaky(vf x, vf alpha)
{
#if DBN_X86 && DBN_VBYTES == 64
    const __mmask16 le = _mm512_cmp_ps_mask((__m512)x, _mm512_setzero_ps(), _CMP_NGT_UQ);   /* !(x > 0) */
    return (vf)_mm512_mask_mul_ps((__m512)x, le, (__m512)alpha, (__m512)x);
#else
    return vsel(x > 0.0f, x, alpha * x);
#endif
}
static inline vf vleaky_grad(vf y, vf alpha)
{
#if DBN_X86 && DBN_VBYTES == 64
    const __mmask16 gt = _mm512_cmp_ps_mask((__m512)y, _mm512_setzero_ps(), _CMP_GT_OQ);
    return (vf)_mm512_mask_blend_ps(gt, (__m512)alpha, _mm512_set1_ps(1.0f));
#else
    return vsel(y > 0.0f, vsplat(1.0f), alpha);
#endif
}

static inline vf vtanh(vf x)
{
    const vf a = vabs(x);
    const vf em = vexpm1(2.0f * vsel(a > 9.0f, vsplat(9.0f), a));  /* tanh(9) rounds to 1 */
    const vf t = em / (em + 2.0f);
    return (vf)((vi)t | ((vi)x & (int32_t)0x80000000));          /* the sign of x */
}

/* logistic(x) = 1/(1 + e^-x) without a select, for swish (docs/performance.md, section 12), on xc = x
 * clamped to [-104, 40] (vclamp_lg; NaN kept) or, for swish's forward on AVX-512, to [-104, 104] by one
 * vrangeps (vclamp_sw; NaN becomes 104 there, and x * 1 keeps it). With E = e^-xc = y 2^n
 * (n = round(-xc log2 e), y = e^r on |r| <= ln2/2), logistic = 2^-24 / (2^-24 + y 2^(n-24)): the 2^-24
 * keeps the denominator finite for every clamped x (e^104 2^-24 = 2^126) and its reciprocal normal down
 * to x = -103.97, so one formula serves both signs with no cancellation (x < 0: the denominator is
 * y 2^(n-24) plus a small addend), and the result's one rounding to a subnormal is the last multiply
 * (AVX2, SSE2: the division). y: a degree-5 minimax polynomial (relative error 1.0e-7 with its float32
 * coefficients; vexp's degree 6 has 2e-9: swish's float32 tolerances allow it), its coefficients
 * carrying the 2^-24 on AVX-512 (exact; vscalefps then scales by 2^n), the exponent bits elsewhere
 * (2^(n-24) normal for n in [-58, 150]). logistic(xc) is logistic(x) in float32 (1 from 17 on, 0 below
 * -103.97); NaN stays NaN. */
static inline vf vclamp_lg(vf x)
{
    return vmax_lo(vsplat(-104.0f), vmin_hi(vsplat(40.0f), x));
}
static inline vf vclamp_sw(vf x)
{
#if DBN_X86 && DBN_VBYTES == 64
    return (vf)_mm512_range_ps((__m512)x, _mm512_set1_ps(104.0f), 0x2);   /* sign(x) min(|x|, 104) */
#else
    return vclamp_lg(x);
#endif
}
static inline vf vlogistic_c(vf xc)
{
    const vf t = xc * -1.44269504088896341f + 12582912.0f, nf = t - 12582912.0f;
    const vf r = (-xc - nf * 0.693359375f) - nf * -2.12194440e-4f;   /* -xc - n ln 2 */
#if DBN_X86 && DBN_VBYTES == 64
#define DBN_LS 0x1p-24f   /* the polynomial carries the 2^-24; vscalefps then scales by 2^n */
#else
#define DBN_LS 1.0f       /* the exponent bits carry it */
#endif
    vf p = vsplat(8.2861222327e-03f * DBN_LS);
    p = p * r + 4.1898954660e-02f * DBN_LS;
    p = p * r + 1.6667656600e-01f * DBN_LS;
    p = p * r + 4.9999144673e-01f * DBN_LS;
    p = p * r + 9.9999976158e-01f * DBN_LS;
    p = p * r + DBN_LS;                                                 /* e^r (times DBN_LS) */
#undef DBN_LS
#if DBN_X86 && DBN_VBYTES == 64
    const vf d = (vf)_mm512_scalef_ps((__m512)p, (__m512)nf) + 0x1p-24f;
    const vf r0 = (vf)_mm512_rcp14_ps((__m512)d), a = r0 * 0x1p-24f;
    const vf s = a + a * (1.0f - d * r0);                               /* one Newton step, scaled */
#else
    const vf d = p * (vf)(((vi)t + (127 - 24 - 0x4B400000)) << 23) + 0x1p-24f;   /* 2^(n-24): normal */
    const vf s = 0x1p-24f / d;
#endif
    return s;
}

/* logistic(x) and 1 - logistic(x) = logistic(-x), both without cancellation. */
static inline void vlogistic2(vf x, vf *s, vf *sc)
{
    const vf e = vexp_lo(vnabs(x)), l = vrcp(1.0f + e), el = e * l;
    const vi pos = x >= 0.0f;
    *s = vsel(pos, l, el);
    *sc = vsel(pos, el, l);
}

/* e^(-x^2/2) without the rounding of x*x: x = h + (x - h) with h of 12 significant bits, so h*h/2 is
 * exact (fdlibm's split in its erfc tail). */
static inline vf vgauss(vf x)
{
    const vf a = vabs(x), h = (vf)((vi)a & (int32_t)0xffffe000), t = (a - h) * (a + h);
    const vf lo = vsel(t == t, t, vsplat(0.0f));   /* x infinite: (inf - inf) inf; the high part says it all */
    return vexp(-(h * h) * 0.5f) * vexp(-lo * 0.5f);
}

/* 2 Phi(x) = erfc(-x / sqrt 2), accurate in both tails: the Sun fdlibm single-precision erf/erfc scheme
 * (s_erff.c, "Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved. Developed at SunPro, a
 * Sun Microsystems, Inc. business. Permission to use, copy, modify, and distribute this software is
 * freely granted, provided that this notice is preserved."): its rational approximations on |u| < .84375,
 * < 1.25, < 1/.35 and beyond, every branch evaluated and the right one selected per lane; the tail's
 * Gaussian factor e^(-u^2) = e^(-x^2/2) taken from x itself (exact square, as fdlibm does). NaN stays NaN. */
static inline vf vtwophi(vf x)
{
    const vf u = x * -0.70710678118654752f, a = vabs(u);
    /* |u| < 0.84375 */
    const vf z = u * u;
    const vf r1 = 1.2837916613e-01f + z * (-3.2504209876e-01f + z * (-2.8481749818e-02f + z * (-5.7702702470e-03f + z * -2.3763017452e-05f)));
    const vf s1 = 1.0f + z * (3.9791721106e-01f + z * (6.5022252500e-02f + z * (5.0813062117e-03f + z * (1.3249473704e-04f + z * -3.9602282413e-06f))));
    const vf y1 = r1 / s1;
    const vf e1 = vsel(u < 0.25f, 1.0f - (u + u * y1), 0.5f - (u * y1 + (u - 0.5f)));
    /* 0.84375 <= |u| < 1.25 */
    const vf t = a - 1.0f;
    const vf p2 = -2.3621185683e-03f + t * (4.1485610604e-01f + t * (-3.7220788002e-01f + t * (3.1834661961e-01f + t * (-1.1089469492e-01f + t * (3.5478305072e-02f + t * -2.1663755178e-03f)))));
    const vf q2 = 1.0f + t * (1.0642088205e-01f + t * (5.4039794207e-01f + t * (7.1828655899e-02f + t * (1.2617121637e-01f + t * (1.3637083583e-02f + t * 1.1984500103e-02f)))));
    const vf pq = p2 / q2;
    const vf e2 = vsel(u >= 0.0f, (1.0f - 8.4506291151e-01f) - pq, 1.0f + (8.4506291151e-01f + pq));
    /* |u| >= 1.25: erfc(|u|) = e^(-u^2 - .5625 + R/S) / |u| */
    const vf w = 1.0f / (a * a);
    const vf ra = -9.8649440333e-03f + w * (-6.9385856390e-01f + w * (-1.0558626175e01f + w * (-6.2375331879e01f + w * (-1.6239666748e02f + w * (-1.8460508728e02f + w * (-8.1287437439e01f + w * -9.8143291473e00f))))));
    const vf sa = 1.0f + w * (1.9651271820e01f + w * (1.3765776062e02f + w * (4.3456588745e02f + w * (6.4538726807e02f + w * (4.2900814819e02f + w * (1.0863500214e02f + w * (6.5702495575e00f + w * -6.0424413532e-02f)))))));
    const vf rb = -9.8649431020e-03f + w * (-7.9928326607e-01f + w * (-1.7757955551e01f + w * (-1.6063638306e02f + w * (-6.3756646729e02f + w * (-1.0250950928e03f + w * -4.8351919556e02f)))));
    const vf sb = 1.0f + w * (3.0338060379e01f + w * (3.2579251099e02f + w * (1.5367296143e03f + w * (3.1998581543e03f + w * (2.5530502930e03f + w * (4.7452853394e02f + w * -2.2440952301e01f))))));
    const vf rs = vsel(a < 2.857142857f, ra / sa, rb / sb);
    const vf xa = vabs(x), h = (vf)((vi)xa & (int32_t)0xffffe000), t2 = (xa - h) * (xa + h);
    const vf lo = vsel(t2 == t2, t2, vsplat(0.0f));   /* x infinite: (inf - inf) inf; the high part says it all */
    const vf g = vexp(-(h * h) * 0.5f - 0.5625f) * vexp(-lo * 0.5f + rs) / a;
    const vf e3 = vsel(u >= 0.0f, g, 2.0f - g);
    return vsel(a < 0.84375f, e1, vsel(a < 1.25f, e2, e3));
}

static inline vf vact(vf x, int act, vf alpha)
{
    switch (act) {
    case DBN_ACT_LEAKY: return vleaky(x, alpha);   /* Darknet's (x > 0) ? x : a*x */
    case DBN_ACT_RELU: return x * vsel(x > 0.0f, vsplat(1.0f), vsplat(0.0f));
    case DBN_ACT_RELU6: {
        const vf t = vsel(x > 0.0f, x, vsplat(0.0f));
        return vsel(t < 6.0f, t, vsplat(6.0f));
    }
    case DBN_ACT_LOGISTIC: return vlogistic_c(vclamp_lg(x));
    case DBN_ACT_TANH: return vtanh(x);
    case DBN_ACT_ELU: return vsel(x >= 0.0f, x, vexpm1(x));
    case DBN_ACT_SELU: return vsel(x >= 0.0f, 1.0507f * x, (1.0507f * 1.6732f) * vexpm1(x));
    case DBN_ACT_GELU: return x * vlogistic_c(vclamp_sw(2.0f * (0.797885f * x + 0.035677f * (x * x * x))));
    case DBN_ACT_SWISH: return x * vlogistic_c(vclamp_sw(x));
    case DBN_ACT_MISH: {   /* above 20: x (Darknet: tanh(x) = 1) with no select: at e^20, n/(n + 2) rounds to 1 */
        const vf e = vexp_lo(vmin_hi(vsplat(20.0f), x));
        const vf n = e * (e + 2.0f);
        return x * (n * vrcp(n + 2.0f));
    }
    case DBN_ACT_HARD_MISH:
        return vsel(x > 0.0f, x, vsel(x > -2.0f, x * x * 0.5f + x, vsplat(0.0f)));
    case DBN_ACT_HARDSWISH: {   /* PyTorch's x * min(max(x + 3, 0), 6) / 6 (NaN kept) */
        vf t = x + 3.0f;
        t = vsel(t < 0.0f, vsplat(0.0f), t);
        t = vsel(6.0f < t, vsplat(6.0f), t);
        return x * t / 6.0f;
    }
    case DBN_ACT_GELU_ERF: return x * (0.5f * vtwophi(x));
    default: return x;
    }
}

/* The derivative from the activation's output y: Darknet's *_gradient of AlexeyAB's src/activations.h
 * (leaky, relu and relu6 read the same from y as from the input: y > 0 iff x > 0, y < 6 iff x < 6). */
static inline vf vgrad_y(vf y, int act, vf alpha)
{
    switch (act) {
    case DBN_ACT_LEAKY: return vleaky_grad(y, alpha);
    case DBN_ACT_RELU: return vsel(y > 0.0f, vsplat(1.0f), vsplat(0.0f));
    case DBN_ACT_RELU6: return vsel((y > 0.0f) & (y < 6.0f), vsplat(1.0f), vsplat(0.0f));
    case DBN_ACT_LOGISTIC: return (1.0f - y) * y;
    case DBN_ACT_TANH: return 1.0f - y * y;
    case DBN_ACT_ELU: return vsel(y >= 0.0f, vsplat(1.0f), y + 1.0f);   /* (y >= 0) + (y < 0)*(y + 1) */
    case DBN_ACT_SELU: return vsel(y >= 0.0f, vsplat(1.0507f), y + 1.0507f * 1.6732f);
    default: return vsplat(1.0f);
    }
}

/* The derivative at the activation's input x (docs/backward.md): through the output where Darknet takes
 * it from the output (logistic, tanh, elu, selu: the output recomputed with the forward's bits); the
 * others directly. */
static inline vf vgrad_x(vf x, int act, vf alpha)
{
    switch (act) {
    case DBN_ACT_LEAKY: case DBN_ACT_RELU: case DBN_ACT_RELU6: return vgrad_y(x, act, alpha);
    case DBN_ACT_LOGISTIC: case DBN_ACT_TANH: case DBN_ACT_ELU: case DBN_ACT_SELU:
        return vgrad_y(vact(x, act, alpha), act, alpha);
    case DBN_ACT_GELU: {   /* y = x s, s = logistic(2u), u = .797885x + .035677x^3: s + 2x s(1 - s) u' */
        vf s, sc;
        vlogistic2(2.0f * (0.797885f * x + 0.035677f * (x * x * x)), &s, &sc);
        return s + (2.0f * x) * (s * sc) * (0.797885f + (3.0f * 0.035677f) * (x * x));
    }
    case DBN_ACT_SWISH: {  /* s + x s (1 - s), AlexeyAB's swish + sigmoid * (1 - swish) rearranged, with x
                              clamped to [-104, 40] (vclamp_lg): from 17 on s is 1, s (1 - s) 0 and the
                              derivative 1 (+inf included: the limit; Darknet's expression gives NaN there,
                              and 0 or 2 beyond 2^24); below -103.97 s is 0 and so is the derivative (-inf
                              included: the limit, Darknet's NaN). NaN stays NaN (the clamp keeps it). */
        const vf xc = vclamp_lg(x), s = vlogistic_c(xc);
        return s + xc * (s - s * s);
    }
    case DBN_ACT_MISH: {   /* tanh(sp) + x sech^2(sp) logistic(x), with n = e^x (e^x + 2): tanh(sp) = n/(n+2),
                              sech^2(sp) logistic(x) = 4 e (1 + e) / (n + 2)^2; above 20: 1 (Darknet: tanh(x) = 1)
                              with no select: x clamped at 20, where n q rounds to 1 and the second term is
                              3e-16 (NaN kept by the clamp) */
        const vf xc = vmin_hi(vsplat(20.0f), x), e = vexp_lo(xc);
        const vf n = e * (e + 2.0f), q = vrcp(n + 2.0f);
        return n * q + xc * ((4.0f * e) * (1.0f + e)) * (q * q);
    }
    case DBN_ACT_HARD_MISH:
        return vsel(x > 0.0f, vsplat(1.0f), vsel(x > -2.0f, x + 1.0f, vsplat(0.0f)));
    case DBN_ACT_HARDSWISH:   /* PyTorch's hardswish_backward */
        return vsel(x < -3.0f, vsplat(0.0f), vsel(x <= 3.0f, x / 3.0f + 0.5f, vsplat(1.0f)));
    case DBN_ACT_GELU_ERF:    /* Phi(x) + x phi(x) */
        return 0.5f * vtwophi(x) + x * vgauss(x) * 0.39894228040143267794f;
    default: return vsplat(1.0f);
    }
}

/* b * vgrad_x(x): the backward's g. Leaky on AVX-512: b, multiplied by alpha where !(x > 0), in one masked
 * multiply after the compare (b * 1 is b: the same values; only a signaling NaN in b would stay
 * signaling, and g is only ever summed and multiplied, which quiets it as the product would). */
static inline vf vmul_grad_x(vf b, vf x, int act, vf alpha)
{
#if DBN_X86 && DBN_VBYTES == 64
    if (act == DBN_ACT_LEAKY) {
        const __mmask16 le = _mm512_cmp_ps_mask((__m512)x, _mm512_setzero_ps(), _CMP_NGT_UQ);
        return (vf)_mm512_mask_mul_ps((__m512)b, le, (__m512)b, (__m512)alpha);
    }
#endif
    return b * vgrad_x(x, act, alpha);
}

/* What gradient_array multiplies by, from what it is given: the output for the kinds Darknet
 * differentiates from the output (linear .. selu), the input for the others. */
static inline vf vgrad_arr(vf v, int act, vf alpha)
{
    return act <= DBN_ACT_SELU ? vgrad_y(v, act, alpha) : vgrad_x(v, act, alpha);
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
    case DBN_ACT_HARDSWISH: CALL(x, DBN_ACT_HARDSWISH); break;                               \
    case DBN_ACT_GELU_ERF: CALL(x, DBN_ACT_GELU_ERF); break;                                 \
    default: CALL(x, DBN_ACT_LINEAR); break;                                                 \
    }

#endif
