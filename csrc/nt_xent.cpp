// Torch binding of the fused NT-Xent primitives (contract: fastclr/ops/chunked.py).
//
//   forward_rows(zr, zc, row_ids, inv_temp, lse=None, pos_logit=None, lse_neg=None)
//       -> (lse [M], pos_logit [M], lse_neg [M])
//   backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp, grad=None) -> grad_zr [M, D]
//
// zr [M, D] and zc [C, D]: normalized rows/columns, fp32, fp16 or bf16, same dtype and device,
// contiguous; row_ids [M] int64 (zr[i] == zc[row_ids[i]]); C even. Outputs are fp32; the optional
// output tensors let tests pass poisoned buffers. Every check runs before any CUDA call, shapes and
// dtypes before devices, so a wrong call fails with a message naming the argument, never a crash.
//
// Numbers in those messages are formatted to strings here (to_text), never streamed: on the H200
// machine's image (torch 2.11.0+cu130, 2026-11-30) streaming an integer from this extension's
// message code segfaulted (cuda-gdb: c10::operator<<(ostream&, ArrayRef<long>) ->
// ostream::_M_insert<long>), while strings, dtypes and devices printed fine.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "nt_xent_params.h"

#define CHECK_CUDA(x) \
  TORCH_CHECK_VALUE((x).is_cuda(), #x " must be a CUDA tensor, got one on ", (x).device())
#define CHECK_CONTIGUOUS(x) \
  TORCH_CHECK_VALUE((x).is_contiguous(), #x " must be contiguous (call .contiguous() first)")
#define CHECK_SHAPE(x, ...)                                                                  \
  TORCH_CHECK_VALUE((x).sizes() == at::IntArrayRef({__VA_ARGS__}), #x " must have shape ",  \
                    to_text(at::IntArrayRef({__VA_ARGS__})), ", got ", to_text((x).sizes()))
#define CHECK_DTYPE(x, dtype, name) \
  TORCH_CHECK_TYPE((x).scalar_type() == (dtype), #x " must be " name ", got ", (x).scalar_type())
#define CHECK_SAME_DEVICE(x, ref)                                                           \
  TORCH_CHECK_VALUE((x).device() == (ref).device(), #x " must be on ", (ref).device(),     \
                    " like " #ref ", got ", (x).device())

namespace {

using fastclr::NtXentDtype;

std::string to_text(int64_t value) { return std::to_string(value); }

std::string to_text(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

std::string to_text(at::IntArrayRef shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

NtXentDtype compute_dtype(const at::Tensor& zr, const at::Tensor& zc) {
  TORCH_CHECK_TYPE(zc.scalar_type() == zr.scalar_type(), "zc must have the dtype of zr (",
                   zr.scalar_type(), "), got ", zc.scalar_type());
  switch (zr.scalar_type()) {
    case at::kFloat:
      return NtXentDtype::kFloat32;
    case at::kHalf:
      return NtXentDtype::kFloat16;
    case at::kBFloat16:
      return NtXentDtype::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "zr must be float32, float16 or bfloat16, got ", zr.scalar_type(),
                       " (the cuda backend has no float64 kernels: use backend='chunked')");
  }
}

// Shapes and dtypes of the inputs both primitives share (no device access); returns the dtype.
NtXentDtype check_shapes_and_dtypes(const at::Tensor& zr, const at::Tensor& zc,
                                    const at::Tensor& row_ids, double inv_temp) {
  TORCH_CHECK_VALUE(zr.dim() == 2, "zr must be 2-D [M, D], got shape ", to_text(zr.sizes()));
  TORCH_CHECK_VALUE(zc.dim() == 2, "zc must be 2-D [C, D], got shape ", to_text(zc.sizes()));
  TORCH_CHECK_VALUE(zc.size(1) == zr.size(1), "zc must have zr's feature size D = ",
                    to_text(zr.size(1)), ", got shape ", to_text(zc.sizes()));
  TORCH_CHECK_VALUE(zc.size(0) >= 2 && zc.size(0) % 2 == 0,
                    "zc must have an even number of rows C = 2N >= 2 (both views), got ",
                    to_text(zc.size(0)));
  CHECK_SHAPE(row_ids, zr.size(0));
  const NtXentDtype dtype = compute_dtype(zr, zc);
  CHECK_DTYPE(row_ids, at::kLong, "int64");
  TORCH_CHECK_VALUE(std::isfinite(inv_temp) && inv_temp > 0,
                    "inv_temp must be a finite positive number (1 / temperature), got ",
                    to_text(inv_temp));
  return dtype;
}

// Devices and layout of the shared inputs, checked after shapes and dtypes.
void check_placement(const at::Tensor& zr, const at::Tensor& zc, const at::Tensor& row_ids) {
  CHECK_CUDA(zr);
  CHECK_SAME_DEVICE(zc, zr);
  CHECK_SAME_DEVICE(row_ids, zr);
  CHECK_CONTIGUOUS(zr);
  CHECK_CONTIGUOUS(zc);
  CHECK_CONTIGUOUS(row_ids);
}

// An fp32 output of `shape` on zr's device: the caller's tensor after checks, or a new one.
at::Tensor output_or_new(const std::optional<at::Tensor>& out, const char* name,
                         at::IntArrayRef shape, const at::Tensor& zr) {
  if (!out.has_value()) return at::empty(shape, zr.options().dtype(at::kFloat));
  const at::Tensor& t = *out;
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", to_text(shape), ", got ",
                    to_text(t.sizes()));
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == zr.device(), name, " must be on ", zr.device(), " like zr, got ",
                    t.device());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
  return t;
}

// The kernels copy tiles with 16-byte cp.async when every row of zr and zc starts on a 16-byte
// boundary (contiguous rows: aligned base pointers and D * element size % 16 == 0, i.e. D % 8 == 0
// for fp16/bf16, D % 4 == 0 for fp32); otherwise they load element-wise.
bool rows_16_byte_aligned(const at::Tensor& zr, const at::Tensor& zc) {
  const int64_t row_bytes = zr.size(1) * static_cast<int64_t>(zr.element_size());
  return row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(zr.data_ptr()) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(zc.data_ptr()) % 16 == 0;
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "fastclr ", what, " kernel launch failed: ",
              cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_rows(
    const at::Tensor& zr, const at::Tensor& zc, const at::Tensor& row_ids, double inv_temp,
    const std::optional<at::Tensor>& lse_out, const std::optional<at::Tensor>& pos_logit_out,
    const std::optional<at::Tensor>& lse_neg_out) {
  const NtXentDtype dtype = check_shapes_and_dtypes(zr, zc, row_ids, inv_temp);
  check_placement(zr, zc, row_ids);
  const int64_t M = zr.size(0);
  at::Tensor lse = output_or_new(lse_out, "lse", {M}, zr);
  at::Tensor pos_logit = output_or_new(pos_logit_out, "pos_logit", {M}, zr);
  at::Tensor lse_neg = output_or_new(lse_neg_out, "lse_neg", {M}, zr);

  const c10::cuda::CUDAGuard device_guard(zr.device());
  fastclr::NtXentForwardParams p{};
  p.zr = zr.data_ptr();
  p.zc = zc.data_ptr();
  p.row_ids = row_ids.data_ptr<int64_t>();
  p.lse = lse.data_ptr<float>();
  p.pos_logit = pos_logit.data_ptr<float>();
  p.lse_neg = lse_neg.data_ptr<float>();
  p.stride_zr = zr.size(1);
  p.stride_zc = zc.size(1);
  p.M = M;
  p.C = zc.size(0);
  p.D = zc.size(1);
  p.inv_temp = static_cast<float>(inv_temp);
  p.aligned16 = rows_16_byte_aligned(zr, zc);
  check_launch(fastclr::nt_xent_forward(p, dtype, c10::cuda::getCurrentCUDAStream().stream()),
               "nt_xent forward");
  return {lse, pos_logit, lse_neg};
}

at::Tensor backward_rows(const at::Tensor& zr, const at::Tensor& zc, const at::Tensor& row_ids,
                         const at::Tensor& lse_c, const at::Tensor& lse_neg_c,
                         const at::Tensor& g_c, double inv_temp,
                         const std::optional<at::Tensor>& grad_out) {
  const NtXentDtype dtype = check_shapes_and_dtypes(zr, zc, row_ids, inv_temp);
  const int64_t C = zc.size(0);
  CHECK_SHAPE(lse_c, C);
  CHECK_SHAPE(lse_neg_c, C);
  CHECK_SHAPE(g_c, C);
  CHECK_DTYPE(lse_c, at::kFloat, "float32");
  CHECK_DTYPE(lse_neg_c, at::kFloat, "float32");
  CHECK_DTYPE(g_c, at::kFloat, "float32");
  check_placement(zr, zc, row_ids);
  CHECK_SAME_DEVICE(lse_c, zr);
  CHECK_SAME_DEVICE(lse_neg_c, zr);
  CHECK_SAME_DEVICE(g_c, zr);
  CHECK_CONTIGUOUS(lse_c);
  CHECK_CONTIGUOUS(lse_neg_c);
  CHECK_CONTIGUOUS(g_c);
  const int64_t M = zr.size(0);
  const int64_t D = zr.size(1);
  // The backward's grid has one y block per 64 (fp32) or 128 gradient columns (kBlockDOut).
  TORCH_CHECK_VALUE(D <= int64_t{65535} * 64, "zr has too many features for the grid: D = ",
                    to_text(D));
  at::Tensor grad = output_or_new(grad_out, "grad", {M, D}, zr);

  const c10::cuda::CUDAGuard device_guard(zr.device());
  fastclr::NtXentBackwardParams p{};
  p.zr = zr.data_ptr();
  p.zc = zc.data_ptr();
  p.row_ids = row_ids.data_ptr<int64_t>();
  p.lse_c = lse_c.data_ptr<float>();
  p.lse_neg_c = lse_neg_c.data_ptr<float>();
  p.g_c = g_c.data_ptr<float>();
  p.grad = grad.data_ptr<float>();
  p.stride_zr = D;
  p.stride_zc = D;
  p.stride_grad = D;
  p.M = M;
  p.C = C;
  p.D = D;
  p.inv_temp = static_cast<float>(inv_temp);
  p.aligned16 = rows_16_byte_aligned(zr, zc);
  check_launch(fastclr::nt_xent_backward(p, dtype, c10::cuda::getCurrentCUDAStream().stream()),
               "nt_xent backward");
  return grad;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastclr fused NT-Xent primitives (CUDA): forward_rows and backward_rows";
  m.def("forward_rows", &forward_rows,
        "Per-row masked log-sum-exps and positive logit: (lse, pos_logit, lse_neg), [M] fp32 each",
        py::arg("zr"), py::arg("zc"), py::arg("row_ids"), py::arg("inv_temp"),
        py::arg("lse") = py::none(), py::arg("pos_logit") = py::none(),
        py::arg("lse_neg") = py::none());
  m.def("backward_rows", &backward_rows,
        "Gradient of sum_j g_j loss_j with respect to zr: [M, D] fp32", py::arg("zr"),
        py::arg("zc"), py::arg("row_ids"), py::arg("lse_c"), py::arg("lse_neg_c"), py::arg("g_c"),
        py::arg("inv_temp"), py::arg("grad") = py::none());
}
