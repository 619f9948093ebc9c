// ringinfer: one binary, subcommands run, score, prep, dump, plan (DESIGN §6).
#include "cli/commands.h"

int main(int argc, char** argv) { return ringinfer::cli::main(argc, argv); }
