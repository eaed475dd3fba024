#include "bua/runtime.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <mutex>
#include <numeric>
#include <thread>

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

namespace bua {

namespace {

// llama.cpp logs every tensor at load time. Keep warnings and errors unless BUA_LLAMA_LOG=1.
// GGML_LOG_LEVEL_CONT continues the previous message at that message's level.
void quiet_log(ggml_log_level level, const char* text, void* /*user*/) {
    static thread_local ggml_log_level last = GGML_LOG_LEVEL_INFO;
    if (level != GGML_LOG_LEVEL_CONT) last = level;
    if (last == GGML_LOG_LEVEL_WARN || last == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

void init_backend_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        const char* verbose = std::getenv("BUA_LLAMA_LOG");
        if (!(verbose && std::strcmp(verbose, "1") == 0)) llama_log_set(quiet_log, nullptr);
        llama_backend_init();
    });
}

// A llama_batch over caller-owned tokens or embedding rows: nothing is copied. Positions start
// at pos0 on sequence seq; only the last row asks for logits when want_last_logits is set.
struct BorrowedBatch {
    std::vector<llama_pos> pos;
    std::vector<int32_t> n_seq_id;
    std::vector<llama_seq_id> seq_storage;
    std::vector<llama_seq_id*> seq_ptrs;
    std::vector<int8_t> logits;
    llama_batch batch{};

    BorrowedBatch(int n, const Token* tokens, const float* rows, int pos0, llama_seq_id seq,
                  bool want_last_logits)
        : pos(n), n_seq_id(n, 1), seq_storage(n, seq), seq_ptrs(n), logits(n, 0) {
        for (int i = 0; i < n; ++i) {
            pos[i] = pos0 + i;
            seq_ptrs[i] = &seq_storage[i];
        }
        if (want_last_logits && n > 0) logits[n - 1] = 1;
        batch.n_tokens = n;
        batch.token = const_cast<Token*>(tokens);
        batch.embd = const_cast<float*>(rows);
        batch.pos = pos.data();
        batch.n_seq_id = n_seq_id.data();
        batch.seq_id = seq_ptrs.data();
        batch.logits = logits.data();
    }
};

// A llama_batch allocated by llama.cpp (token ids, or embedding rows of width embd > 0; up to
// n_seq_max sequence ids per position), freed on scope exit.
struct OwnedBatch {
    llama_batch batch;
    explicit OwnedBatch(int n_tokens, int embd = 0, int n_seq_max = 1)
        : batch(llama_batch_init(n_tokens, embd, n_seq_max)) { batch.n_tokens = 0; }
    ~OwnedBatch() { llama_batch_free(batch); }
    OwnedBatch(const OwnedBatch&) = delete;
    OwnedBatch& operator=(const OwnedBatch&) = delete;
};

double log_sum_exp(const float* logits, int n_vocab) {
    double m = logits[0];
    for (int i = 1; i < n_vocab; ++i) m = std::max(m, static_cast<double>(logits[i]));
    double s = 0.0;
    for (int i = 0; i < n_vocab; ++i) s += std::exp(static_cast<double>(logits[i]) - m);
    return m + std::log(s);
}

// Constrained scoring's token trie: each prefix of a candidate -> the distinct tokens that
// continue it. Candidates must be distinct and prefix-free.
using TokenTrie = std::map<std::vector<Token>, std::vector<Token>>;
// At each branch (a prefix with two or more continuations) the log-probabilities of its tokens,
// renormalized over them, in the order of the trie's entry.
using BranchLogp = std::map<std::vector<Token>, std::vector<double>>;

TokenTrie candidate_trie(const std::vector<std::vector<Token>>& candidates, const char* who) {
    TokenTrie next;
    for (const auto& cand : candidates)
        for (size_t j = 0; j < cand.size(); ++j) {
            auto& tokens = next[std::vector<Token>(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(j))];
            if (std::find(tokens.begin(), tokens.end(), cand[j]) == tokens.end()) tokens.push_back(cand[j]);
        }
    if (std::set<std::vector<Token>>(candidates.begin(), candidates.end()).size() < candidates.size())
        throw Error(ErrorKind::invalid_argument, std::string(who) + ": two candidates are the same tokens");
    for (size_t c = 0; c < candidates.size(); ++c)
        if (next.count(candidates[c]))
            throw Error(ErrorKind::invalid_argument, std::string(who) + ": candidate " + std::to_string(c) +
                        " is a prefix of another; end every candidate with the same end token");
    return next;
}

// The prefixes after which the trie branches, except the empty one (the prompt's own next token).
std::vector<std::vector<Token>> branch_paths(const TokenTrie& next) {
    std::vector<std::vector<Token>> paths;
    for (const auto& [prefix, tokens] : next)
        if (tokens.size() > 1 && !prefix.empty()) paths.push_back(prefix);
    return paths;
}

std::vector<double> renormalized(const std::vector<Token>& tokens, const float* logits) {
    double m = -INFINITY;
    for (Token t : tokens) m = std::max(m, static_cast<double>(logits[t]));
    double s = 0.0;
    for (Token t : tokens) s += std::exp(static_cast<double>(logits[t]) - m);
    std::vector<double> logp;
    for (Token t : tokens) logp.push_back(static_cast<double>(logits[t]) - m - std::log(s));
    return logp;
}

// The branch at the answer's first token, from the prompt's logits (none when every candidate
// starts with the same token).
BranchLogp root_branch(const TokenTrie& next, const float* prompt_logits) {
    BranchLogp branch_logp;
    const auto root = next.find({});
    if (root != next.end() && root->second.size() > 1) branch_logp[{}] = renormalized(root->second, prompt_logits);
    return branch_logp;
}

// Every candidate's log-probability: the sum over its branches; a token that is the only
// continuation has probability 1.
void constrained_logprobs(const std::vector<std::vector<Token>>& candidates, const TokenTrie& next,
                          const BranchLogp& branch_logp, ShortlistScores& out) {
    out.logprob.assign(candidates.size(), 0.0);
    out.scored.assign(candidates.size(), 1);
    for (size_t c = 0; c < candidates.size(); ++c) {
        const auto& cand = candidates[c];
        for (size_t j = 0; j < cand.size(); ++j) {
            const std::vector<Token> prefix(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(j));
            const auto branch = branch_logp.find(prefix);
            if (branch == branch_logp.end()) continue;
            const auto& tokens = next.at(prefix);
            out.logprob[c] += branch->second[std::find(tokens.begin(), tokens.end(), cand[j]) - tokens.begin()];
        }
    }
}

std::vector<size_t> every_index(size_t n) {
    std::vector<size_t> all(n);
    std::iota(all.begin(), all.end(), size_t{0});
    return all;
}

}  // namespace

