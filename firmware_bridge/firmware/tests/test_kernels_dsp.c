/*
 * test_kernels_dsp.c - the DSP kernels (el_kernels_dsp.h) against the plain ones, on the chip.
 *
 * Seeded pseudo-random layers (xorshift32): odd shapes, channel counts that are not multiples
 * of 4, strides 1-3, dilation 1-2, pads, 1x1 / 2x2 / 3x3 / 1x3 filters, the 1x1 stride-1
 * fast path with odd pixel counts, depthwise channel multipliers 1-3, batches of 1-3, input
 * offsets and data at the -128 / 127 / 128 extremes, biases at the accumulator bound, clipped
 * activation ranges, left and right shifts, and a few broken records (both must refuse them
 * and leave the output untouched). Plain and DSP write into separate buffers painted with the
 * same byte; every byte, the guard bytes past the output included, must agree. The first
 * mismatch is printed on UART0 ("MISMATCH <kernel> case <i> byte <j>: plain <a> dsp <b>") and
 * the test exits 1; all agreeing, it exits 0.
 *
 * It then times VWW-sized layers with SysTick (25 MHz board clock; under QEMU -icount shift=0
 * one tick is 40 instructions), plain and DSP on the same data, checked byte for byte too:
 *     "bench <layer> plain <ticks> dsp <ticks>"
 * tests/test_firmware_dsp.py runs it on both boards and reads the ratios.
 */
#include <string.h>

#include "el_kernels.h"
#include "el_kernels_dsp.h"
#include "el_test.h"

#if !defined(EL_KERNELS_DSP)
#error "test_kernels_dsp needs a core with the DSP extension (cortex-m4, cortex-m7)"
#endif

#define PAINT 0x5A
#define GUARD 16
#define MAX_IN (24 * 24 * 64)
#define MAX_OUT (24 * 24 * 64)
#define MAX_FILTER (32 * 3 * 3 * 32)
#define MAX_CH 256

static int8_t in_buf[MAX_IN];
static int8_t filter_buf[MAX_FILTER];
static int8_t out_plain[MAX_OUT + GUARD];
static int8_t out_dsp[MAX_OUT + GUARD];
static int32_t bias_buf[MAX_CH], mult_buf[MAX_CH], shift_buf[MAX_CH];

static uint32_t rng_state = 0x2545F491u;

static uint32_t rnd(void)
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng_state = x;
    return x;
}

/* uniform in [lo, hi] (a small range) */
static int32_t rnd_in(int32_t lo, int32_t hi)
{
    return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1));
}

static int8_t rnd_s8(int extreme)
{
    if (extreme == 1) {
        return (rnd() & 1u) ? INT8_MIN : INT8_MAX;
    }
    if (extreme == 2) {
        return INT8_MIN;
    }
    return (int8_t)(rnd_in(-128, 127));
}

static void fill(int8_t *dst, int32_t count, int extreme)
{
    int32_t i;
    for (i = 0; i < count; ++i) {
        dst[i] = rnd_s8(extreme);
    }
}

static void put_signed(int32_t v)
{
    if (v < 0) {
        el_uart_puts("-");
        el_uart_put_dec((uint32_t)(-(int64_t)v));
    } else {
        el_uart_put_dec((uint32_t)v);
    }
}

static void compare(const char *kernel, int32_t case_index, int32_t bytes, el_kernel_status plain,
                    el_kernel_status dsp)
{
    int32_t i;
    if (plain != dsp) {
        el_uart_puts("MISMATCH ");
        el_uart_puts(kernel);
        el_uart_puts(" case ");
        el_uart_put_dec((uint32_t)case_index);
        el_uart_puts(": status plain ");
        el_uart_put_dec((uint32_t)plain);
        el_uart_puts(" dsp ");
        el_uart_put_dec((uint32_t)dsp);
        el_uart_puts("\n");
        el_board_exit(1);
    }
    for (i = 0; i < bytes + GUARD; ++i) {
        if (out_plain[i] != out_dsp[i]) {
            el_uart_puts("MISMATCH ");
            el_uart_puts(kernel);
            el_uart_puts(" case ");
            el_uart_put_dec((uint32_t)case_index);
            el_uart_puts(" byte ");
            el_uart_put_dec((uint32_t)i);
            el_uart_puts(" of ");
            el_uart_put_dec((uint32_t)bytes);
            el_uart_puts(": plain ");
            put_signed(out_plain[i]);
            el_uart_puts(" dsp ");
            put_signed(out_dsp[i]);
            el_uart_puts("\n");
            el_board_exit(1);
        }
    }
}

