// NT-Xent backward: gradient of sum_j g_j loss_j with respect to the rows zr, one row-parallel pass
// that recomputes the score tiles from the saved log-sum-exp (never a C x C tensor):
//
//   W_ik    = g_i exp(s_ik - lse_i) + g_k exp(s_ik - lse_k)      for k != i, pos(i) (S is symmetric)
//   W_ii    = 0
//   W_ipos  = -(g_i Q_i + g_pos Q_pos),   Q_k = 1 - P_k,pos(k) = exp(lse_neg_k - lse_k)
//   grad_i  = inv_temp * sum_k W_ik zc_k
//
// with s_ik = inv_temp <zr_i, zc_k>, i the global index row_ids[i], lse/lse_neg/g over all C global
// rows. The positive weight equals g_i P_ipos + g_pos P_posi - g_i - g_pos, but near convergence
// (P -> 1) that difference keeps only ~ulp(lse) of absolute precision; Q from the forward's two
// log-sum-exps keeps its relative precision (fastclr/ops/chunked.py).
//
// Grid: (row blocks of kBlockM, gradient-column blocks of kBlockDOut). A CTA walks every kBlockN
// column tile: score tile (first product, over all of D), weights into shared memory in the
// compute dtype, then its [kBlockM, kBlockDOut] gradient tile += W . zc[tile, its D columns]
// (second product, fp32 accumulators in registers). D > kBlockDOut recomputes the score tiles once
// per gradient-column block: more parallel CTAs at the cost of repeated first products.
//
// fp16 weights would underflow (g ~ 1/C times P ~ 1/C), so for fp16/bf16 each row's weights are
// scaled by a power of two 2^s_i with |W_ik| 2^s_i < 2^14 (|W_ik| <= |g_i| + max_k |g_k| since
// P <= 1) and the accumulated row is multiplied back by inv_temp 2^-s_i: exact rescaling, the full
// fp16 range used. A row_ids entry outside [0, C) yields a NaN gradient row.

#include <cmath>

#include "nt_xent_params.h"
#include "nt_xent_tiles.cuh"

namespace fastclr {
namespace {

constexpr int kWeightExponent = 14;  // scaled weights stay below 2^14 (fp16 max is ~2^16)
constexpr int kMaxShift = 100;       // keeps 2^shift a finite fp32

template <typename T>
__global__ void __launch_bounds__(kThreads) nt_xent_backward_kernel(const NtXentBackwardParams p) {
  using Cfg = TileConfig<T>;
  // The zr/zc stage tiles of the first product and the zc value tile of the second are never live
  // at the same time: they share one buffer.
  constexpr int kStageBytes = padded_bytes(2 * kBlockM * Cfg::kLdIn * static_cast<int>(sizeof(T)));
  constexpr int kValueBytes = padded_bytes(kBlockN * Cfg::kLdOut * static_cast<int>(sizeof(T)));
  constexpr int kOperandBytes = kStageBytes > kValueBytes ? kStageBytes : kValueBytes;
  constexpr int kWeightElems = Cfg::kWeightsInPlace ? 1 : kBlockM * Cfg::kLdWeights;
  static_assert(kOperandBytes + kBlockM * kLdScores * 4 + kWeightElems * sizeof(T) + 2048 <= 48 * 1024,
                "static shared memory is limited to 48 KB");

  __shared__ __align__(128) unsigned char s_operands[kOperandBytes];
  __shared__ __align__(128) float s_scores[kBlockM * kLdScores];
  __shared__ __align__(128) T s_weight_buf[kWeightElems];
  __shared__ float s_lse_col[kBlockN];
  __shared__ float s_g_col[kBlockN];
  __shared__ float s_unscale[kBlockM];
  __shared__ float s_warp_max[kThreads / 32];

  T* s_rows = reinterpret_cast<T*>(s_operands);
  T* s_cols = s_rows + kBlockM * Cfg::kLdIn;  // kBlockM * kLdIn * sizeof(T) is a multiple of 32 B
  T* s_values = reinterpret_cast<T*>(s_operands);
  T* s_weights = Cfg::kWeightsInPlace ? reinterpret_cast<T*>(s_scores) : s_weight_buf;

  const T* zr = static_cast<const T*>(p.zr);
  const T* zc = static_cast<const T*>(p.zc);
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBlockM;
  const int64_t dout0 = static_cast<int64_t>(blockIdx.y) * kBlockDOut;

  // max_k |g_k| bounds every weight of every row (with |g_i|): used to pick the fp16 scale.
  float g_max = 0.f;
  if (Cfg::kScaleWeights) {
    for (int64_t k = threadIdx.x; k < p.C; k += kThreads) g_max = fmaxf(g_max, fabsf(p.g_c[k]));
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      g_max = fmaxf(g_max, __shfl_xor_sync(0xffffffffu, g_max, offset));
    if (threadIdx.x % 32 == 0) s_warp_max[threadIdx.x / 32] = g_max;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) g_max = fmaxf(g_max, s_warp_max[w]);
  }

