#include "models/tokenizer.h"

#include <ATen/ATen.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <nlohmann/json.hpp>

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <new>
#include <sstream>
#include <unordered_map>

#include "common/error.h"

namespace beatfarm::models {

namespace {

// T5's special ids, which the Wan tokenizer (umt5-xxl) shares.
constexpr int kT5PadId = 0;
constexpr int kT5EosId = 1;
constexpr int kT5UnkId = 2;
// umt5-xxl's model_max_length (= WanPipeline's max_sequence_length).
constexpr int kT5ModelMaxLength = 512;

constexpr char32_t kReplacementChar = 0xFFFD;

// ---- UTF-8 <-> code points (invalid bytes become U+FFFD, as a lenient decoder would).

std::u32string decode_utf8(const std::string& text) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    int length = lead < 0x80           ? 1
                 : (lead >> 5) == 0x6  ? 2
                 : (lead >> 4) == 0xE  ? 3
                 : (lead >> 3) == 0x1E ? 4
                                       : 0;
    if (length == 0 || i + static_cast<size_t>(length) > text.size()) {
      out.push_back(kReplacementChar);
      ++i;
      continue;
    }
    char32_t code = length == 1 ? lead : lead & (0xFF >> (length + 1));
    bool valid = true;
    for (int k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + static_cast<size_t>(k)]);
      if ((next & 0xC0) != 0x80) valid = false;
      code = (code << 6) | (next & 0x3F);
    }
    if (!valid) {
      out.push_back(kReplacementChar);
      ++i;
      continue;
    }
    out.push_back(code);
    i += static_cast<size_t>(length);
  }
  return out;
}

void append_utf8(std::string& out, char32_t code) {
  if (code < 0x80) {
    out.push_back(static_cast<char>(code));
  } else if (code < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code >> 6)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else if (code < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  }
}

std::string encode_utf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t code : text) append_utf8(out, code);
  return out;
}

// Python's str.isspace(), which is what re's \s and str.strip() use.
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// ---- HTML character references (Python's html.unescape).

// Latin-1 entities for U+00A0..U+00FF, in code point order: HTML5 also accepts these without
// the trailing ';' (legacy references).
constexpr const char* kLatin1Entities[] = {
    "nbsp",   "iexcl",  "cent",   "pound",  "curren", "yen",    "brvbar", "sect",   "uml",
    "copy",   "ordf",   "laquo",  "not",    "shy",    "reg",    "macr",   "deg",    "plusmn",
    "sup2",   "sup3",   "acute",  "micro",  "para",   "middot", "cedil",  "sup1",   "ordm",
    "raquo",  "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc",  "Atilde",
    "Auml",   "Aring",  "AElig",  "Ccedil", "Egrave", "Eacute", "Ecirc",  "Euml",   "Igrave",
    "Iacute", "Icirc",  "Iuml",   "ETH",    "Ntilde", "Ograve", "Oacute", "Ocirc",  "Otilde",
    "Ouml",   "times",  "Oslash", "Ugrave", "Uacute", "Ucirc",  "Uuml",   "Yacute", "THORN",
    "szlig",  "agrave", "aacute", "acirc",  "atilde", "auml",   "aring",  "aelig",  "ccedil",
    "egrave", "eacute", "ecirc",  "euml",   "igrave", "iacute", "icirc",  "iuml",   "eth",
    "ntilde", "ograve", "oacute", "ocirc",  "otilde", "ouml",   "divide", "oslash", "ugrave",
    "uacute", "ucirc",  "uuml",   "yacute", "thorn",  "yuml"};
static_assert(sizeof(kLatin1Entities) / sizeof(kLatin1Entities[0]) == 0x100 - 0xA0,
              "one name per code point U+00A0..U+00FF");

