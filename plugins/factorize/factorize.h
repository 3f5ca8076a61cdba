/* llmpress factorize plugin — what factorize.svd and factorize.asvd share:
 * their parameters, the weights they factorize, the rank rule, running the
 * layers' decompositions concurrently, and the low-rank tensors with the
 * ranks they record. */
#pragma once

#include <llmpress/llmpress.h>

#define FACTORIZE_DEFAULT_TARGETS "blk.*.attn_*,blk.*.ffn_*"

#define FACTORIZE_COMMON_PARAMS                                                                                     \
  { .name = "targets", .type = LP_PARAM_TENSORS, .default_value = FACTORIZE_DEFAULT_TARGETS,                        \
    .help = "linear weights to factorize: globs, comma-separated (only the blocks' linear weights are considered)" }, \
  { .name = "ignore", .type = LP_PARAM_TENSORS, .default_value = "", .help = "weights left dense" },                \
  { .name = "rank", .type = LP_PARAM_INT, .default_value = "0", .min = 0, .max = G_MAXINT32,                        \
    .help = "the same rank R for every weight, 1 <= R <= min(rows, cols) (instead of ratio=)" },                    \
  { .name = "ratio", .type = LP_PARAM_FLOAT, .default_value = "0.8", .min = 0, .max = 1,                            \
    .help = "parameter budget: the factors hold at most this fraction of the chosen weights' parameters",           \
    .flags = LP_PARAM_RANGE },                                                                                      \
  { .name = "energy", .type = LP_PARAM_FLOAT, .default_value = "0", .min = 0, .max = 1,                             \
    .help = "instead of ratio=: each weight's least rank keeping this fraction of its squared singular values",     \
    .flags = LP_PARAM_RANGE },                                                                                      \
  { .name = "method", .type = LP_PARAM_ENUM, .default_value = "exact", .choices = factorize_methods,                \
    .help = "exact (LAPACK sgesdd) or randomized (range finder with power iterations; its products on the "        \
    "backend)" },                                                                                                   \
  { .name = "oversample", .type = LP_PARAM_INT, .default_value = "10", .min = 0, .max = 4096,                       \
    .help = "randomized: sketch columns beyond the rank", .flags = LP_PARAM_RANGE },                                \
  { .name = "power_iters", .type = LP_PARAM_INT, .default_value = "2", .min = 0, .max = 64,                         \
    .help = "randomized: power iterations", .flags = LP_PARAM_RANGE }

extern const char *const factorize_methods[];
extern const char *const asvd_allocations[];

/* One weight to factorize: filled by the job, then by its task. */
typedef struct {
  char *name;
  int n, k;                 /* its shape [N, K] */
  float *values;            /* [N, K] */
  const float *hessian;     /* asvd: [K, K] of its input (borrowed) */
  int rank;                 /* the allocated rank (asvd ratio=), or -1: the rule decides */
  /* results */
  int rank_used;            /* 0: left dense */
  double error_sq, total_sq;/* squared error of the truncation, and of the whole (whitened for asvd) */
  LpRankLayer spectrum;     /* with spectrum_s: the spectrum alone (asvd's allocation) */
  float *spectrum_s;
  LpTensor *replacement;
  GError *error;
} FactorizeTask;

typedef struct _FactorizeJob FactorizeJob;
typedef gboolean (*FactorizeTaskFunc) (gpointer user_data, FactorizeTask *task, GError **error);

struct _FactorizeJob {
  LpPassContext *ctx;
  const char *method;             /* "svd", "asvd" */
  const LpTensorPattern *targets, *ignore;
  LpRankChoice choice;
  gboolean global;                /* ratio= is one budget over all weights (asvd), not each weight's */
  LpLowRankOptions opt;
  LpModel *work;                  /* the output, derived from the input */
  GHashTable *ranks;              /* name -> rank used + 1 (0 in the table would read as absent) */
  guint64 params_before, params_after;
};

/* Read and check the common parameters; derive the output model. */
gboolean factorize_job_init (FactorizeJob *job, LpPassContext *ctx, const char *method, GError **error);
void factorize_job_clear (FactorizeJob *job);
/* The targeted linear weights of the input, in model order ("blk.<l>." of
 * layer `layer` only when layer >= 0): names (owned array). */
GPtrArray *factorize_job_names (FactorizeJob *job, LpModel *model, int layer);
/* A task for weight `name` of `model`: its values checked finite and its
 * rank rule checked against its shape. */
FactorizeTask *factorize_task_new (FactorizeJob *job, LpModel *model, const char *name, GError **error);
void factorize_task_free (FactorizeTask *task);
/* Run func (user_data, task) on every task, as many at once as there are
 * cores; the first failing task's error (in array order) comes back. */
gboolean factorize_run_tasks (FactorizeJob *job, GPtrArray *tasks, FactorizeTaskFunc func, gpointer user_data,
                              GError **error);
/* The rank hint for the sketch of a randomized decomposition. */
int factorize_task_sketch_rank (const FactorizeJob *job, const FactorizeTask *task);
/* After a task's decomposition: the rank (task->rank or the rule's), the
 * factors from `split`, the replacement tensor. */
typedef double (*FactorizeSplitFunc) (const LpSvd *svd, gpointer user_data, int r, float *a, float *b);
gboolean factorize_task_finish (FactorizeJob *job, FactorizeTask *task, const LpSvd *svd, FactorizeSplitFunc split,
                                gpointer user_data, GError **error);
/* Set the task's replacement into work, count, log and record its rank. */
void factorize_job_apply (FactorizeJob *job, FactorizeTask *task);
/* Record the ranks and totals in the metadata and publish the model. */
gboolean factorize_job_publish (FactorizeJob *job, GError **error);

gboolean factorize_svd_run (LpPassContext *ctx, GError **error);
gboolean factorize_asvd_run (LpPassContext *ctx, GError **error);

/* factorize.compensate (compensate.c). */
extern const LpPassInfo fz_compensate_pass;