/* Per-channel quantization: multipliers in [2^30, 2^31), shifts mostly right (outputs spread
 * over the int8 range for sums of this size), sometimes left; a bias, none, or one at the
 * accumulator bound for `taps` products. */
static const int32_t *quantization(int32_t channels, int32_t taps, int with_bias)
{
    int32_t c;
    const int32_t shift_base = -rnd_in(4, 14);
    for (c = 0; c < channels; ++c) {
        mult_buf[c] = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu));
        shift_buf[c] = (rnd() % 8u == 0u) ? rnd_in(0, 2) : shift_base + rnd_in(-2, 2);
        bias_buf[c] = rnd_in(-40000, 40000);
    }
    if (with_bias == 2) { /* the largest bias the accumulator check admits, both signs */
        const int64_t bound = (int64_t)INT32_MAX - (int64_t)taps * EL_KERNEL_MAX_PRODUCT;
        if (bound > 0) {
            for (c = 0; c < channels; ++c) {
                bias_buf[c] = (c & 1) ? (int32_t)bound : -(int32_t)bound;
                shift_buf[c] = -31;
            }
        }
    }
    return with_bias ? bias_buf : NULL;
}

static void activation(int32_t *act_min, int32_t *act_max)
{
    if (rnd() % 4u == 0u) {
        *act_min = rnd_in(-128, 0);
        *act_max = rnd_in(*act_min, 127);
    } else {
        *act_min = -128;
        *act_max = 127;
    }
}

static int32_t input_offset(void)
{
    switch (rnd() % 6u) {
    case 0:
        return 128;
    case 1:
        return -127;
    default:
        return rnd_in(-127, 128);
    }
}

static int32_t out_size(int32_t in, int32_t kernel, int32_t stride, int32_t dilation, int32_t pad)
{
    const int32_t span = dilation * (kernel - 1) + 1;
    const int32_t padded = in + 2 * pad;
    return padded < span ? 0 : (padded - span) / stride + 1;
}

static void paint(void)
{
    memset(out_plain, PAINT, sizeof out_plain);
    memset(out_dsp, PAINT, sizeof out_dsp);
}

