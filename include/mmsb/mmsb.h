/*
 * mmsb.h - the public C API of MMSB, the compiler-integrated state bus.
 *
 * A program marks data with the annotations below and is compiled with the
 * MMSB LLVM pass (tools/mmsb-cc).  Every store into annotated state is then
 * recorded; mmsb_commit() turns the recorded stores into byte-exact page
 * deltas, seals them as one epoch and hands that batch to the bus's sinks.
 *
 * Conventions: every function that can fail returns an int status, MMSB_OK (0)
 * or a negative MMSB_E* code; mmsb_strerror() names a code and
 * mmsb_last_error() gives the detail of the last failure on this thread.
 * No function aborts on bad user input.
 */
#ifndef MMSB_MMSB_H
#define MMSB_MMSB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- annotations ------------------------------------------------------ */

/* The annotations are read by the pass, which needs clang; other compilers
 * see them as plain (untracked) declarations. */
#if defined(__clang__)
#define MMSB_ANNOTATE_(what) __attribute__((annotate(what)))
#else
#define MMSB_ANNOTATE_(what)
#endif

/* A global or static variable that becomes a region named after it,
 * registered before main() by a constructor the pass emits (page-aligned). */
#define MMSB_STATE    MMSB_ANNOTATE_("mmsb.state") __attribute__((aligned(4096)))
/* A struct field whose stores are tracked in any object inside a region. */
#define MMSB_TRACKED  MMSB_ANNOTATE_("mmsb.tracked")
/* A function returning a pointer to tracked memory. */
#define MMSB_ALLOC    MMSB_ANNOTATE_("mmsb.alloc")
/* A function whose stores through pointers of unknown origin are range-checked
 * even in the pass's "annotated" mode. */
#define MMSB_PRODUCER MMSB_ANNOTATE_("mmsb.producer")

/* ---- status codes ----------------------------------------------------- */

enum {
  MMSB_OK = 0,
  MMSB_EINVAL = -1,       /* a bad argument */
  MMSB_ENOMEM = -2,       /* out of memory or address space */
  MMSB_EEXIST = -3,       /* a name already in use */
  MMSB_ENOTFOUND = -4,    /* no such region, node, subscriber or file */
  MMSB_ERANGE = -5,       /* an address or length outside tracked memory */
  MMSB_ECORRUPT = -6,     /* bytes that fail validation (format, checksum) */
  MMSB_EIO = -7,          /* an I/O error from the operating system */
  MMSB_ENOSPC = -8,       /* the disk is full or a file limit was reached */
  MMSB_EMISMATCH = -9,    /* a region whose size differs from the log's */
  MMSB_EBUSY = -10,       /* the object is in use */
  MMSB_ENODEV = -11,      /* no device, or the device failed */
  MMSB_ECYCLE = -12,      /* an edge that would close a cycle */
  MMSB_ENODE = -13,       /* a propagation node reported failure */
  MMSB_EUNSUPPORTED = -14 /* not available in this build */
};

const char *mmsb_strerror(int status);
/* Detail of the last failure on the calling thread; "" when none. */
const char *mmsb_last_error(void);

/* ---- bus ---------------------------------------------------------------- */

typedef struct mmsb_bus mmsb_bus;
typedef struct mmsb_region mmsb_region;
typedef struct mmsb_batch mmsb_batch;
typedef uint64_t mmsb_epoch_t;

enum mmsb_sync { MMSB_SYNC_NONE = 0, MMSB_SYNC_COMMIT = 1, MMSB_SYNC_GROUP = 2 };

