"""What each TMD domain covers, as short encyclopedia-style phrases: the zero-shot assigner's prototypes.

A domain is matched by its nearest phrases rather than by one sentence: one sentence per domain
cannot sit near both "Species of animal" and "Chemical element". The phrases are written like
Wikipedia short descriptions ("Art movement", "Dravidian language"), which is what an article's
gist (`lvm_pipeline.tmd.gist`) mostly holds.

They were written from general knowledge of what each field covers, never fitted to labelled
data: a first pass blind, a second one adding coverage after reading misassigned articles of one
half of the demo corpus only (the other half measures them; docs/TMD.md). Where a subject has no
domain of its own, the nearest field in the usual academic sense takes it (languages go with
Literature, as in "language and literature"), whatever any benchmark's mapping would reward.
"""

from __future__ import annotations

from lvm_pipeline.tmd.schema import DOMAINS

# Every domain's one-sentence schema description also counts as a prototype, in this template.
DOMAIN_PROMPT = "This article is about {}"

PHRASES: dict[str, tuple[str, ...]] = {
    "Science": (
        "Branch of natural science", "Scientific theory", "Physical phenomenon", "Law of physics", "Physical quantity",
        "Unit of measurement", "Property of matter", "State of matter", "Form of energy",
        "Type of electromagnetic radiation", "Subatomic particle", "Chemical element", "Chemical compound",
        "Chemical reaction", "Protein or other biomolecule", "Cell or part of a cell",
        "Biological process in living organisms", "Branch of biology", "Taxon of organisms", "Species of animal",
        "Family of birds", "Order of insects", "Genus of plants", "Fungus or microorganism",
        "Astronomical object such as a star, planet or galaxy", "Mineral or type of rock",
        "Landform shaped by geological processes", "Geological process",
    ),
    "Mathematics": (
        "Branch of mathematics", "Mathematical concept", "Mathematical structure", "Algebraic structure",
        "Mathematical theorem", "Mathematical proof or conjecture", "Mathematical function", "Mathematical operation",
        "Equation", "Type of number", "Mathematical constant", "Geometric shape", "Area of geometry",
        "Concept in set theory", "Concept in probability theory", "Statistical measure",
    ),
    "Technology": (
        "Invention", "Tool used by people", "Type of machine", "Electronic device", "Computer hardware",
        "Household appliance", "Communication technology such as radio, telephone or television",
        "Printing and recording technology", "Measuring instrument", "Optical instrument", "Timekeeping device",
        "Means of transport", "Type of vehicle", "Aircraft", "Ship or boat", "Spacecraft or satellite", "Weapon",
        "Firearm", "Military technology", "Manufactured material", "Fuel",
    ),
    "Engineering": (
        "Branch of engineering", "Civil engineering", "Building or structure",
        "Engineering structure such as a bridge, dam or tunnel", "Road, railway or canal infrastructure",
        "Construction technique", "Mechanical system", "Machine component", "Type of engine",
        "Electrical engineering concept", "Electrical circuit component", "Power generation system",
        "Electric power grid", "Nuclear reactor", "Industrial process", "Manufacturing process",
    ),
    "Medicine": (
        "Branch of medicine", "Medical specialty", "Disease", "Medical condition",
        "Infectious disease caused by a virus or bacterium", "Symptom", "Injury", "Medical test",
        "Medical treatment or procedure", "Surgical procedure", "Medication", "Vaccine", "Psychoactive drug",
        "Organ of the human body", "Anatomical structure", "Hormone", "Vitamin or nutrient",
        "Human nutrition and diet", "Hospital", "Public health measure",
    ),
    "Psychology": (
        "Branch of psychology", "Psychological concept", "Psychological theory", "Mental process", "Emotion",
        "Cognitive ability such as memory or perception", "Intelligence", "Learning and motivation",
        "Sleep and consciousness", "Personality trait", "Human behaviour", "Social behaviour", "Mental disorder",
    ),
    "Philosophy": (
        "Branch of philosophy", "Philosophical concept", "Philosophical school or movement", "Ethical theory",
        "Logic", "Concept in epistemology", "Religion", "Religious belief or practice", "Religious movement",
        "Christian denomination", "Theological concept", "Deity", "Religious mythology and gods",
        "Religious figure or prophet", "Religious text", "Religious festival",
        "Place of worship such as a temple, church or mosque", "Spiritual practice such as prayer or meditation",
    ),
    "History": (
        "Historical period", "Prehistoric era", "Period of a country's history", "Historical event",
        "Historical movement", "Ancient civilization", "Archaeological culture", "Archaeological site",
        "Former empire", "Colonial empire", "Former country", "Historical state", "Dynasty", "Revolution", "War",
        "Battle", "Military campaign",
    ),
    "Literature": (
        "Novel", "Poem", "Epic poem", "Play", "Book", "Collection of stories", "Fairy tale", "Myth or legend",
        "Fictional character", "Comic book", "Literary genre", "Literary movement", "Newspaper or magazine",
        "Dictionary", "Natural language spoken by people", "Language family", "Writing system or alphabet",
        "Grammar and linguistics",
    ),
    "Art": (
        "Art form", "Work of art", "Art movement", "Visual art technique", "Painting", "Sculpture", "Photography",
        "Pottery or ceramics", "Fashion design", "Architectural style", "Architectural element",
        "Building noted for its architecture", "Music genre", "Style of music", "Musical instrument",
        "Musical composition", "Musical work", "Song", "Opera", "Dance", "Theatre", "Performing art", "Film",
        "Film genre", "Television programme",
    ),
    "Economics": (
        "Economic concept", "Economic theory", "Economic system", "Economic indicator", "Trade", "Currency",
        "Bank", "Financial market", "Financial instrument", "Tax", "Company", "Business organisation",
        "Type of business", "Industry", "Agriculture and farming", "Commodity", "Marketing and advertising",
        "Employment and labour", "Poverty",
    ),
    "Law": (
        "Branch of law", "Legal concept", "Legal system", "Law or statute",
        "Legal document such as a treaty or constitution", "International law", "Contract", "Property rights",
        "Human right", "Type of court", "Court case", "Legal profession", "Crime", "Criminal justice",
        "Police and law enforcement", "Punishment", "Prison",
    ),
    "Politics": (
        "Political concept", "Political ideology", "Political system", "Form of government",
        "Government institution", "Government office or position", "Political party", "Election", "Citizenship",
        "Diplomacy between states", "International organization", "Armed forces of a state", "Political movement",
        "Social movement", "Civil rights movement", "Nationalism", "Terrorism",
    ),
    "Education": (
        "School", "University", "Type of educational institution",
        "Stage of education such as primary or secondary school", "Academic discipline", "School subject",
        "Teaching method", "Examination", "Academic degree", "Scholarship", "Student", "Literacy and learning",
        "Research", "Library",
    ),
    "Environment": (
        "Environmental science", "Ecology", "Ecosystem", "Biome or habitat", "Environmental issue", "Pollution",
        "Climate", "Climate change", "Deforestation", "Endangered species", "Nature conservation",
        "Natural resource", "Renewable energy", "Sustainability", "Waste management", "Water cycle",
        "Weather phenomenon", "Natural disaster",
    ),
    "Software": (
        "Software", "Software application", "Computer program", "Operating system", "Programming language",
        "Programming concept", "Algorithm", "Data structure", "Database", "Computer file format",
        "Computer science concept", "Artificial intelligence", "Computer network", "Internet protocol",
        "Web technology", "Website", "Search engine", "Social media platform", "Computer security", "Cryptography",
        "Video game",
    ),
}


def description_prototypes() -> list[tuple[int, str]]:
    """(domain code, text): one per domain, its templated schema description (the assigner before prototypes)."""
    return [(code, DOMAIN_PROMPT.format(label.description)) for code, label in enumerate(DOMAINS)]


def default_domain_prototypes() -> list[tuple[int, str]]:
    """(domain code, text): each domain's templated schema description and its phrases."""
    return description_prototypes() + [
        (code, phrase) for code, label in enumerate(DOMAINS) for phrase in PHRASES[label.name]]
