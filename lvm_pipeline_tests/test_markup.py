"""Markup is not text: HTML cleaning of plain-text records, the markup detector and the text_quality gate."""

from __future__ import annotations

import pytest

from lvm_pipeline.gates.text_quality import TextQualityThresholds, check_text_quality
from lvm_pipeline.markdown import excerpt
from lvm_pipeline.markup import clean_html, markup_kinds
from lvm_pipeline.segmentation import segment
from lvm_pipeline.sources.vital_articles import load_vital_articles

CLEAN_SENTENCES = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.",
    "Photosynthesis is a process used by plants to convert light energy into chemical energy.",
    "Water boils at 100 °C at sea level, i.e. at a pressure of 101.3 kPa.",
    "The novel was first published in London by Chapman & Hall in 1843.",
    "Its screenplay was written by Age & Scarpelli, Luciano Vincenzoni, and Leone himself.",
    "The family includes orthosilicate minerals with the formula SiO4, where 0 ≤ x < 2.",
    "The determinant of a square matrix A is commonly denoted det(A), det A, or |A|.",
    "Dr. Martin Luther King Jr. delivered the speech on August 28, 1963, in Washington, D.C.",
    "Georges Seurat's most famous work was painted from 1884 to 1886.",
    "The term comes from Greek ἄκρον (akron) 'highest point, extremity' and πόλις (polis) 'city'.",
    "Hip hop incorporates \"rhyme, rhythmic speech, and [commonly] street vernacular\".",
    "The U.S. population grew by 7.4% between 2010 and 2020, to about 331.4 million people.",
    "Mount Everest, at 8,848.86 m (29,031.7 ft), is Earth's highest mountain above sea level.",
    "Shakespeare wrote approximately 39 plays; his works include Hamlet, Othello and King Lear.",
    "The speed of light in vacuum is exactly 299,792,458 metres per second.",
    "The Roman Empire was ruled by emperors from 27 BC until the fall of Constantinople in 1453.",
    "Penicillin was discovered in 1928 by the Scottish scientist Alexander Fleming.",
    "Jazz originated in the African-American communities of New Orleans in the late 19th century.",
    "The Amazon River in South America is the largest river by discharge volume of water in the world.",
]
MARKUP_SAMPLES = [
    "<p>The Eiffel Tower is a lattice tower in Paris.</p>",
    "The tower was built for the {{cite web|title=1889 World's Fair}} exhibition.",
    "Gustave Eiffel&#39;s company designed and built the tower.",
    "See https://en.wikipedia.org/wiki/Eiffel_Tower for details.",
    "The '''Amazon River''' is the largest river by discharge.",
    "Photosynthesis converts light into [[chemical energy]].",
    "Tom &amp; Jerry is an American animated media franchise.",
    "Its official site is www.toureiffel.paris and it opens daily.",
]
MARKED_UP_SENTENCE = '<a href="https://www.toureiffel.paris">The tower</a> opened in 1889.'  # html + url


def _clean(n: int) -> list[str]:
    return [CLEAN_SENTENCES[i % len(CLEAN_SENTENCES)] for i in range(n)]


def test_clean_html_keeps_paragraphs_and_drops_scripts():
    text = "<p>First para.</p><p>Second <b>bold</b> para.</p><script>var x = 1;</script>"
    assert clean_html(text) == "First para.\n\nSecond bold para."


@pytest.mark.parametrize("text, cleaned", [
    ("Tom &amp; Jerry", "Tom & Jerry"),
    ("Caf&eacute; &#39;Le Dôme&#x27;", "Café 'Le Dôme'"),
    ("H<sub>2</sub>O", "H2O"),
    ("Intro<!-- hidden note --> text.<style>p { color: red }</style>", "Intro text."),
    ("<ul>\n  <li>one</li>\n  <li>two&nbsp;&nbsp;and\tthree</li>\n</ul>", "one\n\ntwo and three"),
    ("line one<br>line two<br/>line three", "line one\n\nline two\n\nline three"),
    ("Plain paragraph.\n\nSecond paragraph with <i>italics</i>.", "Plain paragraph.\n\nSecond paragraph with italics."),
    ("AT&T <b>merged</b> with R&D labs", "AT&T merged with R&D labs"),
    ("<html><head><title>Page</title></head><body><h1>Title</h1><p>Body.</p></body></html>", "Title\n\nBody."),
])
def test_clean_html(text, cleaned):
    assert clean_html(text) == cleaned


@pytest.mark.parametrize("text", [
    "Plain text without markup.", "x < y and y > z", "AT&T", "5 <10", "I <3 you", "Chapman & Hall",
    "R&D; and &copy 2020", "a<b", "",
])
def test_clean_html_leaves_text_without_html_alone(text):
    assert clean_html(text) is None


def test_clean_html_of_an_all_markup_record_is_empty():
    assert clean_html("<script>track();</script><style>p {}</style><!-- nothing --><p> </p><br>") == ""


