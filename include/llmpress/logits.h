/* llmpress — a teacher's next-token distributions kept as their top-k, for
 * offline distillation: computed once (the distill.teacher pass), cached as
 * an artifact of their own (LP_ARTIFACT_LOGITS) and read by any number of
 * students (the LP_COP_KL_TOPK loss), without running the teacher again.
 *
 * For N windows of L tokens (the calibration samples a student trains on),
 * at each position: the ids of the k most likely next tokens, their
 * log-probabilities at temperature tau (log softmax (z / tau)), and the
 * log-probability of all the other tokens together (the rest bucket), so
 * the k + 1 buckets hold the teacher's whole mass.  The teacher's
 * vocabulary size and a digest of its vocabulary go with them: a student
 * with another vocabulary is refused.
 *
 * On disk (a cache entry's logits.gguf, or any path): GGUF with
 *   general.type = "llmpress.logits"
 *   llmpress.logits.temperature f32, llmpress.logits.k u32,
 *   llmpress.logits.n_vocab u64, llmpress.logits.vocab_digest string,
 * and four tensors (shapes outermost first):
 *   tokens i32 [N, L], topk_ids i32 [N, L, k], topk_logp f32 [N, L, k],
 *   rest_logp f32 [N, L].
 * Log-probabilities are f32, not f16: the ids (i32) take half the bytes
 * anyway, so f16 would save a quarter of the file, and its 11-bit mantissa
 * would move a log-probability near -8 by up to 4e-3 (p by 0.4%) and leave
 * the k + 1 masses summing to 1 only within about 1e-3; in f32 the loss a
 * student sees is the teacher's to f32 rounding, and k = V - 1 gives the
 * full distribution's KL exactly.
 *
 * Shapes: N windows, L tokens a window, k ids a position, V vocabulary. */
#pragma once

#include <glib.h>
#include <llmpress/calibration.h>
#include <llmpress/model.h>

G_BEGIN_DECLS

typedef struct _LpLogits LpLogits;

/* An empty set (tokens 0, top-k to be filled by lp_logits_set_window) for
 * a teacher of n_vocab tokens whose vocabulary has digest vocab_digest
 * (lp_model_vocab_digest).  Fails (one line) on k outside 1..n_vocab, a
 * temperature that is not finite and > 0, or sizes that overflow. */
LpLogits *lp_logits_new (int n_windows, int seq_len, int k, gint64 n_vocab, double temperature,
                         const char *vocab_digest, GError **error);
LpLogits *lp_logits_ref (LpLogits *lg);
void lp_logits_unref (LpLogits *lg);

int lp_logits_n_windows (const LpLogits *lg);
int lp_logits_seq_len (const LpLogits *lg);
int lp_logits_k (const LpLogits *lg);
gint64 lp_logits_n_vocab (const LpLogits *lg);
double lp_logits_temperature (const LpLogits *lg);
const char *lp_logits_vocab_digest (const LpLogits *lg);
/* Bytes of the four arrays: N L (2 k + 2) 4. */
guint64 lp_logits_n_bytes (const LpLogits *lg);
/* Window i's tokens [L]. */
const gint32 *lp_logits_tokens (const LpLogits *lg, int window);
/* Window i's top-k, as train.h's LpTeacherLogits takes it: ids [L, k],
 * their log-probabilities [L, k] and the rest's [L].  Borrowed from lg. */
void lp_logits_window (const LpLogits *lg, int window, const gint32 **topk_ids, const float **topk_logp,
                       const float **rest_logp);

/* Window i from the teacher's logits there: tokens[L] and logits[L, V],
 * reduced with lp_logits_topk at the set's k and temperature.  Fails on a
 * token outside the vocabulary. */
gboolean lp_logits_set_window (LpLogits *lg, int window, const gint32 *tokens, const float *logits, GError **error);

/* The reduction, for T rows of logits[T, V]: the k largest of logits / tau
 * (ties: the lower id first), their ids in decreasing order of probability,
 * their log softmax (logits / tau), and the log of the other tokens' total
 * mass (-inf when k = V).  Computed in double, stored in f32. */
void lp_logits_topk (const float *logits, int T, gint64 V, int k, double temperature, gint32 *ids, float *logp,
                     float *rest_logp);

/* A digest of a model's vocabulary: SHA-256 over the tokenizer.ggml keys
 * that say what an id means (model, tokens in order, merges, bos_token_id);
 * "none" for a model that carries no vocabulary (then only the vocabulary
 * size can be compared).  g_free it. */
char *lp_model_vocab_digest (LpModel *model);
/* A student can learn from these when its vocabulary is the teacher's
 * (size and digest); otherwise one line saying which differs. */
gboolean lp_logits_check_student (const LpLogits *lg, LpModel *student, GError **error);
/* The windows are the calibration samples: the same count, length and
 * tokens; otherwise one line naming the first difference. */
gboolean lp_logits_check_calibration (const LpLogits *lg, LpCalibration *cal, GError **error);

/* As GGUF (above), through LpAtomicFile. */
gboolean lp_logits_save (const LpLogits *lg, const char *path, GError **error);
/* Every key, shape and value checked: a malformed file fails with one line
 * naming the file, the key or the byte offset, what was expected and what
 * was found. */
LpLogits *lp_logits_load (const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpLogits, lp_logits_unref)

G_END_DECLS
