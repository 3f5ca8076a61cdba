/* llmpress Vulkan backend — instance, device enumeration and selection,
 * buffers, pipelines, and the record/submit/wait cycle of a run. */
#include "config.h"

#include <string.h>

#include "vk-internal.h"
#include <llmpress/error.h>

/* Environment, read here only:
 *   LLMPRESS_VULKAN_VALIDATION=1   Khronos validation layer; every error
 *                                  it reports is a g_critical (fatal in tests).
 *   LLMPRESS_VULKAN_STAGING=1      staging copies even on host-visible memory
 *                                  (tests the discrete-GPU path on lavapipe).
 *   LLMPRESS_VULKAN_MAX_BINDING=N  cap one binding at N bytes (tests tiling).
 *   LLMPRESS_VULKAN_DISABLE=LIST   fast paths not to use although the device
 *                                  offers them, comma-separated: int-dot,
 *                                  float16 (tests the core-Vulkan paths on a
 *                                  device that has everything). */
static gboolean
env_flag (const char *name)
{
  const char *v = g_getenv (name);
  return v != NULL && *v != '\0' && g_strcmp0 (v, "0") != 0;
}

#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"

static VkBool32 VKAPI_PTR
on_validation_message (VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT types,
                       const VkDebugUtilsMessengerCallbackDataEXT *data, void *user_data)
{
  if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)
    g_critical ("Vulkan validation: %s", data->pMessage);
  else
    g_info ("Vulkan validation: %s", data->pMessage);
  return VK_FALSE;
}

static gboolean
instance_has_layer (const char *name)
{
  guint32 n = 0;
  if (vkEnumerateInstanceLayerProperties (&n, NULL) != VK_SUCCESS)
    return FALSE;
  g_autofree VkLayerProperties *props = g_new0 (VkLayerProperties, MAX (n, 1));
  vkEnumerateInstanceLayerProperties (&n, props);
  for (guint32 i = 0; i < n; i++)
    if (strcmp (props[i].layerName, name) == 0)
      return TRUE;
  return FALSE;
}

static gboolean
instance_has_extension (const char *name)
{
  guint32 n = 0;
  if (vkEnumerateInstanceExtensionProperties (NULL, &n, NULL) != VK_SUCCESS)
    return FALSE;
  g_autofree VkExtensionProperties *props = g_new0 (VkExtensionProperties, MAX (n, 1));
  vkEnumerateInstanceExtensionProperties (NULL, &n, props);
  for (guint32 i = 0; i < n; i++)
    if (strcmp (props[i].extensionName, name) == 0)
      return TRUE;
  return FALSE;
}

static gboolean
device_has_extension (VkPhysicalDevice phys, const char *name)
{
  guint32 n = 0;
  if (vkEnumerateDeviceExtensionProperties (phys, NULL, &n, NULL) != VK_SUCCESS)
    return FALSE;
  g_autofree VkExtensionProperties *props = g_new0 (VkExtensionProperties, MAX (n, 1));
  vkEnumerateDeviceExtensionProperties (phys, NULL, &n, props);
  for (guint32 i = 0; i < n; i++)
    if (strcmp (props[i].extensionName, name) == 0)
      return TRUE;
  return FALSE;
}

