#pragma once
// Small GoogleTest conveniences shared by the test files: the message of an expected
// ringinfer::Error, and readable names for tests parameterized by a string.
#include <gtest/gtest.h>

#include <functional>
#include <string>

namespace ringinfer::test {

// The what() of the ringinfer::Error that f throws, or "" when f returns normally (other
// exceptions pass through). Malformed-input tests compare it with the exact message.
std::string error_of(const std::function<void()>& f);

// A string parameter as a test name: GoogleTest allows only [A-Za-z0-9_], so '-' becomes
// '_' ("llama3-gqa" -> "llama3_gqa"). For INSTANTIATE_TEST_SUITE_P's name generator.
std::string param_name(const ::testing::TestParamInfo<std::string>& info);

}  // namespace ringinfer::test