// The entity table: name (with ';' when it is required) -> code point.
const std::unordered_map<std::string, char32_t>& entity_table() {
  static const std::unordered_map<std::string, char32_t> table = [] {
    std::unordered_map<std::string, char32_t> t;
    auto add_legacy = [&t](const std::string& name, char32_t code) {
      t[name] = code;
      t[name + ";"] = code;
    };
    for (char32_t code = 0xA0; code <= 0xFF; ++code) add_legacy(kLatin1Entities[code - 0xA0], code);
    for (const auto& [name, code] :
         std::initializer_list<std::pair<const char*, char32_t>>{{"amp", '&'},
                                                                 {"AMP", '&'},
                                                                 {"lt", '<'},
                                                                 {"LT", '<'},
                                                                 {"gt", '>'},
                                                                 {"GT", '>'},
                                                                 {"quot", '"'},
                                                                 {"QUOT", '"'},
                                                                 {"COPY", 0xA9},
                                                                 {"REG", 0xAE}}) {
      add_legacy(name, code);
    }
    // Common references that need their ';'.
    for (const auto& [name, code] : std::initializer_list<std::pair<const char*, char32_t>>{
             {"apos", '\''},     {"ensp", 0x2002},   {"emsp", 0x2003},  {"thinsp", 0x2009},
             {"zwnj", 0x200C},   {"zwj", 0x200D},    {"lrm", 0x200E},   {"rlm", 0x200F},
             {"ndash", 0x2013},  {"mdash", 0x2014},  {"lsquo", 0x2018}, {"rsquo", 0x2019},
             {"sbquo", 0x201A},  {"ldquo", 0x201C},  {"rdquo", 0x201D}, {"bdquo", 0x201E},
             {"dagger", 0x2020}, {"Dagger", 0x2021}, {"bull", 0x2022},  {"hellip", 0x2026},
             {"permil", 0x2030}, {"prime", 0x2032},  {"Prime", 0x2033}, {"lsaquo", 0x2039},
             {"rsaquo", 0x203A}, {"oline", 0x203E},  {"frasl", 0x2044}, {"euro", 0x20AC},
             {"trade", 0x2122},  {"larr", 0x2190},   {"uarr", 0x2191},  {"rarr", 0x2192},
             {"darr", 0x2193},   {"harr", 0x2194},   {"minus", 0x2212}, {"infin", 0x221E},
             {"ne", 0x2260},     {"le", 0x2264},     {"ge", 0x2265},    {"hearts", 0x2665},
             {"spades", 0x2660}, {"clubs", 0x2663},  {"diams", 0x2666}, {"OElig", 0x152},
             {"oelig", 0x153},   {"Scaron", 0x160},  {"scaron", 0x161}, {"Yuml", 0x178},
             {"fnof", 0x192},    {"circ", 0x2C6},    {"tilde", 0x2DC},  {"nbsp", 0xA0}}) {
      t[std::string(name) + ";"] = code;
    }
    return t;
  }();
  return table;
}

// Numeric references to C1 controls mean windows-1252 (HTML5; Python's _invalid_charrefs).
char32_t windows_1252(char32_t code) {
  static constexpr char32_t kC1[32] = {
      0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
      0x2039, 0x0152, 0x8D,   0x017D, 0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
      0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178};
  return kC1[code - 0x80];
}

// Python's html._replace_charref for a numeric reference; appends nothing for the code points
// HTML5 drops.
void append_numeric_reference(std::u32string& out, uint64_t code) {
  if (code == 0) {
    out.push_back(kReplacementChar);
  } else if (code == 0x0D) {
    out.push_back(U'\r');
  } else if (code >= 0x80 && code <= 0x9F) {
    out.push_back(windows_1252(static_cast<char32_t>(code)));
  } else if ((code >= 0xD800 && code <= 0xDFFF) || code > 0x10FFFF) {
    out.push_back(kReplacementChar);
  } else if ((code >= 0x01 && code <= 0x08) || code == 0x0B || (code >= 0x0E && code <= 0x1F) ||
             code == 0x7F || (code >= 0xFDD0 && code <= 0xFDEF) || (code & 0xFFFE) == 0xFFFE) {
    // Invalid code points become nothing.
  } else {
    out.push_back(static_cast<char32_t>(code));
  }
}

