/* el_lls_update_dwsep.c - the local update of a depthwise-separable block, in place. */
#include "el_lls.h"

/* The gradient reaching output code z of an op whose output range is [act_min, act_max]:
 * straight through inside, stopped at a clamped code. */
static float pass(int8_t z, int32_t act_min, int32_t act_max, float g)
{
    return z > act_min && z < act_max ? g : 0.0f;
}

void el_lls_update_dwsep(const el_lls_dwsep *b)
{
    const el_conv_params *dw = b->dw, *pw = b->pw;
    const uint32_t oh = (uint32_t)pw->output_dims.h, ow = (uint32_t)pw->output_dims.w;
    const uint32_t hw = oh * ow, cin = (uint32_t)pw->input_dims.c, cout = (uint32_t)pw->output_dims.c;
    const uint32_t p = b->pool;
    const int32_t y_zero = -pw->input_offset, x_zero = -dw->input_offset;
    const int32_t pw_limit = el_bias_limit((int32_t)cin);
    const uint32_t kh = (uint32_t)dw->filter_dims.h, kw = (uint32_t)dw->filter_dims.w;
    const uint32_t ih = (uint32_t)dw->input_dims.h, iw = (uint32_t)dw->input_dims.w;
    const int32_t dw_limit = el_bias_limit((int32_t)(kh * kw));
    const uint32_t taps = kh * kw;
    /* RMSprop's moments: one per weight, or factored (el_factored_*); the biases' after them */
    float *const pw_bias_moment = b->pw_moment == NULL ? NULL
                                  : b->pw_moment + (b->factored ? cout + 2u * cin : cout * cin);
    float *const dw_bias_moment = b->dw_moment == NULL ? NULL
                                  : b->dw_moment + (b->factored ? taps + 2u * cin : taps * cin);
    const int pw_factored = b->factored && b->pw_moment != NULL, dw_factored = b->factored && b->dw_moment != NULL;
    const float pw_total = pw_factored ? el_factored_total(b->pw_moment, cout) : 0.0f;
    float dw_total, row_sum;
    uint32_t o, c, t, r, q, i, j;

    for (t = 0; t < hw * cin; ++t) {
        b->mid_grad[t] = 0.0f;
    }
    /* pointwise: row o at a time, its gradient never stored whole */
    for (o = 0; o < cout; ++o) {
        const float s_w = el_weight_scale(b->pw_multiplier[o], b->pw_shift[o], b->y_scale, b->z_scale);
        float bias_grad = 0.0f;
        int live = 0;
        for (r = 0; r < oh; ++r) {
            for (q = 0; q < ow; ++q) {
                /* dL/d(real Z[r][q][o]): every pooling cell that holds the pixel, i then j */
                float g = 0.0f;
                for (i = 0; i < p; ++i) {
                    uint32_t r0 = (i * oh) / p, r1 = ((i + 1u) * oh + p - 1u) / p;
                    if (r < r0 || r >= r1) {
                        continue;
                    }
                    for (j = 0; j < p; ++j) {
                        uint32_t c0 = (j * ow) / p, c1 = ((j + 1u) * ow + p - 1u) / p;
                        if (q < c0 || q >= c1) {
                            continue;
                        }
                        g = g + b->grad_v[(i * p + j) * cout + o] / (float)((r1 - r0) * (c1 - c0));
                    }
                }
                g = pass(b->z[(r * ow + q) * cout + o], pw->act_min, pw->act_max, g);
                b->out_grad[r * ow + q] = g;
                bias_grad = bias_grad + g;
                live |= g != 0.0f;
            }
        }
        if (!live) {
            /* every step of the row would be zero: nothing moves, nothing is drawn; factored
             * moments decay as a zero gradient's would (per-weight ones stay: lazy) */
            if (pw_factored) {
                el_factored_row_end(b->pw_moment, o, 0.0f);
                pw_bias_moment[o] = 0.999f * pw_bias_moment[o];
            }
            continue;
        }
        bias_grad = el_rms_normalise(bias_grad, pw_bias_moment != NULL ? &pw_bias_moment[o] : NULL, b->correction);
        b->pw_bias[o] = el_bias_step(b->pw_bias[o], -b->lr * bias_grad / (b->y_scale * s_w), pw_limit);
        row_sum = 0.0f;
        for (c = 0; c < cin; ++c) {
            int8_t *code = &b->pw_weights[o * cin + c];
            const float w_real = s_w * (float)*code;
            float g = 0.0f;
            for (t = 0; t < hw; ++t) {
                g = g + b->out_grad[t] * (b->y_scale * (float)(b->y[t * cin + c] - y_zero));
                b->mid_grad[t * cin + c] = b->mid_grad[t * cin + c] + b->out_grad[t] * w_real;
            }
            if (pw_factored) {
                row_sum = row_sum + g * g;
                g = el_factored_normalise(g, b->pw_moment, cout, cin, o, c, pw_total, b->correction);
            } else {
                g = el_rms_normalise(g, b->pw_moment != NULL ? &b->pw_moment[o * cin + c] : NULL, b->correction);
            }
            if (b->pw_fraction != NULL) {
                *code = el_fraction_round_step(*code, &b->pw_fraction[o * cin + c], -b->lr * g / s_w, b->rng);
            } else {
                *code = el_stochastic_round_step(*code, -b->lr * g / s_w, b->rng);
            }
        }
        if (pw_factored) {
            el_factored_row_end(b->pw_moment, o, row_sum);
        }
    }
    if (pw_factored) {
        el_factored_end(b->pw_moment, cout, cin);
    }
    dw_total = dw_factored ? el_factored_total(b->dw_moment, taps) : 0.0f;
    /* the gradient at the depthwise pre-activation */
    for (t = 0; t < hw * cin; ++t) {
        b->mid_grad[t] = pass(b->y[t], dw->act_min, dw->act_max, b->mid_grad[t]);
    }
    /* depthwise weights, (kh, kw, c): each tap's gradient over the output pixels */
    for (i = 0; i < kh; ++i) {
        for (j = 0; j < kw; ++j) {
            row_sum = 0.0f;
            for (c = 0; c < cin; ++c) {
                const float s_w = el_weight_scale(b->dw_multiplier[c], b->dw_shift[c], b->x_scale, b->y_scale);
                int8_t *code = &b->dw_weights[(i * kw + j) * cin + c];
                float g = 0.0f;
                for (r = 0; r < oh; ++r) {
                    int32_t y_in = (int32_t)r * dw->stride_h - dw->pad_h + (int32_t)i * dw->dilation_h;
                    if (y_in < 0 || y_in >= (int32_t)ih) {
                        continue; /* a padding tap: the real input there is 0 */
                    }
                    for (q = 0; q < ow; ++q) {
                        int32_t x_in = (int32_t)q * dw->stride_w - dw->pad_w + (int32_t)j * dw->dilation_w;
                        if (x_in < 0 || x_in >= (int32_t)iw) {
                            continue;
                        }
                        g = g + b->mid_grad[(r * ow + q) * cin + c] *
                                    (b->x_scale * (float)(b->x[((uint32_t)y_in * iw + (uint32_t)x_in) * cin + c] - x_zero));
                    }
                }
                if (dw_factored) {
                    row_sum = row_sum + g * g;
                    g = el_factored_normalise(g, b->dw_moment, taps, cin, i * kw + j, c, dw_total, b->correction);
                } else {
                    g = el_rms_normalise(g, b->dw_moment != NULL ? &b->dw_moment[(i * kw + j) * cin + c] : NULL,
                                         b->correction);
                }
                if (b->dw_fraction != NULL) {
                    *code = el_fraction_round_step(*code, &b->dw_fraction[(i * kw + j) * cin + c], -b->lr * g / s_w,
                                                   b->rng);
                } else {
                    *code = el_stochastic_round_step(*code, -b->lr * g / s_w, b->rng);
                }
            }
            if (dw_factored) {
                el_factored_row_end(b->dw_moment, i * kw + j, row_sum);
            }
        }
    }
    if (dw_factored) {
        el_factored_end(b->dw_moment, taps, cin);
    }
    for (c = 0; c < cin; ++c) {
        const float s_w = el_weight_scale(b->dw_multiplier[c], b->dw_shift[c], b->x_scale, b->y_scale);
        float g = 0.0f;
        for (t = 0; t < hw; ++t) {
            g = g + b->mid_grad[t * cin + c];
        }
        g = el_rms_normalise(g, dw_bias_moment != NULL ? &dw_bias_moment[c] : NULL, b->correction);
        b->dw_bias[c] = el_bias_step(b->dw_bias[c], -b->lr * g / (b->x_scale * s_w), dw_limit);
    }
}
