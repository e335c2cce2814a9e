/*
 * el_runner.h - run a model image's operators, in order, through the int8 kernels.
 *
 * The caller opens the image (el_model_open) and gives the runner one arena of at least the
 * image's arena_bytes (16-byte aligned: every runtime tensor sits at its planned offset in it,
 * edge_lls/program/memory.py) and scratch for the kernels (at least the largest
 * el_*_get_buffer_size() of the image's ops; the reference kernels need 0, and then scratch
 * may be NULL). No heap, C99.
 *
 * el_runner_init() checks what neither el_model_open nor the kernels can: each op's record
 * against its input and output tensors (int8, and the volume the record's dims describe equal
 * to the tensor's bytes; for 4-D records of rank-4 tensors the dims themselves), and that an
 * op's output does not overlap its input in the arena (except RESHAPE, whose output is its
 * input's bytes). A record consistent with itself but not with its tensors would otherwise
 * let a kernel read or write past a tensor's bytes.
 *
 *     el_runner r;
 *     if (el_runner_init(&r, &model, arena, sizeof arena, NULL, 0) == EL_RUNNER_OK) {
 *         memcpy(el_runner_input(&r), x, el_runner_input_bytes(&r));
 *         if (el_runner_invoke(&r) == EL_RUNNER_OK) use(el_runner_output(&r));
 *     }
 */
#ifndef EL_RUNNER_H
#define EL_RUNNER_H

#include <stddef.h>
#include <stdint.h>

#include "el_kernels.h"
#include "el_model.h"

typedef enum {
    EL_RUNNER_OK = 0,
    EL_RUNNER_ERR_ARENA,   /* arena NULL, not 16-byte aligned, or smaller than arena_bytes */
    EL_RUNNER_ERR_SCRATCH, /* scratch smaller than a kernel asks for, or not 4-byte aligned */
    EL_RUNNER_ERR_MODEL,   /* the model is not open, or its input / output is not int8 in the arena */
    EL_RUNNER_ERR_RECORD,  /* an op's record does not fit its tensors (failed_op names it) */
    EL_RUNNER_ERR_OVERLAP, /* an op's output overlaps its input in the arena */
    EL_RUNNER_ERR_OPCODE,  /* an opcode the runner has no kernel for */
    EL_RUNNER_ERR_KERNEL,  /* a kernel refused its record (kernel_status says how) */
    EL_RUNNER_ERR_STOPPED  /* the per-op hook returned nonzero */
} el_runner_status;

/* Called after each op with its index and its output tensor's bytes; return 0 to go on. */
typedef int (*el_runner_hook)(void *user, uint32_t op, const int8_t *output, uint32_t bytes);

/* Weights and bias for op `op` read from RAM instead of the image: a trainable op's SRAM
 * copies (el_train.h). The arrays have the image's shapes and the same requantization. */
typedef struct {
    uint32_t op;
    const int8_t *weights;
    const int32_t *bias;
} el_runner_patch;

typedef struct {
    const el_model *model;
    uint8_t *arena;
    size_t arena_bytes;
    el_context ctx;               /* the kernels' scratch */
    el_runner_hook hook;          /* NULL: none; set after el_runner_init */
    void *hook_user;
    const el_runner_patch *patches; /* NULL: every op reads the image (el_runner_patch_ops) */
    uint32_t patch_count;
    uint32_t failed_op;           /* the op the last error names */
    el_kernel_status kernel_status;
} el_runner;

el_runner_status el_runner_init(el_runner *r, const el_model *m, uint8_t *arena, size_t arena_bytes, void *scratch,
                                size_t scratch_bytes);

/* The scratch bytes the image's ops need (the largest el_*_get_buffer_size()). */
size_t el_runner_scratch_bytes(const el_model *m);

/* Tensor i's bytes: in the arena for a runtime tensor, in the image for a constant. */
const void *el_runner_tensor(const el_runner *r, uint32_t tensor);

int8_t *el_runner_input(const el_runner *r);
uint32_t el_runner_input_bytes(const el_runner *r);
const int8_t *el_runner_output(const el_runner *r);
uint32_t el_runner_output_bytes(const el_runner *r);

/* Runs every op in order; on an error r->failed_op names the op. */
el_runner_status el_runner_invoke(el_runner *r);

/* Runs ops [first, end) in order (first <= end <= op_count, else EL_RUNNER_ERR_MODEL). */
el_runner_status el_runner_invoke_range(el_runner *r, uint32_t first, uint32_t end);

/* From now on, the ops the table names read its arrays (count entries, kept by the caller);
 * NULL restores the image's. */
void el_runner_patch_ops(el_runner *r, const el_runner_patch *patches, uint32_t count);

const char *el_runner_status_name(el_runner_status status);

#endif /* EL_RUNNER_H */
