/* llmpress fuzz targets — what every target shares: one scratch directory,
 * inputs written into it, quiet logs. */
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <llmpress/llmpress.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *scratch;
static GHashTable *paths; /* name -> path in scratch */

static void
remove_scratch (void)
{
  if (scratch == NULL)
    return;
  /* One level deep is all the targets write (a file, or a file in a model
   * directory they made). */
  GDir *d = g_dir_open (scratch, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *p = g_build_filename (scratch, name, NULL);
      if (g_file_test (p, G_FILE_TEST_IS_DIR) && !g_file_test (p, G_FILE_TEST_IS_SYMLINK))
        {
          GDir *sub = g_dir_open (p, 0, NULL);
          const char *n2;
          while (sub && (n2 = g_dir_read_name (sub)) != NULL)
            {
              g_autofree char *p2 = g_build_filename (p, n2, NULL);
              g_unlink (p2);
            }
          if (sub)
            g_dir_close (sub);
          g_rmdir (p);
        }
      else
        g_unlink (p);
    }
  if (d)
    g_dir_close (d);
  g_rmdir (scratch);
}

/* Warnings about a malformed file are expected by the thousand; printing
 * them would be most of the work.  Criticals and errors still abort. */
static void
drop_log (const char *domain, GLogLevelFlags level, const char *message, gpointer user_data)
{
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
    {
      g_printerr ("%s: %s\n", domain ? domain : "", message);
      abort ();
    }
}

void
lp_fuzz_init (void)
{
  if (scratch != NULL)
    return;
  const char *base = g_file_test ("/dev/shm", G_FILE_TEST_IS_DIR) && access ("/dev/shm", W_OK) == 0 ? "/dev/shm"
                                                                                                     : g_get_tmp_dir ();
  g_autofree char *tmpl = g_build_filename (base, "llmpress-fuzz-XXXXXX", NULL);
  scratch = g_mkdtemp (g_steal_pointer (&tmpl));
  if (scratch == NULL)
    g_error ("cannot create a scratch directory in %s: %s", base, g_strerror (errno));
  paths = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  atexit (remove_scratch);
  g_log_set_always_fatal (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL);
  if (g_getenv ("LLMPRESS_FUZZ_VERBOSE") == NULL)
    g_log_set_default_handler (drop_log, NULL);
}

const char *
lp_fuzz_dir (void)
{
  lp_fuzz_init ();
  return scratch;
}

const char *
lp_fuzz_write (const char *name, const uint8_t *data, size_t size)
{
  lp_fuzz_init ();
  char *path = g_hash_table_lookup (paths, name);
  if (path == NULL)
    {
      path = g_build_filename (scratch, name, NULL);
      g_hash_table_insert (paths, g_strdup (name), path);
    }
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    g_error ("%s: cannot write: %s", path, g_strerror (errno));
  for (size_t off = 0; off < size;)
    {
      ssize_t w = write (fd, data + off, size - off);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        g_error ("%s: write failed: %s", path, g_strerror (errno));
      off += (size_t) w;
    }
  close (fd);
  return path;
}

void
lp_fuzz_use_tokenizer (const LpMeta *meta)
{
  g_autoptr (LpTokenizer) tok = lp_tokenizer_new_from_meta (meta, NULL);
  if (tok == NULL)
    return;
  static const char text[] = "Once upon a time, Lily's cat ran  away.\n\xc3\xa9\xe2\x96\x81<s> 12345 \xf0\x9f\x98\x80";
  g_autoptr (GArray) ids = lp_tokenizer_encode (tok, text, sizeof text - 1, TRUE, NULL);
  if (ids == NULL)
    return;
  gsize len;
  g_free (lp_tokenizer_decode (tok, (const gint32 *) ids->data, ids->len, &len));
  gint32 n = lp_tokenizer_n_vocab (tok), prev = lp_tokenizer_bos (tok);
  /* Every piece of a small vocabulary, the ends of a large one. */
  for (gint32 id = 0; id < n; id = (n > 600 && id == 299) ? n - 300 : id + 1)
    {
      g_free (lp_tokenizer_decode_piece (tok, prev, id, &len));
      (void) lp_tokenizer_token_text (tok, id);
      prev = id;
    }
}
