#include "cli/output_path.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "ringinfer/error.h"
#include "ringinfer/journal.h"

namespace ringinfer::cli {
namespace {

namespace fs = std::filesystem;

// A file the job reads, and how to name it in a message.
struct Protected {
  std::string path;
  std::string role;  // "the input", "the model file", ...
};

// Same file: one inode (hard links, symlinks, ./a vs a) when both exist, else the same
// canonical path.
bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) {
    const bool eq = fs::equivalent(a, b, ec);
    if (!ec) return eq;
  }
  const fs::path ca = fs::weakly_canonical(fs::absolute(a, ec), ec);
  const fs::path cb = fs::weakly_canonical(fs::absolute(b, ec), ec);
  return ca == cb;
}

std::vector<Protected> protected_files(const RunConfig& c) {
  std::vector<Protected> files;
  for (const std::string& in : c.inputs) files.push_back({in, "the input " + in});
  if (!c.prompt_template.empty()) files.push_back({c.prompt_template, "the prompt template " + c.prompt_template});
  if (c.model.empty()) return files;
  std::error_code ec;
  if (fs::is_directory(c.model, ec)) {
    // The whole folder, sub-folders too: nothing the loader might read may be replaced.
    for (auto it = fs::recursive_directory_iterator(c.model, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code file_ec;
      // Leftovers of an earlier attempt writing into the model folder (OUT.tmp, journals)
      // are the job's own; the output itself is still refused below.
      if (!it->is_directory(file_ec) && !is_output_companion(it->path().string(), c.output, false))
        files.push_back({it->path().string(), "the file " + it->path().string() + " of the model folder " + c.model});
    }
  } else {
    files.push_back({c.model, "the model file " + c.model});
  }
  return files;
}

void check_not_overwriting(const RunConfig& c) {
  const std::string& out = c.output;
  std::vector<std::string> companions = {out, out + ".tmp", journal_path(out, 0)};
  for (const std::string& j : find_journals(out)) companions.push_back(j);
  const std::vector<Protected> files = protected_files(c);
  for (const std::string& mine : companions) {
    for (const Protected& p : files) {
      if (!same_file(mine, p.path)) continue;
      if (mine == out) throw Error("--output " + out + " is " + p.role + ": choose another output path");
      throw Error("--output " + out + ": the job would write " + mine + ", which is " + p.role +
                  ": choose another output path");
    }
  }
}

void check_writable_location(const std::string& out) {
  std::error_code ec;
  if (fs::is_directory(out, ec))
    throw Error("--output " + out + " is a directory: give a file path, such as " +
                (fs::path(out) / "out.h5").string());
  const fs::path parent = fs::path(out).has_parent_path() ? fs::path(out).parent_path() : fs::path(".");
  RI_CHECK(fs::exists(parent, ec), "--output " + out + ": the folder " + parent.string() + " does not exist");
  RI_CHECK(fs::is_directory(parent, ec), "--output " + out + ": " + parent.string() + " is not a folder");
  // access(W_OK) says yes to root on a read-only mount and no on some ACL setups:
  // create a file where the output will be created, and remove it.
  const std::string probe = out + ".probe." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  RI_CHECK(fd >= 0, "--output " + out + ": cannot create files in the folder " + parent.string() + " (" +
                        std::strerror(errno) + ")");
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace

bool is_output_companion(const std::string& file, const std::string& output, bool with_output) {
  if (output.empty()) return false;
  std::error_code ec;
  const fs::path out = fs::weakly_canonical(fs::absolute(output, ec), ec);
  const fs::path f = fs::weakly_canonical(fs::absolute(file, ec), ec);
  if (f.parent_path() != out.parent_path()) return false;
  const std::string name = f.filename().string(), base = out.filename().string();
  return (with_output && name == base) || name.compare(0, base.size() + 1, base + ".") == 0;
}

void check_output_path(const RunConfig& config) {
  check_writable_location(config.output);
  check_not_overwriting(config);
}

void check_output_path(const RunConfig& config, Comm& world) {
  agree_on_root(world, [&] {
    check_output_path(config);
    return std::string();
  });
}

}  // namespace ringinfer::cli
