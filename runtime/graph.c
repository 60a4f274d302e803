/*
 * graph.c - the propagation graph: nodes compute derived regions from
 * input regions, at the propagation stage of every commit.
 *
 * Nodes run in height order (1 + the greatest height of the producers of
 * their inputs), each at most once per epoch, and only if an input changed
 * in this epoch, by the program's stores or by a node below, or if the node
 * is new (or got a new edge) since the last commit.  After a node
 * runs, its output changes (found by diff, declared whole, or marked by
 * instrumented stores) become deltas of the same epoch; a node whose
 * outputs did not change stops propagation there (cutoff).  The log then
 * has the derived deltas too, so replay needs no node code.
 */
#include "internal.h"

#include <dlfcn.h>
#include <ffi.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EDGES 64

struct mmsb_node {
  mmsb_bus *bus;
  char name[MMSB_NAME_MAX + 1];
  unsigned id;
  mmsb_node_fn fn;           /* callback form */
  void *ctx;
  void (*free_ctx)(void *);  /* set for contexts the runtime made (GPU nodes) */
  void (*ffn)(void);         /* libffi form */
  ffi_cif cif;
  ffi_type *types[MAX_EDGES];
  mmsb_arg args[MAX_EDGES];
  int nargs, ret_int;
  mmsb_region *in[MAX_EDGES], *out[MAX_EDGES];
  int detect[MAX_EDGES];
  int nin, nout, height;
  bool fresh;                /* new or rewired: runs at the next commit */
  uint64_t queued;           /* the round it was last queued in */
  unsigned visited;          /* cycle search stamp */
  unsigned raised;           /* raise_plan stamp: new_height is this plan's */
  int new_height;
  struct mmsb_node *parent;  /* cycle search path */
  uint8_t *snap[MAX_EDGES];  /* DIFF: outputs before the run */
  char why[256];             /* the detail of its last failure ("" if none given) */
};

typedef struct mmsb_graph {
  mmsb_node **nodes;
  unsigned n, next_id;
  size_t cap;
  unsigned sink_id;
  unsigned visit;            /* cycle search stamp */
  unsigned raise_stamp;      /* raise_plan stamp */
  mmsb_node **plan;          /* raise_plan's nodes, to raise */
  size_t nplan, capplan;
  bool changed;              /* since the last GRAPH record */
  mmsb_nameidx names;        /* nodes by name */
  mmsb_node **heap;          /* this epoch's work list */
  mmsb_node **level;         /* the nodes of one height, being run */
  int *ok;                   /* their status: 0 ran, else failed */
  uint64_t round;            /* propagation rounds, for queue stamps */
  size_t caplevel, capok;
  unsigned nheap;
  size_t capheap;
} mmsb_graph;

/* Depth-first from `from` along node -> consumers, iteratively (graphs can
 * be a million nodes deep); true if `to` is reached.  The path, to name the
 * cycle, is rebuilt from parent links into path[] (at most 64 names). */
static bool reaches(mmsb_graph *g, mmsb_node *from, mmsb_node *to, const char **path) {
  unsigned stamp = ++g->visit;
  size_t cap = 64, n = 0;
  mmsb_node **stack = malloc(cap * sizeof *stack);
  if (!stack) return true; /* out of memory: refuse the edge rather than risk a cycle */
  from->visited = stamp;
  from->parent = NULL;
  stack[n++] = from;
  bool found = false;
  while (n && !found) {
    mmsb_node *x = stack[--n];
    if (x == to) { found = true; break; }
    for (int k = 0; k < x->nout && !found; k++)
      for (unsigned i = 0; i < x->out[k]->nconsumers; i++) {
        mmsb_node *y = x->out[k]->consumers[i];
        if (y->visited == stamp) continue;
        y->visited = stamp;
        y->parent = x;
        if (n == cap) {
          mmsb_node **t = realloc(stack, (cap *= 2) * sizeof *t);
          if (!t) { free(stack); return true; }
          stack = t;
        }
        stack[n++] = y;
      }
  }
  free(stack);
  if (found) { /* to, parent(to), ..., from: reversed into path */
    int len = 0;
    const char *rev[64];
    for (mmsb_node *x = to; x && len < 63; x = x->parent) rev[len++] = x->name;
    for (int i = 0; i < len; i++) path[i] = rev[len - 1 - i];
    path[len] = NULL;
  }
  return found;
}

