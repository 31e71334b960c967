// NT-Xent forward: per-row masked log-sum-exps and positive logit, never materializing C x C.
//
//   s_ik      = inv_temp * <zr_i, zc_k>
//   pos_logit = s_{i, pos(i)},   pos(i) = (row_ids[i] + C/2) % C
//   lse_neg_i = log sum_{k != row_ids[i], pos(i)} exp(s_ik)       (the negatives only)
//   lse_i     = log sum_{k != row_ids[i]} exp(s_ik) = logaddexp(lse_neg_i, pos_logit_i)
//
// The positive joins lse only after the loop, so the loss softplus(lse_neg - pos_logit) and the
// backward's negative mass exp(lse_neg - lse) keep their relative precision when P(pos) -> 1
// (fastclr/ops/chunked.py says why).
//
// One CTA owns kBlockM rows and walks every kBlockN-column tile of zc. A tile's scores are a tile
// product over D in kBlockD stages (tensor cores for fp16/bf16, FMAs for fp32, fp32 accumulation),
// double-buffered in shared memory (ScoreStages: 16-byte cp.async while the previous stage
// multiplies; the row tile stays resident for D <= 128); then each row's two threads fold the tile
// into an online (max, sum). Extra memory: dynamic shared only (ForwardSmem: 53 KB fp16/bf16,
// 71 KB fp32 per CTA); global traffic O(M/kBlockM * C * D).
// A row_ids entry outside [0, C) yields NaN for that row instead of reading out of bounds.

#include <cmath>

#include "nt_xent_params.h"
#include "nt_xent_tiles.cuh"

namespace fastclr {
namespace {

template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) nt_xent_forward_kernel(const NtXentForwardParams p) {
  using Smem = ForwardSmem<T>;
  unsigned char* smem = dynamic_smem;
  float* s_scores = reinterpret_cast<float*>(smem + Smem::kScores);

  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBlockM;
  ScoreStages<T, kVec> stages(Smem::kRows, Smem::kCols,
                              static_cast<const T*>(p.zr), static_cast<const T*>(p.zc),
                              p.stride_zr, p.stride_zc, row0, p.M, p.C, p.D);
  stages.begin();

  // Epilogue mapping: row r has threads 2r and 2r+1 (neighbouring lanes); thread `parity` owns the
  // tile columns c = parity + 2j. Interleaving keeps the score reads to 2-way bank conflicts.
  const int r = threadIdx.x / 2;
  const int parity = threadIdx.x % 2;
  const int64_t row = row0 + r;
  const bool row_in = row < p.M;
  int64_t self_col = -1;
  int64_t pos_col = -1;  // -1 never matches a column: rows out of range write nothing
  bool ids_ok = false;
  if (row_in) {
    self_col = p.row_ids[row];
    ids_ok = self_col >= 0 && self_col < p.C;
    if (ids_ok) pos_col = (self_col + p.C / 2) % p.C;
  }

  float m_i = -INFINITY;    // running max of this thread's negatives' logits
  float l_i = 0.f;          // running sum of exp(logit - m_i)
  float pos_s = -INFINITY;  // the positive logit, on the one thread that sees its column
  TileMma<T> scores;

  for (int64_t col0 = 0; col0 < p.C; col0 += kBlockN) {
    scores.zero();
    stages.product(scores, col0, [] {});  // its barriers also end the previous tile's epilogue
    scores.template store<kLdScores>(s_scores);
    __syncthreads();

    const int self_c = tile_index(self_col, col0);
    const int pos_c = tile_index(pos_col, col0);
    const int width = tile_width(p.C, col0, ids_ok);
    float logits[kBlockN / 2];
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kBlockN / 2; ++j) {
      const int c = parity + 2 * j;
      const float s = s_scores[r * kLdScores + c] * p.inv_temp;
      if (c == pos_c) pos_s = s;  // exactly one thread sees each row's positive
      logits[j] = (c < width && c != self_c && c != pos_c) ? s : -INFINITY;
      tile_max = fmaxf(tile_max, logits[j]);
    }
    if (tile_max > -INFINITY) {
      const float m_new = fmaxf(m_i, tile_max);
      l_i *= expf(m_i - m_new);  // exp(-inf) = 0 on the first valid tile
#pragma unroll
      for (int j = 0; j < kBlockN / 2; ++j) l_i += expf(logits[j] - m_new);
      m_i = m_new;
    }
  }

  // Merge the two half-rows; all 32 lanes take part in the shuffles.
  const float m_other = __shfl_xor_sync(0xffffffffu, m_i, 1);
  const float l_other = __shfl_xor_sync(0xffffffffu, l_i, 1);
  const float m_row = fmaxf(m_i, m_other);
  float l_row = 0.f;
  if (m_row > -INFINITY) l_row = l_i * expf(m_i - m_row) + l_other * expf(m_other - m_row);
  const float pos_logit = fmaxf(pos_s, __shfl_xor_sync(0xffffffffu, pos_s, 1));
  if (row_in && parity == 0) {
    const float lse_neg = m_row + logf(l_row);  // -inf without negatives (C = 2)
    const float top = fmaxf(lse_neg, pos_logit);
    p.lse[row] = ids_ok ? top + logf(expf(lse_neg - top) + expf(pos_logit - top)) : NAN;
    p.pos_logit[row] = ids_ok ? pos_logit : NAN;
    p.lse_neg[row] = ids_ok ? lse_neg : NAN;
  }
}

template <typename T, bool kVec>
cudaError_t launch_forward(const NtXentForwardParams& p, cudaStream_t stream) {
  const auto kernel = nt_xent_forward_kernel<T, kVec>;
  constexpr int kSmem = ForwardSmem<T>::kBytes;  // above the 48 KB default: opt in
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned int>((p.M + kBlockM - 1) / kBlockM));
  kernel<<<grid, kThreads, kSmem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_forward(const NtXentForwardParams& p, cudaStream_t stream) {
  if (p.M == 0) return cudaSuccess;
  return p.aligned16 ? launch_forward<T, true>(p, stream) : launch_forward<T, false>(p, stream);
}

}  // namespace

cudaError_t nt_xent_forward(const NtXentForwardParams& params, NtXentDtype dtype,
                            cudaStream_t stream) {
  switch (dtype) {
    case NtXentDtype::kFloat32:
      return launch_forward<float>(params, stream);
    case NtXentDtype::kFloat16:
      return launch_forward<__half>(params, stream);
    case NtXentDtype::kBFloat16:
      return launch_forward<__nv_bfloat16>(params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fastclr
