/* llmpress quantize plugin — what its files share (not SDK).
 *
 * Every pass quantizes a weight W[R, C] (R outputs, C inputs) onto a grid
 * chosen per tensor (QGrid): one of llama.cpp's block types (groups = the
 * type's blocks of 32 or 256 values along a row) or a plain integer grid of
 * `bits` bits with groups of `group` columns (LpIntGrid, tensor.h).  The
 * column quantizer (QCols) holds a tensor's group parameters and codes while
 * RTN, GPTQ or AWQ choose the values column by column. */
#pragma once

#include <math.h>

#include <llmpress/llmpress.h>
#include <llmpress/obs.h>
#include <llmpress/layerwise.h>
#include <llmpress/quant_mix.h>

/* The grid of one tensor. */
typedef struct {
  LpDType type;       /* a block type; LP_DTYPE_F32: the integer grid; LP_DTYPE_F16: kept in f16 (fallback) */
  int bits;           /* integer grid: 2..8 */
  int group;          /* columns per group: the block size, group_size, or C (per channel) */
  gboolean per_tensor;/* integer grid: one scale and zero for the whole tensor */
  gboolean symmetric;
  gboolean clip_search;
} QGrid;

/* One entry of overrides=: tensors matching glob get `format` (and `bits`). */
#define Q_MAX_OVERRIDES 32
typedef struct {
  char glob[128];
  LpDType format;     /* LP_DTYPE_F32: integer grid of `bits` */
  int bits;
} QOverride;

/* The pass's settings, read once from the context. */
typedef struct {
  LpDType format;     /* LP_DTYPE_F32: integer grid */
  int bits;
  int group_size;     /* > 0, 0 = per channel, -1 = per tensor */
  gboolean symmetric;
  gboolean clip_search;
  gboolean allow_requantize;
  const LpTensorPattern *targets, *ignore;
  QOverride overrides[Q_MAX_OVERRIDES];
  int n_overrides;
  GHashTable *assigned; /* tensor name -> QOverride from the allocator or the preset (wins), or NULL; borrowed */
  gboolean has_preset;  /* preset=: llama-quantize's mix (format is its default type) */
  LpQuantMix preset;
  gboolean all_targets; /* preset= without targets=: every 2-D weight, token_embd and output too */
} QOptions;

/* Parameter table entries every quantize pass has (quantize.c). */
#define Q_COMMON_PARAMS                                                                                                 \
  { .name = "format", .type = LP_PARAM_ENUM, .default_value = "int", .choices = q_format_names,                         \
    .help = "the grid: int (a plain integer grid: bits, group_size, symmetric; GPTQ / compressed-tensors) or one of "   \
    "llama.cpp's block types, which fix the group size and the scale/min encoding; a tensor whose rows the "            \
    "block does not divide falls back as llama-quantize does (reported)" },                                             \
  { .name = "bits", .type = LP_PARAM_INT, .default_value = "4", .min = 2, .max = 8,                                     \
    .help = "integer grid: bits per weight (2..8)", .flags = LP_PARAM_RANGE },                                          \
  { .name = "group_size", .type = LP_PARAM_INT, .default_value = "128", .min = -1, .max = 1 << 20,                      \
    .help = "integer grid: input columns sharing a scale and zero; 0 = one group per row (per channel), -1 = one "      \
    "for the whole tensor; a last group of a row may be shorter when it does not divide the row (reported)",            \
    .flags = LP_PARAM_RANGE },                                                                                          \
  { .name = "symmetric", .type = LP_PARAM_BOOL, .default_value = "false",                                               \
    .help = "integer grid: zero point fixed at the middle code (else fitted per group)" },                              \
  { .name = "clip_search", .type = LP_PARAM_BOOL, .default_value = "true",                                              \
    .help = "integer grid: search the clipping range that minimises the (importance-weighted) squared error, as "       \
    "GPTQ's mse option, instead of min/max" },                                                                          \
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = "blk.*",                                              \
    .help = "tensors to quantize (2-D weights only: norms and other vectors stay as they are)" },                       \
  { .name = "ignore", .type = LP_PARAM_TENSORS, .default_value = "", .help = "tensors left as they are" },              \
  { .name = "allow_requantize", .type = LP_PARAM_BOOL, .default_value = "false",                                        \
    .help = "quantize tensors that are already quantized (from their dequantized values; quality suffers)" },           \
  { .name = "overrides", .type = LP_PARAM_STRING, .default_value = "",                                                  \
    .help = "mixed precision: comma-separated GLOB=BITS (integer grid of that many bits) or GLOB=TYPE (a block type), " \
    "the last match winning; a glob matches the full name or the short one (attn_v for blk.N.attn_v.weight): "          \
    "overrides=attn_v=6,ffn_down=q6_k" },                                                                             \
  { .name = "preset", .type = LP_PARAM_ENUM, .default_value = "none", .choices = q_preset_names,                        \
    .help = "llama-quantize's mix (Q4_K_M is what `llama-quantize in.gguf out.gguf Q4_K_M` makes; any case): each "     \
    "tensor's block type as llama-quantize chooses it (attn_v and ffn_down at more bits in some layers, the output "   \
    "head or tied embeddings at q6_k or q8_0, fallbacks for rows the block does not divide); without targets= it "     \
    "covers every 2-D weight, token_embd and output too (those by RTN); overrides= win over it; not with format= or "  \
    "target_bpw=" }

