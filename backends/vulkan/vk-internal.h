/* llmpress Vulkan backend — shared by the module's files.
 *
 * One VkDevice per opened backend with one compute queue; every op is one or
 * more "runs": host data into per-slot device buffers (directly when the
 * memory is host-visible, through a staging buffer and copy commands
 * otherwise), dispatches separated by barriers, results back, one submit
 * and a fence wait.  A mutex serializes runs, so threads may share it. */
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
  VK_SH_QUANTIZE_GROUPS,
  VK_SH_COUNT,
} VkShaderId;

typedef struct {
  const guint32 *code;
  gsize size; /* bytes */
  const char *name;
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

typedef struct {
  VkInstance instance;
  VkDebugUtilsMessengerEXT messenger;
  VkPhysicalDevice phys;
  VkDevice dev;
  VkQueue queue;
  guint32 queue_family;
  VkCommandPool cmd_pool;
  VkCommandBuffer cmd;
  VkFence fence;
  VkDescriptorPool desc_pool;
  VkDescriptorSetLayout set_layout;
  VkPipelineLayout pipe_layout;
  VkPipelineCache pipe_cache;
  VkShaderModule shaders[VK_SH_COUNT];
  GHashTable *pipelines; /* PipeKey -> VkPipeline */
  VkPhysicalDeviceMemoryProperties mem_props;
  VkDeviceSize max_binding; /* bytes one storage binding (and one buffer) may span */
  guint32 max_groups_x;
  guint wg_size;            /* 1-D work groups: a power of two */
  guint gemm_wx, gemm_wy, gemm_bk;
  gboolean direct;          /* slots are host-visible: no staging copies */
  LpVkBuf slots[LP_VK_SLOTS];
  LpVkBuf staging;
  VkDeviceSize staging_used;
  GArray *downloads;        /* LpVkDownload, of the run being recorded */
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
/* rows x row_bytes from src (rows dst_stride... apart) into the slot, packed. */
void lp_vk_upload (LpVkCtx *ctx, int slot, const void *src, gsize rows, gsize row_bytes, gsize src_stride);
void lp_vk_download (LpVkCtx *ctx, int slot, void *dst, gsize rows, gsize row_bytes, gsize dst_stride);
/* Every earlier transfer or dispatch before every later one. */
void lp_vk_barrier (LpVkCtx *ctx);
/* bindings: slot numbers; spec: specialization constants 0..n_spec-1. */
void lp_vk_dispatch (LpVkCtx *ctx, VkShaderId shader, const guint32 *spec, int n_spec, const int *bindings,
                     int n_bindings, const void *push, gsize push_size, guint32 gx, guint32 gy);
void lp_vk_run_end (LpVkCtx *ctx);
