#pragma once
// Errors: one exception type for everything a user can cause (bad files, flags,
// configs), and check macros for the libraries we call. Each message says where:
// the rank (set once by the runtime), the source file and line for library errors,
// and the library's own message. The CLI turns an Error into a one-line message and a
// non-zero exit on every rank (see runtime.h: exit_on_error).
#include <stdexcept>
#include <string>

namespace ringinfer {

// A user-facing error: bad input, bad configuration, a resource that does not fit.
// The message names the file or option and the problem, in one line.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The rank shown in error and log prefixes (-1 before the runtime has started).
int this_rank();
void set_this_rank(int rank);

// Builds "file:line: what" for library failures.
std::string where(const char* file, int line, const std::string& what);

[[noreturn]] void throw_library_error(const char* library, const char* file, int line,
                                      const std::string& message);

}  // namespace ringinfer

// Throws ringinfer::Error with the streamed message when cond is false.
#define RI_CHECK(cond, msg)                                   \
  do {                                                        \
    if (!(cond)) throw ::ringinfer::Error(std::string(msg));  \
  } while (0)

// MPI calls return an error code (the runtime sets MPI_ERRORS_RETURN).
#define MPI_CHECK(call)                                                          \
  do {                                                                           \
    int ri_mpi_rc_ = (call);                                                     \
    if (ri_mpi_rc_ != 0) ::ringinfer::detail::mpi_fail(ri_mpi_rc_, __FILE__, __LINE__, #call); \
  } while (0)

// HDF5 calls return a negative value (herr_t or hid_t) on failure.
#define H5_CHECK(call)                                                           \
  ([&]() {                                                                       \
    auto ri_h5_rc_ = (call);                                                     \
    if (ri_h5_rc_ < 0) ::ringinfer::detail::h5_fail(__FILE__, __LINE__, #call);   \
    return ri_h5_rc_;                                                            \
  }())

namespace ringinfer::detail {
[[noreturn]] void mpi_fail(int code, const char* file, int line, const char* call);
[[noreturn]] void h5_fail(const char* file, int line, const char* call);
}  // namespace ringinfer::detail