@pytest.mark.parametrize("text, kinds", [
    ("<p>A paragraph.</p>", ("html",)),
    ("Line<br/>break", ("html",)),
    ('<script type="text/javascript">x()</script>', ("html",)),
    ("{{Infobox river|name=Amazon}}", ("wiki",)),
    ("The [[Nile]] flows north.", ("wiki",)),
    ("The '''Nile''' is a river.", ("wiki",)),
    ("''Hamlet'' is a tragedy.", ("wiki",)),
    ("[http://example.org the site]", ("wiki", "url")),
    ('{| class="wikitable"', ("wiki",)),
    ("Tom &amp; Jerry", ("entity",)),
    ("Rock &#38; roll", ("entity",)),
    ("Symbol &#x1F; here", ("entity",)),
    ("Read more at https://example.org/page.", ("url",)),
    ("Visit www.example.com today.", ("url",)),
    ('<a href="http://example.org">Tom &amp; Jerry</a> {{stub}}', ("html", "wiki", "entity", "url")),
])
def test_markup_kinds(text, kinds):
    assert markup_kinds(text) == kinds


@pytest.mark.parametrize("text", [*CLEAN_SENTENCES, "If a<b, the loop ends.", "I <3 you", "The 5 <10 rule."])
def test_markup_kinds_on_clean_prose(text):
    assert markup_kinds(text) == ()


def test_text_quality_clean_batch_is_go():
    result = check_text_quality(_clean(100))
    assert result.decision == "GO"
    assert result.figures["n_concepts"] == 100
    assert result.figures["markup_share"] == 0 and result.figures["n_markup"] == 0
    assert result.worst == []


def test_text_quality_a_little_markup_warns():
    texts = _clean(97) + MARKUP_SAMPLES[:3]
    result = check_text_quality(texts)
    assert result.decision == "WARN"
    assert result.figures["markup_share"] == pytest.approx(0.03)
    assert result.figures["html_share"] == pytest.approx(0.01)
    assert result.figures["wiki_share"] == pytest.approx(0.01)
    assert result.figures["entity_share"] == pytest.approx(0.01)
    assert result.figures["url_share"] == 0


def test_text_quality_much_markup_stops_with_worst_examples():
    marked = [MARKUP_SAMPLES[i % len(MARKUP_SAMPLES)] for i in range(19)] + [MARKED_UP_SENTENCE]
    texts = _clean(80) + marked
    titles = [f"article {i}" for i in range(100)]
    result = check_text_quality(texts, titles)
    assert result.decision == "STOP" and result.status["markup_share"] == "STOP"
    assert result.figures["markup_share"] == pytest.approx(0.2) and result.figures["n_markup"] == 20
    assert len(result.worst) == 10
    assert result.worst[0] == {"title": "article 99", "kinds": "html, url", "text": excerpt(MARKED_UP_SENTENCE)}
    assert [row["title"] for row in result.worst[1:]] == [f"article {i}" for i in range(80, 89)]
    assert [row["kinds"] for row in result.worst[1:]] == [", ".join(markup_kinds(t)) for t in marked[:9]]
    assert "worst examples" in result.markdown()


def test_text_quality_thresholds_are_configurable():
    texts = _clean(990) + MARKUP_SAMPLES[:1] * 10  # 1% of 1,000: clearly above 0.5%
    assert check_text_quality(texts).decision == "GO"
    assert check_text_quality(texts, thresholds=TextQualityThresholds(go_markup_share=0.005)).decision == "WARN"


def test_text_quality_empty_batch():
    result = check_text_quality([])
    assert result.figures["n_concepts"] == 0 and result.figures["markup_share"] is None
    assert not result.graded and result.summary == "not graded: the batch has no concepts"


def test_demo_corpus_is_clean():
    """The detector must not fire on real Wikipedia prose, nor the cleaner change it."""
    records = load_vital_articles()[:2000]
    assert all(clean_html(r["text"]) is None for r in records)
    sentences = [chunk.text for r in records for chunk in segment(r["text"], "sentence")]
    flagged = [(text, kinds) for text in sentences if (kinds := markup_kinds(text))]
    share = len(flagged) / len(sentences)
    print(f"markup in {len(flagged)} of {len(sentences)} demo sentences ({share:.3%}): {flagged[:5]}")
    assert len(sentences) > 5000 and share < 0.005


def test_html_nested_too_deeply_is_rejected_before_the_quadratic_parser():
    from lvm_pipeline.markup import html_nesting_depth
    from lvm_pipeline.sources.records import Rejected, to_article

    assert html_nesting_depth("<p>a<br>b<img src=x /><b>c</b></p><div><div></div></div>") == 2  # void and closed tags
    bomb = {"id": "bomb", "title": "T", "text": "<div>" * 90_000 + "x" + "</div>" * 90_000}  # 2 minutes to parse
    rejected = to_article(bomb, "line 1", html=True)
    assert isinstance(rejected, Rejected) and rejected.reason == "invalid text: HTML elements nested more than 100 deep"
    fine = to_article(dict(bomb, text="<div>" * 100 + "Text." + "</div>" * 100), "line 2", html=True)
    assert fine.text == "Text."
