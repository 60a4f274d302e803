#!/usr/bin/env python3
"""Writes a large C translation unit (about N lines) for compile-time tests:
structs, loops, pointer stores, state globals, libc calls."""
import sys

n_lines = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
out = sys.stdout
out.write("#include <mmsb/mmsb.h>\n#include <string.h>\n#include <stdint.h>\n")
out.write("struct rec { long a; double b; int c[8]; char name[16]; };\n")
out.write("MMSB_STATE struct rec table[4096];\n")
lines, i = 3, 0
while lines < n_lines:
    out.write(f"""
long f{i}(struct rec *r, long *p, int n, const char *s) {{
  long acc = {i};
  for (int k = 0; k < n; k++) {{
    p[k] = acc + k * {i % 7 + 1};
    acc += p[k] ^ (k << 2);
    if (acc & 1) r->c[k & 7] = (int)acc;
  }}
  table[{i} % 4096].a += acc;
  table[({i} + n) % 4096].b = (double)acc / (n + 1);
  struct rec t = *r;
  t.a = acc;
  memcpy(t.name, s, 8);
  *r = t;
  for (int k = n; k > 0; k--) {{
    if (p[k - 1] > acc) {{ p[k - 1] -= acc; break; }}
  }}
  return acc + r->a;
}}
""")
    lines += 20
    i += 1
# A dispatch table, as a program's command or opcode table would be: every
# function stays a function of its own.
out.write("typedef long (*fn_t)(struct rec *, long *, int, const char *);\n")
out.write("fn_t table_of_fns[] = {\n")
for k in range(i):
    out.write(f"  f{k},\n")
out.write("};\n")