/* ------------------------------------------------------------------ random layers */
static int32_t conv_case(int32_t index, int depthwise)
{
    el_conv_params p;
    const int extreme = rnd() % 8u == 0u ? (int)(1u + rnd() % 2u) : 0;
    const int one_by_one = !depthwise && rnd() % 3u == 0u;
    int32_t kh, kw, taps, out_c, volume, filter_volume, broken;
    const int32_t *bias;
    memset(&p, 0, sizeof p);
    p.input_dims.n = rnd() % 4u == 0u ? rnd_in(2, 3) : 1;
    p.input_dims.h = rnd_in(1, 9);
    p.input_dims.w = rnd_in(1, 9);
    p.input_dims.c = rnd() % 3u == 0u ? rnd_in(1, 40) : rnd_in(1, 12);
    if (one_by_one) {
        kh = kw = 1;
        p.stride_h = p.stride_w = 1;
        p.dilation_h = p.dilation_w = rnd_in(1, 2);
        p.pad_h = p.pad_w = 0;
    } else {
        static const int32_t shapes[5][2] = {{3, 3}, {3, 3}, {1, 1}, {2, 2}, {1, 3}};
        const uint32_t s = rnd() % 5u;
        kh = shapes[s][0];
        kw = shapes[s][1];
        if (rnd() & 1u) {
            const int32_t t = kh;
            kh = kw;
            kw = t;
        }
        p.stride_h = rnd_in(1, 3);
        p.stride_w = rnd_in(1, 3);
        p.dilation_h = rnd() % 4u == 0u ? 2 : 1;
        p.dilation_w = rnd() % 4u == 0u ? 2 : 1;
        p.pad_h = rnd_in(0, 2);
        p.pad_w = rnd_in(0, 2);
    }
    p.ch_mult = depthwise ? (rnd() % 3u == 0u ? rnd_in(2, 3) : 1) : 1;
    out_c = depthwise ? p.input_dims.c * p.ch_mult : rnd_in(1, 13);
    p.output_dims.n = p.input_dims.n;
    p.output_dims.h = out_size(p.input_dims.h, kh, p.stride_h, p.dilation_h, p.pad_h);
    p.output_dims.w = out_size(p.input_dims.w, kw, p.stride_w, p.dilation_w, p.pad_w);
    p.output_dims.c = out_c;
    if (p.output_dims.h < 1 || p.output_dims.w < 1) {
        return 0; /* the window does not fit: draw again */
    }
    p.filter_dims.n = depthwise ? 1 : out_c;
    p.filter_dims.h = kh;
    p.filter_dims.w = kw;
    p.filter_dims.c = depthwise ? out_c : p.input_dims.c;
    volume = p.output_dims.n * p.output_dims.h * p.output_dims.w * out_c;
    filter_volume = p.filter_dims.n * kh * kw * p.filter_dims.c;
    if (p.input_dims.n * p.input_dims.h * p.input_dims.w * p.input_dims.c > MAX_IN || volume > MAX_OUT ||
        filter_volume > MAX_FILTER || out_c > MAX_CH) {
        return 0;
    }
    p.input_offset = input_offset();
    p.output_offset = rnd_in(-128, 127);
    activation(&p.act_min, &p.act_max);
    taps = depthwise ? kh * kw : kh * kw * p.input_dims.c;
    bias = quantization(out_c, taps, (int)(rnd() % 6u == 0u ? 0u : rnd() % 6u == 0u ? 2u : 1u));
    fill(in_buf, p.input_dims.n * p.input_dims.h * p.input_dims.w * p.input_dims.c, extreme);
    fill(filter_buf, filter_volume, extreme);
    broken = rnd() % 25u == 0u;
    if (broken) { /* a record the checks must refuse: a zero stride, or a shift out of range */
        if (rnd() & 1u) {
            p.stride_w = 0;
        } else {
            shift_buf[0] = 32;
        }
    }
    paint();
    if (depthwise) {
        const el_kernel_status a =
            el_depthwise_conv2d_s8(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_plain);
        const el_kernel_status b =
            el_depthwise_conv2d_s8_dsp(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_dsp);
        EL_CHECK(broken ? a == EL_KERNEL_ERR_PARAMS : a == EL_KERNEL_OK);
        compare("depthwise_conv2d", index, volume, a, b);
    } else {
        const el_kernel_status a = el_conv2d_s8(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_plain);
        const el_kernel_status b =
            el_conv2d_s8_dsp(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_dsp);
        EL_CHECK(broken ? a == EL_KERNEL_ERR_PARAMS : a == EL_KERNEL_OK);
        compare(one_by_one ? "conv2d_1x1" : "conv2d", index, volume, a, b);
    }
    return 1;
}

/* ------------------------------------------------------------------ fast-path layers */
/* Layers drawn to meet the conditions of the DSP kernels' fastest paths (el_conv2d_s8_dsp.c:
 * quads, Cout a multiple of 4, a 1x1 input of whole words or a window of at most 32 taps;
 * el_depthwise_conv2d_s8_dsp.c: rings, a 3x3 window): every multiplier >= 0 (a few 0) with a
 * right shift, down to -31, biases from small to the accumulator bound and around 2^30 (as
 * trained models have: a channel of huge bias and shift), the output offset mostly -128 (a
 * ReLU's zero point, which drops the sign correction) and sometimes not, the clamp mostly
 * all of int8; and some that miss a condition by one (a shift of 0, an odd Cout, a narrow
 * clamp, a wide row), so that the fallbacks run beside them. */
