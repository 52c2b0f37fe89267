// Token files and the --scores / --layers parsers.
#include <gtest/gtest.h>

#include "latim/error.hpp"
#include "latim/latim.hpp"
#include "latim/tokens.hpp"
#include "test_util.hpp"

namespace latim {
namespace {

TEST(ErrorMessages, PrintableKeepsUtf8AndEscapesTheRest) {
  EXPECT_EQ(printable("T\xc2\xb2 \xe2\x89\xa5 1 \xf0\x9f\x99\x82"), "T\xc2\xb2 \xe2\x89\xa5 1 \xf0\x9f\x99\x82");  // ², ≥, 🙂
  EXPECT_EQ(printable("a\nb\tc\x7f"), "a\\x0ab\\x09c\\x7f");
  EXPECT_EQ(printable("key\xc1\""), "key\\xc1\"");                  // not a lead byte
  EXPECT_EQ(printable("x\xe2\x82"), "x\\xe2\\x82");                 // cut short
  EXPECT_EQ(printable("\xe0\x80\x80"), "\\xe0\\x80\\x80");          // overlong
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");          // a surrogate
  EXPECT_EQ(printable(std::string("a\0b", 3)), "a\\x00b");
}

TEST(Tokens, ReadsWhitespaceSeparatedIds) {
  test::TempDir tmp;
  test::write_text(tmp / "t.txt", " 3 1\n4\t1  5\n");
  EXPECT_EQ(read_token_file(tmp / "t.txt", 10), (std::vector<int64_t>{3, 1, 4, 1, 5}));
  test::write_text(tmp / "bad.txt", "3 1.5");
  EXPECT_THROW(read_token_file(tmp / "bad.txt", 10), Error);
  test::write_text(tmp / "big.txt", "3 99999999999999999999999");
  EXPECT_THROW(read_token_file(tmp / "big.txt", 10), Error);
}

TEST(Args, Scores) {
  EXPECT_EQ(parse_scores("l2,alti,l2"), (std::vector<Score>{Score::L2, Score::Alti}));
  EXPECT_THROW(parse_scores("l3"), Error);
  EXPECT_THROW(parse_scores(""), Error);
}

TEST(Args, Layers) {
  EXPECT_EQ(parse_layers("0,5-7,2", 8), (std::vector<int>{0, 2, 5, 6, 7}));
  EXPECT_EQ(parse_layers("all", 3), (std::vector<int>{0, 1, 2}));
  EXPECT_THROW(parse_layers("8", 8), Error);
  EXPECT_THROW(parse_layers("3-1", 8), Error);
  EXPECT_THROW(parse_layers("a", 8), Error);
  EXPECT_THROW(parse_layers("-1", 8), Error);
}

}  // namespace
}  // namespace latim
