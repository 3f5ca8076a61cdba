/* llmpress eval plugin: what its passes share. */
#pragma once

#include <llmpress/llmpress.h>

/* m[key] = v as an f64. */
void eval_set_f64 (LpMeta *m, const char *key, double v);
/* The perplexity metrics of one lp_eval_run (perplexity, nll, nll_stderr,
 * windows, ctx, tokens_scored; kl and top1 with a reference; tokens_per_s). */
void eval_result_to_meta (const LpEvalResult *r, LpMeta *m);

/* eval.heldout (heldout.c) and select (select.c). */
extern const LpPassInfo eval_heldout_pass;
extern const LpPassInfo select_pass;