  // Epilogue mapping as in the forward: row r has threads 2r, 2r+1; thread `parity` owns the tile
  // columns parity + 2j. Each thread keeps its row's constants in registers.
  const int r = threadIdx.x / 2;
  const int parity = threadIdx.x % 2;
  const int64_t row = row0 + r;
  int64_t self_col = -1;
  int64_t pos_col = -1;
  bool ids_ok = false;
  float lse_i = 0.f, g_i = 0.f, w_pos = 0.f;
  float scale = 1.f;
  float unscale = p.inv_temp;
  if (row < p.M) {
    self_col = p.row_ids[row];
    ids_ok = self_col >= 0 && self_col < p.C;
    if (ids_ok) {
      pos_col = (self_col + p.C / 2) % p.C;
      lse_i = p.lse_c[self_col];
      g_i = p.g_c[self_col];
      w_pos = -(g_i * expf(p.lse_neg_c[self_col] - lse_i) +
                p.g_c[pos_col] * expf(p.lse_neg_c[pos_col] - p.lse_c[pos_col]));
      if (Cfg::kScaleWeights) {
        int exponent = 0;
        frexpf(fabsf(g_i) + g_max, &exponent);  // |g_i| + g_max < 2^exponent
        const int shift = min(max(kWeightExponent - exponent, -kMaxShift), kMaxShift);
        scale = ldexpf(1.f, shift);
        unscale = ldexpf(p.inv_temp, -shift);
      }
    } else {
      unscale = NAN;
    }
  }
  if (parity == 0) s_unscale[r] = unscale;

  TileMma<T> scores;
  TileMma<T> out;
  out.zero();

  for (int64_t col0 = 0; col0 < p.C; col0 += kBlockN) {
    scores.zero();
    for (int64_t d0 = 0; d0 < p.D; d0 += Cfg::kBlockD) {
      __syncthreads();  // every warp is done with the previous stage's tiles and value tile
      load_tile<T, kBlockM, Cfg::kBlockD, Cfg::kLdIn>(s_rows, zr, p.stride_zr, row0, p.M, d0, p.D);
      load_tile<T, kBlockN, Cfg::kBlockD, Cfg::kLdIn>(s_cols, zc, p.stride_zc, col0, p.C, d0, p.D);
      __syncthreads();
      scores.template mma_abt<Cfg::kBlockD, Cfg::kLdIn>(s_rows, s_cols);
    }
    __syncthreads();  // stage tiles, the previous weights and value tile are free
    scores.template store<kLdScores>(s_scores);
    load_tile<T, kBlockN, kBlockDOut, Cfg::kLdOut>(s_values, zc, p.stride_zc, col0, p.C, dout0,
                                                     p.D);
    for (int c = threadIdx.x; c < kBlockN; c += kThreads) {
      const int64_t k = col0 + c;
      s_lse_col[c] = k < p.C ? p.lse_c[k] : 0.f;
      s_g_col[c] = k < p.C ? p.g_c[k] : 0.f;
    }
    __syncthreads();

    const int self_c = tile_index(self_col, col0);
    const int pos_c = tile_index(pos_col, col0);
    const int width = tile_width(p.C, col0, ids_ok);
#pragma unroll 8
    for (int j = 0; j < kBlockN / 2; ++j) {
      const int c = parity + 2 * j;
      float w = 0.f;
      if (c < width) {
        const float s = s_scores[r * kLdScores + c] * p.inv_temp;
        if (c != self_c) w = g_i * expf(s - lse_i) + s_g_col[c] * expf(s - s_lse_col[c]);
        if (c == pos_c) w = w_pos;
      }
      // In place for fp32: this thread alone reads and writes this element.
      s_weights[r * Cfg::kLdWeights + c] = from_float<T>(w * scale);
    }
    __syncthreads();
    out.template mma_ab<kBlockN, Cfg::kLdWeights, Cfg::kLdOut>(s_weights, s_values);
  }

  __syncthreads();
  out.template store<kLdScores>(s_scores);
  __syncthreads();
  for (int idx = threadIdx.x; idx < kBlockM * kBlockDOut; idx += kThreads) {
    const int rr = idx / kBlockDOut;
    const int dd = idx % kBlockDOut;
    const int64_t grow = row0 + rr;
    const int64_t gcol = dout0 + dd;
    if (grow < p.M && gcol < p.D)
      p.grad[grow * p.stride_grad + gcol] = s_scores[rr * kLdScores + dd] * s_unscale[rr];
  }
}

template <typename T>
cudaError_t launch_backward(const NtXentBackwardParams& p, cudaStream_t stream) {
  if (p.M == 0 || p.D == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned int>((p.M + kBlockM - 1) / kBlockM),
                  static_cast<unsigned int>((p.D + kBlockDOut - 1) / kBlockDOut));
  nt_xent_backward_kernel<T><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t nt_xent_backward(const NtXentBackwardParams& params, NtXentDtype dtype,
                             cudaStream_t stream) {
  switch (dtype) {
    case NtXentDtype::kFloat32:
      return launch_backward<float>(params, stream);
    case NtXentDtype::kFloat16:
      return launch_backward<__half>(params, stream);
    case NtXentDtype::kBFloat16:
      return launch_backward<__nv_bfloat16>(params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fastclr