static int cycle_error(const char **path, const char *closing) {
  char msg[400];
  size_t at = 0;
  for (int i = 0; path[i] && at < sizeof msg - 80; i++)
    at += (size_t)snprintf(msg + at, sizeof msg - at, "%s -> ", path[i]);
  snprintf(msg + at, sizeof msg - at, "%s", closing);
  return mmsb_fail(MMSB_ECYCLE, "edge refused, it closes the cycle %s", msg);
}

static int height_of(const mmsb_graph *g, const mmsb_node *n) {
  return n->raised == g->raise_stamp && n->new_height > n->height ? n->new_height : n->height;
}

/* Adds y to the plan at height h, unless it is that high already. */
static int plan_push(mmsb_graph *g, mmsb_node *y, int h) {
  if (height_of(g, y) >= h) return MMSB_OK;
  mmsb_node **t = mmsb_grow(g->plan, &g->capplan, g->nplan + 1, sizeof *t);
  if (!t) return mmsb_fail(MMSB_ENOMEM, "graph heights");
  g->plan = t;
  y->raised = g->raise_stamp;
  y->new_height = h;
  g->plan[g->nplan++] = y;
  return MMSB_OK;
}

/* Plans raising node n (or, with n NULL, every consumer of region r) to
 * height h, and their consumers after them (edges only ever raise heights;
 * a removed node leaves heights that are still a valid order).  Nothing
 * changes until raise_apply, so an edge refused for lack of memory leaves
 * the graph as it was.  Iterative: graphs can be a million nodes deep. */
static int raise_plan(mmsb_graph *g, mmsb_node *n, const mmsb_region *r, int h) {
  g->nplan = 0;
  ++g->raise_stamp;
  int rc = MMSB_OK;
  if (n) rc = plan_push(g, n, h);
  for (unsigned i = 0; !n && !rc && i < r->nconsumers; i++) rc = plan_push(g, r->consumers[i], h);
  for (size_t at = 0; !rc && at < g->nplan; at++) { /* the plan is its own work list */
    mmsb_node *x = g->plan[at];
    int hx = height_of(g, x);
    for (int k = 0; !rc && k < x->nout; k++)
      for (unsigned i = 0; !rc && i < x->out[k]->nconsumers; i++)
        rc = plan_push(g, x->out[k]->consumers[i], hx + 1);
  }
  if (rc) g->nplan = 0;
  return rc;
}

static void raise_apply(mmsb_graph *g) {
  for (size_t i = 0; i < g->nplan; i++) g->plan[i]->height = height_of(g, g->plan[i]);
  g->nplan = 0;
}

/* ---- the epoch's work list: a binary heap by (height, id) ---- */
static bool before(const mmsb_node *a, const mmsb_node *b) {
  return a->height != b->height ? a->height < b->height : a->id < b->id;
}

