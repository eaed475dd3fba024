// C++ tests of the bua runtime, runnable under AddressSanitizer/LeakSanitizer.
//   bua-runtime-tests MODEL.gguf     (or BUA_TEST_GGUF=MODEL.gguf bua-runtime-tests)
// Exit status 0 when every check passes.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bua/runtime.h"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) ++failures;
}

bool throws_bua_error(const std::function<void()>& f, bua::ErrorKind* kind = nullptr) {
    try {
        f();
    } catch (const bua::Error& e) {
        if (kind) *kind = e.kind();
        return true;
    }
    return false;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
    return m;
}

}  // namespace

int main(int argc, char** argv) {
    const char* path = argc > 1 ? argv[1] : std::getenv("BUA_TEST_GGUF");
    if (!path) {
        std::fprintf(stderr, "usage: %s MODEL.gguf (or set BUA_TEST_GGUF)\n", argv[0]);
        return 2;
    }
    // The llama.cpp this binary links must be safe on this CPU (Model::load refuses otherwise);
    // an AMX build, or one with an instruction set nobody has, is reported.
    const auto problems = bua::build_problems();
    check(problems.empty(), "the linked llama.cpp runs on this CPU: " + bua::system_info());
    check(bua::system_info().find("AMX") == std::string::npos, "llama.cpp's AMX backend is not compiled in");
    check(!bua::build_problems("CPU : SSE3 = 1 | AMX_INT8 = 1 | REPACK = 1 |").empty(),
          "an AMX build is refused");
    check(bua::build_problems("CPU : SSE3 = 1 | REPACK = 1 | LLAMAFILE = 1 |").empty(),
          "non-ISA system-info entries are not problems");

    auto model = bua::Model::load(path);
    bua::SessionParams params;
    params.n_ctx = 256;
    params.n_threads = 1;

    const auto ids = model->tokenize("<|im_start|>user\nWhich behavior usually follows the morning alarm?<|im_end|>\n<|im_start|>assistant\n", false, true);
    check(ids.size() > 10, "tokenize gives a prompt of more than 10 tokens");

    // Token ids vs the same positions fed as embedding rows.
    bua::Session by_ids(model, params);
    by_ids.eval_tokens(ids);
    const auto logits_ids = by_ids.last_logits();
    const auto gen_ids = by_ids.generate(8, {});

    const size_t a = 3, b = 9;
    const std::vector<bua::Token> middle(ids.begin() + a, ids.begin() + b);
    const auto rows = model->token_embeddings(middle);
    bua::Session mixed(model, params);
    mixed.eval_tokens(std::vector<bua::Token>(ids.begin(), ids.begin() + a));
    mixed.eval_embeddings(rows.data(), static_cast<int>(middle.size()), model->n_embd());
    mixed.eval_tokens(std::vector<bua::Token>(ids.begin() + b, ids.end()));
    check(max_abs_diff(mixed.last_logits(), logits_ids) <= 1e-4, "embedding rows reproduce token-id logits");
    check(mixed.generate(8, {}).tokens == gen_ids.tokens, "embedding rows reproduce the greedy continuation");

    // Candidate scoring on shared KV == appending each candidate to a fresh dialogue.
    bua::Session scorer(model, params);
    scorer.eval_tokens(ids);
    const std::vector<std::vector<bua::Token>> cands = {
        model->tokenize("check weather<|im_end|>", false, true),
        model->tokenize("subway<|im_end|>", false, true),
        model->tokenize("x", false, true),
    };
    const int before = scorer.n_past();
    const auto scores = scorer.score_continuations(cands);
    check(scorer.n_past() == before, "scoring leaves the dialogue unchanged");
    bool same = true;
    for (size_t c = 0; c < cands.size(); ++c) {
        bua::Session ref(model, params);
        ref.eval_tokens(ids);
        double lp = 0;
        for (bua::Token t : cands[c]) {
            const auto lg = ref.last_logits();
            double m = lg[0];
            for (float v : lg) m = std::max(m, double(v));
            double s = 0;
            for (float v : lg) s += std::exp(double(v) - m);
            lp += double(lg[t]) - (m + std::log(s));
            ref.eval_tokens({t});
        }
        same = same && std::fabs(lp - scores[c]) < 1e-3;
    }
    check(same, "shared-prefix candidate scores match sequential evaluation");
    check(max_abs_diff(scorer.last_logits(), logits_ids) == 0.0, "prompt logits survive scoring");

    // KV reuse and truncation.
    bua::Session dialog(model, params);
    dialog.eval_tokens(ids);
    dialog.eval_tokens(model->tokenize("Sure.", false, true));
    const int n = dialog.n_past();
    dialog.truncate(static_cast<int>(ids.size()));
    dialog.eval_tokens(model->tokenize("Sure.", false, true));
    check(dialog.n_past() == n, "truncate then re-evaluate restores the length");

    // Errors, never crashes; each of its kind.
    using K = bua::ErrorKind;
    K kind{};
    bua::Session small(model, params);
    const int room = small.n_ctx();  // llama.cpp may round the context up
    small.eval_tokens(std::vector<bua::Token>(room - 4, ids[0]));
    check(throws_bua_error([&] { small.eval_tokens(std::vector<bua::Token>(10, ids[0])); }, &kind) &&
              kind == K::context_full,
          "context overflow throws a context_full error");
    check(small.n_past() == room - 4, "a failed eval leaves the dialogue unchanged");
    check(throws_bua_error([&] { small.eval_embeddings(rows.data(), 1, model->n_embd() + 1); }, &kind) &&
              kind == K::invalid_argument,
          "wrong embedding width throws an invalid_argument error");
    check(throws_bua_error([&] { small.eval_tokens({-5}); }, &kind) && kind == K::invalid_argument,
          "a token id outside the vocabulary throws an invalid_argument error");
    check(throws_bua_error([&] { bua::Model::load("/nonexistent/model.gguf"); }, &kind) && kind == K::io,
          "a missing GGUF throws an io error");
    check(throws_bua_error([&] { bua::Session s(model, params); s.generate(4, {}); }, &kind) && kind == K::invalid_state,
          "generate without a prompt throws an invalid_state error");

    std::printf("%d failure(s)\n", failures);
    return failures == 0 ? 0 : 1;
}
