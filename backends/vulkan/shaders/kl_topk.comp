#version 450
// KL against a teacher given as its top-k (compute.h's kl_topk), one row
// of V per work group:
//   0 KL_TOPK       dst[t] = f^2 sum_b p_b (log p_b - log q_b) over the row's k ids and the rest
//   1 KL_TOPK_BACK  dst[t, v] = dy[t] f (P q_v - p_v)               v one of the ids
//                   dst[t, v] = dy[t] f q_v (P - p_rest / q_rest)    v in the rest
// q = softmax (a[t] / f), q_rest its mass off the ids (summed directly,
// not as 1 - the ids' mass, which cancels), P = sum_b p_b.  Which tokens
// are ids is a bit mask [T, W] (W = ceil (V / 32) words a row) in a
// scratch buffer, built by the row's group first.  Ids outside 0 .. V - 1
// name no token and are left out, as on the CPU.
// With ROWS, one row an invocation instead (rows up to a few thousand).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool ROWS = false;
#define WG (ROWS ? 1u : gl_WorkGroupSize.x)
#define TID (ROWS ? 0u : gl_LocalInvocationID.x)

layout(std430, binding = 0) readonly buffer ABuf { float a[]; };       // student [T, V]
layout(std430, binding = 1) readonly buffer IdBuf { int ids[]; };      // [T, k]
layout(std430, binding = 2) readonly buffer LpBuf { float logp[]; };   // [T, k]
layout(std430, binding = 3) readonly buffer RestBuf { float rest[]; }; // [T]
layout(std430, binding = 4) readonly buffer DyBuf { float dy[]; };     // [T] (backward)
layout(std430, binding = 5) writeonly buffer DBuf { float dst[]; };    // [T] or [T, V]
layout(std430, binding = 6) coherent buffer MarkBuf { uint mark[]; };  // [T, W] scratch

layout(push_constant) uniform Params {
  uint V, k, mode;
  float f;
  uint n_rows; // with ROWS
  uint W;
} p;

shared float red[gl_WorkGroupSize.x];

// The group's writes to the mask seen by the whole group.
void group_sync ()
{
  if (!ROWS)
    {
      memoryBarrierBuffer ();
      barrier ();
    }
}

float reduce (float v, bool is_max)
{
  if (ROWS)
    return v;
  uint tid = gl_LocalInvocationID.x;
  red[tid] = v;
  barrier ();
  for (uint s = WG / 2; s > 0; s /= 2)
    {
      if (tid < s)
        red[tid] = is_max ? max (red[tid], red[tid + s]) : red[tid] + red[tid + s];
      barrier ();
    }
  float r = red[0];
  barrier ();
  return r;
}

bool is_id (uint mbase, uint v)
{
  return (mark[mbase + v / 32u] & (1u << (v % 32u))) != 0u;
}

// A bucket's p (log p - log q); 0 when p = 0.
float term (float lp, float lq)
{
  return isinf (lp) && lp < 0.0 ? 0.0 : exp (lp) * (lp - lq);
}

void main ()
{
  uint t = ROWS ? gl_GlobalInvocationID.x : gl_WorkGroupID.x, tid = TID;
  if (ROWS && t >= p.n_rows)
    return;
  uint base = t * p.V, kbase = t * p.k, mbase = t * p.W;
  float f = p.f;
  for (uint w = tid; w < p.W; w += WG)
    mark[mbase + w] = 0u;
  group_sync ();
  for (uint i = tid; i < p.k; i += WG)
    {
      int id = ids[kbase + i];
      if (uint (id) < p.V)
        atomicOr (mark[mbase + uint (id) / 32u], 1u << (uint (id) % 32u));
    }
  group_sync ();

  float m = -3.0e38;
  for (uint v = tid; v < p.V; v += WG)
    m = max (m, a[base + v] / f);
  m = reduce (m, true);
  float s = 0.0, r = 0.0;
  for (uint v = tid; v < p.V; v += WG)
    {
      float e = exp (a[base + v] / f - m);
      s += e;
      r += is_id (mbase, v) ? 0.0 : e;
    }
  s = reduce (s, false);
  r = reduce (r, false);
  float lse = m + log (s), lr = rest[t];

  if (p.mode == 0u)
    {
      float kl = 0.0;
      for (uint i = tid; i < p.k; i += WG)
        {
          int id = ids[kbase + i];
          if (uint (id) < p.V)
            kl += term (logp[kbase + i], a[base + uint (id)] / f - lse);
        }
      kl = reduce (kl, false);
      if (tid == 0u)
        dst[t] = f * f * (kl + term (lr, log (r) - log (s)));
      return;
    }

  float pm = 0.0;
  for (uint i = tid; i < p.k; i += WG)
    pm += uint (ids[kbase + i]) < p.V ? exp (logp[kbase + i]) : 0.0;
  float p_rest = exp (lr), P = reduce (pm, false) + p_rest, c = dy[t] * f;
  float b = r > 0.0 ? c * p_rest / r : 0.0;
  // The rest's entries here, the ids' below: each entry written once.
  for (uint v = tid; v < p.V; v += WG)
    if (!is_id (mbase, v))
      dst[base + v] = exp (a[base + v] / f - m) * (c * P / s - b);
  for (uint i = tid; i < p.k; i += WG)
    {
      int id = ids[kbase + i];
      if (uint (id) < p.V)
        dst[base + uint (id)] = c * (P * exp (a[base + uint (id)] / f - lse) - exp (logp[kbase + i]));
    }
}
