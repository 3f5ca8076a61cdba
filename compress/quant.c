/* llmpress — quantizing rows and tensors into llama.cpp's block types, the
 * fallback type table, and the grid view for data-aware quantizers. */
#include "config.h"

#include <math.h>

#include "lp-internal.h"
#include "quant-internal.h"

gboolean
lp_quant_type_supported (LpDType type)
{
  switch (type)
    {
    case LP_DTYPE_Q4_0:
    case LP_DTYPE_Q4_1:
    case LP_DTYPE_Q5_0:
    case LP_DTYPE_Q5_1:
    case LP_DTYPE_Q8_0:
    case LP_DTYPE_Q2_K:
    case LP_DTYPE_Q3_K:
    case LP_DTYPE_Q4_K:
    case LP_DTYPE_Q5_K:
    case LP_DTYPE_Q6_K:
    case LP_DTYPE_IQ4_NL:
      return TRUE;
    default:
      return FALSE;
    }
}

static gboolean
is_float_type (LpDType type)
{
  return type == LP_DTYPE_F32 || type == LP_DTYPE_F16 || type == LP_DTYPE_BF16;
}

/* The first index where v is not finite (or, for weights, negative), or -1. */
static gint64
first_bad (const float *v, gint64 n, gboolean nonneg)
{
  for (gint64 i = 0; i < n; i++)
    if (!isfinite (v[i]) || (nonneg && v[i] < 0))
      return i;
  return -1;
}

/* Whether all n values are finite: |v|'s bits plus 2^23 reach bit 31 only
 * for an infinity or a NaN, so one OR over the row tells.  In blocks of 64
 * that the compiler vectorises (an AVX2 copy beside the SSE2 one); a branch
 * per value costs as much as the quantizing. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__ ((target_clones ("avx2", "default")))
#endif
static gboolean
all_finite (const float *v, gint64 n)
{
  guint32 any = 0;
  gint64 i = 0;
  for (; i + 64 <= n; i += 64)
    for (int k = 0; k < 64; k++)
      {
        guint32 a;
        memcpy (&a, v + i + k, 4);
        any |= (a & 0x7fffffffu) + 0x00800000u;
      }
  for (; i < n; i++)
    {
      guint32 a;
      memcpy (&a, v + i, 4);
      any |= (a & 0x7fffffffu) + 0x00800000u;
    }
  return (any & 0x80000000u) == 0;
}

float
lp_block_grid_row_sigma2 (const float *row, gint64 n)
{
  float sum_x2 = 0;
  for (gint64 j = 0; j < n; ++j)
    sum_x2 += row[j] * row[j];
  return sum_x2 / n;
}

/* One block of any supported block type: ggml's parameters and codes. */
static void
fit_block (LpDType type, const float *x, const float *w, float sigma2, LpBlockParams *p, int *codes)
{
  if (lp_dtype_info (type)->block_size == 32)
    lp_qfit_block32 (type, x, w, sigma2, p, codes);
  else
    lp_qfit_kblock (type, x, w, p, codes);
}

void
lp_block_grid_pack (const LpBlockParams *p, const int *codes, void *dst)
{
  if (p->n_values == 32)
    lp_qpack_block32 (p, codes, dst);
  else
    lp_qpack_kblock (p, codes, dst);
}

void
lp_qref_row (LpDType type, const float *x, gint64 n, const float *importance, guint8 *dst)
{
  const LpDTypeInfo *info = lp_dtype_info (type);
  float sigma2 = importance != NULL && info->block_size == 32 ? lp_block_grid_row_sigma2 (x, n) : 0.f;
  LpBlockParams p;
  int codes[LP_BLOCK_MAX_VALUES];
  for (gint64 b = 0; b < n / info->block_size; b++)
    {
      gint64 off = b * info->block_size;
      fit_block (type, x + off, importance ? importance + off : NULL, sigma2, &p, codes);
      lp_block_grid_pack (&p, codes, dst + b * info->type_size);
    }
}