typedef struct mmsb_config {
  const char *dir;        /* log directory; NULL: in memory only */
  int sync;               /* enum mmsb_sync (MMSB_SYNC) */
  unsigned group_ms;      /* group-commit interval in ms (MMSB_SYNC=group:MS) */
  int verify;             /* MMSB_VERIFY: check every commit against a copy */
  int stats;              /* MMSB_STATS: print a summary when the bus closes */
  int device;             /* MMSB_DEVICE: CUDA device for mirrors, -1 none */
  const char *trace;      /* MMSB_TRACE: Chrome trace-event JSON file */
  int salvage;            /* recover the valid prefix of a log that is
                             corrupt in the middle (MMSB_SALVAGE=1) */
  uint64_t segment_bytes; /* start a new log segment past this size */
  int compress;           /* zstd checkpoints (MMSB_COMPRESS=1) */
  int threads;            /* propagation: independent nodes of one height run
                             on up to this many threads of the runtime's
                             pool (MMSB_THREADS; 1: the committing thread) */
  int commit_threads;     /* collection of a large epoch (more than 4096
                             dirty pages) runs on up to this many threads of
                             the runtime's pool, and so does the copy of a
                             large epoch into a mirror's pinned staging
                             (MMSB_COMMIT_THREADS; default the online CPUs,
                             at most 16; 1: the committing thread alone).
                             No user code runs there because of it: node
                             functions use at most `threads` threads. */
} mmsb_config;

/* Fills defaults, then applies the MMSB_* environment variables.  A value
 * that is not valid for its setting leaves the default, and is named on
 * stderr once a process for each value (README, "Using it"). */
void mmsb_config_init(mmsb_config *cfg);
/* Opens a bus; recovers cfg->dir when it holds a log.  cfg NULL: defaults. */
int mmsb_bus_open(const mmsb_config *cfg, mmsb_bus **out);
/* Commits nothing; flushes the log; frees the bus and its regions.
 * Uncommitted stores are dropped. */
int mmsb_bus_close(mmsb_bus *bus);
/* The process bus, configured from MMSB_* on first use.  Never NULL: if it
 * cannot be opened as configured, it is opened in memory and the reason is
 * printed once to stderr. */
mmsb_bus *mmsb_default_bus(void);

/* ---- regions ------------------------------------------------------------ */

enum {
  /* Map the region from the file /dev/shm/mmsb.NAME with MAP_SHARED so that
   * other processes can map the same state (see mmsb_region_create_mapped). */
  MMSB_REGION_SHARED = 1u << 0
};

/* Creates a page-aligned zero-filled region of `size` bytes named `name`
 * (1..MMSB_NAME_MAX bytes).  On a bus recovered from a log, a logged name
 * with the same size returns that region holding the recovered bytes; a
 * different size is MMSB_EMISMATCH. A name in use otherwise is MMSB_EEXIST. */
int mmsb_region_create(mmsb_bus *bus, const char *name, size_t size,
                       unsigned flags, mmsb_region **out);
/* Like mmsb_region_create with MMSB_REGION_SHARED, mapping the file at
 * `path` (created if missing, extended to the region size). */
int mmsb_region_create_mapped(mmsb_bus *bus, const char *name, size_t size,
                              const char *path, mmsb_region **out);
int mmsb_region_find(mmsb_bus *bus, const char *name, mmsb_region **out);
/* Releases a region: its memory is unmapped; uncommitted stores are lost.
 * MMSB_EBUSY while a node reads or writes it or it has a mirror (the
 * detail names which): remove those first. */
int mmsb_region_destroy(mmsb_region *r);
MMSB_ALLOC void *mmsb_region_data(const mmsb_region *r);
size_t mmsb_region_size(const mmsb_region *r);
const char *mmsb_region_name(const mmsb_region *r);
/* The id that deltas carry: stable for a name within a log. */
uint32_t mmsb_region_id(const mmsb_region *r);
mmsb_region *mmsb_region_by_id(mmsb_bus *bus, uint32_t id);

#define MMSB_NAME_MAX 255
#define MMSB_PAGE_SIZE 4096
#define MMSB_GRANULE 8

/* ---- recording and commit ---------------------------------------------- */

/* Marks bytes written by code the pass did not see (assembly, a library
 * built without the pass, a device copy).  MMSB_ERANGE if any byte lies
 * outside every region (the bytes inside are still marked). */
int mmsb_touch(const void *addr, size_t len);