static const int32_t *fast_quantization(int32_t channels, int32_t taps)
{
    int32_t c;
    const int32_t kind = (int32_t)(rnd() % 4u);
    for (c = 0; c < channels; ++c) {
        const int64_t bound = (int64_t)INT32_MAX - (int64_t)taps * EL_KERNEL_MAX_PRODUCT;
        mult_buf[c] = rnd() % 16u == 0u ? 0 : (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu));
        shift_buf[c] = kind == 0 ? -rnd_in(1, 31) : -rnd_in(4, 14);
        switch (rnd() % 5u) {
        case 0: /* a trained model's dead-looking channel: a bias near 2^30, a large shift */
            bias_buf[c] = (int32_t)(0x40000000 + rnd_in(-256, 256));
            shift_buf[c] = -rnd_in(24, 31);
            break;
        case 1: /* at the accumulator bound */
            bias_buf[c] = bound > 0 ? ((rnd() & 1u) ? (int32_t)bound : -(int32_t)bound) : 0;
            break;
        default:
            bias_buf[c] = rnd_in(-40000, 40000);
            break;
        }
    }
    if (kind == 3 && rnd() % 4u == 0u) { /* one channel off the short requantization */
        shift_buf[rnd() % (uint32_t)channels] = rnd_in(0, 2);
    }
    return rnd() % 8u == 0u ? NULL : bias_buf;
}

