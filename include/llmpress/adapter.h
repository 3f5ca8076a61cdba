/* llmpress — LoRA adapters as files runtimes load, and the model-level
 * operations around them.
 *
 * A model's adapters are its tensors of the adapter form (form.h: W = base
 * + scale B A, A [R, K], B [N, R]).  They are written as:
 *   - a GGUF LoRA adapter (llama.cpp's convert_lora_to_gguf.py layout, read
 *     by llama_adapter_lora_init: `llama-cli -m base.gguf --lora a.gguf`):
 *     general.type = "adapter", general.architecture = the base's,
 *     adapter.type = "lora", adapter.lora.alpha (f32), and per weight
 *     <base tensor name>.lora_a (ggml ne {K, R}: row-major [R, K]) and
 *     .lora_b (ne {R, N}: [N, R]); llama.cpp scales by alpha / R;
 *   - a PEFT adapter directory (peft's save_pretrained layout, read by
 *     PeftModel.from_pretrained and vLLM's LoRARequest): adapter_config.json
 *     (peft_type LORA, r, lora_alpha, target_modules, rank_pattern,
 *     alpha_pattern, ...) and adapter_model.safetensors with
 *     base_model.model.<HF module>.lora_A.weight [R, K] / .lora_B.weight
 *     [N, R], B's rows of q_proj/k_proj in HF's rotate-half order as the base
 *     weight's; PEFT scales by lora_alpha / r (alpha / sqrt(r) with rslora).
 * Our own GGUF keeps adapters inline instead (form_adapter.c). */
#pragma once

#include <glib.h>
#include <llmpress/model.h>

G_BEGIN_DECLS

typedef enum {
  LP_ADAPTER_FORMAT_AUTO, /* from the path: a .gguf name or an existing file = GGUF, else a PEFT directory */
  LP_ADAPTER_FORMAT_GGUF, /* llama.cpp's GGUF LoRA */
  LP_ADAPTER_FORMAT_PEFT, /* a PEFT directory */
} LpAdapterFormat;

/* Write every adapter of `model` to `path` (atomically; never over the
 * model's own input; a PEFT directory carries the output manifest).
 * dtype: -1 for f32 (the factors as held), else f32, f16 or bf16.
 * base_path (may be NULL) goes to adapter_config.json's
 * base_model_name_or_path (NULL: the model's source, or general.name).
 * Fails, writing nothing, when the model holds no adapter or one a
 * format cannot express (the embedding's). */
gboolean lp_model_save_adapter (LpModel *model, const char *path, LpAdapterFormat format, int dtype,
                                const char *base_path, GError **error);
/* A model of model's with every adapter replaced by its base (what a
 * runtime loads beside the adapter file); *n_adapters counts them. */
LpModel *lp_model_adapter_bases (LpModel *model, guint *n_adapters);
/* base with the adapter read from `path` (a GGUF LoRA file or a PEFT
 * directory) applied: a new model whose named weights are adapter forms
 * over base's.  Fails when a weight the adapter names does not exist in
 * base, its shapes differ, it already has an adapter, or the file is not
 * an adapter for base's architecture.  *n_applied (may be NULL) counts. */
LpModel *lp_model_apply_adapter (LpModel *base, const char *path, guint *n_applied, GError **error);
/* model with every adapter folded into one dense tensor
 * (lp_tensor_adapter_merged): *n_merged counts them, *n_dequantized those
 * whose quantized base became f32 (either may be NULL). */
LpModel *lp_model_merge_adapters (LpModel *model, guint *n_merged, guint *n_dequantized, GError **error);

G_END_DECLS
