// bua runtime: the on-device half of Behavior Understanding Alignment, over llama.cpp.
//
// A Model is a loaded GGUF (weights + vocabulary). A Session is one llama.cpp context over a
// Model holding one dialogue: its KV cache grows round by round, so each round evaluates only
// its new tokens. A prompt is a sequence of segments, each either token ids or rows of input
// embeddings (the projected behavior history, "soft tokens"); segments are decoded in order on
// one sequence at consecutive positions.
//
// Ownership: a Session keeps a shared_ptr to its Model, so the model outlives every session.
// Errors: every failure throws bua::Error: kind() says which kind of failure, status() is the
// llama.cpp return value where one exists (see llama_decode in llama.h; else 0), and what()
// says what failed and why.
// Threads: a Model may be shared by many Sessions on many threads; one Session must be used by
// one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

struct llama_model;
struct llama_context;
struct llama_vocab;

namespace bua {

using Token = int32_t;

enum class ErrorKind {
    invalid_argument,  // a value the caller passed is out of range or malformed
    invalid_state,     // called out of order (e.g. scoring before any prompt was evaluated)
    context_full,      // the dialogue would exceed n_ctx; the session is unchanged
    io,                // a file is missing, unreadable or not the GGUF it should be
    llama,             // llama.cpp failed (load, context, decode); status() holds its code
    unsupported_cpu,   // the loaded llama.cpp build cannot run on this CPU
};

// "invalid_argument", "invalid_state", "context_full", "io", "llama" or "unsupported_cpu".
const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& what, int status = 0)
        : std::runtime_error(what), kind_(kind), status_(status) {}
    ErrorKind kind() const noexcept { return kind_; }
    int status() const noexcept { return status_; }

private:
    ErrorKind kind_;
    int status_;
};

// Explains a llama_decode() return code in words.
std::string explain_decode_status(int status);

// llama.cpp's system info: among others the instruction sets its CPU backend was compiled with
// ("CPU : SSE3 = 1 | AVX2 = 1 | ... | AVX512 = 1 | ...").
std::string system_info();
// Why a llama.cpp build with system info `info` must not run here, one line per problem (empty:
// safe): an instruction set this CPU or its OS lacks (x86; SIGILL at the first matmul), or
// ggml's AMX backend, which crashes on AMX CPUs. Model::load refuses a build with problems.
std::vector<std::string> build_problems(const std::string& info);
std::vector<std::string> build_problems();  // of the llama.cpp this process loaded

class Model {
public:
    // Loads a GGUF file. Throws bua::Error if the file is missing or llama.cpp rejects it.
    static std::shared_ptr<Model> load(const std::string& path);
    ~Model();
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    int n_embd() const;        // width of input embedding rows
    int n_vocab() const;
    int n_ctx_train() const;
    std::string description() const;        // e.g. "llama 135M Q4_K - Medium"
    std::string meta(const std::string& key) const;  // GGUF metadata value, "" if absent

    // Tokenizes text exactly as llama.cpp does. add_special adds BOS/EOS where the model says
    // so; parse_special lets control tokens like <|im_end|> be written in the text.
    std::vector<Token> tokenize(const std::string& text, bool add_special, bool parse_special) const;
    std::string token_to_piece(Token token, bool special = true) const;
    std::string detokenize(const std::vector<Token>& tokens, bool special = true) const;
    bool is_end_of_generation(Token token) const;

    // The token-embedding rows of `tokens` ([n, n_embd], row-major), dequantized from the GGUF
    // file (the table's place in it is read once, at the first call). This is what a token id
    // contributes to the input, so feeding these rows as embeddings must reproduce feeding the ids.
    std::vector<float> token_embeddings(const std::vector<Token>& tokens) const;

    const llama_model* raw() const { return model_.get(); }
    const llama_vocab* vocab() const { return vocab_; }

private:
    struct Free {
        void operator()(llama_model* model) const;
    };
    struct EmbeddingTable;  // where token_embd.weight lies in the file, and its type

    Model(llama_model* model, std::string path);
    const EmbeddingTable& embedding_table() const;

    std::unique_ptr<llama_model, Free> model_;
    const llama_vocab* vocab_;
    std::string path_;
    mutable std::shared_ptr<const EmbeddingTable> table_;
    mutable std::once_flag table_once_;
};

struct SessionParams {
    int n_ctx = 2048;      // context length in tokens (prompt + all rounds + answers)
    int n_threads = 0;     // 0 = every hardware thread; never use more than free cores
    int n_batch = 512;     // largest chunk handed to one llama_decode
    int n_seq_max = 64;    // parallel sequences available to candidate scoring (at least 2 to score)
};

