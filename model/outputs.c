/* llmpress — the output promise: a command changes exactly the path it was
 * given.  Everything that decides whether a path may be written lives here:
 * what kind of thing is there now, which files the run reads, the temporaries
 * beside an output (locked while alive, removed once their writer is dead),
 * and the manifest that lets a directory output be replaced later without
 * touching the user's own files in it. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "lp-internal.h"
#include "outputs.h"

const char *
lp_file_kind (mode_t mode)
{
  if (S_ISREG (mode))
    return "a regular file";
  if (S_ISDIR (mode))
    return "a directory";
  if (S_ISLNK (mode))
    return "a symbolic link";
  if (S_ISCHR (mode))
    return "a character device";
  if (S_ISBLK (mode))
    return "a block device";
  if (S_ISFIFO (mode))
    return "a FIFO";
  if (S_ISSOCK (mode))
    return "a socket";
  return "an unknown kind of file";
}

/* What a path names, in the words of error messages ("/dev/null" is a
 * character device, not "a directory"); "nothing" when absent. */
char *
lp_path_describe (const char *path)
{
  GStatBuf st;
  if (g_stat (path, &st) != 0)
    return g_strdup ("nothing");
  if (S_ISREG (st.st_mode))
    return g_strdup_printf ("a regular file of %" G_GUINT64_FORMAT " bytes", (guint64) st.st_size);
  return g_strdup (lp_file_kind (st.st_mode));
}

gboolean
lp_input_check (const char *path, gboolean dir_ok, GError **error)
{
  GStatBuf st;
  if (g_stat (path, &st) != 0)
    return TRUE;
  if (S_ISREG (st.st_mode) || (dir_ok && S_ISDIR (st.st_mode)))
    return TRUE;
  lp_set_error (error, LP_ERROR_IO, "%s: expected a regular file%s, found %s", path,
                dir_ok ? " or a directory" : "", lp_file_kind (st.st_mode));
  return FALSE;
}

/* The absolute path with every existing directory resolved (symlinks and
 * ".."), and the final component kept as written unless follow_last. */
static char *
resolve (const char *path, gboolean follow_last)
{
  g_autofree char *abs = g_canonicalize_filename (path, NULL);
  g_autofree char *head = follow_last ? g_strdup (abs) : g_path_get_dirname (abs);
  g_autofree char *tail = follow_last ? g_strdup ("") : g_strconcat ("/", strrchr (abs, '/') + 1, NULL);
  for (;;)
    {
      char *real = realpath (head, NULL);
      if (real != NULL)
        {
          char *out = g_strconcat (strcmp (real, "/") == 0 && tail[0] == '/' ? "" : real, tail, NULL);
          free (real);
          return out[0] != '\0' ? out : (g_free (out), g_strdup ("/"));
        }
      if (strcmp (head, "/") == 0 || strcmp (head, ".") == 0)
        return g_strdup (abs);
      g_autofree char *base = g_path_get_basename (head);
      char *t = g_strconcat ("/", base, tail, NULL);
      g_free (tail);
      tail = t;
      char *h = g_path_get_dirname (head);
      g_free (head);
      head = h;
    }
}

gboolean
lp_path_is_inside (const char *path, const char *dir)
{
  gsize n = strlen (dir);
  if (n == 1 && dir[0] == '/')
    return path[0] == '/' && path[1] != '\0';
  return strncmp (path, dir, n) == 0 && path[n] == '/';
}

/* The first component of `path` that exists and is not a directory (its
 * kind in *mode), or NULL. */
static char *
blocking_component (const char *path, mode_t *mode)
{
  g_autofree char *abs = g_canonicalize_filename (path, NULL);
  for (char *p = strchr (abs + 1, '/'); p != NULL; p = strchr (p + 1, '/'))
    {
      *p = '\0';
      GStatBuf st;
      gboolean blocks = g_stat (abs, &st) == 0 && !S_ISDIR (st.st_mode);
      if (blocks)
        {
          *mode = st.st_mode;
          return g_strdup (abs);
        }
      *p = '/';
    }
  return NULL;
}

