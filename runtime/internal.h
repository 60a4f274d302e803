/* internal.h - structures shared by the runtime's files (not installed). */
#ifndef MMSB_INTERNAL_H
#define MMSB_INTERNAL_H

#include "mmsb/mmsb.h"
#include "mmsb/format.h"
#include "mmsb/page_apply.h"
#include "mmsb_abi.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define PAGE_SHIFT 12
#define GRAN_SHIFT 3
#define GRANS_PER_PAGE (MMSB_PAGE_SIZE / MMSB_GRANULE) /* 512 */
#define SUMMARY_SHIFT 18 /* one summary byte per 64 pages */

/* ---- error.c ---- */
int mmsb_fail(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mmsb_clear_error(void);

/* ---- trace.c: MMSB_TRACE, Chrome trace-event JSON ---- */
typedef struct mmsb_trace mmsb_trace;
int mmsb_trace_open(mmsb_bus *bus, const char *path);
void mmsb_trace_event(mmsb_bus *bus, const char *name, uint64_t start_ns, uint64_t end_ns,
                      mmsb_epoch_t epoch, size_t deltas);
void mmsb_trace_close(mmsb_bus *bus);

/* ---- pool.c: worker threads for the runtime's own parallel loops ---- */
typedef void (*mmsb_part_fn)(void *ctx, int part, int nparts);
/* Runs fn(ctx, i, nparts) for every part i, on the caller and up to
 * threads - 1 of the pool's threads; returns when all are done. */
void mmsb_pool_run(int nparts, int threads, mmsb_part_fn fn, void *ctx);
/* The same, and the caller alone calls tick(ctx) after each part it runs,
 * then, once no part is left to take, until tick returns true: work that
 * must stay on one thread and follows the parts as they finish (CUDA
 * calls: made from 8 or 16 threads at once, each took 45-230 us on average
 * and up to 470 on the H200's VM, against ~2 us from one). */
void mmsb_pool_run_tick(int nparts, int threads, mmsb_part_fn fn, void *ctx,
                        bool (*tick)(void *ctx));
/* How long the pool's threads spin for the next job before they sleep, in
 * microseconds (MMSB_POOL_SPIN_US, read when the first thread starts). */
uint64_t mmsb_pool_spin_us(void);
/* Part `part` of `nparts` of the items [0, n): [*lo, *hi). */
static inline void mmsb_part_range(size_t n, int part, int nparts, size_t *lo, size_t *hi) {
  *lo = n * (size_t)part / (size_t)nparts;
  *hi = n * (size_t)(part + 1) / (size_t)nparts;
}
/* Online CPUs, at most 16: the default of commit_threads. */
int mmsb_default_threads(void);
/* Copies len bytes from src to dst and sets offs[i] = index[i] - base for
 * i < n (each below 2^32): staging for a GPU, on the calling thread... */
void mmsb_stage_copy(void *dst, const void *src, size_t len, uint32_t *offs, const size_t *index,
                     size_t base, size_t n);
/* ... or on up to `threads` threads of the pool. */
void mmsb_parallel_stage(void *dst, const void *src, size_t len, uint32_t *offs,
                         const size_t *index, size_t base, size_t n, int threads);

/* ---- nameidx.c: name -> object (the object holds its name at name_off) ---- */
typedef struct mmsb_nameidx {
  void **slots;
  uint32_t cap, used;
  size_t name_off;
} mmsb_nameidx;
void *mmsb_nameidx_find(const mmsb_nameidx *x, const char *name);
int mmsb_nameidx_insert(mmsb_nameidx *x, void *obj);
void mmsb_nameidx_remove(mmsb_nameidx *x, void *obj);
void mmsb_nameidx_free(mmsb_nameidx *x);

/* ---- window.c: tracked address ranges and their dirty bitmaps ---- */
/* Bitmaps of a window: one bit per granule, per page, and per 64 pages.
 * Written only under mmsb_mark_lock (plain, non-atomic bit operations). */
typedef struct mmsb_win_maps {
  uint64_t *gran, *pages, *summary;
} mmsb_win_maps;
extern mmsb_win_maps mmsb_maps[MMSB_NWINDOWS];
extern pthread_mutex_t mmsb_mark_lock;

/* Asks for transparent huge pages over the whole 2 MiB pages inside
 * [p, p + n) when n is 2 MiB or more: regions, bitmaps and host mirrors'
 * copies take dirty bytes all over them, and with 4 KiB pages nearly every
 * one is a TLB miss.  A hint; the system may say no. */
void mmsb_huge_pages(void *p, size_t n);
int mmsb_arena_init(void);
/* Carves a page-aligned block of `size` bytes out of the arena. */
int mmsb_arena_alloc(size_t size, void **out);
void mmsb_arena_free(void *p, size_t size);
/* Returns the window holding [p, p+n) or -1. */
int mmsb_window_of(uintptr_t p, size_t n);
/* Sets the bits of [off, off+n) in window w; mmsb_mark_lock held. */
void mmsb_bits_set(int w, uintptr_t off, size_t n);
/* Bumped whenever marks go into the bitmaps (mmsb_mark_lock).  A bus whose
 * last collection from the bitmaps saw the same value has every pending
 * mark of its regions still in the threads' logs (collect.c). */
extern uint64_t mmsb_bitmap_gen;
/* Makes the bitmaps of [off, off+len) resident / clears them. */
void mmsb_shadow_prefault(int w, uintptr_t off, size_t len);
void mmsb_shadow_clear(int w, uintptr_t off, size_t len);
int mmsb_static_window_add(uintptr_t start, uintptr_t stop);

/* ---- marklog.c: per-thread mark logs ---- */
/* Marks [p, p+n) dirty; false if it is not all inside a window. */
bool mmsb_mark_range(uintptr_t p, size_t n);
/* Takes (releases) mmsb_mark_lock and every thread log's own lock: what a
 * collection holds while it reads and empties the logs.  A thread whose log
 * fills takes only its own log's lock, unless it must fold into the
 * bitmaps.  The functions below that read or empty the logs need both. */
void mmsb_logs_lock(void);
void mmsb_logs_unlock(void);
/* Folds every thread's log into the bitmaps; the logs locked and the
 * writers quiescent. */
void mmsb_logs_flush_all(void);
/* The entries waiting in one thread's log. */
typedef struct mmsb_log_seg { const uint64_t *e; size_t n; } mmsb_log_seg;
/* Points (*segs)[i] (grown, capacity *cap) at every non-empty thread log:
 * their number, or SIZE_MAX when memory is short.  The entries stay in the
 * logs until mmsb_logs_clear.  The logs locked, writers quiescent. */
size_t mmsb_logs_segs(mmsb_log_seg **segs, size_t *cap);
/* Empties every thread's log (its entries were taken); the logs locked. */
void mmsb_logs_clear(void);
/* Folds entries (taken from the logs) into the bitmaps; mmsb_mark_lock. */
void mmsb_logs_fold(const uint64_t *e, size_t n);
uint64_t mmsb_outside_count(void);

/* ---- regions ---- */
struct mmsb_region {
  mmsb_bus *bus;
  char name[MMSB_NAME_MAX + 1];
  uint32_t id;
  unsigned flags;
  uint8_t *data;
  size_t size;       /* bytes the user asked for */
  size_t map_size;   /* size rounded up to pages */
  int win;           /* window index */
  uintptr_t win_off; /* data - window lo */
  bool owned;        /* memory from the arena (false: a static global) */
  int fd;            /* mapped file, -1 when anonymous */
  uint8_t *shadow_copy; /* MMSB_VERIFY: the bytes at the last commit */
  uint64_t *page_c;  /* digest contribution of each page (digest.c) */
  uint64_t digest;   /* XOR of page_c */
  bool recovered;    /* made by recovery, not yet claimed by the program */
  struct mmsb_node *producer;   /* graph.c: the node that computes it */
  struct mmsb_node **consumers; /* graph.c: nodes it is an input of */
  unsigned nconsumers;
  size_t capconsumers;
  bool logged;       /* its REGION record is in the log */
};

/* ---- router.c: the sinks an epoch reaches, in stage order ---- */
enum mmsb_stage {
  MMSB_STAGE_PROPAGATE = 0, /* derived deltas join the batch */
  MMSB_STAGE_LOG = 1,       /* write-ahead: before anyone sees the epoch */
  MMSB_STAGE_MIRROR = 2,    /* device copies */
  MMSB_STAGE_SUBSCRIBE = 3  /* user callbacks */
};
typedef int (*mmsb_sink_fn)(void *ctx, mmsb_bus *bus, const mmsb_batch *b);
typedef struct mmsb_sink {
  unsigned id;
  int stage;
  mmsb_sink_fn fn;
  void *ctx;
} mmsb_sink;
int mmsb_router_add(mmsb_bus *bus, int stage, mmsb_sink_fn fn, void *ctx,
                    unsigned *id);
int mmsb_router_remove(mmsb_bus *bus, unsigned id);
void mmsb_router_free(mmsb_bus *bus);
void mmsb_graph_free(mmsb_bus *bus);
/* The node frees its context with free_ctx when it goes. */
void mmsb_node_own_ctx(mmsb_node *n, void (*free_ctx)(void *));
/* Inside a commit (commit.c).  Nodes, GPU nodes' launches and subscribers
 * run inside their bus's commit, on its thread or the pool's, while it
 * walks the graph, the router's sinks and the mirrors: enter marks the
 * calling thread as in bus's commit (returning what to leave with; a
 * thread already in it keeps what it had), and refuse_inside makes a call
 * that would change those (or commit again) MMSB_EBUSY there. */
typedef struct mmsb_inside {
  const mmsb_bus *bus;
  bool holds; /* its lock: the committing thread, not a pool thread */
} mmsb_inside;
mmsb_inside mmsb_enter_commit(const mmsb_bus *bus, bool holds_lock);
void mmsb_leave_commit(mmsb_inside was);
int mmsb_refuse_inside(const mmsb_bus *bus, const char *what);
/* Takes bus's lock for an API call (0), or MMSB_EBUSY on a pool thread
 * inside the bus's commit: the lock is the committing thread's, which
 * waits for this one. */
int mmsb_bus_lock(mmsb_bus *bus, const char *what);
/* Destroys the mirrors the program left when the bus closes (mirror.c);
 * after mmsb_graph_free, whose GPU nodes let go of their mirrors. */
void mmsb_mirrors_free(mmsb_bus *bus);
/* A mirror of region r, or NULL (mirror.c; the bus's lock held). */
struct mmsb_mirror *mmsb_mirror_of(const mmsb_bus *bus, const mmsb_region *r);
/* The node's name (graph.c). */
const char *mmsb_node_name(const mmsb_node *n);
/* Staging during a parallel fill (collect_logs.c; device.h says how):
 * begin says that m's region's deltas of epoch e will be batch bytes
 * [first, first + len), n deltas, one a page (false: m will not stage
 * them); piece stages batch bytes [from, from + len) (src) and deltas
 * [d, d + nd) of them (index: their batch offsets); send sends bytes
 * [from, from + len) and deltas [d, d + nd).  apply at the mirror stage
 * only launches when the batch still holds exactly those deltas. */
bool mmsb_mirror_stage_begin(struct mmsb_mirror *m, mmsb_epoch_t e, size_t first, size_t len,
                             size_t n);
void mmsb_mirror_stage_piece(struct mmsb_mirror *m, const uint8_t *src, size_t from, size_t len,
                             const size_t *index, size_t d, size_t nd);
void mmsb_mirror_stage_send(struct mmsb_mirror *m, const uint8_t *src, size_t from, size_t len,
                            size_t d, size_t nd);
const mmsb_region *mmsb_mirror_region(const struct mmsb_mirror *m);
/* Before a commit writes the batch: forgets what was staged (an epoch that
 * failed after its fill is collected again, maybe without staging) and
 * waits for copies that may still read the batch (pinned batches). */
void mmsb_mirrors_prepare(mmsb_bus *bus);

/* A queued accumulating delta (mmsb_accumulate). */
typedef struct mmsb_accum {
  uint32_t region_id;
  uint8_t op, type;
  size_t offset, len; /* bytes */
  uint8_t *values;
  uint64_t seq;
} mmsb_accum;

/* Growable byte buffer; mem: where its memory comes from (device.h; NULL:
 * malloc), kept when the buffer is freed. */
typedef struct mmsb_buf {
  uint8_t *p;
  size_t len, cap;
  const struct mmsb_mem *mem;
} mmsb_buf;
int mmsb_buf_reserve(mmsb_buf *b, size_t extra);
/* Moves b's bytes into memory from mem (b unchanged when short). */
int mmsb_buf_use(mmsb_buf *b, const struct mmsb_mem *mem);
void *mmsb_grow(void *arr, size_t *cap, size_t need, size_t elem);
void mmsb_buf_free(mmsb_buf *b);

struct mmsb_batch {
  mmsb_buf bytes;      /* header + deltas in the format of docs/format.md */
  mmsb_buf spare;      /* mmsb_batch_sort's second buffer, kept for reuse */
  size_t *index;       /* byte offset of each delta */
  size_t count, index_cap;
  bool owned;          /* freed by mmsb_batch_free */
  /* Deltas [0, ordered) are the collection's: regions in id order, pages
   * ascending, one delta a page; runs and whole count their runs and whole
   * pages.  Consumers use that instead of reading every header (0 after a
   * sort, and in batches not made by commit). */
  size_t ordered;
  uint64_t runs, whole;
};

struct mmsb_bus {
  pthread_mutex_t lock;    /* regions, subscribers, accumulations */
  mmsb_config cfg;
  char *dir;
  mmsb_region **regions;   /* by id - 1 */
  mmsb_nameidx names;      /* regions by name */
  uint32_t nregions;
  size_t cap_regions;
  _Atomic mmsb_epoch_t epoch;
  mmsb_sink *sinks;          /* sorted by stage, then registration */
  unsigned nsinks, next_sink_id;
  size_t cap_sinks;
  mmsb_accum *accums;
  size_t naccums, cap_accums;
  uint64_t accum_seq;
  mmsb_batch batch;        /* reused between commits */
  mmsb_stats stats;
  uint64_t verify_last;
  bool is_default;
  struct mmsb_tlog *log;   /* NULL: in memory */
  bool read_only;          /* a replay view: no commits */
  mmsb_epoch_t replay_stop; /* a replay view's epoch (0: the last) */
  struct mmsb_graph *graph;  /* propagation nodes (graph.c) */
  mmsb_batch *cur_batch;     /* during propagation: the epoch being built */
  struct mmsb_mirror **mirrors; /* live mirrors (mirror.c) */
  struct mmsb_trace *trace;     /* MMSB_TRACE (trace.c) */
  unsigned nmirrors;
  size_t cap_mirrors;
  uint64_t bitmap_gen_seen; /* mmsb_bitmap_gen after its last bitmap collection */
};

/* The graph as a GRAPH record payload, if it changed since the last call
 * (returns 1; 0 when unchanged). */
int mmsb_graph_serialize(mmsb_bus *bus, mmsb_buf *out);

/* Bytes of region page `page` (the last page may be short). */
static inline size_t mmsb_region_page_len(const mmsb_region *r, size_t page) {
  return mmsb_page_len(r->size, page);
}

/* The address of a mark log entry (mmsb_abi.h: address | (length-1) << 48). */
static inline uintptr_t mmsb_log_entry_addr(uint64_t e) {
  return (uintptr_t)(e & (((uint64_t)1 << MMSB_LOG_LEN_SHIFT) - 1));
}

/* ---- delta.c / batch.c ---- */
int mmsb_batch_begin(mmsb_batch *b, mmsb_epoch_t epoch);
/* Appends one encoded delta (header + body); keeps the index. */
int mmsb_batch_append(mmsb_batch *b, const uint8_t *enc, size_t len);
/* Reserves room for a delta of up to `max` bytes; returns its start. */
uint8_t *mmsb_batch_reserve(mmsb_batch *b, size_t max);
int mmsb_batch_commit_reserved(mmsb_batch *b, size_t len);
/* Room for n more deltas, `bytes` in all, written by the caller at
 * bytes.p + bytes.len with their offsets at index[count..]; then
 * mmsb_batch_commit_many makes them part of the batch. */
int mmsb_batch_reserve_many(mmsb_batch *b, size_t n, size_t bytes);
void mmsb_batch_commit_many(mmsb_batch *b, size_t n, size_t bytes);
void mmsb_batch_finish(mmsb_batch *b);
int mmsb_batch_sort(mmsb_batch *b);
int mmsb_batch_view(const void *bytes, size_t len, mmsb_batch *b);
void mmsb_batch_view_free(mmsb_batch *b);
void mmsb_batch_delta_trusted(const mmsb_batch *b, size_t i, mmsb_delta *d);
void mmsb_batch_reset(mmsb_batch *b);
/* Writes a delta's 24-byte header (docs/format.md).  Inline: collection
 * writes one for every dirty page. */
static inline void mmsb_delta_write_header(uint8_t *o, uint32_t region, uint64_t page, int op,
                                           int type, int whole, uint32_t nruns,
                                           uint32_t body_len) {
  memcpy(o, &region, 4);
  o[4] = (uint8_t)op;
  o[5] = (uint8_t)type;
  o[6] = whole ? MMSB_FORM_PAGE : MMSB_FORM_RUNS;
  o[7] = 0;
  memcpy(o + 8, &page, 8);
  memcpy(o + 16, &nruns, 4);
  memcpy(o + 20, &body_len, 4);
}
/* Writes a run's 4-byte header (docs/format.md: offset u16, length u16),
 * as one store: the host is little-endian, as the header above assumes. */
static inline void mmsb_run_write_header(uint8_t *o, uint16_t off, uint16_t len) {
  uint32_t h = (uint32_t)off | (uint32_t)len << 16;
  memcpy(o, &h, 4);
}
int mmsb_type_size(int type);
void mmsb_accumulate_bytes(uint8_t *dst, const uint8_t *src, size_t bytes,
                           int op, int type);
/* MMSB_ERANGE (and the detail) when a run of d ends past page_len. */
int mmsb_delta_check_runs(const mmsb_delta *d, size_t page_len);
/* Applies d to a page its runs are known to fit (checked, or made here). */
void mmsb_delta_apply_trusted(const mmsb_delta *d, uint8_t *page);
/* Lays len bytes of src (elements of `type`) at page offset `at` over a
 * page image (mask: the bytes it holds, values): an accumulating op
 * combines with the elements the mask already covers and copies the rest,
 * ASSIGN copies; the mask then covers them all. */
void mmsb_overlay(uint8_t *mask, uint8_t *values, size_t at, const uint8_t *src, size_t len,
                  int op, int type);
bool mmsb_op_valid(int op, int type);

/* ---- commit.c / verify.c / accumulate.c ---- */
int mmsb_collect_region(mmsb_bus *bus, mmsb_region *r, mmsb_batch *b);
/* Collects every region of the bus into b, from the mark logs when all
 * pending marks are still there, else from the bitmaps; the logs locked
 * (mmsb_logs_lock). */
int mmsb_collect_all(mmsb_bus *bus, mmsb_batch *b);
/* The first way (collect_logs.c); MMSB_COLLECT_BITMAPS when memory is
 * short, the marks crowd into one bucket or are cut into too many pieces,
 * before it took them: they are still in the logs. */
#define MMSB_COLLECT_BITMAPS 1
int mmsb_collect_logs(mmsb_bus *bus, mmsb_batch *b);
/* The trace events of a collection from the logs: its partition (or copy)
 * from t0, sort and size from t1, fill from t2 to now. */
void mmsb_trace_logs_steps(mmsb_bus *bus, const mmsb_batch *b, uint64_t t0, uint64_t t1,
                           uint64_t t2, size_t deltas);
/* collect_tiny.c: an epoch of n entries (segs) collected on this thread in
 * one pass, [lo, hi) the span of the bus's regions; MMSB_COLLECT_GENERAL
 * when it is not one for that way (an entry crosses a page or the span's
 * edge), the logs untouched. */
#define MMSB_COLLECT_GENERAL 2
int mmsb_collect_tiny(mmsb_bus *bus, mmsb_batch *b, const mmsb_log_seg *segs, size_t nsegs,
                      size_t n, uintptr_t lo, uintptr_t hi);
/* Counts for the tests, that the ways they test were taken: epochs the
 * one-thread way collected (collect_tiny.c), and mirror applies that only
 * launched what the fill had staged (mirror.c).  Relaxed; never reset. */
extern _Atomic uint64_t mmsb_tiny_epochs, mmsb_staged_applies;
/* The same for the CUDA backend's apply kernels of a lane a delta
 * (cuda/backend.cu): launches of either, and of the one that reads host
 * memory.  Plain integers, defined in mirror.c so that builds without CUDA
 * link, and added to with __atomic builtins (C++ there). */
extern uint64_t mmsb_lane_launches, mmsb_lane_mapped_launches;
/* env.c: the number in environment variable `name` ([-]DIGITS, then
 * optionally K, M or G: times 1024^1..3) into *out when it is set and lies
 * in [min, max]; false when unset or empty, and false with a line on
 * stderr (mmsb_env_complain) when set to anything else (the caller keeps
 * its default).
 * mmsb_parse_number: the same for a string, silently. */
bool mmsb_env_number(const char *name, long long min, long long max, long long *out);
bool mmsb_parse_number(const char *v, long long min, long long max, long long *out);
/* The line on stderr for setting `name` (static storage) set to `value`,
 * "mmsb: NAME='VALUE' " then fmt: once per process for each value. */
void mmsb_env_complain(const char *name, const char *value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* sort_entries.c: sorts log entries e[0..n) by granule counted from base
 * (keys below 2^bits), through tmp (n entries). */
void mmsb_sort_entries(uint64_t *e, uint64_t *tmp, size_t n, uintptr_t base, unsigned bits);
int mmsb_verify_region_init(mmsb_region *r);
uint64_t mmsb_verify_commit(mmsb_bus *bus, const mmsb_batch *b);
int mmsb_accum_flush(mmsb_bus *bus, mmsb_batch *b);
void mmsb_accum_free(mmsb_bus *bus);
int mmsb_route(mmsb_bus *bus, const mmsb_batch *b, int first_stage, int last_stage);

/* ---- region.c ---- */
int mmsb_region_attach(mmsb_bus *bus, const char *name, void *addr,
                       size_t size, mmsb_region **out);
void mmsb_region_release(mmsb_region *r);
mmsb_region *mmsb_region_lookup(mmsb_bus *bus, const char *name);

uint64_t mmsb_now_ns(void);

/* ---- tlog.c / recover.c / checkpoint.c / digest.c: durability ---- */
int mmsb_bus_attach_log(mmsb_bus *bus);
int mmsb_bus_detach_log(mmsb_bus *bus);
/* Writes the REGION record of r (a new region on a logging bus). */
int mmsb_log_region(mmsb_bus *bus, mmsb_region *r);
/* A REGION record's payload (docs/format.md), read and checked. */
typedef struct mmsb_region_rec {
  uint32_t id, flags;
  uint64_t size;
  char name[MMSB_NAME_MAX + 1];
  const uint8_t *image;   /* flags & 1 (a global): its size initial bytes */
} mmsb_region_rec;
int mmsb_region_record_read(const uint8_t *p, uint64_t len, mmsb_region_rec *out);
/* Recovers dir into bus: newest valid checkpoint at or before stop_at, then
 * the log up to stop_at (0: all).  write: cut a torn tail off the files. */
typedef struct mmsb_recover_opts {
  mmsb_epoch_t stop_at;
  bool write;
  bool salvage;
  char last_seg[64];      /* out: the last segment's name ("" none) */
  uint64_t last_seg_end;  /* out: its valid length */
} mmsb_recover_opts;
int mmsb_recover(mmsb_bus *bus, int dirfd, mmsb_recover_opts *o, mmsb_recovery *rec);
/* Creates a region that recovery found (arena memory, zero-filled). */
int mmsb_region_recover(mmsb_bus *bus, uint32_t id, const char *name,
                        size_t size, mmsb_region **out);
int mmsb_digest_region_init(mmsb_region *r);
/* Each valid record of dir's segments (type 0: a bad record at off). */
typedef int (*mmsb_scan_fn)(void *ctx, const char *seg, size_t off, int type,
                            mmsb_epoch_t epoch, const uint8_t *payload, uint64_t len);
int mmsb_log_scan(const char *dir, mmsb_scan_fn fn, void *ctx);
/* Digest changes of a batch: computes the new contribution of each page
 * the batch touches; apply them only once the epoch is durable. */
typedef struct mmsb_digest_delta {
  mmsb_region **regions;
  uint64_t *pages, *contrib;
  size_t n, cap;
  uint64_t digest;        /* the bus digest after the batch */
} mmsb_digest_delta;
int mmsb_digest_compute(mmsb_bus *bus, const mmsb_batch *b, mmsb_digest_delta *dd);
void mmsb_digest_apply(mmsb_digest_delta *dd);
void mmsb_digest_free(mmsb_digest_delta *dd);
uint64_t mmsb_page_contrib(const mmsb_region *r, size_t page);
void mmsb_digest_region_rehash(mmsb_region *r);

#endif
