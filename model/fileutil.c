/* llmpress — atomic file/directory writing and bounds-checked binary reading. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <zlib.h>

#include "lp-internal.h"
#include "outputs.h"

/* Bytes go through write(2) on the descriptor with our own buffer, not
 * stdio: every failure is seen where it happens (errno intact), and the
 * fault-injection tests can make write() fail (glibc's stdio calls an
 * internal write that an LD_PRELOAD shim cannot replace). */
#define ATOMIC_FILE_BUF (256 * 1024)

struct _LpAtomicFile {
  char *path;
  char *tmp_path;
  char *created;       /* parent directories we made, removed again on failure */
  int fd;              /* holds the temporary's lock */
  guint8 *buf;
  gsize buf_len;
  guint64 n_written;   /* bytes handed to lp_atomic_file_write */
  guint32 crc;         /* CRC-32 (zlib) of those bytes */
};

/* Where lp_atomic_file_commit records what it wrote, on this thread. */
static _Thread_local GHashTable *commit_log;

static void
set_errno_error (GError **error, int err, const char *path, const char *doing)
{
  lp_set_error (error, LP_ERROR_IO, "%s: %s: %s", path, doing, g_strerror (err));
}

LpAtomicFile *
lp_atomic_file_new (const char *path, GError **error)
{
  g_autofree char *created = NULL;
  if (!lp_output_prepare (path, FALSE, &created, error))
    return NULL;
  char *tmp = NULL;
  int fd = lp_output_temp_new (path, FALSE, &tmp, error);
  if (fd < 0)
    {
      lp_output_unprepare (path, created);
      return NULL;
    }
  LpAtomicFile *af = g_new0 (LpAtomicFile, 1);
  af->path = g_strdup (path);
  af->tmp_path = tmp;
  af->created = g_steal_pointer (&created);
  af->fd = fd;
  af->buf = g_malloc (ATOMIC_FILE_BUF);
  return af;
}

guint32
lp_crc32 (guint32 crc, const void *data, gsize n)
{
  /* zlib's crc32 takes a uInt length (and NULL data means "restart"). */
  const guint8 *p = data;
  for (gsize done = 0; done < n;)
    {
      uInt chunk = (uInt) MIN (n - done, (gsize) 1 << 30);
      crc = (guint32) crc32 (crc, p + done, chunk);
      done += chunk;
    }
  return crc;
}

gboolean
lp_write_all (int fd, const void *data, gsize n, gint64 at, int *err)
{
  const guint8 *p = data;
  while (n > 0)
    {
      gsize chunk = MIN (n, (gsize) 1 << 30);
      ssize_t w = at < 0 ? write (fd, p, chunk) : pwrite (fd, p, chunk, (off_t) at);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        {
          *err = w < 0 ? errno : EIO;
          return FALSE;
        }
      p += w;
      n -= (gsize) w;
      if (at >= 0)
        at += w;
    }
  return TRUE;
}

static gboolean
flush_buf (LpAtomicFile *af, int *err)
{
  gboolean ok = lp_write_all (af->fd, af->buf, af->buf_len, -1, err);
  af->buf_len = 0;
  return ok;
}

gboolean
lp_atomic_file_write (LpAtomicFile *af, const void *data, gsize n, GError **error)
{
  const guint8 *p = data;
  int err = 0;
  if (n == 0)
    return TRUE;
  af->n_written += n;
  af->crc = lp_crc32 (af->crc, p, n);
  if (af->buf_len + n <= ATOMIC_FILE_BUF)
    {
      memcpy (af->buf + af->buf_len, p, n);
      af->buf_len += n;
      return TRUE;
    }
  if (!flush_buf (af, &err) || (n >= ATOMIC_FILE_BUF && !lp_write_all (af->fd, p, n, -1, &err)))
    {
      set_errno_error (error, err, af->path, "write failed");
      return FALSE;
    }
  if (n < ATOMIC_FILE_BUF)
    {
      memcpy (af->buf, p, n);
      af->buf_len = n;
    }
  return TRUE;
}

char *
lp_atomic_file_digest (const LpAtomicFile *af)
{
  return g_strdup_printf ("crc32:%08x size=%" G_GUINT64_FORMAT, (guint) af->crc, af->n_written);
}

void
lp_atomic_file_log_commits (GHashTable *log)
{
  commit_log = log;
}

static void
atomic_file_free (LpAtomicFile *af)
{
  g_free (af->path);
  g_free (af->tmp_path);
  g_free (af->created);
  g_free (af->buf);
  g_free (af);
}