static gboolean
instance_new (gboolean validation, VkInstance *out, VkDebugUtilsMessengerEXT *messenger, GError **error)
{
  VkApplicationInfo app = {
    .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
    .pApplicationName = "llmpress",
    .pEngineName = "llmpress",
    .apiVersion = VK_API_VERSION_1_2,
  };
  const char *layers[1], *exts[2];
  guint32 n_layers = 0, n_exts = 0;
  VkInstanceCreateFlags flags = 0;
  if (validation)
    {
      if (!instance_has_layer (VALIDATION_LAYER))
        {
          g_set_error (error, LP_ERROR, LP_ERROR_MISSING,
                       "Vulkan: LLMPRESS_VULKAN_VALIDATION asks for %s, which is not installed (vulkan-validationlayers)",
                       VALIDATION_LAYER);
          return FALSE;
        }
      layers[n_layers++] = VALIDATION_LAYER;
      exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    }
  /* MoltenVK and other layered drivers list only with this. */
  if (instance_has_extension (VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME))
    {
      exts[n_exts++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
      flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    }
  VkDebugUtilsMessengerCreateInfoEXT dbg = {
    .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
    .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT,
    .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT
                   | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
    .pfnUserCallback = on_validation_message,
  };
  VkInstanceCreateInfo ci = {
    .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
    .pNext = validation ? &dbg : NULL, /* also covers vkCreate/DestroyInstance */
    .flags = flags,
    .pApplicationInfo = &app,
    .enabledLayerCount = n_layers,
    .ppEnabledLayerNames = layers,
    .enabledExtensionCount = n_exts,
    .ppEnabledExtensionNames = exts,
  };
  VkResult r = vkCreateInstance (&ci, NULL, out);
  if (r != VK_SUCCESS)
    {
      g_set_error (error, LP_ERROR, LP_ERROR_UNSUPPORTED, "Vulkan: no driver (vkCreateInstance: error %d)", r);
      return FALSE;
    }
  *messenger = VK_NULL_HANDLE;
  if (validation)
    {
      PFN_vkCreateDebugUtilsMessengerEXT create
          = (PFN_vkCreateDebugUtilsMessengerEXT) vkGetInstanceProcAddr (*out, "vkCreateDebugUtilsMessengerEXT");
      if (create == NULL || create (*out, &dbg, NULL, messenger) != VK_SUCCESS)
        {
          vkDestroyInstance (*out, NULL);
          g_set_error (error, LP_ERROR, LP_ERROR_UNSUPPORTED, "Vulkan: cannot install the validation messenger");
          return FALSE;
        }
    }
  return TRUE;
}

static void
instance_free (VkInstance instance, VkDebugUtilsMessengerEXT messenger)
{
  if (messenger != VK_NULL_HANDLE)
    {
      PFN_vkDestroyDebugUtilsMessengerEXT destroy
          = (PFN_vkDestroyDebugUtilsMessengerEXT) vkGetInstanceProcAddr (instance, "vkDestroyDebugUtilsMessengerEXT");
      if (destroy)
        destroy (instance, messenger, NULL);
    }
  vkDestroyInstance (instance, NULL);
}

static int
compute_queue_family (VkPhysicalDevice phys)
{
  guint32 n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties (phys, &n, NULL);
  g_autofree VkQueueFamilyProperties *q = g_new0 (VkQueueFamilyProperties, MAX (n, 1));
  vkGetPhysicalDeviceQueueFamilyProperties (phys, &n, q);
  for (guint32 i = 0; i < n; i++)
    if (q[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
      return (int) i;
  return -1;
}

static const guint32 needed_invocations = 256;

/* The optional features the fast paths use, as the device offers them.
 * The integer dot product comes through its extension: the instance asks
 * for Vulkan 1.2, where Vulkan 1.3's core feature is not available. */
typedef struct {
  VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR dot;
  VkPhysicalDeviceVulkan12Features f12;
  VkPhysicalDeviceVulkan11Features f11;
  gboolean dot_ext;
} DeviceFeatures;

/* Only for a device of Vulkan 1.2 or later (the 1.1/1.2 feature structs). */
static void
query_features (VkPhysicalDevice phys, DeviceFeatures *f)
{
  memset (f, 0, sizeof *f);
  f->dot_ext = device_has_extension (phys, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  f->f11.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES;
  f->f12.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES;
  f->f12.pNext = &f->f11;
  f->dot.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES_KHR;
  f->dot.pNext = &f->f12;
  VkPhysicalDeviceFeatures2 feats = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                      .pNext = f->dot_ext ? (void *) &f->dot : (void *) &f->f12 };
  vkGetPhysicalDeviceFeatures2 (phys, &feats);
}

/* The fast paths a device offers (LpVkFast). */
static LpVkFast
offered_fast (const DeviceFeatures *f)
{
  LpVkFast fast = 0;
  if (f->dot_ext && f->dot.shaderIntegerDotProduct)
    fast |= LP_VK_FAST_INT_DOT;
  if (f->f11.storageBuffer16BitAccess && f->f12.shaderFloat16)
    fast |= LP_VK_FAST_F16;
  return fast;
}

static const struct {
  LpVkFast flag;
  const char *name;
} fast_names[] = { { LP_VK_FAST_INT_DOT, "int-dot" }, { LP_VK_FAST_F16, "float16" } };

/* LLMPRESS_VULKAN_DISABLE's list as flags. */
static gboolean
disabled_fast (LpVkFast *out, GError **error)
{
  *out = 0;
  const char *v = g_getenv ("LLMPRESS_VULKAN_DISABLE");
  if (v == NULL)
    return TRUE;
  g_auto (GStrv) names = g_strsplit (v, ",", -1);
  for (int i = 0; names[i] != NULL; i++)
    {
      const char *name = g_strstrip (names[i]);
      gboolean known = *name == '\0';
      for (gsize k = 0; k < G_N_ELEMENTS (fast_names); k++)
        if (strcmp (name, fast_names[k].name) == 0)
          {
            *out |= fast_names[k].flag;
            known = TRUE;
          }
      if (!known)
        {
          g_set_error (error, LP_ERROR, LP_ERROR_INVALID,
                       "LLMPRESS_VULKAN_DISABLE: \"%s\": expected a comma-separated list of int-dot, float16", name);
          return FALSE;
        }
    }
  return TRUE;
}

/* Everything `llmpress devices` shows, and whether we can run on it. */
static LpDeviceInfo *
describe (VkPhysicalDevice phys, int index)
{
  LpDeviceInfo *info = g_new0 (LpDeviceInfo, 1);
  info->index = index;
  VkPhysicalDeviceProperties base;
  vkGetPhysicalDeviceProperties (phys, &base);
  gboolean v12 = base.apiVersion >= VK_API_VERSION_1_2;

  VkPhysicalDeviceDriverProperties driver = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES };
  VkPhysicalDeviceSubgroupProperties subgroup = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
                                                  .pNext = v12 ? &driver : NULL };
  VkPhysicalDeviceProperties2 props = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &subgroup };
  vkGetPhysicalDeviceProperties2 (phys, &props);

  DeviceFeatures f = { 0 };
  if (v12)
    query_features (phys, &f);

  info->name = g_strdup (base.deviceName);
  info->vendor_id = base.vendorID;
  info->device_id = base.deviceID;
  switch (base.deviceType)
    {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: info->type = LP_DEVICE_INTEGRATED_GPU; break;
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: info->type = LP_DEVICE_DISCRETE_GPU; break;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: info->type = LP_DEVICE_VIRTUAL_GPU; break;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: info->type = LP_DEVICE_CPU; break;
    default: info->type = LP_DEVICE_OTHER; break;
    }
  info->api_version = g_strdup_printf ("%u.%u.%u", VK_API_VERSION_MAJOR (base.apiVersion),
                                       VK_API_VERSION_MINOR (base.apiVersion), VK_API_VERSION_PATCH (base.apiVersion));
  info->driver = v12 ? g_strdup_printf ("%s %s", driver.driverName, driver.driverInfo)
                     : g_strdup_printf ("driver version 0x%x", base.driverVersion);
  VkPhysicalDeviceMemoryProperties mem;
  vkGetPhysicalDeviceMemoryProperties (phys, &mem);
  for (guint32 i = 0; i < mem.memoryHeapCount; i++)
    if (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      info->device_local_bytes = MAX (info->device_local_bytes, mem.memoryHeaps[i].size);
  for (guint32 i = 0; i < mem.memoryTypeCount; i++)
    if (mem.memoryTypes[i].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
      info->host_visible_bytes = MAX (info->host_visible_bytes, mem.memoryHeaps[mem.memoryTypes[i].heapIndex].size);
  info->max_binding_bytes = base.limits.maxStorageBufferRange;
  info->subgroup_size = subgroup.subgroupSize;
  info->storage16 = f.f11.storageBuffer16BitAccess;
  info->float16 = f.f12.shaderFloat16;
  info->int8 = f.f12.shaderInt8;
  /* What the backend can enable (see query_features). */
  info->int_dot = (offered_fast (&f) & LP_VK_FAST_INT_DOT) != 0;
  info->coopmat = device_has_extension (phys, "VK_KHR_cooperative_matrix")
                  || device_has_extension (phys, "VK_NV_cooperative_matrix");

  if (!v12)
    info->skip_reason = g_strdup_printf ("Vulkan %s: expected at least 1.2", info->api_version);
  else if (compute_queue_family (phys) < 0)
    info->skip_reason = g_strdup ("no compute queue");
  else if (base.limits.maxComputeWorkGroupInvocations < needed_invocations)
    info->skip_reason = g_strdup_printf ("maxComputeWorkGroupInvocations %u: expected at least %u",
                                         base.limits.maxComputeWorkGroupInvocations, needed_invocations);
  info->usable = info->skip_reason == NULL;
  return info;
}

static gboolean
physical_devices (VkInstance instance, GPtrArray **out, VkPhysicalDevice **phys, GError **error)
{
  guint32 n = 0;
  VkResult r = vkEnumeratePhysicalDevices (instance, &n, NULL);
  if (r != VK_SUCCESS)
    {
      g_set_error (error, LP_ERROR, LP_ERROR_UNSUPPORTED, "Vulkan: vkEnumeratePhysicalDevices: error %d", r);
      return FALSE;
    }
  *phys = g_new0 (VkPhysicalDevice, MAX (n, 1));
  vkEnumeratePhysicalDevices (instance, &n, *phys);
  *out = g_ptr_array_new_with_free_func ((GDestroyNotify) lp_device_info_free);
  for (guint32 i = 0; i < n; i++)
    g_ptr_array_add (*out, describe ((*phys)[i], (int) i));
  return TRUE;
}

GPtrArray *
lp_vk_list_devices (GError **error)
{
  VkInstance instance;
  VkDebugUtilsMessengerEXT messenger;
  if (!instance_new (FALSE, &instance, &messenger, error))
    return NULL;
  GPtrArray *devices = NULL;
  g_autofree VkPhysicalDevice *phys = NULL;
  physical_devices (instance, &devices, &phys, error);
  instance_free (instance, messenger);
  return devices;
}

/* ---- buffers ---- */

static int
memory_type (LpVkCtx *ctx, guint32 type_bits, VkMemoryPropertyFlags want)
{
  for (guint32 i = 0; i < ctx->mem_props.memoryTypeCount; i++)
    if ((type_bits & (1u << i)) && (ctx->mem_props.memoryTypes[i].propertyFlags & want) == want)
      return (int) i;
  return -1;
}

void
lp_vk_buf_free (LpVkCtx *ctx, LpVkBuf *b)
{
  if (b->buf != VK_NULL_HANDLE)
    vkDestroyBuffer (ctx->dev, b->buf, NULL);
  if (b->mem != VK_NULL_HANDLE)
    vkFreeMemory (ctx->dev, b->mem, NULL);
  memset (b, 0, sizeof *b);
}

/* A buffer of `size` bytes: device-local (and mapped when `direct` memory is
 * also host-visible), or host-visible for staging. */
gboolean
lp_vk_buf_alloc (LpVkCtx *ctx, LpVkBuf *b, VkDeviceSize size, gboolean staging, GError **error)
{
  size = (size + 255) & ~(VkDeviceSize) 255;
  VkBufferCreateInfo bi = {
    .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
    .size = size,
    .usage = staging ? VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT
                     : VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT
                           | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
    .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
  };
  memset (b, 0, sizeof *b);
  if (vkCreateBuffer (ctx->dev, &bi, NULL, &b->buf) != VK_SUCCESS)
    {
      g_set_error (error, LP_ERROR, LP_ERROR_FAILED, "Vulkan: cannot create a buffer of %" G_GUINT64_FORMAT " bytes",
                   (guint64) size);
      b->buf = VK_NULL_HANDLE;
      return FALSE;
    }
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements (ctx->dev, b->buf, &req);
  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  int type = -1;
  gboolean mapped = staging || ctx->direct;
  if (staging)
    type = memory_type (ctx, req.memoryTypeBits, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
  else if (ctx->direct)
    type = memory_type (ctx, req.memoryTypeBits, host | VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  else
    type = memory_type (ctx, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  if (type < 0)
    type = memory_type (ctx, req.memoryTypeBits, mapped ? host : 0);
  VkMemoryAllocateInfo ai = {
    .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
    .allocationSize = req.size,
    .memoryTypeIndex = (guint32) type,
  };
  if (type < 0 || vkAllocateMemory (ctx->dev, &ai, NULL, &b->mem) != VK_SUCCESS)
    {
      b->mem = VK_NULL_HANDLE;
      lp_vk_buf_free (ctx, b);
      g_set_error (error, LP_ERROR, LP_ERROR_FAILED, "Vulkan: cannot allocate %" G_GUINT64_FORMAT " bytes of %s memory",
                   (guint64) req.size, staging ? "staging" : "device");
      return FALSE;
    }
  vkBindBufferMemory (ctx->dev, b->buf, b->mem, 0);
  if (mapped && vkMapMemory (ctx->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map) != VK_SUCCESS)
    {
      lp_vk_buf_free (ctx, b);
      g_set_error (error, LP_ERROR, LP_ERROR_FAILED, "Vulkan: cannot map %" G_GUINT64_FORMAT " bytes",
                   (guint64) req.size);
      return FALSE;
    }
  b->size = size;
  return TRUE;
}

/* The op paths' buffers: running out of memory there is fatal, as before. */
static void
buf_alloc (LpVkCtx *ctx, LpVkBuf *b, VkDeviceSize size, gboolean staging)
{
  GError *error = NULL;
  if (!lp_vk_buf_alloc (ctx, b, size, staging, &error))
    g_error ("%s", error->message);
}

/* ---- the context of one open device ---- */

typedef struct {
  VkShaderId shader;
  guint32 spec[LP_VK_MAX_SPEC];
} PipeKey;

static guint
pipe_key_hash (gconstpointer p)
{
  const PipeKey *k = p;
  guint h = k->shader;
  for (int i = 0; i < LP_VK_MAX_SPEC; i++)
    h = h * 31 + k->spec[i];
  return h;
}

static gboolean
pipe_key_equal (gconstpointer a, gconstpointer b)
{
  return memcmp (a, b, sizeof (PipeKey)) == 0;
}

static guint
pow2_at_most (guint n, guint cap)
{
  guint p = 1;
  while (p * 2 <= MIN (n, cap))
    p *= 2;
  return p;
}

/* One more descriptor pool for the frame: a graph may dispatch hundreds of
 * times in one run. */
static gboolean
desc_pool_add (LpVkCtx *ctx, LpVkFrame *fr)
{
  const guint32 sets = 256;
  VkDescriptorPoolSize size = { VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, sets * LP_VK_MAX_BINDINGS };
  VkDescriptorPoolCreateInfo dpi = {
    .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
    .maxSets = sets,
    .poolSizeCount = 1,
    .pPoolSizes = &size,
  };
  VkDescriptorPool pool;
  if (vkCreateDescriptorPool (ctx->dev, &dpi, NULL, &pool) != VK_SUCCESS)
    return FALSE;
  g_ptr_array_add (fr->desc_pools, pool);
  return TRUE;
}

LpVkCtx *
lp_vk_ctx_new (int index, char **device_name, char **numeric_class, GError **error)
{
  LpVkCtx *ctx = g_new0 (LpVkCtx, 1);
  g_mutex_init (&ctx->lock);
  for (int f = 0; f < LP_VK_FRAMES; f++)
    {
      ctx->frames[f].downloads = g_array_new (FALSE, FALSE, sizeof (LpVkDownload));
      ctx->frames[f].desc_pools = g_ptr_array_new ();
    }
  ctx->fr = &ctx->frames[0];
  gboolean validation = env_flag ("LLMPRESS_VULKAN_VALIDATION");
  if (!instance_new (validation, &ctx->instance, &ctx->messenger, error))
    {
      for (int f = 0; f < LP_VK_FRAMES; f++)
        {
          g_array_unref (ctx->frames[f].downloads);
          g_ptr_array_unref (ctx->frames[f].desc_pools);
        }
      g_free (ctx);
      return NULL;
    }
  g_autoptr (GPtrArray) devices = NULL;
  g_autofree VkPhysicalDevice *phys = NULL;
  if (!physical_devices (ctx->instance, &devices, &phys, error))
    goto fail;
  if (index < 0 || (guint) index >= devices->len || !((LpDeviceInfo *) devices->pdata[index])->usable)
    {
      g_set_error (error, LP_ERROR, LP_ERROR_INVALID, "Vulkan: device %d: expected a usable device index below %u",
                   index, devices->len);
      goto fail;
    }
  const LpDeviceInfo *info = devices->pdata[index];
  ctx->phys = phys[index];
  ctx->queue_family = (guint32) compute_queue_family (ctx->phys);

  float prio = 1.0f;
  VkDeviceQueueCreateInfo qi = {
    .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
    .queueFamilyIndex = ctx->queue_family,
    .queueCount = 1,
    .pQueuePriorities = &prio,
  };
  const char *exts[2];
  guint32 n_exts = 0;
  /* A portability (layered) driver must be told we know it is one. */
  if (device_has_extension (ctx->phys, "VK_KHR_portability_subset"))
    exts[n_exts++] = "VK_KHR_portability_subset";

  /* The fast paths: what the device offers less what the environment
   * disables.  Only their features are enabled, so under validation a
   * shader of the core paths that needed one would be reported.  (int8
   * storage is not asked for: gemm_i8 packs four int8 in a uint, which
   * OpSDot's packed format reads as they are.) */
  DeviceFeatures offered;
  query_features (ctx->phys, &offered);
  LpVkFast disabled;
  if (!disabled_fast (&disabled, error))
    goto fail;
  ctx->fast = offered_fast (&offered) & ~disabled;
  VkPhysicalDeviceVulkan11Features e11 = {
    .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
    .storageBuffer16BitAccess = (ctx->fast & LP_VK_FAST_F16) != 0,
  };
  VkPhysicalDeviceVulkan12Features e12 = {
    .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
    .pNext = &e11,
    .shaderFloat16 = (ctx->fast & LP_VK_FAST_F16) != 0,
  };
  VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR edot = {
    .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES_KHR,
    .pNext = &e12,
    .shaderIntegerDotProduct = VK_TRUE,
  };
  void *features = &e12;
  if (ctx->fast & LP_VK_FAST_INT_DOT)
    {
      exts[n_exts++] = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
      features = &edot;
    }
  VkDeviceCreateInfo di = {
    .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
    .pNext = features,
    .queueCreateInfoCount = 1,
    .pQueueCreateInfos = &qi,
    .enabledExtensionCount = n_exts,
    .ppEnabledExtensionNames = exts,
  };
  VkResult r = vkCreateDevice (ctx->phys, &di, NULL, &ctx->dev);
  if (r != VK_SUCCESS)
    {
      g_set_error (error, LP_ERROR, LP_ERROR_UNSUPPORTED, "Vulkan: %s: vkCreateDevice: error %d", info->name, r);
      goto fail;
    }
  vkGetDeviceQueue (ctx->dev, ctx->queue_family, 0, &ctx->queue);

  VkPhysicalDeviceMaintenance3Properties m3 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES };
  VkPhysicalDeviceProperties2 props = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3 };
  vkGetPhysicalDeviceProperties2 (ctx->phys, &props);
  const VkPhysicalDeviceLimits *lim = &props.properties.limits;
  vkGetPhysicalDeviceMemoryProperties (ctx->phys, &ctx->mem_props);
  /* Element indices in the shaders are 32-bit: stay well below 4 GiB too. */
  ctx->max_binding = MIN (MIN ((VkDeviceSize) lim->maxStorageBufferRange, m3.maxMemoryAllocationSize),
                          (VkDeviceSize) 1 << 30);
  const char *cap = g_getenv ("LLMPRESS_VULKAN_MAX_BINDING");
  if (cap != NULL && g_ascii_strtoull (cap, NULL, 10) >= 4096)
    ctx->max_binding = MIN (ctx->max_binding, g_ascii_strtoull (cap, NULL, 10));
  ctx->max_groups_x = MIN (lim->maxComputeWorkGroupCount[0], 65535u);
  ctx->wg_size = pow2_at_most (lim->maxComputeWorkGroupSize[0], 256);
  /* GEMM tile: 16x16 threads, 4x4 outputs each, BK deep: 2 * 64 * BK floats
   * of shared memory. */
  ctx->gemm_wx = 16;
  ctx->gemm_wy = 16;
  ctx->gemm_bk = lim->maxComputeSharedMemorySize >= 2 * 64 * 16 * 4 ? 16 : 8;
  /* Host-visible device-local memory (integrated GPUs, lavapipe): no copies. */
  ctx->direct = !env_flag ("LLMPRESS_VULKAN_STAGING");
  if (ctx->direct)
    {
      gboolean found = FALSE;
      const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT
                                         | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      for (guint32 i = 0; i < ctx->mem_props.memoryTypeCount; i++)
        {
          const VkMemoryType *t = &ctx->mem_props.memoryTypes[i];
          /* Only when that memory is the device's main heap, not a small BAR window. */
          if ((t->propertyFlags & want) == want
              && ctx->mem_props.memoryHeaps[t->heapIndex].size >= info->device_local_bytes)
            found = TRUE;
        }
      ctx->direct = found;
    }

  VkCommandPoolCreateInfo pi = {
    .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
    .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
    .queueFamilyIndex = ctx->queue_family,
  };
  VkCommandBufferAllocateInfo ci = {
    .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
    .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
    .commandBufferCount = 1,
  };
  VkFenceCreateInfo fi = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
  VkDescriptorSetLayoutBinding bindings[LP_VK_MAX_BINDINGS];
  for (int i = 0; i < LP_VK_MAX_BINDINGS; i++)
    bindings[i] = (VkDescriptorSetLayoutBinding) {
      .binding = (guint32) i,
      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
      .descriptorCount = 1,
      .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
    };
  VkDescriptorSetLayoutCreateInfo li = {
    .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
    .bindingCount = LP_VK_MAX_BINDINGS,
    .pBindings = bindings,
  };
  VkPushConstantRange push = { .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = LP_VK_PUSH_BYTES };
  VkPipelineCacheCreateInfo pci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO };
  gboolean made = vkCreateCommandPool (ctx->dev, &pi, NULL, &ctx->cmd_pool) == VK_SUCCESS
                  && vkCreateDescriptorSetLayout (ctx->dev, &li, NULL, &ctx->set_layout) == VK_SUCCESS
                  && vkCreatePipelineCache (ctx->dev, &pci, NULL, &ctx->pipe_cache) == VK_SUCCESS;
  ci.commandPool = ctx->cmd_pool;
  for (int f = 0; made && f < LP_VK_FRAMES; f++)
    {
      LpVkFrame *fr = &ctx->frames[f];
      made = vkAllocateCommandBuffers (ctx->dev, &ci, &fr->cmd) == VK_SUCCESS
             && vkCreateFence (ctx->dev, &fi, NULL, &fr->fence) == VK_SUCCESS && desc_pool_add (ctx, fr);
    }
  if (!made)
    {
      g_set_error (error, LP_ERROR, LP_ERROR_FAILED, "Vulkan: %s: cannot create the command and descriptor objects",
                   info->name);
      goto fail;
    }
  VkPipelineLayoutCreateInfo pli = {
    .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
    .setLayoutCount = 1,
    .pSetLayouts = &ctx->set_layout,
    .pushConstantRangeCount = 1,
    .pPushConstantRanges = &push,
  };
  if (vkCreatePipelineLayout (ctx->dev, &pli, NULL, &ctx->pipe_layout) != VK_SUCCESS)
    {
      g_set_error (error, LP_ERROR, LP_ERROR_FAILED, "Vulkan: %s: cannot create the pipeline layout", info->name);
      goto fail;
    }
  for (int s = 0; s < VK_SH_COUNT; s++)
    {
      const VkShaderCode *code = lp_vk_shader (s);
      /* A module declaring a capability whose feature is off is invalid. */
      if ((code->needs & ctx->fast) != code->needs)
        continue;
      VkShaderModuleCreateInfo si = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = code->size,
        .pCode = code->code,
      };
      if (vkCreateShaderModule (ctx->dev, &si, NULL, &ctx->shaders[s]) != VK_SUCCESS)
        {
          g_set_error (error, LP_ERROR, LP_ERROR_FAILED, "Vulkan: %s: shader %s: cannot create", info->name,
                       code->name);
          goto fail;
        }
    }
  ctx->pipelines = g_hash_table_new_full (pipe_key_hash, pipe_key_equal, g_free, NULL);
  ctx->pool = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);

  GString *fast = g_string_new (NULL);
  for (gsize k = 0; k < G_N_ELEMENTS (fast_names); k++)
    if (ctx->fast & fast_names[k].flag)
      g_string_append_printf (fast, ", %s", fast_names[k].name);
  *device_name = g_strdup_printf ("%s [vulkan:%d, %s%s%s%s]", info->name, index, info->driver,
                                  ctx->direct ? "" : ", staging", validation ? ", validation" : "", fast->str);
  /* Same device, driver and shaders: the same bits.  The fast paths are
   * meant to give the bits of the paths they replace; naming them costs a
   * cache miss at most if some driver does not. */
  *numeric_class = g_strdup_printf ("vulkan-%04x-%04x-%s-%s%s", info->vendor_id, info->device_id, info->driver,
                                    PACKAGE_VERSION, fast->str);
  g_string_free (fast, TRUE);
  return ctx;

fail:
  lp_vk_ctx_free (ctx);
  return NULL;
}

