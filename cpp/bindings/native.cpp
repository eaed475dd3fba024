// bua._native: the thin pybind11 layer over the bua C++ runtime.
// Arrays in, arrays/strings out; decoding runs with the GIL released; bua::Error becomes
// bua._native.LlamaError (a RuntimeError) carrying the llama.cpp status in `.code`.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bua/runtime.h"
#include "llama.h"

#ifndef BUA_LLAMA_CPP_PYTHON_VERSION
#error "BUA_LLAMA_CPP_PYTHON_VERSION must be defined by the build"
#endif

namespace py = pybind11;

namespace {

using FloatRows = py::array_t<float, py::array::c_style | py::array::forcecast>;
using TokenArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

std::vector<bua::Token> to_tokens(const TokenArray& a) {
    if (a.ndim() != 1) throw py::value_error("token ids must be a 1-D sequence, got " + std::to_string(a.ndim()) + " dimensions");
    return std::vector<bua::Token>(a.data(), a.data() + a.size());
}

py::array_t<float> to_numpy(std::vector<float>&& v) {
    auto* heap = new std::vector<float>(std::move(v));
    py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<float>*>(p); });
    return py::array_t<float>({static_cast<py::ssize_t>(heap->size())}, {sizeof(float)}, heap->data(), owner);
}

py::dict scores_dict(const bua::ShortlistScores& s) {
    py::dict d;
    d["logprob"] = py::array_t<double>(static_cast<py::ssize_t>(s.logprob.size()), s.logprob.data());
    py::array_t<bool> scored(static_cast<py::ssize_t>(s.scored.size()));
    for (size_t i = 0; i < s.scored.size(); ++i) scored.mutable_at(i) = s.scored[i] != 0;
    d["scored"] = scored;
    d["positions"] = s.positions;
    d["decodes"] = s.decodes;
    return d;
}

