/* el_pad_s8.c - PAD, int8, reference version (edge_lls/kernels/int8/literal.py pad_s8). */
#include <string.h>

#include "el_kernels.h"

static int params_ok(const el_pad_params *p)
{
    const int32_t in[4] = {p->input_dims.n, p->input_dims.h, p->input_dims.w, p->input_dims.c};
    const int32_t out[4] = {p->output_dims.n, p->output_dims.h, p->output_dims.w, p->output_dims.c};
    int i;
    if (!el_kernel_dims_ok(&p->input_dims) || !el_kernel_dims_ok(&p->output_dims)) {
        return 0;
    }
    for (i = 0; i < 4; ++i) {
        if (p->before[i] < 0 || p->after[i] < 0 || (int64_t)in[i] + p->before[i] + p->after[i] != out[i]) {
            return 0;
        }
    }
    return p->pad_value >= INT8_MIN && p->pad_value <= INT8_MAX;
}

el_kernel_status el_pad_s8(const el_pad_params *p, const int8_t *input, int8_t *output)
{
    const el_dims *in = &p->input_dims, *out = &p->output_dims;
    int32_t n, y, x;
    if (!params_ok(p)) {
        return EL_KERNEL_ERR_PARAMS;
    }
    /* The whole output takes the pad value (real 0), then each input row of C values is copied
     * to its place: output (n + before[0], y + before[1], x + before[2], before[3]). Every
     * index is below the output's volume, an int32 (params_ok). */
    memset(output, (int8_t)p->pad_value, (size_t)out->n * (size_t)out->h * (size_t)out->w * (size_t)out->c);
    for (n = 0; n < in->n; ++n) {
        for (y = 0; y < in->h; ++y) {
            for (x = 0; x < in->w; ++x) {
                const int8_t *from = input + ((n * in->h + y) * in->w + x) * in->c;
                int8_t *to = output + (((n + p->before[0]) * out->h + y + p->before[1]) * out->w + x + p->before[2]) *
                                          out->c + p->before[3];
                memcpy(to, from, (size_t)in->c);
            }
        }
    }
    return EL_KERNEL_OK;
}
