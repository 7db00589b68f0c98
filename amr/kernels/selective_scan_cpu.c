/* Selective scan (Mamba's S6 recurrence) for CPU: forward and backward, with the mixer's
 * elementwise work inside (Delta = softplus(dt + bias), the D skip, the silu(z) gate).
 *
 * Compiled at first use by amr/model/native_scan.py, once with -DREAL=float and once with
 * -DREAL=double. Everything is time-major and contiguous:
 *   u, dt, z, y        (L, B, D)      A (D, N)      Bm, Cm (L, B, N)      Dskip, bias (D)
 *   entry              (K, B, N, D)   state before each chunk of `chunk` steps, K = ceil(L/chunk)
 *
 *   Delta_t = softplus(dt_t + bias)             h_t = exp(Delta_t A) h_{t-1} + Delta_t u_t B_t
 *   y_t = (C_t . h_t + Dskip u_t) silu(z_t)
 *
 * Threads take whole batch elements and walk time in the outer loop; within a step the channels
 * go in blocks of W, the innermost (vectorised) loop, and the batch element's (D, N) state stays
 * in cache. The forward saves the state entering each chunk; the backward walks the chunks in
 * reverse, recomputes one chunk's states from its entry state and back-propagates through it.
 * As a thread owns its batch elements, the dB and dC sums over channels need no locking; the
 * per-channel gradients of A, Dskip and bias are summed per thread and added up at the end.
 * The file ends with the mixer's causal depthwise convolution + silu, forward and backward.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>
#include <omp.h>

#ifndef REAL
#define REAL float
#endif
#define W 16
#define SOFTPLUS_THRESHOLD 20 /* as torch and mamba-ssm: softplus(x) = x above it */

/* exp, inlined in float: a libm call inside the lane loops costs more than their arithmetic.
 * Range reduction x = k ln2 + r, |r| <= ln2/2, and a degree-7 polynomial for exp(r): relative
 * error below 2e-7 (about 1 ulp). The argument is clamped to [-87, 88]: no denormals, no inf.
 * In double: libm's exp. */
static inline REAL exp_(REAL x) {
#ifdef REAL_IS_FLOAT
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float k = __builtin_roundf(x * 1.44269504088896341f);
    const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187045e-06f;
    const float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666667163372f + r * (0.0416664853692055f
                    + r * (0.0083333607763052f + r * (0.00139304355252535f + r * 0.000198527617612f))))));
    union { float f; int32_t i; } v = {p};
    v.i += (int32_t)k << 23;
    return v.f;
#else
    return exp(x);
#endif
}

static inline REAL softplus_(REAL x) {
    const REAL soft = log1p(exp_(x < SOFTPLUS_THRESHOLD ? x : SOFTPLUS_THRESHOLD));
    return x <= SOFTPLUS_THRESHOLD ? soft : x;
}
static inline REAL sigmoid_(REAL x) { return 1 / (1 + exp_(-x)); }

/* Block loads and stores. Lanes past D (the last block of a D that is not a multiple of W) read
 * as zero: there Delta = softplus(0) but u = 0 and A = 0, so the state stays zero and the lane's
 * results are never stored. Every arithmetic loop then runs over all W lanes, unconditionally,
 * which is what lets the compiler vectorise them (and their exp/log1p calls). */
static inline void load_block(const REAL *restrict src, int64_t off, int64_t width, REAL *restrict dst) {
    if (width == W) {
        for (int j = 0; j < W; j++) dst[j] = src[off + j];
    } else {
        for (int j = 0; j < W; j++) dst[j] = j < width ? src[off + j] : 0;
    }
}

static inline void store_block(const REAL *restrict src, int64_t width, REAL *restrict dst, int64_t off) {
    if (width == W) {
        for (int j = 0; j < W; j++) dst[off + j] = src[j];
    } else {
        for (int j = 0; j < width; j++) dst[off + j] = src[j];
    }
}

/* raw = dt + bias, delta = softplus(raw) (or raw), u: one step of a block */
static inline void load_step(const REAL *restrict dt, const REAL *restrict u, const REAL *restrict bias_block,
                             int64_t off, int64_t width, int softplus,
                             REAL *restrict raw, REAL *restrict delta, REAL *restrict uv) {
    load_block(dt, off, width, raw);
    load_block(u, off, width, uv);
    for (int j = 0; j < W; j++) raw[j] += bias_block[j];
    if (softplus) {
        for (int j = 0; j < W; j++) delta[j] = softplus_(raw[j]);
    } else {
        for (int j = 0; j < W; j++) delta[j] = raw[j];
    }
}

