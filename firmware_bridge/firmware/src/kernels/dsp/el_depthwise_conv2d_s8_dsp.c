/* el_depthwise_conv2d_s8_dsp.c - DEPTHWISE_CONV_2D, int8, with the DSP extension: the results
 * of el_depthwise_conv2d_s8 byte for byte (el_kernels_dsp.h says why the lanes are exact).
 *
 * A depthwise output sums the taps of one channel, so SMLAD, which adds its two lanes into one
 * accumulator, would mix the two channels a split word holds. Here the word of four channels
 * is split as elsewhere (SXTAB16 adds the input offset: lanes (c0, c2); with ROR 8: (c1, c3);
 * the filter word the same way, so lanes pair channel with channel), and SMLABB / SMLATT
 * (acc + bottom * bottom, acc + top * top: the same exact 16 x 16 -> 32 products) add each
 * lane's product into its own channel's accumulator: four channels per tap from two loads and
 * four extends. Channel multiplier 1 only (MobileNet's and VWW's depthwise layers); other
 * multipliers go to the plain kernel. */
#include "el_kernels_dsp.h"

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)

#include "el_dsp_internal.h"

#include <stddef.h>

size_t el_depthwise_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p)
{
    (void)p;
    return 0u;
}

/* Four channels of one tap: a[k] += (x[k] + off) * w[k], k = 0..3. */
static inline __attribute__((always_inline)) void tap4(const int8_t *x, const int8_t *w, int32_t off2, int32_t *a)
{
    const int32_t xv = el_dsp_load4(x), wv = el_dsp_load4(w);
    const int32_t xe = __sxtab16(off2, xv);            /* (x0 + off, x2 + off) */
    const int32_t xo = el_dsp_sxtab16_ror8(off2, xv);  /* (x1 + off, x3 + off) */
    const int32_t we = __sxtb16(wv), wo = el_dsp_sxtb16_ror8(wv);
    a[0] = __smlabb(xe, we, a[0]);
    a[1] = __smlabb(xo, wo, a[1]);
    a[2] = __smlatt(xe, we, a[2]);
    a[3] = __smlatt(xo, wo, a[3]);
}

/* Four channels of the taps of one window that lie inside the image, `rows` rows of `cols`
 * taps from x (the first one inside; input rows `row` bytes apart) and w (the filter's
 * matching tap; filter rows `wrow` bytes apart): a[k] += the products. Out of line, at -O2,
 * with the sums in registers (GCC 12's -Os keeps an array of them in memory). */
