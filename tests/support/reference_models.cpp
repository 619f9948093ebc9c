#include "reference_models.h"

#include <mpi.h>
#include <omp.h>

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "test_paths.h"

namespace ringinfer::test {

const ReferenceModel& reference_model(const std::string& name) {
  static std::map<std::string, ReferenceModel> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  ReferenceModel f;
  f.dir = reference_model_dir(name);
  f.model = load_model(reference_model_path(name));
  std::ifstream in(f.dir + "/reference.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  for (const auto& d : j.at("documents")) {
    f.docs.push_back(d.at("tokens").get<std::vector<int32_t>>());
    f.logprobs.push_back(d.at("logprobs").get<std::vector<double>>());
  }
  f.greedy_prompt = j.at("greedy").at("prompt").get<std::vector<int32_t>>();
  return cache.emplace(name, std::move(f)).first->second;
}

std::string reference_model_path(const std::string& name) { return source_dir() + "/tests/fixtures/models/" + name; }
std::string reference_model_dir(const std::string& name) { return reference_model_path(name.substr(0, name.find('/'))); }

std::vector<int32_t> prefix(const std::vector<int32_t>& d, size_t n) { return {d.begin(), d.begin() + n}; }

std::vector<int32_t> stripe_of(const std::vector<int32_t>& d, int r, int N) {
  std::vector<int32_t> out;
  for (size_t t = static_cast<size_t>(r); t < d.size(); t += static_cast<size_t>(N)) out.push_back(d[t]);
  return out;
}

std::map<uint64_t, GenerateResult> decode_batched(Engine& engine, const std::vector<BatchDoc>& docs, int r, int N,
                                                  const std::function<void(const FinishedDocument&)>& on_finished,
                                                  int64_t* largest) {
  std::map<uint64_t, GenerateResult> out;
  size_t next = 0;
  if (largest) *largest = 0;
  while (next < docs.size() || engine.batch_size() > 0) {
    if (next < docs.size() && engine.batch_size() < engine.max_batch()) {
      const BatchDoc& d = docs[next];
      engine.join(stripe_of(d.prompt, r, N), static_cast<int64_t>(d.prompt.size()), d.options, next);
      ++next;
    } else {
      engine.step();
    }
    if (largest) *largest = std::max(*largest, engine.batch_size());
    for (FinishedDocument& f : engine.take_finished()) {
      if (on_finished) on_finished(f);
      out[f.tag] = std::move(f.result);
    }
  }
  return out;
}

double rel_diff(double a, double b) { return std::fabs(a - b) / std::max(1.0, std::fabs(b)); }

void use_one_thread() {
  omp_set_num_threads(1);
  openblas_set_num_threads(1);
}

ParallelGroups world_groups(int cp, int tp) {
  return make_parallel_groups(make_parallel_layout(world_size(), world_rank(), cp, tp), MPI_COMM_WORLD);
}

EngineOptions group_engine_options(const ParallelGroups& g) {
  EngineOptions o;
  o.cp_rank = g.layout.cp_rank;
  o.cp_size = g.layout.cp;
  o.cp_comm = g.cp.get();
  o.tp_rank = g.layout.tp_rank;
  o.tp_size = g.layout.tp;
  o.tp_comm = g.tp.get();
  return o;
}

}  // namespace ringinfer::test