void
lp_vk_ctx_free (LpVkCtx *ctx)
{
  if (ctx == NULL)
    return;
  if (ctx->dev != VK_NULL_HANDLE)
    {
      vkDeviceWaitIdle (ctx->dev);
      if (ctx->pool)
        {
          lp_vk_pool_drain (ctx);
          g_hash_table_unref (ctx->pool);
        }
      if (ctx->pipelines)
        {
          GHashTableIter it;
          gpointer pipe;
          g_hash_table_iter_init (&it, ctx->pipelines);
          while (g_hash_table_iter_next (&it, NULL, &pipe))
            vkDestroyPipeline (ctx->dev, (VkPipeline) pipe, NULL);
          g_hash_table_unref (ctx->pipelines);
        }
      for (int s = 0; s < VK_SH_COUNT; s++)
        if (ctx->shaders[s] != VK_NULL_HANDLE)
          vkDestroyShaderModule (ctx->dev, ctx->shaders[s], NULL);
      for (int f = 0; f < LP_VK_FRAMES; f++)
        {
          LpVkFrame *fr = &ctx->frames[f];
          for (int i = 0; i < LP_VK_SLOTS; i++)
            lp_vk_buf_free (ctx, &fr->slots[i]);
          lp_vk_buf_free (ctx, &fr->staging);
          for (guint i = 0; i < fr->desc_pools->len; i++)
            vkDestroyDescriptorPool (ctx->dev, (VkDescriptorPool) fr->desc_pools->pdata[i], NULL);
          if (fr->fence)
            vkDestroyFence (ctx->dev, fr->fence, NULL);
        }
      if (ctx->pipe_cache)
        vkDestroyPipelineCache (ctx->dev, ctx->pipe_cache, NULL);
      if (ctx->pipe_layout)
        vkDestroyPipelineLayout (ctx->dev, ctx->pipe_layout, NULL);
      if (ctx->set_layout)
        vkDestroyDescriptorSetLayout (ctx->dev, ctx->set_layout, NULL);
      if (ctx->cmd_pool)
        vkDestroyCommandPool (ctx->dev, ctx->cmd_pool, NULL);
      vkDestroyDevice (ctx->dev, NULL);
    }
  instance_free (ctx->instance, ctx->messenger);
  for (int f = 0; f < LP_VK_FRAMES; f++)
    {
      g_array_unref (ctx->frames[f].downloads);
      g_ptr_array_unref (ctx->frames[f].desc_pools);
    }
  g_mutex_clear (&ctx->lock);
  g_free (ctx);
}