bool is_hex_digit(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Longest number of decimal/hex digits Python would ever convert; beyond it the value is
// outside Unicode anyway, so saturate instead of overflowing.
constexpr uint64_t kSaturatedCodePoint = 0x110000;

// Tries a reference at text[start] == '&'; on success appends its replacement, returns the
// index after it; otherwise returns start.
size_t unescape_at(const std::u32string& text, size_t start, std::u32string& out) {
  size_t i = start + 1;
  if (i < text.size() && text[i] == '#') {
    // &#123; / &#x1F; (the ';' is optional)
    const bool hex = i + 1 < text.size() && (text[i + 1] == 'x' || text[i + 1] == 'X');
    size_t digits = i + (hex ? 2 : 1);
    uint64_t code = 0;
    size_t end = digits;
    while (end < text.size() &&
           (hex ? is_hex_digit(text[end]) : (text[end] >= '0' && text[end] <= '9'))) {
      const char32_t c = text[end];
      const uint64_t digit = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
      code = std::min(code * (hex ? 16 : 10) + digit, kSaturatedCodePoint);
      ++end;
    }
    if (end == digits) return start;  // "&#" without digits stays as is
    if (end < text.size() && text[end] == ';') ++end;
    append_numeric_reference(out, code);
    return end;
  }
  // Named: up to 32 characters other than \t \n \f space < & # ;, then an optional ';'.
  constexpr size_t kMaxNameLength = 32;
  size_t end = i;
  while (end < text.size() && end - i < kMaxNameLength) {
    const char32_t c = text[end];
    if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
        c == ';') {
      break;
    }
    ++end;
  }
  if (end == i) return start;
  if (end < text.size() && text[end] == ';') ++end;
  const std::string name = encode_utf8(text.substr(i, end - i));
  const auto& table = entity_table();
  auto found = table.find(name);
  if (found != table.end()) {
    out.push_back(found->second);
    return end;
  }
  // The longest legacy prefix (e.g. "&ampx" -> "&x"); names are ASCII, so bytes = characters.
  for (size_t length = name.size() - 1; length > 1; --length) {
    found = table.find(name.substr(0, length));
    if (found != table.end()) {
      out.push_back(found->second);
      return i + length;
    }
  }
  return start;
}

std::u32string unescape(const std::u32string& text) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '&') {
      const size_t next = unescape_at(text, i, out);
      if (next != i) {
        i = next;
        continue;
      }
    }
    out.push_back(text[i++]);
  }
  return out;
}

// ---- libsentencepiece, loaded privately.
//
// libsentencepiece bundles its own protobuf-lite and exports every symbol of it; Debian's libtorch
// loads the system libprotobuf. Linked together, libprotobuf's start-up code binds to
// sentencepiece's copy and crashes before main(). So the library is dlopen()ed on first use with
// RTLD_LOCAL | RTLD_DEEPBIND (it binds to its own protobuf and nothing else sees it). Its classes
// are used through their virtual functions; the few non-virtual entry points come from dlsym,
// and util::Status results live in raw storage destroyed through the library's destructor.

using sentencepiece::SentencePieceProcessor;
using sentencepiece::util::Status;
using TrainArgs = std::unordered_map<std::string, std::string>;

#ifndef BEATFARM_SENTENCEPIECE_LIBRARY
#define BEATFARM_SENTENCEPIECE_LIBRARY "libsentencepiece.so.0"
#endif
#ifndef BEATFARM_SENTENCEPIECE_TRAIN_LIBRARY
#define BEATFARM_SENTENCEPIECE_TRAIN_LIBRARY "libsentencepiece_train.so.0"
#endif

struct SentencePieceApi {
  void (*construct_processor)(SentencePieceProcessor*) = nullptr;
  void (*destroy_status)(Status*) = nullptr;
  const char* (*status_message)(const Status*) = nullptr;
  Status (*train)(const TrainArgs&, sentencepiece::SentenceIterator*, std::string*) = nullptr;
  int (*get_min_log_level)() = nullptr;  // optional
  void (*set_min_log_level)(int) = nullptr;
};

// The configured path (the library found at build time), else the soname.
void* open_private(const std::vector<std::string>& candidates) {
  std::string errors;
  for (const std::string& candidate : candidates) {
    if (void* handle = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND)) {
      return handle;
    }
    const char* error = dlerror();
    errors += str("\n  ", error ? error : candidate);
  }
  throw Error(str("tokenizer: cannot load sentencepiece:", errors));
}

template <typename Function>
Function symbol(void* handle, const char* name, bool required = true) {
  void* address = dlsym(handle, name);
  if (!address && required) throw Error(str("tokenizer: sentencepiece lacks symbol ", name));
  return reinterpret_cast<Function>(address);
}