/* Collects the marks into one batch, seals it as the next epoch and hands it
 * to the sinks (propagation, log, mirrors, subscribers, in that order).
 * bus NULL: the default bus.  Writers must be quiescent during a commit,
 * those of every bus: the marks of all buses share the threads' logs, so a
 * store into another bus's region while this one commits may lose its mark
 * (two buses committed from two threads need a common step boundary;
 * docs/semantics.md, Writers).  Commits of different buses may run at once.
 * Nodes, GPU nodes' launches and subscribers run inside the commit: there,
 * mmsb_commit and what changes the bus's graph, sinks or mirrors
 * (mmsb_bus_close, mmsb_node_*, mmsb_subscribe, mmsb_unsubscribe,
 * mmsb_mirror_create/destroy, mmsb_region_destroy, mmsb_checkpoint) return
 * MMSB_EBUSY for the same bus, and a node on the pool's threads
 * (MMSB_THREADS > 1) gets MMSB_EBUSY from any call that takes the bus's
 * lock (mmsb_region_create, mmsb_region_find, mmsb_accumulate) instead of
 * waiting for ever.  Another bus may be committed from there. */
int mmsb_commit(mmsb_bus *bus, mmsb_epoch_t *epoch);
/* Last committed epoch, 0 before the first. bus NULL: the default bus. */
mmsb_epoch_t mmsb_epoch(const mmsb_bus *bus);
/* Writes every region at the current epoch to a checkpoint (temp file,
 * fsync, rename, directory fsync) and retires the log segments it covers. */
int mmsb_checkpoint(mmsb_bus *bus);

/* ---- durability (a bus opened with cfg.dir) ------------------------------ */

/* The last epoch known to be on disk (sync none: what was written). */
mmsb_epoch_t mmsb_durable_epoch(const mmsb_bus *bus);
/* Makes every committed epoch durable now. */
int mmsb_log_sync(mmsb_bus *bus);
/* What recovery found when the bus was opened. */
typedef struct mmsb_recovery {
  mmsb_epoch_t checkpoint_epoch;  /* 0: none */
  mmsb_epoch_t last_epoch;        /* recovered epoch */
  uint64_t records;               /* log records read */
  uint64_t bytes_dropped;         /* torn tail (or salvaged rest) cut off */
  uint64_t records_dropped;
  char detail[512];               /* what was cut, where; "" when clean */
} mmsb_recovery;
int mmsb_recovery_info(const mmsb_bus *bus, mmsb_recovery *out);
/* A read-only view of the log in `dir` at `epoch` (0: the last): regions
 * hold their bytes at that epoch, each epoch's digest verified on the way.
 * Close it with mmsb_bus_close. */
int mmsb_replay(const char *dir, mmsb_epoch_t epoch, mmsb_bus **out);
/* The state digest of the bus at its epoch (docs/format.md). */
uint64_t mmsb_digest(const mmsb_bus *bus);

/* ---- deltas and batches (format: docs/format.md) ----------------------- */

enum mmsb_op {
  MMSB_OP_ASSIGN = 0, /* overwrite bytes (what stores produce) */
  MMSB_OP_ADD = 1,
  MMSB_OP_MIN = 2,
  MMSB_OP_MAX = 3,
  MMSB_OP_OR = 4,     /* integer types only */
  MMSB_OP_XOR = 5     /* integer types only */
};
enum mmsb_type {
  MMSB_T_BYTES = 0,   /* ASSIGN only */
  MMSB_T_U32 = 1, MMSB_T_U64 = 2, MMSB_T_I64 = 3, MMSB_T_F32 = 4, MMSB_T_F64 = 5
};

/* Queues an accumulating delta: at the next commit, element i of `values`
 * is combined with the element at byte `offset` of the region by `op`
 * (after the commit's ASSIGN deltas).  Several producers may accumulate into
 * the same words in the same epoch; integer ops commute exactly.  A
 * floating-point ADD gives the same bits everywhere (host, log replay, GPU
 * mirrors): a NaN operand is kept, quieted (the region's first), and a
 * NaN the add makes (inf - inf) is the positive quiet NaN without payload.
 * MIN and MAX keep the region's element unless the new one compares below
 * (above) it, so a NaN on either side keeps the region's. */
