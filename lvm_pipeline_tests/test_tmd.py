"""TMD codes: packing, TMD vectors, the zero-shot assigner (real encoder) and the LLM assigner (real HTTP server)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from lvm_pipeline.config import settings
from lvm_pipeline.encoders import SentenceEncoder
from lvm_pipeline.tmd import (
    DOMAINS,
    MODIFIERS,
    TASKS,
    UNKNOWN,
    LLMTmdAssigner,
    ZeroShotTmdAssigner,
    assigner_from_config,
    lane_index,
    pack_tmd,
    tmd_vector,
    tmd_vectors,
    unpack_tmd,
)
from lvm_pipeline.tmd.assigners import parse_answer
from lvm_pipeline.tmd.domain_prototypes import PHRASES, default_domain_prototypes, description_prototypes
from lvm_pipeline.tmd.gist import LEAD_CHARS, article_gist, first_sentence
from lvm_pipeline.tmd.prototypes import PrototypeScorer

DOMAIN = {label.name: code for code, label in enumerate(DOMAINS)}
ALL_BITS = np.array([pack_tmd(d, t, m) for d in range(16) for t in range(32) for m in range(64)])


# ---- schema ----------------------------------------------------------------------------------

def test_axes_sizes_and_fixed_domain_order():
    assert (len(DOMAINS), len(TASKS), len(MODIFIERS)) == (16, 32, 64)
    assert [d.name for d in DOMAINS][:2] == ["Science", "Mathematics"] and DOMAINS[15].name == "Software"
    assert all(label.name and label.description for axis in (DOMAINS, TASKS, MODIFIERS) for label in axis)


def test_pack_unpack_round_trip_over_every_code():
    codes = [(d, t, m) for d in range(16) for t in range(32) for m in range(64)]
    assert [unpack_tmd(b) for b in ALL_BITS] == codes
    assert len(set(ALL_BITS.tolist())) == len(codes) and ALL_BITS.max() <= 0xFFFE and not (ALL_BITS & 1).any()
    assert [lane_index(b) for b in ALL_BITS] == list(range(16 * 32 * 64))
    assert pack_tmd(11, 5, 9) == (11 << 12) | (5 << 7) | (9 << 1)


@pytest.mark.parametrize("code", [(16, 0, 0), (0, 32, 0), (0, 0, 64), (UNKNOWN, 0, 0), (0, UNKNOWN, 0), (0, 0, -1)])
def test_pack_rejects_out_of_range_codes(code):
    with pytest.raises(ValueError):
        pack_tmd(*code)


def test_unpack_rejects_more_than_16_bits():
    with pytest.raises(ValueError):
        unpack_tmd(1 << 16)


def test_tmd_vectors_unit_norm_and_distinct():
    vectors = tmd_vectors(ALL_BITS)
    assert vectors.shape == (len(ALL_BITS), 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert len(np.unique(vectors, axis=0)) == len(ALL_BITS)
    np.testing.assert_array_equal(tmd_vector(int(ALL_BITS[123])), vectors[123])
    np.testing.assert_array_equal(tmd_vectors(ALL_BITS | 1), vectors)  # the spare bit does not count


def test_tmd_vectors_identical_in_another_process():
    sample = ALL_BITS[::997]
    script = ("import json, sys; import numpy as np; from lvm_pipeline.tmd import tmd_vectors; "
              "print(json.dumps(tmd_vectors(np.array(json.loads(sys.argv[1]))).tolist()))")
    result = subprocess.run([sys.executable, "-c", script, json.dumps(sample.tolist())],
                            capture_output=True, text=True, check=True)
    np.testing.assert_array_equal(np.array(json.loads(result.stdout), dtype=np.float32), tmd_vectors(sample))


# ---- zero-shot -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder()


@pytest.fixture(scope="module")
def zero_shot(encoder):
    return ZeroShotTmdAssigner(encoder)


OBVIOUS = {
    "Mathematics": ("Prime number", "A prime number is a natural number greater than 1 that is not a product of two "
                    "smaller natural numbers. The fundamental theorem of arithmetic states that every integer "
                    "has a unique factorisation into primes."),
    "Law": ("Marbury v. Madison", "The Supreme Court ruled that the act was unconstitutional. The court held that "
            "judges have the power of judicial review over statutes, and the defendant's appeal was dismissed."),
    "Medicine": ("Influenza", "Influenza is an infectious disease caused by a virus. Symptoms include fever, cough "
                 "and muscle pain; patients are treated with antiviral drugs and vaccination prevents it."),
    "Software": ("Python (programming language)", "Python is a high-level programming language. Programs are "
                 "run by an interpreter, and its standard library offers modules for files, networking and data."),
    "Economics": ("Inflation", "Inflation is a general rise in prices in an economy. Central banks raise interest "
                  "rates to slow it, and it reduces the purchasing power of money and wages."),
}


def _vectors(encoder, texts):
    return encoder.encode(list(texts))


def test_zero_shot_obvious_domains(encoder, zero_shot):
    titles, texts = zip(*OBVIOUS.values())
    labels = zero_shot.assign_domains(titles, texts, _vectors(encoder, texts))
    assert [DOMAINS[c].name if c != UNKNOWN else "UNKNOWN" for c in labels.codes] == list(OBVIOUS)
    assert labels.codes.dtype == np.int16 and labels.confidence.dtype == np.float32
    assert ((labels.confidence >= zero_shot.threshold) & (labels.confidence <= 1)).all()


def test_zero_shot_unknown_is_minus_one_not_zero(encoder):
    texts = ["qzx vlorp skee wub wub", "It is a thing that some people have mentioned."]
    labels = ZeroShotTmdAssigner(encoder, threshold=0.95).assign_domains(["?", "?"], texts, _vectors(encoder, texts))
    assert labels.codes.tolist() == [UNKNOWN, UNKNOWN]
    assert (labels.confidence < 0.95).all()


def test_zero_shot_concepts_shapes_and_ranges(encoder, zero_shot):
    texts = ["Water boils at 100 degrees Celsius at sea level.", "The battle ended in 1815 with a French defeat.",
             "The word derives from the Greek for 'lover of wisdom'."]
    tasks, modifiers = zero_shot.assign_concepts(texts, _vectors(encoder, texts))
    for labels, size in ((tasks, len(TASKS)), (modifiers, len(MODIFIERS))):
        assert labels.codes.shape == labels.confidence.shape == (3,) and labels.codes.dtype == np.int16
        assert ((labels.codes == UNKNOWN) | ((labels.codes >= 0) & (labels.codes < size))).all()
        assert ((labels.confidence >= 0) & (labels.confidence <= 1)).all()


def test_zero_shot_is_fast_and_needs_matching_lengths(zero_shot):
    vectors = np.random.default_rng(0).standard_normal((100_000, zero_shot.domains.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [""] * len(vectors)
    start = time.perf_counter()
    tasks, modifiers = zero_shot.assign_concepts(texts, vectors)
    assert time.perf_counter() - start < 5 and len(tasks.codes) == len(modifiers.codes) == len(vectors)
    with pytest.raises(ValueError):
        zero_shot.assign_concepts(texts[:10], vectors)
    with pytest.raises(ValueError):  # another encoder's dimension
        zero_shot.assign_domains(["t"], ["x"], np.zeros((1, 768), dtype=np.float32))


def test_a_short_description_moves_an_ambiguous_article_to_its_domain(encoder, zero_shot):
    # the text says nothing of what "Python" / "Mercury" is: the short description decides
    articles = {"Python": "Python was first described in the 1980s. It is now found in many places around the world.",
                "Mercury": "Mercury has been known since antiquity. It was named after a Roman god."}
    cases = [("Python", "Programming language", "Software"), ("Python", "Genus of snakes", "Science"),
             ("Mercury", "Chemical element", "Science"), ("Mercury", "Roman god of commerce", "Philosophy")]
    titles, descriptions, expected = zip(*cases)
    texts = [articles[t] for t in titles]
    labels = zero_shot.assign_domains(titles, texts, _vectors(encoder, texts), descriptions)
    assert [DOMAINS[c].name if c != UNKNOWN else "UNKNOWN" for c in labels.codes] == list(expected)


def test_zero_shot_without_descriptions_still_assigns(encoder, zero_shot):
    titles, texts = zip(*OBVIOUS.values())
    vectors = _vectors(encoder, texts)
    absent = zero_shot.assign_domains(titles, texts, vectors)
    assert [DOMAINS[c].name for c in absent.codes] == list(OBVIOUS)  # the first sentence stands in
    for missing in ([None] * len(titles), [""] * len(titles), ["  "] * len(titles)):
        same = zero_shot.assign_domains(titles, texts, vectors, missing)
        np.testing.assert_array_equal(same.codes, absent.codes)
        np.testing.assert_allclose(same.confidence, absent.confidence, atol=1e-6)
    with pytest.raises(ValueError):
        zero_shot.assign_domains(titles, texts, vectors, ["one description"])
    empty = zero_shot.assign_domains([], [], np.zeros((0, encoder.dimension), dtype=np.float32), [])
    assert empty.codes.shape == (0,)


def test_zero_shot_before_prototypes_is_one_description_on_the_vector(encoder):
    # the benchmark's "old" row: one templated description per domain, the article vector alone
    old = ZeroShotTmdAssigner(encoder, domain_prototypes=description_prototypes(), top_k=1, hubness=False, gist=False)
    titles, texts = zip(*OBVIOUS.values())
    vectors = _vectors(encoder, texts)
    expected = (vectors @ encoder.encode([p for _, p in description_prototypes()]).T).argmax(axis=1)
    np.testing.assert_array_equal(old.assign_domains(["?"] * len(texts), texts, vectors, ["Song"] * len(texts)).codes,
                                  expected)


def test_article_gist():
    text = "Impressionism is a 19th-century art movement. It began in Paris."
    assert article_gist("Impressionism", "Art movement", text) == "Impressionism: Art movement"
    assert article_gist(" Impressionism ", "  ", text) == "Impressionism: Impressionism is a 19th-century art movement."
    assert article_gist("Impressionism", None, "   ") == "Impressionism"
    assert first_sentence("x" * (LEAD_CHARS + 50)) == "x" * LEAD_CHARS


def test_every_domain_has_its_own_prototype_phrases():
    assert list(PHRASES) == [d.name for d in DOMAINS]
    phrases = [p.lower() for ps in PHRASES.values() for p in ps]
    assert len(phrases) == len(set(phrases))  # no phrase speaks for two domains
    prototypes = default_domain_prototypes()
    assert {code for code, _ in prototypes} == set(range(len(DOMAINS))) and len(prototypes) == len(phrases) + 16


class _TableEncoder:
    """Looks texts up in a fixed table of vectors: exact arithmetic for the scorer."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = {text: np.array(v, dtype=np.float32) / np.linalg.norm(v) for text, v in table.items()}

    def encode(self, texts):
        return np.stack([self.table[t] for t in texts])


