#version 450
// Causal GQA attention for small heads (hd a multiple of 4, at most 32),
// R query rows an invocation: work group (x, h) takes rows x*WG*R ..
// (x+1)*WG*R - 1 of head h, invocation i the rows x*WG*R + j*WG + i.
// The keys go one after another with the softmax computed online (running
// max m and sum l, the accumulator rescaled when the max grows), q and the
// accumulators in registers as vec4s: each key and value loaded serves R
// rows (loads, not arithmetic, are what such small heads cost).  Every
// invocation runs to the group's last visible key, rows past their own
// causal limit adding nothing, so the key addresses are the same across
// the group.  No shared memory and no barriers: with heads this small
// attention.comp's work group per row spends its time synchronizing.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD4 = 2; // hd / 4
#define WG gl_WorkGroupSize.x
#define R 8

layout(std430, binding = 0) readonly buffer QBuf { vec4 q[]; };
layout(std430, binding = 1) readonly buffer KBuf { vec4 k[]; };
layout(std430, binding = 2) readonly buffer VBuf { vec4 v[]; };
layout(std430, binding = 3) writeonly buffer OBuf { vec4 o[]; };

layout(push_constant) uniform Params {
  uint T, T_kv, H, Hkv, hd;
  float scale;
} p;

void main ()
{
  uint h = gl_WorkGroupID.y, past = p.T_kv - p.T, tid = gl_LocalInvocationID.x;
  uint t0 = gl_WorkGroupID.x * WG * R;
  uint t_last = min (t0 + WG * R, p.T) - 1u;
  uint kh = h / (p.H / p.Hkv), group_last = past + t_last, kstride = p.Hkv * HD4;
  vec4 qr[R][HD4], acc[R][HD4];
  float m[R], l[R];
  uint last[R];
  for (uint j = 0; j < R; j++)
    {
      uint t = min (t0 + j * WG + tid, t_last);
      last[j] = past + min (t0 + j * WG + tid, t_last);
      for (uint d = 0; d < HD4; d++)
        {
          qr[j][d] = q[(t * p.H + h) * HD4 + d] * p.scale;
          acc[j][d] = vec4 (0.0);
        }
      m[j] = -3.0e38;
      l[j] = 0.0;
    }
  for (uint s = 0; s <= group_last; s++)
    {
      uint kb = s * kstride + kh * HD4;
      vec4 kr[HD4], vr[HD4];
      for (uint d = 0; d < HD4; d++)
        {
          kr[d] = k[kb + d];
          vr[d] = v[kb + d];
        }
      for (uint j = 0; j < R; j++)
        {
          float score = 0.0;
          for (uint d = 0; d < HD4; d++)
            score += dot (qr[j][d], kr[d]);
          // One exp a key: e = exp (-|score - m|) is the old terms'
          // rescale when the max grows, else the new key's weight.
          bool visible = s <= last[j], grows = visible && score > m[j];
          float e = exp (-abs (score - m[j]));
          float corr = grows ? e : 1.0, pr = grows ? 1.0 : (visible ? e : 0.0);
          l[j] = l[j] * corr + pr;
          for (uint d = 0; d < HD4; d++)
            acc[j][d] = pr * vr[d] + acc[j][d] * corr;
          m[j] = grows ? score : m[j];
        }
    }
  for (uint j = 0; j < R; j++)
    {
      uint t = t0 + j * WG + tid;
      if (t <= t_last)
        for (uint d = 0; d < HD4; d++)
          o[(t * p.H + h) * HD4 + d] = acc[j][d] / l[j];
    }
}
