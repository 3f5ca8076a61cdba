/* llmpress — specs before they become graphs.  Not part of the SDK. */
#pragma once

#include <glib.h>

typedef struct {
  char *key;
  char *value;   /* variables expanded */
  char *text;    /* "key=value" as written, for messages */
  char *loc;     /* "file:line" or "<pipeline>:1:col" */
} LpRawEntry;

typedef struct {
  char *name;
  char *loc;
  GPtrArray *entries; /* LpRawEntry * in order */
} LpRawGroup;

typedef struct {
  char *source;
  GPtrArray *groups;     /* LpRawGroup *, nodes in order */
  LpRawGroup *settings;  /* [pipeline], or NULL (owned by nobody else: see free) */
} LpRawSpec;

/* Problems are appended to errors, one line each; a NULL return means the
 * spec could not be read at all. */
LpRawSpec *lp_spec_read_ini (const char *data, gssize len, const char *filename, GHashTable *vars,
                             GString *errors);
LpRawSpec *lp_spec_read_inline (const char *text, GHashTable *vars, GString *errors);
void lp_raw_spec_free (LpRawSpec *spec);
void lp_spec_add_error (GString *errors, const char *loc, const char *fmt, ...) G_GNUC_PRINTF (3, 4);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpRawSpec, lp_raw_spec_free)
