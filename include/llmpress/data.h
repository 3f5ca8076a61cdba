/* llmpress — evaluation and calibration data (formats/data.c). */
#pragma once

#include <glib.h>
#include <llmpress/model.h>

G_BEGIN_DECLS

/* Evaluation/calibration data: a uint16 (.u16) or uint32 (.u32) little-endian
 * token file, or text tokenized with the model's vocabulary (any other
 * extension).  Token ids are checked against the model's vocabulary size. */
GArray *lp_tokens_load (const char *path, LpModel *model, GError **error);

/* A window of `len` tokens as the model sees it: out[0] = bos, then
 * tokens[start .. start + len - 2] (the data holds no BOS); with bos < 0 (a
 * model that adds no BOS) tokens[start .. start + len - 1].  Evaluation and
 * calibration cut their windows and samples with it. */
void lp_tokens_window (const gint32 *tokens, gsize start, int len, gint32 bos, gint32 *out);

G_END_DECLS