const char* error_kind_name(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::invalid_argument: return "invalid_argument";
        case ErrorKind::invalid_state: return "invalid_state";
        case ErrorKind::context_full: return "context_full";
        case ErrorKind::io: return "io";
        case ErrorKind::llama: return "llama";
        case ErrorKind::unsupported_cpu: return "unsupported_cpu";
    }
    return "unknown";
}

std::string explain_decode_status(int status) {
    switch (status) {
        case 0: return "success";
        case 1: return "no room in the KV cache for the batch (the context is full: use a larger n_ctx or a shorter dialogue)";
        case 2: return "decoding was aborted";
        case -1: return "invalid input batch";
        default:
            return status < -1 ? "fatal error inside llama_decode (status " + std::to_string(status) + ")"
                               : "warning status " + std::to_string(status);
    }
}

// ---------------------------------------------------------------------------------------------
// Model

struct Model::EmbeddingTable {
    ggml_type type;
    int64_t width;
    int64_t rows;
    size_t row_bytes;
    uint64_t offset;  // of row 0 in the file
    mutable std::mutex mutex;  // guards `file` (a Model is shared across threads)
    mutable std::ifstream file;
};

void Model::Free::operator()(llama_model* model) const { llama_model_free(model); }

Model::Model(llama_model* model, std::string path)
    : model_(model), vocab_(llama_model_get_vocab(model)), path_(std::move(path)) {}

Model::~Model() = default;

std::shared_ptr<Model> Model::load(const std::string& path) {
    init_backend_once();
    const std::vector<std::string> problems = build_problems();
    if (!problems.empty()) {
        std::string what = "this llama.cpp build cannot run on this CPU:";
        for (const std::string& p : problems) what += "\n  " + p;
        throw Error(ErrorKind::unsupported_cpu, what + "\nRebuild it for this CPU: python scripts/llama_build.py ensure (docs/ON_DEVICE.md)");
    }
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
        std::fclose(f);
    } else {
        throw Error(ErrorKind::io, "GGUF file not found or unreadable: " + path);
    }
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model* raw = llama_model_load_from_file(path.c_str(), mp);
    if (!raw) throw Error(ErrorKind::llama, "llama.cpp could not load the GGUF model " + path + " (corrupt file or unsupported architecture; set BUA_LLAMA_LOG=1 for details)");
    return std::shared_ptr<Model>(new Model(raw, path));
}

int Model::n_embd() const { return llama_model_n_embd_inp(model_.get()); }
int Model::n_vocab() const { return llama_vocab_n_tokens(vocab_); }
int Model::n_ctx_train() const { return llama_model_n_ctx_train(model_.get()); }

std::string Model::description() const {
    char buf[256];
    int n = llama_model_desc(model_.get(), buf, sizeof(buf));
    return n > 0 ? std::string(buf, std::min<int>(n, sizeof(buf) - 1)) : std::string();
}

std::string Model::meta(const std::string& key) const {
    int n = llama_model_meta_val_str(model_.get(), key.c_str(), nullptr, 0);
    if (n < 0) return std::string();
    std::string out(n + 1, '\0');
    llama_model_meta_val_str(model_.get(), key.c_str(), out.data(), out.size());
    out.resize(n);
    return out;
}

std::vector<Token> Model::tokenize(const std::string& text, bool add_special, bool parse_special) const {
    std::vector<Token> out(text.size() + 8);
    int n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), out.data(),
                           static_cast<int32_t>(out.size()), add_special, parse_special);
    if (n < 0) {
        if (n == INT32_MIN) throw Error(ErrorKind::invalid_argument, "tokenization overflow: text too long");
        out.resize(-n);
        n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), out.data(),
                           static_cast<int32_t>(out.size()), add_special, parse_special);
        if (n < 0) throw Error(ErrorKind::llama, "tokenization failed", n);
    }
    out.resize(n);
    return out;
}

std::string Model::token_to_piece(Token token, bool special) const {
    if (token < 0 || token >= n_vocab()) throw Error(ErrorKind::invalid_argument, "token id " + std::to_string(token) + " outside the vocabulary");
    char buf[128];
    int n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, special);
    if (n >= 0) return std::string(buf, n);
    std::string out(-n, '\0');
    n = llama_token_to_piece(vocab_, token, out.data(), static_cast<int32_t>(out.size()), 0, special);
    out.resize(std::max(n, 0));
    return out;
}

std::string Model::detokenize(const std::vector<Token>& tokens, bool special) const {
    std::string out;
    for (Token t : tokens) out += token_to_piece(t, special);
    return out;
}

bool Model::is_end_of_generation(Token token) const { return llama_vocab_is_eog(vocab_, token); }

const Model::EmbeddingTable& Model::embedding_table() const {
    std::call_once(table_once_, [this] {
        gguf_init_params gp{};
        gp.no_alloc = true;
        gp.ctx = nullptr;
        std::unique_ptr<gguf_context, void (*)(gguf_context*)> g(gguf_init_from_file(path_.c_str(), gp), gguf_free);
        if (!g) throw Error(ErrorKind::io, "cannot read GGUF metadata of " + path_);
        const int64_t tid = gguf_find_tensor(g.get(), "token_embd.weight");
        if (tid < 0) throw Error(ErrorKind::io, "GGUF has no token_embd.weight tensor: " + path_);
        auto t = std::make_shared<EmbeddingTable>();
        t->type = gguf_get_tensor_type(g.get(), tid);
        const int64_t* ne = gguf_get_tensor_ne(g.get(), tid);
        t->width = ne[0];
        t->rows = ne[1];
        t->row_bytes = ggml_row_size(t->type, t->width);
        t->offset = gguf_get_data_offset(g.get()) + gguf_get_tensor_offset(g.get(), tid);
        if (t->type != GGML_TYPE_F32 && !ggml_get_type_traits(t->type)->to_float)
            throw Error(ErrorKind::io, std::string("cannot dequantize token embeddings of type ") + ggml_type_name(t->type));
        t->file.open(path_, std::ios::binary);
        if (!t->file) throw Error(ErrorKind::io, "cannot open " + path_);
        table_ = std::move(t);
    });
    return *table_;
}