/* Per-block copies of the per-channel parameters, for all blocks: A transposed to
 * (blocks, N, W), Dskip and bias as (blocks, W); zero past D. */
static void load_params(const REAL *restrict A, const REAL *restrict Dskip, const REAL *restrict bias,
                        int64_t D, int64_t N, REAL *restrict At, REAL *restrict Dv, REAL *restrict bv) {
    const int64_t blocks = (D + W - 1) / W;
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t d0 = blk * W, width = D - d0 < W ? D - d0 : W;
        for (int64_t n = 0; n < N; n++)
            for (int j = 0; j < W; j++) At[(blk * N + n) * W + j] = j < width ? A[(d0 + j) * N + n] : 0;
        load_block(Dskip, d0, width, Dv + blk * W);
        load_block(bias, d0, width, bv + blk * W);
    }
}

/* Threads take whole batch elements and walk time in the outer loop, all channel blocks of one
 * step in the inner loop: each step reads contiguous rows, and the (D, N) state of one batch
 * element stays in cache. */
void scan_forward(const REAL *restrict u, const REAL *restrict dt, const REAL *restrict z,
                  const REAL *restrict A, const REAL *restrict Bm, const REAL *restrict Cm,
                  const REAL *restrict Dskip, const REAL *restrict bias, REAL *restrict y,
                  REAL *restrict entry, int64_t L, int64_t batch, int64_t D, int64_t N, int64_t chunk,
                  int softplus, int gated, int threads) {
    const int64_t blocks = (D + W - 1) / W;
    REAL *At = malloc(sizeof(REAL) * blocks * N * W);
    REAL *Dv = malloc(sizeof(REAL) * blocks * W), *bv = malloc(sizeof(REAL) * blocks * W);
    load_params(A, Dskip, bias, D, N, At, Dv, bv);
    if (threads > batch) threads = (int)batch;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        REAL *h = malloc(sizeof(REAL) * blocks * N * W);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            for (int64_t i = 0; i < blocks * N * W; i++) h[i] = 0;
            for (int64_t t = 0, in_chunk = 0; t < L; t++, in_chunk++) {
                if (in_chunk == chunk) in_chunk = 0;
                if (in_chunk == 0) {
                    REAL *e = entry + ((t / chunk) * batch + b) * N * D;
                    for (int64_t blk = 0; blk < blocks; blk++) {
                        const int64_t d0 = blk * W, width = D - d0 < W ? D - d0 : W;
                        for (int64_t n = 0; n < N; n++) store_block(h + (blk * N + n) * W, width, e, n * D + d0);
                    }
                }
                const int64_t boff = (t * batch + b) * N;
                for (int64_t blk = 0; blk < blocks; blk++) {
                    const int64_t d0 = blk * W, width = D - d0 < W ? D - d0 : W;
                    const int64_t off = (t * batch + b) * D + d0;
                    REAL raw[W], delta[W], uv[W], du[W], acc[W], out[W];
                    load_step(dt, u, bv + blk * W, off, width, softplus, raw, delta, uv);
                    for (int j = 0; j < W; j++) {
                        du[j] = delta[j] * uv[j];
                        acc[j] = 0;
                    }
                    REAL *hb = h + blk * N * W;
                    const REAL *ab = At + blk * N * W;
                    for (int64_t n = 0; n < N; n++) {
                        const REAL bn = Bm[boff + n], cn = Cm[boff + n];
                        REAL *hn = hb + n * W;
                        const REAL *an = ab + n * W;
                        for (int j = 0; j < W; j++) {
                            hn[j] = exp_(delta[j] * an[j]) * hn[j] + du[j] * bn;
                            acc[j] += hn[j] * cn;
                        }
                    }
                    for (int j = 0; j < W; j++) out[j] = acc[j] + Dv[blk * W + j] * uv[j];
                    if (gated) {
                        REAL zv[W];
                        load_block(z, off, width, zv);
                        for (int j = 0; j < W; j++) out[j] *= zv[j] * sigmoid_(zv[j]);
                    }
                    store_block(out, width, y, off);
                }
            }
        }
        free(h);
    }
    free(At);
    free(Dv);
    free(bv);
}

/* grad_B, grad_C must be zero on entry; grad_A (D, N), grad_D, grad_bias (D) are overwritten.
 * grad_z is not touched unless gated. */
