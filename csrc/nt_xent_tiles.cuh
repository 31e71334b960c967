// Tile machinery shared by the forward and backward kernels: block sizes, shared-memory layouts,
// global->shared tile loads (16-byte cp.async or element-wise), the double-buffered score-tile
// pipeline, and two interchangeable 64 x kCols tile-product engines with fp32 accumulation:
//   WmmaTile<T, kCols>  fp16 / bf16 on tensor cores (nvcuda::wmma 16x16x16 fragments, sm_80+);
//   FmaTile<kCols>      fp32 on CUDA-core FMAs (full fp32 products, no tf32).
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
constexpr int kResidentD = 128;   // D up to which the row tile stays in shared memory
constexpr int kLdScores = kBlockN + 4;     // fp32 score tile: WMMA needs a multiple of 4 floats

static_assert(kThreads == 2 * kBlockM, "the epilogues give each row two threads");
static_assert(kBlockM == kBlockN, "row and column stage tiles share one panel shape");

// Per-dtype tile shapes. Every leading dimension is a multiple of 16 bytes (cp.async's 16-byte
// destinations, WMMA's ldm rule of 8 halves); the +8 halves / +4 floats padding staggers rows
// across shared-memory banks (the fp32 column reads keep a 2-way conflict).
template <typename T>
struct TileConfig {
  static constexpr int kBlockD = 64;                 // reduction depth per pipeline stage
  static constexpr int kLdIn = kBlockD + 8;          // zr / zc panels [64][kLdIn]
  static constexpr int kBlockDOut = 128;             // backward gradient columns per CTA: all of
                                                     // D <= 128, each score tile computed once
  static constexpr int kLdOut = kBlockDOut + 8;      // zc value tile [kBlockN][kLdOut]
  static constexpr int kLdWeights = kBlockN + 8;     // weight tile in T for the second product
  static constexpr bool kWeightsInPlace = false;     // weights need their own T buffer
  static constexpr bool kScaleWeights = true;        // keep fp16 weights away from underflow
};

template <>
struct TileConfig<float> {
  static constexpr int kBlockD = 32;
  static constexpr int kLdIn = kBlockD + 4;
  // 128 gradient columns would hold 64 + 32 FMA accumulators per thread: 252-255 registers and
  // spills in the element-wise variant, so fp32 keeps 64 (D = 128 computes the scores twice).
  static constexpr int kBlockDOut = 64;
  static constexpr int kLdOut = kBlockDOut + 4;
  static constexpr int kLdWeights = kLdScores;       // weights overwrite the fp32 scores in place
  static constexpr bool kWeightsInPlace = true;
  static constexpr bool kScaleWeights = false;
};

// Bytes of a shared-memory region rounded up to 128 so the next region stays WMMA-aligned (32 B).
__host__ __device__ constexpr int padded_bytes(int bytes) { return (bytes + 127) / 128 * 128; }

// One [64][kLdIn] operand panel; the row tile has kResidentD / kBlockD of them (resident when
// D <= kResidentD, else two reused as a double buffer), the column tiles always two.
template <typename T>
struct PanelShape {
  static constexpr int kElems = kBlockM * TileConfig<T>::kLdIn;
  static constexpr int kBytes = padded_bytes(kElems * static_cast<int>(sizeof(T)));
  static constexpr int kRowPanels = kResidentD / TileConfig<T>::kBlockD;
  static_assert(kElems * static_cast<int>(sizeof(T)) == kBytes, "panels must stay contiguous");
  static_assert(kRowPanels >= 2, "a non-resident row tile double-buffers in two panels");
};

// Dynamic shared memory of the forward kernel (byte offsets): row panels, 2 column panels, scores.
template <typename T>
struct ForwardSmem {
  static constexpr int kRows = 0;
  static constexpr int kCols = kRows + PanelShape<T>::kRowPanels * PanelShape<T>::kBytes;
  static constexpr int kScores = kCols + 2 * PanelShape<T>::kBytes;
  static constexpr int kBytes = kScores + padded_bytes(kBlockM * kLdScores * 4);
};