def test_prototype_scorer_top_k_mean_and_hubness():
    encoder = _TableEncoder({"a1": [1, 0, 0], "a2": [0.8, 0.6, 0], "a3": [0, 0, 1], "b1": [0, 1, 0]})
    prototypes = [(1, "b1"), (0, "a1"), (0, "a2"), (0, "a3")]  # any order
    vector = np.array([[0.6, 0.8, 0.0]], dtype=np.float32)
    cosines = {"a1": 0.6, "a2": 0.96, "a3": 0.0, "b1": 0.8}
    top2 = PrototypeScorer(encoder, prototypes, 2, top_k=2)
    np.testing.assert_allclose(top2.scores(vector), [[(0.96 + 0.6) / 2, 0.8]], atol=1e-6)
    np.testing.assert_allclose(PrototypeScorer(encoder, prototypes, 2, top_k=5).scores(vector),
                               [[(0.6 + 0.96 + 0.0) / 3, 0.8]], atol=1e-6)  # fewer than k: all of them
    hub = PrototypeScorer(encoder, prototypes, 2, top_k=1, hubness=True)
    to_others = {"a1": (0.8 + 0) / 3, "a2": (0.8 + 0.6) / 3, "a3": 0.0, "b1": (0 + 0.6) / 3}
    corrected = {t: cosines[t] - to_others[t] for t in cosines}
    np.testing.assert_allclose(hub.scores(vector), [[max(corrected["a1"], corrected["a2"], corrected["a3"]),
                                                     corrected["b1"]]], atol=1e-6)
    with pytest.raises(ValueError):  # label 2 has no prototype
        PrototypeScorer(encoder, prototypes, 3)
    with pytest.raises(ValueError):
        top2.scores(np.zeros((1, 4), dtype=np.float32))


