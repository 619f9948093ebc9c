#include "ringinfer/result_codec.h"

#include <cstring>

#include "ringinfer/error.h"

namespace ringinfer {
namespace {

// The tag names the record layout: a field added to a result bumps its digit, so a
// record of an older layout (a journal left by an earlier build) is refused by name
// rather than misread. "RUN1"/"SCO1" lacked the per-document metrics (tokens_per_rank,
// score seconds).
constexpr uint32_t kRunTag = 0x52554e32;       // "RUN2"
constexpr uint32_t kScoreTag = 0x53434f32;     // "SCO2"
constexpr uint32_t kOldRunTag = 0x52554e31;    // "RUN1"
constexpr uint32_t kOldScoreTag = 0x53434f31;  // "SCO1"

// Checks the leading tag; an older layout of the same kind gets its own message.
void check_tag(uint32_t tag, uint32_t want, uint32_t old, const char* kind, const char* old_name,
               const std::string& what) {
  if (tag == want) return;
  if (tag == old)
    throw Error(what + ": not a " + kind + " result record of this version (found an older " + old_name +
                " record, written by an earlier ringinfer; delete the journal to start over)");
  throw Error(what + ": not a " + kind + " result record");
}

class Writer {
 public:
  template <class T>
  void pod(const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    out.insert(out.end(), s.begin(), s.end());
  }
  template <class T>
  void vec(const std::vector<T>& v) {
    pod<uint64_t>(v.size());
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    out.insert(out.end(), p, p + v.size() * sizeof(T));
  }
  Bytes out;
};

class Reader {
 public:
  Reader(const uint8_t* d, size_t n, const std::string& what) : d_(d), n_(n), what_(what) {}
  template <class T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, d_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str() {
    const uint64_t len = pod<uint64_t>();
    need(len);
    std::string s(reinterpret_cast<const char*>(d_ + pos_), len);
    pos_ += len;
    return s;
  }
  template <class T>
  std::vector<T> vec() {
    const uint64_t count = pod<uint64_t>();
    RI_CHECK(count <= (n_ - pos_) / sizeof(T), what_ + ": record truncated or corrupt (array of " +
                                                    std::to_string(count) + " elements)");
    std::vector<T> v(count);
    if (count) std::memcpy(v.data(), d_ + pos_, count * sizeof(T));  // data() of an empty vector may be null
    pos_ += count * sizeof(T);
    return v;
  }
  void done() const { RI_CHECK(pos_ == n_, what_ + ": record has " + std::to_string(n_ - pos_) + " trailing bytes"); }

 private:
  void need(uint64_t k) const {
    RI_CHECK(k <= n_ - pos_, what_ + ": record truncated or corrupt");
  }
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
  std::string what_;
};

}  // namespace

Bytes encode_result(int64_t doc_index, const RunResult& r) {
  Writer w;
  w.pod(kRunTag);
  w.pod(doc_index);
  w.str(r.id);
  w.pod(r.prompt_tokens);
  w.vec(r.generated);
  w.str(r.text);
  w.str(r.finish_reason);
  w.pod(r.prefill_seconds);
  w.pod(r.decode_tokens_per_second);
  w.pod(r.tokens_per_rank);
  return std::move(w.out);
}

Bytes encode_result(int64_t doc_index, const ScoreResult& r) {
  Writer w;
  w.pod(kScoreTag);
  w.pod(doc_index);
  w.str(r.id);
  w.vec(r.token_logprobs);
  w.pod(r.perplexity);
  w.pod(r.seconds);
  w.pod(r.tokens_per_rank);
  return std::move(w.out);
}

int64_t decode_result(const uint8_t* data, size_t size, RunResult& r, const std::string& what) {
  Reader in(data, size, what);
  check_tag(in.pod<uint32_t>(), kRunTag, kOldRunTag, "run", "RUN1", what);
  const int64_t index = in.pod<int64_t>();
  r.id = in.str();
  r.prompt_tokens = in.pod<int64_t>();
  r.generated = in.vec<int32_t>();
  r.text = in.str();
  r.finish_reason = in.str();
  r.prefill_seconds = in.pod<double>();
  r.decode_tokens_per_second = in.pod<double>();
  r.tokens_per_rank = in.pod<int64_t>();
  in.done();
  return index;
}

int64_t decode_result(const uint8_t* data, size_t size, ScoreResult& r, const std::string& what) {
  Reader in(data, size, what);
  check_tag(in.pod<uint32_t>(), kScoreTag, kOldScoreTag, "score", "SCO1", what);
  const int64_t index = in.pod<int64_t>();
  r.id = in.str();
  r.token_logprobs = in.vec<float>();
  r.perplexity = in.pod<double>();
  r.seconds = in.pod<double>();
  r.tokens_per_rank = in.pod<int64_t>();
  in.done();
  return index;
}

}  // namespace ringinfer