gboolean
lp_atomic_file_commit (LpAtomicFile *af, GError **error)
{
  int err = 0;
  gboolean ok = flush_buf (af, &err);
  if (ok && fsync (af->fd) != 0)
    err = errno, ok = FALSE;
  /* Renamed while still open, so the lock keeps a cleaner away until the
   * temporary has its final name.  rename() over a symlink replaces the
   * link, never what it points to. */
  if (ok && g_rename (af->tmp_path, af->path) != 0)
    err = errno, ok = FALSE;
  if (!ok)
    g_unlink (af->tmp_path);
  if (close (af->fd) != 0 && ok)
    err = errno, ok = FALSE;
  if (!ok)
    {
      set_errno_error (error, err, af->path, "cannot finish writing");
      lp_output_unprepare (af->path, af->created);
    }
  else if (commit_log != NULL)
    g_hash_table_insert (commit_log, g_strdup (af->path), lp_atomic_file_digest (af));
  atomic_file_free (af);
  return ok;
}

void
lp_atomic_file_abort (LpAtomicFile *af)
{
  if (af == NULL)
    return;
  g_unlink (af->tmp_path);
  close (af->fd);
  lp_output_unprepare (af->path, af->created);
  atomic_file_free (af);
}

struct _LpAtomicDir {
  char *path;
  char *tmp_path;
  char *created;
  char *kind;      /* a user-facing output with a manifest; NULL: replaced whole */
  int lock_fd;
};

static LpAtomicDir *
atomic_dir_new (const char *path, const char *kind, GError **error)
{
  g_autofree char *clean = g_strdup (path);
  gsize len = strlen (clean);
  while (len > 1 && clean[len - 1] == '/')
    clean[--len] = '\0';
  g_autofree char *created = NULL;
  if (!lp_output_prepare (clean, TRUE, &created, error))
    return NULL;
  if (kind != NULL && !lp_output_dir_check (clean, kind, error))
    {
      lp_output_unprepare (clean, created);
      return NULL;
    }
  char *tmp = NULL;
  int fd = lp_output_temp_new (clean, TRUE, &tmp, error);
  if (fd < 0)
    {
      lp_output_unprepare (clean, created);
      return NULL;
    }
  LpAtomicDir *ad = g_new0 (LpAtomicDir, 1);
  ad->path = g_steal_pointer (&clean);
  ad->tmp_path = tmp;
  ad->created = g_steal_pointer (&created);
  ad->kind = g_strdup (kind);
  ad->lock_fd = fd;
  return ad;
}

LpAtomicDir *
lp_atomic_dir_new (const char *path, GError **error)
{
  return atomic_dir_new (path, NULL, error);
}

LpAtomicDir *
lp_atomic_dir_new_output (const char *path, const char *kind, GError **error)
{
  return atomic_dir_new (path, kind, error);
}

const char *
lp_atomic_dir_path (const LpAtomicDir *ad)
{
  return ad->tmp_path;
}

void
lp_remove_tree (const char *path)
{
  /* lstat: a symlink is removed, never followed, so what it points to is
   * never emptied. */
  GStatBuf st;
  if (g_lstat (path, &st) != 0)
    return;
  if (!S_ISDIR (st.st_mode))
    {
      g_unlink (path);
      return;
    }
  GDir *d = g_dir_open (path, 0, NULL);
  if (d != NULL)
    {
      const char *name;
      while ((name = g_dir_read_name (d)) != NULL)
        {
          g_autofree char *child = g_build_filename (path, name, NULL);
          lp_remove_tree (child);
        }
      g_dir_close (d);
    }
  g_rmdir (path);
}

guint64
lp_path_size (const char *path)
{
  GStatBuf st;
  if (g_lstat (path, &st) != 0)
    return 0;
  if (!S_ISDIR (st.st_mode))
    return (guint64) st.st_size;
  guint64 total = 0;
  g_autoptr (GDir) d = g_dir_open (path, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *child = g_build_filename (path, name, NULL);
      total += lp_path_size (child);
    }
  return total;
}

static void
atomic_dir_free (LpAtomicDir *ad)
{
  close (ad->lock_fd);
  g_free (ad->path);
  g_free (ad->tmp_path);
  g_free (ad->created);
  g_free (ad->kind);
  g_free (ad);
}

static gboolean
atomic_dir_fail (LpAtomicDir *ad)
{
  lp_remove_tree (ad->tmp_path);
  lp_output_unprepare (ad->path, ad->created);
  atomic_dir_free (ad);
  return FALSE;
}