static int32_t fast_case(int32_t index, int depthwise)
{
    el_conv_params p;
    const int extreme = rnd() % 8u == 0u ? (int)(1u + rnd() % 2u) : 0;
    int32_t k, taps, out_c, volume, filter_volume;
    const int32_t *bias;
    memset(&p, 0, sizeof p);
    p.input_dims.n = rnd() % 5u == 0u ? 2 : 1;
    p.dilation_h = p.dilation_w = 1;
    p.ch_mult = 1;
    if (depthwise) {
        k = 3;
        p.input_dims.h = rnd_in(1, 12);
        p.input_dims.w = rnd() % 6u == 0u ? rnd_in(40, 70) : rnd_in(1, 24);
        p.input_dims.c = rnd() % 5u == 0u ? rnd_in(1, 40) : 4 * rnd_in(1, 10);
        p.stride_h = rnd_in(1, 3);
        p.stride_w = rnd_in(1, 3);
        p.pad_h = rnd_in(0, 2);
        p.pad_w = rnd_in(0, 2);
        out_c = p.input_dims.c;
    } else if (rnd() & 1u) { /* 1x1 */
        k = 1;
        p.input_dims.h = rnd_in(1, 7);
        p.input_dims.w = rnd_in(1, 7);
        p.input_dims.c = rnd() % 6u == 0u ? rnd_in(1, 70) : 4 * (rnd() % 8u == 0u ? rnd_in(17, 64) : rnd_in(1, 16));
        p.stride_h = p.stride_w = 1;
        out_c = rnd() % 6u == 0u ? rnd_in(1, 13) : 4 * rnd_in(1, 6);
    } else { /* a window of at most 32 taps */
        static const int32_t kernels[4] = {3, 3, 2, 5};
        k = kernels[rnd() % 4u];
        p.input_dims.h = rnd_in(1, 12);
        p.input_dims.w = rnd_in(1, 12);
        p.input_dims.c = k == 5 ? 1 : k == 2 ? rnd_in(1, 8) : rnd_in(1, 3);
        p.stride_h = rnd_in(1, 2);
        p.stride_w = rnd_in(1, 2);
        p.pad_h = rnd_in(0, 1);
        p.pad_w = rnd_in(0, 1);
        p.dilation_h = p.dilation_w = rnd() % 8u == 0u ? 2 : 1;
        out_c = 4 * rnd_in(1, 6);
    }
    p.output_dims.n = p.input_dims.n;
    p.output_dims.h = out_size(p.input_dims.h, k, p.stride_h, p.dilation_h, p.pad_h);
    p.output_dims.w = out_size(p.input_dims.w, k, p.stride_w, p.dilation_w, p.pad_w);
    p.output_dims.c = out_c;
    if (p.output_dims.h < 1 || p.output_dims.w < 1) {
        return 0;
    }
    p.filter_dims.n = depthwise ? 1 : out_c;
    p.filter_dims.h = p.filter_dims.w = k;
    p.filter_dims.c = depthwise ? out_c : p.input_dims.c;
    volume = p.output_dims.n * p.output_dims.h * p.output_dims.w * out_c;
    filter_volume = p.filter_dims.n * k * k * p.filter_dims.c;
    if (p.input_dims.n * p.input_dims.h * p.input_dims.w * p.input_dims.c > MAX_IN || volume > MAX_OUT ||
        filter_volume > MAX_FILTER || out_c > MAX_CH) {
        return 0;
    }
    p.input_offset = input_offset();
    p.output_offset = rnd() % 4u == 0u ? rnd_in(-128, 127) : -128;
    if (rnd() % 8u == 0u) {
        activation(&p.act_min, &p.act_max);
    } else {
        p.act_min = -128;
        p.act_max = 127;
    }
    taps = depthwise ? k * k : k * k * p.input_dims.c;
    bias = fast_quantization(out_c, taps);
    fill(in_buf, p.input_dims.n * p.input_dims.h * p.input_dims.w * p.input_dims.c, extreme);
    fill(filter_buf, filter_volume, extreme);
    paint();
    if (depthwise) {
        const el_kernel_status a =
            el_depthwise_conv2d_s8(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_plain);
        const el_kernel_status b =
            el_depthwise_conv2d_s8_dsp(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_dsp);
        EL_CHECK(a == EL_KERNEL_OK);
        compare("depthwise_conv2d_fast", index, volume, a, b);
    } else {
        const el_kernel_status a = el_conv2d_s8(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_plain);
        const el_kernel_status b =
            el_conv2d_s8_dsp(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_dsp);
        EL_CHECK(a == EL_KERNEL_OK);
        compare("conv2d_fast", index, volume, a, b);
    }
    return 1;
}

static int32_t fc_case(int32_t index)
{
    el_fc_params p;
    const int extreme = rnd() % 8u == 0u ? (int)(1u + rnd() % 2u) : 0;
    int32_t depth, out_c, rows, broken;
    const int32_t *bias;
    el_kernel_status a, b;
    memset(&p, 0, sizeof p);
    rows = rnd() % 3u == 0u ? rnd_in(2, 3) : 1;
    depth = rnd() % 3u == 0u ? rnd_in(1, 9) : rnd_in(1, 300);
    out_c = rnd_in(1, 21);
    if (depth * out_c > MAX_FILTER) {
        return 0;
    }
    p.input_dims.n = rows;
    p.input_dims.h = 1;
    p.input_dims.w = 1;
    p.input_dims.c = depth;
    p.filter_dims.n = depth;
    p.filter_dims.h = 1;
    p.filter_dims.w = 1;
    p.filter_dims.c = out_c;
    p.output_dims.n = rows;
    p.output_dims.h = 1;
    p.output_dims.w = 1;
    p.output_dims.c = out_c;
    p.input_offset = input_offset();
    p.output_offset = rnd_in(-128, 127);
    activation(&p.act_min, &p.act_max);
    bias = quantization(out_c, depth, (int)(rnd() % 6u == 0u ? 0u : rnd() % 6u == 0u ? 2u : 1u));
    fill(in_buf, rows * depth, extreme);
    fill(filter_buf, depth * out_c, extreme);
    broken = rnd() % 25u == 0u;
    if (broken) {
        p.filter_offset = 1; /* asymmetric weights: refused */
    }
    paint();
    a = el_fully_connected_s8(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_plain);
    b = el_fully_connected_s8_dsp(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_dsp);
    EL_CHECK(broken ? a == EL_KERNEL_ERR_PARAMS : a == EL_KERNEL_OK);
    compare("fully_connected", index, rows * out_c, a, b);
    return 1;
}

