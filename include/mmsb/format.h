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