void check_installed_llama_version() {
    std::string installed;
    try {
        installed = py::module_::import("importlib.metadata").attr("version")("llama-cpp-python").cast<std::string>();
    } catch (py::error_already_set&) {
        throw py::import_error("bua._native needs llama-cpp-python==" BUA_LLAMA_CPP_PYTHON_VERSION
                               " but it is not installed: pip install llama-cpp-python==" BUA_LLAMA_CPP_PYTHON_VERSION);
    }
    if (installed != BUA_LLAMA_CPP_PYTHON_VERSION)
        throw py::import_error("bua._native was built against llama-cpp-python==" BUA_LLAMA_CPP_PYTHON_VERSION
                               " but llama-cpp-python==" + installed +
                               " is installed; their libllama ABIs differ. Reinstall the pinned version "
                               "(pip install llama-cpp-python==" BUA_LLAMA_CPP_PYTHON_VERSION
                               ") or rebuild bua against the installed one (pip install --force-reinstall --no-deps bua).");
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "bua native runtime: segment decoding (token ids | embedding rows), KV reuse, candidate scoring";
    check_installed_llama_version();

    static py::handle llama_error =
        py::exception<bua::Error>(m, "LlamaError", PyExc_RuntimeError).release();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const bua::Error& e) {
            py::object exc = py::reinterpret_borrow<py::object>(llama_error)(e.what());
            exc.attr("kind") = bua::error_kind_name(e.kind());
            exc.attr("status") = e.status();
            PyErr_SetObject(llama_error.ptr(), exc.ptr());
        }
    });

    m.def("build_info", [] {
        py::dict d;
        d["llama_cpp_python"] = BUA_LLAMA_CPP_PYTHON_VERSION;
        d["system_info"] = std::string(llama_print_system_info());
        return d;
    }, "The llama-cpp-python version this extension was built against and llama.cpp's system info.");
    m.def("build_problems", [](py::object info) {
        return info.is_none() ? bua::build_problems() : bua::build_problems(info.cast<std::string>());
    }, py::arg("system_info") = py::none(),
          "Why a llama.cpp build (default: the loaded one) must not run on this CPU ([] = safe): "
          "instruction sets the CPU lacks, or ggml's AMX backend.");
    m.def("explain_decode_status", &bua::explain_decode_status, py::arg("status"));

    py::class_<bua::Model, std::shared_ptr<bua::Model>>(m, "Model", "A GGUF model loaded by llama.cpp (CPU).")
        .def_static("load", &bua::Model::load, py::arg("path"), py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("n_embd", &bua::Model::n_embd)
        .def_property_readonly("n_vocab", &bua::Model::n_vocab)
        .def_property_readonly("n_ctx_train", &bua::Model::n_ctx_train)
        .def_property_readonly("description", &bua::Model::description)
        .def("meta", &bua::Model::meta, py::arg("key"))
        .def("tokenize", &bua::Model::tokenize, py::arg("text"), py::arg("add_special") = false,
             py::arg("parse_special") = true)
        .def("token_to_piece", &bua::Model::token_to_piece, py::arg("token"), py::arg("special") = true)
        .def("detokenize", [](const bua::Model& self, const TokenArray& t, bool special) {
            return self.detokenize(to_tokens(t), special);
        }, py::arg("tokens"), py::arg("special") = true)
        .def("is_end_of_generation", &bua::Model::is_end_of_generation, py::arg("token"))
        .def("token_embeddings", [](const bua::Model& self, const TokenArray& t) {
            auto tokens = to_tokens(t);
            auto flat = to_numpy(self.token_embeddings(tokens));
            return flat.reshape({static_cast<py::ssize_t>(tokens.size()), static_cast<py::ssize_t>(self.n_embd())});
        }, py::arg("tokens"), "Dequantized token-embedding rows [n, n_embd] read from the GGUF.");

    py::class_<bua::Session>(m, "Session", "One dialogue on one llama.cpp context; not for concurrent use.")
        .def(py::init([](std::shared_ptr<bua::Model> model, int n_ctx, int n_threads, int n_batch, int n_seq_max) {
                 bua::SessionParams p;
                 p.n_ctx = n_ctx;
                 p.n_threads = n_threads;
                 p.n_batch = n_batch;
                 p.n_seq_max = n_seq_max;
                 py::gil_scoped_release release;
                 return std::make_unique<bua::Session>(std::move(model), p);
             }),
             py::arg("model"), py::arg("n_ctx") = 2048, py::arg("n_threads") = 0, py::arg("n_batch") = 512,
             py::arg("n_seq_max") = 64)
        .def("eval_tokens", [](bua::Session& self, const TokenArray& t) {
            auto tokens = to_tokens(t);
            py::gil_scoped_release release;
            self.eval_tokens(tokens);
        }, py::arg("tokens"))
        .def("eval_embeddings", [](bua::Session& self, const FloatRows& rows) {
            if (rows.ndim() != 2) throw py::value_error("embeddings must have shape [n, n_embd], got " + std::to_string(rows.ndim()) + " dimensions");
            py::gil_scoped_release release;
            self.eval_embeddings(rows.data(), static_cast<int>(rows.shape(0)), static_cast<int>(rows.shape(1)));
        }, py::arg("embeddings"))
        .def("last_logits", [](const bua::Session& self) { return to_numpy(self.last_logits()); })
        .def("generate", [](bua::Session& self, int max_tokens, const std::vector<std::string>& stop, float temperature,
                            float top_p, uint32_t seed, const std::string& grammar, bool keep,
                            float dry_multiplier, float dry_base, int dry_allowed_length, bool unique_clauses,
                            const std::vector<std::string>& banned_phrases, int max_retakes,
                            const std::string& end_after, float min_p,
                            const std::vector<std::pair<std::string, int>>& counts, bool unique_lines) {
            bua::SamplingParams sp;
            sp.temperature = temperature;
            sp.top_p = top_p;
            sp.min_p = min_p;
            sp.seed = seed;
            sp.grammar = grammar;
            sp.dry_multiplier = dry_multiplier;
            sp.dry_base = dry_base;
            sp.dry_allowed_length = dry_allowed_length;
            sp.unique_clauses = unique_clauses;
            sp.unique_lines = unique_lines;
            sp.banned_phrases = banned_phrases;
            sp.max_retakes = max_retakes;
            sp.end_after = end_after;
            sp.counts = counts;
            bua::Generation g;
            {
                py::gil_scoped_release release;
                g = self.generate(max_tokens, stop, sp, keep);
            }
            py::dict d;
            d["tokens"] = g.tokens;
            d["text"] = py::bytes(g.text).attr("decode")("utf-8", "replace");
            d["stop_reason"] = g.stop_reason;
            d["retaken"] = g.retaken;
            return d;
        }, py::arg("max_tokens"), py::arg("stop") = std::vector<std::string>(), py::arg("temperature") = 0.0f,
           py::arg("top_p") = 1.0f, py::arg("seed") = 0u, py::arg("grammar") = std::string(), py::arg("keep") = true,
           py::arg("dry_multiplier") = 0.0f, py::arg("dry_base") = 1.75f, py::arg("dry_allowed_length") = 2,
           py::arg("unique_clauses") = false, py::arg("banned_phrases") = std::vector<std::string>(),
           py::arg("max_retakes") = 3, py::arg("end_after") = std::string(), py::arg("min_p") = 0.0f,
           py::arg("counts") = std::vector<std::pair<std::string, int>>(), py::arg("unique_lines") = false)
        .def("score_continuations", [](bua::Session& self, const std::vector<std::vector<bua::Token>>& cands) {
            std::vector<double> s;
            {
                py::gil_scoped_release release;
                s = self.score_continuations(cands);
            }
            return py::array_t<double>(static_cast<py::ssize_t>(s.size()), s.data());
        }, py::arg("candidates"))
        .def("score_top_continuations", [](bua::Session& self, const std::vector<std::vector<bua::Token>>& cands,
                                           int top_k, double mass_tolerance, int min_batch_positions) {
            bua::ShortlistParams sp;
            sp.top_k = top_k;
            sp.mass_tolerance = mass_tolerance;
            sp.min_batch_positions = min_batch_positions;
            bua::ShortlistScores s;
            {
                py::gil_scoped_release release;
                s = self.score_top_continuations(cands, sp);
            }
            return scores_dict(s);
        }, py::arg("candidates"), py::arg("top_k") = bua::ShortlistParams().top_k,
           py::arg("mass_tolerance") = bua::ShortlistParams().mass_tolerance,
           py::arg("min_batch_positions") = bua::ShortlistParams().min_batch_positions,
           "The best top_k candidates exactly, the rest exact or bounded above (bua::ShortlistParams): a dict "
           "of logprob, scored (bool), positions and decodes.")
        .def("score_constrained", [](bua::Session& self, const std::vector<std::vector<bua::Token>>& cands) {
            bua::ShortlistScores s;
            {
                py::gil_scoped_release release;
                s = self.score_constrained(cands);
            }
            return scores_dict(s);
        }, py::arg("candidates"),
           "Every candidate's log-probability when the answer must be one of them (bua::Session::score_constrained): "
           "the same dict as score_top_continuations, every candidate scored.")
        .def("eval_and_score_constrained", [](bua::Session& self, const FloatRows& rows,
                                              const std::vector<std::vector<bua::Token>>& cands) {
            if (rows.ndim() != 2) throw py::value_error("embeddings must have shape [n, n_embd], got " + std::to_string(rows.ndim()) + " dimensions");
            bua::ShortlistScores s;
            {
                py::gil_scoped_release release;
                s = self.eval_and_score_constrained(rows.data(), static_cast<int>(rows.shape(0)),
                                                    static_cast<int>(rows.shape(1)), cands);
            }
            return scores_dict(s);
        }, py::arg("embeddings"), py::arg("candidates"),
           "eval_embeddings then score_constrained in one llama_decode where the branches fit "
           "(bua::Session::eval_and_score_constrained): the same dict as score_constrained.")
        .def_property_readonly("n_past", &bua::Session::n_past)
        .def_property_readonly("n_ctx", &bua::Session::n_ctx)
        .def_property_readonly("n_embd", &bua::Session::n_embd)
        .def("truncate", &bua::Session::truncate, py::arg("n"))
        .def("reset", &bua::Session::reset);
}