gboolean
lp_atomic_dir_commit (LpAtomicDir *ad, GError **error)
{
  if (ad->kind != NULL)
    {
      if (!lp_output_dir_merge (ad->tmp_path, ad->path, ad->kind, error))
        return atomic_dir_fail (ad);
      atomic_dir_free (ad);
      return TRUE;
    }
  /* rename() cannot replace a non-empty directory: move the old one aside
   * first, then put the new one in place, then delete the old.  A symlink
   * there is the old thing itself (moved and unlinked, never followed). */
  g_autofree char *old = NULL;
  GStatBuf st;
  if (g_lstat (ad->path, &st) == 0)
    {
      old = g_strdup_printf ("%s.old-%d", ad->tmp_path, (int) getpid ());
      if (g_rename (ad->path, old) != 0)
        {
          set_errno_error (error, errno, ad->path, "cannot replace the existing directory");
          return atomic_dir_fail (ad);
        }
    }
  if (g_rename (ad->tmp_path, ad->path) != 0)
    {
      int err = errno;
      if (old != NULL)
        g_rename (old, ad->path);
      set_errno_error (error, err, ad->path, "cannot move the finished directory into place");
      return atomic_dir_fail (ad);
    }
  if (old != NULL)
    lp_remove_tree (old);
  atomic_dir_free (ad);
  return TRUE;
}

gboolean
lp_atomic_dir_commit_new (LpAtomicDir *ad, gboolean *existed, GError **error)
{
  /* rename() onto a non-empty directory fails with ENOTEMPTY (or EEXIST):
   * someone else finished first, and what they wrote stands. */
  *existed = FALSE;
  gboolean ok = TRUE;
  if (g_rename (ad->tmp_path, ad->path) != 0)
    {
      int err = errno;
      if (err == ENOTEMPTY || err == EEXIST)
        *existed = TRUE;
      else
        {
          set_errno_error (error, err, ad->path, "cannot move the finished directory into place");
          ok = FALSE;
        }
      lp_remove_tree (ad->tmp_path);
    }
  atomic_dir_free (ad);
  return ok;
}

void
lp_atomic_dir_abort (LpAtomicDir *ad)
{
  if (ad == NULL)
    return;
  atomic_dir_fail (ad);
}

gboolean
lp_path_same_file (const char *a, const char *b)
{
  GStatBuf sa, sb;
  if (g_stat (a, &sa) != 0 || g_stat (b, &sb) != 0)
    return FALSE;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void
lp_byte_reader_init (LpByteReader *r, const char *path, gconstpointer base, gsize size)
{
  r->base = base;
  r->size = size;
  r->off = 0;
  r->path = path;
}

gboolean
lp_byte_reader_need (LpByteReader *r, gsize n, const char *what, GError **error)
{
  if (r->off <= r->size && n <= r->size - r->off)
    return TRUE;
  lp_set_error (error, LP_ERROR_FORMAT,
                "%s: offset %" G_GSIZE_FORMAT ": expected %s (%" G_GSIZE_FORMAT " bytes), found end of file (size %" G_GSIZE_FORMAT ")",
                r->path, r->off, what, n, r->size);
  return FALSE;
}

gboolean
lp_byte_reader_skip (LpByteReader *r, gsize n, const char *what, GError **error)
{
  if (!lp_byte_reader_need (r, n, what, error))
    return FALSE;
  r->off += n;
  return TRUE;
}

gboolean
lp_byte_reader_bytes (LpByteReader *r, gsize n, const guint8 **out, const char *what, GError **error)
{
  if (!lp_byte_reader_need (r, n, what, error))
    return FALSE;
  *out = r->base + r->off;
  r->off += n;
  return TRUE;
}

/* Little-endian scalar reads; the files we read are little-endian. */
#define READ_LE(fn, type)                                                                     \
  gboolean fn (LpByteReader *r, type *out, const char *what, GError **error)                  \
  {                                                                                           \
    const guint8 *p;                                                                          \
    if (!lp_byte_reader_bytes (r, sizeof (type), &p, what, error))                            \
      return FALSE;                                                                           \
    memcpy (out, p, sizeof (type));                                                           \
    return TRUE;                                                                              \
  }

READ_LE (lp_byte_reader_u8, guint8)
READ_LE (lp_byte_reader_u32, guint32)
READ_LE (lp_byte_reader_i32, gint32)
READ_LE (lp_byte_reader_u64, guint64)
READ_LE (lp_byte_reader_f32, float)

GMappedFile *
lp_map_file (const char *path, GError **error)
{
  if (!lp_input_check (path, FALSE, error))
    return NULL;
  GError *local = NULL;
  GMappedFile *mf = g_mapped_file_new (path, FALSE, &local);
  if (mf == NULL)
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot open: %s", path, local->message);
      g_error_free (local);
    }
  return mf;
}
