#pragma once
// Which data-parallel group processes which document (DESIGN §5): documents are assigned
// ahead of time by estimated cost, longest first, each to the least-loaded group. Every
// rank computes the same assignment from the same lengths, so no communication is needed.
#include <cstdint>
#include <vector>

namespace ringinfer {

// Estimated cost of a document of `tokens` tokens: prefill attention grows as S^2, the
// projections and decode as S; the constant keeps short documents from looking free.
double document_cost(int64_t tokens, int64_t new_tokens);

// result[g] lists the document indices group g processes, in the order it processes them
// (longest first). Ties are broken by document index, so the result is deterministic.
std::vector<std::vector<int64_t>> assign_documents(const std::vector<int64_t>& lengths, int n_groups,
                                                   int64_t new_tokens = 0);

}  // namespace ringinfer
