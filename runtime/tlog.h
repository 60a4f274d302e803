/* tlog.h - the log's state, shared by tlog.c and checkpoint.c. */
#ifndef MMSB_TLOG_H
#define MMSB_TLOG_H

#include "internal.h"

typedef struct mmsb_tlog {
  const char *dir;
  int dirfd, fd;             /* the directory, the segment being appended */
  char seg_name[64];
  uint64_t seg_size, seg_limit;
  _Atomic mmsb_epoch_t written, durable;
  unsigned group_ms;
  pthread_mutex_t mu;        /* fd and sync state, with the group thread */
  pthread_cond_t cv;
  pthread_t thread;
  bool thread_on, stop;
  mmsb_recovery rec;
  mmsb_digest_delta dd;
  mmsb_buf graph;            /* GRAPH record payload */
} mmsb_tlog;

/* Syncs the segment and starts a new one whose first epoch is `first`
 * (unless the current one already is that one); lg->mu held. */
int mmsb_log_rotate(mmsb_tlog *lg, mmsb_epoch_t first);

/* Lists dir's files with the given prefix and suffix, sorted by name;
 * returns their count (names malloc'ed in *out) or a negative status. */
int mmsb_dir_list(int dirfd, const char *prefix, const char *suffix, char ***out);
void mmsb_dir_list_free(char **names, int n);

#endif
