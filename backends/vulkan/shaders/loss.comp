#version 450
// Row-wise losses and their gradients, one row of V per work group:
//   0 CROSS_ENTROPY       dst[t] = logsumexp (a[t]) - a[t, tg[t]]        (tg < 0 or >= V: 0)
//   1 KL                  dst[t] = f^2 KL (softmax (b[t]/f) || softmax (a[t]/f))
//   2 MSE                 dst[t] = mean over the row of (a - b)^2
//   3 CROSS_ENTROPY_BACK  dst[t, v] = dy[t] (softmax (a[t])[v] - [v == tg[t]])  (tg < 0 or >= V: 0)
//   4 KL_BACK             dst[t, v] = dy[t] f (softmax (a[t]/f) - softmax (b[t]/f))[v]
//   5 MSE_BACK            dst[t, v] = dy[t] 2 (a - b)[t, v] / V
// a: logits or the student, b: the teacher or the second operand, tg: targets.
// With ROWS, one row an invocation instead (rows up to a few thousand,
// where a group's reductions would be mostly barriers).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool ROWS = false;
// The threads that share a row, and this one's place among them.
#define WG (ROWS ? 1u : gl_WorkGroupSize.x)
#define TID (ROWS ? 0u : gl_LocalInvocationID.x)

layout(std430, binding = 0) readonly buffer ABuf { float a[]; };
layout(std430, binding = 1) readonly buffer BBuf { float b[]; };
layout(std430, binding = 2) readonly buffer TgBuf { int tg[]; };
layout(std430, binding = 3) readonly buffer DyBuf { float dy[]; };
layout(std430, binding = 4) writeonly buffer DBuf { float dst[]; };

layout(push_constant) uniform Params {
  uint V, mode;
  float f;
  uint n_rows; // with ROWS
} p;

shared float red[gl_WorkGroupSize.x];

float reduce_max (float v)
{
  if (ROWS)
    return v;
  uint tid = gl_LocalInvocationID.x;
  red[tid] = v;
  barrier ();
  for (uint s = WG / 2; s > 0; s /= 2)
    {
      if (tid < s)
        red[tid] = max (red[tid], red[tid + s]);
      barrier ();
    }
  float r = red[0];
  barrier ();
  return r;
}

float reduce_sum (float v)
{
  if (ROWS)
    return v;
  uint tid = gl_LocalInvocationID.x;
  red[tid] = v;
  barrier ();
  for (uint s = WG / 2; s > 0; s /= 2)
    {
      if (tid < s)
        red[tid] += red[tid + s];
      barrier ();
    }
  float r = red[0];
  barrier ();
  return r;
}

// The row's max and log of the sum of exp (x - max) for x = src / scale.
vec2 row_lse (uint base, bool of_b, float scale)
{
  uint tid = TID;
  float m = -3.0e38;
  for (uint v = tid; v < p.V; v += WG)
    m = max (m, (of_b ? b[base + v] : a[base + v]) / scale);
  m = reduce_max (m);
  float s = 0.0;
  for (uint v = tid; v < p.V; v += WG)
    s += exp ((of_b ? b[base + v] : a[base + v]) / scale - m);
  return vec2 (m, log (reduce_sum (s)));
}

void main ()
{
  uint t = ROWS ? gl_GlobalInvocationID.x : gl_WorkGroupID.x, tid = TID;
  if (ROWS && t >= p.n_rows)
    return;
  uint base = t * p.V;
  float f = p.f;
  if (p.mode == 0u || p.mode == 3u)
    {
      int target = tg[t];
      if (uint (target) >= p.V) // negative too: not scored
        target = -1;
      vec2 ml = row_lse (base, false, 1.0);
      if (p.mode == 0u)
        {
          if (tid == 0u)
            dst[t] = target < 0 ? 0.0 : ml.x + ml.y - a[base + uint (target)];
          return;
        }
      for (uint v = tid; v < p.V; v += WG)
        dst[base + v] = target < 0 ? 0.0
                                   : dy[t] * (exp (a[base + v] - ml.x - ml.y) - (v == uint (target) ? 1.0 : 0.0));
    }
  else if (p.mode == 1u || p.mode == 4u)
    {
      vec2 ms = row_lse (base, false, f), mt = row_lse (base, true, f);
      if (p.mode == 1u)
        {
          float s = 0.0;
          for (uint v = tid; v < p.V; v += WG)
            {
              float lt = b[base + v] / f - mt.x - mt.y, ls = a[base + v] / f - ms.x - ms.y;
              s += exp (lt) * (lt - ls);
            }
          s = reduce_sum (s);
          if (tid == 0u)
            dst[t] = f * f * s;
          return;
        }
      for (uint v = tid; v < p.V; v += WG)
        {
          float ps = exp (a[base + v] / f - ms.x - ms.y), pt = exp (b[base + v] / f - mt.x - mt.y);
          dst[base + v] = dy[t] * f * (ps - pt);
        }
    }
  else if (p.mode == 2u)
    {
      float s = 0.0;
      for (uint v = tid; v < p.V; v += WG)
        {
          float d = a[base + v] - b[base + v];
          s = fma (d, d, s);
        }
      s = reduce_sum (s);
      if (tid == 0u)
        dst[t] = s / float (p.V);
    }
  else
    for (uint v = tid; v < p.V; v += WG)
      dst[base + v] = dy[t] * 2.0 * (a[base + v] - b[base + v]) / float (p.V);
}
