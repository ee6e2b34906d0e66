-- Core schema: batches, their articles, concepts (the predecessor's cpe_entry), vectors, quarantine.
-- Each stage table carries batch_id so that a stage replaces one batch's rows in one transaction.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE batch (
    batch_id       text PRIMARY KEY,            -- the landing file's name, also the Dagster partition key
    file_path      text NOT NULL,
    content_hash   text NOT NULL,               -- sha256 of the file ingested last
    status         text NOT NULL CHECK (status IN ('parsed', 'chunked', 'embedded', 'failed')),
    n_records      integer NOT NULL DEFAULT 0,  -- records read from the file
    n_articles     integer NOT NULL DEFAULT 0,
    n_quarantined  integer NOT NULL DEFAULT 0,
    n_concepts     integer NOT NULL DEFAULT 0,
    n_vectors      integer NOT NULL DEFAULT 0,
    encoder_id     integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE article (
    article_id     text PRIMARY KEY,            -- unique across batches: a second copy is quarantined
    batch_id       text NOT NULL REFERENCES batch (batch_id) ON DELETE CASCADE,
    ord            integer NOT NULL,            -- position in the batch file
    title          text NOT NULL,
    text           text NOT NULL,               -- the plain text that char offsets index into
    url            text,
    metadata       jsonb NOT NULL DEFAULT '{}',
    UNIQUE (batch_id, ord)
);

CREATE TABLE cpe_entry (
    cpe_id          uuid PRIMARY KEY,           -- uuid5 of (article, position, span, text): stable across re-runs
    dataset_source  text NOT NULL,
    batch_id        text NOT NULL REFERENCES batch (batch_id) ON DELETE CASCADE,
    article_id      text NOT NULL,
    article_title   text NOT NULL,
    seq_in_article  integer NOT NULL,
    concept_text    text NOT NULL CHECK (length(btrim(concept_text)) > 0),
    char_start      integer NOT NULL,
    char_end        integer NOT NULL CHECK (char_end > char_start),
    -- TMD (domain / task / modifier) codes, filled by the tmd_codes stage; NULL until then
    domain_code     smallint,
    task_code       smallint,
    modifier_code   smallint,
    tmd_bits        integer,
    tmd_confidence  real,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (batch_id, article_id, seq_in_article)
);

-- One encoder per database: vectors of two encoders never share a bank.
CREATE TABLE encoder (
    encoder_id   serial PRIMARY KEY,
    name         text NOT NULL,
    dimension    integer NOT NULL,
    fingerprint  text NOT NULL,                -- short hash of the probe vector
    probe_vector real[] NOT NULL,              -- embedding of a fixed probe sentence
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- concept_vec has no dimension until the first encoder registers: it is then typed vector(D).
CREATE TABLE cpe_vector (
    cpe_id       uuid PRIMARY KEY,
    batch_id     text NOT NULL REFERENCES batch (batch_id) ON DELETE CASCADE,
    encoder_id   integer NOT NULL REFERENCES encoder (encoder_id),
    concept_vec  vector NOT NULL
);
CREATE INDEX cpe_vector_batch ON cpe_vector (batch_id);

CREATE TABLE quarantine (
    quarantine_id  bigserial PRIMARY KEY,
    batch_id       text NOT NULL REFERENCES batch (batch_id) ON DELETE CASCADE,
    locator        text NOT NULL,              -- where in the file: "line 12", "page 7 'Title'"
    article_id     text,
    reason         text NOT NULL,
    raw_excerpt    text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_batch ON quarantine (batch_id);