/* GPTQ's own parameters (quantize.gptq, and quantize.awq quantizer=gptq). */
#define Q_GPTQ_PARAMS                                                                                                 \
  { .name = "damp", .type = LP_PARAM_FLOAT, .default_value = "0.01", .min = 0, .max = 1,                              \
    .help = "GPTQ damping: this fraction of the mean Hessian diagonal is added to the diagonal (raised tenfold, up "  \
    "to three times, when the Hessian is still not positive definite)",                                               \
    .flags = LP_PARAM_RANGE },                                                                                        \
  { .name = "block_size", .type = LP_PARAM_INT, .default_value = "128", .min = 1, .max = 1 << 16,                     \
    .help = "GPTQ: columns per lazy-update block (rounded up to a multiple of the group)", .flags = LP_PARAM_RANGE }, \
  { .name = "act_order", .type = LP_PARAM_BOOL, .default_value = "false",                                             \
    .help = "GPTQ: quantize columns in order of decreasing Hessian diagonal (desc_act); the integer grid then "       \
    "records each column's group in g_idx unless static_groups; block types always use static groups" },              \
  { .name = "static_groups", .type = LP_PARAM_BOOL, .default_value = "false",                                         \
    .help = "GPTQ: fit every group's grid from the original weights before the sweep (groups stay runs of columns "   \
    "with act_order)" }

typedef struct {
  double damp;
  int block_size;
  gboolean act_order, static_groups;
} QGptqSettings;

extern const char *const q_format_names[];
extern const char *const q_preset_names[];

/* Read the common parameters; fails when bits/group_size/symmetric are given
 * with a block-type format, which fixes them. */
gboolean q_options_read (LpPassContext *ctx, QOptions *o, GError **error);
/* The grid for tensor `name` with rows of `cols` values: the format (or its
 * override), its fallback when the block does not divide the row
 * (*fell_back set), or the integer grid with its group. */
QGrid q_grid_for (const QOptions *o, const char *name, gint64 cols, gboolean *fell_back);
/* With preset=: the preset's type for every selected tensor that no
 * override names (name -> QOverride, for o->assigned), logged as a summary;
 * has_imatrix: importance data is given (llama-quantize's rules depend on it). */
GHashTable *q_preset_assign (LpPassContext *ctx, const QOptions *o, LpModel *model, gboolean has_imatrix);
/* Whether a tensor is selected: 2-D, matched by targets and not by ignore. */
gboolean q_selected (const QOptions *o, const LpTensor *t);
/* Before any work (calibration): refuse a model whose selected tensors are
 * already quantized, unless allow_requantize. */
gboolean q_check_model (const QOptions *o, LpModel *model, GError **error);
/* Refuse an already-quantized tensor unless allow_requantize; refuse NaN/Inf
 * (the message does not name the tensor: callers prefix it). */
gboolean q_check_input (const QOptions *o, const LpTensor *t, const float *w, GError **error);
/* q_check_input's two halves: the already-quantized refusal, and the scan
 * of w (t's values) naming the first non-finite element [row, column]. */
gboolean q_check_requantize (const QOptions *o, const LpTensor *t, GError **error);
gboolean q_check_finite (const LpTensor *t, const float *w, GError **error);
/* One log line naming the grid a tensor got ("blk.0.ffn_down.weight: q4_k -> f16 (rows of 172)"). */
char *q_grid_describe (const QGrid *g);

/* ---- column quantizer (qcols.c) ---- */

typedef struct _QCols QCols;

/* For W0[R, C] (original column order, as before the sweep) on grid g.
 * importance[C] (may be NULL) weights the fits; `like` gives the name, shape
 * and keep-mask (pruned weights are quantized as 0, so they stay 0 where the
 * grid holds 0).  perm: the sweep order (position s holds original column
 * perm[s]; NULL = identity).  Groups are fitted now from W0 when
 * fit_now (GPTQ's static groups), and always for per-channel / per-tensor
 * grids and for block types swept in a permuted order (blocks are runs of
 * original columns); else each group is fitted from the current values when
 * the sweep reaches its first column. */