// Loads libsentencepiece (and, with `trainer`, libsentencepiece_train) once per process.
const SentencePieceApi& sentencepiece_api(bool trainer) {
  static std::mutex mutex;
  static SentencePieceApi api;
  static bool processor_loaded = false, trainer_loaded = false;
  std::lock_guard<std::mutex> lock(mutex);
  if (!processor_loaded) {
    void* handle = open_private({BEATFARM_SENTENCEPIECE_LIBRARY, "libsentencepiece.so.0"});
    api.construct_processor = symbol<decltype(api.construct_processor)>(
        handle, "_ZN13sentencepiece22SentencePieceProcessorC1Ev");
    api.destroy_status =
        symbol<decltype(api.destroy_status)>(handle, "_ZN13sentencepiece4util6StatusD1Ev");
    api.status_message = symbol<decltype(api.status_message)>(
        handle, "_ZNK13sentencepiece4util6Status13error_messageEv");
    api.get_min_log_level = symbol<decltype(api.get_min_log_level)>(
        handle, "_ZN13sentencepiece7logging14GetMinLogLevelEv", false);
    api.set_min_log_level = symbol<decltype(api.set_min_log_level)>(
        handle, "_ZN13sentencepiece7logging14SetMinLogLevelEi", false);
    processor_loaded = true;
  }
  if (trainer && !trainer_loaded) {
    void* handle =
        open_private({BEATFARM_SENTENCEPIECE_TRAIN_LIBRARY, "libsentencepiece_train.so.0"});
    // SentencePieceTrainer::Train(const unordered_map<string, string>&, SentenceIterator*,
    // string*)
    api.train = symbol<decltype(api.train)>(
        handle,
        "_ZN13sentencepiece20SentencePieceTrainer5TrainERKSt13unordered_mapINSt7__cxx1112basic_"
        "stringIcSt11char_traitsIcESaIcEEES7_St4hashIS7_ESt8equal_toIS7_ESaISt4pairIKS7_S7_EEEPNS_"
        "16SentenceIteratorEPS7_");
    trainer_loaded = true;
  }
  return api;
}

// Runs `call` (which returns a util::Status) and returns its error message, "" when ok.
template <typename Call>
std::string status_error(const SentencePieceApi& api, Call&& call) {
  alignas(Status) unsigned char storage[sizeof(Status)];
  Status* status = new (storage) Status(call());  // guaranteed elision: no copy
  std::string error;
  if (!status->ok()) {
    const char* message = api.status_message(status);
    error = message && *message ? message : "unknown error";
  }
  api.destroy_status(status);
  return error;
}

std::shared_ptr<SentencePieceProcessor> new_processor(const SentencePieceApi& api) {
  void* memory = ::operator new(sizeof(SentencePieceProcessor));
  auto* processor = static_cast<SentencePieceProcessor*>(memory);
  api.construct_processor(processor);
  // The virtual destructor runs the library's code and frees with the global operator delete.
  return std::shared_ptr<SentencePieceProcessor>(processor,
                                                 [](SentencePieceProcessor* p) { delete p; });
}

// ---- Protobuf wire format, just enough to edit the trained model.

bool read_varint(const std::string& bytes, size_t& pos, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && pos < bytes.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(bytes[pos++]);
    value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return true;
  }
  return false;
}

void write_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

// Copies `message` without the length-delimited fields numbered `field` (nested into field
// `inside` when it is > 0). Returns false on malformed input.
bool drop_field(const std::string& message, uint64_t field, uint64_t inside, std::string& out) {
  constexpr uint64_t kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;
  size_t pos = 0;
  while (pos < message.size()) {
    const size_t start = pos;
    uint64_t tag = 0, value = 0;
    if (!read_varint(message, pos, tag)) return false;
    const uint64_t number = tag >> 3, type = tag & 7;
    if (type == kVarint) {
      if (!read_varint(message, pos, value)) return false;
    } else if (type == kFixed64 || type == kFixed32) {
      pos += type == kFixed64 ? 8 : 4;
    } else if (type == kLengthDelimited) {
      if (!read_varint(message, pos, value) || value > message.size() - pos) return false;
      const std::string payload = message.substr(pos, value);
      pos += value;
      if (inside > 0 && number == inside) {
        std::string edited;
        if (!drop_field(payload, field, 0, edited)) return false;
        write_varint(out, tag);
        write_varint(out, edited.size());
        out += edited;
        continue;
      }
      if (inside == 0 && number == field) continue;  // dropped
    } else {
      return false;  // groups are not used by sentencepiece
    }
    if (pos > message.size()) return false;
    out.append(message, start, pos - start);
  }
  return true;
}