std::vector<float> Model::token_embeddings(const std::vector<Token>& tokens) const {
    const EmbeddingTable& t = embedding_table();
    const ggml_type_traits* traits = ggml_get_type_traits(t.type);
    std::vector<float> out(tokens.size() * t.width);
    std::vector<char> raw(t.row_bytes);
    std::lock_guard<std::mutex> lock(t.mutex);
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] < 0 || tokens[i] >= t.rows)
            throw Error(ErrorKind::invalid_argument, "token id " + std::to_string(tokens[i]) + " outside the embedding table");
        t.file.clear();
        t.file.seekg(static_cast<std::streamoff>(t.offset + t.row_bytes * static_cast<uint64_t>(tokens[i])));
        if (!t.file.read(raw.data(), static_cast<std::streamsize>(t.row_bytes)))
            throw Error(ErrorKind::io, "short read of token_embd.weight in " + path_);
        float* dst = out.data() + i * t.width;
        if (t.type == GGML_TYPE_F32) std::memcpy(dst, raw.data(), t.row_bytes);
        else traits->to_float(raw.data(), dst, t.width);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Session

Session::Session(std::shared_ptr<const Model> model, const SessionParams& params)
    : model_(std::move(model)), params_(params) {
    if (!model_) throw Error(ErrorKind::invalid_argument, "Session needs a model");
    if (params.n_ctx <= 0 || params.n_batch <= 0 || params.n_seq_max < 1)
        throw Error(ErrorKind::invalid_argument, "SessionParams: n_ctx, n_batch and n_seq_max must be positive");
    // llama.cpp caps n_batch at n_ctx and reserves one output row per sequence per batch
    // (it asserts n_seq_max <= n_batch), so keep our copies of both consistent with that.
    params_.n_batch = std::min(params_.n_batch, params_.n_ctx);
    params_.n_seq_max = std::min(params_.n_seq_max, params_.n_batch);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = params.n_ctx;
    cp.n_batch = params_.n_batch;
    cp.n_ubatch = params_.n_batch;
    cp.n_seq_max = params_.n_seq_max;
    // One KV buffer shared by all sequences: candidate scoring copies the prompt's sequence,
    // which is then metadata only, and every sequence can use the whole context.
    cp.kv_unified = true;
    int threads = params.n_threads > 0 ? params.n_threads
                                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    ctx_ = llama_init_from_model(const_cast<llama_model*>(model_->raw()), cp);
    if (!ctx_) throw Error(ErrorKind::llama, "llama.cpp could not create a context (n_ctx=" + std::to_string(params.n_ctx) + ", out of memory?)");
    n_embd_ = model_->n_embd();
}

Session::~Session() {
    if (ctx_) llama_free(ctx_);
}

int Session::n_ctx() const { return static_cast<int>(llama_n_ctx(ctx_)); }

void Session::require_room(int n_new, const char* what) const {
    if (n_past_ + n_new > n_ctx())
        throw Error(ErrorKind::context_full, std::string("context full: the dialogue holds ") + std::to_string(n_past_) +
                        " positions and " + std::to_string(n_new) + " more " + what +
                        " would exceed n_ctx=" + std::to_string(n_ctx()));
}

void Session::decode_chunked(int n, const Token* tokens, const float* rows) {
    llama_memory_t mem = llama_get_memory(ctx_);
    const int start = n_past_;
    for (int off = 0; off < n; off += params_.n_batch) {
        const int len = std::min(params_.n_batch, n - off);
        const bool last_chunk = off + len == n;
        BorrowedBatch b(len, tokens ? tokens + off : nullptr,
                        rows ? rows + static_cast<size_t>(off) * n_embd_ : nullptr, n_past_, 0, last_chunk);
        const int status = llama_decode(ctx_, b.batch);
        if (status != 0) {
            llama_memory_seq_rm(mem, 0, start, -1);  // leave the dialogue as it was
            n_past_ = start;
            have_logits_ = false;
            throw Error(ErrorKind::llama, "llama_decode failed: " + explain_decode_status(status), status);
        }
        n_past_ += len;
    }
    const float* lg = llama_get_logits_ith(ctx_, -1);
    if (!lg) throw Error(ErrorKind::llama, "llama.cpp returned no logits");
    logits_.assign(lg, lg + model_->n_vocab());
    have_logits_ = true;
}

void Session::eval_tokens(const std::vector<Token>& tokens) {
    if (tokens.empty()) return;
    const int n_vocab = model_->n_vocab();
    for (Token t : tokens)
        if (t < 0 || t >= n_vocab) throw Error(ErrorKind::invalid_argument, "token id " + std::to_string(t) + " outside the vocabulary (n_vocab=" + std::to_string(n_vocab) + ")");
    require_room(static_cast<int>(tokens.size()), "tokens");
    decode_chunked(static_cast<int>(tokens.size()), tokens.data(), nullptr);
}

void Session::check_rows(const float* rows, int n_rows, int n_cols, const char* who) const {
    if (n_cols != n_embd_)
        throw Error(ErrorKind::invalid_argument, "embedding rows are " + std::to_string(n_cols) + " wide but the GGUF model's n_embd is " +
                        std::to_string(n_embd_) + " (projector width and LLM hidden size must match)");
    if (n_rows < 0) throw Error(ErrorKind::invalid_argument, std::string(who) + ": negative row count");
    if (n_rows > 0 && !rows) throw Error(ErrorKind::invalid_argument, std::string(who) + ": null data");
}

void Session::eval_embeddings(const float* rows, int n_rows, int n_cols) {
    check_rows(rows, n_rows, n_cols, "eval_embeddings");
    if (n_rows == 0) return;
    require_room(n_rows, "embedding rows");
    decode_chunked(n_rows, nullptr, rows);
}

std::vector<float> Session::last_logits() const {
    if (!have_logits_) throw Error(ErrorKind::invalid_state, "no logits: evaluate tokens or embeddings first");
    return logits_;
}

