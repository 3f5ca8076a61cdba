/* llmpress devices — the compute devices this build sees, and which it uses. */
#include "config.h"

#include <stdio.h>

#include "cli.h"

static const GOptionEntry entries[] = { { NULL } };

static const char *
type_name (LpDeviceType t)
{
  switch (t)
    {
    case LP_DEVICE_INTEGRATED_GPU: return "integrated GPU";
    case LP_DEVICE_DISCRETE_GPU: return "discrete GPU";
    case LP_DEVICE_VIRTUAL_GPU: return "virtual GPU";
    case LP_DEVICE_CPU: return "cpu";
    default: return "other";
    }
}

static const char *
yes_no (gboolean b)
{
  return b ? "yes" : "no";
}

static void
print_device (const LpDeviceInfo *d)
{
  g_autofree char *local = g_format_size_full (d->device_local_bytes, G_FORMAT_SIZE_IEC_UNITS);
  g_autofree char *host = g_format_size_full (d->host_visible_bytes, G_FORMAT_SIZE_IEC_UNITS);
  g_autofree char *binding = g_format_size_full (d->max_binding_bytes, G_FORMAT_SIZE_IEC_UNITS);
  printf ("  vulkan:%d  %s\n", d->index, d->name);
  printf ("    type %s, vendor 0x%04x, device 0x%04x\n", type_name (d->type), d->vendor_id, d->device_id);
  printf ("    driver %s, Vulkan %s\n", d->driver, d->api_version);
  printf ("    memory: device-local %s, host-visible %s, one binding at most %s\n", local, host, binding);
  printf ("    subgroup %u; 16-bit storage %s, fp16 arithmetic %s, int8 %s, integer dot product %s, "
          "cooperative matrix %s\n",
          d->subgroup_size, yes_no (d->storage16), yes_no (d->float16), yes_no (d->int8), yes_no (d->int_dot),
          yes_no (d->coopmat));
  /* The Vulkan backend's fast paths, used when offered (LLMPRESS_VULKAN_DISABLE
   * turns them off); without them the same ops run on core Vulkan 1.2. */
  GString *fast = g_string_new (NULL);
  if (d->int_dot)
    g_string_append (fast, ", int-dot (int8 GEMM by dot product)");
  if (d->storage16 && d->float16)
    g_string_append (fast, ", float16 (f16 weights read directly)");
  printf ("    fast paths: %s\n", fast->len > 0 ? fast->str + 2 : "none");
  g_string_free (fast, TRUE);
  if (!d->usable)
    printf ("    skipped: %s\n", d->skip_reason);
  else if (d->type == LP_DEVICE_CPU)
    printf ("    usable with --backend vulkan:%d (a CPU device: auto does not choose it)\n", d->index);
  else
    printf ("    usable\n");
}

int
lp_cmd_devices (int argc, char **argv)
{
  if (!lp_cli_parse ("devices", NULL, "List the compute devices and the backend 'auto' chooses.",
                     "LLMPRESS_DEVICE sets the default --backend of every command.", entries, &argc, &argv))
    return LP_EXIT_USAGE;
  if (argc != 1)
    return lp_cli_usage_error ("devices", "expected no arguments, found %d", argc - 1);
#ifdef HAVE_VULKAN
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) devices = lp_backend_list_devices ("vulkan", &error);
  if (devices == NULL)
    printf ("Vulkan: not available: %s\n", error->message);
  else if (devices->len == 0)
    printf ("Vulkan: no Vulkan devices\n");
  else
    {
      printf ("Vulkan devices:\n");
      for (guint i = 0; i < devices->len; i++)
        print_device (devices->pdata[i]);
    }
#else
  printf ("Vulkan: Vulkan backend not built (configure --enable-vulkan)\n");
#endif
  g_autoptr (LpBackend) cpu = lp_backend_cpu_new ();
  printf ("CPU: %s\n", cpu->device_name);
  g_autoptr (LpBackend) chosen = lp_backend_new ("auto", NULL);
  g_autofree char *desc = lp_backend_describe (chosen);
  printf ("auto: %s\n", desc);
  return LP_EXIT_OK;
}
