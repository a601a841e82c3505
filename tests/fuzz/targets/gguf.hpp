#pragma once
// GGUF: the reader (GgufFile::from_bytes), every typed metadata accessor, every tensor it can
// convert, the LLaMA loader and both embedded tokenizers (SentencePiece and byte-level BPE), each
// then encoding and decoding a short string.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../fuzz_util.hpp"
#include "softprompt/io/gguf.hpp"
#include "softprompt/io/gguf_model.hpp"
#include "softprompt/tok/bpe.hpp"
#include "softprompt/tok/gguf_vocab.hpp"

namespace softprompt_fuzz::gguf_detail {

inline constexpr const char* kGgufText =
    "Hello world, it's 2024! \xE2\x96\x81x \xF0\x9F\x98\x80 \xFF";

// Each step on its own: one that throws must not hide the others.
template <class F>
void attempt(F&& f) {
    try {
        f();
    } catch (const softprompt::Error& e) {
        softprompt_fuzz::rejected(e);
    }
}

// Typed access to a value of another type throws by design: not worth reporting.
template <class F>
void quietly(F&& f) {
    try {
        f();
    } catch (const softprompt::Error&) {
    }
}

inline void visit(const softprompt::io::GgufValue& v) {
    (void)v.to_string();
    gguf_detail::quietly([&] { (void)v.as_int<std::int32_t>(); });
    gguf_detail::quietly([&] { (void)v.as_int<std::uint64_t>(); });
    gguf_detail::quietly([&] { (void)v.as_number(); });
    gguf_detail::quietly([&] { (void)v.as_bool(); });
    gguf_detail::quietly([&] { (void)v.as_string(); });
    gguf_detail::quietly([&] { (void)v.as_strings(); });
    gguf_detail::quietly([&] { (void)v.as_floats(); });
    gguf_detail::quietly([&] { (void)v.as_ints<std::int64_t>(); });
    gguf_detail::quietly([&] { (void)v.as_bools(); });
    gguf_detail::quietly([&] {
        for (const auto& inner : v.as_arrays()) visit(inner);
    });
}

}  // namespace softprompt_fuzz::gguf_detail

namespace softprompt_fuzz {

/// One input of the gguf target (see the top of this file).
inline void gguf(std::string_view input) {
    using namespace softprompt;
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(input.data()),
                                           input.size());
    try {
        const io::GgufFile file = io::GgufFile::from_bytes(bytes, "fuzz.gguf");
        for (const io::GgufValue& v : file.metadata()) gguf_detail::visit(v);
        for (const io::GgufTensorInfo& t : file.tensors()) {
            (void)t.shape_string();
            (void)file.f32_data(t);
            gguf_detail::attempt([&] { (void)file.read_tensor<float>(t.name); });
        }
        gguf_detail::attempt([&] { (void)io::load_gguf_llama<float>(file); });
        gguf_detail::attempt([&] { (void)io::load_gguf_gpt2<float>(file); });
        gguf_detail::attempt([&] {
            const tok::SpmTokenizer spm = tok::gguf_spm_tokenizer(file);
            const std::vector<std::int32_t> ids = spm.encode(gguf_detail::kGgufText, true, true);
            (void)spm.decode(ids);
        });
        gguf_detail::attempt([&] {
            tok::GgufBpeVocab v = tok::gguf_bpe_vocab(file);
            tok::BpeOptions options;
            options.bos = v.bos;
            options.eos = v.eos;
            const tok::BpeTokenizer bpe(std::move(v.tokens), v.merges, options, file.path());
            const std::vector<std::int32_t> ids = bpe.encode(gguf_detail::kGgufText);
            (void)bpe.decode(ids);
        });
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