/* ------------------------------------------------------------------ timing */
static void report(const char *layer, uint32_t plain, uint32_t dsp)
{
    el_uart_puts("bench ");
    el_uart_puts(layer);
    el_uart_puts(" plain ");
    el_uart_put_dec(plain);
    el_uart_puts(" dsp ");
    el_uart_put_dec(dsp);
    el_uart_puts("\n");
}

static void conv_params(el_conv_params *p, int32_t h, int32_t w, int32_t in_c, int32_t out_c, int32_t k,
                        int32_t stride, int32_t pad, int depthwise)
{
    memset(p, 0, sizeof *p);
    p->input_offset = 17;
    p->output_offset = -5;
    p->stride_h = p->stride_w = stride;
    p->pad_h = p->pad_w = pad;
    p->dilation_h = p->dilation_w = 1;
    p->act_min = -128;
    p->act_max = 127;
    p->ch_mult = 1;
    p->input_dims.n = 1;
    p->input_dims.h = h;
    p->input_dims.w = w;
    p->input_dims.c = in_c;
    p->filter_dims.n = depthwise ? 1 : out_c;
    p->filter_dims.h = k;
    p->filter_dims.w = k;
    p->filter_dims.c = depthwise ? out_c : in_c;
    p->output_dims.n = 1;
    p->output_dims.h = out_size(h, k, stride, 1, pad);
    p->output_dims.w = out_size(w, k, stride, 1, pad);
    p->output_dims.c = out_c;
}

/* fast: every shift a right shift (the short requantization; with the output offset -128
 * that the caller sets, a VWW layer's fast path), else quantization()'s mix. */
static void bench_conv(const char *layer, const el_conv_params *p, int depthwise, int fast)
{
    const int32_t volume = p->output_dims.h * p->output_dims.w * p->output_dims.c;
    const int32_t taps = depthwise ? p->filter_dims.h * p->filter_dims.w
                                   : p->filter_dims.h * p->filter_dims.w * p->filter_dims.c;
    const int32_t *bias = quantization(p->output_dims.c, taps, 1);
    int32_t c;
    for (c = 0; fast && c < p->output_dims.c; ++c) {
        shift_buf[c] = -rnd_in(6, 10);
    }
    uint64_t t0, t1, t2;
    el_kernel_status a, b;
    fill(in_buf, p->input_dims.h * p->input_dims.w * p->input_dims.c, 0);
    fill(filter_buf, p->filter_dims.n * p->filter_dims.h * p->filter_dims.w * p->filter_dims.c, 0);
    paint();
    t0 = el_clock_ticks();
    a = depthwise ? el_depthwise_conv2d_s8(NULL, p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_plain)
                  : el_conv2d_s8(NULL, p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_plain);
    t1 = el_clock_ticks();
    b = depthwise ? el_depthwise_conv2d_s8_dsp(NULL, p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_dsp)
                  : el_conv2d_s8_dsp(NULL, p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_dsp);
    t2 = el_clock_ticks();
    EL_CHECK(a == EL_KERNEL_OK);
    compare(layer, 0, volume, a, b);
    report(layer, (uint32_t)(t1 - t0), (uint32_t)(t2 - t1));
}

