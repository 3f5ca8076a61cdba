/* llmpress — what may be written, and what may be read: the one place that
 * decides whether an output path is safe to write (convert, synth, save,
 * save_stats and report.json all come through here, via LpAtomicFile /
 * LpAtomicDir and the read set). */
#pragma once

#include <sys/stat.h>
#include <glib.h>
#include <llmpress/llmpress.h>

G_BEGIN_DECLS

/* "a regular file", "a directory", "a character device", "a FIFO", ... */
const char *lp_file_kind (mode_t mode);

/* `path` lies below directory `dir` (both as strings, already resolved). */
gboolean lp_path_is_inside (const char *path, const char *dir);

/* Refuse an input that is neither a regular file nor (with dir_ok) a
 * directory, before anything opens it: open() on a FIFO without a writer
 * blocks forever, and a device never ends.  A path that does not exist
 * passes (the caller's own "cannot open" says so).  Symlinks are followed. */
gboolean lp_input_check (const char *path, gboolean dir_ok, GError **error);

/* Before writing `path` (a file, or with is_dir a directory): refuse what we
 * would not replace (a device, FIFO or socket; a directory where a file goes
 * and the other way round), create missing parent directories (*created: the
 * topmost one made, NULL when none; lp_output_unprepare removes them again
 * when they are still empty), and remove stale temporaries of killed runs
 * beside it.  A symlink at `path` is fine: it is replaced, never followed. */
gboolean lp_output_prepare (const char *path, gboolean is_dir, char **created, GError **error);
void lp_output_unprepare (const char *path, const char *created);

/* A new temporary ".NAME.tmp-XXXXXX" beside `path` (a file, or with is_dir a
 * directory), flock()ed: returns the descriptor that holds the lock (close it
 * when done) and the temporary's path in *tmp_path; -1 on failure. */
int lp_output_temp_new (const char *path, gboolean is_dir, char **tmp_path, GError **error);
/* Remove every ".NAME.tmp-XXXXXX" file or directory in `dir` whose lock no
 * live writer holds. */
void lp_output_clean_stale (const char *dir);

/* Directory outputs carry a manifest of the files llmpress wrote, so that a
 * later write of the same kind may replace them, and only them. */
#define LP_OUTPUT_MANIFEST ".llmpress-output"
/* An existing directory at `path` may be written into: it is empty, or its
 * manifest says it is a previous output of `kind`. */
gboolean lp_output_dir_check (const char *path, const char *kind, GError **error);
/* Move the files of the finished temporary directory `tmp` into `path`
 * (absent, a symlink, or a directory lp_output_dir_check accepted), remove
 * the files of the previous output that the new one lacks, and leave every
 * other file there alone. */
gboolean lp_output_dir_merge (const char *tmp, const char *path, const char *kind, GError **error);

/* An LpAtomicDir for a directory a user asked for (kind: "hf"): refused
 * over an existing directory unless lp_output_dir_check accepts it; commit
 * merges (lp_output_dir_merge) instead of replacing the whole directory. */
typedef struct _LpAtomicDir LpAtomicDir;
LpAtomicDir *lp_atomic_dir_new_output (const char *path, const char *kind, GError **error);

/* The files a command or run reads, which none of its outputs may replace,
 * contain (a directory output around one) or be inside of (an output inside
 * an input directory).  Compared by device and inode and by resolved path. */
typedef struct _LpReadSet LpReadSet;

LpReadSet *lp_read_set_new (void);
void lp_read_set_free (LpReadSet *rs);
/* `what` names it in messages: "the input model", "the calibration data". */
void lp_read_set_add (LpReadSet *rs, const char *path, const char *what);
/* NULL when `out` is safe from every file in the set, else why not:
 * "would overwrite the input model (/abs/m.gguf)". */
char *lp_read_set_conflict (const LpReadSet *rs, const char *out);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpReadSet, lp_read_set_free)

G_END_DECLS
