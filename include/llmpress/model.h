/* llmpress — a model: architecture config + named tensors + metadata.
 * Refcounted; tensors are shared, never copied, between models. */
#pragma once

#include <glib.h>
#include <llmpress/arch.h>
#include <llmpress/meta.h>
#include <llmpress/tensor.h>

G_BEGIN_DECLS

typedef struct _LpModel LpModel;

typedef enum {
  LP_FORMAT_UNKNOWN,
  LP_FORMAT_GGUF,
  LP_FORMAT_HF,       /* a directory: config.json + *.safetensors + tokenizer */
  LP_FORMAT_LLAMA2C,  /* Karpathy's llama2.c checkpoint (+ tokenizer.bin) */
} LpFormat;

const char *lp_format_name (LpFormat format);
gboolean lp_format_from_name (const char *name, LpFormat *out);
/* What a path holds: by content when it exists (magic, directory), else by
 * its extension (.gguf, .bin, a directory name or .safetensors = HF). */
LpFormat lp_format_detect (const char *path);

LpModel *lp_model_new (const LpModelConfig *config);
LpModel *lp_model_ref (LpModel *model);
void lp_model_unref (LpModel *model);

const LpModelConfig *lp_model_config (const LpModel *model);
/* Writable config, for passes that change the architecture (then fix tensors). */
LpModelConfig *lp_model_config_mut (LpModel *model);
/* Metadata as read (general.*, tokenizer.*, <arch>.*, ...).  For the
 * architecture hyper-parameters the config is authoritative: writers refresh
 * the <arch>.* keys from it (lp_model_config_to_meta) on a copy. */
LpMeta *lp_model_meta (LpModel *model);

guint lp_model_n_tensors (const LpModel *model);
LpTensor *lp_model_tensor_at (const LpModel *model, guint i);      /* borrowed */
LpTensor *lp_model_tensor (const LpModel *model, const char *name); /* borrowed or NULL */
/* Add or replace (by name, keeping the position); takes a ref. */
void lp_model_set_tensor (LpModel *model, LpTensor *tensor);
/* lp_model_set_tensor for a finished tensor the caller will not write
 * again: when the model has a spill file (a pipeline run gives one to the
 * models it makes), its bytes move there, so a pass making a deep model
 * tensor by tensor does not hold them all in memory.  The same bytes. */
void lp_model_set_tensor_spill (LpModel *model, LpTensor *tensor);
void lp_model_remove_tensor (LpModel *model, const char *name);

/* Where it came from, for messages (borrowed; may be NULL). */
const char *lp_model_source (const LpModel *model);
LpFormat lp_model_source_format (const LpModel *model);
void lp_model_set_source (LpModel *model, const char *path, LpFormat format);

/* Every tensor the config expects is present with the right shape; extra
 * tensors are allowed.  The message names the source and the tensor. */
gboolean lp_model_validate (const LpModel *model, GError **error);
/* Total parameters over all tensors (elements). */
gint64 lp_model_n_params (const LpModel *model);
/* Total tensor bytes. */
guint64 lp_model_n_bytes (const LpModel *model);
/* What a pass that changes a model starts from: a new model with src's
 * config, a copy of its metadata and the same tensors (shared, refcounted),
 * so replacing some tensors never touches src.  It keeps src's source
 * path, so saving over the file the model came from stays refused. */
LpModel *lp_model_derive (LpModel *src);

/* Options for reading. */
typedef struct {
  const char *tokenizer_path; /* llama2.c: tokenizer.bin (default: looked for beside) */
} LpLoadOptions;

/* What writing f16 (or bf16) does with a finite value beyond the type's
 * range (|x| > 65504 for f16), which would otherwise become inf. */
typedef enum {
  LP_OVERFLOW_ERROR = 0, /* refuse, naming the tensor, the element and its value */
  LP_OVERFLOW_CLAMP      /* write the largest finite value of that sign; lp_warn says how many */
} LpOverflow;

/* Options for writing. */
typedef struct {
  LpFormat format;    /* LP_FORMAT_UNKNOWN: from the path */
  int dtype;          /* -1 keep each tensor's type; else an LpDType for float tensors */
  /* How a Hugging Face directory holds integer-grid layers: AutoGPTQ's
   * qweight/qzeros/scales/g_idx (the default) or compressed-tensors
   * pack-quantized (weight_packed/weight_scale/...). */
  gboolean compressed_tensors;
  LpOverflow overflow; /* converting to f16/bf16; NaN and inf are refused either way */
  /* GGUF: integer grids as their parts (codes, scales, zeros, g_idx;
   * lp_tensor_grid_parts) instead of the ggml block type that holds them
   * (whose f16 offset may move a weight slightly), and keep-masks written
   * too (lp_tensor_mask_part): what the cache writes, so that a cache hit
   * gives the same forms, and so the same outputs, as the run that stored
   * it.  Only llmpress reads such a file back. */
  gboolean exact_forms;
} LpSaveOptions;

#define LP_SAVE_OPTIONS_INIT { LP_FORMAT_UNKNOWN, -1, FALSE, LP_OVERFLOW_ERROR, FALSE }

/* Read any supported format (detected). */
LpModel *lp_model_load (const char *path, const LpLoadOptions *options, GError **error);
/* Write to `path` atomically (temporary file/dir in the same directory,
 * renamed into place when complete).  Refuses to overwrite the model's own
 * source. */
gboolean lp_model_save (LpModel *model, const char *path, const LpSaveOptions *options,
                        GError **error);

/* Per-format entry points (lp_model_load/save dispatch to these). */
LpModel *lp_gguf_load (const char *path, GError **error);
gboolean lp_gguf_save (LpModel *model, const char *path, const LpSaveOptions *options, GError **error);
/* Every key/value of a GGUF file, in file order, without reading its tensors
 * (for inspection and tests). */
/* Any GGUF file (a model, an imatrix, our statistics): its key/values into
 * `meta` in file order and its tensors (mapped, file order).  And the
 * reverse: `meta` as given (general.architecture first when present), then
 * the tensors as they are. */
GPtrArray *lp_gguf_read_tensors (const char *path, LpMeta *meta, GError **error);
gboolean lp_gguf_write (const char *path, const LpMeta *meta, GPtrArray *tensors, GError **error);
LpMeta *lp_gguf_read_meta (const char *path, GError **error);
LpModel *lp_hf_load (const char *dir, GError **error);
gboolean lp_hf_save (LpModel *model, const char *dir, const LpSaveOptions *options, GError **error);
/* lp_hf_save with shards of at most max_shard_bytes (lp_hf_save: 4 GiB): one
 * model.safetensors when everything fits, else model-0000i-of-0000N.safetensors
 * and model.safetensors.index.json.  A tensor larger than the limit gets a
 * shard of its own. */
#define LP_HF_MAX_SHARD_BYTES (G_GUINT64_CONSTANT (4) << 30)
gboolean lp_hf_save_sharded (LpModel *model, const char *dir, const LpSaveOptions *options,
                             guint64 max_shard_bytes, GError **error);
LpModel *lp_llama2c_load (const char *path, const char *tokenizer_path, GError **error);
gboolean lp_llama2c_save (LpModel *model, const char *path, const LpSaveOptions *options, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (LpModel, lp_model_unref)

G_END_DECLS