/* ---- runs ---- */

static VkPipeline
pipeline_get (LpVkCtx *ctx, VkShaderId shader, const guint32 *spec, int n_spec)
{
  PipeKey key = { .shader = shader };
  memcpy (key.spec, spec, sizeof (guint32) * n_spec);
  VkPipeline pipe = g_hash_table_lookup (ctx->pipelines, &key);
  if (pipe != VK_NULL_HANDLE)
    return pipe;
  VkSpecializationMapEntry entries[LP_VK_MAX_SPEC];
  for (int i = 0; i < n_spec; i++)
    entries[i] = (VkSpecializationMapEntry) { (guint32) i, (guint32) (i * sizeof (guint32)), sizeof (guint32) };
  VkSpecializationInfo si = {
    .mapEntryCount = (guint32) n_spec,
    .pMapEntries = entries,
    .dataSize = n_spec * sizeof (guint32),
    .pData = key.spec,
  };
  VkComputePipelineCreateInfo ci = {
    .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
    .stage = {
      .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
      .stage = VK_SHADER_STAGE_COMPUTE_BIT,
      .module = ctx->shaders[shader],
      .pName = "main",
      .pSpecializationInfo = &si,
    },
    .layout = ctx->pipe_layout,
  };
  if (vkCreateComputePipelines (ctx->dev, ctx->pipe_cache, 1, &ci, NULL, &pipe) != VK_SUCCESS)
    g_error ("Vulkan: shader %s: cannot create its pipeline", lp_vk_shader (shader)->name);
  g_hash_table_insert (ctx->pipelines, g_memdup2 (&key, sizeof key), pipe);
  return pipe;
}