// The trainer records its input path (ModelProto.trainer_spec = 2, TrainerSpec.input = 1), a
// temporary file: drop it so that the same corpus gives the same model bytes.
std::string without_training_input(const std::string& model) {
  constexpr uint64_t kTrainerSpecField = 2, kInputField = 1;
  std::string out;
  return drop_field(model, kInputField, kTrainerSpecField, out) ? out : model;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw Error(str("cannot write ", path));
}

}  // namespace

std::string html_unescape(const std::string& text) {
  if (text.find('&') == std::string::npos) return text;
  return encode_utf8(unescape(decode_utf8(text)));
}

std::string prompt_clean(const std::string& text) {
  // ftfy.fix_text (mojibake repair) is not available in C++: skipped. Prompts typed by users are
  // rarely mis-decoded, and the CLI reads them as UTF-8.
  const std::u32string decoded = decode_utf8(html_unescape(html_unescape(text)));
  // Strip, and collapse every whitespace run to one space (re.sub(r"\s+", " ", text).strip()).
  std::u32string cleaned;
  bool pending_space = false;
  for (char32_t c : decoded) {
    if (is_space(c)) {
      pending_space = !cleaned.empty();
      continue;
    }
    if (pending_space) cleaned.push_back(U' ');
    pending_space = false;
    cleaned.push_back(c);
  }
  return encode_utf8(cleaned);
}

T5Tokenizer T5Tokenizer::load(const std::string& folder) {
  namespace fs = std::filesystem;
  const std::string path =
      fs::is_directory(folder) ? (fs::path(folder) / "spiece.model").string() : folder;
  if (!fs::is_regular_file(path)) throw Error(str("tokenizer: ", path, " not found"));
  const SentencePieceApi& api = sentencepiece_api(false);
  std::shared_ptr<SentencePieceProcessor> processor = new_processor(api);
  const std::string error = status_error(api, [&] { return processor->Load(path); });
  if (!error.empty()) {
    throw Error(str("tokenizer: cannot load sentencepiece model ", path, ": ", error));
  }
  T5Tokenizer tokenizer;
  tokenizer.model_path_ = path;
  // The eos id of the model (</s>: 1 in T5); pad is 0 in T5 even where the model leaves it unset.
  tokenizer.eos_id_ = processor->eos_id() >= 0 ? processor->eos_id() : processor->PieceToId("</s>");
  if (tokenizer.eos_id_ < 0 || processor->IsUnknown(static_cast<int>(tokenizer.eos_id_))) {
    throw Error(str("tokenizer: ", path, " has no </s> (eos) piece"));
  }
  tokenizer.pad_id_ = processor->pad_id() >= 0 ? processor->pad_id() : kT5PadId;
  tokenizer.processor_ = std::move(processor);
  return tokenizer;
}

int64_t T5Tokenizer::vocab_size() const {
  return processor_->GetPieceSize();
}

std::vector<int64_t> T5Tokenizer::tokenize(const std::string& text) const {
  std::vector<int> ids;
  const std::string error =
      status_error(sentencepiece_api(false), [&] { return processor_->Encode(text, &ids); });
  if (!error.empty()) throw Error(str("tokenizer ", model_path_, ": cannot encode: ", error));
  return std::vector<int64_t>(ids.begin(), ids.end());
}

