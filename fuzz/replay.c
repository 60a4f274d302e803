/*
 * replay.c - a main() for the fuzz targets where libFuzzer is not linked:
 * runs the target once on each file named (or each file of each directory
 * named).  The tests replay the corpus in fuzz/corpus this way, so every
 * input that once crashed a target stays a test on every machine.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return perror(path), 1;
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0, got;
  do {
    if (len == cap) {
      uint8_t *t = realloc(buf, cap = cap ? 2 * cap : 4096);
      if (!t) return fclose(f), free(buf), 1;
      buf = t;
    }
    got = fread(buf + len, 1, cap - len, f);
    len += got;
  } while (got);
  fclose(f);
  LLVMFuzzerTestOneInput(buf, len);
  free(buf);
  return 0;
}

int main(int argc, char **argv) {
  int files = 0, bad = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st)) { perror(argv[i]); bad++; continue; }
    if (!S_ISDIR(st.st_mode)) { bad += run_file(argv[i]); files++; continue; }
    DIR *d = opendir(argv[i]);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
      bad += run_file(path);
      files++;
    }
    if (d) closedir(d);
  }
  fprintf(stderr, "%s: %d inputs replayed, %d unreadable\n", argv[0], files, bad);
  return bad || !files;
}
