// make_test_shard: writes input-shard fixtures for shell e2e tests.
//
//   make_test_shard valid OUT.h5 [--docs 3] [--lengths 5,0,17] [--vocab 1000] [--seed 1]
//                                [--id-prefix a] [--tokenizer NAME]
//       a valid shard of random tokens; prints "<id> <length>" per document
//   make_test_shard VARIANT OUT.h5
//       a malformed shard (some variants also write OUT-b.h5); prints three lines:
//       the files to open (space-separated), the vocabulary to open with (-1: none),
//       and the exact error `ringinfer run` must report ("prefix: " first when only a
//       prefix is fixed; "on-read: " first when the error comes while reading tokens;
//       "accepted" when run reads the file: variable-length strings, h5py's defaults)
//   make_test_shard list
//       prints "VARIANT<TAB>description" per malformed variant
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "ringinfer/error.h"
#include "shard_fixture.h"

namespace {

int usage() {
  std::cerr << "usage: make_test_shard valid OUT.h5 [--docs N] [--lengths L1,L2,...] [--vocab V] [--seed S]\n"
               "                       [--id-prefix P] [--tokenizer NAME]\n"
               "       make_test_shard VARIANT OUT.h5\n"
               "       make_test_shard list\n";
  return 2;
}

std::vector<int64_t> parse_lengths(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoll(item));
  return out;
}

int write_valid(const std::string& path, int argc, char** argv) {
  int64_t docs = -1, vocab = 1000;
  uint64_t seed = 1;
  std::string prefix = "doc", tokenizer = "test-tokenizer";
  std::vector<int64_t> lengths;
  for (int i = 0; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return usage();
    const std::string v = argv[i + 1];
    if (flag == "--docs") docs = std::stoll(v);
    else if (flag == "--lengths") lengths = parse_lengths(v);
    else if (flag == "--vocab") vocab = std::stoll(v);
    else if (flag == "--seed") seed = std::stoull(v);
    else if (flag == "--id-prefix") prefix = v;
    else if (flag == "--tokenizer") tokenizer = v;
    else return usage();
  }
  if (lengths.empty()) {
    // No lengths: `docs` documents of pseudo-random lengths 1..64 from the seed.
    if (docs < 0) docs = 3;
    uint64_t x = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    for (int64_t d = 0; d < docs; ++d) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      lengths.push_back(1 + static_cast<int64_t>((x >> 33) % 64));
    }
  } else if (docs >= 0 && docs != static_cast<int64_t>(lengths.size())) {
    std::cerr << "make_test_shard: --docs " << docs << " but --lengths has " << lengths.size() << " entries\n";
    return 2;
  }
  auto data = ringinfer::test::random_shard_data(lengths, vocab, seed, prefix);
  data.tokenizer = tokenizer;
  ringinfer::test::write_valid_shard(path, data);
  for (size_t d = 0; d < data.docs.size(); ++d) std::cout << data.ids[d] << " " << data.docs[d].size() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string what = argv[1];
  try {
    if (what == "list") {
      for (const auto& c : ringinfer::test::malformed_cases()) std::cout << c.name << "\t" << c.description << "\n";
      return 0;
    }
    if (argc < 3) return usage();
    const std::string path = argv[2];
    if (what == "valid") return write_valid(path, argc - 3, argv + 3);
    if (argc != 3) return usage();
    const auto m = ringinfer::test::write_malformed(what, path);
    for (size_t i = 0; i < m.paths.size(); ++i) std::cout << (i ? " " : "") << m.paths[i];
    std::cout << "\n" << m.vocab_size << "\n"
              << (m.checked_message.empty() ? "accepted"
                                            : std::string(m.on_read ? "on-read: " : "") + (m.prefix_only ? "prefix: " : "") +
                                                  m.checked_message)
              << "\n";
    return 0;
  } catch (const std::invalid_argument& e) {
    const std::string why = e.what();
    std::cerr << "make_test_shard: " << why << (why.rfind("unknown", 0) == 0 ? " (see make_test_shard list)" : "")
              << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "make_test_shard: " << e.what() << "\n";
    return 1;
  }
}
