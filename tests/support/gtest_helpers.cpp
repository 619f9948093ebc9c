#include "gtest_helpers.h"

#include "ringinfer/error.h"

namespace ringinfer::test {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string s = info.param;
  for (char& c : s)
    if (c == '-' || c == '/' || c == '.') c = '_';
  return s;
}

}  // namespace ringinfer::test
