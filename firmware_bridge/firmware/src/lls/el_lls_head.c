/* el_lls_head.c - the LLS head of one block output: pool, normalise, project, loss, dL/dv. */
#include "el_lls.h"

#include <math.h>

/* PyTorch's adaptive pooling window of cell i of p over n: [start, end). */
static void window(uint32_t i, uint32_t p, uint32_t n, uint32_t *start, uint32_t *end)
{
    *start = (i * n) / p;
    *end = ((i + 1u) * n + p - 1u) / p;
}

float el_lls_head(const int8_t *output, const el_dims *dims, float scale, int32_t zero_point, uint32_t pool,
                  const float *basis, uint32_t classes, float temperature, uint32_t label, float *v,
                  float *grad_v, float *logits)
{
    const uint32_t h = (uint32_t)dims->h, w = (uint32_t)dims->w, c = (uint32_t)dims->c;
    const uint32_t d = c * pool * pool;
    float norm2 = 0.0f, norm, denom, dot = 0.0f, loss;
    float dy[64]; /* K <= EL_LLS_MAX_CLASSES, checked by el_train_plan */
    uint32_t i, j, o, t, k;
    for (i = 0; i < pool; ++i) {
        uint32_t r0, r1, c0, c1;
        window(i, pool, h, &r0, &r1);
        for (j = 0; j < pool; ++j) {
            window(j, pool, w, &c0, &c1);
            for (o = 0; o < c; ++o) {
                int32_t sum = 0;
                uint32_t r, q;
                for (r = r0; r < r1; ++r) {
                    for (q = c0; q < c1; ++q) {
                        sum += output[(r * w + q) * c + o] - zero_point;
                    }
                }
                v[(i * pool + j) * c + o] = ((float)sum / (float)((r1 - r0) * (c1 - c0))) * scale;
            }
        }
    }
    for (t = 0; t < d; ++t) {
        norm2 = norm2 + v[t] * v[t];
    }
    norm = sqrtf(norm2);
    denom = norm > 1e-12f ? norm : 1e-12f;
    /* z = v / denom lives in grad_v until the gradient overwrites it */
    for (t = 0; t < d; ++t) {
        grad_v[t] = v[t] / denom;
    }
    for (k = 0; k < classes; ++k) {
        float y = 0.0f;
        for (t = 0; t < d; ++t) {
            y = y + grad_v[t] * basis[k * d + t];
        }
        logits[k] = y;
    }
    loss = el_softmax_cross_entropy(logits, classes, temperature, label, dy);
    /* g_z[t] = sum_k dy[k] B[k][t]; with z[t] = grad_v[t]: dot = z . g_z, then g_v */
    for (t = 0; t < d; ++t) {
        float g = 0.0f;
        for (k = 0; k < classes; ++k) {
            g = g + dy[k] * basis[k * d + t];
        }
        dot = dot + grad_v[t] * g;
        v[t] = g; /* v is not needed again: it holds g_z now */
    }
    for (t = 0; t < d; ++t) {
        grad_v[t] = norm > 1e-12f ? (v[t] - grad_v[t] * dot) / norm : v[t] / 1e-12f;
    }
    return loss;
}