gboolean
lp_quantize_row (LpDType type, const float *src, void *dst, gint64 n, const float *importance,
                 GError **error)
{
  if (!lp_quant_type_supported (type) && !is_float_type (type))
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "cannot quantize to %s", lp_dtype_name (type));
      return FALSE;
    }
  guint64 bytes;
  if (n < 0 || !lp_dtype_row_bytes (type, (guint64) n, &bytes, error))
    return FALSE;
  /* The common case checks the values as it quantizes them, in one read;
   * a row it finds not finite goes on to the error below. */
  if (importance == NULL && !is_float_type (type))
    {
      int checked = lp_qx512_row_checked (type, src, n, NULL, dst);
      if (checked < 0)
        checked = lp_qx86_row_checked (type, src, n, NULL, dst);
      if (checked == 1)
        return TRUE;
    }
  gint64 bad = all_finite (src, n) ? -1 : first_bad (src, n, FALSE);
  if (bad >= 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "element %" G_GINT64_FORMAT ": expected a finite value, found %g",
                    bad, (double) src[bad]);
      return FALSE;
    }
  if (importance != NULL && (bad = first_bad (importance, n, TRUE)) >= 0)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "importance %" G_GINT64_FORMAT ": expected a finite non-negative weight, found %g", bad,
                    (double) importance[bad]);
      return FALSE;
    }
  if (is_float_type (type))
    return lp_dtype_from_f32_plain (type, src, dst, n, error);

  if (!lp_qfast_row (type, src, n, importance, dst))
    lp_qref_row (type, src, n, importance, dst);
  return TRUE;
}

/* The SDK's conversions from f32: model/ writes the plain types, the block
 * types are quantized here, so that nothing below compress/ calls up into
 * the quantizer. */
gboolean
lp_dtype_from_f32 (LpDType dtype, const float *src, void *dst, gsize n, GError **error)
{
  if (lp_quant_type_supported (dtype))
    return lp_quantize_row (dtype, src, dst, (gint64) n, NULL, error);
  return lp_dtype_from_f32_plain (dtype, src, dst, n, error);
}

LpTensor *
lp_tensor_convert (LpTensor *t, LpDType dtype, GError **error)
{
  return lp_tensor_convert_with (t, dtype, lp_dtype_from_f32, LP_OVERFLOW_ERROR, NULL, error);
}

/* ---- tensors ---- */

typedef struct {
  LpDType type;
  const float *src;      /* [R, C] */
  guint8 *dst;           /* [R, row_bytes] */
  const float *importance; /* [C] or NULL */
  gint64 row_length;     /* C */
  gsize row_bytes;
  gint64 bad_row;        /* the first failing row, or -1 */
  GError *error;
  GMutex lock;
} RowsJob;

static void
quantize_range (gint64 r0, gint64 r1, gpointer data)
{
  RowsJob *job = data;
  /* Without importance each block is quantized from its own values alone
   * (no per-row statistic), and the rows lie end to end in src and dst:
   * the range is one long row, which spares a call per row and lets the
   * x86 kernels take eight blocks at a time across row ends.  A refusal
   * (a value not finite) goes on row by row, to name the first bad row. */
  if (job->importance == NULL
      && lp_quantize_row (job->type, job->src + r0 * job->row_length, job->dst + r0 * job->row_bytes,
                          (r1 - r0) * job->row_length, NULL, NULL))
    return;
  for (gint64 r = r0; r < r1; r++)
    {
      GError *local = NULL;
      if (!lp_quantize_row (job->type, job->src + r * job->row_length, job->dst + r * job->row_bytes,
                            job->row_length, job->importance, &local))
        {
          /* keep the first row's error, as a serial loop would report it */
          g_mutex_lock (&job->lock);
          if (job->bad_row < 0 || r < job->bad_row)
            {
              g_clear_error (&job->error);
              job->error = local;
              job->bad_row = r;
            }
          else
            g_error_free (local);
          g_mutex_unlock (&job->lock);
          return;
        }
    }
}