void scan_backward(const REAL *restrict u, const REAL *restrict dt, const REAL *restrict z,
                   const REAL *restrict A, const REAL *restrict Bm, const REAL *restrict Cm,
                   const REAL *restrict Dskip, const REAL *restrict bias, const REAL *restrict entry,
                   const REAL *restrict grad_y, REAL *restrict grad_u, REAL *restrict grad_dt,
                   REAL *restrict grad_z, REAL *restrict grad_A, REAL *restrict grad_Bm,
                   REAL *restrict grad_Cm, REAL *restrict grad_D, REAL *restrict grad_bias,
                   int64_t L, int64_t batch, int64_t D, int64_t N, int64_t chunk, int softplus, int gated,
                   int threads) {
    const int64_t blocks = (D + W - 1) / W, K = (L + chunk - 1) / chunk;
    const int64_t state_size = blocks * N * W;
    REAL *At = malloc(sizeof(REAL) * state_size);
    REAL *Dv = malloc(sizeof(REAL) * blocks * W), *bv = malloc(sizeof(REAL) * blocks * W);
    load_params(A, Dskip, bias, D, N, At, Dv, bv);
    if (threads > batch) threads = (int)batch;
    if (threads < 1) threads = 1;
    /* per-thread partial sums, in block layout: dA (blocks, N, W), dDskip and dbias (blocks, W) */
    const int64_t part_size = state_size + 2 * blocks * W;
    REAL *partial = calloc((size_t)threads * part_size, sizeof(REAL));
#pragma omp parallel num_threads(threads)
    {
        REAL *gA = partial + (int64_t)omp_get_thread_num() * part_size;
        REAL *gD = gA + state_size, *gbias = gD + blocks * W;
        REAL *h0 = malloc(sizeof(REAL) * state_size), *gh = malloc(sizeof(REAL) * state_size);
        REAL *states = malloc(sizeof(REAL) * chunk * state_size), *decays = malloc(sizeof(REAL) * chunk * state_size);
        REAL *deltas = malloc(sizeof(REAL) * chunk * blocks * W), *pres = malloc(sizeof(REAL) * chunk * blocks * W);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            for (int64_t i = 0; i < state_size; i++) gh[i] = 0;
            for (int64_t k = K - 1; k >= 0; k--) {
                const int64_t t0 = k * chunk, steps = L - t0 < chunk ? L - t0 : chunk;
                const REAL *e = entry + (k * batch + b) * N * D;
                for (int64_t blk = 0; blk < blocks; blk++) {
                    const int64_t d0 = blk * W, width = D - d0 < W ? D - d0 : W;
                    for (int64_t n = 0; n < N; n++) load_block(e, n * D + d0, width, h0 + (blk * N + n) * W);
                }
                /* recompute this chunk's states */
                for (int64_t i = 0; i < steps; i++) {
                    const int64_t t = t0 + i, boff = (t * batch + b) * N;
                    for (int64_t blk = 0; blk < blocks; blk++) {
                        const int64_t d0 = blk * W, width = D - d0 < W ? D - d0 : W;
                        const int64_t off = (t * batch + b) * D + d0;
                        REAL raw[W], uv[W];
                        REAL *delta = deltas + (i * blocks + blk) * W;
                        load_step(dt, u, bv + blk * W, off, width, softplus, raw, delta, uv);
                        REAL *hs = states + (i * blocks + blk) * N * W, *ds = decays + (i * blocks + blk) * N * W;
                        const REAL *prev = i > 0 ? states + ((i - 1) * blocks + blk) * N * W : h0 + blk * N * W;
                        const REAL *ab = At + blk * N * W;
                        REAL *pre = pres + (i * blocks + blk) * W; /* C h + D u: the gate's input */
                        for (int j = 0; j < W; j++) pre[j] = Dv[blk * W + j] * uv[j];
                        for (int64_t n = 0; n < N; n++) {
                            const REAL bn = Bm[boff + n], cn = Cm[boff + n];
                            for (int j = 0; j < W; j++) {
                                const int64_t x = n * W + j;
                                ds[x] = exp_(delta[j] * ab[x]);
                                hs[x] = ds[x] * prev[x] + delta[j] * uv[j] * bn;
                                pre[j] += hs[x] * cn;
                            }
                        }
                    }
                }
                /* back-propagate through it, last step first */
                for (int64_t i = steps - 1; i >= 0; i--) {
                    const int64_t t = t0 + i, boff = (t * batch + b) * N;
                    for (int64_t blk = 0; blk < blocks; blk++) {
                        const int64_t d0 = blk * W, width = D - d0 < W ? D - d0 : W;
                        const int64_t off = (t * batch + b) * D + d0;
                        REAL raw[W], uv[W], unused[W], gy[W], gdu[W], gdelta[W], out[W];
                        const REAL *delta = deltas + (i * blocks + blk) * W, *Db = Dv + blk * W;
                        const REAL *hs = states + (i * blocks + blk) * N * W, *ds = decays + (i * blocks + blk) * N * W;
                        const REAL *prev = i > 0 ? states + ((i - 1) * blocks + blk) * N * W : h0 + blk * N * W;
                        const REAL *ab = At + blk * N * W;
                        REAL *g = gh + blk * N * W, *ga = gA + blk * N * W;
                        load_step(dt, u, bv + blk * W, off, width, 0, raw, unused, uv);
                        load_block(grad_y, off, width, gy);
                        if (gated) {
                            REAL zv[W];
                            const REAL *pre = pres + (i * blocks + blk) * W;
                            load_block(z, off, width, zv);
                            for (int j = 0; j < W; j++) {
                                const REAL sg = sigmoid_(zv[j]);
                                out[j] = gy[j] * pre[j] * sg * (1 + zv[j] * (1 - sg)); /* d silu */
                                gy[j] *= zv[j] * sg;
                            }
                            store_block(out, width, grad_z, off);
                        }
                        for (int j = 0; j < W; j++) {
                            gD[blk * W + j] += gy[j] * uv[j];
                            gdu[j] = 0;
                            gdelta[j] = 0;
                        }
                        for (int64_t n = 0; n < N; n++) {
                            const REAL bn = Bm[boff + n], cn = Cm[boff + n];
                            REAL sum_c = 0, sum_b = 0;
                            for (int j = 0; j < W; j++) {
                                const int64_t x = n * W + j;
                                sum_c += hs[x] * gy[j];              /* dC_t[n] = sum_d h gy   */
                                g[x] += gy[j] * cn;                  /* dh_t in total         */
                                gdu[j] += g[x] * bn;                 /* d(Delta u)_t          */
                                sum_b += g[x] * delta[j] * uv[j];    /* dB_t[n] = sum_d dh Du */
                                const REAL glog = g[x] * ds[x] * prev[x]; /* d(Delta A)     */
                                gdelta[j] += glog * ab[x];
                                ga[x] += glog * delta[j];
                                g[x] *= ds[x];                       /* carried to h_{t-1}    */
                            }
                            grad_Cm[boff + n] += sum_c;
                            grad_Bm[boff + n] += sum_b;
                        }
                        for (int j = 0; j < W; j++) {
                            gdelta[j] += gdu[j] * uv[j];
                            /* softplus' = sigmoid, 1 above the threshold */
                            if (softplus) gdelta[j] *= raw[j] <= SOFTPLUS_THRESHOLD ? sigmoid_(raw[j]) : 1;
                            gbias[blk * W + j] += gdelta[j];
                            out[j] = gdu[j] * delta[j] + gy[j] * Db[j];
                        }
                        store_block(gdelta, width, grad_dt, off);
                        store_block(out, width, grad_u, off);
                    }
                }
            }
        }
        free(h0); free(gh); free(states); free(decays); free(deltas); free(pres);
    }
    for (int64_t i = 0; i < D * N; i++) grad_A[i] = 0;
    for (int64_t i = 0; i < D; i++) grad_D[i] = grad_bias[i] = 0;
    for (int th = 0; th < threads; th++) {
        const REAL *p = partial + th * part_size;
        for (int64_t blk = 0; blk < blocks; blk++) {
            const int64_t d0 = blk * W, width = D - d0 < W ? D - d0 : W;
            for (int j = 0; j < width; j++) {
                for (int64_t n = 0; n < N; n++) grad_A[(d0 + j) * N + n] += p[(blk * N + n) * W + j];
                grad_D[d0 + j] += p[state_size + blk * W + j];
                grad_bias[d0 + j] += p[state_size + blocks * W + blk * W + j];
            }
        }
    }
    free(partial);
    free(At);
    free(Dv);
    free(bv);
}

