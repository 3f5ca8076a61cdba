#version 450
// Causal GQA attention for small heads (hd <= 32), one invocation per
// (head h, query row t): the keys one after another with the softmax
// computed online (running max m and sum l, the accumulator rescaled when
// the max grows), q and the accumulator in registers.  No shared memory and
// no barriers: with heads this small attention.comp's work group per row
// spends its time synchronizing (on lavapipe a barrier switches between
// the group's SIMD slices), while here neighbouring invocations (the same
// head, neighbouring rows) read the same keys at the same time.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 8;

layout(std430, binding = 0) readonly buffer QBuf { float q[]; };
layout(std430, binding = 1) readonly buffer KBuf { float k[]; };
layout(std430, binding = 2) readonly buffer VBuf { float v[]; };
layout(std430, binding = 3) writeonly buffer OBuf { float o[]; };

layout(push_constant) uniform Params {
  uint T, T_kv, H, Hkv, hd;
  float scale;
} p;

void main ()
{
  uint i = gl_GlobalInvocationID.x;
  if (i >= p.T * p.H)
    return;
  uint h = i / p.T, t = i % p.T;
  uint kh = h / (p.H / p.Hkv), last = p.T_kv - p.T + t;
  uint qbase = (t * p.H + h) * HD, kstride = p.Hkv * HD;
  float qr[HD], acc[HD];
  for (uint d = 0; d < HD; d++)
    {
      qr[d] = q[qbase + d] * p.scale;
      acc[d] = 0.0;
    }
  float m = -3.0e38, l = 0.0;
  for (uint s = 0; s <= last; s++)
    {
      uint kb = s * kstride + kh * HD;
      float score = 0.0;
      for (uint d = 0; d < HD; d++)
        score = fma (qr[d], k[kb + d], score);
      // One exp a key: e = exp (-|score - m|) is the old terms' rescale
      // when the max grows, else the new key's weight.
      float e = exp (-abs (score - m));
      bool grows = score > m;
      float corr = grows ? e : 1.0, pr = grows ? 1.0 : e;
      l = l * corr + pr;
      for (uint d = 0; d < HD; d++)
        acc[d] = fma (pr, v[kb + d], acc[d] * corr);
      m = max (m, score);
    }
  for (uint d = 0; d < HD; d++)
    o[qbase + d] = acc[d] / l;
}
