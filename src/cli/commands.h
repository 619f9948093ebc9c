#pragma once
// The subcommands. Each takes the arguments after its name and returns the exit code.
#include <string>
#include <vector>

namespace ringinfer::cli {

int main(int argc, char** argv);

}  // namespace ringinfer::cli
