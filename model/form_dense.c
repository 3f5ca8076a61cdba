/* llmpress — the dense form: f32, f16 or bf16 values as stored (form.h).
 *
 * A tensor without a form of its own (t->form == NULL) of a float type has
 * this one.  Materialize: the stored values; matmul: one LP_COP_MATMUL node
 * over the stored bytes (the kernels read f16/bf16 themselves); bytes: the
 * stored ones; training: W as an f32 copy, rebuilt in the tensor's own type
 * (f16 / bf16 rounded to nearest); written as its values (a writer may
 * convert the type). */
#include "config.h"

#include "lp-internal.h"

const LpFormClass lp_form_dense_class = {
  .name = "dense",
  .materialize_rows = lp_form_values_rows,
  .storage_bytes = lp_form_values_bytes,
  .upload = lp_form_values_upload,
  .matmul = lp_form_values_matmul,
};

/* The instance every dense tensor shares (never freed: one ref is its own). */
LpForm lp_form_dense = { &lp_form_dense_class, 1 };