// Dynamic shared memory of the backward kernel: the forward's regions, the zc value tile of the
// second product and the weight tile (fp16/bf16). The final fp32 gradient tile reuses the panels.
template <typename T>
struct BackwardSmem {
  using Cfg = TileConfig<T>;
  static constexpr int kRows = 0;
  static constexpr int kCols = kRows + PanelShape<T>::kRowPanels * PanelShape<T>::kBytes;
  static constexpr int kValues = kCols + 2 * PanelShape<T>::kBytes;
  static constexpr int kScores =
      kValues + padded_bytes(kBlockN * Cfg::kLdOut * static_cast<int>(sizeof(T)));
  static constexpr int kWeights = kScores + padded_bytes(kBlockM * kLdScores * 4);
  static constexpr int kBytes =
      kWeights + (Cfg::kWeightsInPlace
                      ? 0
                      : padded_bytes(kBlockM * Cfg::kLdWeights * static_cast<int>(sizeof(T))));
  static constexpr int kLdOutTile = Cfg::kBlockDOut + 4;  // fp32 gradient tile after the loop
  static_assert(kBlockM * kLdOutTile * 4 <= kValues, "the gradient tile must fit in the panels");
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

// Asynchronous 16-byte global->shared copy (L2 only, .cg); src_bytes = 0 writes 16 zero bytes and
// reads nothing. Completion: cp_async_commit() closes a group, cp_async_wait<N>() waits until at
// most N groups are pending (this thread's copies only: a __syncthreads() must follow).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  const unsigned smem = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// dst[r][c] = src[row0 + r][col0 + c] for the ROWS x COLS tile, zero outside
// [0, num_rows) x [0, num_cols): zero rows/columns add nothing to a dot product, and the epilogues
// mask them out of every reduction. kVec: 16-byte cp.async copies, in flight until the caller's
// cp_async_wait (the host picks it only when every row of src starts 16-byte aligned and
// num_cols * sizeof(T) % 16 == 0, so a vector is wholly inside or outside); else element-wise
// synchronous loads. Consecutive threads read consecutive addresses (coalesced).
template <typename T, bool kVec, int ROWS, int COLS, int LD>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t stride, int64_t row0,
                                          int64_t num_rows, int64_t col0, int64_t num_cols) {
  if constexpr (kVec) {
    constexpr int kPerVec = 16 / static_cast<int>(sizeof(T));
    constexpr int kVecsPerRow = COLS / kPerVec;
    static_assert(COLS % kPerVec == 0 && LD % kPerVec == 0, "16-byte rows in shared memory");
    static_assert(ROWS * kVecsPerRow % kThreads == 0, "every thread copies as many vectors");
#pragma unroll
    for (int i = 0; i < ROWS * kVecsPerRow / kThreads; ++i) {
      const int idx = threadIdx.x + i * kThreads;
      const int r = idx / kVecsPerRow;
      const int c = (idx % kVecsPerRow) * kPerVec;
      const int64_t gr = row0 + r;
      const int64_t gc = col0 + c;
      const bool inside = gr < num_rows && gc < num_cols;
      cp_async_16(dst + r * LD + c, inside ? src + gr * stride + gc : src, inside ? 16 : 0);
    }
  } else {
    const T zero = from_float<T>(0.f);
    // Unroll 4 spilled 14 B in the fp32 forward on sm_80, 8 spills the bf16 backward on sm_90.
    constexpr int kUnroll = sizeof(T) == 4 ? 8 : 4;
#pragma unroll kUnroll
    for (int idx = threadIdx.x; idx < ROWS * COLS; idx += kThreads) {
      const int r = idx / COLS;
      const int c = idx % COLS;
      const int64_t gr = row0 + r;
      const int64_t gc = col0 + c;
      dst[r * LD + c] = (gr < num_rows && gc < num_cols) ? src[gr * stride + gc] : zero;
    }
  }
}

// fp16 / bf16: each warp owns a 32 x kCols/2 quarter of the 64 x kCols output as 2 x kCols/32 WMMA
// accumulators.
template <typename T, int kCols>
struct WmmaTile {
  static constexpr int kFragsN = kCols / 32;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc[2][kFragsN];
  int row_base;
  int col_base;

