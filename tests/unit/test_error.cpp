#include <gtest/gtest.h>

#include "ringinfer/error.h"

TEST(Error, CheckThrowsWithMessage) {
  EXPECT_NO_THROW(RI_CHECK(1 + 1 == 2, "never"));
  try {
    RI_CHECK(false, std::string("file.h5: bad thing"));
    FAIL() << "RI_CHECK did not throw";
  } catch (const ringinfer::Error& e) {
    EXPECT_STREQ(e.what(), "file.h5: bad thing");
  }
}