/* Wait for frame f's run and copy its results out. */
static void
frame_wait (LpVkCtx *ctx, LpVkFrame *f)
{
  if (!f->in_flight)
    return;
  VkResult r = vkWaitForFences (ctx->dev, 1, &f->fence, VK_TRUE, G_MAXUINT64);
  if (r != VK_SUCCESS)
    g_error ("Vulkan: wait failed (error %d): the device is lost", r);
  vkResetFences (ctx->dev, 1, &f->fence);
  f->in_flight = FALSE;
  for (guint i = 0; i < f->downloads->len; i++)
    {
      const LpVkDownload *d = &g_array_index (f->downloads, LpVkDownload, i);
      if (d->dst_stride == d->row_bytes)
        memcpy (d->dst, d->src, d->rows * d->row_bytes);
      else
        for (gsize row = 0; row < d->rows; row++)
          memcpy (d->dst + row * d->dst_stride, d->src + row * d->row_bytes, d->row_bytes);
    }
}

void
lp_vk_run_begin (LpVkCtx *ctx, VkDeviceSize staging_bytes)
{
  /* The frame's previous run must be done before its buffers are refilled. */
  frame_wait (ctx, ctx->fr);
  if (!ctx->direct && ctx->fr->staging.size < staging_bytes)
    {
      lp_vk_buf_free (ctx, &ctx->fr->staging);
      buf_alloc (ctx, &ctx->fr->staging, staging_bytes, TRUE);
    }
  ctx->fr->staging_used = 0;
  g_array_set_size (ctx->fr->downloads, 0);
  for (guint i = 0; i < ctx->fr->desc_pools->len; i++)
    vkResetDescriptorPool (ctx->dev, (VkDescriptorPool) ctx->fr->desc_pools->pdata[i], 0);
  ctx->fr->desc_pool = 0;
  vkResetCommandBuffer (ctx->fr->cmd, 0);
  VkCommandBufferBeginInfo bi = {
    .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
    .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
  };
  vkBeginCommandBuffer (ctx->fr->cmd, &bi);
}

