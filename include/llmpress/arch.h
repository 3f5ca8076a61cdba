/* llmpress — what we know about each architecture, in tables:
 * hyper-parameters, tensor names per format, and RoPE layout.
 *
 * Canonical tensor names are GGUF's ("blk.3.attn_q.weight"), and canonical
 * weight layout is GGUF's too: for llama and mistral the Q and K projections
 * are stored in the original Meta "interleaved pairs" RoPE order (as llama.cpp
 * and llama2.c hold them); the Hugging Face reader/writer permute them to and
 * from HF's rotate-half order.  qwen2 uses rotate-half (NeoX) RoPE and is
 * never permuted. */
#pragma once

#include <glib.h>
#include <llmpress/meta.h>

G_BEGIN_DECLS

typedef enum {
  LP_ARCH_LLAMA,
  LP_ARCH_MISTRAL,
  LP_ARCH_QWEN2,
  LP_ARCH_COUNT,
} LpArch;

typedef enum {
  LP_ROPE_NORMAL, /* rotate pairs (x[2i], x[2i+1]) — llama/mistral in GGUF layout */
  LP_ROPE_NEOX,   /* rotate halves (x[i], x[i+hd/2]) — qwen2 */
} LpRopeStyle;

typedef enum {
  LP_ROPE_SCALING_NONE,
  LP_ROPE_SCALING_LINEAR,
  LP_ROPE_SCALING_LLAMA3,
} LpRopeScalingType;

/* Hyper-parameters.  Dimension names: D model dim, F ffn dim, V vocab,
 * H heads, Hkv key/value heads, hd head dim, L layers. */
typedef struct {
  LpArch arch;
  gint64 n_vocab;       /* V */
  gint64 dim;           /* D */
  gint64 ffn_dim;       /* F */
  gint64 n_layers;      /* L */
  gint64 n_heads;       /* H */
  gint64 n_kv_heads;    /* Hkv (GQA when < H) */
  gint64 head_dim;      /* hd, usually D / H */
  gint64 ctx_len;       /* trained context length as declared by the file */
  double rope_theta;    /* 10000 unless the file says otherwise */
  LpRopeScalingType rope_scaling;
  double rope_factor;           /* linear and llama3 */
  double rope_low_freq_factor;  /* llama3 */
  double rope_high_freq_factor; /* llama3 */
  gint64 rope_orig_ctx;         /* llama3: original_max_position_embeddings */
  double norm_eps;      /* RMSNorm epsilon */
  gboolean tied_embeddings; /* no output.weight: the head is token_embd */
} LpModelConfig;

/* Static facts about one architecture. */
typedef struct {
  LpArch arch;
  const char *name;          /* "llama": GGUF general.architecture and key prefix */
  const char *hf_model_type; /* config.json model_type */
  const char *hf_class;      /* config.json architectures[0] */
  LpRopeStyle rope_style;
  gboolean qkv_bias;         /* q/k/v projections carry biases (qwen2) */
  gboolean hf_permute_qk;    /* HF stores Q/K in rotate-half order: permute on read/write */
} LpArchInfo;

const LpArchInfo *lp_arch_info (LpArch arch);
/* By GGUF name or HF model_type; NULL when unknown. */
const LpArchInfo *lp_arch_lookup (const char *name);
/* "llama, mistral, qwen2" for messages. */
const char *lp_arch_known_names (void);

/* One tensor the architecture expects, with its GGUF and HF names. */
typedef struct {
  char *name;      /* canonical (GGUF) name */
  char *hf_name;   /* Hugging Face name */
  int n_dims;
  gint64 shape[2]; /* row-major: {out, in} for matrices, {n} for vectors */
  gboolean hf_permute; /* HF stores this Q/K tensor in rotate-half order */
  int layer;       /* block index, -1 for global tensors */
} LpTensorSpec;

/* Every tensor a model with this config has, in a stable order (embedding,
 * blocks in order, final norm, head).  Free with g_ptr_array_unref. */
GPtrArray *lp_arch_tensor_specs (const LpModelConfig *config);
/* Canonical name for an HF name and back: NULL when not a tensor of this arch. */
char *lp_arch_name_from_hf (const LpModelConfig *config, const char *hf_name);
char *lp_arch_name_to_hf (const LpModelConfig *config, const char *name);

/* Sensible defaults (theta 10000, eps 1e-5, ...) for fields a file may omit. */
void lp_model_config_init (LpModelConfig *config, LpArch arch);
/* Sanity: positive sizes, H divisible by Hkv, D = H*hd where required, ... */
gboolean lp_model_config_check (const LpModelConfig *config, const char *source, GError **error);
/* Parameter count implied by the config. */
gint64 lp_model_config_n_params (const LpModelConfig *config);

/* The config as GGUF keys ("llama.block_count", ...) into meta, and back.
 * from_meta reports the missing or mistyped key by name. */
void lp_model_config_to_meta (const LpModelConfig *config, LpMeta *meta);
gboolean lp_model_config_from_meta (LpModelConfig *config, const LpMeta *meta, const char *source,
                                    GError **error);

/* Permute a Q/K weight {n_heads*hd, D} (or a bias {n_heads*hd}) between GGUF's
 * interleaved order and HF's rotate-half order, in place on f32/f16/bf16 data
 * (row permutation, so any plain dtype works: elem_row_bytes is the byte size
 * of one row).  to_hf=TRUE goes GGUF -> HF. */
void lp_arch_permute_qk (void *data, gint64 n_heads, gint64 head_dim, gsize row_bytes, gboolean to_hf);

G_END_DECLS
