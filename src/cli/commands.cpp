#include "cli/commands.h"

#include <cstdio>
#include <cstring>
#include <string>

#include "ringinfer/version.h"

namespace ringinfer::cli {

int main(int argc, char** argv) {
  if (argc >= 2 && (std::strcmp(argv[1], "--version") == 0)) {
    std::printf("ringinfer %s\n", RINGINFER_VERSION);
    return 0;
  }
  std::fprintf(stderr, "usage: ringinfer {run|score|prep|dump|plan} [options]\n");
  return 2;
}

}  // namespace ringinfer::cli