static gboolean
make_parents (const char *path, char **created, GError **error)
{
  g_autofree char *parent = g_path_get_dirname (path);
  if (g_file_test (parent, G_FILE_TEST_IS_DIR))
    return TRUE;
  mode_t mode = 0;
  g_autofree char *block = blocking_component (path, &mode);
  if (block != NULL)
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot create its directory: %s is %s, not a directory", path, block,
                    lp_file_kind (mode));
      return FALSE;
    }
  /* The topmost directory that mkdir -p is about to create. */
  g_autofree char *top = g_strdup (parent);
  for (;;)
    {
      g_autofree char *up = g_path_get_dirname (top);
      if (strcmp (up, top) == 0 || g_file_test (up, G_FILE_TEST_IS_DIR))
        break;
      g_free (top);
      top = g_steal_pointer (&up);
    }
  if (g_mkdir_with_parents (parent, 0755) != 0)
    {
      int e = errno;
      lp_output_unprepare (path, top);
      lp_set_error (error, LP_ERROR_IO, "%s: cannot create its directory %s: %s", path, parent, g_strerror (e));
      return FALSE;
    }
  *created = g_steal_pointer (&top);
  return TRUE;
}

void
lp_output_unprepare (const char *path, const char *created)
{
  if (created == NULL)
    return;
  /* Only directories we made, deepest first, and only while empty. */
  g_autofree char *d = g_path_get_dirname (path);
  while (lp_path_is_inside (d, created) || strcmp (d, created) == 0)
    {
      if (g_rmdir (d) != 0)
        return;
      if (strcmp (d, created) == 0)
        return;
      char *up = g_path_get_dirname (d);
      g_free (d);
      d = up;
    }
}

gboolean
lp_output_prepare (const char *path, gboolean is_dir, char **created, GError **error)
{
  *created = NULL;
  GStatBuf st;
  if (g_lstat (path, &st) == 0)
    {
      gboolean ok = S_ISLNK (st.st_mode) || (is_dir ? S_ISDIR (st.st_mode) : S_ISREG (st.st_mode));
      if (!ok)
        {
          if (S_ISREG (st.st_mode) || S_ISDIR (st.st_mode))
            lp_set_error (error, LP_ERROR_IO, "%s: expected %s to write, found %s", path,
                          is_dir ? "a directory" : "a file", lp_file_kind (st.st_mode));
          else
            lp_set_error (error, LP_ERROR_IO,
                          "%s: refusing to write over %s (only a regular file, a directory or a symbolic link is replaced)",
                          path, lp_file_kind (st.st_mode));
          return FALSE;
        }
    }
  else if (!make_parents (path, created, error))
    return FALSE;
  g_autofree char *parent = g_path_get_dirname (path);
  lp_output_clean_stale (parent);
  return TRUE;
}

