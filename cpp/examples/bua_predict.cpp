// bua-predict: next-behavior prediction from C++ alone, the path a phone app takes.
//
//   bua-predict BUNDLE_DIR SOFT_TOKENS.npy [--top-k 5] [--threads 2] [--stream FIRST]
//               [--scoring constrained|summed] [--mass-tolerance 1e-2]
//
// BUNDLE_DIR is a bundle written by `bua-export`; its native/predict.prompt (format below)
// names the GGUF and holds the prediction prompt split at the soft-token slot and the candidate
// continuations. SOFT_TOKENS.npy holds the projected behavior history, float32 [n, n_embd],
// as the bundle's encoder.onnx produces it (an app runs that model with onnxruntime mobile).
//
// --stream FIRST predicts after each of rows FIRST..n as if the events arrived one by one:
// the encoder is causal, so the rows of a longer history start with those of a shorter one,
// and each step evaluates only the new row and the text after the slot, as one batch of rows
// (the KV cache keeps the rest).
// When an app's window reaches the bundle's max_history it drops a block of old events,
// reruns the encoder and starts again from the opening (docs/ON_DEVICE.md).
//
// --scoring constrained (the default, as OnDevicePredictor's): the answer must be a candidate,
// so each candidate token's probability is renormalized over the tokens that continue some
// candidate, and only the branches of the candidates' token trie are evaluated
// (bua::Session::score_constrained). --scoring summed: each candidate's log-probabilities
// under the unconstrained model, scored best first until the rest can neither enter the top k
// nor hold more than --mass-tolerance of the scored mass (bua::ShortlistParams; 0 scores every
// candidate).
//
// native/predict.prompt ("bua-native-prompt 1"), line oriented, byte lengths make it exact:
//   bua-native-prompt 1
//   model <gguf file name inside the bundle>
//   n_ctx <context size>
//   segments <n>          then n times:  "text <bytes>\n<bytes>\n"  or  "soft\n"
//   candidates <n>        then n times:  "<label bytes> <continuation bytes>\n<label><continuation>\n"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "bua/runtime.h"

namespace {

struct Segment {
    bool soft = false;
    std::string text;
};

struct Candidate {
    std::string label;
    std::string continuation;
};

struct PromptFile {
    std::string model;
    int n_ctx = 2048;
    std::vector<Segment> segments;
    std::vector<Candidate> candidates;
};

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

std::string read_exact(std::istream& in, size_t n, const std::string& what) {
    std::string s(n, '\0');
    if (!in.read(s.data(), static_cast<std::streamsize>(n))) fail("truncated " + what);
    return s;
}

void expect_newline(std::istream& in, const std::string& what) {
    if (in.get() != '\n') fail("malformed " + what + ": expected a newline");
}

PromptFile read_prompt(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("cannot open " + path + " (was the bundle written by bua-export?)");
    PromptFile p;
    std::string word;
    int version = 0;
    if (!(in >> word >> version) || word != "bua-native-prompt" || version != 1)
        fail(path + ": not a bua-native-prompt version 1 file");
    size_t n = 0;
    if (!(in >> word >> p.model) || word != "model") fail(path + ": missing 'model'");
    if (!(in >> word >> p.n_ctx) || word != "n_ctx") fail(path + ": missing 'n_ctx'");
    if (!(in >> word >> n) || word != "segments") fail(path + ": missing 'segments'");
    for (size_t i = 0; i < n; ++i) {
        Segment seg;
        if (!(in >> word)) fail(path + ": truncated segment list");
        if (word == "soft") {
            seg.soft = true;
            expect_newline(in, "soft segment");
        } else if (word == "text") {
            size_t len = 0;
            in >> len;
            expect_newline(in, "text segment header");
            seg.text = read_exact(in, len, "text segment");
            expect_newline(in, "text segment");
        } else {
            fail(path + ": unknown segment kind '" + word + "'");
        }
        p.segments.push_back(std::move(seg));
    }
    if (!(in >> word >> n) || word != "candidates") fail(path + ": missing 'candidates'");
    for (size_t i = 0; i < n; ++i) {
        size_t a = 0, b = 0;
        if (!(in >> a >> b)) fail(path + ": truncated candidate list");
        expect_newline(in, "candidate header");
        Candidate c;
        c.label = read_exact(in, a, "candidate label");
        c.continuation = read_exact(in, b, "candidate continuation");
        expect_newline(in, "candidate");
        p.candidates.push_back(std::move(c));
    }
    return p;
}

// Reads a little-endian float32, C-order, 2-D .npy file.
std::vector<float> read_npy_f32(const std::string& path, int& rows, int& cols) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("cannot open " + path);
    char magic[6];
    if (!in.read(magic, 6) || std::memcmp(magic, "\x93NUMPY", 6) != 0) fail(path + ": not a .npy file");
    const int major = in.get();
    in.get();
    size_t header_len = 0;
    if (major == 1) {
        unsigned char b[2];
        in.read(reinterpret_cast<char*>(b), 2);
        header_len = b[0] | (b[1] << 8);
    } else {
        unsigned char b[4];
        in.read(reinterpret_cast<char*>(b), 4);
        header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (size_t(b[3]) << 24);
    }
    const std::string header = read_exact(in, header_len, ".npy header");
    if (header.find("'descr': '<f4'") == std::string::npos) fail(path + ": expected float32 ('<f4') data");
    if (header.find("'fortran_order': False") == std::string::npos) fail(path + ": expected C order");
    const size_t open = header.find("'shape': (");
    if (open == std::string::npos) fail(path + ": no shape in header");
    if (std::sscanf(header.c_str() + open, "'shape': (%d, %d)", &rows, &cols) != 2) fail(path + ": expected a 2-D array");
    std::vector<float> data(static_cast<size_t>(rows) * cols);
    if (!in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(float))))
        fail(path + ": truncated data");
    return data;
}

