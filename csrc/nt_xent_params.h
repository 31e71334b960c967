// Plain parameter structs and launcher declarations shared by the torch binding (nt_xent.cpp) and
// the kernel files (nt_xent_forward.cu, nt_xent_backward.cu). No torch headers here: the .cu files
// include this and must compile without them (torch headers in a .cu file took ~170 s to compile here
// against ~37 s without them).
//
// The contract is fastclr/ops/chunked.py. Rows zr [M, D] are a subset of the columns zc [C, D]
// (row i is column row_ids[i]); both are L2-normalized and in the compute dtype; C is even.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace fastclr {

enum class NtXentDtype { kFloat32, kFloat16, kBFloat16 };

struct NtXentForwardParams {
  const void* zr;          // [M, D], compute dtype, row stride stride_zr (elements), unit column stride
  const void* zc;          // [C, D], compute dtype, row stride stride_zc
  const int64_t* row_ids;  // [M], global column index of each row
  float* lse;              // [M] out: log sum_{k != row_ids[i]} exp(inv_temp <zr_i, zc_k>)
  float* pos_logit;        // [M] out: inv_temp <zr_i, zc_{(row_ids[i] + C/2) % C}>
  float* lse_neg;          // [M] out: lse without the positive column (-inf when C = 2)
  int64_t stride_zr;
  int64_t stride_zc;
  int64_t M;
  int64_t C;
  int64_t D;
  float inv_temp;
  bool aligned16;          // every zr/zc row starts 16-byte aligned and D * sizeof(T) % 16 == 0:
                           // the kernels copy tiles with 16-byte cp.async, else element-wise
};

struct NtXentBackwardParams {
  const void* zr;          // [M, D], as in the forward
  const void* zc;          // [C, D]
  const int64_t* row_ids;  // [M]
  const float* lse_c;      // [C], log-sum-exp of every global row
  const float* lse_neg_c;  // [C], its negatives-only log-sum-exp
  const float* g_c;        // [C], upstream gradient of every global row's loss
  float* grad;             // [M, D] out, row stride stride_grad
  int64_t stride_zr;
  int64_t stride_zc;
  int64_t stride_grad;
  int64_t M;
  int64_t C;
  int64_t D;
  float inv_temp;
  bool aligned16;          // as in the forward
};

// Launch on `stream`; return the launch error (cudaSuccess when nothing had to run).
cudaError_t nt_xent_forward(const NtXentForwardParams& params, NtXentDtype dtype,
                            cudaStream_t stream);
cudaError_t nt_xent_backward(const NtXentBackwardParams& params, NtXentDtype dtype,
                             cudaStream_t stream);

}  // namespace fastclr
