#include "ringinfer/error.h"

#include <hdf5.h>
#include <mpi.h>

#include <string>

namespace ringinfer {
namespace {
int g_rank = -1;
}

int this_rank() { return g_rank; }
void set_this_rank(int rank) { g_rank = rank; }

std::string where(const char* file, int line, const std::string& what) {
  return std::string(file) + ":" + std::to_string(line) + ": " + what;
}

void throw_library_error(const char* library, const char* file, int line, const std::string& message) {
  throw Error(std::string(library) + " error on rank " + std::to_string(g_rank) + " at " +
              where(file, line, message));
}

namespace detail {

void mpi_fail(int code, const char* file, int line, const char* call) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw_library_error("MPI", file, line, std::string(call) + ": " + std::string(text, len));
}

// Collects the innermost message of the HDF5 error stack.
static herr_t walk_h5_error(unsigned, const H5E_error2_t* e, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (e && e->desc) *s = e->desc;
  return 0;
}

void h5_fail(const char* file, int line, const char* call) {
  std::string desc;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_h5_error, &desc);
  H5Eclear2(H5E_DEFAULT);
  throw_library_error("HDF5", file, line, std::string(call) + (desc.empty() ? "" : ": " + desc));
}

}  // namespace detail
}  // namespace ringinfer
