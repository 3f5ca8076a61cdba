/* llmpress Vulkan backend — shared by the module's files.
 *
 * One VkDevice per opened backend with one compute queue; every op is one or
 * more "runs": host data into per-slot device buffers (directly when the
 * memory is host-visible, through a staging buffer and copy commands
 * otherwise), dispatches separated by barriers, results back, one submit
 * and a fence wait.  A mutex serializes runs, so threads may share it.
 * Two frames (command buffer, fence, buffers) let an op that tiles keep one
 * run in flight while it fills the next: the host copies tile t+1's operands
 * in while the device computes tile t. */
#pragma once

#include <vulkan/vulkan.h>
#include <glib.h>
#include <llmpress/backend.h>
#include <llmpress/compute.h>

/* Shaders embedded in the module (vk_shaders.c). */
typedef enum {
  VK_SH_GEMM,
  VK_SH_RMSNORM,
  VK_SH_ROPE,
  VK_SH_ATTENTION,
  VK_SH_SWIGLU,
  VK_SH_DEQUANT,
  VK_SH_GEMM_F16,    /* gemm.comp with B in f16: needs LP_VK_FAST_F16 */
  VK_SH_GEMM_I8,
  VK_SH_GEMM_I8_DOT, /* gemm_i8.comp with OpSDot: needs LP_VK_FAST_INT_DOT */
  VK_SH_QUANTIZE_GROUPS,
  VK_SH_DEQUANT_GRID,
  VK_SH_DEQUANT_GRID_SPLIT, /* dequant_grid.comp with the scales and zeros as separate tensors */
  VK_SH_EMBED,
  VK_SH_ELTWISE,
  VK_SH_LOSS,
  VK_SH_RMSNORM_BACK,
  VK_SH_COLSUM,
  VK_SH_EMBED_BACK,
  VK_SH_ATTENTION_BACK,
  VK_SH_ATTENTION_ROWS, /* small heads: an invocation per query row */
  VK_SH_ATTENTION_BACK_ROWS, /* its backward, the same way */
  VK_SH_GEMM_DIRECT,    /* gemm.comp's product without shared memory, for short K */
  VK_SH_GEMM_DIRECT4,   /* the same reading rows as vec4 (x W^T, K a multiple of 4) */
  VK_SH_GEMM_DIRECT4_BROWS, /* ... and for op(B) = B (dy W) */
  VK_SH_ADAMW,
  VK_SH_SUM_SQ,
  VK_SH_GRID_TRAIN,     /* fake_quant, dequant_grid and their backward ops */
  VK_SH_KL_TOPK,        /* kl_topk and its backward */
  VK_SH_COUNT,
} VkShaderId;

/* Optional device features the backend enables when offered, each the
 * gate of a faster path; without them every op still runs (core Vulkan
 * 1.2 only).  LLMPRESS_VULKAN_DISABLE turns them off by name. */
typedef enum {
  LP_VK_FAST_INT_DOT = 1 << 0, /* VK_KHR_shader_integer_dot_product: gemm_i8 by OpSDot */
  LP_VK_FAST_F16 = 1 << 1,     /* 16-bit storage + fp16 arithmetic: gemm_w reads f16 weights directly */
} LpVkFast;

typedef struct {
  const guint32 *code;
  gsize size; /* bytes */
  const char *name;
  LpVkFast needs; /* its module is created only when all of these are enabled */
} VkShaderCode;

const VkShaderCode *lp_vk_shader (VkShaderId id);

/* Buffer slots a run binds (an op uses a few of them). */
#define LP_VK_SLOTS 6
#define LP_VK_MAX_BINDINGS 8
#define LP_VK_PUSH_BYTES 128
#define LP_VK_MAX_SPEC 4

typedef struct {
  VkBuffer buf;
  VkDeviceMemory mem;
  VkDeviceSize size;
  void *map; /* host pointer when the memory is host-visible and mapped */
} LpVkBuf;

/* A copy back to host memory, done once the run's fence has signalled. */
typedef struct {
  const guint8 *src; /* mapped slot or staging memory */
  guint8 *dst;
  gsize rows, row_bytes, dst_stride;
} LpVkDownload;