void Session::truncate(int n) {
    if (n < 0 || n > n_past_) throw Error(ErrorKind::invalid_argument, "truncate(" + std::to_string(n) + ") outside [0, n_past=" + std::to_string(n_past_) + "]");
    llama_memory_t mem = llama_get_memory(ctx_);
    if (n == 0) llama_memory_clear(mem, true);
    else llama_memory_seq_rm(mem, 0, n, -1);
    if (n != n_past_) have_logits_ = false;
    n_past_ = n;
}

Generation Session::generate(int max_tokens, const std::vector<std::string>& stop, const SamplingParams& sampling,
                             bool keep) {
    if (!have_logits_) throw Error(ErrorKind::invalid_state, "generate: evaluate a prompt first");
    if (max_tokens <= 0) throw Error(ErrorKind::invalid_argument, "generate: max_tokens must be positive");
    if (keep) return generate_kept(max_tokens, stop, sampling);

    // Restore the dialogue and its logits however generation ends.
    struct Restore {
        Session& s;
        int n_past;
        std::vector<float> logits;
        ~Restore() {
            s.truncate(n_past);
            s.logits_ = std::move(logits);
            s.have_logits_ = true;
        }
    } restore{*this, n_past_, logits_};
    return generate_kept(max_tokens, stop, sampling);
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool is_word(char c) { return is_alnum(c) || c == '_'; }

std::string ascii_lower(std::string text) {
    for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
}

// A clause as SamplingParams::unique_clauses compares it (the normalization of
// bua.metrics.explanation_metrics): lowercased; digits, an "x" closing a digit run and every
// character outside a-z @ ' - become spaces; runs of white space become one space, none at the ends.
std::string clause_key(const std::string& text) {
    const std::string lower = ascii_lower(text);
    std::string spaced;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = lower[i];
        const bool after_digit = i > 0 && std::isdigit(static_cast<unsigned char>(text[i - 1]));
        const bool x_count = c == 'x' && after_digit && (i + 1 == text.size() || !is_word(text[i + 1]));
        const bool kept = (c >= 'a' && c <= 'z') || c == '@' || c == '\'' || c == '-' || c == ' ';
        spaced += kept && !x_count ? c : ' ';
    }
    std::string key;
    for (size_t i = 0; i < spaced.size(); ++i) {
        if (spaced[i] == ' ') continue;
        if (!key.empty() && spaced[i - 1] == ' ') key += ' ';
        key += spaced[i];
    }
    return key;
}

// Position of the first clause separator in text[from, text.size()): a new line, or (unless
// lines_only) one of , ; : . ! ? followed by white space; npos if none is complete yet.
size_t next_separator(const std::string& text, size_t from, bool lines_only) {
    for (size_t i = from; i < text.size(); ++i) {
        if (text[i] == '\n') return i;
        if (lines_only) continue;
        if (text[i] != '\0' && std::strchr(",;:.!?", text[i]) && i + 1 < text.size() && is_space(text[i + 1])) return i;
    }
    return std::string::npos;
}

// Offset of the first of `phrases` (lowercase) that `text` holds as whole words: no ASCII letter
// or digit on either side, its end confirmed by the next character, or by the end of the text
// when `final`; npos if none.
size_t first_phrase(const std::string& text, const std::vector<std::string>& phrases, bool final) {
    if (phrases.empty()) return std::string::npos;
    const std::string lower = ascii_lower(text);
    size_t first = std::string::npos;
    for (const std::string& p : phrases) {
        for (size_t at = lower.find(p); at != std::string::npos && at < first; at = lower.find(p, at + 1)) {
            const size_t end = at + p.size();
            if (at > 0 && is_alnum(lower[at - 1])) continue;
            if (end < lower.size() ? is_alnum(lower[end]) : !final) continue;
            first = at;
        }
    }
    return first;
}

// The count of the name that `text` ends with, followed by " (" (SamplingParams::counts, names
// lowercase; the longest such name), or -1.
int count_before(const std::string& text, const std::vector<std::pair<std::string, int>>& counts) {
    static const std::string open = " (";
    if (text.size() < open.size() || text.compare(text.size() - open.size(), open.size(), open) != 0) return -1;
    const std::string lower = ascii_lower(text.substr(0, text.size() - open.size()));
    int found = -1;
    size_t longest = 0;
    for (const auto& [name, count] : counts) {
        if (name.empty() || name.size() > lower.size() || name.size() <= longest) continue;
        const size_t at = lower.size() - name.size();
        if (lower.compare(at, name.size(), name) != 0 || (at > 0 && is_alnum(lower[at - 1]))) continue;
        found = count;
        longest = name.size();
    }
    return found;
}

// Position just past the first sentence end (. ! or ? followed by white space) in text[from, ...).
size_t sentence_end(const std::string& text, size_t from) {
    for (size_t i = from; i + 1 < text.size(); ++i)
        if ((text[i] == '.' || text[i] == '!' || text[i] == '?') && is_space(text[i + 1])) return i + 1;
    return std::string::npos;
}

}  // namespace

void Session::restore_logits_at(int n, const std::vector<float>& logits_at_start, int n_start,
                                const std::vector<Token>& generated) {
    if (n == n_start) {
        truncate(n_start);
        logits_ = logits_at_start;
        have_logits_ = true;
    } else {
        truncate(n - 1);
        eval_tokens({generated[n - 1 - n_start]});
    }
}

