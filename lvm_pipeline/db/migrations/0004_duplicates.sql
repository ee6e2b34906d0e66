-- Duplicate detection (the duplicates gate): a hash of each concept's normalised text (lower case,
-- runs of non-alphanumerics as one space), looked up across batches in PostgreSQL, and a MinHash
-- signature of each article's text for near-duplicate articles (written at parse time).
ALTER TABLE cpe_entry ADD COLUMN text_hash bytea GENERATED ALWAYS AS (
    decode(md5(btrim(regexp_replace(lower(concept_text), '[^[:alnum:]]+', ' ', 'g'))), 'hex')) STORED;
CREATE INDEX cpe_entry_text_hash ON cpe_entry (text_hash);

CREATE TABLE article_signature (
    article_id  text PRIMARY KEY REFERENCES article (article_id) ON DELETE CASCADE,
    batch_id    text NOT NULL REFERENCES batch (batch_id) ON DELETE CASCADE,
    minhash     bytea NOT NULL              -- lvm_pipeline.near_duplicates: NUM_PERM little-endian uint32
);
CREATE INDEX article_signature_batch ON article_signature (batch_id);
