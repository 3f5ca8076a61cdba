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
 * tokens[start .. start + len - 2] (the data holds no BOS); bos < 0: no BOS,
 * tokens[start .. start + len - 1].  Evaluation and calibration cut their
 * windows and samples with it. */
void lp_tokens_window (const gint32 *tokens, gsize start, int len, gint32 bos, gint32 *out);

/* The BOS windows of the model's data start with: its tokenizer's BOS when
 * the model adds one (tokenizer.ggml.add_bos_token, or the tokenizer kind's
 * default), -1 when it does not; 1 when the model has no tokenizer. */
gint32 lp_tokens_bos (LpModel *model);

G_END_DECLS
