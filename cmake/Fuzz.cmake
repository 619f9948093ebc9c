# libFuzzer harnesses (tests/fuzz/*.cpp), one executable each: fuzz_<name>.
# Used by tools/fuzz.sh, which configures a clang build with
#   -DCMAKE_PROJECT_INCLUDE=<repo>/cmake/Fuzz.cmake
#   -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined ..."
# CMAKE_PROJECT_INCLUDE runs inside project(), before ringinfer_core exists, so the
# targets are added by a deferred call at the end of the top-level CMakeLists.txt;
# no edit of CMakeLists.txt is needed.
function(ringinfer_add_fuzzers)
  file(GLOB FUZZ_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/fuzz/*.cpp)
  foreach(src ${FUZZ_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src)
    target_compile_definitions(${name} PRIVATE RINGINFER_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
    target_link_libraries(${name} PRIVATE ringinfer_core)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL ringinfer_add_fuzzers)
