/* Dropout's elementwise passes for CPU, forward and backward, one pass each.
 *
 * Compiled at first use by amr/model/native.py, once with -DREAL=float and once with
 * -DREAL=double. The random numbers are drawn by the caller (torch's generator, see
 * amr/model/dropout.py) as 16-bit lanes; element i is dropped when the low 15 bits of its lane
 * are below `threshold`. The forward writes the output and the drop mask (one byte per element,
 * 0 or 1, which is a torch.bool tensor); the backward reads the mask back.
 *
 *   forward:   drop_i = (lane_i & 0x7fff) < threshold     out_i = drop_i ? 0 : x_i * scale
 *   backward:  grad_x_i = drop_i ? 0 : grad_i * scale
 *
 * That is exactly x.mul(scale).masked_fill_(drop, 0): one rounding of x_i * scale, +0 where
 * dropped. Threads take contiguous stretches of the flat arrays.
 */
#include <stdint.h>
#include <omp.h>

#ifndef REAL
#define REAL float
#endif

void dropout_forward(const REAL *restrict x, const int16_t *restrict lanes, int32_t threshold, REAL scale,
                     REAL *restrict out, uint8_t *restrict drop, int64_t n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        const int dropped = (lanes[i] & 0x7fff) < threshold;
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
