// Trains a key/value prefix for a frozen one-layer attention model with softprompt's autograd.
//
// The model's weights are random and read-only; only the prefix (P key rows and P value rows)
// learns. The task: whatever the input tokens, predict token 7 at every position. The frozen model
// cannot do that on its own; a prefix that every query attends to can steer it there.
//
// Usage: train_param [steps]      (default 200)

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <softprompt/softprompt.hpp>
#include <vector>

using namespace softprompt;
using namespace softprompt::autograd;

namespace {

Mat<float> random_matrix(Index rows, Index cols, std::mt19937& gen, float scale) {
    std::normal_distribution<float> normal(0.0f, scale);
    Mat<float> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = normal(gen);
    return m;
}

// The frozen model: embeddings [V, d], fused QKV [3d, d], output head [V, d], one RMSNorm gain.
struct FrozenModel {
    Index vocab = 32, d = 32, heads = 4;
    Mat<float> embed, qkv, head, gain;
};

}  // namespace

int main(int argc, char** argv) {
    const int steps = argc > 1 ? std::atoi(argv[1]) : 200;
    if (steps <= 0) {
        std::fprintf(stderr, "train_param: steps must be a positive integer, got '%s'\n", argv[1]);
        return 2;
    }
    std::mt19937 gen(2026);
    FrozenModel m;
    m.embed = random_matrix(m.vocab, m.d, gen, 1.0f);
    m.qkv = random_matrix(3 * m.d, m.d, gen, 0.3f);
    m.head = random_matrix(m.vocab, m.d, gen, 0.3f);
    m.gain = Mat<float>::Ones(1, m.d);
    const Mat<float> qkv_before = m.qkv;

    const Index batch = 4, seq = 8, P = 4;
    std::vector<std::int32_t> ids(std::size_t(batch * seq)), lengths = {8, 6, 8, 5};
    std::uniform_int_distribution<std::int32_t> token(0, std::int32_t(m.vocab) - 1);
    for (auto& id : ids) id = token(gen);
    std::vector<std::int32_t> targets(ids.size(), 7);
    for (Index b = 0; b < batch; ++b)  // padded positions carry no label
        for (Index s = lengths[std::size_t(b)]; s < seq; ++s)
            targets[std::size_t(b * seq + s)] = -100;

    Param<float> prefix_k("prefix.keys", Mat<float>::Zero(P, m.d));
    Param<float> prefix_v("prefix.values", random_matrix(P, m.d, gen, 0.1f));
    optim::Sgd<float> sgd({&prefix_k, &prefix_v}, {.lr = 0.5, .momentum = 0.9});
    const AttentionSpec spec{.batch = batch,
                             .seq = seq,
                             .n_heads = m.heads,
                             .n_kv_heads = m.heads,
                             .head_dim = m.d / m.heads};

    auto forward = [&](Tape<float>& t) {
        Var<float> x = gather_rows(t, frozen(m.embed), ids);
        Var<float> h = rms_norm(t, x, frozen(m.gain), 1e-5f);
        Var<float> qkv = matmul_wt(t, h, frozen(m.qkv));
        Var<float> a = attention(t, slice_cols(t, qkv, 0, m.d), slice_cols(t, qkv, m.d, m.d),
                                 slice_cols(t, qkv, 2 * m.d, m.d), spec, lengths, t.param(prefix_k),
                                 t.param(prefix_v));
        Var<float> logits = matmul_wt(t, add(t, x, a), frozen(m.head));
        return std::make_pair(cross_entropy(t, logits, targets), logits);
    };
    auto accuracy = [&](const Mat<float>& logits) {
        int right = 0, total = 0;
        for (Index r = 0; r < logits.rows(); ++r) {
            if (targets[std::size_t(r)] < 0) continue;
            Index best = 0;
            logits.row(r).maxCoeff(&best);
            right += best == targets[std::size_t(r)];
            ++total;
        }
        return 100.0 * right / total;
    };

    std::printf("trainable parameters: %lld (frozen: %lld)\n",
                static_cast<long long>(prefix_k.size() + prefix_v.size()),
                static_cast<long long>(m.embed.size() + m.qkv.size() + m.head.size()));
    for (int step = 0; step <= steps; ++step) {
        Tape<float> tape;
        auto [loss, logits] = forward(tape);
        if (step % 25 == 0 || step == steps)
            std::printf("step %4d  loss %.4f  accuracy %5.1f%%\n", step, double(loss.item()),
                        accuracy(logits.value()));
        if (step == steps) break;
        tape.backward(loss);
        sgd.step();
        sgd.zero_grad();
    }
    const bool untouched = std::memcmp(qkv_before.data(), m.qkv.data(),
                                       sizeof(float) * std::size_t(m.qkv.size())) == 0;
    std::printf("frozen weights unchanged: %s\n", untouched ? "yes" : "NO");
    return untouched ? 0 : 1;
}