QCols *q_cols_new (const QGrid *g, const float *W0, const float *importance, const LpTensor *like,
                   const int *perm, gboolean fit_now, GError **error);
void q_cols_free (QCols *q);
/* The OBS block size to use: `wanted` rounded up to a multiple of the group,
 * so that a group fitted at its first column sees current values. */
int q_cols_block_size (const QCols *q, int wanted);
/* Sweep position s for rows [r0, r1): fit its group first if it starts there
 * (values from W[R, ldw] in sweep order), then write row r's chosen value to
 * out[r - r0].  Disjoint row ranges may run at the same time (lp_obs_sweep):
 * only those rows' state is written. */
gboolean q_cols_column (QCols *q, int s, int r0, int r1, const float *W, int ldw, float *out, GError **error);
/* The quantized tensor (name and shape of `like`), with its mask when every
 * pruned weight is exactly 0; *mask_lost = pruned weights that are not. */
LpTensor *q_cols_finish (QCols *q, gint64 *mask_lost, GError **error);

/* Quantize W[R, C] (original order) onto the grid with no error feedback:
 * the RTN of the integer grid, and AWQ's inner loop.  Group-wise integer
 * grids run as lp_quantize_groups on be. */
LpTensor *q_round (LpBackend *be, const QGrid *g, const LpTensor *like, const float *W, const float *importance,
                   gint64 *mask_lost, GError **error);

/* Report a tensor whose rows the grid does not fit as asked (fell_back from
 * q_grid_for): the fallback type, or the shorter last group. */
void q_log_grid (LpPassContext *ctx, const LpTensor *t, const QGrid *g, gboolean fell_back);
/* Log what happened to a mask (the format could not keep pruned weights at 0). */
void q_log_mask_lost (LpPassContext *ctx, const LpTensor *t, const QGrid *g, gint64 lost);

/* RTN of one selected tensor t of the input into work (with the importance
 * of stats when it has an entry for t; stats may be NULL). */
gboolean q_rtn_tensor (LpPassContext *ctx, const QOptions *o, LpStats *stats, LpModel *work, LpTensor *t,
                       GError **error);
/* With preset= or a budget (o->assigned): RTN of the selected tensors
 * outside the blocks (token_embd, output), which the layer-wise passes
 * (GPTQ, AWQ) do not reach, as llama-quantize quantizes them. */
gboolean q_rtn_rest (LpPassContext *ctx, const QOptions *o, LpModel *in, LpModel *work, GError **error);

/* ---- bit budget (allocate.c) ---- */

#define Q_MAX_CANDIDATES 12
#define Q_DEFAULT_CANDIDATES "q3_k,q4_k,q5_0,q5_k,q6_k,q8_0"
/* target_bpw= / target_size= / candidates= of every quantize pass. */
typedef struct {
  double target_bpw;    /* file bytes * 8 / parameters; 0: none */
  guint64 target_size;  /* bytes of the whole GGUF file; 0: none */
  QOverride cand[Q_MAX_CANDIDATES];
  int n_cand;
} QBudget;

#define Q_BUDGET_PARAMS                                                                                               \
  { .name = "target_bpw", .type = LP_PARAM_FLOAT, .default_value = "0", .min = 0, .max = 64,                          \
    .help = "bit budget: choose each tensor's grid among candidates= so that the saved GGUF file takes at most this " \
    "many bits per weight (file bytes * 8 / parameters; header, metadata, norms, scales and fallbacks counted), "    \
    "spending bytes where the output error on the calibration data drops most; without targets= the embedding and " \
    "output head are chosen too; 0 = off",                                                                          \
    .flags = LP_PARAM_RANGE },                                                                                        \
  { .name = "target_size", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = 1e15,                         \
    .help = "bit budget in bytes of the whole saved GGUF file (as target_bpw=); 0 = off", .flags = LP_PARAM_RANGE },   \
  { .name = "candidates", .type = LP_PARAM_STRING, .default_value = "",                                              \
    .help = "the grids target_bpw/target_size choose among, comma-separated block types or integer bits "            \
    "(candidates=q4_k,q6_k or 3,4,8; an integer grid is written to GGUF as its dense values, so it only pays in "      \
    "memory); default: " Q_DEFAULT_CANDIDATES }