gboolean
lp_quantize_rows (LpDType type, const float *src, gint64 n_rows, gint64 row_length, const float *importance,
                  void *dst, GError **error)
{
  guint64 row_bytes;
  if (n_rows < 0 || !lp_dtype_row_bytes (type, (guint64) MAX (row_length, 0), &row_bytes, error))
    return FALSE;
  /* Rows are independent and each is quantized alone, so splitting them
   * between threads cannot change a byte.  A range is about 64 KiB of
   * input: enough to amortise a hand-off. */
  RowsJob job = { type, src, dst, importance, row_length, row_bytes, -1, NULL };
  g_mutex_init (&job.lock);
  lp_parallel_for (n_rows, MAX (1, 16384 / MAX (row_length, 1)), quantize_range, &job);
  g_mutex_clear (&job.lock);
  if (job.error != NULL)
    {
      g_autofree char *where = g_strdup_printf ("row %" G_GINT64_FORMAT, job.bad_row);
      g_propagate_error (error, job.error);
      lp_error_prefix (error, where);
      return FALSE;
    }
  return TRUE;
}

gboolean
lp_quantize_tensor (LpTensor *src, LpDType type, const float *importance_per_column, LpTensor **out,
                    GError **error)
{
  g_return_val_if_fail (src != NULL && out != NULL, FALSE);
  *out = NULL;
  if (!lp_quant_type_supported (type) && !is_float_type (type))
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "%s: cannot quantize to %s", src->name, lp_dtype_name (type));
      return FALSE;
    }
  gint64 row_length = lp_tensor_row_length (src), n_rows = lp_tensor_n_rows (src);
  const LpDTypeInfo *info = lp_dtype_info (type);
  if (row_length % info->block_size != 0)
    {
      lp_set_error (error, LP_ERROR_INVALID,
                    "%s: rows of %" G_GINT64_FORMAT " values: expected a multiple of the %s block size %u"
                    " (see lp_quant_fallback_type)",
                    src->name, row_length, info->name, info->block_size);
      return FALSE;
    }
  g_autoptr (LpTensor) q = lp_tensor_new (src->name, type, src->n_dims, src->shape, error);
  if (q == NULL)
    return FALSE;
  g_autofree float *owned = NULL;
  const float *values = lp_tensor_data (src);
  if (src->dtype != LP_DTYPE_F32)
    {
      owned = lp_tensor_dup_f32 (src, error);
      if (owned == NULL)
        return FALSE;
      values = owned;
    }
  if (!lp_quantize_rows (type, values, n_rows, row_length, importance_per_column, lp_tensor_data_mut (q), error))
    {
      lp_error_prefix (error, src->name);
      return FALSE;
    }
  *out = g_steal_pointer (&q);
  return TRUE;
}

/* llama.cpp's tensor_type_fallback (src/llama-quant.cpp) for rows that the
 * wanted type's block does not divide:
 *
 *   wanted            fallback   (if 32 does not divide the row either)
 *   Q2_K, Q3_K        Q4_0       F16
 *   Q4_K              Q5_0       F16
 *   Q5_K              Q5_1       F16
 *   Q6_K              Q8_0       F16
 *   Q4_0 ... Q8_1     F16        (llama.cpp has no fallback and refuses)
 *
 * e.g. stories260K's ffn_down, rows of 172 values: Q4_K -> F16. */
LpDType
lp_quant_fallback_type (LpDType wanted, gint64 row_length)
{
  const LpDTypeInfo *info = lp_dtype_info (wanted);
  g_return_val_if_fail (info != NULL, LP_DTYPE_F16);
  if (row_length % info->block_size == 0)
    return wanted;
  LpDType fallback;
  switch (wanted)
    {
    case LP_DTYPE_Q2_K:
    case LP_DTYPE_Q3_K:
      fallback = LP_DTYPE_Q4_0;
      break;
    case LP_DTYPE_Q4_K:
      fallback = LP_DTYPE_Q5_0;
      break;
    case LP_DTYPE_Q5_K:
      fallback = LP_DTYPE_Q5_1;
      break;
    case LP_DTYPE_Q6_K:
    case LP_DTYPE_Q8_K:
      fallback = LP_DTYPE_Q8_0;
      break;
    default:
      return LP_DTYPE_F16;
    }
  return row_length % 32 == 0 ? fallback : LP_DTYPE_F16;
}