struct SamplingParams {
    float temperature = 0.0f;   // 0 = greedy
    float top_p = 1.0f;
    // min-p (llama_sampler_init_min_p): tokens less likely than min_p times the most likely one
    // are dropped before temperature; 0 = off.
    float min_p = 0.0f;
    uint32_t seed = 0;
    // GBNF; empty = unconstrained. Greedy decoding checks it on the chosen token and matches every
    // candidate against it only when it rejects that token (the same tokens, less work per step).
    std::string grammar;
    std::string grammar_root = "root";
    // DRY ("don't repeat yourself", llama_sampler_init_dry): a token that would extend a run of
    // more than dry_allowed_length tokens already generated in this call is penalized by
    // dry_multiplier * dry_base^(run - dry_allowed_length). 0 = off.
    float dry_multiplier = 0.0f;
    float dry_base = 1.75f;
    int dry_allowed_length = 2;
    // Clauses: the text between separators (one of , ; : . ! ? followed by white space, or a
    // new line), compared lowercased with digits, an "x" after digits ("3x") and every
    // character other than a-z @ ' - and space removed (bua.metrics.explanation_metrics reads
    // repeats the same way). With unique_clauses, a clause that would repeat an earlier one of
    // this generation is taken back: decoding returns to the clause's first token and bans that
    // token there; then it goes on (stop_reason "repeat" when a position is out of retakes).
    bool unique_clauses = false;
    // Lines: with unique_lines, a line (the text between new lines) that would repeat an earlier
    // line of this generation exactly is taken back the same way, e.g. an event of a generated day
    // written twice. Lines are compared verbatim; at most one of unique_clauses, unique_lines.
    bool unique_lines = false;
    // Phrases the text may not hold (ASCII case-insensitive, as whole words: no letter or digit on
    // either side), e.g. behaviors the user's history lacks. One that appears is taken back like a
    // repeated clause, from the token where it starts (stop_reason "banned_phrase").
    std::vector<std::string> banned_phrases;
    // How often a position may be taken back; after that the generation ends before it. Every
    // token sampled counts against max_tokens, taken-back ones too.
    int max_retakes = 3;
    // When not empty: once this text has been generated, the next sentence end (. ! or ? followed
    // by white space) ends the generation, the punctuation kept (stop_reason "end_after"); e.g. the
    // last section's header of an answer made of "Header: ..." sentences.
    std::string end_after;
    // Counts the text must state right, e.g. each behavior's number of events in the history:
    // where the text ends with one of these names (ASCII case-insensitive, a whole word) and " (",
    // a number the model starts there is written as the name's count instead: the sampled token's
    // digits are replaced by the count's, and the next token may not continue the number
    // ("gaming (" + "5" -> "gaming (3"). Other brackets ("gaming (@home") are left alone.
    std::vector<std::pair<std::string, int>> counts;
};

// What Session::score_top_continuations must get exactly right. A continuation is at most as
// likely as any prefix of it: at first its first token, from the prompt's logits; evaluating
// one candidate's tokens gives every candidate that shares a prefix with it the next token's
// probability too. The candidates that share a first token share that token's mass.
// Candidates are scored best bound first until the rest can neither enter the top k nor hold
// more than mass_tolerance of the scored mass.
struct ShortlistParams {
    int top_k = 5;                 // this many best candidates are scored exactly, in order
    double mass_tolerance = 1e-2;  // bound on the unscored mass, as a share of the scored mass (0 = score all)
    // A scoring batch goes on with the next best candidates until it holds this many tokens:
    // one more llama_decode costs about as much as that many positions (fixed overhead).
    int min_batch_positions = 16;
    // When the candidates' first tokens hold less than this share of the next-token
    // probability, the model does not answer with a candidate (e.g. an untrained adapter): the
    // bounds would be loose, and every candidate is scored in one batch instead.
    double min_answer_mass = 0.5;
};

struct ShortlistScores {
    std::vector<double> logprob;   // exact where scored, else an upper bound
    std::vector<uint8_t> scored;   // 1 where logprob is exact
    int positions = 0;             // candidate tokens evaluated, in all decodes
    int decodes = 0;               // llama_decode calls the scoring made
};

struct Generation {
    std::vector<Token> tokens;  // the generated tokens, stop token excluded
    std::string text;           // their text, with a matched stop string removed
    // "eog", "stop_string", "end_after", "repeat", "banned_phrase" or "max_tokens"
    std::string stop_reason;
    int retaken = 0;            // times text was taken back (SamplingParams::unique_clauses, unique_lines, banned_phrases)
};

class Session {
public:
    Session(std::shared_ptr<const Model> model, const SessionParams& params);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Appends token ids to the dialogue. Throws bua::Error if they do not fit the context.
    void eval_tokens(const std::vector<Token>& tokens);
    // Appends n_rows embedding rows (row-major [n_rows, n_cols]) to the dialogue. Throws
    // bua::Error if n_cols is not the model's n_embd.
    void eval_embeddings(const float* rows, int n_rows, int n_cols);

    // Logits for the next token after everything evaluated so far ([n_vocab]).
    std::vector<float> last_logits() const;

    // Generates up to max_tokens, stopping at an end-of-generation token (not evaluated) or
    // at any of `stop` (cut from the text; the token that completed it is not evaluated). With
    // keep=true the generated tokens stay in the dialogue (the next round builds on them);
    // with keep=false the dialogue and its logits are restored afterwards (e.g. to retry).
    Generation generate(int max_tokens, const std::vector<std::string>& stop,
                        const SamplingParams& sampling = SamplingParams(), bool keep = true);

