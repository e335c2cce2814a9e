/*
 * el_model.h - open a model image (el_model_format.h) and reach its parts.
 *
 * el_model_open() checks everything before anything runs: magic, version, sizes, both
 * CRC-32s, and every table, record, array and tensor against the image and arena bounds.
 * TFLite Micro deliberately trusts its flatbuffer; a model that arrived over a serial line
 * or from an SD card is not trusted here. edge_lls/formats/blob.py open_image() makes the
 * same checks in the same order, for the host.
 */
#ifndef EL_MODEL_H
#define EL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "el_model_format.h"

typedef enum {
    EL_OK = 0,
    EL_ERR_ALIGN,       /* the image is not on a 16-byte boundary */
    EL_ERR_SHORT,       /* fewer bytes than a header */
    EL_ERR_MAGIC,
    EL_ERR_VERSION,
    EL_ERR_HEADER,      /* header_bytes */
    EL_ERR_HEADER_CRC,
    EL_ERR_SIZE,        /* total_bytes != the bytes given */
    EL_ERR_PAYLOAD_CRC,
    EL_ERR_TABLE,       /* tensor or op table outside the image */
    EL_ERR_TENSOR,      /* a tensor's type, rank, size or place */
    EL_ERR_OP,          /* an op's opcode, record, tensors, dims or arrays */
    EL_ERR_TAIL         /* the trainable tail */
} el_status;

typedef struct {
    const uint8_t *image;
    const el_model_header *header;
    const el_tensor *tensors;
    const el_op *ops;
    const el_tail_header *tail;        /* NULL: an inference-only model */
    const el_tail_block *tail_blocks;
    uint32_t failed_index;             /* the tensor, op or block a check failed on */
} el_model;

/* Validates size bytes at image (16-byte aligned) and fills *model. */
el_status el_model_open(const uint8_t *image, size_t size, el_model *model);

/* A short name of a status, for logs. */
const char *el_status_name(el_status status);

/* The record of op i (cast to the el_*_params its opcode names), and any image offset. */
const void *el_model_record(const el_model *model, uint32_t op);
const void *el_model_at(const el_model *model, uint32_t offset);

/* Bytes of one element of an el_tensor.type. */
uint32_t el_type_size(uint32_t type);

/* CRC-32 as zlib computes it (reflected 0xEDB88320, initial and final XOR 0xFFFFFFFF). */
uint32_t el_crc32(const uint8_t *data, size_t size);

#endif /* EL_MODEL_H */
