#version 450
// Causal GQA attention, one work group per (query row t, head h): keys in
// chunks of one per thread, softmax computed online (running max and sum,
// rescaling the accumulator when the max grows), so any T_kv fits in
// constant shared memory.  Output: with hd < WG, WG/hd lanes of hd threads
// each take every lanes-th key of a chunk and are summed at the end; with
// hd >= WG each thread owns dims tid, tid+WG, ... (hd <= 4 * WG).
layout(local_size_x_id = 0) in;
#define WG gl_WorkGroupSize.x
#define MAX_PER_THREAD 4
#define NEG_BIG -3.0e38

layout(std430, binding = 0) readonly buffer QBuf { float q[]; };
layout(std430, binding = 1) readonly buffer KBuf { float k[]; };
layout(std430, binding = 2) readonly buffer VBuf { float v[]; };
layout(std430, binding = 3) writeonly buffer OBuf { float o[]; };

layout(push_constant) uniform Params {
  uint T, T_kv, H, Hkv, hd;
  float scale;
} p;

shared float qs[MAX_PER_THREAD * WG];
shared float ps[WG];
shared float red[WG];

void main ()
{
  uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
  uint kh = h / (p.H / p.Hkv);
  uint last = p.T_kv - p.T + t; // keys 0..last are visible
  uint qbase = (t * p.H + h) * p.hd;
  for (uint d = tid; d < p.hd; d += WG)
    qs[d] = q[qbase + d];
  barrier ();

  uint lanes = p.hd >= WG ? 1u : WG / p.hd;
  uint lane = p.hd >= WG ? 0u : tid / p.hd;
  uint d0 = p.hd >= WG ? tid : tid % p.hd;
  float m = NEG_BIG, l = 0.0;
  float acc[MAX_PER_THREAD];
  for (uint r = 0; r < MAX_PER_THREAD; r++)
    acc[r] = 0.0;

  for (uint c0 = 0; c0 <= last; c0 += WG)
    {
      uint s = c0 + tid;
      float score = NEG_BIG;
      if (s <= last)
        {
          uint kb = (s * p.Hkv + kh) * p.hd;
          float dot = 0.0;
          for (uint d = 0; d < p.hd; d++)
            dot = fma (qs[d], k[kb + d], dot);
          score = dot * p.scale;
        }
      red[tid] = score;
      barrier ();
      for (uint stride = WG / 2; stride > 0; stride /= 2)
        {
          if (tid < stride)
            red[tid] = max (red[tid], red[tid + stride]);
          barrier ();
        }
      float m_new = max (m, red[0]);
      barrier ();
      float pr = s <= last ? exp (score - m_new) : 0.0;
      ps[tid] = pr;
      red[tid] = pr;
      barrier ();
      for (uint stride = WG / 2; stride > 0; stride /= 2)
        {
          if (tid < stride)
            red[tid] += red[tid + stride];
          barrier ();
        }
      float corr = exp (m - m_new);
      l = l * corr + red[0];
      uint n_valid = min (WG, last + 1 - c0);
      if (lane < lanes)
        for (uint r = 0; r < MAX_PER_THREAD; r++)
          {
            uint d = d0 + r * WG;
            if (d >= p.hd)
              break;
            float a = acc[r] * corr;
            for (uint j = lane; j < n_valid; j += lanes)
              a = fma (ps[j], v[((c0 + j) * p.Hkv + kh) * p.hd + d], a);
            acc[r] = a;
          }
      m = m_new;
      barrier ();
    }
  if (lanes == 1u)
    {
      // With WG / 2 < hd < WG the threads past hd hold no sums.
      if (lane != 0u)
        return;
      for (uint r = 0; r < MAX_PER_THREAD; r++)
        {
          uint d = d0 + r * WG;
          if (d < p.hd)
            o[qbase + d] = acc[r] / l;
        }
      return;
    }
  red[tid] = lane < lanes ? acc[0] : 0.0;
  barrier ();
  if (lane == 0u)
    {
      float sum = 0.0;
      for (uint ln = 0; ln < lanes; ln++)
        sum += red[ln * p.hd + d0];
      o[qbase + d0] = sum / l;
    }
}