int
lp_output_temp_new (const char *path, gboolean is_dir, char **tmp_path, GError **error)
{
  g_autofree char *clean = g_strdup (path);
  gsize len = strlen (clean);
  while (len > 1 && clean[len - 1] == '/')
    clean[--len] = '\0';
  g_autofree char *dir = g_path_get_dirname (clean);
  g_autofree char *base = g_path_get_basename (clean);
  for (int attempt = 0; attempt < 16; attempt++)
    {
      char *tmpl = g_strdup_printf ("%s/.%s.tmp-XXXXXX", dir, base);
      int fd;
      gboolean made = TRUE;
      if (is_dir)
        {
          made = g_mkdtemp_full (tmpl, 0755) != NULL;
          fd = made ? open (tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        }
      else
        fd = g_mkstemp_full (tmpl, O_RDWR | O_CLOEXEC, 0644);
      if (fd < 0 && made && errno == ENOENT)
        {
          /* Made, then taken by a cleaner before we could open it. */
          g_free (tmpl);
          continue;
        }
      if (fd < 0)
        {
          int e = errno;
          lp_set_error (error, LP_ERROR_IO, "%s: cannot create a temporary %s beside it: %s", path,
                        is_dir ? "directory" : "file", g_strerror (e));
          g_free (tmpl);
          return -1;
        }
      /* A cleaner may have taken it between its creation and our lock (it
       * looked stale): then it is gone, and we make another. */
      GStatBuf a, b;
      if (flock (fd, LOCK_EX) == 0 && fstat (fd, &a) == 0 && g_lstat (tmpl, &b) == 0 && a.st_dev == b.st_dev
          && a.st_ino == b.st_ino)
        {
          *tmp_path = tmpl;
          return fd;
        }
      close (fd);
      g_free (tmpl);
    }
  lp_set_error (error, LP_ERROR_IO, "%s: cannot create a temporary beside it: removed by another process each time", path);
  return -1;
}

static gboolean
is_temp_name (const char *name)
{
  gsize n = strlen (name);
  if (n < 13 || name[0] != '.' || memcmp (name + n - 11, ".tmp-", 5) != 0)
    return FALSE;
  for (gsize i = n - 6; i < n; i++)
    if (!g_ascii_isalnum (name[i]))
      return FALSE;
  return TRUE;
}

void
lp_output_clean_stale (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;
  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      if (!is_temp_name (name))
        continue;
      g_autofree char *path = g_build_filename (dir, name, NULL);
      /* O_NONBLOCK: a FIFO by that name must not stop us. */
      int fd = open (path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0)
        continue;
      GStatBuf st;
      if (fstat (fd, &st) == 0 && (S_ISREG (st.st_mode) || S_ISDIR (st.st_mode)) && flock (fd, LOCK_EX | LOCK_NB) == 0)
        {
          /* Nobody holds it: its writer died.  Removed while we hold the
           * lock, so a writer that created it just now sees it gone. */
          if (S_ISDIR (st.st_mode))
            lp_remove_tree (path);
          else
            g_unlink (path);
        }
      close (fd);
    }
}

/* ---- directory outputs and their manifest ---- */

/* The names a manifest lists, or NULL when there is none or it belongs to
 * another kind (*found_kind then says which).  Only plain names inside the
 * directory are taken: a manifest never sends us elsewhere. */
static GPtrArray *
manifest_read (const char *dir, const char *kind, char **found_kind)
{
  g_autofree char *path = g_build_filename (dir, LP_OUTPUT_MANIFEST, NULL);
  g_autofree char *text = NULL;
  GStatBuf st;
  if (g_lstat (path, &st) != 0 || !S_ISREG (st.st_mode) || !g_file_get_contents (path, &text, NULL, NULL))
    return NULL;
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  if (lines[0] == NULL || !g_str_has_prefix (lines[0], "llmpress-output "))
    return NULL;
  const char *k = lines[0] + strlen ("llmpress-output ");
  if (strcmp (k, kind) != 0)
    {
      *found_kind = g_strdup (k);
      return NULL;
    }
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  for (int i = 1; lines[i] != NULL; i++)
    if (lines[i][0] != '\0' && strchr (lines[i], '/') == NULL && strcmp (lines[i], ".") != 0
        && strcmp (lines[i], "..") != 0 && strcmp (lines[i], LP_OUTPUT_MANIFEST) != 0)
      g_ptr_array_add (names, g_strdup (lines[i]));
  return names;
}

static gboolean
manifest_write (const char *dir, const char *kind, GPtrArray *names, GError **error)
{
  g_autoptr (GString) s = g_string_new (NULL);
  g_string_append_printf (s, "llmpress-output %s\n", kind);
  for (guint i = 0; i < names->len; i++)
    g_string_append_printf (s, "%s\n", (const char *) names->pdata[i]);
  g_autofree char *path = g_build_filename (dir, LP_OUTPUT_MANIFEST, NULL);
  LpAtomicFile *af = lp_atomic_file_new (path, error);
  if (af == NULL)
    return FALSE;
  if (!lp_atomic_file_write (af, s->str, s->len, error))
    {
      lp_atomic_file_abort (af);
      return FALSE;
    }
  return lp_atomic_file_commit (af, error);
}