Encoded T5Tokenizer::encode(const std::vector<std::string>& prompts, int max_length) const {
  if (max_length < 1) throw Error(str("tokenizer: max_length ", max_length, " < 1"));
  const auto batch = static_cast<int64_t>(prompts.size());
  Encoded encoded;
  encoded.input_ids = at::full({batch, max_length}, pad_id_, at::kLong);  // [B, max_length]
  encoded.attention_mask = at::zeros({batch, max_length}, at::kLong);     // [B, max_length]
  auto ids_rows = encoded.input_ids.accessor<int64_t, 2>();
  auto mask_rows = encoded.attention_mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> ids = tokenize(prompt_clean(prompts[static_cast<size_t>(b)]));
    // truncation=True: keep max_length - 1 pieces so that </s> stays last.
    if (ids.size() > static_cast<size_t>(max_length - 1))
      ids.resize(static_cast<size_t>(max_length - 1));
    ids.push_back(eos_id_);
    for (size_t t = 0; t < ids.size(); ++t) {
      ids_rows[b][static_cast<int64_t>(t)] = ids[t];
      mask_rows[b][static_cast<int64_t>(t)] = 1;
    }
  }
  return encoded;
}

void train_tiny_tokenizer(const std::string& corpus_text, const std::string& output_folder,
                          int vocab_size) {
  namespace fs = std::filesystem;
  std::vector<std::string> lines;
  std::istringstream corpus(corpus_text);
  for (std::string line; std::getline(corpus, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  if (lines.empty()) throw Error("train_tiny_tokenizer: the corpus is empty");
  if (vocab_size < 4) throw Error(str("train_tiny_tokenizer: vocab_size ", vocab_size, " < 4"));

  std::error_code ec;
  fs::create_directories(output_folder, ec);
  if (ec) {
    throw Error(str("train_tiny_tokenizer: cannot create ", output_folder, ": ", ec.message()));
  }
  const std::string model_path = (fs::path(output_folder) / "spiece.model").string();

  // The trainer reads the corpus from a file (a private temporary one).
  std::string corpus_path = (fs::temp_directory_path() / "beatfarm_spm_corpus_XXXXXX").string();
  const int fd = mkstemp(corpus_path.data());
  if (fd < 0) throw Error(str("train_tiny_tokenizer: cannot create ", corpus_path));
  close(fd);
  struct RemoveOnExit {
    std::string path;
    ~RemoveOnExit() {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  } corpus_file{corpus_path};
  std::string all_lines;
  for (const std::string& line : lines) all_lines += line + "\n";
  write_text(corpus_path, all_lines);

  const TrainArgs args = {{"input", corpus_path},
                          {"model_type", "unigram"},
                          {"vocab_size", std::to_string(vocab_size)},
                          // A tiny corpus may not support the requested size: take what it gives.
                          {"hard_vocab_limit", "false"},
                          {"character_coverage", "1.0"},
                          {"num_threads", "1"},  // deterministic and polite on shared machines
                          {"pad_id", std::to_string(kT5PadId)},
                          {"eos_id", std::to_string(kT5EosId)},
                          {"unk_id", std::to_string(kT5UnkId)},
                          {"bos_id", "-1"},
                          {"pad_piece", "<pad>"},
                          {"eos_piece", "</s>"},
                          {"unk_piece", "<unk>"}};
  const SentencePieceApi& api = sentencepiece_api(true);
  // The trainer logs every EM round at INFO: keep warnings and errors only.
  constexpr int kSentencePieceWarning = 1;
  const int log_level = api.get_min_log_level ? api.get_min_log_level() : 0;
  if (api.set_min_log_level) api.set_min_log_level(kSentencePieceWarning);
  std::string serialized;
  const std::string error =
      status_error(api, [&] { return api.train(args, nullptr, &serialized); });
  if (api.set_min_log_level) api.set_min_log_level(log_level);
  if (!error.empty()) {
    throw Error(str("train_tiny_tokenizer: training ", model_path, " failed: ", error));
  }
  write_text(model_path, without_training_input(serialized));

  // The transformers files beside spiece.model (Diffusers' tokenizer/ folder layout).
  const nlohmann::json special = {
      {"eos_token", "</s>"}, {"pad_token", "<pad>"}, {"unk_token", "<unk>"}};
  nlohmann::json config = special;
  config["tokenizer_class"] = "T5Tokenizer";
  config["model_max_length"] = kT5ModelMaxLength;
  config["extra_ids"] = 0;
  config["additional_special_tokens"] = nlohmann::json::array();
  write_text((fs::path(output_folder) / "tokenizer_config.json").string(), config.dump(2) + "\n");
  write_text((fs::path(output_folder) / "special_tokens_map.json").string(),
             special.dump(2) + "\n");
}

}  // namespace beatfarm::models
