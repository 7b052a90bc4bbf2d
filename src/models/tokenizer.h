// The UMT5 tokenizer of Wan (google/umt5-xxl spiece.model), behaving like transformers'
// T5TokenizerFast as WanPipeline calls it: prompt_clean, sentencepiece ids, </s> appended,
// truncation to max_length keeping </s> last, padding with <pad> to max_length.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace beatfarm::models {

struct Encoded {
  at::Tensor input_ids;       // [B, max_length] int64
  at::Tensor attention_mask;  // [B, max_length] int64, 1 for real tokens including </s>
};

class T5Tokenizer {
 public:
  // A tokenizer folder holding spiece.model; Error naming the file when missing or corrupt.
  static T5Tokenizer load(const std::string& folder);

  // Cleans (prompt_clean) and encodes every prompt.
  Encoded encode(const std::vector<std::string>& prompts, int max_length = 512) const;
  // The sentencepiece ids of `text` as given (no cleaning, no </s>).
  std::vector<int64_t> tokenize(const std::string& text) const;

  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }
  int64_t vocab_size() const;

 private:
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor_;
  std::string model_path_;
  int64_t eos_id_ = 1;
  int64_t pad_id_ = 0;
};

// WanPipeline's prompt_clean without ftfy: html unescape twice, strip, and every run of
// (Unicode) whitespace collapsed to one space.
std::string prompt_clean(const std::string& text);
// Python's html.unescape for the common named entities and all numeric references.
std::string html_unescape(const std::string& text);

// Trains a small unigram sentencepiece model on `corpus_text` (one sentence per line) with T5's
// special ids (pad 0, eos 1, unk 2, no bos) and writes spiece.model, tokenizer_config.json and
// special_tokens_map.json into output_folder (created if needed). For tiny test models.
void train_tiny_tokenizer(const std::string& corpus_text, const std::string& output_folder,
                          int vocab_size);

}  // namespace beatfarm::models
