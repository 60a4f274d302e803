/*
 * format.h - byte formats shared by the runtime, the CLI and the CUDA code.
 * docs/format.md describes each byte; these are its constants.  All integers
 * are little-endian.
 */
#ifndef MMSB_FORMAT_H
#define MMSB_FORMAT_H

/* Batch: one epoch's deltas. */
#define MMSB_BATCH_MAGIC 0x5441424Du /* "MBAT" */
#define MMSB_BATCH_VERSION 1
#define MMSB_BATCH_HDR 24   /* magic u32, version u16, hdr size u16,
                               epoch u64, ndeltas u32, flags u32 */
/* Delta: one page of one region. */
#define MMSB_DELTA_HDR 24   /* region u32, op u8, type u8, form u8, rsvd u8,
                               page u64, nruns u32, body_len u32 */
#define MMSB_RUN_HDR 4      /* offset u16, length u16 (1..4096) */
#define MMSB_FORM_RUNS 0
#define MMSB_FORM_PAGE 1

#endif

/* Log segment: a 16-byte header, then records back to back. */
#define MMSB_SEG_MAGIC "MMSBLOG1"
#define MMSB_SEG_HDR 16      /* magic[8], version u32, reserved u32 */
#define MMSB_LOG_VERSION 1
/* Record header; the checksum is XXH3-64 over the first 24 header bytes
 * followed by the payload. */
#define MMSB_REC_MAGIC 0x4345524Du /* "MREC" */
#define MMSB_REC_HDR 32      /* magic u32, type u16, rsvd u16, epoch u64,
                                payload_len u64, checksum u64 */
#define MMSB_REC_REGION 1    /* id u32, flags u32, size u64, name_len u16,
                                name, [image of size bytes if flags & 1] */
#define MMSB_REC_EPOCH 2     /* digest u64, batch */
#define MMSB_REC_GRAPH 3     /* the propagation graph from this epoch on:
                                nnodes u32, then per node name_len u16, name,
                                nin u32, in ids u32[nin], nout u32,
                                out ids u32[nout] */
#define MMSB_REC_MAX_PAYLOAD ((uint64_t)1 << 40)
/* Checkpoint file; the last 8 bytes are XXH3-64 of everything before. */
#define MMSB_CKPT_MAGIC "MMSBCKP1"
#define MMSB_CKPT_HDR 40     /* magic[8], version u32, flags u32, epoch u64,
                                digest u64, nregions u32, rsvd u32 */
#define MMSB_CKPT_ZSTD 1u
#define MMSB_CKPT_REGION_HDR 32 /* id u32, name_len u32, size u64,
                                   stored_len u64, rsvd u64; name; data */
