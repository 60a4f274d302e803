// Every kind of store into tracked state, each epoch checked by the
// MMSB_VERIFY oracle: a changed byte that no delta covers would be counted.
// RUN: %cc-mmsb -O2 %s %rt -o %t.o2 && env MMSB_VERIFY=1 %t.o2 2>&1 | FileCheck %s
// RUN: %cc-mmsb -O0 %s %rt -o %t.o0 && env MMSB_VERIFY=1 %t.o0 2>&1 | FileCheck %s
// RUN: %cc-mmsb -O1 -march=x86-64-v3 %s %rt -o %t.v3 && env MMSB_VERIFY=1 %t.v3 2>&1 | FileCheck %s
// CHECK-NOT: not covered by any delta
// CHECK: epochs=12 untracked=0 outside=0
#include <mmsb/mmsb.h>

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct order { long id; double price; int qty; MMSB_TRACKED int flags; char tag[12]; };
struct bits { unsigned a : 3, b : 7, c : 22; };

MMSB_STATE struct order book[256];
MMSB_STATE long counters[4096];
MMSB_STATE struct bits packed[64];
static long scratch[64]; /* untracked: stores here are skipped */

__attribute__((noinline)) static void set_through(long *p, long v) { *p = v; }
__attribute__((noinline)) static void copy_order(struct order *d, const struct order *s) { *d = *s; }
__attribute__((noinline)) static void fill(double *a, int n, double k) {
  for (int i = 0; i < n; i++) a[i] = i * k;
}
__attribute__((noinline)) static void vec_add(float *a, const float *b, int n) {
  for (int i = 0; i < n; i++) a[i] += b[i];
}
__attribute__((noinline)) static void early(char *d, const char *s, int n) {
  for (int i = 0; i < n && s[i]; i++) d[i] = s[i];
}

static void commit(void) {
  if (mmsb_commit(NULL, NULL) != MMSB_OK) { printf("commit: %s\n", mmsb_last_error()); exit(1); }
}

int main(void) {
  mmsb_region *heap;
  if (mmsb_region_create(mmsb_default_bus(), "heap", 1 << 20, 0, &heap)) return 1;
  char *h = mmsb_region_data(heap);
  float src[300];
  for (int i = 0; i < 300; i++) src[i] = (float)i / 3;
  int fd = open("/dev/urandom", O_RDONLY);

  book[3].id = 42; book[3].price = 9.5; book[3].flags |= 4;        commit(); // 1 fields
  for (int i = 0; i < 4096; i += 7) counters[i] = i * 3;          commit(); // 2 loop, global
  set_through(&counters[100], -1); set_through((long *)(h + 64), 7); commit(); // 3 parameters
  copy_order(&book[10], &book[3]); book[11] = book[10];             commit(); // 4 struct copies
  memcpy(h + 1000, src, sizeof src); memset(h + 5000, 0xAB, 3000);  commit(); // 5 memcpy/memset
  fill((double *)(h + 8192), 1000, 1.5); vec_add((float *)(h + 65536), src, 300); commit(); // 6 vector loops
  atomic_fetch_add((_Atomic long *)&counters[5], 3);
  atomic_store((_Atomic int *)&book[1].qty, 9);
  long expect = 0;
  atomic_compare_exchange_strong((_Atomic long *)&counters[6], &expect, 11); commit(); // 7 atomics
  long v = 0x1122334455667788;
  memcpy(h + 4093, &v, 8); *(long *)(h + 20001) = v; *(short *)(h + 30007) = 5; commit(); // 8 unaligned, cross page
  packed[5].b = 99; packed[6].c = 123456; packed[7].a = 5;          commit(); // 9 bitfields
  strcpy(book[20].tag, "hello"); snprintf(h + 40000, 64, "n=%d", 17);
  if (read(fd, h + 50000, 100) != 100) return 2;                   commit(); // 10 libc
  early(h + 60000, "abcdef", 1000); scratch[3] = 1;                  commit(); // 11 early exit loop
  for (int i = 0; i < 100000; i++) h[(i * 7919) % (1 << 20)] ^= (char)i; commit(); // 12 random
  close(fd);

  mmsb_stats st;
  mmsb_stats_get(NULL, &st);
  printf("epochs=%llu untracked=%llu outside=%llu\n", (unsigned long long)mmsb_epoch(NULL),
         (unsigned long long)st.untracked_bytes, (unsigned long long)st.stores_outside);
  return 0;
}