// Softmax over the scored candidates' log-probabilities; prints the top k.
void print_top(const PromptFile& prompt, const bua::ShortlistScores& scores, int top_k, int n_past, int n_soft) {
    std::vector<size_t> order;
    for (size_t i = 0; i < scores.scored.size(); ++i)
        if (scores.scored[i]) order.push_back(i);
    const std::vector<double>& logp = scores.logprob;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logp[a] > logp[b]; });
    const double m = logp[order.front()];
    double z = 0;
    for (size_t i : order) z += std::exp(logp[i] - m);
    std::printf("prompt: %d positions (%d soft tokens); %zu of %zu candidates scored, %d candidate positions\n",
                n_past, n_soft, order.size(), scores.scored.size(), scores.positions);
    for (int r = 0; r < top_k && r < static_cast<int>(order.size()); ++r) {
        const size_t i = order[r];
        std::printf("%d. %-28s p=%.4f\n", r + 1, prompt.candidates[i].label.c_str(), std::exp(logp[i] - m) / z);
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s BUNDLE_DIR SOFT_TOKENS.npy [--top-k K] [--threads N] [--stream FIRST] "
                     "[--scoring constrained|summed] [--mass-tolerance X]\n", argv[0]);
        return 2;
    }
    const std::string bundle = argv[1];
    const std::string npy = argv[2];
    int top_k = 5, threads = 2, stream_first = 0;
    double mass_tolerance = bua::ShortlistParams().mass_tolerance;
    std::string scoring = "constrained";
    for (int i = 3; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--top-k") == 0) top_k = std::atoi(argv[i + 1]);
        else if (std::strcmp(argv[i], "--threads") == 0) threads = std::atoi(argv[i + 1]);
        else if (std::strcmp(argv[i], "--stream") == 0) stream_first = std::atoi(argv[i + 1]);
        else if (std::strcmp(argv[i], "--mass-tolerance") == 0) mass_tolerance = std::atof(argv[i + 1]);
        else if (std::strcmp(argv[i], "--scoring") == 0) scoring = argv[i + 1];
        else {
            std::fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    try {
        const PromptFile prompt = read_prompt(bundle + "/native/predict.prompt");
        int rows = 0, cols = 0;
        const std::vector<float> soft = read_npy_f32(npy, rows, cols);

        auto model = bua::Model::load(bundle + "/" + prompt.model);
        bua::SessionParams params;
        params.n_ctx = prompt.n_ctx;
        params.n_threads = threads;
        if (scoring != "constrained" && scoring != "summed")
            fail("--scoring must be constrained or summed, got " + scoring);
        if (stream_first < 0 || stream_first > rows) fail("--stream must lie in 1.." + std::to_string(rows));
        if (cols != model->n_embd())
            fail(npy + ": rows of width " + std::to_string(cols) + ", the model's embeddings have " +
                 std::to_string(model->n_embd()));
        bua::Session session(model, params);
        std::vector<std::vector<bua::Token>> conts;
        for (const Candidate& c : prompt.candidates) conts.push_back(model->tokenize(c.continuation, false, true));

        // Everything before the soft slot, then the soft rows and the rest, once per prediction.
        size_t slot = 0;
        while (slot < prompt.segments.size() && !prompt.segments[slot].soft) {
            session.eval_tokens(model->tokenize(prompt.segments[slot].text, false, true));
            ++slot;
        }
        const int opening = session.n_past();
        // The text after the slot joins the new soft rows as its token-embedding rows: one
        // llama_decode per prediction instead of two (each has a fixed cost of weight reads).
        std::vector<bua::Token> after_slot;
        for (size_t s = slot + 1; s < prompt.segments.size(); ++s) {
            const auto tokens = model->tokenize(prompt.segments[s].text, false, true);
            after_slot.insert(after_slot.end(), tokens.begin(), tokens.end());
        }
        const std::vector<float> after_rows = model->token_embeddings(after_slot);
        std::vector<float> batch;
        int cached_rows = 0;
        for (int n = stream_first > 0 ? stream_first : rows; n <= rows; ++n) {
            session.truncate(opening + cached_rows);  // keep the opening and the rows so far
            batch.assign(soft.begin() + static_cast<std::ptrdiff_t>(cached_rows) * cols,
                         soft.begin() + static_cast<std::ptrdiff_t>(n) * cols);
            batch.insert(batch.end(), after_rows.begin(), after_rows.end());
            const int n_batch_rows = static_cast<int>(batch.size() / cols);
            cached_rows = n;
            bua::ShortlistScores scores;
            if (scoring == "constrained") {  // the names' branches share the rows' llama_decode
                scores = session.eval_and_score_constrained(batch.data(), n_batch_rows, cols, conts);
            } else {
                session.eval_embeddings(batch.data(), n_batch_rows, cols);
                bua::ShortlistParams shortlist;
                shortlist.top_k = std::max(1, top_k);
                shortlist.mass_tolerance = mass_tolerance;
                scores = session.score_top_continuations(conts, shortlist);
            }
            print_top(prompt, scores, top_k, session.n_past(), n);
        }
    } catch (const bua::Error& e) {
        std::fprintf(stderr, "error (%s): %s\n", bua::error_kind_name(e.kind()), e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
