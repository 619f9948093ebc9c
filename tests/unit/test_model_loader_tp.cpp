// Tensor-parallel weight reads: read_weights(model, slice) must equal the matching rows or
// columns of the whole tensors read by read_weights(model), for safetensors and for GGUF
// (F32 and quantized blocks, where o/down column ranges cut blocks, and the Q/K rows whose
// llama.cpp permutation is undone per head), at T = 1, 2, 4; the slice arithmetic and its
// errors.
#include <gtest/gtest.h>

#include "gtest_helpers.h"
#include "model_files.h"
#include "ringinfer/error.h"
#include "ringinfer/model_loader.h"
#include "test_paths.h"

using namespace ringinfer;
using namespace ringinfer::test;

namespace {


HostTensor cut_rows(const HostTensor& t, RowRange r) {
  const int64_t row = t.shape.size() > 1 ? t.shape[1] : 1;
  HostTensor o;
  o.shape = t.shape;
  o.shape[0] = r.end - r.begin;
  o.data.assign(t.data.begin() + r.begin * row, t.data.begin() + r.end * row);
  return o;
}

HostTensor cut_cols(const HostTensor& t, RowRange c) {
  HostTensor o;
  o.shape = {t.shape[0], c.end - c.begin};
  for (int64_t i = 0; i < t.shape[0]; ++i)
    o.data.insert(o.data.end(), t.data.begin() + i * t.shape[1] + c.begin, t.data.begin() + i * t.shape[1] + c.end);
  return o;
}

void expect_same(const HostTensor& got, const HostTensor& want, const std::string& what) {
  EXPECT_EQ(got.shape, want.shape) << what;
  EXPECT_EQ(got.data, want.data) << what;  // the same bytes decoded the same way: exact
}

// Every sharded tensor of each rank's slice against the whole model's.
void check_slices(const ModelSource& src, const std::string& label) {
  const ModelConfig& c = src.config;
  const ModelWeights whole = read_weights(src);
  for (int T : {1, 2, 4}) {
    int64_t vocab_total = 0;
    for (int r = 0; r < T; ++r) {
      const TensorParallelSlice sl = tensor_parallel_slice(c, r, T);
      const ModelWeights part = read_weights(src, sl);
      const std::string at = label + " T " + std::to_string(T) + " rank " + std::to_string(r) + ": ";
      const int64_t D = c.head_dim;
      expect_same(part.embed, whole.embed, at + "embed");
      expect_same(part.final_norm, whole.final_norm, at + "norm");
      if (c.tie_word_embeddings) {
        EXPECT_TRUE(part.lm_head.empty());
      } else {
        expect_same(part.lm_head, cut_rows(whole.lm_head, sl.vocab_range()), at + "lm_head");
      }
      vocab_total += sl.vocab_rows;
      for (int64_t l = 0; l < c.n_layers; ++l) {
        const LayerWeights &P = part.layers[l], &W = whole.layers[l];
        const std::string ln = at + "layer " + std::to_string(l) + " ";
        expect_same(P.wq, cut_rows(W.wq, sl.q_rows(D)), ln + "q");
        expect_same(P.wk, cut_rows(W.wk, sl.kv_rows(D)), ln + "k");
        expect_same(P.wv, cut_rows(W.wv, sl.kv_rows(D)), ln + "v");
        if (c.qkv_bias) {
          expect_same(P.bq, cut_rows(W.bq, sl.q_rows(D)), ln + "bq");
          expect_same(P.bk, cut_rows(W.bk, sl.kv_rows(D)), ln + "bk");
          expect_same(P.bv, cut_rows(W.bv, sl.kv_rows(D)), ln + "bv");
        }
        expect_same(P.wo, cut_cols(W.wo, sl.q_rows(D)), ln + "o");
        expect_same(P.w_gate, cut_rows(W.w_gate, sl.inter_rows()), ln + "gate");
        expect_same(P.w_up, cut_rows(W.w_up, sl.inter_rows()), ln + "up");
        expect_same(P.w_down, cut_cols(W.w_down, sl.inter_rows()), ln + "down");
        expect_same(P.attn_norm, W.attn_norm, ln + "attn_norm");
        expect_same(P.ffn_norm, W.ffn_norm, ln + "ffn_norm");
        // Exactly 1/T of each sharded tensor.
        EXPECT_EQ(P.wq.numel() * T, W.wq.numel()) << ln;
        EXPECT_EQ(P.w_down.numel() * T, W.w_down.numel()) << ln;
      }
    }
    EXPECT_EQ(vocab_total, c.vocab_size) << label << " T " << T;
  }
}

}  // namespace