int mmsb_accumulate(mmsb_region *r, size_t offset, int op, int type,
                    const void *values, size_t count);

/* One page delta, viewed inside a batch's bytes. */
typedef struct mmsb_delta {
  uint32_t region_id;
  uint8_t op, type;      /* enum mmsb_op, enum mmsb_type */
  uint8_t whole_page;    /* 1: body is the page from offset 0 */
  uint64_t page;         /* page index within the region */
  uint32_t nruns;
  const uint8_t *body;   /* encoded runs (docs/format.md) */
  uint32_t body_len;
} mmsb_delta;

typedef struct mmsb_run {
  uint32_t offset, length; /* within the page */
  const uint8_t *bytes;
} mmsb_run;

mmsb_epoch_t mmsb_batch_epoch(const mmsb_batch *b);
size_t mmsb_batch_count(const mmsb_batch *b);
/* The i-th delta, in (region id, page) order. */
int mmsb_batch_delta(const mmsb_batch *b, size_t i, mmsb_delta *out);
/* Iterates a delta's runs: *cursor starts at 0; returns 1 and fills *run
 * while runs remain, 0 at the end. */
int mmsb_delta_next_run(const mmsb_delta *d, uint32_t *cursor, mmsb_run *run);
/* The batch as bytes in the format of docs/format.md. */
const uint8_t *mmsb_batch_bytes(const mmsb_batch *b, size_t *len);
/* The batch of the bus's last commit; valid until the next commit or the
 * bus's first CUDA mirror (its bytes then move into pinned memory). */
const mmsb_batch *mmsb_last_batch(const mmsb_bus *bus);
/* Validates untrusted bytes and makes a batch of them (copied). */
int mmsb_batch_decode(const void *bytes, size_t len, mmsb_batch **out);
void mmsb_batch_free(mmsb_batch *b);
/* Applies one delta to a page buffer of page_len bytes (the last page of a
 * region may be short); MMSB_ERANGE if a run falls outside it. */
int mmsb_delta_apply(const mmsb_delta *d, void *page, size_t page_len);
/* Applies every delta of the batch to the regions of `bus` by id. */
int mmsb_batch_apply(const mmsb_batch *b, mmsb_bus *bus);
/* compose(a, b): one delta d with apply(apply(s,a),b) == apply(s,d).
 * a and b must be for the same page with the same op and type.  Writes the
 * encoded delta (header and body, docs/format.md) to out[cap]; cap of
 * MMSB_DELTA_MAX always suffices. */
int mmsb_delta_compose(const mmsb_delta *a, const mmsb_delta *b,
                       uint8_t *out, size_t cap, size_t *out_len);
/* Encodes a page delta from a byte mask (bit i of mask: byte i is part of the
 * delta) and the page values; picks runs or the whole page, whichever is
 * smaller (whole pages for ASSIGN only). */
int mmsb_delta_encode(uint32_t region_id, uint64_t page, int op, int type,
                      const uint8_t mask[MMSB_PAGE_SIZE / 8],
                      const uint8_t *values, size_t page_len,
                      uint8_t *out, size_t cap, size_t *out_len);
/* Views one encoded delta (as written by encode or compose). */
int mmsb_delta_view(const uint8_t *enc, size_t len, mmsb_delta *out);
#define MMSB_DELTA_MAX (24 + 2 * MMSB_PAGE_SIZE + 4 * MMSB_PAGE_SIZE / 2)

/* ---- subscribers (the router's last sink) ------------------------------- */

/* Called once per commit, after the log and mirrors, with the epoch's batch.
 * A nonzero return makes mmsb_commit return MMSB_EIO (the epoch stays
 * committed).  The batch is valid only during the call. */
typedef int (*mmsb_subscriber_fn)(void *ctx, const mmsb_batch *batch);
int mmsb_subscribe(mmsb_bus *bus, mmsb_subscriber_fn fn, void *ctx,
                   unsigned *id);
