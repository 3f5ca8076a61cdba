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
#define LP_VK_MAX_BINDINGS 4
#define LP_VK_PUSH_BYTES 64
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
  VkDescriptorPool desc_pool;
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
  GMutex lock;
} LpVkCtx;

/* vk_device.c */
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
void lp_vk_run_end (LpVkCtx *ctx);
/* Instead of run_end: submit without waiting and record the next run into
 * the other frame (whose slots hold what that frame's last run left there,
 * not this one's).  lp_vk_run_wait completes every run in flight. */
void lp_vk_run_submit (LpVkCtx *ctx);
void lp_vk_run_wait (LpVkCtx *ctx);
