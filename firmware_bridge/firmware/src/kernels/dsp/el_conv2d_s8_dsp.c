/* el_conv2d_s8_dsp.c - CONV_2D, int8, with the DSP extension (SXTB16 / SXTAB16 / SMLAD):
 * the results of el_conv2d_s8 byte for byte (el_kernels_dsp.h says why the sums are exact). */
#include "el_kernels_dsp.h"

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)

#include "el_dsp_internal.h"

#include <stddef.h>

size_t el_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p)
{
    (void)p; /* the accumulators are registers */
    return 0u;
}

/* Two pixels (x, x + stride) by two filter rows (w, w + stride), `blocks` words of four
 * taps: acc[2 * pixel + filter] += x * w, the input taken as it is (the input offset is in the
 * accumulators already: conv_1x1). Each split input word serves both rows, each split weight
 * word both pixels: 8 SMLAD per 4 loads and 8 extends. Kept out of line so that its 14 live
 * values get the registers to themselves, and built at -O2: GCC 12's -Os allocation of this
 * loop spills three values per iteration (26 instructions per 16 MACs), -O2's one (24). */
static void __attribute__((noinline, optimize("O2"))) dot_2x2(const int8_t *x, const int8_t *w, int32_t stride, int32_t blocks,
                                              int32_t *acc)
{
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    for (; blocks > 0; --blocks) {
        const int32_t x1 = el_dsp_load4(x + stride), x0 = el_dsp_load4(x);
        const int32_t x0e = __sxtb16(x0), x0o = el_dsp_sxtb16_ror8(x0);
        const int32_t x1e = __sxtb16(x1), x1o = el_dsp_sxtb16_ror8(x1);
        int32_t v = el_dsp_load4(w), ve = __sxtb16(v);
        a00 = __smlad(x0e, ve, a00);
        a10 = __smlad(x1e, ve, a10);
        v = el_dsp_sxtb16_ror8(v);
        a00 = __smlad(x0o, v, a00);
        a10 = __smlad(x1o, v, a10);
        v = el_dsp_load4(w + stride);
        ve = __sxtb16(v);
        a01 = __smlad(x0e, ve, a01);
        a11 = __smlad(x1e, ve, a11);
        v = el_dsp_sxtb16_ror8(v);
        a01 = __smlad(x0o, v, a01);
        a11 = __smlad(x1o, v, a11);
        x += 4;
        w += 4;
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

/* The sum of n int8 weights. */
static int32_t weight_sum(const int8_t *w, int32_t n)
{
    const int32_t ones = 0x00010001;
    int32_t sum = 0, blocks;
    for (blocks = n >> 2; blocks > 0; --blocks) {
        const int32_t v = el_dsp_load4(w);
        sum = __smlad(__sxtb16(v), ones, sum);
        sum = __smlad(el_dsp_sxtb16_ror8(v), ones, sum);
        w += 4;
    }
    for (n &= 3; n > 0; --n) {
        sum += *w++;
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------
 * Columns: the taps of output pixels, already split and offset, as int16 lanes on the stack.
 *
 * A pixel's K taps (its 1x1 input pixel, or its window gathered, im2col) are taken four at a
 * time as SXTAB16(off2, v) = (x0 + off, x2 + off) and SXTAB16(off2, v ROR 8) = (x1 + off,
 * x3 + off): the lanes SMLAD pairs with SXTB16 of the weight word and of its ROR 8 (exact
 * int16 values in [-255, 255], el_kernels_dsp.h). Two pixels are interleaved, block by block:
 * words (p0 even, p0 odd, p1 even, p1 odd), so that the inner loop reads one pixel pair with
 * one pointer. A last block of fewer than four taps is padded with lanes of 0, which add
 * nothing; a pixel pair short of its second pixel repeats the first (its sums are dropped).
 * Splitting once per pixel, not once per pixel and output channel, leaves the inner loop 2
 * weight loads, 4 extends, 4 column words and 8 SMLAD per 16 MACs.
 */
#define COLUMN_WORDS 128 /* 512 B of stack: a pixel pair of up to 128 taps */
#define MAX_FILL 8       /* pixels per fill of a layer columns_2xn_rq does not take: their sums on the stack, 64 B */
#define IM2COL_TAPS 32   /* a window of up to 32 taps is gathered (the first layer's 27) */

/* Pixel src's n taps (n >= 1) into the even words of dst (dst[0], dst[1], dst[4], dst[5], ...). */
static void split_taps(int32_t *dst, const int8_t *src, int32_t n, int32_t off2)
{
    for (; n >= 4; n -= 4) {
        const int32_t v = el_dsp_load4(src);
        dst[0] = __sxtab16(off2, v);
        dst[1] = el_dsp_sxtab16_ror8(off2, v);
        src += 4;
        dst += 4;
    }
    if (n > 0) {
        /* the last 1..3 taps, the rest of the block lanes of 0: the bytes as a word whose
         * missing bytes are -off (an int8, off in [-127, 128]), which SXTAB16 takes to 0 */
        const int32_t fill = -(int32_t)(int16_t)(off2 & 0xffff);
        uint32_t v = 0;
        int32_t k;
        for (k = 3; k >= 0; --k) {
            v = (v << 8) | (uint8_t)(k < n ? src[k] : (int8_t)fill);
        }
        {
            int32_t word;
            memcpy(&word, &v, sizeof word);
            dst[0] = __sxtab16(off2, word);
            dst[1] = el_dsp_sxtab16_ror8(off2, word);
        }
    }
}

/* For each pixel pair of the columns (c, `pairs` of them, one after the other), two filter
 * rows (w, w + ws) over `blocks` words of four taps: out[4 j + 2 pixel + row] = the start
 * value of the row (b0, b1) + the products. In assembly, as GCC 12 keeps the row stride on
 * the stack and loads the column words one at a time (24 instructions per 16 MACs); here 16
 * per block: one weight word per row (post-indexed), two LDRD of column words, four extends
 * and eight SMLAD, the loop unrolled twice, and about 20 per pixel pair around it. SMLAD's
 * sums are exact (el_kernels_dsp.h); the Q flag it may set is read by nothing. */
typedef struct {
    int32_t ws4;    /* 0: the byte offset of the second row from the first, minus 4 */
    int32_t blocks; /* 4: words of four taps per row */
    int32_t pairs;  /* 8: pixel pairs, >= 1 */
    int32_t b0, b1; /* 12, 16: the rows' start values */
    int32_t skip;   /* 20: bytes of columns after each pair's blocks (a partial last block) */
    el_dsp_rqf rq[2]; /* 24, 40: columns_2xn_rq: the rows' short requantization, 16 B each */
    int32_t out_c;  /* 56: columns_2xn_rq: bytes from one output pixel to the next */
    int32_t add;    /* 60: columns_2xn_rq_add: the output offset (not folded into the shift) */
} columns_job;

typedef char columns_job_layout_check[offsetof(columns_job, rq) == 24 && sizeof(el_dsp_rqf) == 16 &&
                                              offsetof(el_dsp_rqf, multiplier) == 8 &&
                                              offsetof(columns_job, out_c) == 56 && offsetof(columns_job, add) == 60
                                          ? 1
                                          : -1];

#define COLUMNS_BLOCK                                                                                              \
    "ldr r12, [r1], #4\n\t"                                                                                        \
    "ldrd r8, r9, [r0], #16\n\t"                                                                                   \
    "ldrd r10, r11, [r0, #-8]\n\t"                                                                                 \
    "sxtb16 lr, r12\n\t"                                                                                           \
    "sxtb16 r12, r12, ror #8\n\t"                                                                                  \
    "smlad r4, r8, lr, r4\n\t"                                                                                     \
    "smlad r6, r10, lr, r6\n\t"                                                                                    \
    "smlad r4, r9, r12, r4\n\t"                                                                                    \
    "smlad r6, r11, r12, r6\n\t"                                                                                   \
    "ldr r12, [r1, r3]\n\t"                                                                                        \
    "sxtb16 lr, r12\n\t"                                                                                           \
    "sxtb16 r12, r12, ror #8\n\t"                                                                                  \
    "smlad r5, r8, lr, r5\n\t"                                                                                     \
    "smlad r7, r10, lr, r7\n\t"                                                                                    \
    "smlad r5, r9, r12, r5\n\t"                                                                                    \
    "smlad r7, r11, r12, r7\n\t"

/* r0 columns, r1 the first row, r2 the job, r3 out (AAPCS); the frame: [sp] the first row,
 * [sp, 4] the job, [sp, 8] out, [sp, 12] the pairs left. */
static void __attribute__((naked, noinline)) columns_2xn(const int32_t *c __attribute__((unused)),
                                                         const int8_t *w __attribute__((unused)),
                                                         const columns_job *job __attribute__((unused)),
                                                         int32_t *out __attribute__((unused)))
{
    __asm__("push {r4-r11, lr}\n\t"
            "sub sp, sp, #16\n\t"
            "str r1, [sp]\n\t"
            "str r2, [sp, #4]\n\t"
            "str r3, [sp, #8]\n\t"
            "ldr r12, [r2, #8]\n\t"
            "str r12, [sp, #12]\n"
            "0:\n\t"
            "ldr r2, [sp, #4]\n\t"
            "ldrd r4, r5, [r2, #12]\n\t"
            "mov r6, r4\n\t"
            "mov r7, r5\n\t"
            "ldr r3, [r2]\n\t"
            "ldr r2, [r2, #4]\n\t"
            "ldr r1, [sp]\n\t"
            "tst r2, #1\n\t"
            "beq 2f\n\t" COLUMNS_BLOCK "2:\n\t"
            "lsrs r2, r2, #1\n\t"
            "beq 3f\n"
            "1:\n\t" COLUMNS_BLOCK COLUMNS_BLOCK "subs r2, r2, #1\n\t"
            "bne 1b\n"
            "3:\n\t"
            "ldr r2, [sp, #4]\n\t"
            "ldr r2, [r2, #20]\n\t"
            "add r0, r0, r2\n\t"
            "ldr r2, [sp, #8]\n\t"
            "stmia r2!, {r4, r5, r6, r7}\n\t"
            "str r2, [sp, #8]\n\t"
            "ldr r2, [sp, #12]\n\t"
            "subs r2, r2, #1\n\t"
            "str r2, [sp, #12]\n\t"
            "bne 0b\n\t"
            "add sp, sp, #16\n\t"
            "pop {r4-r11, pc}\n\t");
}

/* columns_2xn with the requantization of a layer in the short mode with the clamp all of int8
 * (RQ_FAST | RQ_FULL, the output offset folded into the shift: columns_2xn_rq; or not, added
 * after the shift: columns_2xn_rq_add): each pair's four sums go through el_dsp_rqf_apply
 * (ADDS, ADC, SMLAL, ASR, the row's constants by two LDRD per row and pair) and one SSAT
 * straight to the output bytes out[0], out[1] (the first pixel's two channels) and out[out_c],
 * out[out_c + 1] (the second's); then out += 2 out_c. 7 or 8 instructions per output instead of
 * a store of the sums and a C loop of about 17. Every pair must have two real pixels and two
 * real rows (the caller takes an odd last pixel or row through columns_2xn). Frame as
 * columns_2xn's, and [sp, 16] the column pointer while r0 holds the output offset. */
static void __attribute__((naked, noinline)) columns_2xn_rq(const int32_t *c __attribute__((unused)),
                                                            const int8_t *w __attribute__((unused)),
                                                            const columns_job *job __attribute__((unused)),
                                                            int8_t *out __attribute__((unused)))
{
    __asm__(
            "push {r4-r11, lr}\n\t"
            "sub sp, sp, #20\n\t"
            "str r1, [sp]\n\t"
            "str r2, [sp, #4]\n\t"
            "str r3, [sp, #8]\n\t"
            "ldr r12, [r2, #8]\n\t"
            "str r12, [sp, #12]\n\t"
            "0:\n\t"
            "ldr r2, [sp, #4]\n\t"
            "ldrd r4, r5, [r2, #12]\n\t"
            "mov r6, r4\n\t"
            "mov r7, r5\n\t"
            "ldr r3, [r2]\n\t"
            "ldr r2, [r2, #4]\n\t"
            "ldr r1, [sp]\n\t"
            "tst r2, #1\n\t"
            "beq 2f\n\t"
            COLUMNS_BLOCK
            "2:\n\t"
            "lsrs r2, r2, #1\n\t"
            "beq 3f\n\t"
            "1:\n\t"
            COLUMNS_BLOCK
            COLUMNS_BLOCK
            "subs r2, r2, #1\n\t"
            "bne 1b\n\t"
            "3:\n\t"
            "ldr r2, [sp, #4]\n\t"
            "ldr r3, [r2, #20]\n\t"
            "add r0, r0, r3\n\t"
            "ldr r9, [sp, #8]\n\t"
            "ldrd r10, r11, [r2, #24]\n\t"
            "ldrd r12, lr, [r2, #32]\n\t"
            "asr r8, r4, #31\n\t"
            "adds r3, r10, r8, lsl #31\n\t"
            "adc r1, r11, r8\n\t"
            "smlal r3, r1, r4, r12\n\t"
            "asr r1, r1, lr\n\t"
            "ssat r1, #8, r1\n\t"
            "strb r1, [r9]\n\t"
            "ldr r4, [r2, #56]\n\t"
            "asr r8, r6, #31\n\t"
            "adds r3, r10, r8, lsl #31\n\t"
            "adc r1, r11, r8\n\t"
            "smlal r3, r1, r6, r12\n\t"
            "asr r1, r1, lr\n\t"
            "ssat r1, #8, r1\n\t"
            "strb r1, [r9, r4]\n\t"
            "ldrd r10, r11, [r2, #40]\n\t"
            "ldrd r12, lr, [r2, #48]\n\t"
            "add r6, r9, #1\n\t"
            "asr r8, r5, #31\n\t"
            "adds r3, r10, r8, lsl #31\n\t"
            "adc r1, r11, r8\n\t"
            "smlal r3, r1, r5, r12\n\t"
            "asr r1, r1, lr\n\t"
            "ssat r1, #8, r1\n\t"
            "strb r1, [r6]\n\t"
            "asr r8, r7, #31\n\t"
            "adds r3, r10, r8, lsl #31\n\t"
            "adc r1, r11, r8\n\t"
            "smlal r3, r1, r7, r12\n\t"
            "asr r1, r1, lr\n\t"
            "ssat r1, #8, r1\n\t"
            "strb r1, [r6, r4]\n\t"
            "add r9, r9, r4, lsl #1\n\t"
            "str r9, [sp, #8]\n\t"
            "ldr r2, [sp, #12]\n\t"
            "subs r2, r2, #1\n\t"
            "str r2, [sp, #12]\n\t"
            "bne 0b\n\t"
            "add sp, sp, #20\n\t"
            "pop {r4-r11, pc}\n\t");
}

static void __attribute__((naked, noinline)) columns_2xn_rq_add(const int32_t *c __attribute__((unused)),
                                                                const int8_t *w __attribute__((unused)),
                                                                const columns_job *job __attribute__((unused)),
                                                                int8_t *out __attribute__((unused)))
{
    __asm__(
            "push {r4-r11, lr}\n\t"
            "sub sp, sp, #20\n\t"
            "str r1, [sp]\n\t"
            "str r2, [sp, #4]\n\t"
            "str r3, [sp, #8]\n\t"
            "ldr r12, [r2, #8]\n\t"
            "str r12, [sp, #12]\n\t"
            "0:\n\t"
            "ldr r2, [sp, #4]\n\t"
            "ldrd r4, r5, [r2, #12]\n\t"
            "mov r6, r4\n\t"
            "mov r7, r5\n\t"
            "ldr r3, [r2]\n\t"
            "ldr r2, [r2, #4]\n\t"
            "ldr r1, [sp]\n\t"
            "tst r2, #1\n\t"
            "beq 2f\n\t"
            COLUMNS_BLOCK
            "2:\n\t"
            "lsrs r2, r2, #1\n\t"
            "beq 3f\n\t"
            "1:\n\t"
            COLUMNS_BLOCK
            COLUMNS_BLOCK
            "subs r2, r2, #1\n\t"
            "bne 1b\n\t"
            "3:\n\t"
            "ldr r2, [sp, #4]\n\t"
            "ldr r3, [r2, #20]\n\t"
            "add r0, r0, r3\n\t"
            "ldr r9, [sp, #8]\n\t"
            "str r0, [sp, #16]\n\t"
            "ldr r0, [r2, #60]\n\t"
            "ldrd r10, r11, [r2, #24]\n\t"
            "ldrd r12, lr, [r2, #32]\n\t"
            "asr r8, r4, #31\n\t"
            "adds r3, r10, r8, lsl #31\n\t"
            "adc r1, r11, r8\n\t"
            "smlal r3, r1, r4, r12\n\t"
            "asr r1, r1, lr\n\t"
            "add r1, r1, r0\n\t"
            "ssat r1, #8, r1\n\t"
            "strb r1, [r9]\n\t"
            "ldr r4, [r2, #56]\n\t"
            "asr r8, r6, #31\n\t"
            "adds r3, r10, r8, lsl #31\n\t"
            "adc r1, r11, r8\n\t"
            "smlal r3, r1, r6, r12\n\t"
            "asr r1, r1, lr\n\t"
            "add r1, r1, r0\n\t"
            "ssat r1, #8, r1\n\t"
            "strb r1, [r9, r4]\n\t"
            "ldrd r10, r11, [r2, #40]\n\t"
            "ldrd r12, lr, [r2, #48]\n\t"
            "add r6, r9, #1\n\t"
            "asr r8, r5, #31\n\t"
            "adds r3, r10, r8, lsl #31\n\t"
            "adc r1, r11, r8\n\t"
            "smlal r3, r1, r5, r12\n\t"
            "asr r1, r1, lr\n\t"
            "add r1, r1, r0\n\t"
            "ssat r1, #8, r1\n\t"
            "strb r1, [r6]\n\t"
            "asr r8, r7, #31\n\t"
            "adds r3, r10, r8, lsl #31\n\t"
            "adc r1, r11, r8\n\t"
            "smlal r3, r1, r7, r12\n\t"
            "asr r1, r1, lr\n\t"
            "add r1, r1, r0\n\t"
            "ssat r1, #8, r1\n\t"
            "strb r1, [r6, r4]\n\t"
            "ldr r0, [sp, #16]\n\t"
            "add r9, r9, r4, lsl #1\n\t"
            "str r9, [sp, #8]\n\t"
            "ldr r2, [sp, #12]\n\t"
            "subs r2, r2, #1\n\t"
            "str r2, [sp, #12]\n\t"
            "bne 0b\n\t"
            "add sp, sp, #20\n\t"
            "pop {r4-r11, pc}\n\t");
}

/* How the columns of output pixel q are gathered: a 1x1 layer's input pixel q, or im2col. */
typedef struct {
    const el_conv_params *p;
    const int8_t *input;
    int32_t taps;       /* K */
    int im2col;         /* 0: 1x1, the input pixel q is the K taps */
} column_source;

/* Output pixel q's window (NHWC input, OHWI filter order: ky, kx, channel) as K int8 taps,
 * the taps outside the image -input_offset (the zero point: x + off = 0, as the plain
 * kernel's skipped taps add nothing). */
static const int8_t *gather(const column_source *s, int32_t q, int8_t *row)
{
    const el_conv_params *p = s->p;
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, in_c = p->input_dims.c;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int8_t zero = (int8_t)(-p->input_offset);
    int32_t n, oy, ox, ky, kx, k;
    int8_t *at = row;
    if (!s->im2col) {
        return s->input + q * s->taps;
    }
    ox = q % out_w;
    oy = (q / out_w) % out_h;
    n = q / (out_w * out_h);
    {
        /* dilation 1 and the window inside the image (all windows but the border's): each
         * window row is kernel_w * in_c contiguous input bytes, copied a word at a time */
        const int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
        if (p->dilation_h == 1 && p->dilation_w == 1 && y0 >= 0 && x0 >= 0 && y0 <= in_h - kernel_h &&
            x0 <= in_w - kernel_w) {
            const int32_t span = kernel_w * in_c, rows = in_w * in_c;
            const int8_t *src = s->input + ((n * in_h + y0) * in_w + x0) * in_c;
            for (ky = 0; ky < kernel_h; ++ky, src += rows) {
                for (k = 0; k + 4 <= span; k += 4, at += 4) {
                    memcpy(at, src + k, 4);
                }
                for (; k < span; ++k) {
                    *at++ = src[k];
                }
            }
            return row;
        }
    }
    for (ky = 0; ky < kernel_h; ++ky) {
        const int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dilation_h;
        for (kx = 0; kx < kernel_w; ++kx) {
            const int32_t ix = ox * p->stride_w - p->pad_w + kx * p->dilation_w;
            if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) {
                for (k = 0; k < in_c; ++k) {
                    *at++ = zero;
                }
            } else {
                const int8_t *src = s->input + ((n * in_h + iy) * in_w + ix) * in_c;
                for (k = 0; k < in_c; ++k) {
                    *at++ = src[k];
                }
            }
        }
    }
    return row;
}

/* The last 1..3 taps of a pixel pair (x: its last block of columns, words (p0 even, p0 odd,
 * p1 even, p1 odd): tap k is lane k >> 1 of word k & 1) with two rows (w, w + ws: their last
 * taps), a[2 pixel + row] += the products. */
static void last_taps(const char *x, const int8_t *w, int32_t ws, int32_t rest, int32_t *a)
{
    int32_t k;
    for (k = 0; k < rest; ++k) {
        const int32_t at = 2 * (2 * (k & 1) + (k >> 1)); /* bytes */
        const int32_t w0 = w[k], w1 = w[k + ws];
        int16_t x0, x1;
        memcpy(&x0, x + at, sizeof x0);
        memcpy(&x1, x + at + 8, sizeof x1);
        a[0] += x0 * w0;
        a[1] += x0 * w1;
        a[2] += x1 * w0;
        a[3] += x1 * w1;
    }
}

/* Every output pixel (`pixels` of them, out_c channels each) as the dot products of its
 * columns with the filter rows (K taps each, OHWI): pixel pairs split into the column buffer
 * as many as fit, then for each pair of filter rows (an odd last one paired with itself) the
 * channel constants once, and every pixel pair of the buffer. */
static inline __attribute__((always_inline)) void columns_conv(const column_source *s, int32_t pixels,
                                                               const int8_t *filter, const int32_t *bias,
                                                               const int32_t *multiplier, const int32_t *shift,
                                                               int8_t *output, int mode)
{
    const el_conv_params *p = s->p;
    const int32_t out_c = p->output_dims.c, taps = s->taps;
    const int32_t off2 = el_dsp_offset2(p->input_offset);
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t blocks = (taps + 3) >> 2, pair_words = 4 * blocks;
    const int32_t full = taps >> 2, rest = taps & 3; /* words the inner loop takes, taps after them */
    const int32_t fit = 2 * (COLUMN_WORDS / pair_words); /* even, >= 2 (taps <= COLUMN_WORDS) */
    /* fused: columns_2xn_rq writes the outputs, no sums on the stack bound the fill */
    const int fused = (mode & (RQ_FAST | RQ_FULL)) == (RQ_FAST | RQ_FULL);
    const int32_t per_fill = fused || fit < MAX_FILL ? fit : MAX_FILL;
    int32_t columns[COLUMN_WORDS];
    int8_t row[IM2COL_TAPS];
    int32_t sums[2 * MAX_FILL];
    int32_t q, j, co, k;
    for (q = 0; q < pixels; q += per_fill) {
        const int32_t count = pixels - q < per_fill ? pixels - q : per_fill;
        for (j = 0; j < count; ++j) {
            int32_t *const dst = columns + (j >> 1) * pair_words + 2 * (j & 1);
            split_taps(dst, gather(s, q + j, row), taps, off2);
            if (j + 1 == count && (j & 1) == 0) { /* an odd count: the pair's second pixel repeats */
                for (k = 0; k < pair_words; k += 4) {
                    dst[k + 2] = dst[k];
                    dst[k + 3] = dst[k + 1];
                }
            }
        }
        for (co = 0; co < out_c; co += 2) {
            const int32_t co1 = co + 1 < out_c ? co + 1 : co;
            const int32_t ws = (co1 - co) * taps;
            const int8_t *const w = filter + co * taps;
            channel_rq q0, q1;
            columns_job job;
            int8_t *out = output + q * out_c + co;
            job.ws4 = ws - 4;
            job.blocks = full;
            job.pairs = (count + 1) >> 1;
            job.b0 = bias != NULL ? bias[co] : 0;
            job.b1 = bias != NULL ? bias[co1] : 0;
            job.skip = 4 * (pair_words - 4 * full);
            channel_prepare(&q0, mode, multiplier[co], shift[co], out_off);
            channel_prepare(&q1, mode, multiplier[co1], shift[co1], out_off);
            if (fused) {
                /* With a partial last block the inner loop may take it whole: its column lanes
                 * past the taps are 0 (split_taps), so the weight bytes read past a row's end
                 * (the next row's first 1..3) add nothing; but past the last row's end lies no
                 * weight of this layer, so a pair holding the last row takes the C loop below. */
                const int padded = rest > 0 && co1 + 1 < out_c;
                const int two_rows = co1 != co;
                int32_t a[4];
                if (padded) {
                    job.blocks = blocks;
                    job.skip = 0;
                }
                if (two_rows && (rest == 0 || padded) && count > 1) {
                    job.rq[0] = q0.fast;
                    job.rq[1] = q1.fast;
                    job.out_c = out_c;
                    job.add = out_off;
                    job.pairs = count >> 1;
                    if (mode & RQ_FOLD) {
                        columns_2xn_rq(columns, w, &job, out);
                    } else {
                        columns_2xn_rq_add(columns, w, &job, out);
                    }
                    out += 2 * job.pairs * out_c;
                    j = 2 * job.pairs;
                } else {
                    j = 0;
                }
                /* what is left one pair at a time: an odd last pixel, or every pixel of an odd
                 * last row (paired with itself: its second sums dropped) */
                for (job.pairs = 1; j < count; j += 2) {
                    columns_2xn(columns + (j >> 1) * pair_words, w, &job, a);
                    if (rest > 0 && !padded) {
                        last_taps((const char *)(columns + (j >> 1) * pair_words + 4 * full), w + 4 * full, ws,
                                  rest, a);
                    }
                    out[0] = channel_requantize(a[0], &q0, mode, out_off, act_min, act_max);
                    if (co1 != co) {
                        out[1] = channel_requantize(a[1], &q1, mode, out_off, act_min, act_max);
                    }
                    out += out_c;
                    if (j + 1 < count) {
                        out[0] = channel_requantize(a[2], &q0, mode, out_off, act_min, act_max);
                        if (co1 != co) {
                            out[1] = channel_requantize(a[3], &q1, mode, out_off, act_min, act_max);
                        }
                        out += out_c;
                    }
                }
                continue;
            }
            columns_2xn(columns, w, &job, sums);
            if (rest > 0) { /* the last 1..3 taps: lane k >> 1 of word k & 1 of the last block */
                for (j = 0; j < count; j += 2) {
                    last_taps((const char *)(columns + (j >> 1) * pair_words + 4 * full), w + 4 * full, ws, rest,
                              sums + 2 * j);
                }
            }
            if (co1 != co) {
                for (j = 0; j < count; ++j, out += out_c) {
                    out[0] = channel_requantize(sums[2 * j], &q0, mode, out_off, act_min, act_max);
                    out[1] = channel_requantize(sums[2 * j + 1], &q1, mode, out_off, act_min, act_max);
                }
            } else {
                for (j = 0; j < count; ++j, out += out_c) {
                    out[0] = channel_requantize(sums[2 * j], &q0, mode, out_off, act_min, act_max);
                }
            }
        }
    }
}

static void columns_conv_any(const column_source *s, int32_t pixels, const int8_t *filter, const int32_t *bias,
                             const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    switch (el_dsp_rq_mode(s->p->output_dims.c, s->p->output_offset, s->p->act_min, s->p->act_max, multiplier, shift)) {
    case RQ_FAST | RQ_FOLD | RQ_FULL:
        columns_conv(s, pixels, filter, bias, multiplier, shift, output, RQ_FAST | RQ_FOLD | RQ_FULL);
        break;
    case RQ_FAST | RQ_FULL: columns_conv(s, pixels, filter, bias, multiplier, shift, output, RQ_FAST | RQ_FULL); break;
    case RQ_FAST | RQ_FOLD: columns_conv(s, pixels, filter, bias, multiplier, shift, output, RQ_FAST | RQ_FOLD); break;
    case RQ_FAST: columns_conv(s, pixels, filter, bias, multiplier, shift, output, RQ_FAST); break;
    default: columns_conv(s, pixels, filter, bias, multiplier, shift, output, RQ_SLOW); break;
    }
}

/* A 1x1 filter, stride 1, no padding, the output the input's size, with more input channels
 * than a pixel pair of columns holds (COLUMN_WORDS): output pixel q is the Cout dot products
 * of input pixel q (N*H*W rows of Cin) with the Cout filter rows, the input split in the loop.
 *
 * Two filters by two pixels at a time (dot_2x2). The input offset is taken out of the
 * products: sum (x + off) * w = sum x * w + off * sum w, the second term folded into the
 * filter's starting value once per layer. Exact integer arithmetic, and no partial sum can
 * wrap: |bias + off * sum w| <= |bias| + 128 * 128 * taps, and each product x * w added after
 * it is at most 128 * 128, so every partial sum is within |bias| + 32768 * taps, which
 * hoisted_ok() checks against INT32_MAX (the record check proves only |bias| + 32640 * taps;
 * a layer between the two takes conv_1x1_offset, the same loops with the offset in each
 * product). The filter pair is the outer loop, so that its requantization constants and
 * weight sums are worked out once per layer. An odd last pixel takes el_dsp_dot2, an odd last
 * filter el_dsp_dot1, both with the offset in the products and the record's bias. */
static int hoisted_ok(int32_t taps, const int32_t *bias, int32_t channels)
{
    int64_t worst = 0;
    int32_t c;
    if (bias != NULL) {
        for (c = 0; c < channels; ++c) {
            const int64_t magnitude = bias[c] < 0 ? -(int64_t)bias[c] : (int64_t)bias[c];
            worst = magnitude > worst ? magnitude : worst;
        }
    }
    return (int64_t)taps * (2 * 128 * 128) + worst <= INT32_MAX;
}

static void __attribute__((noinline)) conv_1x1(const el_conv_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                     const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    const int32_t in_c = p->input_dims.c, out_c = p->output_dims.c;
    const int32_t pixels = p->input_dims.n * p->input_dims.h * p->input_dims.w; /* <= the input's volume */
    const int32_t off = p->input_offset, off2 = el_dsp_offset2(off);
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t blocks = in_c >> 2;
    const int hoist = hoisted_ok(in_c, bias, out_c);
    int32_t q, co;
    for (co = 0; co + 2 <= out_c; co += 2) {
        const int8_t *const f0 = filter + co * in_c;
        const int32_t b0 = bias != NULL ? bias[co] : 0, b1 = bias != NULL ? bias[co + 1] : 0;
        /* the starting values of dot_2x2's sums: the bias plus the input offset's share */
        const int32_t h0 = hoist ? b0 + off * weight_sum(f0, in_c) : 0;
        const int32_t h1 = hoist ? b1 + off * weight_sum(f0 + in_c, in_c) : 0;
        el_dsp_rq rq0, rq1;
        int8_t *out = output + co;
        el_dsp_rq_prepare(&rq0, multiplier[co], shift[co]);
        el_dsp_rq_prepare(&rq1, multiplier[co + 1], shift[co + 1]);
        for (q = 0; q + 2 <= pixels; q += 2) {
            const int8_t *x = input + q * in_c;
            int32_t acc[4];
            if (hoist) {
                int32_t k;
                const int8_t *w = f0 + 4 * blocks;
                acc[0] = acc[2] = h0;
                acc[1] = acc[3] = h1;
                dot_2x2(x, f0, in_c, blocks, acc);
                for (k = 4 * blocks; k < in_c; ++k, ++w) { /* the last 1..3 taps */
                    acc[0] += (int32_t)x[k] * w[0];
                    acc[1] += (int32_t)x[k] * w[in_c];
                    acc[2] += (int32_t)x[k + in_c] * w[0];
                    acc[3] += (int32_t)x[k + in_c] * w[in_c];
                }
            } else {
                acc[0] = acc[2] = b0;
                acc[1] = acc[3] = b1;
                el_dsp_dot2(x, f0, in_c, in_c, off, off2, &acc[0], &acc[1]);
                el_dsp_dot2(x + in_c, f0, in_c, in_c, off, off2, &acc[2], &acc[3]);
            }
            out[0] = el_dsp_requantize(acc[0], &rq0, out_off, act_min, act_max);
            out[1] = el_dsp_requantize(acc[1], &rq1, out_off, act_min, act_max);
            out[out_c] = el_dsp_requantize(acc[2], &rq0, out_off, act_min, act_max);
            out[out_c + 1] = el_dsp_requantize(acc[3], &rq1, out_off, act_min, act_max);
            out += 2 * out_c;
        }
        if (q < pixels) { /* an odd pixel count: the last pixel alone */
            int32_t a0 = b0, a1 = b1;
            el_dsp_dot2(input + q * in_c, f0, in_c, in_c, off, off2, &a0, &a1);
            out[0] = el_dsp_requantize(a0, &rq0, out_off, act_min, act_max);
            out[1] = el_dsp_requantize(a1, &rq1, out_off, act_min, act_max);
        }
    }
    if (co < out_c) { /* an odd channel count: the last filter alone */
        el_dsp_rq rq;
        el_dsp_rq_prepare(&rq, multiplier[co], shift[co]);
        for (q = 0; q < pixels; ++q) {
            const int32_t acc =
                el_dsp_dot1(input + q * in_c, filter + co * in_c, in_c, off, off2, bias != NULL ? bias[co] : 0);
            output[q * out_c + co] = el_dsp_requantize(acc, &rq, out_off, act_min, act_max);
        }
    }
}

/* Any window: two output channels at a time (the outer loop, so that their requantization
 * constants are worked out once per layer), then every output pixel. With dilation_w 1 the
 * taps of one window row that lie inside the image are contiguous in both the input (NHWC)
 * and the filter (OHWI), kx_lo..kx_hi times Cin bytes, so each row is one dot product;
 * otherwise one per tap. Taps outside the image are skipped, as the plain kernel skips them. */
static void __attribute__((noinline)) conv_general(const el_conv_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                         const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, in_c = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w, out_c = p->output_dims.c;
    const int32_t filter_size = kernel_h * kernel_w * in_c;
    const int32_t off = p->input_offset, off2 = el_dsp_offset2(off);
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    int32_t n, oy, ox, co, ky, kx;
    for (co = 0; co < out_c; co += 2) {
        const int8_t *const f0 = filter + co * filter_size;
        /* an odd last channel is paired with itself; its second sum is dropped */
        const int32_t co1 = co + 1 < out_c ? co + 1 : co;
        const int32_t f1 = co + 1 < out_c ? filter_size : 0;
        const int32_t b0 = bias != NULL ? bias[co] : 0, b1 = bias != NULL ? bias[co1] : 0;
        el_dsp_rq rq0, rq1;
        el_dsp_rq_prepare(&rq0, multiplier[co], shift[co]);
        el_dsp_rq_prepare(&rq1, multiplier[co1], shift[co1]);
        for (n = 0; n < p->input_dims.n; ++n) {
            for (oy = 0; oy < out_h; ++oy) {
                const int32_t y0 = oy * p->stride_h - p->pad_h;
                for (ox = 0; ox < out_w; ++ox) {
                    const int32_t x0 = ox * p->stride_w - p->pad_w;
                    int8_t *out = output + ((n * out_h + oy) * out_w + ox) * out_c + co;
                    /* dilation_w 1: the window's columns inside the image, [kx_lo, kx_hi) (int64: a
                     * large pad makes in_w - x0 exceed INT32_MAX). */
                    const int64_t lo = x0 < 0 ? -(int64_t)x0 : 0;
                    const int64_t hi = (int64_t)in_w - x0 < kernel_w ? (int64_t)in_w - x0 : kernel_w;
                    const int32_t kx_lo = (int32_t)(lo < kernel_w ? lo : kernel_w);
                    const int32_t span = hi > kx_lo ? (int32_t)(hi - kx_lo) * in_c : 0;
                    int32_t a0 = b0, a1 = b1;
                    for (ky = 0; ky < kernel_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        const int8_t *row;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        row = input + (n * in_h + iy) * in_w * in_c;
                        if (p->dilation_w == 1) {
                            if (span > 0) {
                                const int32_t w_at = (ky * kernel_w + kx_lo) * in_c;
                                el_dsp_dot2(row + (x0 + kx_lo) * in_c, f0 + w_at, f1, span, off, off2, &a0, &a1);
                            }
                            continue;
                        }
                        for (kx = 0; kx < kernel_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            const int32_t w_at = (ky * kernel_w + kx) * in_c;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            el_dsp_dot2(row + ix * in_c, f0 + w_at, f1, in_c, off, off2, &a0, &a1);
                        }
                    }
                    out[0] = el_dsp_requantize(a0, &rq0, out_off, act_min, act_max);
                    if (f1 != 0) {
                        out[1] = el_dsp_requantize(a1, &rq1, out_off, act_min, act_max);
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * Quads: four output channels of one pixel at a time, the weights split once per layer.
 *
 * A layer whose every channel has the short requantization (el_dsp_internal.h: multiplier >=
 * 0, a right shift), whose clamp is all of int8 and whose output offset is -128 (a ReLU's
 * zero point: see points 2-4 below), with Cout a multiple of 4 (quad_layer_ok), takes this path
 * when its taps are a 1x1 input pixel (Cin a multiple of 4, at most 4 QUAD_BLOCKS) or a
 * gathered window of at most IM2COL_TAPS. The filter rows of a group of four channels are
 * split once (SXTB16, and with ROR 8) into int16 lanes, interleaved block by block: per four
 * taps the words (c0 even, c0 odd, c1 even, c1 odd, c2 even, ..., c3 odd), so that two LDM
 * fetch the four channels' weights for one input word. A tile of such quads on the stack (at
 * most QUAD_STACK_WORDS), each with its biases before the weights and its requantization
 * constants after them:
 *     [b0, b1, b2, b3] [8 words per block of 4 taps] [m0, e0 - 1, P0 low, P0 high, m1, ...]
 * Every input pixel then runs through every quad of the tile (quad_pixels, assembly): per
 * block of 4 taps one input word (LDR), its two SXTAB16 (the input offset added: (x0 + off,
 * x2 + off), (x1 + off, x3 + off), exact in [-255, 255]), two LDM of weights and eight SMLAD,
 * 13 instructions per 16 MACs. The blocks are unrolled QUAD_BLOCKS times and entered at the
 * block that leaves exactly `blocks` to go (a computed jump), so the dot product has no loop.
 * A partial last block of a window is padded with weight lanes of 0 (and zero-point input
 * bytes): it adds nothing. The sums are the plain kernel's (el_kernels_dsp.h: exact products,
 * every partial sum within the record check's accumulator bound).
 *
 * Why the requantization equals el_requantize_s8 here (el_dsp_internal.h, el_dsp_rqf):
 * 1. Per channel P = 2^30 + round 2^31 with round = 2^(e-1), the output offset not folded
 *    (el_dsp_rqf_prepare, fold 0; |round| <= 2^30 for every e in [1, 31]). SMLAL adds acc * m
 *    to P exactly (|S| < 2^63, point 4), and the high word >> (e - 1) is floor((h + round) /
 *    2^e), h the doubling high multiply: w = floor((h + 2^(e-1)) / 2^e), |w| <= 2^30.
 * 2. The reference's output is clamp(floor((h + 2^(e-1) - [h < 0]) / 2^e) - 128) to [-128,
 *    127] (output offset -128, the clamp all of int8). When h >= 0 its floor is w.
 * 3. When h < 0 both floors are <= 0 (h + 2^(e-1) <= 2^(e-1) - 1 < 2^e), so the reference's
 *    output is -128, and so is clamp(w - 128). So the output is clamp(w - 128) for every sum,
 *    without the correction for h < 0 that el_dsp_rqf_apply makes (three instructions).
 * 4. clamp(w - 128, -128, 127) = USAT(w, 8) - 128, and as a byte (u - 128) mod 256 = u XOR
 *    0x80 for u in [0, 255]: the four channels' USAT results are packed into one word (ORR
 *    with LSL 8, 16, 24) and flipped by one EOR with 0x80808080, the four output bytes
 *    (little-endian: channel co + k at byte k) stored by one STR.
 * Per output LDM of the channel's four words, SMLAL, ASR, USAT; per quad 3 ORR, EOR, STR.
 */
/* Taps are capped at 128 so that the tile stays within 1,104 B of stack: the training build
 * runs with an 8 KiB stack reserve and tests/test_firmware_train_qemu.py keeps its high water
 * under a quarter of it. A wider 1x1 layer (VWW's 256 -> 256) takes conv_1x1. */
#define QUAD_BLOCKS 32        /* blocks of 4 taps unrolled: taps <= 128 */
#define QUAD_STACK_WORDS 276  /* 1,104 B of stack: a 1x1 layer's tile (one quad of 128 taps) */
#define QUAD_BLOCK_BYTES 52   /* 13 32-bit instructions (the assembler checks it) */
#define QUAD_CONST_WORDS 16   /* 4 words per channel */

typedef struct {
    const int8_t *x;      /* 0: the first pixel's taps (4 blocks bytes, read a word at a time) */
    int32_t xstep;        /* 4: bytes from one pixel's taps to the next */
    int32_t count;        /* 8: pixels, >= 1 */
    const int32_t *wts;   /* 12: the tile's first quad */
    const int32_t *wend;  /* 16: the tile's end */
    int8_t *out;          /* 20: the first pixel's output for the tile's first channel */
    int32_t out_c;        /* 24: bytes from one output pixel to the next */
    int32_t off2;         /* 28: the input offset in both lanes */
    int32_t blocks;       /* 32: blocks of 4 taps per channel, in [1, QUAD_BLOCKS] */
} quad_job;

typedef char quad_job_layout_check[offsetof(quad_job, wts) == 12 && offsetof(quad_job, out) == 20 &&
                                           offsetof(quad_job, blocks) == 32
                                       ? 1
                                       : -1];

#define EL_STR2(x) #x
#define EL_STR(x) EL_STR2(x)

/* A channel's value before the output offset, clamped to [0, 255] (USAT) into the sum's own
 * register: the channel's four constants by one LDM (m, e - 1, P low, P high), SMLAL, ASR. */
#define QUAD_OUTPUT(acc)                                                                                           \
    "ldm lr!, {r0, r1, r8, r9}\n\t"                                                                                \
    "smlal r8, r9, " acc ", r0\n\t"                                                                                \
    "asr r9, r9, r1\n\t"                                                                                           \
    "usat " acc ", #8, r9\n\t"

/* r0 the job. Registers in the dot product: r2 the quad's output, r3 off2, r4-r7 the four
 * channels' sums, r12 the input, lr the tile, r0 / r1 the split input word, r8-r11 weights;
 * after it QUAD_OUTPUT leaves each channel's byte (before the XOR) in its sum's register.
 * Frame: [sp] the entry address (Thumb bit set), [sp, 4] the pixel's taps, [sp, 8] xstep,
 * [sp, 12] pixels left, [sp, 16] the tile, [sp, 20] its end, [sp, 24] the pixel's output,
 * [sp, 32] out_c. */
static void __attribute__((naked, noinline)) quad_pixels(const quad_job *job __attribute__((unused)))
{
    __asm__("push {r4-r11, lr}\n\t"
            "sub sp, sp, #36\n\t"
            "ldr r1, [r0, #32]\n\t"
            "rsb r1, r1, #" EL_STR(QUAD_BLOCKS) "\n\t"
            "movs r2, #" EL_STR(QUAD_BLOCK_BYTES) "\n\t"
            "mul r1, r1, r2\n\t"
            "adr r2, 9f\n\t"
            "add r1, r1, r2\n\t"
            "orr r1, r1, #1\n\t"
            "str r1, [sp, #0]\n\t"
            "ldr r1, [r0, #0]\n\t"
            "str r1, [sp, #4]\n\t"
            "ldr r1, [r0, #4]\n\t"
            "str r1, [sp, #8]\n\t"
            "ldr r1, [r0, #8]\n\t"
            "str r1, [sp, #12]\n\t"
            "ldr lr, [r0, #12]\n\t"
            "str lr, [sp, #16]\n\t"
            "ldr r1, [r0, #16]\n\t"
            "str r1, [sp, #20]\n\t"
            "ldr r1, [r0, #20]\n\t"
            "str r1, [sp, #24]\n\t"
            "mov r2, r1\n\t"
            "ldr r1, [r0, #24]\n\t"
            "str r1, [sp, #32]\n\t"
            "ldr r3, [r0, #28]\n"
            "1:\n\t"
            "ldm lr!, {r4-r7}\n\t"
            "ldr r12, [sp, #4]\n\t"
            "ldr pc, [sp, #0]\n\t"
            ".balign 4\n"
            "9:\n\t"
            ".rept " EL_STR(QUAD_BLOCKS) "\n\t"
            "ldr.w r1, [r12], #4\n\t"
            "sxtab16 r0, r3, r1\n\t"
            "sxtab16 r1, r3, r1, ror #8\n\t"
            "ldm.w lr!, {r8-r11}\n\t"
            "smlad r4, r0, r8, r4\n\t"
            "smlad r4, r1, r9, r4\n\t"
            "smlad r5, r0, r10, r5\n\t"
            "smlad r5, r1, r11, r5\n\t"
            "ldm.w lr!, {r8-r11}\n\t"
            "smlad r6, r0, r8, r6\n\t"
            "smlad r6, r1, r9, r6\n\t"
            "smlad r7, r0, r10, r7\n\t"
            "smlad r7, r1, r11, r7\n\t"
            ".endr\n"
            "7:\n\t"
            ".if (7b - 9b) - " EL_STR(QUAD_BLOCKS) " * " EL_STR(QUAD_BLOCK_BYTES) "\n\t"
            ".error \"quad_pixels: the unrolled blocks are not QUAD_BLOCK_BYTES each\"\n\t"
            ".endif\n\t"
            QUAD_OUTPUT("r4")
            QUAD_OUTPUT("r5")
            QUAD_OUTPUT("r6")
            QUAD_OUTPUT("r7")
            "orr r4, r4, r5, lsl #8\n\t"
            "orr r4, r4, r6, lsl #16\n\t"
            "orr r4, r4, r7, lsl #24\n\t"
            "eor r4, r4, #0x80808080\n\t"
            "str r4, [r2], #4\n\t" /* unaligned is allowed (el_dsp_load4) */
            "ldr r0, [sp, #20]\n\t"
            "cmp lr, r0\n\t"
            "bne 1b\n\t"
            "ldr r0, [sp, #12]\n\t"
            "subs r0, r0, #1\n\t"
            "beq 8f\n\t"
            "str r0, [sp, #12]\n\t"
            "ldrd r0, r1, [sp, #4]\n\t"
            "add r0, r0, r1\n\t"
            "str r0, [sp, #4]\n\t"
            "ldr r1, [sp, #24]\n\t"
            "ldr r0, [sp, #32]\n\t"
            "add r2, r1, r0\n\t"
            "str r2, [sp, #24]\n\t"
            "ldr lr, [sp, #16]\n\t"
            "b 1b\n"
            "8:\n\t"
            "add sp, sp, #36\n\t"
            "pop {r4-r11, pc}\n\t");
}

/* 1 when the layer meets quad_pixels' conditions (above): the clamp all of int8, the output
 * offset -128, Cout a multiple of 4, and every channel in the short requantization (without
 * the fold, which always fits: each channel folds where it can). */
static int quad_layer_ok(const el_conv_params *p, int32_t taps, const int32_t *multiplier, const int32_t *shift)
{
    return p->act_min == INT8_MIN && p->act_max == INT8_MAX && p->output_offset == -128 &&
           (p->output_dims.c & 3) == 0 && taps <= 4 * QUAD_BLOCKS &&
           el_dsp_rqf_layer_ok(multiplier, shift, p->output_dims.c, p->output_offset, 0);
}

/* The whole blocks of four rows (row0, row0 + taps, + 2 taps, + 3 taps) split into the quad
 * layout: per block LDR of each row's word, SXTB16 and SXTB16 ROR 8 of each, two STM of the
 * eight words (c0 even, c0 odd, c1 even, c1 odd; c2 ..., c3 ...). r0 dst, r1 row0, r2 taps,
 * r3 blocks (>= 1). About 18 instructions per 16 weights, once per layer. */
static void __attribute__((naked, noinline)) quad_split_rows(int32_t *dst __attribute__((unused)),
                                                             const int8_t *row0 __attribute__((unused)),
                                                             int32_t taps __attribute__((unused)),
                                                             int32_t blocks __attribute__((unused)))
{
    __asm__("push {r4-r11}\n\t"
            "add r12, r1, r2, lsl #1\n"
            "1:\n\t"
            "ldr r5, [r1, r2]\n\t"
            "ldr r4, [r1], #4\n\t"
            "sxtb16 r8, r4\n\t"
            "sxtb16 r9, r4, ror #8\n\t"
            "sxtb16 r10, r5\n\t"
            "sxtb16 r11, r5, ror #8\n\t"
            "stm r0!, {r8-r11}\n\t"
            "ldr r5, [r12, r2]\n\t"
            "ldr r4, [r12], #4\n\t"
            "sxtb16 r8, r4\n\t"
            "sxtb16 r9, r4, ror #8\n\t"
            "sxtb16 r10, r5\n\t"
            "sxtb16 r11, r5, ror #8\n\t"
            "stm r0!, {r8-r11}\n\t"
            "subs r3, r3, #1\n\t"
            "bne 1b\n\t"
            "pop {r4-r11}\n\t"
            "bx lr\n\t");
}

/* The quad of channels co..co+3 into t (4 + 8 blocks + QUAD_CONST_WORDS words, the layout
 * above): the whole blocks by quad_split_rows, a partial last block a byte at a time with
 * lanes of 0 past the row's end (the bytes after the last row are not the layer's). */
static void quad_prepare(int32_t *t, const int8_t *filter, int32_t taps, int32_t blocks, int32_t co,
                         const int32_t *bias, const int32_t *multiplier, const int32_t *shift)
{
    const int32_t full = taps >> 2;
    int32_t j;
    if (full > 0) {
        quad_split_rows(t + 4, filter + co * taps, taps, full);
    }
    for (j = 0; j < 4; ++j) {
        int32_t *const q = t + 4 + 8 * blocks + 4 * j;
        el_dsp_rqf rq;
        t[j] = bias != NULL ? bias[co + j] : 0;
        if (full < blocks) {
            const int8_t *const row = filter + (co + j) * taps + 4 * full;
            uint32_t v = 0;
            int32_t k, word;
            for (k = 3; k >= 0; --k) {
                v = (v << 8) | (4 * full + k < taps ? (uint8_t)row[k] : 0u);
            }
            memcpy(&word, &v, sizeof word);
            t[4 + 8 * full + 2 * j] = __sxtb16(word);
            t[4 + 8 * full + 2 * j + 1] = el_dsp_sxtb16_ror8(word);
        }
        el_dsp_rqf_prepare(&rq, multiplier[co + j], shift[co + j], 0, 0);
        q[0] = rq.multiplier;
        q[1] = rq.shift;
        memcpy(&q[2], &rq.low, sizeof rq.low);
        q[3] = rq.high;
    }
}

/* `rows` rows of `span` bytes, `stride` bytes apart in src, one after the other into dst: the
 * words of a row, then its last 1..3 bytes (few live values: no spills). */
static void __attribute__((noinline, optimize("O2"))) copy_rows(int8_t *dst, const int8_t *src, int32_t rows,
                                                                int32_t span, int32_t stride)
{
    const int32_t words = span >> 2, rest = span & 3;
    for (; rows > 0; --rows, src += stride) {
        const int8_t *at = src;
        int32_t k;
        for (k = words; k > 0; --k, at += 4, dst += 4) {
            memcpy(dst, at, 4);
        }
        for (k = rest; k > 0; --k) {
            *dst++ = *at++;
        }
    }
}

/* Windows q0..q0+n-1 (n >= 1) gathered into dst, one every `pitch` bytes (4 blocks: the
 * taps, then zero-point bytes to the block's end: x + off = 0, and the weight lanes are 0
 * too). A window inside the image (dilation 1) is copied row by row, a word at a time, its
 * position stepped from the previous one; others go through gather. */
static void __attribute__((noinline, optimize("O2", "no-tree-loop-distribute-patterns"))) gather_windows(const column_source *s, int32_t q0,
                                                                     int32_t n, int8_t *dst, int32_t pitch)
{
    const el_conv_params *p = s->p;
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, in_c = p->input_dims.c;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t span = kernel_w * in_c, rows = in_w * in_c, taps = s->taps;
    const int8_t zero = (int8_t)(-p->input_offset);
    const int dilated = p->dilation_h != 1 || p->dilation_w != 1;
    int32_t ox = q0 % out_w, oy = (q0 / out_w) % out_h, image = q0 / (out_w * out_h), j, k;
    for (j = 0; j < n; ++j, dst += pitch) {
        const int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
        if (!dilated && y0 >= 0 && x0 >= 0 && y0 <= in_h - kernel_h && x0 <= in_w - kernel_w) {
            copy_rows(dst, s->input + ((image * in_h + y0) * in_w + x0) * in_c, kernel_h, span, rows);
        } else {
            (void)gather(s, q0 + j, dst); /* a window: its taps into dst */
        }
        for (k = taps; k < pitch; ++k) { /* at most 3 */
            dst[k] = zero;
        }
        if (++ox == out_w) {
            ox = 0;
            if (++oy == out_h) {
                oy = 0;
                ++image;
            }
        }
    }
}

#define GATHER_WINDOWS 8 /* windows per quad_pixels call: 256 B of the window buffer at 32 taps */
#define GATHER_WORDS (GATHER_WINDOWS * IM2COL_TAPS / 4)

/* A 1x1 layer's quad of QUAD_BLOCKS blocks fits the whole buffer (a window's two quads fit
 * QUAD_WINDOW_WORDS by its definition below). */
typedef char quad_stack_check[4 + 8 * QUAD_BLOCKS + QUAD_CONST_WORDS <= QUAD_STACK_WORDS ? 1 : -1];

/* Every output pixel of a layer quad_layer_ok accepted: tiles of quads (the weights split once
 * per layer), each run over every pixel (1x1: all pixels in one call; a window: gathered
 * GATHER_WINDOWS at a time). */
static inline __attribute__((always_inline)) void quad_conv(const column_source *s, int32_t pixels, const int8_t *filter,
                                                const int32_t *bias, const int32_t *multiplier,
                                                const int32_t *shift, int8_t *output, int32_t *buffer,
                                                int32_t words)
{
    const el_conv_params *p = s->p;
    const int32_t out_c = p->output_dims.c, taps = s->taps;
    const int32_t blocks = (taps + 3) >> 2, quad_words = 4 + 8 * blocks + QUAD_CONST_WORDS;
    /* a window: the gathered windows, then the tile */
    int32_t *const windows = buffer, *const tile = s->im2col ? buffer + GATHER_WORDS : buffer;
    const int32_t per_tile = (s->im2col ? words - GATHER_WORDS : words) / quad_words; /* >= 1 */
    quad_job job;
    int32_t co, j, q;
    job.out_c = out_c;
    job.off2 = el_dsp_offset2(p->input_offset);
    job.blocks = blocks;
    job.wts = tile;
    for (co = 0; co < out_c; co += 4 * per_tile) {
        const int32_t quads = (out_c - co) / 4 < per_tile ? (out_c - co) / 4 : per_tile;
        for (j = 0; j < quads; ++j) {
            quad_prepare(tile + j * quad_words, filter, taps, blocks, co + 4 * j, bias, multiplier, shift);
        }
        job.wend = tile + quads * quad_words;
        if (!s->im2col) {
            job.x = s->input;
            job.xstep = taps;
            job.count = pixels;
            job.out = output + co;
            quad_pixels(&job);
            continue;
        }
        for (q = 0; q < pixels; q += GATHER_WINDOWS) {
            const int32_t n = pixels - q < GATHER_WINDOWS ? pixels - q : GATHER_WINDOWS;
            gather_windows(s, q, n, (int8_t *)windows, 4 * blocks);
            job.x = (const int8_t *)windows;
            job.xstep = 4 * blocks;
            job.count = n;
            job.out = output + q * out_c + co;
            quad_pixels(&job);
        }
    }
}

/* quad_conv with its stack buffer: a 1x1 layer's tile (QUAD_STACK_WORDS), or a window's two
 * quads beside the gathered windows (fewer words: the gather's frame sits on top of it). */
#define QUAD_WINDOW_WORDS (GATHER_WORDS + 2 * (4 + 8 * (IM2COL_TAPS / 4) + QUAD_CONST_WORDS))

static void __attribute__((noinline)) quad_conv_1x1(const column_source *s, int32_t pixels, const int8_t *filter,
                                                    const int32_t *bias, const int32_t *multiplier,
                                                    const int32_t *shift, int8_t *output)
{
    int32_t buffer[QUAD_STACK_WORDS];
    quad_conv(s, pixels, filter, bias, multiplier, shift, output, buffer, QUAD_STACK_WORDS);
}

static void __attribute__((noinline)) quad_conv_window(const column_source *s, int32_t pixels,
                                                       const int8_t *filter, const int32_t *bias,
                                                       const int32_t *multiplier, const int32_t *shift,
                                                       int8_t *output)
{
    int32_t buffer[QUAD_WINDOW_WORDS];
    quad_conv(s, pixels, filter, bias, multiplier, shift, output, buffer, QUAD_WINDOW_WORDS);
}

el_kernel_status el_conv2d_s8_dsp(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                                  const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                                  const int32_t *shift, int8_t *output)
{
    if (!el_conv2d_s8_params_ok(p, bias, shift) || !el_dsp_rq_layer_ok(multiplier, p->output_dims.c)) {
        /* refused (the plain kernel says so), or a multiplier of INT32_MIN (el_dsp_internal.h) */
        return el_conv2d_s8(ctx, p, input, filter, bias, multiplier, shift, output);
    }
    {
        const int32_t taps = p->filter_dims.h * p->filter_dims.w * p->input_dims.c; /* <= the filter's volume */
        const int pointwise = p->filter_dims.h == 1 && p->filter_dims.w == 1 && p->stride_h == 1 &&
                              p->stride_w == 1 && p->pad_h == 0 && p->pad_w == 0 &&
                              p->output_dims.h == p->input_dims.h && p->output_dims.w == p->input_dims.w;
        const int32_t pixels = pointwise ? p->input_dims.n * p->input_dims.h * p->input_dims.w
                                         : p->output_dims.n * p->output_dims.h * p->output_dims.w;
        column_source s;
        s.p = p;
        s.input = input;
        s.taps = taps;
        s.im2col = !pointwise;
        if (((pointwise && (taps & 3) == 0) || (!pointwise && taps <= IM2COL_TAPS)) && pixels > 0 &&
            quad_layer_ok(p, taps, multiplier, shift)) {
            if (pointwise) {
                quad_conv_1x1(&s, pixels, filter, bias, multiplier, shift, output);
            } else {
                quad_conv_window(&s, pixels, filter, bias, multiplier, shift, output);
            }
        } else if (pointwise && taps <= COLUMN_WORDS) {
            columns_conv_any(&s, p->input_dims.n * p->input_dims.h * p->input_dims.w, filter, bias, multiplier,
                             shift, output);
        } else if (pointwise) {
            conv_1x1(p, input, filter, bias, multiplier, shift, output);
        } else if (taps <= IM2COL_TAPS) {
            columns_conv_any(&s, p->output_dims.n * p->output_dims.h * p->output_dims.w, filter, bias, multiplier,
                             shift, output);
        } else {
            conv_general(p, input, filter, bias, multiplier, shift, output);
        }
    }
    return EL_KERNEL_OK;
}

#else
typedef int el_conv2d_s8_dsp_unavailable; /* no DSP extension: el_kernels_dsp.h forwards to el_conv2d_s8 */
#endif