TEST(TensorParallelLoad, SafetensorsSlicesEqualTheWholeTensorsParts) {
  std::mt19937_64 rng(11);
  for (bool bias : {false, true}) {
    const TinyModel m = make_tiny_model(rng, 2, bias, /*tied=*/bias);
    const std::string dir = make_temp_dir("tp_st");
    write_tiny_hf(dir, m);
    check_slices(open_model(dir), bias ? "safetensors bias tied" : "safetensors");
  }
}

TEST(TensorParallelLoad, GgufSlicesEqualTheWholeTensorsPartsForPlainAndQuantizedBlocks) {
  std::mt19937_64 rng(12);
  for (bool bias : {false, true}) {
    const TinyModel m = make_tiny_model(rng, 1, bias, /*tied=*/!bias);
    for (uint32_t type : {kGF32, kGF16, kGQ8_0, kGQ4_1}) {
      std::map<std::string, std::vector<double>> expected;
      const std::string path = make_temp_dir("tp_gguf") + "/m.gguf";
      write_bytes(path, tiny_gguf(m, type, 3, &expected));
      const ModelSource src = open_model(path);
      check_slices(src, "gguf type " + std::to_string(type) + (bias ? " bias" : ""));
      // And the whole read equals the writer's own values (the un-permutation is right).
      const ModelWeights whole = read_weights(src);
      const auto& q = expected.at("model.layers.0.self_attn.q_proj.weight");
      ASSERT_EQ(whole.layers[0].wq.data.size(), q.size());
      for (size_t i = 0; i < q.size(); ++i) ASSERT_EQ(static_cast<double>(whole.layers[0].wq.data[i]), q[i]) << i;
    }
  }
}

TEST(TensorParallelLoad, SliceArithmetic) {
  ModelConfig c;
  c.n_heads = 8, c.n_kv_heads = 2, c.head_dim = 4, c.intermediate_size = 24, c.vocab_size = 10, c.hidden_size = 32;
  // T = 4 > Hkv = 2: ranks 0,1 read KV head 0, ranks 2,3 KV head 1.
  for (int r = 0; r < 4; ++r) {
    const TensorParallelSlice s = tensor_parallel_slice(c, r, 4);
    EXPECT_EQ(s.q_heads, 2);
    EXPECT_EQ(s.q_head_begin, 2 * r);
    EXPECT_EQ(s.kv_heads, 1);
    EXPECT_EQ(s.kv_head_begin, r / 2);
    EXPECT_EQ(s.inter, 6);
    EXPECT_EQ(s.inter_begin, 6 * r);
    EXPECT_EQ(s.vocab_part, 3);
    EXPECT_EQ(s.vocab_begin, 3 * r);
    EXPECT_EQ(s.vocab_rows, r == 3 ? 1 : 3);
  }
  // T = 2 <= Hkv: one KV head each.
  EXPECT_EQ(tensor_parallel_slice(c, 1, 2).kv_head_begin, 1);
  EXPECT_EQ(tensor_parallel_slice(c, 1, 2).kv_heads, 1);
}

TEST(TensorParallelLoad, ModelsThatCannotBeSplitAreRefused) {
  ModelConfig c;
  c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 4, c.intermediate_size = 24, c.vocab_size = 100, c.hidden_size = 16;
  EXPECT_EQ(error_of([&] { tensor_parallel_slice(c, 0, 3); }),
            "--tp 3: the model's 4 query heads are not divisible by 3");
  c.n_heads = 12;
  c.intermediate_size = 36;
  EXPECT_EQ(error_of([&] { tensor_parallel_slice(c, 0, 3); }),
            "--tp 3: the model's 4 key/value heads neither divide into nor evenly replicate over 3 ranks");
  c.n_kv_heads = 6;
  c.intermediate_size = 20;
  EXPECT_EQ(error_of([&] { tensor_parallel_slice(c, 0, 3); }),
            "--tp 3: the model's intermediate size 20 is not divisible by 3");
  c.intermediate_size = 24;
  c.vocab_size = 4;  // ceil(4/3) = 2: rank 2 would own no row
  EXPECT_EQ(error_of([&] { tensor_parallel_slice(c, 0, 3); }),
            "--tp 3: the model's vocabulary of 4 tokens leaves a rank without LM-head rows");
  EXPECT_EQ(error_of([&] { tensor_parallel_slice(c, 0, 0); }), "--tp must be at least 1 (got 0)");
}