static int heap_push(mmsb_graph *g, mmsb_node *n, uint64_t round) {
  if (n->queued == round) return MMSB_OK; /* at most once per round */
  mmsb_node **h = mmsb_grow(g->heap, &g->capheap, g->nheap + 1, sizeof *h);
  if (!h) return mmsb_fail(MMSB_ENOMEM, "propagation queue");
  g->heap = h;
  n->queued = round;
  unsigned i = g->nheap++;
  while (i && before(n, g->heap[(i - 1) / 2])) {
    g->heap[i] = g->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  g->heap[i] = n;
  return MMSB_OK;
}

static mmsb_node *heap_pop(mmsb_graph *g) {
  mmsb_node *top = g->heap[0], *last = g->heap[--g->nheap];
  unsigned i = 0;
  for (;;) {
    unsigned c = 2 * i + 1;
    if (c >= g->nheap) break;
    if (c + 1 < g->nheap && before(g->heap[c + 1], g->heap[c])) c++;
    if (!before(g->heap[c], last)) break;
    g->heap[i] = g->heap[c];
    i = c;
  }
  if (g->nheap) g->heap[i] = last;
  return top;
}

static int push_consumers(mmsb_graph *g, mmsb_region *r, uint64_t round) {
  for (unsigned i = 0; i < r->nconsumers; i++) {
    int rc = heap_push(g, r->consumers[i], round);
    if (rc) return rc;
  }
  return MMSB_OK;
}

static int run_node(mmsb_node *n) {
  if (n->fn) return n->fn(n->ctx);
  void *vals[MAX_EDGES];
  void *ptrs[MAX_EDGES];
  size_t sizes[MAX_EDGES];
  for (int i = 0; i < n->nargs; i++) {
    mmsb_arg *a = &n->args[i];
    switch (a->kind) {
    case MMSB_ARG_IN: case MMSB_ARG_OUT:
      ptrs[i] = mmsb_region_data(a->region);
      vals[i] = &ptrs[i];
      break;
    case MMSB_ARG_SIZE:
      sizes[i] = mmsb_region_size(a->region);
      vals[i] = &sizes[i];
      break;
    default: vals[i] = &a->v; break; /* little-endian: the union's start */
    }
  }
  ffi_arg ret = 0;
  ffi_call(&n->cif, n->ffn, &ret, vals);
  return n->ret_int ? (int)ret : 0;
}

/* Turns a node's output changes into marks, then deltas appended to b.
 * Returns the number of deltas (0: cutoff). */
static int collect_outputs(mmsb_graph *g, mmsb_node *n, mmsb_batch *b, size_t *ndeltas) {
  size_t before = b->count;
  *ndeltas = 0;
  for (int k = 0; k < n->nout; k++) {
    mmsb_region *r = n->out[k];
    if (n->detect[k] == MMSB_DETECT_WHOLE) {
      mmsb_mark_range((uintptr_t)r->data, r->size);
    } else if (n->detect[k] == MMSB_DETECT_DIFF) {
      for (size_t i = 0; i < r->size;) {
        size_t chunk = r->size - i < 4096 ? r->size - i : 4096;
        if (memcmp(n->snap[k] + i, r->data + i, chunk) == 0) { i += chunk; continue; }
        /* one mark per run of changed bytes, not one per byte */
        for (size_t j = i, end = i + chunk; j < end;) {
          if (n->snap[k][j] == r->data[j]) { j++; continue; }
          size_t e = j;
          while (e < end && n->snap[k][e] != r->data[e]) e++;
          mmsb_mark_range((uintptr_t)r->data + j, e - j);
          j = e;
        }
        i += chunk;
      }
    }
    mmsb_logs_lock();
    mmsb_logs_flush_all();
    int rc = mmsb_collect_region(n->bus, r, b);
    mmsb_logs_unlock();
    if (rc) return rc;
    if (b->count > before) {
      before = b->count;
      if ((rc = push_consumers(g, r, g->round))) return rc;
      (*ndeltas)++;
    }
  }
  return MMSB_OK;
}

static int level_push(mmsb_graph *g, mmsb_node *n, size_t at) {
  mmsb_node **t = mmsb_grow(g->level, &g->caplevel, at + 1, sizeof *t);
  if (!t) return mmsb_fail(MMSB_ENOMEM, "propagation level");
  g->level = t;
  g->level[at] = n;
  return MMSB_OK;
}

/* Takes a diff copy of the node's outputs, then runs it; 0 or its failure.
 * A failing node's detail (what it or the runtime left in mmsb_last_error:
 * a GPU node's CUDA error, say) is kept in n->why: the node may have run
 * on a pool thread, and the detail is per thread. */
static int prepare_and_run(mmsb_node *n) {
  for (int k = 0; k < n->nout; k++)
    if (n->detect[k] == MMSB_DETECT_DIFF) {
      if (!n->snap[k] && !(n->snap[k] = malloc(n->out[k]->size))) return -1;
      memcpy(n->snap[k], n->out[k]->data, n->out[k]->size);
    }
  n->fresh = false;
  mmsb_clear_error(); /* an older failure is not this node's */
  if (run_node(n) == 0) return 0;
  snprintf(n->why, sizeof n->why, "%s", mmsb_last_error());
  return 1;
}

typedef struct level_job {
  mmsb_node **nodes;
  int *status;
  size_t n;
} level_job;

static void level_part(void *ctx, int part, int nparts) {
  level_job *j = ctx;
  size_t lo, hi;
  mmsb_part_range(j->n, part, nparts, &lo, &hi);
  for (size_t i = lo; i < hi; i++) { /* on a pool thread too: the node is inside its bus's commit */
    mmsb_inside was = mmsb_enter_commit(j->nodes[i]->bus, false);
    j->status[i] = prepare_and_run(j->nodes[i]);
    mmsb_leave_commit(was);
  }
}

/* Runs one height's nodes on up to `threads` threads of the pool (in parts
 * of a few nodes, handed out as threads come free); the first failure in
 * id order is the one reported. */
static int run_level(mmsb_graph *g, mmsb_node **nodes, size_t n, int threads, uint64_t epoch) {
  int *status = mmsb_grow(g->ok, &g->capok, n ? n : 1, sizeof *status);
  if (!status) return mmsb_fail(MMSB_ENOMEM, "propagation");
  g->ok = status;
  memset(status, 0, n * sizeof *status);
  level_job j = {nodes, status, n};
  size_t parts = threads > 1 ? (size_t)threads * 8 : 1;
  mmsb_pool_run((int)(parts < n ? parts : n), threads, level_part, &j);
  int rc = MMSB_OK;
  for (size_t i = 0; i < n && !rc; i++)
    if (status[i] < 0) rc = mmsb_fail(MMSB_ENOMEM, "node '%s': diff copy", nodes[i]->name);
    else if (status[i]) rc = mmsb_fail(MMSB_ENODE, "node '%s' failed in epoch %llu%s%s",
                                       nodes[i]->name, (unsigned long long)epoch,
                                       nodes[i]->why[0] ? ": " : "", nodes[i]->why);
  return rc;
}

/* The propagation stage: the consumers of every region the batch changed,
 * and new nodes, in (height, id) order; a node's changed outputs queue their
 * consumers in turn. */
static int propagate(void *ctx, mmsb_bus *bus, const mmsb_batch *cb) {
  mmsb_graph *g = ctx;
  mmsb_batch *b = (mmsb_batch *)cb; /* the commit's own batch: derived deltas join it */
  if (g->n == 0) return MMSB_OK;
  uint64_t epoch = mmsb_batch_epoch(b);
  /* Queue stamps count propagation rounds, not epochs: a failed commit
   * reuses its epoch number. */
  uint64_t round = ++g->round;
  g->nheap = 0;
  bus->cur_batch = b;
  uint32_t last = 0;
  int rc = MMSB_OK;
  for (size_t i = 0; i < b->count && !rc; i++) {
    uint32_t id;
    memcpy(&id, b->bytes.p + b->index[i], 4);
    mmsb_region *r = id == last ? NULL : mmsb_region_by_id(bus, id);
    last = id;
    if (r) rc = push_consumers(g, r, round);
  }
  for (unsigned i = 0; i < g->n && !rc; i++)
    if (g->nodes[i]->fresh) rc = heap_push(g, g->nodes[i], round);
  size_t derived = 0;
  int threads = bus->cfg.threads > 1 ? bus->cfg.threads : 1;
  while (!rc && g->nheap) {
    /* One height at a time: its nodes are independent (a consumer is always
     * higher than its producers), so they may run in parallel; their
     * outputs are then collected one by one in id order, so the batch is
     * the same whatever the number of threads. */
    int h = g->heap[0]->height;
    size_t nl = 0;
    while (g->nheap && g->heap[0]->height == h) {
      mmsb_node *n = heap_pop(g);
      if ((rc = level_push(g, n, nl++))) return rc;
    }
    /* Outputs of the nodes that ran are collected even if another node of
     * the level failed: the failed commit then puts their marks back, and
     * the next commit carries what they changed. */
    int failed = run_level(g, g->level, nl, threads, epoch);
    for (size_t i = 0; i < nl && !rc; i++) {
      if (g->ok[i]) continue;
      size_t nd;
      rc = collect_outputs(g, g->level[i], b, &nd);
      derived += nd;
    }
    if (failed) return failed;
  }
  if (!rc && derived) {
    mmsb_batch_finish(b);
    rc = mmsb_batch_sort(b);
  }
  return rc;
}

static mmsb_graph *graph_of(mmsb_bus *bus) {
  if (bus->graph) return bus->graph;
  mmsb_graph *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  if (mmsb_router_add(bus, MMSB_STAGE_PROPAGATE, propagate, g, &g->sink_id)) {
    free(g);
    return NULL;
  }
  bus->graph = g;
  return g;
}

static int add_node(mmsb_bus *bus, const char *name, mmsb_node **out, mmsb_node **made) {
  if (!bus || !name || !out) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  if (!*name || strlen(name) > MMSB_NAME_MAX) return mmsb_fail(MMSB_EINVAL, "bad node name");
  mmsb_graph *g = graph_of(bus);
  if (!g) return mmsb_fail(MMSB_ENOMEM, "graph");
  g->names.name_off = offsetof(mmsb_node, name);
  if (mmsb_nameidx_find(&g->names, name)) return mmsb_fail(MMSB_EEXIST, "node '%s' exists", name);
  mmsb_node **t = mmsb_grow(g->nodes, &g->cap, (size_t)g->n + 1, sizeof *t);
  if (!t) return mmsb_fail(MMSB_ENOMEM, "graph");
  g->nodes = t;
  mmsb_node *n = calloc(1, sizeof *n);
  if (!n) return mmsb_fail(MMSB_ENOMEM, "node");
  n->bus = bus;
  strcpy(n->name, name);
  n->id = ++g->next_id;
  n->fresh = true;
  if (mmsb_nameidx_insert(&g->names, n)) {
    free(n);
    return MMSB_ENOMEM;
  }
  g->nodes[g->n++] = n;
  g->changed = true;
  *made = n;
  return MMSB_OK;
}

int mmsb_node_create(mmsb_bus *bus, const char *name, mmsb_node_fn fn, void *ctx,
                     mmsb_node **out) {
  if (!bus || !fn) return mmsb_fail(MMSB_EINVAL, "bus or fn is NULL");
  int rc = mmsb_refuse_inside(bus, "creating a node");
  if (rc) return rc;
  mmsb_node *n;
  pthread_mutex_lock(&bus->lock);
  rc = add_node(bus, name, out, &n);
  if (!rc) {
    n->fn = fn;
    n->ctx = ctx;
    *out = n;
  }
  pthread_mutex_unlock(&bus->lock);
  return rc;
}

int mmsb_node_input(mmsb_node *n, mmsb_region *r) {
  if (!n || !r || r->bus != n->bus) return mmsb_fail(MMSB_EINVAL, "bad node or region");
  if (mmsb_refuse_inside(n->bus, "mmsb_node_input")) return MMSB_EBUSY;
  mmsb_graph *g = n->bus->graph;
  if (n->nin == MAX_EDGES) return mmsb_fail(MMSB_EINVAL, "node '%s': too many inputs", n->name);
  mmsb_node *p = r->producer;
  const char *path[66];
  if (p && reaches(g, n, p, path)) return cycle_error(path, n->name);
  if (p && raise_plan(g, n, NULL, p->height + 1)) return MMSB_ENOMEM;
  mmsb_node **c = mmsb_grow(r->consumers, &r->capconsumers, (size_t)r->nconsumers + 1, sizeof *c);
  if (!c) return mmsb_fail(MMSB_ENOMEM, "graph edge");
  r->consumers = c;
  r->consumers[r->nconsumers++] = n;
  n->in[n->nin++] = r;
  n->fresh = true;
  g->changed = true;
  if (p) raise_apply(g);
  return MMSB_OK;
}

int mmsb_node_output(mmsb_node *n, mmsb_region *r, int detect) {
  if (!n || !r || r->bus != n->bus) return mmsb_fail(MMSB_EINVAL, "bad node or region");
  if (detect < MMSB_DETECT_DIFF || detect > MMSB_DETECT_STORES)
    return mmsb_fail(MMSB_EINVAL, "bad detect %d", detect);
  if (mmsb_refuse_inside(n->bus, "mmsb_node_output")) return MMSB_EBUSY;
  mmsb_graph *g = n->bus->graph;
  mmsb_node *p = r->producer;
  if (p) return mmsb_fail(MMSB_EEXIST, "region '%s' is produced by node '%s' already", r->name, p->name);
  if (n->nout == MAX_EDGES) return mmsb_fail(MMSB_EINVAL, "node '%s': too many outputs", n->name);
  for (int j = 0; j < n->nin; j++)
    if (n->in[j] == r) return mmsb_fail(MMSB_ECYCLE, "edge refused, it closes the cycle %s -> %s",
                                        n->name, n->name);
  const char *path[66];
  for (unsigned i = 0; i < r->nconsumers; i++)
    if (reaches(g, r->consumers[i], n, path)) return cycle_error(path, r->consumers[i]->name);
  if (raise_plan(g, NULL, r, n->height + 1)) return MMSB_ENOMEM;
  r->producer = n;
  raise_apply(g);
  n->out[n->nout] = r;
  n->detect[n->nout++] = detect;
  n->fresh = true;
  g->changed = true;
  return MMSB_OK;
}

int mmsb_node_remove(mmsb_node *n) {
  if (!n) return mmsb_fail(MMSB_EINVAL, "node is NULL");
  if (mmsb_refuse_inside(n->bus, "mmsb_node_remove")) return MMSB_EBUSY;
  mmsb_graph *g = n->bus->graph;
  pthread_mutex_lock(&n->bus->lock);
  for (unsigned i = 0; i < g->n; i++)
    if (g->nodes[i] == n) {
      g->nodes[i] = g->nodes[--g->n];
      break;
    }
  mmsb_nameidx_remove(&g->names, n);
  g->changed = true;
  for (int k = 0; k < n->nout; k++) n->out[k]->producer = NULL;
  for (int j = 0; j < n->nin; j++) {
    mmsb_region *r = n->in[j];
    for (unsigned i = 0; i < r->nconsumers; i++)
      if (r->consumers[i] == n) {
        r->consumers[i] = r->consumers[--r->nconsumers];
        break;
      }
  }
  pthread_mutex_unlock(&n->bus->lock);
  for (int k = 0; k < n->nout; k++) free(n->snap[k]);
  if (n->free_ctx) n->free_ctx(n->ctx);
  free(n);
  return MMSB_OK;
}

void mmsb_node_own_ctx(mmsb_node *n, void (*free_ctx)(void *)) { n->free_ctx = free_ctx; }

const char *mmsb_node_name(const mmsb_node *n) { return n->name; }

static ffi_type *ffi_of(int kind) {
  switch (kind) {
  case MMSB_ARG_IN: case MMSB_ARG_OUT: case MMSB_ARG_PTR: return &ffi_type_pointer;
  case MMSB_ARG_SIZE: return sizeof(size_t) == 8 ? &ffi_type_uint64 : &ffi_type_uint32;
  case MMSB_ARG_I8: return &ffi_type_sint8;
  case MMSB_ARG_U8: return &ffi_type_uint8;
  case MMSB_ARG_I16: return &ffi_type_sint16;
  case MMSB_ARG_U16: return &ffi_type_uint16;
  case MMSB_ARG_I32: return &ffi_type_sint32;
  case MMSB_ARG_U32: return &ffi_type_uint32;
  case MMSB_ARG_I64: return &ffi_type_sint64;
  case MMSB_ARG_U64: return &ffi_type_uint64;
  case MMSB_ARG_F32: return &ffi_type_float;
  case MMSB_ARG_F64: return &ffi_type_double;
  default: return NULL;
  }
}

int mmsb_node_create_ffi(mmsb_bus *bus, const char *name, void (*fn)(void), int ret_int,
                         const mmsb_arg *args, int nargs, mmsb_node **out) {
  if (!fn || (nargs && !args) || nargs < 0 || nargs > MAX_EDGES)
    return mmsb_fail(MMSB_EINVAL, "node '%s': bad function or arguments", name ? name : "?");
  for (int i = 0; i < nargs; i++) {
    if (!ffi_of(args[i].kind)) return mmsb_fail(MMSB_EINVAL, "argument %d: bad kind", i);
    if ((args[i].kind == MMSB_ARG_IN || args[i].kind == MMSB_ARG_OUT ||
         args[i].kind == MMSB_ARG_SIZE) && (!args[i].region || args[i].region->bus != bus))
      return mmsb_fail(MMSB_EINVAL, "argument %d: no region of this bus", i);
  }
  int rc = mmsb_refuse_inside(bus, "creating a node");
  if (rc) return rc;
  mmsb_node *n;
  pthread_mutex_lock(&bus->lock);
  rc = add_node(bus, name, out, &n);
  if (rc) goto out;
  n->ffn = fn;
  n->ret_int = ret_int;
  n->nargs = nargs;
  for (int i = 0; i < nargs; i++) {
    n->args[i] = args[i];
    n->types[i] = ffi_of(args[i].kind);
  }
  /* a float constant travels as float, not as the double it was given */
  for (int i = 0; i < nargs; i++)
    if (args[i].kind == MMSB_ARG_F32) {
      float f = (float)args[i].v.f;
      memcpy(&n->args[i].v, &f, sizeof f);
    }
  if (ffi_prep_cif(&n->cif, FFI_DEFAULT_ABI, (unsigned)nargs,
                   ret_int ? &ffi_type_sint32 : &ffi_type_void, n->types) != FFI_OK) {
    rc = mmsb_fail(MMSB_EINVAL, "node '%s': libffi cannot call this signature", name);
  }
  for (int i = 0; !rc && i < nargs; i++) {
    if (args[i].kind == MMSB_ARG_IN) rc = mmsb_node_input(n, args[i].region);
    else if (args[i].kind == MMSB_ARG_OUT) rc = mmsb_node_output(n, args[i].region, MMSB_DETECT_DIFF);
  }
  if (rc) {
    pthread_mutex_unlock(&bus->lock);
    mmsb_node_remove(n);
    return rc;
  }
  *out = n;
out:
  pthread_mutex_unlock(&bus->lock);
  return rc;
}

int mmsb_node_create_sym(mmsb_bus *bus, const char *name, const char *symbol, int ret_int,
                         const mmsb_arg *args, int nargs, mmsb_node **out) {
  if (!symbol) return mmsb_fail(MMSB_EINVAL, "symbol is NULL");
  void *f = dlsym(RTLD_DEFAULT, symbol);
  if (!f) return mmsb_fail(MMSB_ENOTFOUND, "no symbol '%s': %s", symbol, dlerror());
  void (*fn)(void);
  memcpy(&fn, &f, sizeof fn);
  return mmsb_node_create_ffi(bus, name, fn, ret_int, args, nargs, out);
}

int mmsb_graph_dot(mmsb_bus *bus, FILE *f) {
  if (!bus || !f) return mmsb_fail(MMSB_EINVAL, "NULL argument");
  mmsb_graph *g = bus->graph;
  fprintf(f, "digraph mmsb {\n  rankdir=LR;\n");
  for (uint32_t i = 0; i < bus->nregions; i++)
    if (bus->regions[i]) fprintf(f, "  \"r:%s\" [shape=box];\n", bus->regions[i]->name);
  for (unsigned i = 0; g && i < g->n; i++) {
    mmsb_node *n = g->nodes[i];
    fprintf(f, "  \"n:%s\" [shape=ellipse];\n", n->name);
    for (int j = 0; j < n->nin; j++) fprintf(f, "  \"r:%s\" -> \"n:%s\";\n", n->in[j]->name, n->name);
    for (int k = 0; k < n->nout; k++) fprintf(f, "  \"n:%s\" -> \"r:%s\";\n", n->name, n->out[k]->name);
  }
  fprintf(f, "}\n");
  return MMSB_OK;
}

void mmsb_graph_free(mmsb_bus *bus) {
  mmsb_graph *g = bus->graph;
  if (!g) return;
  for (unsigned i = 0; i < g->n; i++) {
    for (int k = 0; k < g->nodes[i]->nout; k++) free(g->nodes[i]->snap[k]);
    if (g->nodes[i]->free_ctx) g->nodes[i]->free_ctx(g->nodes[i]->ctx);
    free(g->nodes[i]);
  }
  free(g->nodes);
  free(g->heap);
  free(g->level);
  free(g->plan);
  free(g->ok);
  mmsb_nameidx_free(&g->names);
  free(g);
  bus->graph = NULL;
}

static int put(mmsb_buf *o, const void *p, size_t n) {
  int rc = mmsb_buf_reserve(o, n);
  if (!rc) {
    memcpy(o->p + o->len, p, n);
    o->len += n;
  }
  return rc;
}

/* The log keeps the graph (GRAPH records), so that a derived delta can be
 * attributed to the node producing its region, and `mmsb graph` can draw
 * the graph without the program. */
int mmsb_graph_serialize(mmsb_bus *bus, mmsb_buf *o) {
  mmsb_graph *g = bus->graph;
  if (!g || !g->changed) return 0;
  o->len = 0;
  uint32_t n = g->n;
  int rc = put(o, &n, 4);
  for (unsigned i = 0; !rc && i < g->n; i++) {
    mmsb_node *x = g->nodes[i];
    uint16_t nl = (uint16_t)strlen(x->name);
    uint32_t k = (uint32_t)x->nin;
    rc = put(o, &nl, 2);
    if (!rc) rc = put(o, x->name, nl);
    if (!rc) rc = put(o, &k, 4);
    for (int j = 0; !rc && j < x->nin; j++) rc = put(o, &x->in[j]->id, 4);
    k = (uint32_t)x->nout;
    if (!rc) rc = put(o, &k, 4);
    for (int j = 0; !rc && j < x->nout; j++) rc = put(o, &x->out[j]->id, 4);
  }
  if (rc) return rc;
  g->changed = false;
  return 1;
}