/* What one run owns while the device executes it. */
typedef struct {
  VkCommandBuffer cmd;
  VkFence fence;
  GPtrArray *desc_pools;    /* VkDescriptorPool, grown as a run needs more sets */
  guint desc_pool;          /* the pool sets are taken from now */
  LpVkBuf slots[LP_VK_SLOTS];
  LpVkBuf staging;
  VkDeviceSize staging_used;
  GArray *downloads;        /* LpVkDownload, done when the fence signals */
  gboolean in_flight;       /* submitted, not yet waited for */
} LpVkFrame;

#define LP_VK_FRAMES 2

typedef struct {
  VkInstance instance;
  VkDebugUtilsMessengerEXT messenger;
  VkPhysicalDevice phys;
  VkDevice dev;
  VkQueue queue;
  guint32 queue_family;
  VkCommandPool cmd_pool;
  LpVkFrame frames[LP_VK_FRAMES];
  LpVkFrame *fr;            /* the frame runs are recorded into */
  VkDescriptorSetLayout set_layout;
  VkPipelineLayout pipe_layout;
  VkPipelineCache pipe_cache;
  VkShaderModule shaders[VK_SH_COUNT]; /* VK_NULL_HANDLE: needs a feature not enabled */
  LpVkFast fast;                       /* the fast paths enabled on this device */
  GHashTable *pipelines; /* PipeKey -> VkPipeline */
  VkPhysicalDeviceMemoryProperties mem_props;
  VkDeviceSize max_binding; /* bytes one storage binding (and one buffer) may span */
  guint32 max_groups_x;
  guint wg_size;            /* 1-D work groups: a power of two */
  guint gemm_wx, gemm_wy, gemm_bk;
  gboolean direct;          /* slots are host-visible: no staging copies */
  GHashTable *pool;         /* capacity -> GSList of freed LpVkTensor, reused by lp_vk_tensor_new */
  VkDeviceSize pool_bytes;  /* held by the pool */
  GMutex lock;
} LpVkCtx;

/* A buffer the graph owns (buffer_new): resident until buffer_free, which
 * returns it to the context's pool.  gen counts writes (host or node), so
 * what is derived from the contents (a RoPE table) knows when it is stale. */
typedef struct {
  LpVkBuf b;
  gsize bytes;              /* as asked; b.size is the capacity */
  guint64 gen;
  /* For an inv_freq tensor: (cos, sin) of p * inv_freq[i] for positions
   * p < rope_positions, computed in double by the host (rope.comp). */
  LpVkBuf rope_cs;
  guint rope_positions, rope_half;
  guint64 rope_gen;
} LpVkTensor;

/* vk_device.c */
gboolean lp_vk_buf_alloc (LpVkCtx *ctx, LpVkBuf *b, VkDeviceSize size, gboolean staging, GError **error);
void lp_vk_buf_free (LpVkCtx *ctx, LpVkBuf *b);
GPtrArray *lp_vk_list_devices (GError **error);
LpVkCtx *lp_vk_ctx_new (int index, char **device_name, char **numeric_class, GError **error);
void lp_vk_ctx_free (LpVkCtx *ctx);

/* A run: begin (staging sized for `staging_bytes` of uploads and
 * downloads together), record, end (submit, wait, copy results out). */
void lp_vk_run_begin (LpVkCtx *ctx, VkDeviceSize staging_bytes);
/* Slot `slot` as a buffer of at least `bytes`; call once per slot per run,
 * before recording anything that uses it. */
void lp_vk_slot (LpVkCtx *ctx, int slot, VkDeviceSize bytes);
/* rows x row_bytes from src (rows src_stride apart) into the slot, packed. */
void lp_vk_upload (LpVkCtx *ctx, int slot, const void *src, gsize rows, gsize row_bytes, gsize src_stride);
/* The same, each row followed by zeros up to dst_row_bytes (>= row_bytes). */
void lp_vk_upload_padded (LpVkCtx *ctx, int slot, const void *src, gsize rows, gsize row_bytes, gsize src_stride,
                          gsize dst_row_bytes);
