/* llmpress — writing files so that a reader never sees half of one, and
 * bounds-checked reading of binary files. */
#pragma once

#include <stdio.h>
#include <glib.h>

G_BEGIN_DECLS

/* A file written under a temporary name in the target's directory and renamed
 * over the target only by lp_atomic_file_commit(). */
typedef struct _LpAtomicFile LpAtomicFile;

LpAtomicFile *lp_atomic_file_new (const char *path, GError **error);
/* Write n bytes; the error names the target path. */
gboolean lp_atomic_file_write (LpAtomicFile *af, const void *data, gsize n, GError **error);
/* Flush, fsync, close and rename into place; frees af in every case. */
gboolean lp_atomic_file_commit (LpAtomicFile *af, GError **error);
/* Remove the temporary file; frees af.  NULL is accepted. */
void lp_atomic_file_abort (LpAtomicFile *af);

/* A directory built under a temporary name beside `path` (lp_atomic_dir_path
 * gives it) and swapped into place by commit (an existing target directory is
 * replaced only then). */
typedef struct _LpAtomicDir LpAtomicDir;

LpAtomicDir *lp_atomic_dir_new (const char *path, GError **error);
const char *lp_atomic_dir_path (const LpAtomicDir *ad);
gboolean lp_atomic_dir_commit (LpAtomicDir *ad, GError **error);
void lp_atomic_dir_abort (LpAtomicDir *ad);

/* Delete a file or a directory tree (best effort). */
void lp_remove_tree (const char *path);
/* Bytes in a file, or in every file below a directory; 0 when absent. */
guint64 lp_path_size (const char *path);

/* Same file or directory (by device and inode); FALSE if either is absent. */
gboolean lp_path_same_file (const char *a, const char *b);

/* A cursor over a byte buffer that reports overruns as
 * "<path>: offset N: expected <what> (K bytes), found end of file (size S)". */
typedef struct {
  const guint8 *base;
  gsize size;
  gsize off;
  const char *path;
} LpByteReader;

void lp_byte_reader_init (LpByteReader *r, const char *path, gconstpointer base, gsize size);
/* Make sure n bytes are available at the cursor. */
gboolean lp_byte_reader_need (LpByteReader *r, gsize n, const char *what, GError **error);
gboolean lp_byte_reader_skip (LpByteReader *r, gsize n, const char *what, GError **error);
gboolean lp_byte_reader_u8 (LpByteReader *r, guint8 *out, const char *what, GError **error);
gboolean lp_byte_reader_u32 (LpByteReader *r, guint32 *out, const char *what, GError **error);
gboolean lp_byte_reader_i32 (LpByteReader *r, gint32 *out, const char *what, GError **error);
gboolean lp_byte_reader_u64 (LpByteReader *r, guint64 *out, const char *what, GError **error);
gboolean lp_byte_reader_f32 (LpByteReader *r, float *out, const char *what, GError **error);
/* Borrow n bytes at the cursor and advance. */
gboolean lp_byte_reader_bytes (LpByteReader *r, gsize n, const guint8 **out, const char *what,
                               GError **error);

/* Map a whole file read-only; the error names the path. */
GMappedFile *lp_map_file (const char *path, GError **error);

G_END_DECLS