Generation Session::generate_kept(int max_tokens, const std::vector<std::string>& stop,
                                  const SamplingParams& sampling) {
    llama_sampler_chain_params sp = llama_sampler_chain_default_params();
    sp.no_perf = true;
    std::unique_ptr<llama_sampler, void (*)(llama_sampler*)> chain(llama_sampler_chain_init(sp), llama_sampler_free);
    // Greedy decoding checks the grammar on the chosen token alone and constrains every candidate
    // only when it rejects that token: the same tokens, without matching the whole vocabulary
    // against the grammar at each step. Sampling constrains every candidate first (exact).
    const bool greedy = sampling.temperature <= 0.0f;
    std::unique_ptr<llama_sampler, void (*)(llama_sampler*)> grammar(nullptr, llama_sampler_free);
    if (!sampling.grammar.empty()) {
        llama_sampler* g = llama_sampler_init_grammar(model_->vocab(), sampling.grammar.c_str(), sampling.grammar_root.c_str());
        if (!g) throw Error(ErrorKind::invalid_argument, "invalid GBNF grammar (root '" + sampling.grammar_root + "')");
        if (greedy) grammar.reset(g);
        else llama_sampler_chain_add(chain.get(), g);
    }
    if (sampling.dry_multiplier > 0.0f) {
        if (sampling.dry_base < 1.0f || sampling.dry_allowed_length < 1)
            throw Error(ErrorKind::invalid_argument, "DRY needs dry_base >= 1 and dry_allowed_length >= 1");
        // llama.cpp's default breakers: a new line, a key's colon or a quote starts a fresh run
        const char* breakers[] = {"\n", ":", "\"", "*"};
        llama_sampler_chain_add(chain.get(), llama_sampler_init_dry(model_->vocab(), sampling.dry_multiplier,
                                                                   sampling.dry_base, sampling.dry_allowed_length,
                                                                   max_tokens, breakers, 4));
    }
    if (sampling.max_retakes < 0) throw Error(ErrorKind::invalid_argument, "max_retakes must be >= 0");
    if (!(sampling.min_p >= 0.0f && sampling.min_p < 1.0f)) throw Error(ErrorKind::invalid_argument, "min_p must lie in [0, 1)");
    if (greedy) {
        llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
    } else {
        if (sampling.top_p < 1.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(sampling.top_p, 1));
        if (sampling.min_p > 0.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_min_p(sampling.min_p, 1));
        llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(sampling.temperature));
        llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(sampling.seed));
    }

    const int n_vocab = model_->n_vocab();
    const int n_start = n_past_;
    if (sampling.unique_clauses && sampling.unique_lines)
        throw Error(ErrorKind::invalid_argument, "unique_clauses and unique_lines exclude each other");
    const bool unique = sampling.unique_clauses || sampling.unique_lines;
    const bool retakes = unique || !sampling.banned_phrases.empty();
    const std::vector<float> logits_at_start = retakes ? logits_ : std::vector<float>();
    std::vector<std::string> phrases;
    for (const std::string& p : sampling.banned_phrases)
        if (!p.empty()) phrases.push_back(ascii_lower(p));
    std::vector<std::pair<std::string, int>> counts;
    for (const auto& [name, count] : sampling.counts) {
        if (count < 0) throw Error(ErrorKind::invalid_argument, "counts: the count of '" + name + "' is negative");
        if (!name.empty()) counts.emplace_back(ascii_lower(name), count);
    }
    std::vector<Token> digit_tokens;  // tokens whose text starts with a digit (banned after a count)
    if (!counts.empty())
        for (Token t = 0; t < n_vocab; ++t) {
            const std::string piece = model_->token_to_piece(t, false);
            if (!piece.empty() && std::isdigit(static_cast<unsigned char>(piece[0]))) digit_tokens.push_back(t);
        }
    size_t no_digit_at = std::string::npos;  // the position right after a written count
    std::vector<llama_token_data> cand(n_vocab);
    auto accept = [&](Token t) {
        llama_sampler_accept(chain.get(), t);
        if (grammar) llama_sampler_accept(grammar.get(), t);
    };
    Generation out;
    out.stop_reason = "max_tokens";
    // For taking text back: the text offset of every generated token, the tokens banned at a
    // position; for unique_clauses (unique_lines): the clauses (lines) before the current one,
    // where it starts.
    std::vector<size_t> token_text;
    std::map<size_t, std::vector<Token>> banned;
    std::set<std::string> clauses;
    size_t clause_text = 0;
    size_t clause_token = 0;
    // Records the clauses `text` completes (its last one too when `final`); false at the first
    // that repeats an earlier one, which is then the current clause.
    auto clauses_unique = [&](const std::string& text, bool final) {
        for (;;) {
            const size_t sep = next_separator(text, clause_text, sampling.unique_lines);
            if (sep == std::string::npos && !final) return true;
            const size_t end = sep == std::string::npos ? text.size() : sep;
            const std::string clause = text.substr(clause_text, end - clause_text);
            const std::string key = sampling.unique_lines ? clause : clause_key(clause);
            if (!key.empty() && !clauses.insert(key).second) return false;
            if (sep == std::string::npos) return true;
            clause_text = sep + 1;
            clause_token = std::lower_bound(token_text.begin(), token_text.end(), clause_text) - token_text.begin();
        }
    };
    // Takes everything from token k on back (`tok`, not yet kept, is token out.tokens.size())
    // and bans token k there; false when that position is out of retakes.
    auto retake = [&](size_t k, Token tok) {
        banned.erase(banned.upper_bound(k), banned.end());  // later positions get a new prefix
        if (no_digit_at != std::string::npos && k < no_digit_at) no_digit_at = std::string::npos;
        std::vector<Token>& bans = banned[k];
        bans.push_back(k < out.tokens.size() ? out.tokens[k] : tok);
        ++out.retaken;
        if (k < out.tokens.size()) {
            out.text.resize(token_text[k]);
            out.tokens.resize(k);
            token_text.resize(k);
            restore_logits_at(n_start + static_cast<int>(k), logits_at_start, n_start, out.tokens);
            llama_sampler_reset(chain.get());
            if (grammar) llama_sampler_reset(grammar.get());
            for (Token t : out.tokens) accept(t);
        }
        clauses.clear();  // the clauses of what is kept
        clause_text = clause_token = 0;
        clauses_unique(out.text, false);
        return static_cast<int>(bans.size()) <= sampling.max_retakes;
    };
    // The next token: the chain's choice among the candidates (with constrain_all, only among
    // those the separate grammar sampler allows).
    auto choose = [&](bool constrain_all) {
        for (int i = 0; i < n_vocab; ++i) cand[i] = llama_token_data{i, logits_[i], 0.0f};
        auto ban = banned.find(out.tokens.size());
        if (ban != banned.end())
            for (Token t : ban->second) cand[t].logit = -INFINITY;
        if (out.tokens.size() == no_digit_at)
            for (Token t : digit_tokens) cand[t].logit = -INFINITY;
        llama_token_data_array arr{cand.data(), cand.size(), -1, false};
        if (constrain_all) llama_sampler_apply(grammar.get(), &arr);
        llama_sampler_apply(chain.get(), &arr);
        if (arr.selected < 0 || arr.selected >= static_cast<int64_t>(arr.size)) throw Error(ErrorKind::llama, "sampler selected no token");
        return arr.data[arr.selected].id;
    };
    auto grammar_allows = [&](Token t) {
        llama_token_data one{t, 0.0f, 0.0f};
        llama_token_data_array single{&one, 1, -1, false};
        llama_sampler_apply(grammar.get(), &single);
        return one.logit != -INFINITY;
    };
    for (int step = 0; step < max_tokens; ++step) {
        Token tok = choose(false);
        if (grammar && !grammar_allows(tok)) tok = choose(true);
        const bool eog = model_->is_end_of_generation(tok);
        const std::string piece = eog ? std::string() : model_->token_to_piece(tok, false);
        const int count = !piece.empty() && std::isdigit(static_cast<unsigned char>(piece[0]))
            ? count_before(out.text, counts) : -1;
        if (count >= 0) {  // the count is written instead of the model's number; the model goes on after it
            const std::vector<Token> written = model_->tokenize(std::to_string(count), false, false);
            eval_tokens(written);
            for (Token t : written) {
                accept(t);
                token_text.push_back(out.text.size());
                out.tokens.push_back(t);
                out.text += model_->token_to_piece(t, false);
            }
            no_digit_at = out.tokens.size();
            step += static_cast<int>(written.size()) - 1;
            continue;
        }
        std::string text = out.text + piece;
        size_t cut = std::string::npos;
        for (const std::string& s : stop) {
            if (s.empty() || eog) continue;
            size_t from = out.text.size() >= s.size() ? out.text.size() - s.size() + 1 : 0;
            size_t at = text.find(s, from);
            if (at != std::string::npos) cut = std::min(cut, at);
        }
        if (cut != std::string::npos) text.resize(cut);
        size_t done = std::string::npos;  // end_after: the first sentence end after it
        if (!sampling.end_after.empty() && cut == std::string::npos && !eog) {
            const size_t at = text.find(sampling.end_after);
            if (at != std::string::npos) done = sentence_end(text, at + sampling.end_after.size());
            if (done != std::string::npos) text.resize(done);
        }
        const bool ends = eog || cut != std::string::npos || done != std::string::npos;
        const size_t phrase = first_phrase(text, phrases, ends);
        if (phrase != std::string::npos) {
            const size_t k = phrase >= out.text.size()
                ? out.tokens.size()
                : static_cast<size_t>(std::upper_bound(token_text.begin(), token_text.end(), phrase) - token_text.begin()) - 1;
            if (retake(k, tok)) continue;
            out.stop_reason = "banned_phrase";
            return out;
        }
        if (unique && !clauses_unique(text, ends)) {
            if (retake(clause_token, tok)) continue;
            out.stop_reason = "repeat";
            return out;
        }
        if (eog) {
            out.stop_reason = "eog";
            break;
        }
        if (ends) {  // a stop string or end_after: the token that completed it is not evaluated
            out.text = std::move(text);
            out.stop_reason = cut != std::string::npos ? "stop_string" : "end_after";
            break;
        }
        accept(tok);
        eval_tokens({tok});
        token_text.push_back(out.text.size());
        out.tokens.push_back(tok);
        out.text = std::move(text);
    }
    return out;
}

