// cuDNN SDPA forward for one causal block (cudnn_attention.h). One graph per shape:
//   Q (1, H, q_rows, D), K and V (1, Hkv, kv_rows, D), all with the row-major token layout
//   of our buffers (strides: head D, token H*D or Hkv*D); O like Q; Stats (1, H, q_rows, 1).
//   SDPA: fp32 softmax and accumulation, attn_scale, padding mask with q_len / kv_len from
//   device memory, causal band with the diagonal aligned bottom right (per sequence, on
//   the actual lengths), softmax statistics out.
#include "backend/cuda/cudnn_attention.h"

#include <cudnn.h>
#include <cudnn_frontend.h>

#include <cstring>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>

#include "ringinfer/error.h"

namespace ringinfer::cuda {

namespace fe = cudnn_frontend;

namespace {

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kLenQ, kLenKv };

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, uint32_t>;

Key key_of(const SdpaShape& s) {
  uint32_t scale_bits;
  std::memcpy(&scale_bits, &s.scale, 4);
  return Key(s.q_rows, s.kv_rows, s.n_heads, s.n_kv_heads, s.head_dim, scale_bits);
}

std::string shape_text(const SdpaShape& s) {
  return "q_rows " + std::to_string(s.q_rows) + ", kv_rows " + std::to_string(s.kv_rows) + ", H " +
         std::to_string(s.n_heads) + "/" + std::to_string(s.n_kv_heads) + ", D " + std::to_string(s.head_dim);
}

std::shared_ptr<fe::graph::Graph> make_graph(const SdpaShape& s) {
  const int64_t H = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim, sq = s.q_rows, skv = s.kv_rows;
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto tensor = [&](const char* name, int64_t uid, int64_t heads, int64_t rows) {
    return g->tensor(fe::graph::Tensor_attributes()
                         .set_name(name)
                         .set_uid(uid)
                         .set_dim({1, heads, rows, D})
                         .set_stride({rows * heads * D, D, heads * D, 1}));
  };
  auto len = [&](const char* name, int64_t uid) {
    return g->tensor(fe::graph::Tensor_attributes()
                         .set_name(name)
                         .set_uid(uid)
                         .set_dim({1, 1, 1, 1})
                         .set_stride({1, 1, 1, 1})
                         .set_data_type(fe::DataType_t::INT32));
  };
  auto Q = tensor("Q", kQ, H, sq);
  auto K = tensor("K", kK, Hkv, skv);
  auto V = tensor("V", kV, Hkv, skv);
  auto opts = fe::graph::SDPA_attributes()
                  .set_name("ringinfer_block")
                  .set_generate_stats(true)
                  .set_attn_scale(s.scale)
                  .set_padding_mask(true)
                  .set_seq_len_q(len("len_q", kLenQ))
                  .set_seq_len_kv(len("len_kv", kLenKv))
                  .set_diagonal_alignment(fe::DiagonalAlignment_t::BOTTOM_RIGHT)
                  .set_diagonal_band_right_bound(0);
  auto [O, Stats] = g->sdpa(Q, K, V, opts);
  O->set_output(true).set_uid(kO).set_dim({1, H, sq, D}).set_stride({sq * H * D, D, H * D, 1});
  Stats->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT).set_dim({1, H, sq, 1}).set_stride(
      {H * sq, sq, 1, 1});
  return g;
}

void cudnn_check(cudnnStatus_t st, const char* what) {
  if (st != CUDNN_STATUS_SUCCESS)
    throw Error(std::string("cuda backend: cuDNN ") + what + ": " + cudnnGetErrorString(st));
}

}  // namespace

struct CudnnSdpa::Impl {
  struct Plan {
    std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN cannot take this shape
    int64_t workspace = 0;
  };
  cudnnHandle_t handle = nullptr;
  std::map<Key, Plan> plans;
  int64_t built = 0;
};

CudnnSdpa::CudnnSdpa() : impl_(new Impl) {
  const cudnnStatus_t st = cudnnCreate(&impl_->handle);
  if (st != CUDNN_STATUS_SUCCESS) {
    delete impl_;
    impl_ = nullptr;
    cudnn_check(st, "create");
  }
}

CudnnSdpa::~CudnnSdpa() {
  if (!impl_) return;
  impl_->plans.clear();
  if (impl_->handle) cudnnDestroy(impl_->handle);
  delete impl_;
}

int64_t CudnnSdpa::prepare(const SdpaShape& shape, std::string* why) {
  const Key key = key_of(shape);
  auto it = impl_->plans.find(key);
  if (it != impl_->plans.end()) return it->second.graph ? it->second.workspace : -1;
  // Distinct shapes come from distinct document lengths (kv_rows) and last chunks (q_rows):
  // bound the cache rather than let a long job of many lengths grow it without end.
  if (impl_->plans.size() >= 256) impl_->plans.clear();
  Impl::Plan plan;
  std::string failure;
  try {
    auto g = make_graph(shape);
    auto st = g->build(impl_->handle, {fe::HeurMode_t::A});
    if (st.is_good()) {
      int64_t ws = 0;
      auto wst = g->get_workspace_size(ws);
      if (wst.is_good()) {
        plan.graph = std::move(g);
        plan.workspace = ws;
        ++impl_->built;
      } else {
        failure = wst.get_message();
      }
    } else {
      failure = st.get_message();
    }
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (!plan.graph && why) *why = "cuDNN SDPA cannot take " + shape_text(shape) + ": " + failure;
  const int64_t ws = plan.graph ? plan.workspace : -1;
  impl_->plans.emplace(key, std::move(plan));
  return ws;
}

void CudnnSdpa::run(const SdpaShape& shape, const SdpaTensors& t, void* workspace, cudaStream_t stream) {
  auto it = impl_->plans.find(key_of(shape));
  if (it == impl_->plans.end() || !it->second.graph)
    throw Error("cuda backend: cuDNN SDPA run without a plan for " + shape_text(shape));
  cudnn_check(cudnnSetStream(impl_->handle, stream), "set stream");
  std::unordered_map<fe::graph::Tensor_attributes::uid_t, void*> pack = {
      {kQ, const_cast<void*>(t.q)},          {kK, const_cast<void*>(t.k)},
      {kV, const_cast<void*>(t.v)},          {kO, t.o},
      {kStats, t.stats},                     {kLenQ, const_cast<int32_t*>(t.lens)},
      {kLenKv, const_cast<int32_t*>(t.lens + 4)}};
  auto st = it->second.graph->execute(impl_->handle, pack, workspace);
  if (!st.is_good()) throw Error("cuda backend: cuDNN SDPA execute (" + shape_text(shape) + "): " + st.get_message());
}

int64_t CudnnSdpa::plans_built() const { return impl_ ? impl_->built : 0; }

int64_t cudnn_runtime_version() { return static_cast<int64_t>(cudnnGetVersion()); }

}  // namespace ringinfer::cuda
