/*
 * el_model_format.h - the edge-lls model image, version 1.
 *
 * One byte layout, two carriers: `edge-lls export --format blob` writes it as a file (streamed
 * to a board by the bridge), `--format c` as one `const` struct that the linker puts in flash.
 * The Python side of this layout is edge_lls/formats/blob.py; tests/test_c_export.py compiles
 * this header and checks every size and offset against it, field by field.
 *
 * Layout (little-endian; every offset counts bytes from the start of the image):
 *
 *     el_model_header                       64 bytes, its own CRC-32 last
 *     el_tensor[tensor_count]               32 bytes each
 *     el_op[op_count]                       12 bytes each
 *     per operator, in run order:           its record (el_conv_params, ...), then its
 *                                           constant arrays, each on a 16-byte boundary
 *     el_tail_header + el_tail_block[]      only for a fine-tuning model (tail_offset != 0)
 *     padding to a multiple of 16
 *
 * payload_crc32 is the CRC-32 (zlib's: reflected 0xEDB88320, initial and final XOR
 * 0xFFFFFFFF) of bytes [header_bytes, total_bytes); header_crc32 that of bytes [0, 60).
 *
 * Every record holds what the operator's kernel needs, prepared on the host exactly as the
 * Python runtime prepares it (edge_lls/program/params.py): CMSIS-NN's fields and names,
 * TFLite Micro's rounding (two roundings in every requantization, flag EL_MODEL_TFLM_ROUNDING).
 * Tensors are referenced by index; runtime tensors live at `offset` in one arena of
 * `arena_bytes` bytes planned by the exporter (edge_lls/program/memory.py).
 */
#ifndef EL_MODEL_FORMAT_H
#define EL_MODEL_FORMAT_H

#include <stdint.h>

#define EL_MODEL_MAGIC "ELMB"
#define EL_MODEL_VERSION 1u
#define EL_MODEL_ALIGN 16u
#define EL_MODEL_HEADER_BYTES 64u
#define EL_MODEL_HEADER_CRC_BYTES 60u /* header_crc32 covers the bytes before it */

/* Constant arrays sit on 16-byte boundaries, so SIMD loads never straddle a line. */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define EL_ALIGNED(n) _Alignas(n)
#elif defined(__GNUC__)
#define EL_ALIGNED(n) __attribute__((aligned(n)))
#else
#error "el_model_format.h needs C11 _Alignas or the GNU aligned attribute"
#endif

/* el_model_header.flags */
#define EL_MODEL_TFLM_ROUNDING 1u /* requantization rounds twice, as TFLM and CMSIS-NN */

/* el_op.opcode: the TFLite builtin operators the firmware runs */
enum {
    EL_OP_CONV_2D = 1,           /* el_conv_params */
    EL_OP_DEPTHWISE_CONV_2D = 2, /* el_conv_params (ch_mult used) */
    EL_OP_FULLY_CONNECTED = 3,   /* el_fc_params */
    EL_OP_AVERAGE_POOL_2D = 4,   /* el_pool_params */
    EL_OP_MAX_POOL_2D = 5,       /* el_pool_params */
    EL_OP_SOFTMAX = 6,           /* el_softmax_params */
    EL_OP_RESHAPE = 7,           /* el_reshape_params (the output aliases the input) */
    EL_OP_PAD = 8,               /* el_pad_params */
    EL_OP_LEAKY_RELU = 9         /* el_leaky_relu_params */
};

/* el_tensor.type */
enum { EL_TYPE_INT8 = 1, EL_TYPE_INT32 = 2, EL_TYPE_FLOAT32 = 3 };

/* el_tensor.flags */
#define EL_TENSOR_CONSTANT 1u    /* offset is in the image, else in the arena */
#define EL_TENSOR_PER_CHANNEL 2u /* scale / zero_point hold channel 0's; the op record has all */

/* el_tail_header.waveform */
enum { EL_WAVEFORM_SINE = 0, EL_WAVEFORM_SQUARE = 1 };

/* el_tail_block.kind */
enum { EL_BLOCK_CONV = 1, EL_BLOCK_DWSEP = 2, EL_BLOCK_DENSE = 3 };

typedef struct {
    int32_t n, h, w, c; /* cmsis_nn_dims */
} el_dims;

