#pragma once
// Validating input shards in a child process before any rank opens them: libhdf5 1.10
// can crash on a corrupt file (tests/fuzz/libhdf5-crashes/), and a crash in a child is
// an error message naming the file instead of a dead MPI job.
#include <cstdint>
#include <string>
#include <vector>

#include "ringinfer/comm.h"

namespace ringinfer {

// World rank 0 validates every shard of `paths` (what open_documents checks, against
// `vocab_size` when >= 0) in a child process; every rank then throws the same Error when
// a shard is bad or the child crashed. Collective over `world`.
void check_shards_isolated(const std::vector<std::string>& paths, int64_t vocab_size, Comm& world);

}  // namespace ringinfer
