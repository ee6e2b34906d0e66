"""The TMD code: 16 domains x 32 tasks x 64 modifiers, packed into 16 bits (DESIGN.md section 5).

`bits = (domain << 12) | (task << 7) | (modifier << 1)`; bit 0 is spare. Code 0 is a real label
(Science, Definition, Historical): "unknown" is `UNKNOWN` (-1), which never packs, and a concept
not labelled yet reads as `NOT_ASSIGNED` (-2; NULL in the database).
Each label carries a one-sentence description; the zero-shot assigner embeds it.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np

from lvm_pipeline.arrays import unit_rows

UNKNOWN = -1  # the assigner was not confident enough (or could not answer)
NOT_ASSIGNED = -2  # the tmd_codes stage has not run on the concept yet
TMD_DIM = 16
CODE_BITS = 15
_PROJECTION_SEED = 20240516


class Label(NamedTuple):
    name: str
    description: str


DOMAINS: tuple[Label, ...] = (
    Label("Science", "Natural science: physics, chemistry, biology, astronomy and earth science; "
                     "matter, energy, atoms, molecules, cells, animals, plants, species, stars and planets."),
    Label("Mathematics", "Mathematics: numbers, algebra, geometry, calculus, equations, functions, "
                         "theorems, proofs, sets and statistics."),
    Label("Technology", "Technology: inventions, machines, devices, vehicles, electronics, "
                        "communication, tools and materials used by people."),
    Label("Engineering", "Engineering: the design and construction of structures, bridges, engines, "
                         "power systems, circuits and industrial processes."),
    Label("Medicine", "Medicine and health: diseases, symptoms, treatments, drugs, anatomy, "
                      "the human body, hospitals and public health."),
    Label("Psychology", "Psychology: the mind, behaviour, emotion, cognition, perception, "
                        "memory, personality and mental disorders."),
    Label("Philosophy", "Philosophy and religion: ethics, logic, metaphysics, knowledge, "
                        "belief, God, gods, faith, churches and religious traditions."),
    Label("History", "History: past events, wars, empires, dynasties, revolutions, "
                     "ancient civilisations and historical periods."),
    Label("Literature", "Literature: novels, poems, plays, writers, books, myths, "
                        "stories and literary works."),
    Label("Art", "The arts: painting, sculpture, music, film, dance, theatre, architecture, "
                 "artists, musicians and artistic styles."),
    Label("Economics", "Economics and business: money, markets, trade, finance, companies, "
                       "industry, prices, labour and economic systems."),
    Label("Law", "Law: legal systems, courts, judges, trials, rulings, constitutions, "
                 "statutes, rights, crimes and punishment."),
    Label("Politics", "Politics and government: states, political parties, elections, "
                      "ideologies, diplomacy, international relations and public policy."),
    Label("Education", "Education: schools, universities, teaching, learning, students, "
                       "curricula, academic degrees and literacy."),
    Label("Environment", "The environment: climate change, pollution, conservation of nature, ecosystems, "
                         "natural resources and the weather."),
    Label("Software", "Software and computing: computer programs, programming languages, "
                      "operating systems, algorithms, the internet and data."),
)

TASKS: tuple[Label, ...] = (
    Label("Definition", "States what something is, giving its defining category and characteristics."),
    Label("Fact Statement", "States a single plain fact about its subject."),
    Label("Causal Explanation", "Explains why something happens or what causes it."),
    Label("Comparison", "Compares two or more things, pointing out similarities or differences."),
    Label("Classification", "Places something into types, kinds, families or categories."),
    Label("Historical Event", "Recounts an event that happened at a particular time in the past."),
    Label("Biography", "Describes the life, career or achievements of a person."),
    Label("Process Description", "Describes the steps or stages of how something works or happens."),
    Label("Example", "Gives examples or instances of a general idea."),
    Label("Quantitative Fact", "States a number, measurement, amount, size or statistic."),
    Label("Location", "Says where something is located or where it took place."),
    Label("Etymology", "Explains the origin of a word or name."),
    Label("Chronology", "Orders several events in time, from one date or period to the next."),
    Label("Property Description", "Describes the features, properties or appearance of something."),
    Label("Function", "Says what something is used for or what purpose it serves."),
    Label("Composition", "Describes the parts, components or members that make something up."),
    Label("Origin", "Describes how something began, was founded, discovered or invented."),
    Label("Consequence", "Describes the effects, results or impact of something."),
    Label("Claim", "Presents an argument, thesis or position held by someone."),
    Label("Criticism", "Reports criticism, disagreement or controversy about something."),
    Label("Reception", "Describes how something was received, its influence, legacy or awards."),
    Label("Method", "Describes a technique or method used to achieve something."),
    Label("Principle", "States a general law, rule or principle."),
    Label("Formal Result", "States a theorem, formula, equation or formal result."),
    Label("Instruction", "Tells how to do something, step by step."),
    Label("Prediction", "Makes a prediction, projection or hypothesis about what may happen."),
    Label("Relationship", "Describes how two or more entities are related or connected."),
    Label("Affiliation", "Says which group, organisation or family something belongs to."),
    Label("Application", "Describes where or how something is applied in practice."),
    Label("Overview", "Summarises a broad topic in general terms."),
    Label("Quotation", "Quotes or attributes words or views to a person or source."),
    Label("Alternative Names", "Lists other names, spellings or titles by which something is known."),
)

MODIFIERS: tuple[Label, ...] = (
    Label("Historical", "Concerned with the past and historical developments."),
    Label("Technical", "Uses technical, specialist detail."),
    Label("Quantitative", "Relies on numbers, measurements and amounts."),
    Label("Biographical", "About a person's life."),
    Label("Geographic", "About places, regions, countries and landscapes."),
    Label("Temporal", "About dates, durations and when things happen."),
    Label("Causal", "About causes and effects."),
    Label("Comparative", "Contrasts or compares things."),
    Label("Hypothetical", "Discusses what might be or could happen."),
    Label("Controversial", "Touches on disputed or contested matters."),
    Label("Formal", "Written in a formal, precise register."),
    Label("Informal", "Written in a casual, everyday register."),
    Label("Theoretical", "About theories and abstract models."),
    Label("Empirical", "Based on observation and evidence."),
    Label("Experimental", "About experiments and their results."),
    Label("Statistical", "About statistics, rates and distributions."),
    Label("Legal", "Concerned with laws, courts and rights."),
    Label("Political", "Concerned with governments, power and politics."),
    Label("Economic", "Concerned with money, trade and economies."),
    Label("Social", "Concerned with society, communities and social groups."),
    Label("Cultural", "Concerned with culture, customs and traditions."),
    Label("Religious", "Concerned with religion, faith and worship."),
    Label("Ethical", "Concerned with right and wrong and moral values."),
    Label("Philosophical", "Concerned with fundamental questions of existence and knowledge."),
    Label("Scientific", "Concerned with scientific research and findings."),
    Label("Medical", "Concerned with health, disease and treatment."),
    Label("Psychological", "Concerned with the mind and behaviour."),
    Label("Educational", "Concerned with teaching and learning."),
    Label("Environmental", "Concerned with nature, ecology and the environment."),
    Label("Military", "Concerned with armies, wars and battles."),
    Label("Artistic", "Concerned with visual art, design and aesthetics."),
    Label("Literary", "Concerned with writing, books and literature."),
    Label("Musical", "Concerned with music, songs and musicians."),
    Label("Linguistic", "Concerned with languages, words and grammar."),
    Label("Mathematical", "Uses mathematical concepts, formulas or proofs."),
    Label("Computational", "Concerned with computers, software and algorithms."),
    Label("Industrial", "Concerned with industry, manufacturing and production."),
    Label("Commercial", "Concerned with businesses, products and markets."),
    Label("Institutional", "Concerned with organisations and institutions."),
    Label("International", "Spans several countries or the whole world."),
    Label("National", "Concerns a single country."),
    Label("Regional", "Concerns a region within or across countries."),
    Label("Local", "Concerns a single city, town or site."),
    Label("Ancient", "Concerns antiquity and ancient civilisations."),
    Label("Medieval", "Concerns the Middle Ages."),
    Label("Modern", "Concerns the modern era, from about 1500 to the 20th century."),
    Label("Contemporary", "Concerns the present day and recent decades."),
    Label("Futuristic", "Concerns the future and what is expected to come."),
    Label("Speculative", "Offers conjecture rather than established fact."),
    Label("Critical", "Evaluates or criticises its subject."),
    Label("Descriptive", "Describes its subject neutrally."),
    Label("Analytical", "Breaks its subject down and analyses it."),
    Label("Narrative", "Tells a story as a sequence of events."),
    Label("Definitional", "Fixes the meaning of a term."),
    Label("Procedural", "Describes a sequence of steps."),
    Label("Normative", "Says what should or ought to be."),
    Label("Objective", "States verifiable facts without opinion."),
    Label("Subjective", "Expresses opinion, feeling or personal judgement."),
    Label("Uncertain", "Hedged, disputed or not known for sure."),
    Label("Negative", "States what something is not, or denies a claim."),
    Label("Summary", "Condenses a larger body of information."),
    Label("Detailed", "Gives fine-grained, specific detail."),
    Label("Introductory", "Introduces a subject to a general reader."),
    Label("Specialized", "Addresses experts in a narrow field."),
)

_AXIS_SIZES = {"domain": 16, "task": 32, "modifier": 64}
assert [len(DOMAINS), len(TASKS), len(MODIFIERS)] == list(_AXIS_SIZES.values())
assert all(len({label.name for label in axis}) == len(axis) for axis in (DOMAINS, TASKS, MODIFIERS))


def _check(value: int, axis: str) -> int:
    code, size = operator.index(value), _AXIS_SIZES[axis]
    if not 0 <= code < size:
        raise ValueError(f"{axis} code must be in 0..{size - 1}, got {code}")
    return code


def pack_tmd(domain: int, task: int, modifier: int) -> int:
    """The 16-bit TMD code; ValueError for a code out of range (UNKNOWN included)."""
    return (_check(domain, "domain") << 12) | (_check(task, "task") << 7) | (_check(modifier, "modifier") << 1)


def unpack_tmd(bits: int) -> tuple[int, int, int]:
    """(domain, task, modifier) of a 16-bit TMD code; bit 0 is ignored."""
    bits = operator.index(bits)
    if not 0 <= bits <= 0xFFFF:
        raise ValueError(f"TMD bits must fit in 16 bits, got {bits}")
    return bits >> 12, (bits >> 7) & 0x1F, (bits >> 1) & 0x3F


def domain_of_bits(bits: np.ndarray) -> np.ndarray:
    """(n,) int64 domain of each packed code; UNKNOWN where the code is (negative)."""
    bits = np.asarray(bits, dtype=np.int64)
    return np.where(bits >= 0, bits >> 12, UNKNOWN)


def lane_index(bits: int) -> int:
    """The 15 code bits as one integer in 0..32767 (bit 0 dropped)."""
    return (operator.index(bits) >> 1) & 0x7FFF


_PROJECTION = np.random.default_rng(_PROJECTION_SEED).standard_normal((CODE_BITS, TMD_DIM))


def tmd_vectors(bits: np.ndarray) -> np.ndarray:
    """(n, 16) float32 unit vectors: the 15 code bits as +-1 through a fixed seeded 15x16 matrix.

    The matrix has rank 15, so distinct codes give distinct vectors; bit 0 does not count.
    """
    lanes = (np.asarray(bits, dtype=np.int64).reshape(-1) >> 1) & 0x7FFF
    signs = ((lanes[:, None] >> np.arange(CODE_BITS)) & 1) * 2.0 - 1.0
    vectors = signs @ _PROJECTION
    return unit_rows(vectors, dtype=np.float32)


def tmd_vector(bits: int) -> np.ndarray:
    """The (16,) float32 unit vector of one TMD code."""
    return tmd_vectors(np.array([operator.index(bits)]))[0]


def bank_tmd_vectors(tmd_bits: np.ndarray) -> np.ndarray:
    """(N, 16) float32 TMD vectors of every bank row; zero rows where the code is unknown (bits < 0)."""
    bits = np.asarray(tmd_bits, dtype=np.int64)
    out = np.zeros((len(bits), TMD_DIM), dtype=np.float32)
    known = bits >= 0
    out[known] = tmd_vectors(bits[known])
    return out
