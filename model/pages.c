/* llmpress — resident pages that can be given back.
 *
 * Memory design (why peak RSS does not grow with depth): a model's weights
 * are slices of read-only file mappings (the loaded file, or the spill file
 * of spill.c that new tensor data moves to).  A page of such a mapping is
 * resident once touched and stays counted in RSS until unmapped, so a pass
 * that reads every layer would end up holding the whole file.  A reader
 * done with a tensor (a pass that has taken its copy, the GGUF writer once
 * it has written it) calls lp_tensor_release_pages: madvise(MADV_DONTNEED)
 * on its pages, which for a read-only file mapping only drops them from
 * this process (the page cache keeps them; touched again they are read
 * back).  For any other memory (malloc'ed, anonymous) it would zero the
 * data, so the mappings that allow it are registered here and the call
 * does nothing for memory outside them. */
#include "config.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lp-internal.h"

typedef struct {
  guintptr start, end;
} Range;

/* The registered mappings, sorted by start (they never overlap). */
static GArray *ranges;
static GMutex ranges_lock;

static gsize
page_size (void)
{
  static gsize size;
  if (size == 0)
    size = (gsize) sysconf (_SC_PAGESIZE);
  return size;
}

/* Index of the first range starting after p (under the lock). */
static guint
upper_bound (guintptr p)
{
  guint lo = 0, hi = ranges ? ranges->len : 0;
  while (lo < hi)
    {
      guint mid = (lo + hi) / 2;
      if (g_array_index (ranges, Range, mid).start <= p)
        lo = mid + 1;
      else
        hi = mid;
    }
  return lo;
}

void
lp_pages_register (const void *start, gsize n)
{
  if (n == 0)
    return;
  Range r = { (guintptr) start, (guintptr) start + n };
  g_mutex_lock (&ranges_lock);
  if (ranges == NULL)
    ranges = g_array_new (FALSE, FALSE, sizeof (Range));
  g_array_insert_val (ranges, upper_bound (r.start), r);
  g_mutex_unlock (&ranges_lock);
}

void
lp_pages_unregister (const void *start, gsize n)
{
  if (n == 0)
    return;
  g_mutex_lock (&ranges_lock);
  guint i = upper_bound ((guintptr) start);
  if (i > 0 && g_array_index (ranges, Range, i - 1).start == (guintptr) start)
    g_array_remove_index (ranges, i - 1);
  g_mutex_unlock (&ranges_lock);
}

/* The registered mapping holding [p, p + n), or FALSE. */
static gboolean
find_range (const void *p, gsize n, Range *out)
{
  gboolean found = FALSE;
  g_mutex_lock (&ranges_lock);
  guint i = upper_bound ((guintptr) p);
  if (i > 0)
    {
      Range r = g_array_index (ranges, Range, i - 1);
      found = (guintptr) p + n <= r.end;
      *out = r;
    }
  g_mutex_unlock (&ranges_lock);
  return found;
}

gboolean
lp_pages_releasable (const void *p, gsize n)
{
  Range r;
  return n > 0 && find_range (p, n, &r);
}

/* The kernel maps the cached pages of a 64 KiB window around each page
 * fault of a file mapping ("fault-around", /sys/kernel/mm/...
 * fault_around_bytes, 64 KiB by default): reading a tensor maps the tail of
 * the one before it again, after that one was released.  Releasing whole
 * windows takes those pages back too, so what stays mapped is bounded. */
#define FAULT_AROUND_BYTES ((guintptr) 64 * 1024)

void
lp_pages_release (const void *p, gsize n)
{
  Range r;
  if (n == 0 || !find_range (p, n, &r))
    return;
  /* Whole windows around the range, inside the mapping (mappings start on
   * a page; their last page is theirs whole). */
  gsize ps = page_size ();
  guintptr w = MAX (FAULT_AROUND_BYTES, ps);
  guintptr lo = MAX ((guintptr) p / w * w, r.start);
  guintptr hi = ((guintptr) p + n + w - 1) / w * w;
  hi = MIN (hi, (r.end + ps - 1) / ps * ps);
  madvise ((void *) lo, hi - lo, MADV_DONTNEED);
}

void
lp_tensor_release_pages (LpTensor *t)
{
  gsize n = 0;
  const void *p = g_bytes_get_data (t->data, &n);
  lp_pages_release (p, n);
}

static void
unmap_bytes (gpointer mf)
{
  lp_pages_unregister (g_mapped_file_get_contents (mf), g_mapped_file_get_length (mf));
  g_mapped_file_unref (mf);
}

GBytes *
lp_map_file_bytes (const char *path, GError **error)
{
  GMappedFile *mf = lp_map_file (path, error);
  if (mf == NULL)
    return NULL;
  /* GMappedFile maps read-only (PROT_READ, MAP_PRIVATE): releasable. */
  lp_pages_register (g_mapped_file_get_contents (mf), g_mapped_file_get_length (mf));
  return g_bytes_new_with_free_func (g_mapped_file_get_contents (mf), g_mapped_file_get_length (mf), unmap_bytes, mf);
}
