// C++ tests of the bua runtime, runnable under AddressSanitizer/LeakSanitizer.
//   bua-runtime-tests MODEL.gguf     (or BUA_TEST_GGUF=MODEL.gguf bua-runtime-tests)
// Exit status 0 when every check passes.
#include <algorithm>
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

    using K = bua::ErrorKind;
    K kind{};

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

    // Shortlist scoring: the top k exact and in order, the rest bounded above, their mass small.
    std::vector<std::vector<bua::Token>> names;
    for (const char* name : {"check weather", "check email", "subway", "bus", "watching video", "watching TV",
                             "cooking", "coffee", "reading news", "running", "shopping", "sleep"})
        names.push_back(model->tokenize(std::string(name) + "<|im_end|>", false, true));
    const auto exact = scorer.score_continuations(names);
    bua::ShortlistParams all_params;
    all_params.mass_tolerance = 0.0;
    const auto all = scorer.score_top_continuations(names, all_params);
    bool all_same = std::count(all.scored.begin(), all.scored.end(), 1) == static_cast<long>(names.size());
    for (size_t c = 0; c < names.size(); ++c) all_same = all_same && std::fabs(all.logprob[c] - exact[c]) < 1e-9;
    check(all_same, "mass_tolerance 0 scores every candidate exactly");
    for (int k : {1, 3}) {
        bua::ShortlistParams sp;
        sp.top_k = k;
        sp.mass_tolerance = 1e-2;
        sp.min_batch_positions = k == 1 ? 1 : 16;  // one candidate per batch: the most rounds
        const auto short_scores = scorer.score_top_continuations(names, sp);
        std::vector<size_t> want(names.size()), got;
        for (size_t c = 0; c < names.size(); ++c) want[c] = c;
        std::sort(want.begin(), want.end(), [&](size_t a, size_t b) { return exact[a] > exact[b]; });
        double scored_mass = 0, unscored_mass = 0;
        bool sound = true;
        for (size_t c = 0; c < names.size(); ++c) {
            if (short_scores.scored[c]) {
                got.push_back(c);
                scored_mass += std::exp(exact[c]);
                sound = sound && std::fabs(short_scores.logprob[c] - exact[c]) < 1e-3;
            } else {
                unscored_mass += std::exp(exact[c]);
                sound = sound && short_scores.logprob[c] >= exact[c] - 1e-3;  // an upper bound
            }
        }
        std::sort(got.begin(), got.end(), [&](size_t a, size_t b) { return exact[a] > exact[b]; });
        const bool top_ok = got.size() >= static_cast<size_t>(k) && std::equal(want.begin(), want.begin() + k, got.begin());
        check(top_ok && sound, "shortlist top-" + std::to_string(k) + ": exact, in order; the rest bounded above");
        check(unscored_mass <= 1e-2 * scored_mass + 1e-9,
              "shortlist top-" + std::to_string(k) + ": unscored mass within the tolerance (" +
                  std::to_string(got.size()) + " of " + std::to_string(names.size()) + " scored, " +
                  std::to_string(short_scores.positions) + " positions vs " + std::to_string(all.positions) + ")");
        check(scorer.n_past() == before, "shortlist scoring leaves the dialogue unchanged");
    }

    // Constrained scoring == renormalizing each branch's next-token distribution, evaluated
    // sequentially, over the tokens that continue some candidate.
    const auto constrained = scorer.score_constrained(names);
    check(scorer.n_past() == before, "constrained scoring leaves the dialogue unchanged");
    double total = 0.0;
    bool matches = std::count(constrained.scored.begin(), constrained.scored.end(), 1) == static_cast<long>(names.size());
    for (size_t c = 0; c < names.size(); ++c) {
        total += std::exp(constrained.logprob[c]);
        bua::Session ref(model, params);
        ref.eval_tokens(ids);
        double lp = 0;
        for (size_t j = 0; j < names[c].size(); ++j) {
            std::vector<bua::Token> allowed;
            for (const auto& other : names)
                if (other.size() > j && std::equal(other.begin(), other.begin() + j, names[c].begin()) &&
                    std::find(allowed.begin(), allowed.end(), other[j]) == allowed.end())
                    allowed.push_back(other[j]);
            const auto lg = ref.last_logits();
            double s = 0;
            for (bua::Token t : allowed) s += std::exp(double(lg[t]));
            lp += double(lg[names[c][j]]) - std::log(s);
            ref.eval_tokens({names[c][j]});
        }
        matches = matches && std::fabs(lp - constrained.logprob[c]) < 1e-3;
    }
    check(matches, "constrained scores match sequential renormalized evaluation");
    check(std::fabs(total - 1.0) < 1e-9, "constrained scores sum to 1 over the candidates");
    check(constrained.positions < all.positions,
          "constrained scoring evaluates only the branches (" + std::to_string(constrained.positions) + " positions vs " +
              std::to_string(all.positions) + ")");
    check(throws_bua_error([&] { scorer.score_constrained({names[0], names[0]}); }, &kind) && kind == K::invalid_argument,
          "a repeated candidate throws an invalid_argument error");
    check(throws_bua_error([&] { scorer.score_constrained({{names[0][0]}, names[0]}); }, &kind) && kind == K::invalid_argument,
          "a candidate that is a prefix of another throws an invalid_argument error");

    // The prompt's last rows and the constrained scoring in one decode == the two calls, and
    // the same when the branches do not fit beside the rows (too few sequences to copy to).
    const std::vector<bua::Token> tail(ids.end() - 4, ids.end());
    const auto tail_rows = model->token_embeddings(tail);
    for (int n_seq_max : {params.n_seq_max, 2}) {  // 2: one copy, fewer than the branches
        bua::SessionParams p = params;
        p.n_seq_max = n_seq_max;
        bua::Session fused(model, p);
        fused.eval_tokens(std::vector<bua::Token>(ids.begin(), ids.end() - 4));
        const auto f = fused.eval_and_score_constrained(tail_rows.data(), 4, model->n_embd(), names);
        double worst = 0.0;
        for (size_t c = 0; c < names.size(); ++c) worst = std::max(worst, std::fabs(f.logprob[c] - constrained.logprob[c]));
        const bool fits = n_seq_max == params.n_seq_max;
        const std::string how = fits ? "in the rows' decode" : "falling back to two calls";
        check(worst < 1e-3 && f.positions == constrained.positions && (f.decodes == 0) == fits,
              "eval_and_score_constrained gives eval_embeddings + score_constrained's scores, " + how);
        check(fused.n_past() == before && max_abs_diff(fused.last_logits(), logits_ids) <= 1e-4,
              "eval_and_score_constrained leaves the dialogue and its logits as eval_embeddings does, " + how);
    }
    {
        bua::Session none(model, params);
        none.eval_tokens(std::vector<bua::Token>(ids.begin(), ids.end() - 4));
        const auto empty = none.eval_and_score_constrained(tail_rows.data(), 4, model->n_embd(), {});
        check(empty.logprob.empty() && none.n_past() == before && scorer.score_constrained({}).logprob.empty(),
              "no candidates: nothing to score, the rows still evaluated");
    }
    {
        bua::SessionParams single = params;
        single.n_seq_max = 1;  // no sequence to copy the dialogue to
        bua::Session alone(model, single);
        alone.eval_tokens(std::vector<bua::Token>(ids.begin(), ids.end() - 4));
        const int n = alone.n_past();
        K k1{}, k2{};
        check(throws_bua_error([&] { alone.score_constrained(names); }, &k1) && k1 == K::invalid_state &&
                  throws_bua_error([&] { alone.eval_and_score_constrained(tail_rows.data(), 4, model->n_embd(), names); }, &k2) &&
                  k2 == K::invalid_state && alone.n_past() == n,
              "scoring in a session with n_seq_max 1 throws invalid_state and evaluates nothing");
    }
    check(throws_bua_error([&] { scorer.eval_and_score_constrained(tail_rows.data(), 2, model->n_embd() + 1, names); }, &kind) &&
              kind == K::invalid_argument && scorer.n_past() == before,
          "eval_and_score_constrained: rows of the wrong width throw invalid_argument and change nothing");

    // A model that is sure of the continuation: the shortlist scores a few candidates, not all.
    bua::Session counting(model, params);
    counting.eval_tokens(model->tokenize("Counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ", false, false));
    std::vector<std::vector<bua::Token>> numbers;
    for (const char* next : {"13,", "2,", "5,", "7,", "9,", "8,", "4,", "6,", "3,", "0,"})
        numbers.push_back(model->tokenize(next, false, false));
    bua::ShortlistParams one_at_a_time;
    one_at_a_time.top_k = 1;
    one_at_a_time.min_batch_positions = 1;
    const auto sure = counting.score_top_continuations(numbers, one_at_a_time);
    const auto every = counting.score_continuations(numbers);
    const long n_scored = std::count(sure.scored.begin(), sure.scored.end(), 1);
    check(sure.scored[0] == 1 && std::fabs(sure.logprob[0] - every[0]) < 1e-3 &&
              n_scored < static_cast<long>(numbers.size()),
          "a sure model's shortlist scores " + std::to_string(n_scored) + " of " + std::to_string(numbers.size()) +
              " candidates, the answer exactly");

    // KV reuse and truncation.
    bua::Session dialog(model, params);
    dialog.eval_tokens(ids);
    dialog.eval_tokens(model->tokenize("Sure.", false, true));
    const int n = dialog.n_past();
    dialog.truncate(static_cast<int>(ids.size()));
    dialog.eval_tokens(model->tokenize("Sure.", false, true));
    check(dialog.n_past() == n, "truncate then re-evaluate restores the length");

    // Errors, never crashes; each of its kind.
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
    bua::ShortlistParams no_k;
    no_k.top_k = 0;
    check(throws_bua_error([&] { scorer.score_top_continuations(names, no_k); }, &kind) && kind == K::invalid_argument,
          "a shortlist of top_k 0 throws an invalid_argument error");

    std::printf("%d failure(s)\n", failures);
    return failures == 0 ? 0 : 1;
}
