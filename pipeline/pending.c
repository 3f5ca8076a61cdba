/* TEMPORARY: entry points whose real implementations are being written in
 * parallel branches (gguf.c, hf.c, tokenizer*.c).  Each branch deletes its
 * functions from this file; the file is deleted when empty. */
#include "config.h"

#include "lp-internal.h"

#define PENDING(what) lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s is not implemented yet", what)


gboolean lp_tokenizer_read_llama2c (const char *path, gint64 n_vocab, LpMeta *meta, GError **error) { PENDING ("tokenizer.bin"); return FALSE; }
gboolean lp_tokenizer_write_llama2c (const LpMeta *meta, const char *path, GError **error) { PENDING ("tokenizer.bin"); return FALSE; }
LpTokenizer *lp_tokenizer_new_from_meta (const LpMeta *meta, GError **error) { PENDING ("tokenizer"); return NULL; }
void lp_tokenizer_free (LpTokenizer *tok) { }
gint32 lp_tokenizer_bos (const LpTokenizer *tok) { return 1; }
GArray *lp_tokenizer_encode (const LpTokenizer *tok, const char *text, gssize len, gboolean add_bos, GError **error) { PENDING ("tokenizer"); return NULL; }
gint32 lp_tokenizer_eos (const LpTokenizer *tok) { return 2; }
char *lp_tokenizer_decode_piece (const LpTokenizer *tok, gint32 prev, gint32 id, gsize *out_len) { *out_len = 0; return g_strdup (""); }

gboolean lp_tokenizer_read_spm (const char *path, LpMeta *meta, GError **error) { PENDING ("tokenizer.model"); return FALSE; }
gboolean lp_tokenizer_read_hf (const char *path, LpMeta *meta, GError **error) { PENDING ("tokenizer.json reading"); return FALSE; }
gboolean lp_tokenizer_write_hf (const LpMeta *meta, const char *dir, GError **error) { PENDING ("tokenizer.json writing"); return FALSE; }