def test_assigner_from_config(encoder):
    assert isinstance(assigner_from_config("zero-shot", encoder, threshold=0.5), ZeroShotTmdAssigner)
    assert isinstance(assigner_from_config("llm", None, base_url="http://127.0.0.1:1/v1", model="m"), LLMTmdAssigner)
    with pytest.raises(ValueError):
        assigner_from_config("keywords", encoder)


# ---- LLM -------------------------------------------------------------------------------------

@pytest.fixture
def chat_server():
    """start(reply) -> (base_url, requests): a real OpenAI-format server; reply(n, body) -> (status, content)."""
    servers = []

    def start(reply):
        seen: list[tuple[dict, dict]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append((dict(self.headers), body))
                status, content = reply(len(seen), body)
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.handle_error = lambda *args: None  # a client that timed out closed its socket
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _answer(code, confidence=0.9):
    return lambda n, body: (200, json.dumps({"code": code, "confidence": confidence}))


def _assigner(url, **options):
    return LLMTmdAssigner(url, "test-model", **{"timeout_s": 5, "retries": 2, "backoff_s": 0.01, **options})


def test_llm_parses_answers_and_sends_the_prompt(chat_server):
    url, seen = chat_server(_answer(11, 0.8))
    labels = _assigner(url).assign_domains(["Marbury v. Madison"], ["x" * 600], np.zeros((1, 384)))
    assert labels.codes.tolist() == [11] and labels.confidence.tolist() == [pytest.approx(0.8)]
    (_, body), = seen
    assert body["model"] == "test-model"
    prompt = body["messages"][-1]["content"]
    assert "Marbury v. Madison" in prompt and "x" * 500 in prompt and "x" * 501 not in prompt
    assert "11: Law" in prompt and "0: Science" in prompt
    assert prompt.endswith("Marbury v. Madison\n\n" + "x" * 500)  # no description: none shown


def test_llm_prompt_shows_the_short_description(chat_server):
    url, seen = chat_server(_answer(11, 0.8))
    _assigner(url).assign_domains(["Marbury v. Madison"], ["x"], np.zeros((1, 384)), ["1803 U.S. Supreme Court case"])
    assert "Marbury v. Madison\n(1803 U.S. Supreme Court case)\n\nx" in seen[0][1]["messages"][-1]["content"]


def test_llm_concepts_label_tasks_and_modifiers(chat_server):
    url, seen = chat_server(lambda n, body: (200, json.dumps({"code": 31 if "0: Definition" in body["messages"][-1]["content"]
                                                                       else 63, "confidence": 1})))
    tasks, modifiers = _assigner(url).assign_concepts(["Rome is also called the Eternal City."], np.zeros((1, 384)))
    assert (tasks.codes.tolist(), modifiers.codes.tolist(), len(seen)) == ([31], [63], 2)


@pytest.mark.parametrize("content", ["Law", "", "{\"code\": 16, \"confidence\": 0.9}", "{\"code\": -1, \"confidence\": 1}",
                                     "{\"code\": \"3\", \"confidence\": 0.9}", "{\"code\": true, \"confidence\": 0.9}",
                                     "{\"code\": 3, \"confidence\": 1.5}", "{\"code\": 3}", "[3, 0.9]", None])
def test_llm_garbage_is_unknown_not_zero(chat_server, content):
    url, _ = chat_server(lambda n, body: (200, content))
    labels = _assigner(url, threshold=0.0).assign_domains(["t"], ["text"], np.zeros((1, 384)))
    assert labels.codes.tolist() == [UNKNOWN] and labels.confidence.tolist() == [0.0]


def test_parse_answer_accepts_a_markdown_fence():
    assert parse_answer('```json\n{"code": 4, "confidence": 0.7}\n```', 16) == (4, 0.7)


def test_llm_low_confidence_is_unknown(chat_server):
    url, _ = chat_server(_answer(3, 0.2))
    labels = _assigner(url, threshold=0.5).assign_domains(["t"], ["text"], np.zeros((1, 384)))
    assert labels.codes.tolist() == [UNKNOWN] and labels.confidence.tolist() == [pytest.approx(0.2)]


def test_llm_retries_server_errors(chat_server):
    url, seen = chat_server(lambda n, body: (500, "") if n <= 2 else _answer(7)(n, body))
    labels = _assigner(url, retries=3).assign_domains(["t"], ["text"], np.zeros((1, 384)))
    assert labels.codes.tolist() == [7] and len(seen) == 3


def test_llm_timeout_gives_unknown_after_retries(chat_server, caplog):
    def slow(n, body):
        time.sleep(0.5)
        return _answer(7)(n, body)

    url, seen = chat_server(slow)
    start = time.perf_counter()
    labels = _assigner(url, timeout_s=0.1, retries=1).assign_domains(["a", "b"], ["x", "y"], np.zeros((2, 384)))
    assert labels.codes.tolist() == [UNKNOWN, UNKNOWN] and labels.confidence.tolist() == [0.0, 0.0]
    assert len(seen) == 4 and time.perf_counter() - start < 3
    assert "failed after 2 attempts" in caplog.text


def test_llm_unreachable_server_gives_unknown(caplog):
    labels = _assigner("http://127.0.0.1:9/v1", retries=0).assign_domains(["t"], ["text"], np.zeros((1, 384)))
    assert labels.codes.tolist() == [UNKNOWN] and "failed" in caplog.text


def test_llm_cache_serves_a_rerun_without_requests(chat_server, tmp_path):
    url, seen = chat_server(_answer(9))
    titles, texts = ["Mona Lisa", "Guernica", "Mona Lisa"], ["a portrait", "a painting", "a portrait"]
    first = _assigner(url, cache_dir=tmp_path).assign_domains(titles, texts, np.zeros((3, 384)))
    assert len(seen) == 2  # the repeated article is served from the cache too
    second = _assigner(url, cache_dir=tmp_path).assign_domains(titles, texts, np.zeros((3, 384)))
    assert len(seen) == 2 and second.codes.tolist() == first.codes.tolist() == [9, 9, 9]
    other_model = LLMTmdAssigner(url, "other-model", cache_dir=tmp_path).assign_domains(titles[:1], texts[:1], [[0]])
    assert len(seen) == 3 and other_model.codes.tolist() == [9]


def test_llm_failures_are_not_cached(chat_server, tmp_path):
    url, seen = chat_server(lambda n, body: (503, "") if n == 1 else _answer(2)(n, body))
    assert _assigner(url, retries=0, cache_dir=tmp_path).assign_domains(["t"], ["x"], [[0]]).codes.tolist() == [UNKNOWN]
    assert _assigner(url, retries=0, cache_dir=tmp_path).assign_domains(["t"], ["x"], [[0]]).codes.tolist() == [2]


def test_llm_api_key_only_from_the_environment(chat_server, monkeypatch):
    url, seen = chat_server(_answer(1))
    monkeypatch.setenv("LVM_LLM_API_KEY", "sk-test-123")
    _assigner(url, api_key=settings().llm_api_key).assign_domains(["t"], ["x"], [[0]])
    monkeypatch.delenv("LVM_LLM_API_KEY")
    _assigner(url, api_key=settings().llm_api_key).assign_domains(["t"], ["x"], [[0]])
    assert seen[0][0]["Authorization"] == "Bearer sk-test-123" and "Authorization" not in seen[1][0]