static void bench_fc(const char *layer, int32_t depth, int32_t out_c, int32_t repeats)
{
    el_fc_params p;
    const int32_t *bias;
    uint64_t t0, t1, t2;
    el_kernel_status a = EL_KERNEL_OK, b = EL_KERNEL_OK;
    int32_t r;
    memset(&p, 0, sizeof p);
    p.input_offset = -3;
    p.output_offset = 11;
    p.act_min = -128;
    p.act_max = 127;
    p.input_dims.n = p.output_dims.n = 1;
    p.input_dims.h = p.input_dims.w = p.output_dims.h = p.output_dims.w = 1;
    p.filter_dims.h = p.filter_dims.w = 1;
    p.input_dims.c = p.filter_dims.n = depth;
    p.output_dims.c = p.filter_dims.c = out_c;
    bias = quantization(out_c, depth, 1);
    fill(in_buf, depth, 0);
    fill(filter_buf, depth * out_c, 0);
    paint();
    t0 = el_clock_ticks();
    for (r = 0; r < repeats; ++r) {
        a = el_fully_connected_s8(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_plain);
    }
    t1 = el_clock_ticks();
    for (r = 0; r < repeats; ++r) {
        b = el_fully_connected_s8_dsp(NULL, &p, in_buf, filter_buf, bias, mult_buf, shift_buf, out_dsp);
    }
    t2 = el_clock_ticks();
    EL_CHECK(a == EL_KERNEL_OK);
    compare(layer, 0, out_c, a, b);
    report(layer, (uint32_t)(t1 - t0), (uint32_t)(t2 - t1));
}

int main(void)
{
    int32_t done;
    int32_t counts[3] = {0, 0, 0};
    el_conv_params p;
    el_clock_start();
    el_uart_init(115200u);
    el_uart_puts("test_kernels_dsp on ");
    el_uart_puts(el_board_name());
    el_uart_puts("\n");

    for (done = 0; done < 300;) {
        done += conv_case(done, 0);
    }
    counts[0] = done;
    for (done = 0; done < 200;) {
        done += conv_case(done, 1);
    }
    counts[1] = done;
    for (done = 0; done < 300;) {
        done += fc_case(done);
    }
    counts[2] = done;
    el_uart_puts("random layers equal: conv2d ");
    el_uart_put_dec((uint32_t)counts[0]);
    el_uart_puts(" depthwise ");
    el_uart_put_dec((uint32_t)counts[1]);
    el_uart_puts(" fully_connected ");
    el_uart_put_dec((uint32_t)counts[2]);
    el_uart_puts("\n");
    for (done = 0; done < 300;) {
        done += fast_case(done, 0);
    }
    counts[0] = done;
    for (done = 0; done < 200;) {
        done += fast_case(done, 1);
    }
    counts[1] = done;
    el_uart_puts("fast-path layers equal: conv2d ");
    el_uart_put_dec((uint32_t)counts[0]);
    el_uart_puts(" depthwise ");
    el_uart_put_dec((uint32_t)counts[1]);
    el_uart_puts("\n");

    /* VWW-sized layers (the 96x96 MobileNet's middle blocks and its classifier). */
    conv_params(&p, 24, 24, 64, 64, 1, 1, 0, 0);
    bench_conv("conv1x1_24x24x64_64", &p, 0, 0);
    conv_params(&p, 12, 12, 32, 32, 3, 1, 1, 0);
    bench_conv("conv3x3_12x12x32_32", &p, 0, 0);
    conv_params(&p, 24, 24, 64, 64, 3, 1, 1, 1);
    bench_conv("dwconv3x3_24x24x64", &p, 1, 0);
    /* the same shapes as VWW's fast paths take them: right shifts, output offset -128 */
    conv_params(&p, 6, 6, 128, 128, 1, 1, 0, 0);
    p.output_offset = -128;
    bench_conv("conv1x1_6x6x128_128_relu", &p, 0, 1);
    conv_params(&p, 96, 96, 3, 8, 3, 2, 1, 0);
    p.output_offset = -128;
    bench_conv("conv3x3_96x96x3_8_s2_relu", &p, 0, 1);
    conv_params(&p, 24, 24, 32, 32, 3, 1, 1, 1);
    p.output_offset = -128;
    bench_conv("dwconv3x3_24x24x32_relu", &p, 1, 1);
    bench_fc("fc_256_2_x100", 256, 2, 100);
    el_uart_puts("ok\n");
    return 0;
}