void
lp_vk_slot (LpVkCtx *ctx, int slot, VkDeviceSize bytes)
{
  g_assert (slot >= 0 && slot < LP_VK_SLOTS);
  g_assert (bytes <= ctx->max_binding);
  LpVkBuf *b = &ctx->fr->slots[slot];
  if (b->size >= bytes)
    return;
  lp_vk_buf_free (ctx, b);
  /* Grow with headroom: the next op is often a little larger. */
  buf_alloc (ctx, b, MIN (ctx->max_binding, MAX (bytes, b->size + b->size / 2)), FALSE);
}

/* Staging space for `bytes`, 16-byte aligned (copy offsets need 4). */
static VkDeviceSize
staging_take (LpVkCtx *ctx, gsize bytes)
{
  VkDeviceSize off = ctx->fr->staging_used;
  ctx->fr->staging_used = (off + bytes + 15) & ~(VkDeviceSize) 15;
  g_assert (ctx->fr->staging_used <= ctx->fr->staging.size);
  return off;
}

void
lp_vk_upload (LpVkCtx *ctx, int slot, const void *src, gsize rows, gsize row_bytes, gsize src_stride)
{
  lp_vk_upload_padded (ctx, slot, src, rows, row_bytes, src_stride, row_bytes);
}

void
lp_vk_upload_padded (LpVkCtx *ctx, int slot, const void *src, gsize rows, gsize row_bytes, gsize src_stride,
                     gsize dst_row_bytes)
{
  LpVkBuf *b = &ctx->fr->slots[slot];
  gsize bytes = rows * dst_row_bytes;
  g_assert (row_bytes <= dst_row_bytes && bytes <= b->size);
  guint8 *dst;
  VkDeviceSize off = 0;
  if (ctx->direct)
    dst = b->map;
  else
    {
      off = staging_take (ctx, bytes);
      dst = (guint8 *) ctx->fr->staging.map + off;
    }
  if (src_stride == row_bytes && dst_row_bytes == row_bytes)
    memcpy (dst, src, bytes);
  else
    for (gsize r = 0; r < rows; r++)
      {
        memcpy (dst + r * dst_row_bytes, (const guint8 *) src + r * src_stride, row_bytes);
        memset (dst + r * dst_row_bytes + row_bytes, 0, dst_row_bytes - row_bytes);
      }
  if (!ctx->direct && bytes > 0)
    {
      VkBufferCopy region = { .srcOffset = off, .dstOffset = 0, .size = bytes };
      vkCmdCopyBuffer (ctx->fr->cmd, ctx->fr->staging.buf, b->buf, 1, &region);
    }
}