std::vector<double> Session::first_token_logprobs(const std::vector<std::vector<Token>>& candidates,
                                                  const char* who) const {
    if (!have_logits_) throw Error(ErrorKind::invalid_state, std::string(who) + ": evaluate a prompt first");
    check_candidates(candidates, who);
    const double lse = log_sum_exp(logits_.data(), model_->n_vocab());
    std::vector<double> scores(candidates.size(), 0.0);
    for (size_t c = 0; c < candidates.size(); ++c) scores[c] = static_cast<double>(logits_[candidates[c][0]]) - lse;
    return scores;
}

void Session::require_copies(const std::vector<std::vector<Token>>& paths, const char* who) const {
    const bool any = std::any_of(paths.begin(), paths.end(), [](const auto& p) { return !p.empty(); });
    if (any && params_.n_seq_max < 2)
        throw Error(ErrorKind::invalid_state, std::string(who) + " evaluates on copies of the dialogue's sequence and "
                    "needs a session with n_seq_max >= 2; this one has n_seq_max=" + std::to_string(params_.n_seq_max));
}

void Session::check_candidates(const std::vector<std::vector<Token>>& candidates, const char* who) const {
    const int n_vocab = model_->n_vocab();
    for (size_t c = 0; c < candidates.size(); ++c) {
        const auto& cand = candidates[c];
        if (cand.empty()) throw Error(ErrorKind::invalid_argument, std::string(who) + ": candidate " + std::to_string(c) + " has no tokens");
        for (Token t : cand)
            if (t < 0 || t >= n_vocab) throw Error(ErrorKind::invalid_argument, std::string(who) + ": token id " + std::to_string(t) + " outside the vocabulary");
        if (static_cast<int>(cand.size()) - 1 > params_.n_batch)
            throw Error(ErrorKind::invalid_argument, std::string(who) + ": candidate " + std::to_string(c) + " is longer than n_batch");
    }
}