typedef struct {
    char magic[4];     /* "ELMB" */
    uint16_t version;  /* EL_MODEL_VERSION */
    uint16_t header_bytes;
    uint32_t total_bytes;
    uint32_t payload_crc32;
    uint32_t flags;
    uint32_t arena_bytes;
    uint32_t tensor_count;
    uint32_t tensors_offset;
    uint32_t op_count;
    uint32_t ops_offset;
    uint32_t input_tensor;
    uint32_t output_tensor;
    uint32_t tail_offset; /* 0: inference only */
    uint32_t reserved[2];
    uint32_t header_crc32;
} el_model_header;

typedef struct {
    uint32_t offset; /* arena offset (runtime tensor) or image offset (constant) */
    uint32_t bytes;
    uint8_t type;    /* EL_TYPE_* */
    uint8_t rank;
    uint8_t flags;   /* EL_TENSOR_* */
    uint8_t reserved;
    int32_t zero_point;
    float scale;
    uint16_t dims[4]; /* the first `rank` are used; batch 1 */
    uint32_t reserved2;
} el_tensor;

typedef struct {
    uint32_t opcode;        /* EL_OP_* */
    uint32_t record_offset; /* image offset of the op's record */
    uint32_t record_bytes;  /* sizeof that record */
} el_op;

/* CONV_2D (filter OHWI) and DEPTHWISE_CONV_2D (filter 1 x KH x KW x C*ch_mult). */
typedef struct {
    uint32_t input, output;  /* tensor indices */
    int32_t input_offset;    /* -input zero point */
    int32_t output_offset;   /* output zero point */
    int32_t stride_h, stride_w;
    int32_t pad_h, pad_w;    /* top, left: TFLite's SAME puts the odd pixel after */
    int32_t dilation_h, dilation_w;
    int32_t act_min, act_max;
    int32_t ch_mult;         /* depthwise channel multiplier; 1 for CONV_2D */
    el_dims input_dims, filter_dims, output_dims;
    uint32_t weights;        /* int8[filter n*h*w*c] */
    uint32_t bias;           /* int32[output c] */
    uint32_t multiplier;     /* int32[output c], Q31 */
    uint32_t shift;          /* int32[output c], > 0: left */
} el_conv_params;

/* FULLY_CONNECTED: weights (out, in); filter_dims (n = depth, c = out), as CMSIS-NN. */
typedef struct {
    uint32_t input, output;
    int32_t input_offset, filter_offset, output_offset;
    int32_t act_min, act_max;
    el_dims input_dims, filter_dims, output_dims;
    uint32_t weights;        /* int8[depth * out] */
    uint32_t bias;           /* int32[out] */
    uint32_t multiplier;     /* int32[out] */
    uint32_t shift;          /* int32[out] */
} el_fc_params;

typedef struct {
    uint32_t input, output;
    int32_t stride_h, stride_w;
    int32_t pad_h, pad_w;
    int32_t filter_h, filter_w;
    int32_t act_min, act_max;
    el_dims input_dims, output_dims;
} el_pool_params;

typedef struct {
    uint32_t input, output;
    int32_t rows, depth;
    int32_t input_multiplier, input_left_shift, diff_min;
} el_softmax_params;

typedef struct {
    uint32_t input, output;
    int32_t size;
} el_reshape_params;

typedef struct {
    uint32_t input, output;
    int32_t pad_value;       /* the output zero point: real 0 */
    int32_t before[4], after[4];
    el_dims input_dims, output_dims;
} el_pad_params;

typedef struct {
    uint32_t input, output;
    int32_t size;
    int32_t input_zero_point, output_zero_point;
    int32_t identity_multiplier, identity_shift;
    int32_t alpha_multiplier, alpha_shift;
} el_leaky_relu_params;

/* The trainable tail of a fine-tuning model: its last blocks, each with an LLS head. */
typedef struct {
    uint32_t block_count;
    uint32_t num_classes;
    uint32_t waveform;       /* EL_WAVEFORM_* */
    float temperature;
    uint32_t classifier_op;  /* the FULLY_CONNECTED trained by cross-entropy */
    uint32_t reserved[3];
} el_tail_header;

typedef struct {
    uint32_t kind;           /* EL_BLOCK_* */
    uint32_t first_op, op_count;
    uint32_t output;         /* tensor the head pools */
    uint32_t pool_size;      /* p: adaptive average pool to p x p (dense: p features) */
    uint32_t feature_dim;    /* D = C * p * p (dense: p) */
    uint32_t basis;          /* float32[num_classes][D], columns in NHWC pooled order */
    uint32_t reserved;
} el_tail_block;

#endif /* EL_MODEL_FORMAT_H */