int mmsb_unsubscribe(mmsb_bus *bus, unsigned id);

/* ---- propagation graph: derived regions kept up to date --------------- */

typedef struct mmsb_node mmsb_node;

/* How a node's output changes are found after it runs. */
enum mmsb_detect {
  MMSB_DETECT_DIFF = 0,   /* compare with a copy taken before the run */
  MMSB_DETECT_WHOLE = 1,  /* the whole output counts as changed */
  MMSB_DETECT_STORES = 2  /* the node's code was compiled with the pass */
};

/* The plain callback form: return 0, or nonzero for failure (mmsb_commit
 * then returns MMSB_ENODE and seals nothing; its detail names the node, and
 * adds what the node's own failed mmsb_* call, if any, left in
 * mmsb_last_error). */
typedef int (*mmsb_node_fn)(void *ctx);
int mmsb_node_create(mmsb_bus *bus, const char *name, mmsb_node_fn fn, void *ctx,
                     mmsb_node **out);
/* Edges: the node runs in an epoch in which an input changed; it is the
 * only producer of its outputs.  An edge that would close a cycle is
 * refused with MMSB_ECYCLE, the cycle named in mmsb_last_error(). */
int mmsb_node_input(mmsb_node *n, mmsb_region *r);
int mmsb_node_output(mmsb_node *n, mmsb_region *r, int detect);
int mmsb_node_remove(mmsb_node *n);

/* The libffi form: any existing C function, its arguments described once.
 * MMSB_ARG_IN / MMSB_ARG_OUT pass a region's data pointer and make the
 * region an input / output (detect DIFF); MMSB_ARG_SIZE passes a region's
 * size as size_t; the others pass constants. */
enum mmsb_arg_kind {
  MMSB_ARG_IN = 1, MMSB_ARG_OUT, MMSB_ARG_SIZE, MMSB_ARG_PTR,
  MMSB_ARG_I8, MMSB_ARG_U8, MMSB_ARG_I16, MMSB_ARG_U16, MMSB_ARG_I32, MMSB_ARG_U32,
  MMSB_ARG_I64, MMSB_ARG_U64, MMSB_ARG_F32, MMSB_ARG_F64
};
typedef struct mmsb_arg {
  int kind;
  mmsb_region *region;   /* IN, OUT, SIZE */
  union { int64_t i; uint64_t u; double f; void *p; } v;
} mmsb_arg;
/* ret_int: the function returns int and nonzero means failure; else its
 * return value (if any) is ignored. */
int mmsb_node_create_ffi(mmsb_bus *bus, const char *name, void (*fn)(void), int ret_int,
                         const mmsb_arg *args, int nargs, mmsb_node **out);
/* Like mmsb_node_create_ffi, the function found by symbol name (dlsym). */
int mmsb_node_create_sym(mmsb_bus *bus, const char *name, const char *symbol, int ret_int,
                         const mmsb_arg *args, int nargs, mmsb_node **out);
/* Writes the graph in Graphviz DOT (regions as boxes, nodes as ellipses). */
int mmsb_graph_dot(mmsb_bus *bus, FILE *f);

/* ---- device mirrors ------------------------------------------------------ */

typedef struct mmsb_mirror mmsb_mirror;