    // Log-probability of each candidate continuation (summed over its tokens) given the
    // dialogue so far. The prompt's KV cache is shared by all candidates (sequence copies):
    // the prompt is not re-evaluated. The dialogue itself is left unchanged.
    std::vector<double> score_continuations(const std::vector<std::vector<Token>>& candidates);
    // The same scores for the candidates that can matter (ShortlistParams): the best top_k
    // exactly and in order, the rest either exact or bounded from above, so that a softmax over
    // the scored ones overstates each probability by at most a factor 1 + mass_tolerance.
    ShortlistScores score_top_continuations(const std::vector<std::vector<Token>>& candidates,
                                            const ShortlistParams& params = ShortlistParams());
    // Log-probability of each candidate when the answer must be one of them, chosen token by
    // token: at each branch of the candidates' token trie the next-token distribution is
    // renormalized over the tokens that continue some candidate, and a token that is the only
    // continuation has probability 1. The scores sum to 1 over the candidates (every one is
    // scored exactly), and only the prefixes that end at a branch are evaluated, one sequence
    // copy each: a few positions where score_continuations evaluates every candidate token.
    // The candidates must be prefix-free (each ends with the same end token, e.g. end of turn).
    ShortlistScores score_constrained(const std::vector<std::vector<Token>>& candidates);
    // eval_embeddings(rows, n_rows, n_cols) then score_constrained(candidates) in one
    // llama_decode where the branches fit beside the rows (n_batch, n_seq_max): the last rows
    // go on the dialogue and on each branch's copy of it at once, so scoring costs no second
    // pass over the weights. Leaves the dialogue, its logits and the scores as the two calls
    // would (within float noise: the batch differs); `decodes` counts the scoring's own calls
    // (0 when it shared the rows' decode).
    ShortlistScores eval_and_score_constrained(const float* rows, int n_rows, int n_cols,
                                               const std::vector<std::vector<Token>>& candidates);

    int n_past() const { return n_past_; }
    int n_ctx() const;
    int n_embd() const { return n_embd_; }
    // Forgets everything from position n on (n <= n_past), e.g. to redo a round.
    void truncate(int n);
    void reset() { truncate(0); }

private:
    Generation generate_kept(int max_tokens, const std::vector<std::string>& stop, const SamplingParams& sampling);
    // Leaves the first n positions of a generation that began at n_start (generated: its tokens
    // up to n) with the logits for position n.
    void restore_logits_at(int n, const std::vector<float>& logits_at_start, int n_start,
                           const std::vector<Token>& generated);
    void decode_chunked(int n, const Token* tokens, const float* rows);
    // Log-probability of each candidate's first token (checks the candidates).
    std::vector<double> first_token_logprobs(const std::vector<std::vector<Token>>& candidates, const char* who) const;
    // Throws bua::Error naming `who` for an empty candidate, a token outside the vocabulary or
    // a candidate longer than n_batch.
    void check_candidates(const std::vector<std::vector<Token>>& candidates, const char* who) const;
    // Throws bua::Error (invalid_state) when some path has tokens and the session has no
    // sequence to copy the dialogue to (n_seq_max < 2).
    void require_copies(const std::vector<std::vector<Token>>& paths, const char* who) const;
    // Throws bua::Error for rows that are not [n_rows >= 0, n_embd] with data.
    void check_rows(const float* rows, int n_rows, int n_cols, const char* who) const;
    // Called for every evaluated candidate token: candidate c's token `pos` was evaluated, and
    // `logits` (log-normalizer `lse`) give the distribution of the token after it.
    using PositionVisitor = std::function<void(size_t c, size_t pos, const float* logits, double lse)>;
    // Called for position k of paths[p] with the logits of the token after it.
    using PathVisitor = std::function<void(size_t p, size_t k, const float* logits)>;
    // Evaluates each path on its own copy of the dialogue (batched; the copies are removed
    // afterwards) and visits every position, or only each path's last with last_only. Returns
    // the tokens evaluated; counts llama_decode calls in *decodes.
    int eval_paths(const std::vector<std::vector<Token>>& paths, bool last_only, int* decodes, const PathVisitor& visit);
    // Adds the log-probability of every token after the first of candidates[which[..]] to
    // scores; returns the tokens evaluated and counts llama_decode calls in *decodes.
    int score_rest(const std::vector<std::vector<Token>>& candidates, const std::vector<size_t>& which,
                   std::vector<double>& scores, int* decodes, const PositionVisitor& visit = nullptr);
    void require_room(int n_new, const char* what) const;

    std::shared_ptr<const Model> model_;
    llama_context* ctx_ = nullptr;
    SessionParams params_;
    int n_past_ = 0;
    int n_embd_ = 0;
    bool have_logits_ = false;
    std::vector<float> logits_;  // logits after the last evaluated position
};

}  // namespace bua