/* The mixer's causal depthwise convolution and its silu, time-major: u, out (L, B, E),
 * weight (E, K), bias (E):  pre_t = bias + sum_k weight[:, k] u_{t-(K-1)+k} (zero before t = 0),
 * out_t = silu(pre_t). Threads take whole batch elements; the E channels are the vector lane. */
/* weight (E, K) -> a new (K, E) array: each tap contiguous over the channels */
static REAL *taps_by_channel(const REAL *restrict weight, int64_t E, int64_t K) {
    REAL *wt = malloc(sizeof(REAL) * K * E);
    for (int64_t e = 0; e < E; e++)
        for (int64_t k = 0; k < K; k++) wt[k * E + e] = weight[e * K + k];
    return wt;
}

/* pre (E) = bias + sum_k wt[k] u_{t-(K-1)+k} for batch element b: the conv before its silu */
static inline void conv_pre(const REAL *restrict u, const REAL *restrict wt, const REAL *restrict bias,
                            int64_t t, int64_t b, int64_t batch, int64_t E, int64_t K, REAL *restrict pre) {
    for (int64_t e = 0; e < E; e++) pre[e] = bias[e];
    for (int64_t k = 0; k < K; k++) {
        const int64_t src = t - (K - 1) + k;
        if (src < 0) continue;
        const REAL *x = u + (src * batch + b) * E, *w = wt + k * E;
        for (int64_t e = 0; e < E; e++) pre[e] += w[e] * x[e];
    }
}

