#pragma once
// SentencePiece's `tokenizer.model` (a serialized ModelProto, sentencepiece_model.proto), read
// into an SpmTokenizer with SpmRules::kSentencePiece. The protobuf wire format is parsed here, by
// hand: the file needs four of its messages and no protobuf library is worth a dependency for it.
//
// ModelProto fields read (every other field is skipped, as protobuf readers do):
//   1 pieces (repeated SentencePiece: 1 piece string, 2 score float, 3 type enum, default NORMAL)
//   2 trainer_spec: 3 model_type (UNIGRAM = 1 default, BPE = 2, WORD = 3, CHAR = 4),
//     35 byte_fallback, 40 unk_id (0), 41 bos_id (1), 42 eos_id (2)
//   3 normalizer_spec: 1 name, 2 precompiled_charsmap, 3 add_dummy_prefix (true),
//     4 remove_extra_whitespaces (true), 5 escape_whitespaces (true)
// What SpmTokenizer implements, and so what a file must say (else a FormatError names the field
// and its value): model_type BPE with byte_fallback, <unk> <s> </s> at ids 0 1 2 and the 256 byte
// pieces at 3..258, no normalization rules (name "identity", or an empty charsmap), whitespace
// escaped as `▁`. add_dummy_prefix and remove_extra_whitespaces are honoured, and bytes that are
// not UTF-8 and a `▁` in the text are read as SentencePiece reads them (each invalid byte becomes
// U+FFFD; `▁` is a space). Llama 2, TinyLlama,
// Mistral and llama2.c's tokenizers are such files.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "softprompt/error.hpp"
#include "softprompt/io/mmap.hpp"
#include "softprompt/tok/spm.hpp"

namespace softprompt::tok {

namespace spm_model_detail {

/// Reads protobuf wire-format fields from a byte range; errors name the file and the message.
class WireReader {
public:
    WireReader(std::span<const std::byte> bytes, const std::string& file, std::string message)
        : p_(reinterpret_cast<const unsigned char*>(bytes.data())),
          n_(bytes.size()),
          file_(file),
          message_(std::move(message)) {}

    struct Field {
        std::uint32_t number;
        std::uint32_t wire_type;       // 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
        std::uint64_t value = 0;       // varint / fixed
        std::span<const std::byte> bytes;  // length-delimited
    };

    /// The next field, or false at the end.
    bool next(Field& f) {
        if (i_ == n_) return false;
        const std::uint64_t key = varint();
        f.number = static_cast<std::uint32_t>(key >> 3);
        f.wire_type = static_cast<std::uint32_t>(key & 7);
        if (f.number == 0) fail("field number 0");
        switch (f.wire_type) {
            case 0: f.value = varint(); break;
            case 1: f.value = fixed(8); break;
            case 5: f.value = fixed(4); break;
            case 2: {
                const std::uint64_t len = varint();
                if (len > n_ - i_) {
                    fail("field " + std::to_string(f.number) + " declares " + std::to_string(len) +
                         " bytes, " + std::to_string(n_ - i_) + " remain");
                }
                f.bytes = {reinterpret_cast<const std::byte*>(p_ + i_), std::size_t(len)};
                i_ += std::size_t(len);
                break;
            }
            default:
                fail("field " + std::to_string(f.number) + " has wire type " +
                     std::to_string(f.wire_type) + " (groups and unknown types are not read)");
        }
        return true;
    }

    [[noreturn]] void fail(const std::string& what) const {
        throw FormatError::at(file_, offset_base_ + i_, message_ + ": " + what);
    }

    void set_offset_base(std::size_t base) { offset_base_ = base; }

private:
    std::uint64_t varint() {
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (i_ == n_) fail("a varint runs past the end");
            const unsigned char b = p_[i_++];
            v |= std::uint64_t(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return v;
        }
        fail("a varint longer than 10 bytes");
    }
    std::uint64_t fixed(std::size_t size) {
        if (n_ - i_ < size) fail("a fixed-size value runs past the end");
        std::uint64_t v = 0;
        for (std::size_t k = 0; k < size; ++k) v |= std::uint64_t(p_[i_ + k]) << (8 * k);
        i_ += size;
        return v;
    }

