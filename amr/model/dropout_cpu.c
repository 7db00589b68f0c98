/* Dropout for CPU: the random mask, the scaled output and the masked gradient, one pass each way.
 *
 * Compiled at first use by amr/model/native.py, once with -DREAL=float and once with
 * -DREAL=double. The random numbers are counter-based: element i's 15-bit uniform integer is the
 * top 15 bits of splitmix64's output for counter i + 1 from `seed`,
 *
 *   z = seed + (i + 1) * 0x9E3779B97F4A7C15,  z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9,
 *   z = (z ^ z >> 27) * 0x94D049BB133111EB,   z ^= z >> 31,  u_i = z >> 49,
 *
 * so each element's draw depends only on the seed and its index: the mask is the same for any
 * number of threads, and amr/model/dropout.py computes the same integers with torch ops where
 * no compiler is available. Element i is dropped when u_i < threshold.
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

static inline uint32_t uniform15(uint64_t seed, int64_t i) {
    uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 49);
}

void dropout_forward(const REAL *restrict x, uint64_t seed, uint32_t threshold, REAL scale,
                     REAL *restrict out, uint8_t *restrict drop, int64_t n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        const int dropped = uniform15(seed, i) < threshold;
        drop[i] = (uint8_t)dropped;
        out[i] = dropped ? (REAL)0 : x[i] * scale;
    }
}

void dropout_backward(const REAL *restrict grad, const uint8_t *restrict drop, REAL scale,
                      REAL *restrict grad_x, int64_t n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i)
        grad_x[i] = drop[i] ? (REAL)0 : grad[i] * scale;
}