void conv_silu_forward(const REAL *restrict u, const REAL *restrict weight, const REAL *restrict bias,
                       REAL *restrict out, int64_t L, int64_t batch, int64_t E, int64_t K, int threads) {
    REAL *wt = taps_by_channel(weight, E, K);
    if (threads > batch) threads = (int)batch;
    if (threads < 1) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t t = 0; t < L; t++) {
            REAL *o = out + (t * batch + b) * E;
            conv_pre(u, wt, bias, t, b, batch, E, K, o);
            for (int64_t e = 0; e < E; e++) o[e] *= sigmoid_(o[e]);
        }
    }
    free(wt);
}

/* grad_u (L, B, E) is overwritten; grad_weight (E, K) and grad_bias (E) too. The pre-activation
 * is recomputed; the gradient of pre at steps t … t+K-1 (all that grad_u_t needs) is kept in a
 * ring of K rows while time runs backwards. */
void conv_silu_backward(const REAL *restrict u, const REAL *restrict weight, const REAL *restrict bias,
                        const REAL *restrict grad_out, REAL *restrict grad_u, REAL *restrict grad_weight,
                        REAL *restrict grad_bias, int64_t L, int64_t batch, int64_t E, int64_t K, int threads) {
    REAL *wt = taps_by_channel(weight, E, K);
    if (threads > batch) threads = (int)batch;
    if (threads < 1) threads = 1;
    const int64_t part_size = (K + 1) * E; /* per thread: grad of the (K, E) taps, then bias */
    REAL *partial = calloc((size_t)threads * part_size, sizeof(REAL));
#pragma omp parallel num_threads(threads)
    {
        REAL *gw = partial + (int64_t)omp_get_thread_num() * part_size, *gb = gw + K * E;
        REAL *ring = malloc(sizeof(REAL) * K * E), *pre = malloc(sizeof(REAL) * E);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            for (int64_t t = L - 1; t >= 0; t--) {
                conv_pre(u, wt, bias, t, b, batch, E, K, pre);
                REAL *g = ring + (t % K) * E; /* d pre_t */
                const REAL *go = grad_out + (t * batch + b) * E;
                for (int64_t e = 0; e < E; e++) {
                    const REAL sg = sigmoid_(pre[e]);
                    g[e] = go[e] * sg * (1 + pre[e] * (1 - sg));
                    gb[e] += g[e];
                }
                for (int64_t k = 0; k < K; k++) { /* tap k of pre_t reads u_{t-(K-1)+k} */
                    const int64_t src = t - (K - 1) + k;
                    if (src < 0) continue;
                    const REAL *x = u + (src * batch + b) * E;
                    REAL *gwk = gw + k * E;
                    for (int64_t e = 0; e < E; e++) gwk[e] += g[e] * x[e];
                }
                /* u_t feeds pre_{t+(K-1)-k} through tap k */
                REAL *gu = grad_u + (t * batch + b) * E;
                for (int64_t e = 0; e < E; e++) gu[e] = 0;
                for (int64_t k = 0; k < K; k++) {
                    const int64_t dst = t + (K - 1) - k;
                    if (dst >= L) continue;
                    const REAL *gd = ring + (dst % K) * E, *w = wt + k * E;
                    for (int64_t e = 0; e < E; e++) gu[e] += w[e] * gd[e];
                }
            }
        }
        free(ring);
        free(pre);
    }
    for (int64_t e = 0; e < E; e++) {
        grad_bias[e] = 0;
        for (int64_t k = 0; k < K; k++) grad_weight[e * K + k] = 0;
    }
    for (int th = 0; th < threads; th++) {
        const REAL *p = partial + th * part_size;
        for (int64_t e = 0; e < E; e++) {
            for (int64_t k = 0; k < K; k++) grad_weight[e * K + k] += p[k * E + e];
            grad_bias[e] += p[K * E + e];
        }
    }
    free(partial);
    free(wt);
}