    const unsigned char* p_;
    std::size_t n_, i_ = 0, offset_base_ = 0;
    const std::string& file_;
    std::string message_;
};

inline std::size_t offset_in(std::span<const std::byte> all, std::span<const std::byte> part) {
    return static_cast<std::size_t>(part.data() - all.data());
}

}  // namespace spm_model_detail

/// Reads a SentencePiece `tokenizer.model` (see the top of this file); `name` stands for the
/// file in errors.
inline SpmTokenizer load_sentencepiece_model(std::span<const std::byte> bytes,
                                             const std::string& name = "<tokenizer.model>") {
    using spm_model_detail::WireReader;
    std::vector<std::string> pieces;
    std::vector<float> scores;
    std::vector<SpmTokenType> types;
    std::uint64_t model_type = 1, unk_id = 0, bos_id = 1, eos_id = 2;
    bool byte_fallback = false, add_dummy_prefix = true, remove_extra_whitespaces = true,
         escape_whitespaces = true;
    std::string normalizer_name;
    std::size_t charsmap_size = 0;

    WireReader top(bytes, name, "ModelProto");
    WireReader::Field f;
    const auto expect_wire = [](WireReader& r, const WireReader::Field& f, std::uint32_t t,
                                const char* field_name) {
        if (f.wire_type != t) {
            r.fail(std::string(field_name) + " has wire type " + std::to_string(f.wire_type) +
                   ", expected " + std::to_string(t));
        }
    };
    while (top.next(f)) {
        if (f.number == 1) {
            expect_wire(top, f, 2, "pieces");
            WireReader r(f.bytes, name, "pieces[" + std::to_string(pieces.size()) + "]");
            r.set_offset_base(spm_model_detail::offset_in(bytes, f.bytes));
            std::string piece;
            float score = 0;
            std::uint64_t type = 1;
            WireReader::Field g;
            while (r.next(g)) {
                if (g.number == 1) {
                    expect_wire(r, g, 2, "piece");
                    piece.assign(reinterpret_cast<const char*>(g.bytes.data()), g.bytes.size());
                } else if (g.number == 2) {
                    expect_wire(r, g, 5, "score");
                    const auto bits = static_cast<std::uint32_t>(g.value);
                    std::memcpy(&score, &bits, sizeof score);
                } else if (g.number == 3) {
                    expect_wire(r, g, 0, "type");
                    type = g.value;
                }
            }
            if (type < 1 || type > 6) r.fail("type " + std::to_string(type) + " is not 1..6");
            // SentencePiece writes spaces as U+2581; SpmTokenizer stores ' '.
            std::string stored;
            for (std::size_t k = 0; k < piece.size(); ++k) {
                if (piece.compare(k, 3, "\xE2\x96\x81") == 0) {
                    stored += ' ';
                    k += 2;
                } else {
                    stored += piece[k];
                }
            }
            pieces.push_back(std::move(stored));
            scores.push_back(score);
            types.push_back(static_cast<SpmTokenType>(type));
        } else if (f.number == 2 || f.number == 3) {
            expect_wire(top, f, 2, f.number == 2 ? "trainer_spec" : "normalizer_spec");
            const bool trainer = f.number == 2;
            WireReader r(f.bytes, name, trainer ? "trainer_spec" : "normalizer_spec");
            r.set_offset_base(spm_model_detail::offset_in(bytes, f.bytes));
            WireReader::Field g;
            while (r.next(g)) {
                if (trainer) {
                    if (g.wire_type != 0) continue;
                    if (g.number == 3) model_type = g.value;
                    if (g.number == 35) byte_fallback = g.value != 0;
                    if (g.number == 40) unk_id = g.value;
                    if (g.number == 41) bos_id = g.value;
                    if (g.number == 42) eos_id = g.value;
                } else {
                    if (g.number == 1 && g.wire_type == 2) {
                        normalizer_name.assign(reinterpret_cast<const char*>(g.bytes.data()),
                                               g.bytes.size());
                    }
                    if (g.number == 2 && g.wire_type == 2) charsmap_size = g.bytes.size();
                    if (g.wire_type != 0) continue;
                    if (g.number == 3) add_dummy_prefix = g.value != 0;
                    if (g.number == 4) remove_extra_whitespaces = g.value != 0;
                    if (g.number == 5) escape_whitespaces = g.value != 0;
                }
            }
        }
    }
    const auto refuse = [&](const std::string& what) {
        throw FormatError(name + ": " + what + " (SpmTokenizer reads SentencePiece BPE models "
                                               "with byte fallback and no normalization rules)");
    };
    static constexpr const char* kModelTypes[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
    if (model_type != 2) {
        refuse("trainer_spec.model_type is " +
               std::string(model_type < 5 ? kModelTypes[model_type] : "unknown") + " (" +
               std::to_string(model_type) + ")");
    }
    if (!byte_fallback) refuse("trainer_spec.byte_fallback is false");
    if (unk_id != 0 || bos_id != 1 || eos_id != 2) {
        refuse("trainer_spec has unk_id " + std::to_string(unk_id) + ", bos_id " +
               std::to_string(bos_id) + ", eos_id " + std::to_string(eos_id) +
               "; SpmTokenizer needs 0, 1, 2");
    }
    if (charsmap_size != 0 && normalizer_name != "identity") {
        refuse("normalizer_spec.name is \"" + normalizer_name + "\" with a " +
               std::to_string(charsmap_size) + "-byte precompiled_charsmap");
    }
    if (!escape_whitespaces) refuse("normalizer_spec.escape_whitespaces is false");
    if (pieces.empty()) throw FormatError(name + ": no pieces (is this a SentencePiece model?)");
    SpmOptions options;
    options.rules = SpmRules::kSentencePiece;
    options.add_dummy_prefix = add_dummy_prefix;
    options.remove_extra_whitespaces = remove_extra_whitespaces;
    options.replace_invalid_utf8 = true;
    options.meta_space_is_space = true;
    return SpmTokenizer(std::move(pieces), std::move(scores), std::move(types), options, name);
}

/// Reads a SentencePiece `tokenizer.model` file (memory-mapped while parsing).
inline SpmTokenizer load_sentencepiece_model(const std::string& path) {
    const io::MappedFile file(path);
    return load_sentencepiece_model(file.bytes(), path);
}

}  // namespace softprompt::tok