  __device__ WmmaTile() {
    const int warp = threadIdx.x / 32;
    row_base = (warp / 2) * 32;
    col_base = (warp % 2) * (kCols / 2);
  }

  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) nvcuda::wmma::fill_fragment(acc[i][j], 0.f);
  }

  // acc += a[64][K] . b[kCols][K]^T  (both row-major with leading dimension LD)
  template <int K, int LD>
  __device__ void mma_abt(const T* a, const T* b) {
    using namespace nvcuda;
#pragma unroll
    for (int k = 0; k < K; k += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[kFragsN];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], a + (row_base + 16 * i) * LD + k, LD);
#pragma unroll
      for (int j = 0; j < kFragsN; ++j)
        wmma::load_matrix_sync(fb[j], b + (col_base + 16 * j) * LD + k, LD);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
  }

  // acc += a[64][K] . b[K][kCols]  (a row-major with leading dimension LDA, b row-major with LDB)
  template <int K, int LDA, int LDB>
  __device__ void mma_ab(const T* a, const T* b) {
    using namespace nvcuda;
#pragma unroll
    for (int k = 0; k < K; k += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb[kFragsN];
#pragma unroll
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(fa[i], a + (row_base + 16 * i) * LDA + k, LDA);
#pragma unroll
      for (int j = 0; j < kFragsN; ++j)
        wmma::load_matrix_sync(fb[j], b + k * LDB + col_base + 16 * j, LDB);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
  }

  // out[64][LD] (fp32, row-major) = acc
  template <int LD>
  __device__ void store(float* out) const {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < kFragsN; ++j)
        nvcuda::wmma::store_matrix_sync(out + (row_base + 16 * i) * LD + col_base + 16 * j,
                                        acc[i][j], LD, nvcuda::wmma::mem_row_major);
  }
};

// fp32: thread (ty, tx) = (tid / 16, tid % 16) owns rows ty + 8i (i < 8) and columns tx + 16j
// (j < kCols / 16) of the 64 x kCols output, 8 * kCols / 16 fp32 accumulators in registers.
template <int kCols>
struct FmaTile {
  static constexpr int kJ = kCols / 16;
  float acc[8][kJ];
  int ty;
  int tx;

  __device__ FmaTile() : ty(threadIdx.x / 16), tx(threadIdx.x % 16) {}

  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < kJ; ++j) acc[i][j] = 0.f;
  }

  template <int K, int LD>
  __device__ void mma_abt(const float* a, const float* b) {
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
      float av[8], bv[kJ];
#pragma unroll
      for (int i = 0; i < 8; ++i) av[i] = a[(ty + 8 * i) * LD + k];
#pragma unroll
      for (int j = 0; j < kJ; ++j) bv[j] = b[(tx + 16 * j) * LD + k];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < kJ; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }

  template <int K, int LDA, int LDB>
  __device__ void mma_ab(const float* a, const float* b) {
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
      float av[8], bv[kJ];
#pragma unroll
      for (int i = 0; i < 8; ++i) av[i] = a[(ty + 8 * i) * LDA + k];
#pragma unroll
      for (int j = 0; j < kJ; ++j) bv[j] = b[k * LDB + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < kJ; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }

  template <int LD>
  __device__ void store(float* out) const {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < kJ; ++j) out[(ty + 8 * i) * LD + tx + 16 * j] = acc[i][j];
  }
};

template <typename T, int kCols = kBlockN>
using TileMma = typename std::conditional<std::is_same<T, float>::value, FmaTile<kCols>,
                                          WmmaTile<T, kCols>>::type;

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

// The kernels' dynamic shared memory (ForwardSmem / BackwardSmem layouts). Tile pointers are formed
// from this symbol where they are used: a pointer kept in a struct member lost its shared address
// space and turned WMMA's fragment loads into generic LDs (64 per stage at bf16).
extern __shared__ __align__(128) unsigned char dynamic_smem[];