static void __attribute__((noinline, optimize("O2"))) taps_clipped(const int8_t *x, const int8_t *w, int32_t rows,
                                                                   int32_t cols, int32_t channels, int32_t row,
                                                                   int32_t wrow, int32_t off2, int32_t *a)
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], k;
    for (; rows > 0; --rows, x += row, w += wrow) {
        const int8_t *xp = x, *wp = w;
        for (k = cols; k > 0; --k, xp += channels, wp += channels) {
            const int32_t xv = el_dsp_load4(xp), wv = el_dsp_load4(wp);
            const int32_t xe = __sxtab16(off2, xv), xo = el_dsp_sxtab16_ror8(off2, xv);
            const int32_t we = __sxtb16(wv), wo = el_dsp_sxtb16_ror8(wv);
            a0 = __smlabb(xe, we, a0);
            a1 = __smlabb(xo, wo, a1);
            a2 = __smlatt(xe, we, a2);
            a3 = __smlatt(xo, wo, a3);
        }
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

/* What run_3x3 needs of the layer and the channel group; the byte offsets are the assembly's. */
typedef struct {
    int32_t ws[18];      /* 0: tap t's weight word split, (w0, w2) at 2t, (w1, w3) at 2t + 1 */
    int32_t b[4];        /* 72: the biases */
    el_dsp_rqf rq[4];    /* 88: the short requantization (el_dsp_internal.h), 16 B each */
    int32_t add;         /* 152: the output offset when not folded into the shift, else 0 */
    int32_t channels;    /* 156: bytes from one input pixel to the next, and one output pixel */
    int32_t row;         /* 160: bytes from one input row to the next */
    int32_t step;        /* 164: bytes from one window to the next (stride_w * channels) */
    int32_t off2;        /* 168: the input offset in both lanes */
    int32_t rows, cols;  /* 172, 176: run_clipped: the window's rows and columns inside, >= 1 */
    int32_t ws_at;       /* 180: run_clipped: the byte offset in ws of the first tap inside */
    int32_t row_skip;    /* 184: run_clipped: row - cols * channels */
    int32_t ws_skip;     /* 188: run_clipped: 8 (3 - cols) */
} run_job;

typedef char run_job_layout_check[offsetof(run_job, b) == 72 && offsetof(run_job, rq) == 88 &&
                                          sizeof(el_dsp_rqf) == 16 && offsetof(el_dsp_rqf, multiplier) == 8 &&
                                          offsetof(run_job, add) == 152 && offsetof(run_job, off2) == 168 &&
                                          offsetof(run_job, ws_skip) == 188
                                      ? 1
                                      : -1];

/* `count` >= 1 output pixels of one row whose 3x3 windows (dilation 1) lie inside the image,
 * the first window's top left tap at x (r0), the next `step` bytes on; four channels each,
 * written from out (r3) on, `channels` bytes apart; the job in r2. In assembly, as GCC 12
 * (at -Os and -O2 alike) spills the sums and the split words of this loop to the stack (218
 * instructions per pixel). Here per tap 8: one input load, two SXTAB16 (the input offset
 * added), one LDRD of the split weights, four SMLABB / SMLATT (the exact 16 x 16 products into
 * each channel's own sum, tap4); per output 10: el_dsp_rqf_apply (ADDS, ADC, SMLAL, ASR with
 * the channel's constants by two LDRD), the unfolded output offset, one SSAT (a layer whose
 * clamp is all of int8) and STRB. Frame: [sp] the pixels left, [sp, 4] out. */
static void __attribute__((naked, noinline)) run_3x3(const int8_t *x __attribute__((unused)),
                                                     int32_t count __attribute__((unused)),
                                                     const run_job *job __attribute__((unused)),
                                                     int8_t *out __attribute__((unused)))
{
    __asm__(
            "push {r4-r11, lr}\n\t"
            "sub sp, sp, #12\n\t"
            "str r1, [sp]\n\t"
            "str r3, [sp, #4]\n\t"
            "ldr r8, [r2, #168]\n\t"
            "ldr r9, [r2, #156]\n\t"
            "lsl r10, r9, #1\n\t"
            "0:\n\t"
            "mov r1, r0\n\t"
            "ldrd r4, r5, [r2, #72]\n\t"
            "ldrd r6, r7, [r2, #80]\n\t"
            "ldr r3, [r1]\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r2, #0]\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "ldr r3, [r1, r9]\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r2, #8]\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "ldr r3, [r1, r10]\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r2, #16]\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "ldr r3, [r2, #160]\n\t"
            "add r1, r1, r3\n\t"
            "ldr r3, [r1]\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r2, #24]\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "ldr r3, [r1, r9]\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r2, #32]\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "ldr r3, [r1, r10]\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r2, #40]\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "ldr r3, [r2, #160]\n\t"
            "add r1, r1, r3\n\t"
            "ldr r3, [r1]\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r2, #48]\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "ldr r3, [r1, r9]\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r2, #56]\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "ldr r3, [r1, r10]\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r2, #64]\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "ldr r9, [sp, #4]\n\t"
            "ldr r10, [r2, #152]\n\t"
            "ldrd r3, lr, [r2, #88]\n\t"
            "asr r11, r4, #31\n\t"
            "adds r3, r3, r11, lsl #31\n\t"
            "adc lr, lr, r11\n\t"
            "ldrd r11, r12, [r2, #96]\n\t"
            "smlal r3, lr, r4, r11\n\t"
            "asr lr, lr, r12\n\t"
            "add lr, lr, r10\n\t"
            "ssat lr, #8, lr\n\t"
            "strb lr, [r9, #0]\n\t"
            "ldrd r3, lr, [r2, #104]\n\t"
            "asr r11, r5, #31\n\t"
            "adds r3, r3, r11, lsl #31\n\t"
            "adc lr, lr, r11\n\t"
            "ldrd r11, r12, [r2, #112]\n\t"
            "smlal r3, lr, r5, r11\n\t"
            "asr lr, lr, r12\n\t"
            "add lr, lr, r10\n\t"
            "ssat lr, #8, lr\n\t"
            "strb lr, [r9, #1]\n\t"
            "ldrd r3, lr, [r2, #120]\n\t"
            "asr r11, r6, #31\n\t"
            "adds r3, r3, r11, lsl #31\n\t"
            "adc lr, lr, r11\n\t"
            "ldrd r11, r12, [r2, #128]\n\t"
            "smlal r3, lr, r6, r11\n\t"
            "asr lr, lr, r12\n\t"
            "add lr, lr, r10\n\t"
            "ssat lr, #8, lr\n\t"
            "strb lr, [r9, #2]\n\t"
            "ldrd r3, lr, [r2, #136]\n\t"
            "asr r11, r7, #31\n\t"
            "adds r3, r3, r11, lsl #31\n\t"
            "adc lr, lr, r11\n\t"
            "ldrd r11, r12, [r2, #144]\n\t"
            "smlal r3, lr, r7, r11\n\t"
            "asr lr, lr, r12\n\t"
            "add lr, lr, r10\n\t"
            "ssat lr, #8, lr\n\t"
            "strb lr, [r9, #3]\n\t"
            "ldr r3, [r2, #156]\n\t"
            "add r9, r9, r3\n\t"
            "str r9, [sp, #4]\n\t"
            "ldr r3, [r2, #164]\n\t"
            "add r0, r0, r3\n\t"
            "ldr r9, [r2, #156]\n\t"
            "lsl r10, r9, #1\n\t"
            "ldr r3, [sp]\n\t"
            "subs r3, r3, #1\n\t"
            "str r3, [sp]\n\t"
            "bne 0b\n\t"
            "add sp, sp, #12\n\t"
            "pop {r4-r11, pc}\n\t");
}

/* run_3x3 for windows that the image's border clips to the same `rows` x `cols` taps (a
 * border pixel, or a run along the top or bottom border): x (r0) is the first pixel's first tap
 * inside, ws_at its split weights; the taps are loops (11 instructions per tap: the input
 * pointer stepped by `channels`, the weights by LDRD post-indexed), the requantization as in
 * run_3x3. The taps outside the image add nothing, as the plain kernel skips them. Frame: [sp]
 * the pixels left, [sp, 4] out, [sp, 8] the pixel's first tap, [sp, 12] the rows left. */
static void __attribute__((naked, noinline)) run_clipped(const int8_t *x __attribute__((unused)),
                                                         int32_t count __attribute__((unused)),
                                                         const run_job *job __attribute__((unused)),
                                                         int8_t *out __attribute__((unused)))
{
    __asm__(
            "push {r4-r11, lr}\n\t"
            "sub sp, sp, #20\n\t"
            "str r1, [sp]\n\t"
            "str r3, [sp, #4]\n\t"
            "str r0, [sp, #8]\n\t"
            "ldr r8, [r2, #168]\n\t"
            "ldr r9, [r2, #156]\n\t"
            "0:\n\t"
            "ldrd r4, r5, [r2, #72]\n\t"
            "ldrd r6, r7, [r2, #80]\n\t"
            "ldr r1, [sp, #8]\n\t"
            "ldr r10, [r2, #180]\n\t"
            "add r10, r10, r2\n\t"
            "ldr r3, [r2, #172]\n\t"
            "str r3, [sp, #12]\n\t"
            "2:\n\t"
            "ldr r0, [r2, #176]\n\t"
            "1:\n\t"
            "ldr r3, [r1]\n\t"
            "add r1, r1, r9\n\t"
            "sxtab16 r11, r8, r3\n\t"
            "sxtab16 r12, r8, r3, ror #8\n\t"
            "ldrd r3, lr, [r10], #8\n\t"
            "smlabb r4, r11, r3, r4\n\t"
            "smlatt r6, r11, r3, r6\n\t"
            "smlabb r5, r12, lr, r5\n\t"
            "smlatt r7, r12, lr, r7\n\t"
            "subs r0, r0, #1\n\t"
            "bne 1b\n\t"
            "ldr r3, [r2, #184]\n\t"
            "add r1, r1, r3\n\t"
            "ldr r3, [r2, #188]\n\t"
            "add r10, r10, r3\n\t"
            "ldr r3, [sp, #12]\n\t"
            "subs r3, r3, #1\n\t"
            "str r3, [sp, #12]\n\t"
            "bne 2b\n\t"
            "ldr r9, [sp, #4]\n\t"
            "ldr r10, [r2, #152]\n\t"
            "ldrd r3, lr, [r2, #88]\n\t"
            "asr r11, r4, #31\n\t"
            "adds r3, r3, r11, lsl #31\n\t"
            "adc lr, lr, r11\n\t"
            "ldrd r11, r12, [r2, #96]\n\t"
            "smlal r3, lr, r4, r11\n\t"
            "asr lr, lr, r12\n\t"
            "add lr, lr, r10\n\t"
            "ssat lr, #8, lr\n\t"
            "strb lr, [r9, #0]\n\t"
            "ldrd r3, lr, [r2, #104]\n\t"
            "asr r11, r5, #31\n\t"
            "adds r3, r3, r11, lsl #31\n\t"
            "adc lr, lr, r11\n\t"
            "ldrd r11, r12, [r2, #112]\n\t"
            "smlal r3, lr, r5, r11\n\t"
            "asr lr, lr, r12\n\t"
            "add lr, lr, r10\n\t"
            "ssat lr, #8, lr\n\t"
            "strb lr, [r9, #1]\n\t"
            "ldrd r3, lr, [r2, #120]\n\t"
            "asr r11, r6, #31\n\t"
            "adds r3, r3, r11, lsl #31\n\t"
            "adc lr, lr, r11\n\t"
            "ldrd r11, r12, [r2, #128]\n\t"
            "smlal r3, lr, r6, r11\n\t"
            "asr lr, lr, r12\n\t"
            "add lr, lr, r10\n\t"
            "ssat lr, #8, lr\n\t"
            "strb lr, [r9, #2]\n\t"
            "ldrd r3, lr, [r2, #136]\n\t"
            "asr r11, r7, #31\n\t"
            "adds r3, r3, r11, lsl #31\n\t"
            "adc lr, lr, r11\n\t"
            "ldrd r11, r12, [r2, #144]\n\t"
            "smlal r3, lr, r7, r11\n\t"
            "asr lr, lr, r12\n\t"
            "add lr, lr, r10\n\t"
            "ssat lr, #8, lr\n\t"
            "strb lr, [r9, #3]\n\t"
            "ldr r3, [r2, #156]\n\t"
            "add r9, r9, r3\n\t"
            "str r9, [sp, #4]\n\t"
            "ldr r3, [r2, #164]\n\t"
            "ldr r0, [sp, #8]\n\t"
            "add r0, r0, r3\n\t"
            "str r0, [sp, #8]\n\t"
            "ldr r9, [r2, #156]\n\t"
            "ldr r3, [sp]\n\t"
            "subs r3, r3, #1\n\t"
            "str r3, [sp]\n\t"
            "bne 0b\n\t"
            "add sp, sp, #20\n\t"
            "pop {r4-r11, pc}\n\t");
}

/* The window rows [lo, hi) of a window starting at y0 (or columns from x0) that lie inside an
 * image of `size` rows, for dilation 1: lo = max(0, -y0), hi = min(kernel, size - y0), hi <= lo
 * when none does (int64: a large pad makes size - y0 exceed INT32_MAX). */
static inline __attribute__((always_inline)) void clip_taps(int32_t y0, int32_t size, int32_t kernel, int32_t *lo,
                                                              int32_t *hi)
{
    const int64_t l = y0 < 0 ? -(int64_t)y0 : 0;
    const int64_t h = (int64_t)size - y0 < kernel ? (int64_t)size - y0 : kernel;
    *lo = (int32_t)(l < kernel ? l : kernel);
    *hi = (int32_t)(h > *lo ? h : *lo);
}

/* Channel multiplier 1, channels c..c+3 of every output pixel. The group of four is the outer
 * loop, so that its requantization constants (and, for run_3x3, its split weights) are worked
 * out once per layer. With a 3x3 window, dilation 1 and the short requantization, the pixels
 * of an output row whose windows lie inside the image (all but the border's) are one run_3x3.
 * Any other window with dilation 1 walks only the taps inside the image (its rows and columns
 * clipped once per pixel: the taps outside add nothing, as the plain kernel skips them); with
 * other dilations the tap loop of the plain kernel, testing each tap. */
static inline __attribute__((always_inline)) void depthwise_4ch(const el_conv_params *p, int32_t c,
                                                                 const int8_t *input, const int8_t *filter,
                                                                 const int32_t *bias, const int32_t *multiplier,
                                                                 const int32_t *shift, int8_t *output, int mode)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, channels = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w;
    const int32_t stride_w = p->stride_w, pad_w = p->pad_w;
    const int32_t off2 = el_dsp_offset2(p->input_offset);
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t row = in_w * channels; /* one input row; < the input's volume */
    const int dilated = p->dilation_h != 1 || p->dilation_w != 1;
    const int runs = kernel_h == 3 && kernel_w == 3 && !dilated && mode != RQ_SLOW;
    const int8_t *const f = filter + c;
    channel_rq rq[4];
    run_job job;
    int32_t b[4], k, n, oy, ox, ky, kx, run_lo = 0, run_hi = 0;
    for (k = 0; k < 4; ++k) {
        channel_prepare(&rq[k], mode, multiplier[c + k], shift[c + k], out_off);
        b[k] = bias != NULL ? bias[c + k] : 0;
    }
    if (runs) {
        for (k = 0; k < 9; ++k) {
            const int32_t wv = el_dsp_load4(f + k * channels);
            job.ws[2 * k] = __sxtb16(wv);
            job.ws[2 * k + 1] = el_dsp_sxtb16_ror8(wv);
        }
        for (k = 0; k < 4; ++k) {
            job.b[k] = b[k];
            job.rq[k] = rq[k].fast;
        }
        job.add = (mode & RQ_FOLD) ? 0 : out_off;
        job.channels = channels;
        job.row = row;
        job.step = stride_w * channels;
        job.off2 = off2;
        /* the output columns whose windows lie inside: x0 = ox stride_w - pad_w in [0, in_w - 3]
         * (int64: no overflow whatever the pad) */
        for (ox = 0; ox < out_w && (int64_t)ox * stride_w - pad_w < 0; ++ox) {
        }
        run_lo = ox;
        for (; ox < out_w && (int64_t)ox * stride_w - pad_w <= (int64_t)in_w - 3; ++ox) {
        }
        run_hi = ox;
    }
    for (n = 0; n < p->input_dims.n; ++n) {
        const int8_t *const image = input + n * in_h * row + c;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            int32_t ky_lo, ky_hi;
            int rows3; /* a 3x3 window, dilation 1, its rows inside the image */
            int8_t *out = output + ((n * out_h + oy) * out_w) * channels + c;
            clip_taps(y0, in_h, kernel_h, &ky_lo, &ky_hi);
            if (runs && ky_hi > ky_lo) {
                /* runs of pixels with the same clipped window: the interior columns [run_lo,
                 * run_hi) as one, each border pixel alone */
                for (ox = 0; ox < out_w;) {
                    const int32_t x0 = ox * stride_w - pad_w;
                    int32_t kx_lo = 0, kx_hi = 3, count = 1;
                    if (ox >= run_lo && ox < run_hi) {
                        count = run_hi - ox;
                    } else {
                        clip_taps(x0, in_w, kernel_w, &kx_lo, &kx_hi);
                    }
                    if (kx_hi > kx_lo) {
                        const int8_t *const x = image + (y0 + ky_lo) * row + (x0 + kx_lo) * channels;
                        if (ky_hi - ky_lo == 3 && kx_hi - kx_lo == 3) {
                            run_3x3(x, count, &job, out);
                        } else {
                            job.rows = ky_hi - ky_lo;
                            job.cols = kx_hi - kx_lo;
                            job.ws_at = 8 * (3 * ky_lo + kx_lo);
                            job.row_skip = row - job.cols * channels;
                            job.ws_skip = 8 * (3 - job.cols);
                            run_clipped(x, count, &job, out);
                        }
                    } else { /* no tap inside: the bias alone */
                        for (k = 0; k < 4; ++k) {
                            out[k] = channel_requantize(b[k], &rq[k], mode, out_off, act_min, act_max);
                        }
                    }
                    ox += count;
                    out += count * channels;
                }
                continue;
            }
            rows3 = kernel_h == 3 && kernel_w == 3 && !dilated && y0 >= 0 && y0 <= in_h - 3;
            for (ox = 0; ox < out_w; ++ox, out += channels) {
                const int32_t x0 = ox * stride_w - pad_w;
                int32_t a[4];
                a[0] = b[0];
                a[1] = b[1];
                a[2] = b[2];
                a[3] = b[3];
                if (mode == RQ_SLOW && rows3 && x0 >= 0 && x0 <= in_w - 3) {
                    /* a layer run_3x3 does not take (the full requantization): the window inside
                     * as nine unrolled taps, the border's taps tested one by one below (the
                     * loops of the version before run_3x3, which GCC compiles best here) */
                    const int8_t *x = image + y0 * row + x0 * channels;
                    const int8_t *w = f;
                    for (ky = 0; ky < 3; ++ky) {
                        tap4(x, w, off2, a);
                        tap4(x + channels, w + channels, off2, a);
                        tap4(x + 2 * channels, w + 2 * channels, off2, a);
                        x += row;
                        w += 3 * channels;
                    }
                } else if (!dilated && mode != RQ_SLOW) {
                    int32_t kx_lo, kx_hi;
                    clip_taps(x0, in_w, kernel_w, &kx_lo, &kx_hi);
                    if (ky_hi > ky_lo && kx_hi > kx_lo) {
                        taps_clipped(image + (y0 + ky_lo) * row + (x0 + kx_lo) * channels,
                                     f + (ky_lo * kernel_w + kx_lo) * channels, ky_hi - ky_lo, kx_hi - kx_lo,
                                     channels, row, kernel_w * channels, off2, a);
                    }
                } else {
                    for (ky = 0; ky < kernel_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= in_h) {
                            continue; /* a padded tap: the zero point, real 0 */
                        }
                        for (kx = 0; kx < kernel_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            tap4(image + iy * row + ix * channels, f + (ky * kernel_w + kx) * channels, off2, a);
                        }
                    }
                }
                out[0] = channel_requantize(a[0], &rq[0], mode, out_off, act_min, act_max);
                out[1] = channel_requantize(a[1], &rq[1], mode, out_off, act_min, act_max);
                out[2] = channel_requantize(a[2], &rq[2], mode, out_off, act_min, act_max);
                out[3] = channel_requantize(a[3], &rq[3], mode, out_off, act_min, act_max);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * Rings: a 3x3 window (dilation 1) over three padded rows of split input words.
 *
 * For a group of four channels and a chunk of at most DW_ENTRIES input columns (the output
 * columns whose windows they hold), each input row a window needs is split once (SXTAB16 with
 * the input offset: (x0 + off, x2 + off), and with ROR 8: (x1 + off, x3 + off), two words an
 * input pixel) into one of three row buffers on the stack, DW_PITCH bytes apart; the columns
 * outside the image and the rows outside it are words of 0: x + off = 0 there, so those taps
 * add nothing, as the plain kernel skips them. Input row iy goes to buffer iy mod 3 (three
 * consecutive rows never share one), split when a window first needs it, so each row is split
 * once per channel group and chunk whatever the stride (only the two columns chunks share
 * twice). A window's rows y0, y0 + 1, y0 + 2 then lie in buffers 0, 1, 2 in the rotation
 * r = y0 mod 3: buffer j holds its row ky = (j - r) mod 3, so the weights for rotation r
 * have their rows in that order, and the assembly reads buffer j at the fixed offset
 * j DW_PITCH. Every output pixel of a chunk's row is one window of nine taps (dw_row*,
 * assembly): per tap one LDRD of the split input, one LDRD of the split weights and four
 * SMLABB / SMLATT (each channel's product into its own sum, exact 16 x 16 -> 32 products:
 * el_kernels_dsp.h), six instructions per four MACs, no border case. The requantization is
 * el_dsp_rqf_apply and one SSAT (dw_row); with the output offset -128 the correction for a
 * negative h is left out (dw_row_relu: points 2 and 3 of the quad proof in el_conv2d_s8_dsp.c,
 * for any sum), and with the offset folded into every shift the ADD too (dw_row_relu_folded,
 * the channel's constants by one LDM): five instructions an output instead of ten. Stack:
 * the buffers' 576 B, the job and three rotations of weights (216 B).
 */
#define DW_ENTRIES 24                  /* input columns a row buffer holds */
#define DW_PITCH (8 * DW_ENTRIES)      /* 192 B: buffer 2's last tap at 2 * 192 + 16, within LDRD's 1020 */

typedef struct {
    int32_t b[4];        /* 0: the biases */
    el_dsp_rqf rq[4];    /* 16: the short requantization (el_dsp_internal.h), 16 B each */
    int32_t add;         /* 80: the output offset when not folded into the shift, else 0 */
    int32_t step;        /* 84: bytes from one window to the next in a row buffer (8 stride_w) */
    int32_t out_step;    /* 88: bytes from one output pixel to the next (channels) */
} dw_job;

typedef char dw_job_layout_check[offsetof(dw_job, rq) == 16 && sizeof(el_dsp_rqf) == 16 &&
                                         offsetof(dw_job, add) == 80 && offsetof(dw_job, out_step) == 88 &&
                                         DW_PITCH * 2 + 16 <= 1020
                                     ? 1
                                     : -1];

#define DW_STR2(x) #x
#define DW_STR(x) DW_STR2(x)

/* tap (buffer j, column kx): the split input at r1 + j DW_PITCH + 8 kx, its split weights at
 * lr + w (tap t's words (w0, w2), (w1, w3) at 8 t) */
#define DW_TAP(x, w)                                                                                               \
    "ldrd r8, r9, [r1, #" x "]\n\t"                                                                                \
    "ldrd r10, r11, [lr, #" w "]\n\t"                                                                              \
    "smlabb r4, r8, r10, r4\n\t"                                                                                   \
    "smlatt r6, r8, r10, r6\n\t"                                                                                   \
    "smlabb r5, r9, r11, r5\n\t"                                                                                   \
    "smlatt r7, r9, r11, r7\n\t"

/* the first tap without a sum to add to: SMULBB / SMULTT (the bias is in P, dw_ring_4ch) */
#define DW_TAP0                                                                                                    \
    "ldrd r8, r9, [r1, #0]\n\t"                                                                                    \
    "ldrd r10, r11, [lr, #0]\n\t"                                                                                  \
    "smulbb r4, r8, r10\n\t"                                                                                       \
    "smultt r6, r8, r10\n\t"                                                                                       \
    "smulbb r5, r9, r11\n\t"                                                                                       \
    "smultt r7, r9, r11\n\t"

/* the first tap added to the biases */
#define DW_TAP0_BIAS                                                                                               \
    "ldrd r4, r5, [r0, #0]\n\t"                                                                                    \
    "ldrd r6, r7, [r0, #8]\n\t" DW_TAP("0", "0")

#define DW_P1 DW_STR(DW_PITCH)
#define DW_P2 DW_STR(2 * DW_PITCH)

/* The requantizations, four channels into [r3, #0..3]. el_dsp_rqf_apply, the unfolded offset
 * (r8) added, SSAT; lr reloaded after. */
#define DW_RQ1(acc, q, q8, at)                                                                                     \
    "ldrd r10, r11, [r0, #" q "]\n\t"                                                                              \
    "asr r12, " acc ", #31\n\t"                                                                                    \
    "adds r10, r10, r12, lsl #31\n\t"                                                                              \
    "adc r11, r11, r12\n\t"                                                                                        \
    "ldrd r12, lr, [r0, #" q8 "]\n\t"                                                                              \
    "smlal r10, r11, " acc ", r12\n\t"                                                                             \
    "asr r11, r11, lr\n\t"                                                                                         \
    "add r11, r11, r8\n\t"                                                                                         \
    "ssat r11, #8, r11\n\t"                                                                                        \
    "strb r11, [r3, #" at "]\n\t"
#define DW_RQ                                                                                                      \
    "ldr r8, [r0, #80]\n\t"                                                                                        \
    DW_RQ1("r4", "16", "24", "0") DW_RQ1("r5", "32", "40", "1") DW_RQ1("r6", "48", "56", "2")                  \
    DW_RQ1("r7", "64", "72", "3") "ldr lr, [sp, #36]\n\t"

/* the same without the correction for a negative h (output offset -128) */
#define DW_RQ_RELU1(acc, q, q8, at)                                                                                \
    "ldrd r10, r11, [r0, #" q "]\n\t"                                                                              \
    "ldrd r12, lr, [r0, #" q8 "]\n\t"                                                                              \
    "smlal r10, r11, " acc ", r12\n\t"                                                                             \
    "asr r11, r11, lr\n\t"                                                                                         \
    "add r11, r11, r8\n\t"                                                                                         \
    "ssat r11, #8, r11\n\t"                                                                                        \
    "strb r11, [r3, #" at "]\n\t"
#define DW_RQ_RELU                                                                                                 \
    "ldr r8, [r0, #80]\n\t"                                                                                        \
    DW_RQ_RELU1("r4", "16", "24", "0") DW_RQ_RELU1("r5", "32", "40", "1") DW_RQ_RELU1("r6", "48", "56", "2")  \
    DW_RQ_RELU1("r7", "64", "72", "3") "ldr lr, [sp, #36]\n\t"

/* and without the ADD (the offset folded into every shift): low, high, m, e - 1 by one LDM;
 * lr untouched */
#define DW_RQ_FOLDED1(acc, at)                                                                                     \
    "ldm r12!, {r8-r11}\n\t"                                                                                       \
    "smlal r8, r9, " acc ", r10\n\t"                                                                               \
    "asr r9, r9, r11\n\t"                                                                                          \
    "ssat r9, #8, r9\n\t"                                                                                          \
    "strb r9, [r3, #" at "]\n\t"
#define DW_RQ_RELU_FOLDED                                                                                          \
    "add r12, r0, #16\n\t"                                                                                         \
    DW_RQ_FOLDED1("r4", "0") DW_RQ_FOLDED1("r5", "1") DW_RQ_FOLDED1("r6", "2") DW_RQ_FOLDED1("r7", "3")

/* r0 the job, r1 the first window's column in buffer 0, r2 the output pixels (>= 1), r3 the
 * first output, [sp] the weights of the row's rotation (18 words; lr, and [sp, 36] after the
 * push); r4-r7 the channels' sums. */
#define DW_ROW(FIRST, RQ)                                                                                          \
    __asm__("push {r4-r11, lr}\n\t"                                                                                \
            "ldr lr, [sp, #36]\n"                                                                                  \
            "1:\n\t"                                                                                               \
            FIRST DW_TAP("8", "8") DW_TAP("16", "16")                                                              \
            DW_TAP(DW_P1, "24") DW_TAP(DW_P1 "+8", "32") DW_TAP(DW_P1 "+16", "40")                                 \
            DW_TAP(DW_P2, "48") DW_TAP(DW_P2 "+8", "56") DW_TAP(DW_P2 "+16", "64")                                 \
            RQ                                                                                                     \
            "ldr r8, [r0, #88]\n\t"                                                                                \
            "add r3, r3, r8\n\t"                                                                                   \
            "ldr r8, [r0, #84]\n\t"                                                                                \
            "add r1, r1, r8\n\t"                                                                                   \
            "subs r2, r2, #1\n\t"                                                                                  \
            "bne 1b\n\t"                                                                                           \
            "pop {r4-r11, pc}\n\t")

typedef void dw_row_fn(const dw_job *job, const int32_t *ring, int32_t count, int8_t *out, const int32_t *ws);

static void __attribute__((naked, noinline)) dw_row(const dw_job *job __attribute__((unused)),
                                                    const int32_t *ring __attribute__((unused)),
                                                    int32_t count __attribute__((unused)),
                                                    int8_t *out __attribute__((unused)),
                                                    const int32_t *ws __attribute__((unused)))
{
    DW_ROW(DW_TAP0_BIAS, DW_RQ);
}

static void __attribute__((naked, noinline)) dw_row_relu(const dw_job *job __attribute__((unused)),
                                                         const int32_t *ring __attribute__((unused)),
                                                         int32_t count __attribute__((unused)),
                                                         int8_t *out __attribute__((unused)),
                                                         const int32_t *ws __attribute__((unused)))
{
    DW_ROW(DW_TAP0, DW_RQ_RELU);
}

static void __attribute__((naked, noinline)) dw_row_relu_folded(const dw_job *job __attribute__((unused)),
                                                                const int32_t *ring __attribute__((unused)),
                                                                int32_t count __attribute__((unused)),
                                                                int8_t *out __attribute__((unused)),
                                                                const int32_t *ws __attribute__((unused)))
{
    DW_ROW(DW_TAP0, DW_RQ_RELU_FOLDED);
}

/* `count` input pixels (src, `channels` bytes apart) split into dst, two words each: two
 * pixels per pass (two LDR, the pointer stepped by 2 `channels`, two SXTAB16 each, one STM
 * of the four words), then an odd last one. r0 dst, r1 src, r2 count, r3 channels, [sp] off2. */
static void __attribute__((naked, noinline)) split_row(int32_t *dst __attribute__((unused)),
                                                       const int8_t *src __attribute__((unused)),
                                                       int32_t count __attribute__((unused)),
                                                       int32_t channels __attribute__((unused)),
                                                       int32_t off2 __attribute__((unused)))
{
    __asm__("ldr r12, [sp, #0]\n\t"
            "push {r4-r7}\n\t"
            "subs r2, r2, #2\n\t"
            "blt 2f\n"
            "1:\n\t"
            "ldr r6, [r1, r3]\n\t"
            "ldr r4, [r1]\n\t"
            "add r1, r1, r3, lsl #1\n\t"
            "sxtab16 r5, r12, r4, ror #8\n\t"
            "sxtab16 r4, r12, r4\n\t"
            "sxtab16 r7, r12, r6, ror #8\n\t"
            "sxtab16 r6, r12, r6\n\t"
            "stm r0!, {r4-r7}\n\t"
            "subs r2, r2, #2\n\t"
            "bge 1b\n"
            "2:\n\t"
            "adds r2, r2, #2\n\t"
            "beq 3f\n\t"
            "ldr r4, [r1]\n\t"
            "sxtab16 r5, r12, r4, ror #8\n\t"
            "sxtab16 r4, r12, r4\n\t"
            "strd r4, r5, [r0]\n"
            "3:\n\t"
            "pop {r4-r7}\n\t"
            "bx lr\n\t");
}

/* n words of 0 (a loop GCC is told not to make a memset call: newlib's costs more for these
 * few words). */
static void __attribute__((noinline, optimize("O2", "no-tree-loop-distribute-patterns"))) zero_words(int32_t *dst,
                                                                                                 int32_t n)
{
    for (; n > 0; --n) {
        *dst++ = 0;
    }
}

/* 1 when dw_ring_4ch takes the layer: a 3x3 window, dilation 1, the short requantization with
 * the clamp all of int8. */
static int dw_ring_ok(const el_conv_params *p, int mode)
{
    return p->filter_dims.h == 3 && p->filter_dims.w == 3 && p->dilation_h == 1 && p->dilation_w == 1 &&
           (mode & (RQ_FAST | RQ_FULL)) == (RQ_FAST | RQ_FULL) && p->output_dims.w >= 1;
}

/* Channels c..c+3 of every output pixel of a layer dw_ring_ok accepted. */
static void dw_ring_4ch(const el_conv_params *p, int32_t c, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, const int32_t *multiplier, const int32_t *shift, int8_t *output,
                        int mode)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, channels = p->input_dims.c;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w, stride_w = p->stride_w;
    const int32_t off2 = el_dsp_offset2(p->input_offset);
    /* output columns per chunk: (per - 1) stride_w + 3 <= DW_ENTRIES input columns */
    const int32_t per = stride_w > DW_ENTRIES - 3 ? 1 : (DW_ENTRIES - 3) / stride_w + 1;
    dw_row_fn *const row_fn = p->output_offset != -128 ? dw_row : (mode & RQ_FOLD) ? dw_row_relu_folded : dw_row_relu;
    int32_t ring[3][2 * DW_ENTRIES];
    int32_t ws[3][18]; /* per rotation r: buffer j's taps are window row (j - r) mod 3's */
    int32_t held[3];
    dw_job job;
    int32_t k, n, oy, ox0, r, j;
    for (k = 0; k < 4; ++k) {
        el_dsp_rqf *const q = &job.rq[k];
        job.b[k] = bias != NULL ? bias[c + k] : 0;
        el_dsp_rqf_prepare(q, multiplier[c + k], shift[c + k], p->output_offset, (mode & RQ_FOLD) != 0);
        if (row_fn != dw_row) {
            /* dw_row_relu*: the bias in P, P + bias m (|P| <= 2^61 + 2^30, |bias m| < 2^62: no
             * int64 overflow), so that SMLAL forms acc m + P = sum m + (P + bias m), the same
             * 64-bit sum, from sums that start at the first tap's products. dw_row keeps the
             * bias in its sums, whose sign it needs. */
            const int64_t folded = (int64_t)q->high * ((int64_t)1 << 32) + (int64_t)q->low +
                                   (int64_t)job.b[k] * q->multiplier;
            q->low = (uint32_t)((uint64_t)folded & 0xFFFFFFFFu);
            q->high = (int32_t)(folded >> 32);
        }
    }
    job.add = (mode & RQ_FOLD) ? 0 : p->output_offset;
    job.step = 8 * stride_w;
    job.out_step = channels;
    for (k = 0; k < 9; ++k) { /* rotation 0: buffer j holds window row j */
        const int32_t wv = el_dsp_load4(filter + c + k * channels);
        ws[0][2 * k] = __sxtb16(wv);
        ws[0][2 * k + 1] = el_dsp_sxtb16_ror8(wv);
    }
    for (r = 1; r < 3; ++r) {
        for (j = 0; j < 3; ++j) { /* its six words */
            memcpy(&ws[r][6 * j], &ws[0][6 * (j >= r ? j - r : j - r + 3)], 6 * sizeof(int32_t));
        }
    }
    for (n = 0; n < p->input_dims.n; ++n) {
        const int8_t *const image = input + n * in_h * in_w * channels + c;
        for (ox0 = 0; ox0 < out_w; ox0 += per) {
            const int32_t count = out_w - ox0 < per ? out_w - ox0 : per;
            const int32_t entries = (count - 1) * stride_w + 3; /* <= DW_ENTRIES */
            /* entry k is input column x0 + k; those in [lo, hi) lie inside the image (int64:
             * no overflow whatever the pad) */
            const int64_t x0 = (int64_t)ox0 * stride_w - p->pad_w;
            const int32_t lo = x0 >= 0 ? 0 : -x0 < entries ? (int32_t)-x0 : entries;
            const int32_t hi_in = (int64_t)in_w - x0 < entries ? (int32_t)((int64_t)in_w - x0) : entries;
            const int32_t hi = hi_in > lo ? hi_in : lo; /* [lo, hi) may be empty */
            for (k = 0; k < 3; ++k) { /* the columns outside the image: 0 for the whole chunk */
                zero_words(ring[k], 2 * lo);
                zero_words(ring[k] + 2 * hi, 2 * (entries - hi));
            }
            held[0] = held[1] = held[2] = INT32_MIN; /* no row of this chunk yet */
            for (oy = 0; oy < out_h; ++oy) {
                const int32_t y0 = oy * p->stride_h - p->pad_h;
                const int32_t rot = ((y0 % 3) + 3) % 3;
                int32_t slot = rot, ky;
                for (ky = 0; ky < 3; ++ky, slot = slot == 2 ? 0 : slot + 1) {
                    const int32_t iy = y0 + ky;
                    int32_t *const dst = ring[slot];
                    if (held[slot] != iy) {
                        held[slot] = iy;
                        if (iy < 0 || iy >= in_h) { /* 0 where the last row held the image's columns */
                            zero_words(dst + 2 * lo, 2 * (hi - lo));
                        } else {
                            split_row(dst + 2 * lo, image + (iy * in_w + (int32_t)(x0 + lo)) * channels, hi - lo,
                                      channels, off2);
                        }
                    }
                }
                row_fn(&job, ring[0], count, output + ((n * out_h + oy) * out_w + ox0) * channels + c, ws[rot]);
            }
        }
    }
}

/* depthwise_4ch with the layer's requantization (el_dsp_rq_mode) fixed at compile time. */
static void depthwise_4ch_dsp(const el_conv_params *p, int32_t c, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, const int32_t *multiplier, const int32_t *shift, int8_t *output,
                              int mode)
{
    switch (mode) {
    case RQ_FAST | RQ_FOLD | RQ_FULL:
        depthwise_4ch(p, c, input, filter, bias, multiplier, shift, output, RQ_FAST | RQ_FOLD | RQ_FULL);
        break;
    case RQ_FAST | RQ_FULL:
        depthwise_4ch(p, c, input, filter, bias, multiplier, shift, output, RQ_FAST | RQ_FULL);
        break;
    default: depthwise_4ch(p, c, input, filter, bias, multiplier, shift, output, RQ_SLOW); break;
    }
}

el_kernel_status el_depthwise_conv2d_s8_dsp(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                                            const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                                            const int32_t *shift, int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, channels = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w;
    const int32_t off = p->input_offset;
    int32_t n, oy, ox, c, ky, kx;
    int mode;
    if (!el_depthwise_conv2d_s8_params_ok(p, bias, shift) || p->ch_mult != 1 ||
        !el_dsp_rq_layer_ok(multiplier, p->output_dims.c)) {
        /* refused, a multiplier this version does not vectorize, or a Q31 multiplier of
         * INT32_MIN (el_dsp_internal.h): the plain kernel */
        return el_depthwise_conv2d_s8(ctx, p, input, filter, bias, multiplier, shift, output);
    }
    mode = el_dsp_rq_mode(channels, p->output_offset, p->act_min, p->act_max, multiplier, shift);
    if ((mode & RQ_FULL) == 0) {
        mode = RQ_SLOW; /* a clamp narrower than int8: rare enough to keep one copy of the loops */
    }
    for (c = 0; c + 4 <= channels; c += 4) {
        if (dw_ring_ok(p, mode)) {
            dw_ring_4ch(p, c, input, filter, bias, multiplier, shift, output, mode);
        } else {
            depthwise_4ch_dsp(p, c, input, filter, bias, multiplier, shift, output, mode);
        }
    }
    for (; c < channels; ++c) { /* the last 1..3 channels of a count not a multiple of 4 */
        for (n = 0; n < p->input_dims.n; ++n) {
            for (oy = 0; oy < out_h; ++oy) {
                const int32_t y0 = oy * p->stride_h - p->pad_h;
                for (ox = 0; ox < out_w; ++ox) {
                    const int32_t x0 = ox * p->stride_w - p->pad_w;
                    int32_t acc = bias != NULL ? bias[c] : 0;
                    for (ky = 0; ky < kernel_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        for (kx = 0; kx < kernel_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            acc += ((int32_t)input[((n * in_h + iy) * in_w + ix) * channels + c] + off) *
                                   (int32_t)filter[(ky * kernel_w + kx) * channels + c];
                        }
                    }
                    output[((n * out_h + oy) * out_w + ox) * channels + c] =
                        el_requantize_s8(acc, multiplier[c], shift[c], p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
    return EL_KERNEL_OK;
}

#else
typedef int el_depthwise_conv2d_s8_dsp_unavailable; /* no DSP: el_kernels_dsp.h forwards to the plain kernel */
#endif
