// Tile machinery shared by the forward and backward kernels: block sizes, shared-memory tile loads,
// and two interchangeable 64x64 tile-product engines with fp32 accumulation:
//   WmmaTile<T>  fp16 / bf16 on tensor cores (nvcuda::wmma 16x16x16 fragments, needs sm_80+);
//   FmaTile      fp32 on CUDA-core FMAs (full fp32 products, no tf32).
// Both expose the same interface, so each kernel is written once and instantiated per dtype.
// CUDA headers only: no torch.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

namespace fastclr {

constexpr int kThreads = 128;     // 4 warps per CTA
constexpr int kBlockM = 64;       // rows of zr per CTA
constexpr int kBlockN = 64;       // columns of zc per tile step
constexpr int kBlockDOut = 64;    // gradient columns per CTA in the backward
constexpr int kLdScores = kBlockN + 4;  // fp32 score tile: WMMA needs a multiple of 4 floats

static_assert(kThreads == 2 * kBlockM, "the epilogues give each row two threads");
static_assert(kBlockDOut == kBlockN, "the backward stores its output tile in the score buffer");

// Per-dtype tile shapes. The +8 (16 bytes) padding keeps WMMA's ldm rule (a multiple of 8 halves)
// and staggers rows across shared-memory banks; the fp32 path uses an odd stride for the same reason.
template <typename T>
struct TileConfig {
  static constexpr int kBlockD = 64;                 // reduction depth per shared-memory stage
  static constexpr int kLdIn = kBlockD + 8;          // zr / zc tiles [64][kLdIn]
  static constexpr int kLdOut = kBlockDOut + 8;      // zc value tile [kBlockN][kLdOut]
  static constexpr int kLdWeights = kBlockN + 8;     // weight tile in T for the second product
  static constexpr bool kWeightsInPlace = false;     // weights need their own T buffer
  static constexpr bool kScaleWeights = true;        // keep fp16 weights away from underflow
};

template <>
struct TileConfig<float> {
  static constexpr int kBlockD = 32;
  static constexpr int kLdIn = kBlockD + 1;
  static constexpr int kLdOut = kBlockDOut;
  static constexpr int kLdWeights = kLdScores;       // weights overwrite the fp32 scores in place
  static constexpr bool kWeightsInPlace = true;
  static constexpr bool kScaleWeights = false;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// dst[r][c] = src[row0 + r][col0 + c] for the ROWS x COLS tile, zero outside
// [0, num_rows) x [0, num_cols): zero rows/columns add nothing to a dot product, and the epilogues
// mask them out of every reduction. Consecutive threads read consecutive elements (coalesced).
template <typename T, int ROWS, int COLS, int LD>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t stride, int64_t row0,
                                          int64_t num_rows, int64_t col0, int64_t num_cols) {
  const T zero = from_float<T>(0.f);
#pragma unroll 4
  for (int idx = threadIdx.x; idx < ROWS * COLS; idx += kThreads) {
    const int r = idx / COLS;
    const int c = idx % COLS;
    const int64_t gr = row0 + r;
    const int64_t gc = col0 + c;
    dst[r * LD + c] = (gr < num_rows && gc < num_cols) ? src[gr * stride + gc] : zero;
  }
}

// fp16 / bf16: each warp owns a 32x32 quarter of the 64x64 output as 2x2 WMMA accumulators.
template <typename T>
struct WmmaTile {
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc[2][2];
  int row_base;
  int col_base;

  __device__ WmmaTile() {
    const int warp = threadIdx.x / 32;
    row_base = (warp / 2) * 32;
    col_base = (warp % 2) * 32;
  }

  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) nvcuda::wmma::fill_fragment(acc[i][j], 0.f);
  }

  // acc += a[64][K] . b[64][K]^T  (both row-major with leading dimension LD)
  template <int K, int LD>
  __device__ void mma_abt(const T* a, const T* b) {
    using namespace nvcuda;
#pragma unroll
    for (int k = 0; k < K; k += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], a + (row_base + 16 * i) * LD + k, LD);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], b + (col_base + 16 * j) * LD + k, LD);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
  }

  // acc += a[64][K] . b[K][64]  (a row-major with leading dimension LDA, b row-major with LDB)
  template <int K, int LDA, int LDB>
  __device__ void mma_ab(const T* a, const T* b) {
    using namespace nvcuda;
#pragma unroll
    for (int k = 0; k < K; k += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(fa[i], a + (row_base + 16 * i) * LDA + k, LDA);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], b + k * LDB + col_base + 16 * j, LDB);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
  }

  // out[64][LD] (fp32, row-major) = acc
  template <int LD>
  __device__ void store(float* out) const {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        nvcuda::wmma::store_matrix_sync(out + (row_base + 16 * i) * LD + col_base + 16 * j,
                                        acc[i][j], LD, nvcuda::wmma::mem_row_major);
  }
};

// fp32: thread (ty, tx) = (tid / 16, tid % 16) owns rows ty + 8i (i < 8) and columns tx + 16j
// (j < 4) of the 64x64 output, 32 fp32 accumulators in registers.
struct FmaTile {
  float acc[8][4];
  int ty;
  int tx;

  __device__ FmaTile() : ty(threadIdx.x / 16), tx(threadIdx.x % 16) {}

  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  }

  template <int K, int LD>
  __device__ void mma_abt(const float* a, const float* b) {
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
      float av[8], bv[4];
#pragma unroll
      for (int i = 0; i < 8; ++i) av[i] = a[(ty + 8 * i) * LD + k];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = b[(tx + 16 * j) * LD + k];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }

  template <int K, int LDA, int LDB>
  __device__ void mma_ab(const float* a, const float* b) {
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
      float av[8], bv[4];
#pragma unroll
      for (int i = 0; i < 8; ++i) av[i] = a[(ty + 8 * i) * LDA + k];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = b[k * LDB + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }

  template <int LD>
  __device__ void store(float* out) const {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) out[(ty + 8 * i) * LD + tx + 16 * j] = acc[i][j];
  }
};

template <typename T>
using TileMma = typename std::conditional<std::is_same<T, float>::value, FmaTile, WmmaTile<T>>::type;

// Global column k's index within the kBlockN-column tile that starts at col0, or -1 when k lies
// outside it: the epilogues' masks then compare small ints against compile-time column offsets
// instead of 64-bit indices.
__device__ __forceinline__ int tile_index(int64_t k, int64_t col0) {
  return (k >= col0 && k < col0 + kBlockN) ? static_cast<int>(k - col0) : -1;
}

// Columns of the tile at col0 that exist (< C), or 0 for a row that must not see any.
__device__ __forceinline__ int tile_width(int64_t C, int64_t col0, bool row_ok) {
  return row_ok ? static_cast<int>(C - col0 < kBlockN ? C - col0 : kBlockN) : 0;
}

// Bytes of a shared-memory region rounded up to 128 so the next region stays WMMA-aligned (32 B).
__host__ __device__ constexpr int padded_bytes(int bytes) { return (bytes + 127) / 128 * 128; }

}  // namespace fastclr