int
lp_compare_str_ptr (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static GPtrArray *
list_names (const char *dir)
{
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;
  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    if (strcmp (name, LP_OUTPUT_MANIFEST) != 0)
      g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, lp_compare_str_ptr);
  return names;
}

static gboolean
has_name (GPtrArray *names, const char *name)
{
  for (guint i = 0; i < names->len; i++)
    if (strcmp (names->pdata[i], name) == 0)
      return TRUE;
  return FALSE;
}

gboolean
lp_output_dir_check (const char *path, const char *kind, GError **error)
{
  GStatBuf st;
  if (g_lstat (path, &st) != 0 || !S_ISDIR (st.st_mode))
    return TRUE; /* absent, or lp_output_prepare judges it */
  g_autofree char *found_kind = NULL;
  g_autoptr (GPtrArray) ours = manifest_read (path, kind, &found_kind);
  if (ours != NULL)
    return TRUE;
  g_autoptr (GPtrArray) names = list_names (path);
  if (names->len == 0 && found_kind == NULL)
    return TRUE;
  if (found_kind != NULL)
    lp_set_error (error, LP_ERROR_IO, "%s: holds a previous llmpress output of kind %s, not %s; refusing to write into it (hint: give a new or empty directory)",
                  path, found_kind, kind);
  else
    {
      g_autofree char *more = names->len > 1 ? g_strdup_printf (" and %u more", names->len - 1) : g_strdup ("");
      lp_set_error (error, LP_ERROR_IO,
                    "%s: refusing to write into a directory that holds other files (%s%s) and is no llmpress output (hint: give a new or empty directory)",
                    path, (const char *) names->pdata[0], more);
    }
  return FALSE;
}

gboolean
lp_output_dir_merge (const char *tmp, const char *path, const char *kind, GError **error)
{
  g_autoptr (GPtrArray) fresh = list_names (tmp);
  if (!manifest_write (tmp, kind, fresh, error))
    return FALSE;
  GStatBuf st;
  gboolean present = g_lstat (path, &st) == 0;
  if (!present || S_ISLNK (st.st_mode))
    {
      /* Absent, or a symlink: the link is the output, replaced; what it
       * points to is not ours and is not touched. */
      g_autofree char *aside = present ? g_strconcat (tmp, ".link", NULL) : NULL;
      if (aside != NULL && g_rename (path, aside) != 0)
        {
          lp_set_error (error, LP_ERROR_IO, "%s: cannot move the symbolic link aside: %s", path, g_strerror (errno));
          return FALSE;
        }
      if (g_rename (tmp, path) != 0)
        {
          int e = errno;
          if (aside != NULL)
            g_rename (aside, path);
          lp_set_error (error, LP_ERROR_IO, "%s: cannot move the finished directory into place: %s", path, g_strerror (e));
          return FALSE;
        }
      if (aside != NULL)
        g_unlink (aside);
      return TRUE;
    }
  /* An earlier output of ours (or an empty directory): file by file.  The
   * manifest lists old and new while they are mixed, so a run killed half
   * way leaves a directory the next run may still replace. */
  g_autofree char *found_kind = NULL;
  g_autoptr (GPtrArray) old = manifest_read (path, kind, &found_kind);
  if (old == NULL)
    old = g_ptr_array_new_with_free_func (g_free);
  /* A file of the user's by a name we are about to write: not ours to replace. */
  for (guint i = 0; i < fresh->len; i++)
    {
      g_autofree char *there = g_build_filename (path, fresh->pdata[i], NULL);
      if (!has_name (old, fresh->pdata[i]) && g_lstat (there, &st) == 0)
        {
          lp_set_error (error, LP_ERROR_IO,
                        "%s: refusing to replace %s, which the previous llmpress output there did not write (hint: move it, or give a new directory)",
                        path, (const char *) fresh->pdata[i]);
          return FALSE;
        }
    }
  g_autoptr (GPtrArray) both = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < old->len; i++)
    g_ptr_array_add (both, g_strdup (old->pdata[i]));
  for (guint i = 0; i < fresh->len; i++)
    if (!has_name (old, fresh->pdata[i]))
      g_ptr_array_add (both, g_strdup (fresh->pdata[i]));
  if (!manifest_write (path, kind, both, error))
    return FALSE;
  for (guint i = 0; i < fresh->len; i++)
    {
      g_autofree char *from = g_build_filename (tmp, fresh->pdata[i], NULL);
      g_autofree char *to = g_build_filename (path, fresh->pdata[i], NULL);
      if (g_rename (from, to) != 0)
        {
          lp_set_error (error, LP_ERROR_IO, "%s: cannot move the new file into place: %s", to, g_strerror (errno));
          return FALSE;
        }
    }
  for (guint i = 0; i < old->len; i++)
    if (!has_name (fresh, old->pdata[i]))
      {
        g_autofree char *gone = g_build_filename (path, old->pdata[i], NULL);
        lp_remove_tree (gone);
      }
  g_autofree char *from = g_build_filename (tmp, LP_OUTPUT_MANIFEST, NULL);
  g_autofree char *to = g_build_filename (path, LP_OUTPUT_MANIFEST, NULL);
  if (g_rename (from, to) != 0)
    {
      lp_set_error (error, LP_ERROR_IO, "%s: cannot move the new manifest into place: %s", to, g_strerror (errno));
      return FALSE;
    }
  g_rmdir (tmp);
  return TRUE;
}