int Session::eval_paths(const std::vector<std::vector<Token>>& paths, bool last_only, int* decodes,
                        const PathVisitor& visit) {
    // Pack the paths into batches: each on its own copy of sequence 0, at most n_batch tokens
    // and n_seq_max - 1 copies per llama_decode.
    require_copies(paths, "candidate scoring");
    llama_memory_t mem = llama_get_memory(ctx_);
    const int max_copies = params_.n_seq_max - 1;
    int positions = 0;
    size_t next = 0;
    while (next < paths.size()) {
        std::vector<size_t> group;
        int group_tokens = 0;
        while (next < paths.size() && static_cast<int>(group.size()) < max_copies) {
            const int need = static_cast<int>(paths[next].size());
            if (!group.empty() && group_tokens + need > params_.n_batch) break;
            group.push_back(next++);
            group_tokens += need;
        }
        if (group_tokens == 0) continue;  // empty paths only: nothing to evaluate
        require_room(group_tokens, "candidate tokens");

        OwnedBatch owned(group_tokens);
        llama_batch& batch = owned.batch;
        for (size_t g = 0; g < group.size(); ++g) {
            const llama_seq_id seq = static_cast<llama_seq_id>(g + 1);
            llama_memory_seq_cp(mem, 0, seq, -1, -1);
            const auto& path = paths[group[g]];
            for (size_t k = 0; k < path.size(); ++k) {
                const int i = batch.n_tokens++;
                batch.token[i] = path[k];
                batch.pos[i] = n_past_ + static_cast<int>(k);
                batch.n_seq_id[i] = 1;
                batch.seq_id[i][0] = seq;
                batch.logits[i] = !last_only || k + 1 == path.size();
            }
        }
        const int status = llama_decode(ctx_, batch);
        if (decodes) ++*decodes;
        if (status == 0) {
            int i = 0;
            for (size_t g = 0; g < group.size(); ++g) {
                const auto& path = paths[group[g]];
                for (size_t k = 0; k < path.size(); ++k, ++i)
                    if (!last_only || k + 1 == path.size()) visit(group[g], k, llama_get_logits_ith(ctx_, i));
            }
        }
        for (size_t g = 0; g < group.size(); ++g) llama_memory_seq_rm(mem, static_cast<llama_seq_id>(g + 1), -1, -1);
        if (status != 0) throw Error(ErrorKind::llama, "llama_decode failed while scoring candidates: " + explain_decode_status(status), status);
        positions += group_tokens;
    }
    return positions;
}

int Session::score_rest(const std::vector<std::vector<Token>>& candidates, const std::vector<size_t>& which,
                        std::vector<double>& scores, int* decodes, const PositionVisitor& visit) {
    // Every token but a candidate's last must be evaluated to score the token after it.
    const int n_vocab = model_->n_vocab();
    std::vector<std::vector<Token>> paths;
    paths.reserve(which.size());
    for (size_t c : which) paths.emplace_back(candidates[c].begin(), candidates[c].end() - 1);
    return eval_paths(paths, false, decodes, [&](size_t p, size_t k, const float* logits) {
        const size_t c = which[p];
        const double lse = log_sum_exp(logits, n_vocab);
        scores[c] += static_cast<double>(logits[candidates[c][k + 1]]) - lse;
        if (visit) visit(c, k, logits, lse);
    });
}

ShortlistScores Session::score_constrained(const std::vector<std::vector<Token>>& candidates) {
    first_token_logprobs(candidates, "score_constrained");  // checks the candidates and the prompt
    const TokenTrie next = candidate_trie(candidates, "score_constrained");
    BranchLogp branch_logp = root_branch(next, logits_.data());
    const std::vector<std::vector<Token>> paths = branch_paths(next);
    ShortlistScores out;
    out.positions = eval_paths(paths, true, &out.decodes, [&](size_t p, size_t, const float* logits) {
        branch_logp[paths[p]] = renormalized(next.at(paths[p]), logits);
    });
    constrained_logprobs(candidates, next, branch_logp, out);
    return out;
}

ShortlistScores Session::eval_and_score_constrained(const float* rows, int n_rows, int n_cols,
                                                    const std::vector<std::vector<Token>>& candidates) {
    check_rows(rows, n_rows, n_cols, "eval_and_score_constrained");
    check_candidates(candidates, "eval_and_score_constrained");
    const TokenTrie next = candidate_trie(candidates, "eval_and_score_constrained");
    const std::vector<std::vector<Token>> paths = branch_paths(next);
    int path_tokens = 0;
    for (const auto& path : paths) path_tokens += static_cast<int>(path.size());
    const int copies = static_cast<int>(paths.size());
    require_copies(paths, "eval_and_score_constrained");  // before anything is evaluated
    if (n_rows == 0 || copies + 1 > params_.n_seq_max || path_tokens >= params_.n_batch) {
        eval_embeddings(rows, n_rows, n_cols);  // the branches do not fit beside the rows
        return score_constrained(candidates);
    }
    require_room(n_rows + path_tokens, "embedding rows and candidate tokens");
    const int start = n_past_;
    const int tail = std::min(n_rows, params_.n_batch - path_tokens);  // the rows that share the decode
    if (n_rows > tail) decode_chunked(n_rows - tail, nullptr, rows);

    // One batch: the tail rows on sequence 0 and on every branch's copy of it, then each
    // branch's tokens (as token-embedding rows) on its copy alone.
    std::vector<std::vector<float>> path_rows;
    for (const auto& path : paths) path_rows.push_back(model_->token_embeddings(path));
    OwnedBatch owned(tail + path_tokens, n_embd_, copies + 1);
    llama_batch& batch = owned.batch;
    auto add_row = [&](const float* row, llama_pos pos, int first_seq, int n_seq, bool logits) {
        const int i = batch.n_tokens++;
        std::memcpy(batch.embd + static_cast<size_t>(i) * n_embd_, row, sizeof(float) * n_embd_);
        batch.pos[i] = pos;
        batch.n_seq_id[i] = n_seq;
        for (int s = 0; s < n_seq; ++s) batch.seq_id[i][s] = first_seq + s;
        batch.logits[i] = logits;
    };
    const float* tail_rows = rows + static_cast<size_t>(n_rows - tail) * n_embd_;
    for (int i = 0; i < tail; ++i)
        add_row(tail_rows + static_cast<size_t>(i) * n_embd_, n_past_ + i, 0, copies + 1, i + 1 == tail);
    for (int p = 0; p < copies; ++p)
        for (size_t k = 0; k < paths[p].size(); ++k)
            add_row(path_rows[p].data() + k * n_embd_, n_past_ + tail + static_cast<int>(k), p + 1, 1,
                    k + 1 == paths[p].size());
    llama_memory_t mem = llama_get_memory(ctx_);
    for (int s = 1; s <= copies; ++s) llama_memory_seq_cp(mem, 0, s, -1, -1);
    const int status = llama_decode(ctx_, batch);
    for (int s = 1; s <= copies; ++s) llama_memory_seq_rm(mem, s, -1, -1);
    if (status != 0) {
        llama_memory_seq_rm(mem, 0, start, -1);  // leave the dialogue as it was
        n_past_ = start;
        have_logits_ = false;
        throw Error(ErrorKind::llama, "llama_decode failed while evaluating and scoring: " + explain_decode_status(status), status);
    }
    const float* lg = llama_get_logits_ith(ctx_, tail - 1);
    if (!lg) throw Error(ErrorKind::llama, "llama.cpp returned no logits");
    logits_.assign(lg, lg + model_->n_vocab());
    have_logits_ = true;
    n_past_ += tail;

    BranchLogp branch_logp = root_branch(next, logits_.data());
    int i = tail;
    for (const auto& path : paths) {
        i += static_cast<int>(path.size());
        branch_logp[path] = renormalized(next.at(path), llama_get_logits_ith(ctx_, i - 1));
    }
    ShortlistScores out;
    out.positions = path_tokens;
    constrained_logprobs(candidates, next, branch_logp, out);
    return out;
}

