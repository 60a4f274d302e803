/*
 * mirror.c - device copies of regions, kept at the bus's epoch by a sink at
 * the mirror stage (after the log: a mirror never holds an epoch the log
 * does not), and GPU nodes, whose output changes come back as deltas.
 *
 * A region's deltas are contiguous in a sorted batch, so the sink hands
 * the backend one byte range and the offsets of its deltas; the CUDA
 * backend copies them to the device from the (pinned) batch, or stages them
 * first, and applies them with one kernel launch, one warp per page.  A
 * parallel fill stages them as it writes them (mmsb_mirror_stage_*), and
 * the sink then only launches.
 */
#include "internal.h"
#include "device.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct mmsb_mirror {
  mmsb_bus *bus;
  mmsb_region *r;
  const mmsb_dev_ops *ops;
  int device;               /* the CUDA device; -1 on the host backend */
  void *stream;
  void *dptr, *dprev;       /* dprev: the last version, for diffs (GPU outputs) */
  /* The epoch whose deltas it has already (queued on its stream): written
   * by commits, read by mmsb_mirror_wait on any thread. */
  _Atomic mmsb_epoch_t applied;
  size_t *index;            /* the region's deltas, when the batch's index won't do */
  size_t cap_index;
  unsigned sink_id;
  /* What the fill staged (mmsb_mirror_stage_*): the epoch (0: none), and
   * where the region's deltas were in the batch. */
  mmsb_epoch_t staged;
  size_t staged_first, staged_len, staged_n;
  _Atomic bool stage_failed; /* a send failed: apply stages again */
  int users;                 /* GPU nodes that read or write it (the bus's lock) */
};

/* How many of the batch's collected deltas (region order) are of regions
 * with ids below id. */
