// glibc's allocator settings, which Swift's Glibc module does not import (malloc.h).
#include <malloc.h>
#include "kernels.h"

int charter_heap_reuse(void) {
    // Every block from the heap (no mmap), freed pages never trimmed, the heap grown 64 MB at a time.
    return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, 0x7fffffff) == 1 && mallopt(M_TOP_PAD, 64 << 20) == 1;
}

struct charter_heap_figures charter_heap_figures(void) {
    struct mallinfo2 m = mallinfo2();
    struct charter_heap_figures f = {m.arena, m.hblkhd, m.fordblks};
    return f;
}