void
lp_vk_download (LpVkCtx *ctx, int slot, void *dst, gsize rows, gsize row_bytes, gsize dst_stride)
{
  LpVkBuf *b = &ctx->fr->slots[slot];
  gsize bytes = rows * row_bytes;
  LpVkDownload d = { .dst = dst, .rows = rows, .row_bytes = row_bytes, .dst_stride = dst_stride };
  if (ctx->direct)
    d.src = b->map;
  else
    {
      lp_vk_barrier (ctx);
      VkDeviceSize off = staging_take (ctx, bytes);
      VkBufferCopy region = { .srcOffset = 0, .dstOffset = off, .size = bytes };
      vkCmdCopyBuffer (ctx->fr->cmd, b->buf, ctx->fr->staging.buf, 1, &region);
      d.src = (const guint8 *) ctx->fr->staging.map + off;
    }
  g_array_append_val (ctx->fr->downloads, d);
}

static void
barrier_to (LpVkCtx *ctx, VkPipelineStageFlags dst_stage, VkAccessFlags dst_access)
{
  VkMemoryBarrier mb = {
    .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
    .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    .dstAccessMask = dst_access,
  };
  vkCmdPipelineBarrier (ctx->fr->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, dst_stage,
                        0, 1, &mb, 0, NULL, 0, NULL);
}

void
lp_vk_barrier (LpVkCtx *ctx)
{
  barrier_to (ctx, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
              VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT
                  | VK_ACCESS_TRANSFER_WRITE_BIT);
}

void
lp_vk_dispatch (LpVkCtx *ctx, VkShaderId shader, const guint32 *spec, int n_spec, const int *bindings, int n_bindings,
                const void *push, gsize push_size, guint32 gx, guint32 gy)
{
  g_assert (n_bindings >= 1 && n_bindings <= LP_VK_MAX_BINDINGS);
  const LpVkBuf *bufs[LP_VK_MAX_BINDINGS];
  for (int i = 0; i < n_bindings; i++)
    bufs[i] = &ctx->fr->slots[bindings[i]];
  lp_vk_dispatch_bufs (ctx, shader, spec, n_spec, bufs, n_bindings, push, push_size, gx, gy);
}