static size_t ordered_below(const mmsb_batch *b, uint32_t id) {
  size_t lo = 0, hi = b->ordered;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    mmsb_delta d;
    mmsb_batch_delta_trusted(b, mid, &d);
    if (d.region_id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* A region's deltas to apply: g->n of them, at g->index[i] in the batch,
 * all inside bytes [g->first, g->first + g->len). */
typedef struct gathered {
  const size_t *index;
  size_t n, first, len;
  bool one_per_page; /* no two share a page */
} gathered;

/* The region's deltas of a batch made by commit, without reading every
 * header: the collected ones are in region order (found by bisection) and
 * one a page, so they are a slice of the batch's own index; false when a
 * later delta (derived) is the region's too. */
static bool gather_ordered(const mmsb_mirror *m, const mmsb_batch *b, gathered *g) {
  mmsb_delta d;
  for (size_t i = b->ordered; i < b->count; i++) {
    mmsb_batch_delta_trusted(b, i, &d);
    if (d.region_id == m->r->id) return false;
  }
  size_t lo = ordered_below(b, m->r->id), end = ordered_below(b, m->r->id + 1);
  g->n = end - lo;
  g->index = g->n ? b->index + lo : NULL; /* no index before a bus's first delta */
  g->first = g->n ? b->index[lo] : 0;
  g->len = 0;
  if (g->n) {
    mmsb_batch_delta_trusted(b, end - 1, &d);
    g->len = b->index[end - 1] + MMSB_DELTA_HDR + d.body_len - g->first;
  }
  g->one_per_page = true;
  return true;
}

/* This epoch's deltas of m's region in b (any order: during propagation
 * the batch is not sorted yet), listed in m->index by page, stably. */
static int gather(mmsb_mirror *m, const mmsb_batch *b, gathered *g) {
  if (gather_ordered(m, b, g)) return MMSB_OK;
  size_t *o = mmsb_grow(m->index, &m->cap_index, b->count ? b->count : 1, sizeof *o);
  if (!o) return mmsb_fail(MMSB_ENOMEM, "mirror");
  m->index = o;
  size_t n = 0, first = SIZE_MAX, end = 0;
  bool sorted = true;
  uint64_t last = 0;
  for (size_t i = 0; i < b->count; i++) {
    mmsb_delta d;
    mmsb_batch_delta_trusted(b, i, &d);
    if (d.region_id != m->r->id) continue;
    sorted &= n == 0 || d.page >= last;
    last = d.page;
    if (b->index[i] < first) first = b->index[i];
    if (b->index[i] + MMSB_DELTA_HDR + d.body_len > end) end = b->index[i] + MMSB_DELTA_HDR + d.body_len;
    o[n++] = b->index[i];
  }
  /* By page, stably: during propagation derived and accumulated deltas of
   * a page may come after other pages' (insertion sort: nearly sorted). */
  for (size_t i = 1; !sorted && i < n; i++) {
    size_t oi = o[i];
    uint64_t pg;
    memcpy(&pg, b->bytes.p + oi + 8, 8);
    size_t j = i;
    for (; j > 0; j--) {
      uint64_t q;
      memcpy(&q, b->bytes.p + o[j - 1] + 8, 8);
      if (q <= pg) break;
      o[j] = o[j - 1];
    }
    o[j] = oi;
  }
  *g = (gathered){o, n, n ? first : 0, n ? end - first : 0, false};
  return MMSB_OK;
}

_Atomic uint64_t mmsb_staged_applies;
uint64_t mmsb_lane_launches, mmsb_lane_mapped_launches;

/* Whether the fill staged exactly the deltas g of epoch e (the batch may
 * have changed since: sorted, or derived deltas of the region added). */
static bool staged(const mmsb_mirror *m, mmsb_epoch_t e, const gathered *g) {
  return m->staged == e && g->one_per_page && !atomic_load(&m->stage_failed) &&
         g->first == m->staged_first && g->len == m->staged_len && g->n == m->staged_n;
}

/* Whether b's bytes are m's backend's own memory (pinned), which it may
 * copy to the device from where they are. */
static bool pinned(const mmsb_mirror *m, const mmsb_batch *b) {
  return m->ops->host_mem && b->bytes.mem == m->ops->host_mem;
}

/* Applies the gathered deltas of b to the copy at dst, on m's stream. */
static int apply_to(mmsb_mirror *m, const mmsb_batch *b, const gathered *g, void *dst,
                    bool was_staged) {
  return m->ops->apply(m->stream, dst, m->r->size, b->bytes.p + g->first, g->len, g->index,
                       g->first, g->n, g->one_per_page, mmsb_batch_epoch(b),
                       m->bus->cfg.commit_threads, was_staged, pinned(m, b));
}

/* Brings m to the epoch of b (once per epoch).  A GPU node's output keeps
 * its previous version in step: the node's diff must find what its kernel
 * changes from the region as the epoch left it, a program's store that
 * the kernel writes back to the old value included (else the host kept
 * the store and the mirror the old value).  Only a store into the output
 * of a GPU node gets here, which the node should be the one producer of. */
static int catch_up(mmsb_mirror *m, const mmsb_batch *b) {
  mmsb_epoch_t e = mmsb_batch_epoch(b);
  if (m->applied >= e) return MMSB_OK;
  gathered g = {NULL, 0, 0, 0, false};
  int rc = gather(m, b, &g);
  bool was_staged = !rc && g.n && staged(m, e, &g);
  if (was_staged) atomic_fetch_add_explicit(&mmsb_staged_applies, 1, memory_order_relaxed);
  if (!rc && g.n) rc = apply_to(m, b, &g, m->dptr, was_staged);
  if (!rc && g.n && m->dprev) rc = apply_to(m, b, &g, m->dprev, false);
  m->staged = 0;
  if (!rc) m->applied = e;
  return rc;
}

bool mmsb_mirror_stage_begin(mmsb_mirror *m, mmsb_epoch_t e, size_t first, size_t len, size_t n) {
  m->staged = 0;
  atomic_store(&m->stage_failed, false);
  if (!n || m->applied >= e || m->ops->stage_begin(m->stream, e, len, n, pinned(m, &m->bus->batch)))
    return false;
  m->staged = e;
  m->staged_first = first;
  m->staged_len = len;
  m->staged_n = n;
  return true;
}

void mmsb_mirror_stage_piece(mmsb_mirror *m, const uint8_t *src, size_t from, size_t len,
                             const size_t *index, size_t d, size_t nd) {
  m->ops->stage_piece(m->stream, m->staged, src, from - m->staged_first, len, index,
                      m->staged_first, d, nd);
}

void mmsb_mirror_stage_send(mmsb_mirror *m, const uint8_t *src, size_t from, size_t len, size_t d,
                            size_t nd) {
  if (m->ops->stage_send(m->stream, m->staged, src, from - m->staged_first, len, d, nd))
    atomic_store(&m->stage_failed, true);
}

const mmsb_region *mmsb_mirror_region(const mmsb_mirror *m) { return m->r; }

void mmsb_mirrors_prepare(mmsb_bus *bus) {
  for (unsigned i = 0; i < bus->nmirrors; i++) {
    mmsb_mirror *m = bus->mirrors[i];
    m->staged = 0;
    /* A stream that fails here is broken: its next apply or wait says so
     * (a mirror's failure does not fail the commit). */
    if (m->ops->settle && m->ops->settle(m->stream)) mmsb_clear_error();
  }
}

static int mirror_sink(void *ctx, mmsb_bus *bus, const mmsb_batch *b) {
  (void)bus;
  return catch_up(ctx, b);
}

/* The backend of a mirror on `device`.  A build without CUDA, or a machine
 * without a GPU, gets the host backend, so that a program written for a
 * GPU runs (and is tested) anywhere.  On a machine with GPUs, a device it
 * does not have is the caller's mistake, reported by open (MMSB_ENODEV):
 * falling back to the host there would hide it behind a copy ~100 times
 * slower. */
static const mmsb_dev_ops *pick(int device) {
  const mmsb_dev_ops *cuda = mmsb_dev_cuda();
  return device >= 0 && cuda && cuda->devices() > 0 ? cuda : &mmsb_dev_host;
}

int mmsb_mirror_create(mmsb_region *r, int device, mmsb_mirror **out) {
  if (!r || !out) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  mmsb_bus *bus = r->bus;
  if (mmsb_refuse_inside(bus, "mmsb_mirror_create")) return MMSB_EBUSY;
  if (device < -1) /* a typo or an unset variable, not "the bus's device" */
    return mmsb_fail(MMSB_EINVAL, "device %d (-1 is the bus's MMSB_DEVICE)", device);
  if (device == -1) device = bus->cfg.device;
  mmsb_mirror *m = calloc(1, sizeof *m);
  if (!m) return mmsb_fail(MMSB_ENOMEM, "mirror");
  m->bus = bus;
  m->r = r;
  m->ops = pick(device);
  int rc = m->ops->open(device, &m->stream);
  m->device = m->ops == &mmsb_dev_host ? -1 : device;
  if (!rc) rc = m->ops->alloc(m->stream, r->size, &m->dptr);
  pthread_mutex_lock(&bus->lock);
  if (!rc) rc = m->ops->upload(m->stream, m->dptr, r->data, r->size);
  if (!rc) {
    mmsb_mirror **t = mmsb_grow(bus->mirrors, &bus->cap_mirrors, (size_t)bus->nmirrors + 1, sizeof *t);
    if (t) bus->mirrors = t;
    else rc = mmsb_fail(MMSB_ENOMEM, "mirror table");
  }
  if (!rc) rc = mmsb_router_add(bus, MMSB_STAGE_MIRROR, mirror_sink, m, &m->sink_id);
  if (!rc && m->ops->host_mem) { /* pinned batches: kept as they are when short */
    if (mmsb_buf_use(&bus->batch.bytes, m->ops->host_mem) ||
        mmsb_buf_use(&bus->batch.spare, m->ops->host_mem))
      mmsb_clear_error();
  }
  if (!rc) bus->mirrors[bus->nmirrors++] = m;
  m->applied = atomic_load(&bus->epoch);
  pthread_mutex_unlock(&bus->lock);
  if (rc) {
    if (m->dptr) m->ops->free(m->stream, m->dptr);
    if (m->stream) m->ops->close(m->stream);
    free(m);
    return rc;
  }
  *out = m;
  return MMSB_OK;
}

int mmsb_mirror_wait(mmsb_mirror *m, mmsb_epoch_t e) {
  if (!m) return mmsb_fail(MMSB_EINVAL, "mirror is NULL");
  if (e > m->applied) return mmsb_fail(MMSB_ERANGE, "epoch %llu is not committed to this mirror "
                                       "(it has %llu)", (unsigned long long)e,
                                       (unsigned long long)m->applied);
  return m->ops->wait(m->stream, e);
}

void *mmsb_mirror_device_ptr(const mmsb_mirror *m) { return m ? m->dptr : NULL; }
const char *mmsb_mirror_backend(const mmsb_mirror *m) { return m ? m->ops->name : NULL; }

int mmsb_mirror_download(mmsb_mirror *m, void *dst) {
  if (!m || !dst) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  return m->ops->download(m->stream, dst, m->dptr, m->r->size);
}

struct mmsb_mirror *mmsb_mirror_of(const mmsb_bus *bus, const mmsb_region *r) {
  for (unsigned i = 0; i < bus->nmirrors; i++)
    if (bus->mirrors[i]->r == r) return bus->mirrors[i];
  return NULL;
}

int mmsb_mirror_destroy(mmsb_mirror *m) {
  if (!m) return mmsb_fail(MMSB_EINVAL, "mirror is NULL");
  mmsb_bus *bus = m->bus;
  if (mmsb_refuse_inside(bus, "mmsb_mirror_destroy")) return MMSB_EBUSY;
  pthread_mutex_lock(&bus->lock);
  if (m->users) { /* its GPU nodes would launch on freed memory */
    int users = m->users;
    pthread_mutex_unlock(&bus->lock);
    return mmsb_fail(MMSB_EBUSY, "the mirror of region '%s' is used by %d GPU node%s: remove %s first",
                     m->r->name, users, users > 1 ? "s" : "", users > 1 ? "them" : "it");
  }
  mmsb_router_remove(bus, m->sink_id);
  for (unsigned i = 0; i < bus->nmirrors; i++)
    if (bus->mirrors[i] == m) {
      bus->mirrors[i] = bus->mirrors[--bus->nmirrors];
      break;
    }
  pthread_mutex_unlock(&bus->lock);
  m->ops->wait(m->stream, m->applied);
  m->ops->free(m->stream, m->dptr);
  if (m->dprev) m->ops->free(m->stream, m->dprev);
  m->ops->close(m->stream);
  free(m->index);
  free(m);
  return MMSB_OK;
}

/* ---- GPU nodes ---- */
#define MAX_IO 16
typedef struct gpu_node {
  mmsb_bus *bus;
  mmsb_gpu_launch_fn launch;
  void *ctx;
  mmsb_mirror *in[MAX_IO], *out[MAX_IO];
  int nin, nout;
} gpu_node;

/* Writes a diff's changed granules into the host region and marks them:
 * one copy and one mark per run of granules. */
static void take_back(mmsb_mirror *m, const mmsb_diff *d) {
  mmsb_region *r = m->r;
  const uint64_t *data = d->data;
  for (size_t i = 0; i < d->npages; i++) {
    const uint64_t *mask = d->pages[i].mask;
    size_t start = d->pages[i].page * MMSB_PAGE_SIZE;
    for (unsigned g = 0; g < 512;) {
      if (!(mask[g >> 6] >> (g & 63) & 1)) { g++; continue; }
      unsigned e = g;
      while (e < 512 && (mask[e >> 6] >> (e & 63) & 1)) e++;
      size_t a = start + g * 8ul, l = (e - g) * 8ul;
      if (a < r->size) {
        if (l > r->size - a) l = r->size - a;
        memcpy(r->data + a, data, l);
        mmsb_mark_range((uintptr_t)r->data + a, l);
      }
      data += e - g;
      g = e;
    }
  }
}

static int gpu_run(void *ctx) {
  gpu_node *g = ctx;
  const mmsb_batch *b = g->bus->cur_batch;
  void *in[MAX_IO], *out[MAX_IO];
  int rc = MMSB_OK;
  for (int i = 0; i < g->nin && !rc; i++) {
    rc = catch_up(g->in[i], b);
    if (!rc) rc = g->in[i]->ops->wait(g->in[i]->stream, g->in[i]->applied);
    in[i] = g->in[i]->dptr;
  }
  /* The outputs too: a store of the program into an output region in this
   * epoch (the node should be its one producer) would otherwise never
   * reach the mirror, which counts as holding the epoch once the node has
   * run, and the two would differ from then on.  Where the node writes
   * the same bytes, its values win in both.  The launch goes to output
   * 0's stream, behind that mirror's apply; the others are waited for. */
  for (int i = 0; i < g->nout && !rc; i++) {
    rc = catch_up(g->out[i], b);
    if (!rc && i > 0) rc = g->out[i]->ops->wait(g->out[i]->stream, g->out[i]->applied);
    out[i] = g->out[i]->dptr;
  }
  if (rc) return rc;
  const mmsb_dev_ops *ops = g->out[0]->ops;
  void *stream = ops->native(g->out[0]->stream);
  int token = ops->enter(g->out[0]->stream); /* its kernels go to the mirrors' device */
  int failed = g->launch(g->ctx, stream, in, out);
  ops->leave(token);
  if (failed) return mmsb_fail(MMSB_ENODE, "its launch function returned %d", failed);
  for (int i = 0; i < g->nout && !rc; i++) {
    mmsb_mirror *m = g->out[i];
    mmsb_diff d;
    rc = m->ops->diff(m->stream, m->dptr, m->dprev, m->r->size, &d);
    if (!rc) take_back(m, &d);
    m->applied = mmsb_batch_epoch(b); /* it holds this epoch's output already */
  }
  return rc;
}

/* A GPU node's kernels run on one device and read and write its mirrors
 * there (no peer access is set up). */
static bool same_device(const mmsb_mirror *a, const mmsb_mirror *b) {
  return b && a->ops == b->ops && a->device == b->device;
}

/* A GPU node's hold on mirror m (in *slot): m cannot be destroyed while
 * the node is there.  Under the bus's lock, as mmsb_mirror_destroy reads
 * the count. */
static void hold(mmsb_mirror **slot, mmsb_mirror *m) {
  pthread_mutex_lock(&m->bus->lock);
  m->users++;
  pthread_mutex_unlock(&m->bus->lock);
  *slot = m;
}

/* The node's context goes with the node: its holds go too. */
static void gpu_node_free(void *ctx) {
  gpu_node *g = ctx;
  pthread_mutex_lock(&g->bus->lock);
  for (int i = 0; i < MAX_IO; i++) {
    if (g->in[i]) g->in[i]->users--;
    if (g->out[i]) g->out[i]->users--;
  }
  pthread_mutex_unlock(&g->bus->lock);
  free(g);
}

int mmsb_gpu_node_create(mmsb_bus *bus, const char *name, mmsb_gpu_launch_fn launch,
                         void *ctx, mmsb_mirror *const *in, int nin,
                         mmsb_mirror *const *out, int nout, mmsb_node **node) {
  if (!bus || !launch || nin < 0 || nout < 1 || nin > MAX_IO || nout > MAX_IO ||
      (nin && !in) || !out || !node)
    return mmsb_fail(MMSB_EINVAL, "GPU node '%s': bad arguments", name ? name : "?");
  *node = NULL;
  gpu_node *g = calloc(1, sizeof *g);
  if (!g) return mmsb_fail(MMSB_ENOMEM, "GPU node");
  *g = (gpu_node){bus, launch, ctx, {0}, {0}, nin, nout};
  int rc = mmsb_node_create(bus, name, gpu_run, g, node);
  if (!rc) mmsb_node_own_ctx(*node, gpu_node_free);
  for (int i = 0; !rc && i < nin; i++) {
    rc = in[i] && in[i]->bus == bus && same_device(in[i], out[0])
             ? mmsb_node_input(*node, in[i]->r)
             : mmsb_fail(MMSB_EINVAL, "input mirror %d: NULL, another bus's, or not on output "
                         "mirror 0's device", i);
    if (!rc) hold(&g->in[i], in[i]);
  }
  for (int i = 0; !rc && i < nout; i++) {
    mmsb_mirror *m = out[i];
    rc = m && m->bus == bus && same_device(m, out[0])
             ? mmsb_node_output(*node, m->r, MMSB_DETECT_STORES)
             : mmsb_fail(MMSB_EINVAL, "output mirror %d: NULL, another bus's, or not on output "
                         "mirror 0's device", i);
    if (!rc) hold(&g->out[i], m);
    if (!rc && !m->dprev) {
      rc = m->ops->alloc(m->stream, m->r->size, &m->dprev);
      if (!rc) rc = m->ops->copy(m->stream, m->dprev, m->dptr, m->r->size);
    }
  }
  if (rc) {
    if (*node) mmsb_node_remove(*node); /* frees g with it */
    else free(g);
    *node = NULL;
  }
  return rc;
}

void mmsb_mirrors_free(mmsb_bus *bus) {
  while (bus->nmirrors) mmsb_mirror_destroy(bus->mirrors[bus->nmirrors - 1]);
  free(bus->mirrors);
  bus->mirrors = NULL;
  bus->cap_mirrors = 0;
}