// The score tiles S[row tile, column tile] = zr[row0 : row0 + 64] . zc[col0 : col0 + 64]^T over all
// of D, as a two-stage pipeline of (column tile, kBlockD chunk) stages: while the warps multiply
// stage t's panels, stage t + 1's are in flight (cp.async with kVec, else loaded before the
// barrier).
// For D <= kResidentD the row tile is loaded once into its panels and stays; above, each stage
// reloads its row chunk into the stage's row panel. Call begin() once, then product() for the
// column tiles in order col0 = 0, 64, ...
template <typename T, bool kVec>
struct ScoreStages {
  using Cfg = TileConfig<T>;
  using Panel = PanelShape<T>;
  int rows_offset;  // byte offsets of the row and column panels in dynamic_smem
  int cols_offset;
  const T* zr;
  const T* zc;
  int64_t stride_zr, stride_zc, row0, M, C, D;
  int chunks;     // kBlockD chunks of D
  bool resident;  // the row tile stays in its panels
  int stage = 0;  // stages started so far: buffer stage & 1 holds the current one

  __device__ ScoreStages(int rows_offset_, int cols_offset_, const T* zr_, const T* zc_,
                         int64_t stride_zr_, int64_t stride_zc_, int64_t row0_, int64_t M_,
                         int64_t C_, int64_t D_)
      : rows_offset(rows_offset_), cols_offset(cols_offset_), zr(zr_), zc(zc_),
        stride_zr(stride_zr_), stride_zc(stride_zc_), row0(row0_), M(M_), C(C_), D(D_),
        chunks(static_cast<int>((D_ + Cfg::kBlockD - 1) / Cfg::kBlockD)),
        resident(D_ <= kResidentD) {}

  __device__ T* rows_panel(int i) const {
    return reinterpret_cast<T*>(dynamic_smem + rows_offset) + i * Panel::kElems;
  }
  __device__ T* cols_panel(int i) const {
    return reinterpret_cast<T*>(dynamic_smem + cols_offset) + i * Panel::kElems;
  }

  __device__ void load_stage(int64_t col0, int chunk, int buf) {
    const int64_t d0 = static_cast<int64_t>(chunk) * Cfg::kBlockD;
    if (!resident)
      load_tile<T, kVec, kBlockM, Cfg::kBlockD, Cfg::kLdIn>(rows_panel(buf), zr,
                                                           stride_zr, row0, M, d0, D);
    load_tile<T, kVec, kBlockN, Cfg::kBlockD, Cfg::kLdIn>(cols_panel(buf), zc,
                                                         stride_zc, col0, C, d0, D);
  }

  // Issues the resident row tile and the first stage.
  __device__ void begin() {
    if (resident)
      for (int chunk = 0; chunk < chunks; ++chunk)
        load_tile<T, kVec, kBlockM, Cfg::kBlockD, Cfg::kLdIn>(
            rows_panel(chunk), zr, stride_zr, row0, M,
            static_cast<int64_t>(chunk) * Cfg::kBlockD, D);
    if (chunks > 0) load_stage(0, 0, 0);
    cp_async_commit();
  }

  // scores += S[row tile, column tile at col0]. `first_chunk_loads()` issues loads the caller's
  // epilogue needs (it must commit its cp.async group); they complete before the first multiply.
  // Ends with a barrier: every warp is done with the previous epilogue's shared memory.
  template <class Mma, class Loads>
  __device__ void product(Mma& scores, int64_t col0, Loads&& first_chunk_loads) {
    if (chunks == 0) {
      first_chunk_loads();
      cp_async_wait<0>();
      __syncthreads();
      return;
    }
    for (int chunk = 0; chunk < chunks; ++chunk, ++stage) {
      if (chunk == 0) first_chunk_loads();
      const bool last = chunk + 1 == chunks;
      const int64_t next_col0 = last ? col0 + kBlockN : col0;
      if (next_col0 < C) load_stage(next_col0, last ? 0 : chunk + 1, (stage + 1) & 1);
      cp_async_commit();
      cp_async_wait<1>();  // everything but the stage just issued has landed
      __syncthreads();
      const int buf = stage & 1;
      scores.template mma_abt<Cfg::kBlockD, Cfg::kLdIn>(rows_panel(resident ? chunk : buf),
                                                        cols_panel(buf));
      __syncthreads();  // buffer `buf` is free for the stage after next
    }
  }
};

}  // namespace fastclr