/* A copy of region r on a CUDA device (device -1: the bus's MMSB_DEVICE;
 * below -1 is MMSB_EINVAL),
 * uploaded now and kept at the bus's epoch by every commit: the region's
 * deltas are copied to the device asynchronously and applied by a kernel on
 * the mirror's stream (an epoch of up to MMSB_ZERO_COPY bytes of staging,
 * 256 KiB by default, and a sparse one of one delta a page and at most 64
 * bytes a delta up to four times that, is not copied: the kernel reads its
 * offsets from pinned staging and its bytes from the pinned batch, over
 * the bus).  The
 * bus's batch moves into pinned host memory with its first CUDA mirror,
 * and the copies and kernels read it where it is; when
 * commit collects an epoch on several threads, they start while the rest
 * of the epoch is still being written.  Before the next commit writes the
 * batch again, it waits for the mirror's queued work if some of it may
 * still read the batch (a program that waits for its mirrors never waits
 * there).  Any thread may commit: the backend makes the mirror's device
 * current for its own calls and then restores the calling thread's.
 * Device -1 with MMSB_DEVICE unset, a build without CUDA and a machine
 * without a GPU get a host backend with the same API and per-page code
 * (mmsb_mirror_backend says which).  MMSB_ENODEV: the machine has GPUs but
 * not this one, or it failed; MMSB_ENOMEM: the device lacks the memory for
 * the copy.  Either way the bus and its other mirrors go on as before. */
int mmsb_mirror_create(mmsb_region *r, int device, mmsb_mirror **out);
/* Blocks until the mirror holds epoch e (or later): an epoch whose commit
 * returned (MMSB_ERANGE for a later one).  Any thread may wait, and
 * download, while another commits. */
int mmsb_mirror_wait(mmsb_mirror *m, mmsb_epoch_t e);
/* The device address of the copy (a host address on the host backend). */
void *mmsb_mirror_device_ptr(const mmsb_mirror *m);
/* Copies the mirror's bytes to host memory (after the work queued so far:
 * the copy as of some epoch, never one halfway applied). */
int mmsb_mirror_download(mmsb_mirror *m, void *dst);
/* "cuda" or "host". */
const char *mmsb_mirror_backend(const mmsb_mirror *m);
/* Waits for its queued work and frees it.  MMSB_EBUSY while a GPU node
 * reads or writes it: remove the node first. */
int mmsb_mirror_destroy(mmsb_mirror *m);

/* A GPU node: `launch` starts kernels on `stream` (a cudaStream_t) that
 * read the input mirrors and write the output mirrors (device pointers in
 * the order given).  After it, each output mirror is diffed on the device
 * against its previous version; the changed granules come back as deltas
 * of the same epoch, are applied to the host regions, logged, and
 * propagate further.  The node should be its outputs' one producer; where
 * the program stores into an output region all the same, its bytes reach
 * the mirror before the launch, and the node's win where both write, in
 * the region and the mirror alike.  Return nonzero from launch for
 * failure: the commit then fails with MMSB_ENODE and seals nothing, as
 * for any node, and so it does when a CUDA call of the node fails (a
 * kernel that wrote outside its memory loses the device for the process);
 * mmsb_last_error names the node and the cause ("its launch function
 * returned 3", CUDA's message).  All its mirrors must be on one device
 * (MMSB_EINVAL otherwise); launch runs with that device current on its
 * thread, which may be a pool thread. */
typedef int (*mmsb_gpu_launch_fn)(void *ctx, void *stream, void *const *in, void *const *out);
int mmsb_gpu_node_create(mmsb_bus *bus, const char *name, mmsb_gpu_launch_fn launch,
                         void *ctx, mmsb_mirror *const *in, int nin,
                         mmsb_mirror *const *out, int nout, mmsb_node **node);

/* ---- statistics and verification ---------------------------------------- */

typedef struct mmsb_stats {
  uint64_t commits, deltas, runs, delta_bytes, whole_pages;
  uint64_t stores_outside;   /* entry-point calls outside every region */
  uint64_t untracked_bytes;  /* MMSB_VERIFY: changed bytes no delta covered */
  uint64_t commit_ns;        /* total time in mmsb_commit */
  uint64_t log_commits;      /* commits collected straight from the threads'
                                mark logs (sparse epochs: every mark of the
                                epoch still in a log), not from the bitmaps */
} mmsb_stats;
int mmsb_stats_get(const mmsb_bus *bus, mmsb_stats *out);
/* MMSB_VERIFY: changed bytes that no delta covered at the last commit. */
uint64_t mmsb_verify_last(const mmsb_bus *bus);

#ifdef __cplusplus
}
#endif
#endif /* MMSB_MMSB_H */
