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
  f.dir = source_dir() + "/tests/fixtures/models/" + name;
  f.model = load_model(f.dir);
  std::ifstream in(f.dir + "/reference.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  for (const auto& d : j.at("documents")) {
    f.docs.push_back(d.at("tokens").get<std::vector<int32_t>>());
    f.logprobs.push_back(d.at("logprobs").get<std::vector<double>>());
  }
  f.greedy_prompt = j.at("greedy").at("prompt").get<std::vector<int32_t>>();
  return cache.emplace(name, std::move(f)).first->second;
}

std::vector<int32_t> prefix(const std::vector<int32_t>& d, size_t n) { return {d.begin(), d.begin() + n}; }

std::vector<int32_t> stripe_of(const std::vector<int32_t>& d, int r, int N) {
  std::vector<int32_t> out;
  for (size_t t = static_cast<size_t>(r); t < d.size(); t += static_cast<size_t>(N)) out.push_back(d[t]);
  return out;
}

double rel_diff(double a, double b) { return std::fabs(a - b) / std::max(1.0, std::fabs(b)); }

int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

bool all_ranks(bool ok) {
  int v = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&v, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

void use_one_thread() {
  omp_set_num_threads(1);
  openblas_set_num_threads(1);
}

}  // namespace ringinfer::test