/* ---- the files a run reads ---- */

typedef struct {
  char *real;      /* resolved path */
  char *what;
  gboolean exists, is_dir;
  dev_t dev;
  ino_t ino;
} ReadEntry;

struct _LpReadSet {
  GArray *entries;
};

static void
read_entry_clear (gpointer p)
{
  ReadEntry *e = p;
  g_free (e->real);
  g_free (e->what);
}

LpReadSet *
lp_read_set_new (void)
{
  LpReadSet *rs = g_new0 (LpReadSet, 1);
  rs->entries = g_array_new (FALSE, TRUE, sizeof (ReadEntry));
  g_array_set_clear_func (rs->entries, read_entry_clear);
  return rs;
}

void
lp_read_set_free (LpReadSet *rs)
{
  if (rs == NULL)
    return;
  g_array_unref (rs->entries);
  g_free (rs);
}

void
lp_read_set_add (LpReadSet *rs, const char *path, const char *what)
{
  ReadEntry e = { resolve (path, TRUE), g_strdup (what), FALSE, FALSE, 0, 0 };
  GStatBuf st;
  if (g_stat (path, &st) == 0)
    {
      e.exists = TRUE;
      e.is_dir = S_ISDIR (st.st_mode);
      e.dev = st.st_dev;
      e.ino = st.st_ino;
    }
  g_array_append_val (rs->entries, e);
}

char *
lp_read_set_conflict (const LpReadSet *rs, const char *out)
{
  g_autofree char *o = resolve (out, FALSE);
  GStatBuf st;
  gboolean exists = g_lstat (out, &st) == 0;
  for (guint i = 0; i < rs->entries->len; i++)
    {
      const ReadEntry *e = &g_array_index (rs->entries, ReadEntry, i);
      if (strcmp (o, e->real) == 0 || (exists && e->exists && st.st_dev == e->dev && st.st_ino == e->ino))
        return g_strdup_printf ("would overwrite %s (%s)", e->what, e->real);
      if (lp_path_is_inside (e->real, o))
        return g_strdup_printf ("would replace a directory holding %s (%s)", e->what, e->real);
      if ((e->is_dir || !e->exists) && lp_path_is_inside (o, e->real))
        return g_strdup_printf ("would write inside %s (%s)", e->what, e->real);
    }
  return NULL;
}
