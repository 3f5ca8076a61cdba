/* llmpress — what formats/ shares inside libllmpress, not part of the SDK:
 * which files loading a model reads, and the outputs saving one must not
 * replace.  For formats/ and the folders above it (README: Layout). */
#pragma once

#include "lp-internal.h"
#include "outputs.h"

G_BEGIN_DECLS

/* Every file or directory lp_model_load (path, options) reads: the path
 * itself (the directory of a model.safetensors), and for a llama2.c
 * checkpoint the tokenizer it uses (options' or the one found beside it).
 * Paths that are no model give just themselves. */
GPtrArray *lp_model_load_files (const char *path, const LpLoadOptions *options);
/* The tokenizer lp_llama2c_load picks up beside a checkpoint when none is
 * given (NULL: none, or not a checkpoint). */
char *lp_llama2c_implicit_tokenizer (const char *path);

/* A model path as lp_model_load reads it: with a llama2.c checkpoint, also the
 * tokenizer it picks up beside it (or `tokenizer` when given). */
void lp_read_set_add_model (LpReadSet *rs, const char *path, const char *tokenizer, const char *what);
/* Refuse `path` as an output of `model` when it is (or holds, or lies inside)
 * a file the model was read from. */
gboolean lp_model_check_output (LpModel *model, const char *path, GError **error);

/* lp_gguf_read_tensors, and where each tensor's data starts in the file
 * (*offsets: guint64, one a tensor, in order; g_array_unref it), for
 * messages that point at a bad value. */
GPtrArray *lp_gguf_read_tensors_at (const char *path, LpMeta *meta, GArray **offsets, GError **error);

G_END_DECLS
