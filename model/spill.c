/* llmpress — the spill file: where new tensor data goes so that it is
 * file-backed like loaded weights (see pages.c for the memory design).
 *
 * A pass that makes a model tensor by tensor (quantize.rtn) would hold every
 * new tensor in memory until the model is saved, so its peak RSS would grow
 * with depth.  Given to lp_model_set_tensor_spill, a finished tensor's bytes
 * are written to an unlinked temporary file and mapped back read-only: the
 * same bytes, now pages the kernel may drop (lp_tensor_release_pages after
 * each reader).  A model carries its spill file (lp_model_set_spill) and
 * models derived from it inherit it, so whichever readers a model has in a
 * graph, they read the same mapped bytes, and when the last tensor holding a
 * range is freed, the range is unmapped and its disk space given back (a
 * hole punched).  Spilling is never a reason to fail: when the file cannot
 * be written (disk full), the tensor stays in memory, with one warning. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "lp-internal.h"

/* Tensors smaller than this stay in memory: not worth a mapping each. */
#define SPILL_MIN_BYTES (64 * 1024)

struct _LpSpill {
  gint ref_count;
  int fd;
  char *dir;
  GMutex lock;
  guint64 end;   /* next free offset, page-aligned */
  gint warned;   /* a write failed (atomic) */
};

LpSpill *
lp_spill_new (const char *dir, GError **error)
{
  g_autofree char *tmpl = g_build_filename (dir, ".llmpress-spill-XXXXXX", NULL);
  int fd = g_mkstemp_full (tmpl, O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0)
    {
      int e = errno;
      lp_set_error (error, LP_ERROR_IO, "%s: cannot create a spill file: %s", dir, g_strerror (e));
      return NULL;
    }
  /* Unlinked at once: it goes with the process, however that ends. */
  g_unlink (tmpl);
  LpSpill *s = g_new0 (LpSpill, 1);
  s->ref_count = 1;
  s->fd = fd;
  s->dir = g_strdup (dir);
  g_mutex_init (&s->lock);
  return s;
}

LpSpill *
lp_spill_ref (LpSpill *s)
{
  g_atomic_int_inc (&s->ref_count);
  return s;
}

void
lp_spill_unref (LpSpill *s)
{
  if (s == NULL || !g_atomic_int_dec_and_test (&s->ref_count))
    return;
  close (s->fd);
  g_mutex_clear (&s->lock);
  g_free (s->dir);
  g_free (s);
}

typedef struct {
  LpSpill *spill;
  void *map;
  gsize n;
  guint64 offset;
} SpillChunk;

static guint64
page_round (guint64 n)
{
  guint64 ps = (guint64) sysconf (_SC_PAGESIZE);
  return (n + ps - 1) / ps * ps;
}

static void
chunk_free (gpointer p)
{
  SpillChunk *c = p;
  lp_pages_unregister (c->map, c->n);
  munmap (c->map, c->n);
#ifdef FALLOC_FL_PUNCH_HOLE
  /* Best effort: without hole punching the space returns with the file. */
  (void) fallocate (c->spill->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) c->offset,
                    (off_t) page_round (c->n));
#endif
  lp_spill_unref (c->spill);
  g_free (c);
}

/* n bytes written to the spill file and mapped back; NULL (errno set) when
 * they could not be. */
static GBytes *
spill_bytes (LpSpill *s, const void *data, gsize n)
{
  g_mutex_lock (&s->lock);
  guint64 at = s->end;
  s->end = page_round (at + n);
  g_mutex_unlock (&s->lock);
  int err = 0;
  if (!lp_write_all (s->fd, data, n, (gint64) at, &err))
    {
      errno = err;
      return NULL;
    }
  void *map = mmap (NULL, n, PROT_READ, MAP_SHARED, s->fd, (off_t) at);
  if (map == MAP_FAILED)
    return NULL;
  lp_pages_register (map, n);
  SpillChunk *c = g_new (SpillChunk, 1);
  *c = (SpillChunk){ lp_spill_ref (s), map, n, at };
  return g_bytes_new_with_free_func (map, n, chunk_free, c);
}

LpTensor *
lp_tensor_spill (LpTensor *t, LpSpill *s)
{
  gsize n = 0;
  const void *p = g_bytes_get_data (t->data, &n);
  if (s == NULL || n < SPILL_MIN_BYTES || lp_pages_releasable (p, n))
    return lp_tensor_ref (t);
  g_autoptr (GBytes) b = spill_bytes (s, p, n);
  if (b == NULL)
    {
      int e = errno;
      if (g_atomic_int_compare_and_exchange (&s->warned, 0, 1))
        lp_warn ("%s: cannot write to the spill file (%s); keeping new tensors in memory", s->dir, g_strerror (e));
      return lp_tensor_ref (t);
    }
  return lp_tensor_with_data (t, b);
}

gboolean
lp_spill_enabled (void)
{
  const char *v = g_getenv ("LLMPRESS_SPILL");
  return v == NULL || strcmp (v, "0") != 0;
}
