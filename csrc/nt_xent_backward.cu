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
// Grid: (row blocks of kBlockM, gradient-column blocks of kBlockDOut: 128 fp16/bf16, 64 fp32
// for want of registers: TileConfig). A CTA walks every
// kBlockN column tile: score tile (first product over all of D, double-buffered 16-byte cp.async
// stages with the row tile resident for D <= 128: ScoreStages), weights into shared memory in the
// compute dtype, then its [kBlockM, kBlockDOut] gradient tile += W . zc[tile, its D columns]
// (second product, fp32 accumulators in registers; the value tile is copied with the tile's first
// stage). fp16/bf16 with D <= 128 need one gradient-column block, so each score tile is computed
// once; more blocks recompute the score tiles once each. Dynamic shared memory: BackwardSmem.
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

template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) nt_xent_backward_kernel(const NtXentBackwardParams p) {
  using Cfg = TileConfig<T>;
  using Smem = BackwardSmem<T>;
  unsigned char* smem = dynamic_smem;
  __shared__ float s_lse_col[kBlockN];
  __shared__ float s_g_col[kBlockN];
  __shared__ float s_unscale[kBlockM];
  __shared__ float s_warp_max[kThreads / 32];

  T* s_values = reinterpret_cast<T*>(smem + Smem::kValues);
  float* s_scores = reinterpret_cast<float*>(smem + Smem::kScores);
  T* s_weights = Cfg::kWeightsInPlace ? reinterpret_cast<T*>(s_scores)
                                      : reinterpret_cast<T*>(smem + Smem::kWeights);
  float* s_out = reinterpret_cast<float*>(smem);  // after the loop: the panels are free

  const T* zc = static_cast<const T*>(p.zc);
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBlockM;
  const int64_t dout0 = static_cast<int64_t>(blockIdx.y) * Cfg::kBlockDOut;
  ScoreStages<T, kVec> stages(Smem::kRows, Smem::kCols,
                              static_cast<const T*>(p.zr), zc, p.stride_zr, p.stride_zc, row0, p.M,
                              p.C, p.D);
  stages.begin();

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
  TileMma<T, Cfg::kBlockDOut> out;
  out.zero();

  for (int64_t col0 = 0; col0 < p.C; col0 += kBlockN) {
    scores.zero();
    // The value tile zc[tile, dout0 : dout0 + kBlockDOut] and the columns' lse and g travel with
    // the tile's first stage; the previous tile's end-of-loop barrier freed their buffers.
    stages.product(scores, col0, [&] {
      load_tile<T, kVec, kBlockN, Cfg::kBlockDOut, Cfg::kLdOut>(s_values, zc, p.stride_zc, col0,
                                                                p.C, dout0, p.D);
      cp_async_commit();
      for (int c = threadIdx.x; c < kBlockN; c += kThreads) {
        const int64_t k = col0 + c;
        s_lse_col[c] = k < p.C ? p.lse_c[k] : 0.f;
        s_g_col[c] = k < p.C ? p.g_c[k] : 0.f;
      }
    });
    scores.template store<kLdScores>(s_scores);
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
    __syncthreads();  // values, weights, scores and column constants are free for the next tile
  }

  out.template store<Smem::kLdOutTile>(s_out);
  __syncthreads();
  for (int idx = threadIdx.x; idx < kBlockM * Cfg::kBlockDOut; idx += kThreads) {
    const int rr = idx / Cfg::kBlockDOut;
    const int dd = idx % Cfg::kBlockDOut;
    const int64_t grow = row0 + rr;
    const int64_t gcol = dout0 + dd;
    if (grow < p.M && gcol < p.D)
      p.grad[grow * p.stride_grad + gcol] = s_out[rr * Smem::kLdOutTile + dd] * s_unscale[rr];
  }
}

template <typename T, bool kVec>
cudaError_t launch_backward(const NtXentBackwardParams& p, cudaStream_t stream) {
  const auto kernel = nt_xent_backward_kernel<T, kVec>;
  constexpr int kSmem = BackwardSmem<T>::kBytes;  // above the 48 KB default: opt in
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (err != cudaSuccess) return err;
  constexpr int kBlockDOut = TileConfig<T>::kBlockDOut;
  const dim3 grid(static_cast<unsigned int>((p.M + kBlockM - 1) / kBlockM),
                  static_cast<unsigned int>((p.D + kBlockDOut - 1) / kBlockDOut));
  kernel<<<grid, kThreads, kSmem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_backward(const NtXentBackwardParams& p, cudaStream_t stream) {
  if (p.M == 0 || p.D == 0) return cudaSuccess;
  return p.aligned16 ? launch_backward<T, true>(p, stream) : launch_backward<T, false>(p, stream);
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