/* ---- grid view ---- */

gboolean
lp_block_grid_fit (LpDType type, const float *x, const float *importance, float row_sigma2,
                   LpBlockParams *out, GError **error)
{
  if (!lp_quant_type_supported (type))
    {
      lp_set_error (error, LP_ERROR_UNSUPPORTED, "no block grid for type %s", lp_dtype_name (type));
      return FALSE;
    }
  int n = (int) lp_dtype_info (type)->block_size;
  gint64 bad = first_bad (x, n, FALSE);
  if (bad >= 0)
    {
      lp_set_error (error, LP_ERROR_INVALID, "block element %" G_GINT64_FORMAT ": expected a finite value, found %g",
                    bad, (double) x[bad]);
      return FALSE;
    }
  int codes[LP_BLOCK_MAX_VALUES];
  fit_block (type, x, importance, row_sigma2, out, codes);
  return TRUE;
}

float
lp_block_grid_dequantize_code (const LpBlockParams *p, int idx, int code)
{
  int s = idx / p->sub_size;
  if (p->rule == LP_RULE_LEVELS)
    return p->step[s] * lp_iq4nl_levels[code];
  float v = p->step[s] * (float) code;
  if (p->has_offset)
    v = v + p->offset[s];
  return v;
}

/* Keep a float inside [lo, hi] (NaN -> 0) before an int conversion. */
static inline float
bounded (float v, float lo, float hi)
{
  if (!(v == v))
    return 0.f;
  return v < lo ? lo : v > hi ? hi : v;
}

/* The rules reproduce ggml's expressions for every value they see in
 * practice; the bounds only keep out-of-range inputs (error feedback can push
 * a value past the block's range) away from undefined conversions. */
float
lp_block_grid_quantize_value (const LpBlockParams *p, int idx, float x, int *code)
{
  int s = idx / p->sub_size;
  int c;
  float lo = (float) p->code_min - 1, hi = (float) p->code_max + 1;
  if (p->frozen[s])
    c = p->frozen_code[idx];
  else
    switch (p->rule)
      {
      case LP_RULE_TRUNC_BIAS:
        {
          int half = -p->code_min;
          float v = bounded (x * p->qa[s] + (half + 0.5f), 0.f, 127.f);
          c = MIN (p->code_max + half, (int) v) - half;
          break;
        }
      case LP_RULE_TRUNC_MIN:
        c = MIN (p->code_max, (int) bounded ((x - p->qb[s]) * p->qa[s] + 0.5f, 0.f, 127.f));
        break;
      case LP_RULE_ROUND:
        c = (int) roundf (bounded (x * p->qa[s], -128.f, 127.f));
        break;
      case LP_RULE_NEAREST_MUL:
        c = lp_nearest_int (bounded (p->qa[s] * x, lo, hi));
        break;
      case LP_RULE_QKX3:
        {
          const float v = p->qa[s] * (x - p->qb[s]);
          c = v > 0 ? lp_nearest_int (MIN (v, p->code_max)) : 0;
          break;
        }
      case LP_RULE_DIV_MIN:
        c = lp_nearest_int (bounded ((x + p->qb[s]) / p->qa[s], lo, hi));
        break;
      case LP_RULE_DIV:
        c = lp_nearest_int (bounded (x / p->qa[s], lo, hi));
        break;
      case LP_RULE_LEVELS:
        c = lp_iq4nl_nearest (p->qa[s] * x);
        break;
      default:
        g_assert_not_reached ();
      }
  c = CLAMP (c, p->code_min, p->code_max);
  *code = c;
  return lp_block_grid_dequantize_code (p, idx, c);
}