std::vector<double> Session::score_continuations(const std::vector<std::vector<Token>>& candidates) {
    std::vector<double> scores = first_token_logprobs(candidates, "score_continuations");
    score_rest(candidates, every_index(candidates.size()), scores, nullptr);
    return scores;
}

ShortlistScores Session::score_top_continuations(const std::vector<std::vector<Token>>& candidates,
                                                 const ShortlistParams& params) {
    if (params.top_k < 1 || params.min_batch_positions < 1)
        throw Error(ErrorKind::invalid_argument, "score_top_continuations: top_k and min_batch_positions must be at least 1");
    if (!(params.mass_tolerance >= 0.0))
        throw Error(ErrorKind::invalid_argument, "score_top_continuations: mass_tolerance must be >= 0");
    const std::vector<double> first = first_token_logprobs(candidates, "score_top_continuations");
    const size_t n = candidates.size();
    ShortlistScores out;
    out.logprob = first;
    out.scored.assign(n, 0);
    const size_t k = std::min<size_t>(static_cast<size_t>(params.top_k), n);

    // known[c]: how many of c's tokens out.logprob[c] covers, the log-probability of that
    // prefix; c is exact once it covers all. Evaluating one candidate's tokens also gives the
    // next-token distribution after each of its prefixes, which extends every candidate
    // sharing that prefix by one token.
    std::vector<size_t> known(n, 1);
    auto extend_sharers = [&](size_t c, size_t pos, const float* logits, double lse) {
        const auto& path = candidates[c];
        for (size_t u = 0; u < n; ++u) {
            if (u == c || known[u] != pos + 1 || candidates[u].size() <= pos + 1) continue;
            if (!std::equal(path.begin(), path.begin() + pos + 1, candidates[u].begin())) continue;
            out.logprob[u] += static_cast<double>(logits[candidates[u][pos + 1]]) - lse;
            known[u] = pos + 2;
        }
    };
    // Candidates with the same first token share its probability: group them by it.
    std::vector<size_t> group_of(n);
    std::vector<double> group_mass;  // P(first token)
    {
        std::vector<std::pair<Token, size_t>> firsts;
        for (size_t c = 0; c < n; ++c) {
            auto it = std::find_if(firsts.begin(), firsts.end(), [&](const auto& f) { return f.first == candidates[c][0]; });
            if (it == firsts.end()) {
                firsts.emplace_back(candidates[c][0], group_mass.size());
                group_mass.push_back(std::exp(first[c]));
                group_of[c] = group_mass.size() - 1;
            } else {
                group_of[c] = it->second;
            }
        }
    }

    double answer_mass = 0.0;
    for (double m : group_mass) answer_mass += m;
    if (params.mass_tolerance == 0.0 || answer_mass < params.min_answer_mass) {  // every candidate, exactly
        out.positions = score_rest(candidates, every_index(n), out.logprob, &out.decodes);
        out.scored.assign(n, 1);
        return out;
    }

    while (true) {
        for (size_t c = 0; c < n; ++c) out.scored[c] = known[c] == candidates[c].size();
        // What the unscored candidates can still hold: each at most its known prefix's
        // probability, each first-token group at most that token's mass less its scored members'.
        std::vector<double> left = group_mass, open_sum(group_mass.size(), 0.0);
        double scored_mass = 0.0;
        std::vector<double> top;  // exact log-probs
        std::vector<size_t> open;
        for (size_t c = 0; c < n; ++c) {
            if (out.scored[c]) {
                const double p = std::exp(out.logprob[c]);
                left[group_of[c]] = std::max(0.0, left[group_of[c]] - p);
                scored_mass += p;
                top.push_back(out.logprob[c]);
            } else {
                open.push_back(c);
            }
        }
        if (open.empty()) break;
        std::vector<double> bound(n, 0.0);  // log of an upper bound on P(c), for the open c
        for (size_t c : open) {
            bound[c] = std::min(out.logprob[c], std::log(left[group_of[c]]));
            open_sum[group_of[c]] += std::exp(bound[c]);
        }
        double open_mass = 0.0;
        for (size_t g = 0; g < group_mass.size(); ++g) open_mass += std::min(left[g], open_sum[g]);
        std::sort(open.begin(), open.end(), [&](size_t a, size_t b) { return bound[a] > bound[b]; });
        if (top.size() >= k) {
            std::nth_element(top.begin(), top.begin() + (k - 1), top.end(), std::greater<double>());
            const bool top_settled = top[k - 1] >= bound[open.front()];
            if (top_settled && open_mass <= params.mass_tolerance * scored_mass) break;
        }
        // Score the best-bounded candidates that would settle both conditions if each scored its bound.
        std::vector<size_t> chosen;
        double hoped = scored_mass, rest = open_mass;
        int chosen_positions = 0;
        bool settled = false;
        for (size_t c : open) {
            if (settled && chosen_positions >= params.min_batch_positions) break;
            chosen.push_back(c);
            chosen_positions += static_cast<int>(candidates[c].size()) - 1;
            const double p = std::exp(bound[c]);
            hoped += p;
            rest = std::max(0.0, rest - p);
            settled = settled || (top.size() + chosen.size() >= k && rest <= params.mass_tolerance * hoped);
        }
        // Most of what is open anyway: one batch for all of it is cheaper than another round.
        int open_positions = 0;
        for (size_t c : open) open_positions += static_cast<int>(candidates[c].size()) - 1;
        if (2 * chosen_positions >= open_positions) chosen = open;
        for (size_t c : chosen) {
            out.logprob[c] = first[c];
            known[c] = candidates[c].size();
        }
        out.positions += score_rest(candidates, chosen, out.logprob, &out.decodes, extend_sharers);
    }
    return out;
}

}  // namespace bua
