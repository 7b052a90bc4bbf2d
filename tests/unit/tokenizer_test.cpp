// The UMT5 tokenizer on a tiny sentencepiece model trained here.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "common/error.h"
#include "models/tokenizer.h"
#include "test_util.h"

namespace beatfarm::models {
namespace {

constexpr int kTinyVocab = 96;
constexpr int kWanMaxLength = 512;  // WanPipeline's max_sequence_length

std::string tiny_corpus() {
  const char* const sentences[] = {
      "a cat plays the drums on a rooftop at night",
      "the dancer spins under neon lights while the bass drops",
      "a slow camera pan across a misty forest at dawn",
      "two robots dance to a fast techno beat in a warehouse",
      "waves crash on the shore as the drums build up",
      "a guitar player on stage with bright spotlights and smoke",
      "close up of hands playing a piano in warm light",
      "the crowd jumps when the beat drops at the festival",
  };
  std::ostringstream corpus;
  for (int repeat = 0; repeat < 8; ++repeat) {
    for (const char* sentence : sentences) corpus << sentence << "\n";
  }
  return corpus.str();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class T5TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>("beatfarm_tokenizer");
    train_tiny_tokenizer(tiny_corpus(), dir_->path(), kTinyVocab);
  }
  static void TearDownTestSuite() { dir_.reset(); }
  static std::unique_ptr<test::TempDir> dir_;
};
std::unique_ptr<test::TempDir> T5TokenizerTest::dir_;

TEST_F(T5TokenizerTest, TrainingWritesTheDiffusersFiles) {
  for (const char* name : {"spiece.model", "tokenizer_config.json", "special_tokens_map.json"}) {
    EXPECT_TRUE(std::filesystem::is_regular_file(dir_->file(name))) << name;
  }
  EXPECT_NE(read_file(dir_->file("special_tokens_map.json")).find("\"</s>\""), std::string::npos);
  const T5Tokenizer tokenizer = T5Tokenizer::load(dir_->path());
  EXPECT_EQ(tokenizer.pad_id(), 0);
  EXPECT_EQ(tokenizer.eos_id(), 1);
  EXPECT_GT(tokenizer.vocab_size(), 3);
  EXPECT_LE(tokenizer.vocab_size(), kTinyVocab);
}

TEST_F(T5TokenizerTest, AppendsEosAndPadsTo512) {
  const T5Tokenizer tokenizer = T5Tokenizer::load(dir_->path());
  const std::string prompt = "a cat plays the drums";
  const Encoded encoded = tokenizer.encode({prompt});
  ASSERT_EQ(encoded.input_ids.sizes(), (std::vector<int64_t>{1, kWanMaxLength}));
  ASSERT_EQ(encoded.attention_mask.sizes(), (std::vector<int64_t>{1, kWanMaxLength}));
  EXPECT_EQ(encoded.input_ids.scalar_type(), at::kLong);
  EXPECT_EQ(encoded.attention_mask.scalar_type(), at::kLong);

  const std::vector<int64_t> pieces = tokenizer.tokenize(prompt);
  ASSERT_FALSE(pieces.empty());
  const auto n = static_cast<int64_t>(pieces.size()) + 1;  // + </s>
  const at::Tensor ids = encoded.input_ids[0], mask = encoded.attention_mask[0];
  EXPECT_TRUE(at::equal(ids.slice(0, 0, n - 1), at::tensor(pieces, at::kLong)));
  EXPECT_EQ(ids[n - 1].item<int64_t>(), tokenizer.eos_id());
  EXPECT_TRUE((ids.slice(0, n) == tokenizer.pad_id()).all().item<bool>());
  EXPECT_TRUE((mask.slice(0, 0, n) == 1).all().item<bool>());
  EXPECT_TRUE((mask.slice(0, n) == 0).all().item<bool>());
  EXPECT_FALSE((ids.slice(0, 0, n - 1) == tokenizer.eos_id()).any().item<bool>());
}

TEST_F(T5TokenizerTest, TruncationKeepsEosLast) {
  const T5Tokenizer tokenizer = T5Tokenizer::load(dir_->path());
  std::string prompt;
  for (int i = 0; i < 400; ++i) prompt += "the drums build up ";
  const std::vector<int64_t> pieces = tokenizer.tokenize(prompt_clean(prompt));
  ASSERT_GT(pieces.size(), static_cast<size_t>(kWanMaxLength));

  for (int max_length : {16, kWanMaxLength}) {
    const Encoded encoded = tokenizer.encode({prompt}, max_length);
    ASSERT_EQ(encoded.input_ids.size(1), max_length);
    const at::Tensor ids = encoded.input_ids[0];
    EXPECT_TRUE((encoded.attention_mask == 1).all().item<bool>());
    EXPECT_EQ(ids[max_length - 1].item<int64_t>(), tokenizer.eos_id());
    const std::vector<int64_t> head(pieces.begin(), pieces.begin() + max_length - 1);
    EXPECT_TRUE(at::equal(ids.slice(0, 0, max_length - 1), at::tensor(head, at::kLong)));
  }
}

TEST_F(T5TokenizerTest, BatchRowsEqualSingleEncodes) {
  const T5Tokenizer tokenizer = T5Tokenizer::load(dir_->path());
  const std::vector<std::string> prompts = {"waves crash on the shore",
                                            "two robots dance to a fast techno beat at night"};
  const Encoded batch = tokenizer.encode(prompts);
  ASSERT_EQ(batch.input_ids.size(0), 2);
  for (int64_t b = 0; b < 2; ++b) {
    const Encoded single = tokenizer.encode({prompts[static_cast<size_t>(b)]});
    EXPECT_TRUE(at::equal(batch.input_ids[b], single.input_ids[0])) << b;
    EXPECT_TRUE(at::equal(batch.attention_mask[b], single.attention_mask[0])) << b;
  }
  EXPECT_LT(batch.attention_mask[0].sum().item<int64_t>(),
            batch.attention_mask[1].sum().item<int64_t>());
  EXPECT_EQ(tokenizer.encode({}).input_ids.sizes(), (std::vector<int64_t>{0, kWanMaxLength}));
}

TEST_F(T5TokenizerTest, CleansHtmlEntitiesAndWhitespace) {
  EXPECT_EQ(prompt_clean("  a &amp;amp; b\n\t c&nbsp;d &#39;x&#x27;  "), "a & b c d 'x'");
  EXPECT_EQ(prompt_clean("\xE3\x80\x80wide\xE2\x80\x83space\r\n"), "wide space");  // U+3000, U+2003
  EXPECT_EQ(prompt_clean("&lt;b&gt; &quot;hi&quot; &hellip;"), "<b> \"hi\" \xE2\x80\xA6");
  EXPECT_EQ(html_unescape("&#8212;&#x80;&#0;"), "\xE2\x80\x94\xE2\x82\xAC\xEF\xBF\xBD");
  EXPECT_EQ(html_unescape("&ampx &copy2024 &unknown; &#; a&b"),
            "&x \xC2\xA9"
            "2024 &unknown; &#; a&b");
  EXPECT_EQ(html_unescape("&amp;lt;"), "&lt;");  // one level per call
  EXPECT_EQ(prompt_clean(""), "");

  const T5Tokenizer tokenizer = T5Tokenizer::load(dir_->path());
  const Encoded messy =
      tokenizer.encode({"  the  crowd&nbsp;jumps\n\n when &amp;amp; the beat drops "});
  const Encoded clean = tokenizer.encode({"the crowd jumps when & the beat drops"});
  EXPECT_TRUE(at::equal(messy.input_ids, clean.input_ids));
}

TEST_F(T5TokenizerTest, IdsAreDeterministic) {
  const T5Tokenizer first = T5Tokenizer::load(dir_->path());
  const T5Tokenizer second = T5Tokenizer::load(dir_->path());
  const std::vector<std::string> prompts = {"a slow camera pan across a misty forest"};
  EXPECT_TRUE(at::equal(first.encode(prompts).input_ids, second.encode(prompts).input_ids));
  // Training is deterministic too: the same corpus gives the same model bytes.
  test::TempDir again;
  train_tiny_tokenizer(tiny_corpus(), again.path(), kTinyVocab);
  EXPECT_EQ(read_file(again.file("spiece.model")), read_file(dir_->file("spiece.model")));
}

std::string load_error(const std::string& folder) {
  try {
    T5Tokenizer::load(folder);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(T5TokenizerErrors, MissingOrCorruptModelNamesTheFile) {
  test::TempDir dir;
  EXPECT_NE(load_error(dir.path()).find("spiece.model"), std::string::npos);
  std::ofstream(dir.file("spiece.model")) << "this is not a sentencepiece model";
  const std::string corrupt = load_error(dir.path());
  EXPECT_NE(corrupt.find(dir.file("spiece.model")), std::string::npos) << corrupt;
  EXPECT_THROW(train_tiny_tokenizer("", dir.file("out"), kTinyVocab), Error);
}

}  // namespace
}  // namespace beatfarm::models