void lp_vk_download (LpVkCtx *ctx, int slot, void *dst, gsize rows, gsize row_bytes, gsize dst_stride);
/* Every earlier transfer or dispatch before every later one. */
void lp_vk_barrier (LpVkCtx *ctx);
/* bindings: slot numbers; spec: specialization constants 0..n_spec-1. */
void lp_vk_dispatch (LpVkCtx *ctx, VkShaderId shader, const guint32 *spec, int n_spec, const int *bindings,
                     int n_bindings, const void *push, gsize push_size, guint32 gx, guint32 gy);
/* The same with buffers rather than slots. */
void lp_vk_dispatch_bufs (LpVkCtx *ctx, VkShaderId shader, const guint32 *spec, int n_spec, const LpVkBuf *const *bufs,
                          int n_bufs, const void *push, gsize push_size, guint32 gx, guint32 gy);
/* n bytes between host memory and a buffer, through the staging buffer in a
 * run of their own (a device whose memory the host cannot map). */
void lp_vk_copy_in (LpVkCtx *ctx, LpVkBuf *dst, VkDeviceSize offset, const void *src, gsize n);
void lp_vk_copy_out (LpVkCtx *ctx, LpVkBuf *src, VkDeviceSize offset, void *dst, gsize n);
/* The command buffer runs are recorded into. */
VkCommandBuffer lp_vk_cmd (LpVkCtx *ctx);

/* vk_buffers.c: the backend's buffer_* ops and their pool. */
gpointer lp_vk_buffer_new (LpBackend *be, gsize bytes, GError **error);
void lp_vk_buffer_free (LpBackend *be, gpointer buf);
void lp_vk_buffer_write (LpBackend *be, gpointer buf, gsize offset, const void *src, gsize n);
void lp_vk_buffer_read (LpBackend *be, gpointer buf, gsize offset, void *dst, gsize n);
/* Without the lock (callers hold it): a pooled or new buffer, and its return. */
LpVkTensor *lp_vk_tensor_take (LpVkCtx *ctx, gsize bytes, GError **error);
void lp_vk_tensor_give (LpVkCtx *ctx, LpVkTensor *t);
void lp_vk_pool_drain (LpVkCtx *ctx);

/* vk_ops.c: what the graph's nodes share with the host-pointer ops. */
typedef struct {
  guint32 M, N, K, lda, ldb, ldc, trans_a, trans_b;
  float alpha, beta;
} LpVkGemmPush;
typedef struct {
  guint32 T, n_heads, hd, style, pos0, inverse;
} LpVkRopePush;
typedef struct {
  guint32 T, T_kv, H, Hkv, hd;
  float scale;
} LpVkAttnPush;
/* The attention shader keeps 4 output dims per thread. */
#define LP_VK_ATTN_WG 64
#define LP_VK_ATTN_MAX_HD (4 * LP_VK_ATTN_WG)
/* Heads up to this size (a multiple of 4) go to attention_rows.comp
 * (registers per invocation). */
#define LP_VK_ATTN_ROWS_MAX_HD 32 /* attention_rows.comp MAX_HD4 * 4 */
/* 1-D work groups of ctx->wg_size for n elements (at most max_groups_x). */
guint32 lp_vk_groups (LpVkCtx *ctx, gsize n);
/* C = alpha op(A) op(B) + beta C with abc = { A, B, C }. */
void lp_vk_gemm_dispatch (LpVkCtx *ctx, VkShaderId shader, const LpVkBuf *const *abc, const LpVkGemmPush *p);
/* The weight types shaders/dequant.comp decodes. */
gboolean lp_vk_device_reads (LpDType t);

/* vk_graph.c */
gboolean lp_vk_supports_node (LpBackend *be, const LpCNode *node);
gboolean lp_vk_graph_compute (LpBackend *be, LpCNode *const *nodes, int n, GError **error);
void lp_vk_run_end (LpVkCtx *ctx);
/* Instead of run_end: submit without waiting and record the next run into
 * the other frame (whose slots hold what that frame's last run left there,
 * not this one's).  lp_vk_run_wait completes every run in flight. */
void lp_vk_run_submit (LpVkCtx *ctx);
void lp_vk_run_wait (LpVkCtx *ctx);
