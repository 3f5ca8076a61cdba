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

/* One adapter as the adapter files hold it: the base weight's GGUF name,
 * A [R, K] and B [N, R] (refs), and the scale of B A; `what` names it in
 * messages (the file's tensor name, or the weight's). */
typedef struct {
  char *name;
  char *what;
  LpTensor *a, *b;
  double scale;
} LpAdapterPair;

/* A new pair (refs a and b, copies the names); lp_adapter_pair_free frees. */
LpAdapterPair *lp_adapter_pair_new (const char *name, const char *what, LpTensor *a, LpTensor *b, double scale);
void lp_adapter_pair_free (gpointer p);
/* The adapter files (adapter.c dispatches, lora_gguf.c and lora_peft.c
 * write and read; pairs: LpAdapterPair, written in their order). */
gboolean lp_lora_gguf_write (LpModel *model, GPtrArray *pairs, const char *path, int dtype, GError **error);
GPtrArray *lp_lora_gguf_read (const char *path, LpModel *base, GError **error);
gboolean lp_lora_peft_write (LpModel *model, GPtrArray *pairs, const char *path, int dtype, const char *base_path,
                             GError **error);
GPtrArray *lp_lora_peft_read (const char *path, LpModel *base, GError **error);
/* p's B for a file that scales B A by `scale`: B times p->scale / scale
 * (one f32 rounding), or p's own B when the scales are equal. */
LpTensor *lp_adapter_pair_b_at (const LpAdapterPair *p, double scale, GError **error);
/* A factor in `dtype` (-1: as held) for a file: f32, f16 or bf16 only. */
LpTensor *lp_adapter_factor_out (LpTensor *t, int dtype, const char *path, GError **error);

/* Hugging Face directories (hf.c), for the PEFT adapter writer and reader
 * (lora_peft.c): */
/* Q/K (or a part holding their rows, such as a LoRA B) between HF's
 * rotate-half row order and GGUF's interleaved one: a copy named `name`
 * (whose .attn_q. or .attn_k. says how many heads). */
LpTensor *lp_hf_permute_qk (const LpModelConfig *c, const LpTensor *t, const char *name, gboolean to_hf,
                            const char *where, GError **error);
/* The GGUF names of the tensors HF holds in rotate-half order (a set). */
GHashTable *lp_hf_permuted_names (const LpModelConfig *c);
/* `b`'s object, pretty-printed, to `path` (not atomic: inside an LpAtomicDir). */
gboolean lp_hf_write_json (const char *path, JsonBuilder *b, GError **error);

G_END_DECLS
