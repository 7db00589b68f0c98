/* Dropout for CPU: the random mask, the scaled output and the masked gradient, one pass each way.
 *
 * Compiled at first use by amr/model/native.py, once with -DREAL=float and once with
 * -DREAL=double. The random numbers are counter-based. A call's 64-bit seed gives a 32-bit key and
 * an odd 32-bit multiplier; counter c (one per pair of elements) is hashed with Wellons'
 * lowbias32 mixer, all in wrapping 32-bit arithmetic,
 *
 *   h = c * mult + key,  h ^= h >> 16,  h *= 0x7feb352d,  h ^= h >> 15,  h *= 0x846ca68b,
 *   h ^= h >> 16,
 *
 * and the low and high 15-bit fields of h are the draws of elements 2c and 2c + 1:
 *
 *   u_2c = h & 0x7fff,   u_2c+1 = (h >> 16) & 0x7fff.
 *
 * Each element's draw depends only on the seed and its index: the mask is the same for any
 * number of threads, and amr/model/dropout.py computes the same integers with 32-bit torch ops
 * where no compiler is available. Element i is dropped when u_i < threshold.
 *
 *   forward:   drop_i = u_i < threshold     out_i = drop_i ? 0 : x_i * scale
 *   backward:  grad_x_i = drop_i ? 0 : grad_i * scale
 *
 * That is x.mul(scale).masked_fill_(drop, 0): one rounding of x_i * scale, +0 where dropped.
 * The mask is one byte per element, 0 or 1, which is a torch.bool tensor.
 */
#include <stdint.h>
#include <omp.h>

#ifndef REAL
#define REAL float
#endif

static inline uint32_t pair_hash(uint32_t key, uint32_t mult, int64_t c) {
    uint32_t h = (uint32_t)c * mult + key;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    return h;
}

/* One element: its pair's hash is recomputed per element (the low field for even i, the high
 * field for odd i), so that every lane of the loop below is independent and the compiler
 * vectorises it: twice the hashing, in vector lanes instead of one pair at a time. */
static inline uint32_t draw_of(uint32_t key, uint32_t mult, int64_t i) {
    const uint32_t h = pair_hash(key, mult, i >> 1);
    return (h >> ((uint32_t)(i & 1) << 4)) & 0x7fffu;
}

/* Elements per OpenMP task: a block's x, out and drop stay in cache, and short tensors (below
 * two blocks) run on one thread, with no wake-up of the others. */
#define BLOCK 65536

void dropout_forward(const REAL *restrict x, uint32_t key, uint32_t mult, uint32_t threshold, REAL scale,
                     REAL *restrict out, uint8_t *restrict drop, int64_t n, int threads) {
    const int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static) if (blocks > 1)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t end = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
        for (int64_t i = b * BLOCK; i < end; ++i) {
            const int dropped = draw_of(key, mult, i) < threshold;
            drop[i] = (uint8_t)dropped;
            out[i] = dropped ? (REAL)0 : x[i] * scale;
        }
    }
}

void dropout_backward(const REAL *restrict grad, const uint8_t *restrict drop, REAL scale,
                      REAL *restrict grad_x, int64_t n, int threads) {
    const int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static) if (blocks > 1)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t end = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
        for (int64_t i = b * BLOCK; i < end; ++i)
            grad_x[i] = drop[i] ? (REAL)0 : grad[i] * scale;
    }
}