static VkDescriptorSet
desc_set_take (LpVkCtx *ctx)
{
  LpVkFrame *fr = ctx->fr;
  VkDescriptorSetAllocateInfo ai = {
    .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
    .descriptorSetCount = 1,
    .pSetLayouts = &ctx->set_layout,
  };
  VkDescriptorSet set;
  for (;;)
    {
      if (fr->desc_pool == fr->desc_pools->len && !desc_pool_add (ctx, fr))
        g_error ("Vulkan: cannot create a descriptor pool");
      ai.descriptorPool = (VkDescriptorPool) fr->desc_pools->pdata[fr->desc_pool];
      if (vkAllocateDescriptorSets (ctx->dev, &ai, &set) == VK_SUCCESS)
        return set;
      fr->desc_pool++; /* this pool is full: the next (new or reset) one */
    }
}

void
lp_vk_dispatch_bufs (LpVkCtx *ctx, VkShaderId shader, const guint32 *spec, int n_spec, const LpVkBuf *const *bufs,
                     int n_bufs, const void *push, gsize push_size, guint32 gx, guint32 gy)
{
  g_assert (n_bufs >= 1 && n_bufs <= LP_VK_MAX_BINDINGS && push_size <= LP_VK_PUSH_BYTES);
  g_assert (n_spec <= LP_VK_MAX_SPEC);
  VkPipeline pipe = pipeline_get (ctx, shader, spec, n_spec);
  VkDescriptorSet set = desc_set_take (ctx);
  /* Every binding of the layout gets a buffer: unused ones repeat the first.
   * A binding spans at most max_binding bytes (a pooled buffer may be
   * larger than its tensor). */
  VkDescriptorBufferInfo infos[LP_VK_MAX_BINDINGS];
  VkWriteDescriptorSet writes[LP_VK_MAX_BINDINGS];
  for (int i = 0; i < LP_VK_MAX_BINDINGS; i++)
    {
      const LpVkBuf *b = bufs[i < n_bufs ? i : 0];
      g_assert (b->buf != VK_NULL_HANDLE);
      infos[i] = (VkDescriptorBufferInfo) { b->buf, 0, MIN (b->size, ctx->max_binding) };
      writes[i] = (VkWriteDescriptorSet) {
        .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
        .dstSet = set,
        .dstBinding = (guint32) i,
        .descriptorCount = 1,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .pBufferInfo = &infos[i],
      };
    }
  vkUpdateDescriptorSets (ctx->dev, LP_VK_MAX_BINDINGS, writes, 0, NULL);
  vkCmdBindPipeline (ctx->fr->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
  vkCmdBindDescriptorSets (ctx->fr->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->pipe_layout, 0, 1, &set, 0, NULL);
  guint8 pc[LP_VK_PUSH_BYTES] = { 0 };
  memcpy (pc, push, push_size);
  vkCmdPushConstants (ctx->fr->cmd, ctx->pipe_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, LP_VK_PUSH_BYTES, pc);
  vkCmdDispatch (ctx->fr->cmd, gx, gy, 1);
}

VkCommandBuffer
lp_vk_cmd (LpVkCtx *ctx)
{
  return ctx->fr->cmd;
}

/* Staging runs move at most this much at a time. */
#define COPY_CHUNK ((gsize) 64 << 20)

void
lp_vk_copy_in (LpVkCtx *ctx, LpVkBuf *dst, VkDeviceSize offset, const void *src, gsize n)
{
  for (gsize done = 0; done < n; done += COPY_CHUNK)
    {
      gsize c = MIN (COPY_CHUNK, n - done);
      lp_vk_run_begin (ctx, c + 16);
      VkDeviceSize off = staging_take (ctx, c);
      memcpy ((guint8 *) ctx->fr->staging.map + off, (const guint8 *) src + done, c);
      VkBufferCopy region = { .srcOffset = off, .dstOffset = offset + done, .size = c };
      vkCmdCopyBuffer (ctx->fr->cmd, ctx->fr->staging.buf, dst->buf, 1, &region);
      lp_vk_run_end (ctx);
    }
}

void
lp_vk_copy_out (LpVkCtx *ctx, LpVkBuf *src, VkDeviceSize offset, void *dst, gsize n)
{
  for (gsize done = 0; done < n; done += COPY_CHUNK)
    {
      gsize c = MIN (COPY_CHUNK, n - done);
      lp_vk_run_begin (ctx, c + 16);
      VkDeviceSize off = staging_take (ctx, c);
      VkBufferCopy region = { .srcOffset = offset + done, .dstOffset = off, .size = c };
      vkCmdCopyBuffer (ctx->fr->cmd, src->buf, ctx->fr->staging.buf, 1, &region);
      LpVkDownload d = { .src = (const guint8 *) ctx->fr->staging.map + off, .dst = (guint8 *) dst + done,
                         .rows = 1, .row_bytes = c, .dst_stride = c };
      g_array_append_val (ctx->fr->downloads, d);
      lp_vk_run_end (ctx);
    }
}

void
lp_vk_run_submit (LpVkCtx *ctx)
{
  /* Device writes become visible to the host only through a barrier. */
  barrier_to (ctx, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
  vkEndCommandBuffer (ctx->fr->cmd);
  VkSubmitInfo si = {
    .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
    .commandBufferCount = 1,
    .pCommandBuffers = &ctx->fr->cmd,
  };
  VkResult r = vkQueueSubmit (ctx->queue, 1, &si, ctx->fr->fence);
  if (r != VK_SUCCESS)
    g_error ("Vulkan: submit failed (error %d): the device is lost", r);
  ctx->fr->in_flight = TRUE;
  ctx->fr = &ctx->frames[(ctx->fr - ctx->frames + 1) % LP_VK_FRAMES];
}

void
lp_vk_run_wait (LpVkCtx *ctx)
{
  /* One queue runs submissions in order: the oldest first. */
  for (int k = 0; k < LP_VK_FRAMES; k++)
    frame_wait (ctx, &ctx->frames[(ctx->fr - ctx->frames + k) % LP_VK_FRAMES]);
}

void
lp_vk_run_end (LpVkCtx *ctx)
{
  LpVkFrame *f = ctx->fr;
  lp_vk_run_submit (ctx);
  lp_vk_run_wait (ctx);
  /* Stay on this frame: the next run finds the slots as this one left them. */
  ctx->fr = f;
}