/* Read target_bpw, target_size and candidates (o read first): refuses both
 * budgets at once, and a budget beside preset= or overrides=; with a budget
 * and no targets= every 2-D weight is selected (o->all_targets). */
gboolean q_budget_read (LpPassContext *ctx, QOptions *o, QBudget *b, GError **error);
static inline gboolean
q_budget_active (const QBudget *b)
{
  return b->target_bpw > 0 || b->target_size > 0;
}
/* A grid per selected tensor of model (name -> QOverride) so that the saved
 * file meets the budget, from the RTN output error each candidate causes
 * against the input Hessians in stats (see allocate.c); cal (may be NULL)
 * gives the embedding's token counts. */
GHashTable *q_allocate (LpPassContext *ctx, const QOptions *o, const QBudget *b, LpModel *model, LpStats *stats,
                        LpCalibration *cal, GError **error);
/* q_allocate with the Hessians of `given` (may be NULL) or, when it has
 * none, measured now on the pass's calibration data. */
GHashTable *q_budget_assign (LpPassContext *ctx, const QOptions *o, const QBudget *b, LpModel *in, LpStats *given,
                             GError **error);
/* Bytes of model saved as GGUF (written to a temporary file and measured). */
gboolean q_file_bytes (LpModel *model, guint64 *out, GError **error);
/* With a budget: log the bytes and bits per weight of out's GGUF file. */
gboolean q_budget_report (LpPassContext *ctx, const QBudget *b, LpModel *out, GError **error);
/* "q4_k" or "int4" into buf. */
const char *q_budget_name (const QOverride *v, char *buf, gsize size);

/* ---- GPTQ (gptq.c) ---- */

gboolean q_gptq_settings_read (LpPassContext *ctx, QGptqSettings *s);
/* The GPTQ sweep of t's values W[R, C] (changed) on `grid` against H[C, C],
 * on backend be, without a pass context (the bench calls it): dead inputs,
 * act-order, static groups, damping (*damp_used: what held), the OBS loss
 * estimate and the pruned weights that could not stay 0 (*lost). */
LpTensor *q_gptq_quantize (LpBackend *be, const QGrid *grid, const QGptqSettings *s, const LpTensor *t, float *W,
                           const float *H, double *loss, double *damp_used, gint64 *lost, GError **error);
/* What GPTQ makes of an input's Hessian H[C, C] before any weight: the
 * act-order permutation (NULL without) and U, lp_obs_prepare's factor of
 * the permuted H; every weight of that input reuses them (one Cholesky per
 * input, not per weight).  Zeroed: none made yet. */
typedef struct {
  int n;
  int *perm;          /* [C] or NULL */
  float *U;           /* [C, C] or NULL */
  double damp_used;
} QGptqFactor;
void q_gptq_factor_clear (QGptqFactor *f);
/* In a layer-wise callback: f stays the factor of the Hessian of input
 * (*layer, *in) while stats are for that input's weights, else it is
 * cleared for the next (*layer, *in updated); fails when stats has no Hessian. */
gboolean q_gptq_factor_follow (QGptqFactor *f, int *layer, int *in, const LpActStats *stats, GError **error);
/* Before a GPTQ sweep of W[R, C] (original order) against H[C, C]: dead
 * inputs' columns zeroed, and the factor f of H made when f holds none
 * (act-order: f->perm).  A quantizer with its own grid then runs
 * lp_obs_sweep over W (permuted by f->perm, if any) with f->U and its own
 * column callback (quantize.codebook's learned codebooks). */
gboolean q_gptq_prepare (LpBackend *be, const QGptqSettings *s, gint64 rows, int n, float *W, const float *H,
                         QGptqFactor *f, GError **error);
/* q_gptq_quantize with the factor f of H: made into f when f holds none
 * (f->damp_used then says what damping held), else reused as it is. */
LpTensor *q_gptq_quantize_shared (LpBackend *be, const QGrid *grid, const QGptqSettings *s, const LpTensor *t,
                                  float *W, const float *H, QGptqFactor *f, double *loss, gint64 *lost,
                                  GError **error);
/* GPTQ on one weight t (W[R, C]) against its input Hessian H[C, C] (not
 * changed); shared (may be NULL): the factor of H, kept for the next weight
 * of the same input; the OBS loss estimate is added to *loss (may be NULL). */
LpTensor *q_gptq_weight (LpPassContext *ctx, const QOptions *o, const QGptqSettings *s, const LpTensor *t,
                         const float *H, int n, QGptqFactor *shared, double *loss, GError **error);

/* ---- passes ---- */

extern const LpPassInfo q_rtn_pass, q_gptq_pass, q_awq_pass, q_codebook_pass;
